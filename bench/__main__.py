"""`python -m bench SUITE`: run one benchmark suite on the testbed and write its results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import images

SUITES = {"images": images.main}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--quick", action="store_true", help="one repetition, small images")
    parser.add_argument("--repeat", type=int, help="repetitions (median reported)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    return SUITES[args.suite](args)


if __name__ == "__main__":
    sys.exit(main())
