"""`mpidock containerize [--base IMAGE] [--tag TAG] [--dry-run] BINARY...`."""

from __future__ import annotations

import argparse
import socket
import sys

from launcher import config, containers
from launcher.containerize.build import Outcome, containerize, plan_image, present
from launcher.containerize.plan import LIB_DIR, ImagePlan


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "containerize",
        help="build an image for host binaries: ldd, their Debian packages, a content tag",
    )
    p.add_argument("--base", help="the base image (default: containerize_base in config)")
    p.add_argument("--tag", help="the image's tag (default mpidock-auto:<content hash>)")
    p.add_argument("--dry-run", action="store_true", help="print the packages and Dockerfile")
    p.add_argument("binaries", nargs="+", metavar="BINARY")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    tag = image_for(args.binaries, base=args.base, tag=args.tag or "", dry_run=args.dry_run)
    if not args.dry_run:
        print(tag)  # the one line on stdout: `--image "$(mpidock containerize ./app)"`
    return 0


def image_for(
    binaries: list[str], *, base: str | None, tag: str = "", dry_run: bool = False
) -> str:
    """The image's tag, built (or found built) on this host's engine; said on stderr."""
    base = base or config.for_command().containerize_base
    client = containers.client_for_node(socket.gethostname(), timeout=1800)
    try:
        if dry_run:
            plan = plan_image(client, base, binaries, tag)
            _say_plan(plan)
            _say(f"would build {plan.tag} from this Dockerfile:")
            sys.stdout.write(plan.dockerfile)
            return plan.tag
        outcome = containerize(client, base, binaries, tag)
    finally:
        client.close()
    _say_plan(outcome.plan)
    _say_outcome(outcome)
    return outcome.plan.tag


def planned_tag(binaries: list[str], *, base: str | None) -> str:
    """The tag the image would have, built or not, said on stderr (submit --dry-run)."""
    base = base or config.for_command().containerize_base
    client = containers.client_for_node(socket.gethostname(), timeout=60)
    try:
        plan = plan_image(client, base, binaries)
        ready = present(client, plan)
    finally:
        client.close()
    _say_plan(plan)
    _say(f"{plan.tag} is built already" if ready else f"would build {plan.tag}")
    return plan.tag


def _say_plan(plan: ImagePlan) -> None:
    _say(f"packages: {' '.join(plan.packages)}")
    for lib in plan.unowned:
        _say(f"{lib.path} belongs to no package: copied into the image's {LIB_DIR}")


def _say_outcome(outcome: Outcome) -> None:
    tag, resolve = outcome.plan.tag, outcome.resolve_s
    if outcome.built:
        _say(f"built {tag} (resolve {resolve:.2f} s, build {outcome.build_s:.2f} s)")
    else:
        _say(f"{tag} is built already (resolve {resolve:.2f} s, build 0 s)")


def _say(line: str) -> None:
    print(f"mpidock: containerize: {line}", file=sys.stderr, flush=True)
