"""`--engine` for the commands that work on this host's engine (`mpidock images`,
`mpidock check`): the engine chosen as a job chooses it, with the same settings."""

from __future__ import annotations

import argparse
import socket

from launcher import config, engines


def add_option(parser: argparse.ArgumentParser, *, keep_earlier: bool = False) -> None:
    """`--engine`; keep_earlier: a value given before a verb stands (argparse.SUPPRESS)."""
    parser.add_argument(
        "--engine",
        choices=engines.CHOICES,
        default=argparse.SUPPRESS if keep_earlier else None,
        help="the container engine (default: the engine setting, see mpidock config)",
    )


def select(args: argparse.Namespace) -> engines.Engine:
    """This host's engine for the command: --engine, else the configured one.

    Raises:
        EngineUnavailable: `auto` found no engine here.
    """
    cfg = config.for_command(args)
    settings = engines.Settings(
        podman_root=cfg.podman_root, podman_image_store=cfg.podman_image_store
    )
    return engines.select(cfg.engine, socket.gethostname(), settings)
