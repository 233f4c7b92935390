"""`mpidock images import IMAGE`: rootless Podman's shared image store filled once.

The image comes from the Docker archive store (a checked `docker save` archive) or else
the site registry; the user's personalized image and its keep-id layer are made beside
it, so every node of later jobs reads it in place (launcher.engines.podman_store).
"""

from __future__ import annotations

import argparse
import socket

from launcher import config, engines, images, movement
from launcher.errors import UsageError
from launcher.identity import current_identity
from launcher.record import human_size
from launcher.store import ImageStore


def add_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = verbs.add_parser(
        "import", help="fill rootless Podman's shared image store with IMAGE (podman_image_store)"
    )
    p.add_argument("image", help="the image, as jobs name it (--image)")


def run(args: argparse.Namespace) -> int:
    cfg = config.for_command(args)
    if not cfg.podman_image_store:
        raise UsageError(
            "no podman image store is set",
            hint="set podman_image_store (MPIDOCK_PODMAN_IMAGE_STORE) to a shared directory, "
            "e.g. /shared/mpidock/podman-store/{user}",
        )
    node = socket.gethostname()
    say = movement.stderr_say(node)
    settings = engines.Settings(
        podman_root=cfg.podman_root, podman_image_store=cfg.podman_image_store
    )
    archives = ImageStore(cfg.image_store, warn=say)
    ref = movement.registry_ref(cfg.registry, args.image) if cfg.registry else ""
    personal = images.personal_of(current_identity())
    with engines.select("podman", node, settings) as engine:
        filled = engine.import_image(
            args.image, lambda: archives.find_by_name(args.image), ref, personal, say
        )
    size, seconds = filled or (0, 0.0)
    what = f"imported, {human_size(size)}" if size else "already in the store"
    print(f"{args.image}: {what} ({seconds:.1f} s)")
    return 0
