"""`python -m bench [SUITE...] [--quick]`: what containers cost, measured on the testbed
against native in the same run; writes results/bench.json, PNG plots and bench.md.

Suites: launch (with teardown and the launcher's own cost), images, comm, hpl. The full
run brings the testbed up with 4 nodes for the launch curve and back to its count after.

`python -m bench soak [--runs N] [--families ...]` is apart: each MPI family's ring, N
jobs in a row (bench/soak.py); so is `python -m bench engines` (rootless Podman against
Docker, bench/engines.py), `python -m bench families` (each MPI family's image against
native runs of the same MPI, bench/families.py), and `python -m bench direct` (the direct
mode's MPI against native and the ssh mode, bench/direct.py), and `python -m bench load`
(a job's shared-filesystem operations and engine API calls per node, bench/load.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    comm,
    direct,
    engines,
    families,
    hpl,
    images,
    launch,
    load,
    model,
    report,
    scale,
    soak,
)
from bench import testbed as bench_testbed

RESULTS = Path(__file__).parent / "results"
SUITES = ("launch", "images", "comm", "hpl")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["soak"]:
        return soak.main(argv[1:])
    if argv[:1] == ["engines"]:
        return engines.main(argv[1:])
    if argv[:1] == ["scale"]:
        return scale.main(argv[1:])
    if argv[:1] == ["model"]:
        return model.main(argv[1:])
    if argv[:1] == ["families"]:
        return families.main(argv[1:])
    if argv[:1] == ["direct"]:
        return direct.main(argv[1:])
    if argv[:1] == ["load"]:
        return load.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help=f"any of {', '.join(SUITES)} (default: all)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, small sizes")
    parser.add_argument("--repeat", type=int, help="repetitions (median reported)")
    parser.add_argument("--nodes", type=int, help="launch curve up to this many nodes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if unknown := sorted(set(args.suites) - set(SUITES)):
        parser.error(f"unknown suite {', '.join(unknown)}: choose from {', '.join(SUITES)}")
    suites = args.suites or list(SUITES)
    repeat = args.repeat or (1 if args.quick else 3)
    started, clock = datetime.now(UTC), time.monotonic()
    results: dict[str, Any] = {"quick": args.quick, "repeat": repeat,
                               "started": started.isoformat(timespec="seconds")}  # fmt: skip
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "launch": lambda: _launch(args, repeat),
        "images": lambda: images.run(quick=args.quick, repeat=repeat),
        "comm": lambda: comm.run(quick=args.quick, repeat=repeat),
        # hpcc runs its whole suite, sized by N: at N=6000 one run took over 12 minutes here.
        "hpl": lambda: hpl.run(n=2000 if args.quick else 3000, repeat=repeat),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for suite in suites:
        begin = time.monotonic()
        print(f"[bench] {suite} ...", flush=True)
        section = runners[suite]()
        if suite == "launch":
            results["teardown"] = {"per_node_s": section.pop("teardown")}
            results["self"] = {"per_node": section.pop("self")}
        results[suite] = section
        results.setdefault("seconds", {})[suite] = round(time.monotonic() - begin, 1)
        results["duration_s"] = round(time.monotonic() - clock, 1)
        # After every suite: a run stopped part way keeps what it measured.
        (args.out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"[bench] {suite}: {time.monotonic() - begin:.0f} s", flush=True)
    written = report.write_report(results, args.out)
    print(f"[bench] {results['duration_s']:.0f} s; wrote bench.json, "
          + ", ".join(p.name for p in written))  # fmt: skip
    return 0


def _launch(args: argparse.Namespace, repeat: int) -> dict[str, Any]:
    """The launch curve; the full run widens the testbed to 4 nodes for it, then back."""
    have = bench_testbed.node_count()
    want = args.nodes or (have if args.quick else max(have, 4))
    if want != have:
        bench_testbed.up(want)
    try:
        return launch.run(want, repeat)
    finally:
        if want != have:
            bench_testbed.up(have)


if __name__ == "__main__":
    sys.exit(main())
