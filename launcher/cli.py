"""The `mpidock` command: argparse, main(argv) -> int, the one place errors become exits."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from launcher import (
    __version__,
    cache_command,
    check,
    config_command,
    entry,
    reap_command,
    runs,
    submit,
)
from launcher.containerize import command as containerize_command
from launcher.errors import LauncherError
from launcher.testbed import command as testbed_command

log = logging.getLogger(__name__)
# An unexpected exception: a defect of mpidock (sysexits.h calls it EX_SOFTWARE).
INTERNAL_ERROR = 70


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line with a hint, like every other mpidock error."""

    def error(self, message: str) -> NoReturn:
        hint = f"see {self.prog} --help"
        self.exit(2, f"mpidock: error: {message} (hint: {hint})\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mpidock", description="Run multi-node MPI programs inside Docker containers on Slurm."
    )
    parser.add_argument("--version", action="version", version=f"mpidock {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub: argparse._SubParsersAction[argparse.ArgumentParser]
    sub = parser.add_subparsers(dest="command", required=True)  # type: ignore[assignment]
    entry.add_parser(sub)
    testbed_command.add_parser(sub)
    cache_command.add_parser(sub)
    reap_command.add_parser(sub)
    runs.add_parser(sub)
    check.add_parser(sub)
    config_command.add_parser(sub)
    submit.add_parser(sub)
    containerize_command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return execute(parse(list(sys.argv[1:] if argv is None else argv)))


def execute(args: argparse.Namespace) -> int:
    """Runs the parsed command; every error becomes one line on stderr and an exit status.

    An error mpidock expects is a LauncherError with its hint. Anything else is a defect:
    one line saying so (the traceback too with -v) and INTERNAL_ERROR, never a bare
    traceback in front of a user.
    """
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return int(args.run(args))
    except LauncherError as e:
        print(f"mpidock: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("mpidock: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.verbose:
            traceback.print_exc()
        what = " ".join(str(e).split())  # one line, whatever the message holds
        hint = "rerun with -v for the traceback and report it"
        print(
            f"mpidock: error: internal error: {type(e).__name__}: {what} (hint: {hint})",
            file=sys.stderr,
        )
        return INTERNAL_ERROR


def parse(words: list[str]) -> argparse.Namespace:
    """argparse, but `submit` takes its words untouched: they are sbatch's and ours, mixed,
    and argparse would claim options it does not know as errors."""
    first = next((i for i, w in enumerate(words) if not w.startswith("-")), None)
    if first is not None and words[first] == "submit":
        args = build_parser().parse_args([*words[:first], "submit"])
        args.words = words[first + 1 :]
        return args
    return build_parser().parse_args(words)


if __name__ == "__main__":
    sys.exit(main())
