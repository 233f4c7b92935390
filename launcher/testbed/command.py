"""The `mpidock testbed` subcommands."""

from __future__ import annotations

import argparse
import sys

from launcher.testbed import manager


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tb = subparsers.add_parser("testbed", help="the one-machine Slurm + Docker cluster (root)")
    verbs = tb.add_subparsers(dest="verb", required=True)
    up = verbs.add_parser("up", help="bring the testbed up, or repair it")
    up.add_argument("-N", "--nodes", type=int, default=3, help="number of nodes (default 3)")
    up.add_argument("--cpus", type=_counts, default=(), help="CPUs per node, e.g. 2,2,1")
    up.add_argument("--user", default="mpiuser", help="the test user (default mpiuser)")
    up.add_argument("--uid", type=int, default=1501, help="the test user's UID (default 1501)")
    down = verbs.add_parser("down", help="stop and remove everything of the testbed")
    down.add_argument("--purge", action="store_true", help="also drop cached node images")
    verbs.add_parser("status", help="each node's address, daemons and images")
    tb.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.verb == "up":
        manager.up(args.nodes, cpus=args.cpus, user=args.user, uid=args.uid, say=_say)
        return 0
    if args.verb == "down":
        manager.down(purge=args.purge, say=_say)
        return 0
    return _status()


def _status() -> int:
    nodes = manager.status()
    if not nodes:
        print("no testbed: run `mpidock testbed up`")
        return 1
    print(f"{'node':<6} {'address':<13} {'netns':<6} {'dockerd':<8} {'slurmd':<10} images")
    for s in nodes:
        print(
            f"{s.node.name:<6} {s.node.address:<13} {_yn(s.netns):<6} {_yn(s.dockerd):<8} "
            f"{s.slurmd:<10} {', '.join(s.images) or '-'}"
        )
    print(f"\n{'user':<12} {'uid':<6} docker")
    for u in manager.users():
        print(f"{u.name:<12} {u.uid if u.uid is not None else 'absent':<6} {_yesno(u.docker)}")
    return 0 if all(s.ok for s in nodes) else 1


def _yesno(flag: bool) -> str:
    return "yes" if flag else "no"


def _counts(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: expected counts like 2,2,1") from e


def _yn(flag: bool) -> str:
    return "up" if flag else "down"


def _say(line: str) -> None:
    print(f"[testbed] {line}", file=sys.stderr, flush=True)
