"""`mpidock reap`: remove what jobs that ended left on this node, by hand or from an Epilog."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

import docker

from launcher import config, engine_command, reap
from launcher.engines import podman_reap
from launcher.errors import LauncherError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "reap",
        help="remove containers and job directories that ended jobs left on this node",
        description="Removes mpidock containers (by label) on this node and job directories "
        "(by name) whose Slurm job has ended. A running job's are never touched. With --job, "
        "as a Slurm Epilog runs it, that job's are removed without asking Slurm.",
    )
    p.add_argument("--job", metavar="ID", help="only this job, taken as ended (for an Epilog)")
    p.add_argument(
        "--job-root", metavar="DIR",
        help="job directories (default: the job_root setting, see mpidock config)",
    )  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="print what would go; remove nothing")
    engine_command.add_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    root = Path(config.for_command(args).job_root)
    _end_podman_leftovers(args, node)
    with engine_command.select(args) as engine:
        client = engine.client()
        found = reap.node_leftovers(client) + reap.job_dir_leftovers(root)
        if args.job:
            doomed = [f for f in found if f.job_id == args.job]
        else:
            doomed = reap.reapable(found, reap.ask_slurm({f.job_id for f in found}))
        return _act(client, doomed, node, args.job, dry_run=args.dry_run)


def _end_podman_leftovers(args: argparse.Namespace, node: str) -> None:
    """From an Epilog (root, --job): what a killed slurm-entry's rootless Podman left
    running for the job's user, ended by signals (launcher/engines/podman_reap.py)."""
    caller = reap.caller(os.environ)
    if not args.job or os.geteuid() != 0 or caller.uid is None or args.dry_run:
        return
    for ended in podman_reap.reap_job(args.job, caller.uid):
        print(f"{node}: ended {ended.describe()} of job {args.job}")


def _act(
    client: docker.DockerClient,
    doomed: list[reap.Leftover],
    node: str,
    job: str | None,
    *,
    dry_run: bool,
) -> int:
    scope = f"job {job}: " if job else ""
    if not doomed:
        print(f"{node}: {scope}nothing to remove")
        return 0
    if dry_run:
        for leftover in doomed:
            print(f"{node}: would remove {leftover.describe()}")
        return 0
    failures = reap.remove_all(client, doomed, lambda line: print(f"{node}: {line}"))
    if failures:
        raise LauncherError("; ".join(failures), node=node, hint="is the container engine healthy?")
    return 0
