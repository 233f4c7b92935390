"""`python -m bench direct`: MPI in the direct mode (`--launch pmix`: each Slurm task a rank
in its node's container, wired up by Slurm's PMIx) against native and against the ssh mode,
on the same nodes in one run, interleaved: OSU's latency and bandwidth between two nodes
and bandwidth within one node, and HPL on two nodes. Writes results/direct.json and
direct.md.

Goals (issue 16: "within the existing goals"), judged as decided before any run, by the
rules of bench.md (bench/report.py) with the pmix mode as the container side:
- latency between nodes: the worst pmix/native ratio over all sizes at most 1.02;
- bandwidth between nodes: the worst ratio over sizes of 64 KiB and up at least 0.98;
- bandwidth within a node: the worst ratio at 1 MiB and up at least 0.90;
- HPL: pmix at least 98 % of native GFLOP/s (medians over the repetitions).
The ssh mode's figures are shown beside them, not judged here.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import comm, hpl, launch, native, osu
from bench.report import COMM_GOALS, Goal, from_size, hpl_goals, publish, ratio_goal, table
from launcher.testbed.jobs import entry_wrap, sbatch

RESULTS = Path(__file__).parent / "results"
MODES = ("native", "ssh", "pmix")
# scope -> (nodes, ranks per node); the tests measured in each
SHAPES = {"inter": (2, 1), "intra": (1, 2)}
TESTS = {"inter": ("latency", "bandwidth"), "intra": ("bandwidth",)}


def wrap(mode: str, argv: list[str], per_node: int) -> str:
    """The batch script's launch of argv in one mode."""
    if mode == "native":
        return shlex.join(native.mpirun(per_node, argv))
    if mode == "pmix":
        head = ["srun", "--mpi=pmix", "mpidock", "slurm-entry", "--launch", "pmix"]
        return shlex.join([*head, "--image", comm.IMAGE, "--quiet", "--", *argv])
    return entry_wrap(["--image", comm.IMAGE, "--quiet"], shlex.join(argv))


def osu_once(mode: str, scope: str, test: str, binary: str, quick: bool) -> comm.Points:
    nodes, per_node = SHAPES[scope]
    program = binary if mode == "native" else "mpidock-osu"
    argv = [program, comm.SUBCOMMANDS[test], *comm.ITERATIONS[quick]]
    options = ["-N", str(nodes), f"--ntasks-per-node={per_node}", "-w", launch.nodelist(nodes)]
    job = sbatch(options, wrap(mode, argv, per_node), timeout=1800)
    if job.state != "COMPLETED":
        raise RuntimeError(f"{mode} {scope} {test} job {job.job_id} {job.state}: "
                           f"{job.output[-1500:]}")  # fmt: skip
    return [[size, value] for size, value in osu.parse(job.output).rows]


def run(*, quick: bool, repeat: int) -> dict[str, Any]:
    """Every mode in turn, `repeat` times (noise falls on all alike); medians."""
    binary = str(native.build("mpidock-osu", "mpi_osu.c"))
    curves: dict[str, dict[str, dict[str, list[comm.Points]]]] = {
        scope: {test: {m: [] for m in MODES} for test in tests} for scope, tests in TESTS.items()
    }
    gflops: dict[str, list[float]] = {m: [] for m in MODES}
    n = 2000 if quick else 3000
    for _ in range(repeat):
        for mode in MODES:
            for scope, tests in curves.items():
                for test, found in tests.items():
                    found[mode].append(osu_once(mode, scope, test, binary, quick))
            gflops[mode].append(hpl.one(mode if mode != "ssh" else "container", n))
    medians = {
        scope: {
            test: {m: comm.median_curve(r) for m, r in found.items()}
            for test, found in tests.items()
        }
        for scope, tests in curves.items()
    }
    return {
        "quick": quick,
        "repeat": repeat,
        "comm": medians,
        "hpl": {
            "n": n,
            "runs": gflops,
            "gflops": {m: round(statistics.median(g), 3) for m, g in gflops.items()},
        },
    }


def goals(results: dict[str, Any]) -> list[Goal]:
    """bench.md's goals with the pmix mode as the container side."""
    found = []
    for scope, measure, name, limit, lower, least in COMM_GOALS:
        if pair := results["comm"].get(scope, {}).get(measure):
            ratios = _ratios(pair["pmix"], pair["native"])
            found.append(ratio_goal(name, from_size(ratios, least), limit, lower, least))
    medians = results["hpl"]["gflops"]
    found += hpl_goals({"container_gflops": medians["pmix"], "native_gflops": medians["native"]})
    return found


def report(results: dict[str, Any]) -> str:
    verdict = {True: "yes", False: "**no**", None: "?"}
    rows = [
        [g.name, g.target.replace("container/", "pmix/"), g.measured, verdict[g.met]]
        for g in goals(results)
    ]
    medians = [
        [f"{test} {scope}", mode, f"{_median_ratio(pair[mode], pair['native']):.3f}"]
        for scope, tests in results["comm"].items()
        for test, pair in tests.items()
        for mode in ("ssh", "pmix")
    ]
    gflops = results["hpl"]["gflops"]
    hpl_line = ", ".join(f"{m} {gflops[m]:.3f}" for m in MODES)
    return "\n\n".join([
        "# The direct mode's MPI against native and the ssh mode (python -m bench direct)",
        f"One run, {results['repeat']} repetition(s), medians; quick: {results['quick']}. "
        "A ratio is mode / native at one message size.",
        table(["goal", "target", "measured", "met"], rows),
        table(["measure", "mode", "median ratio over sizes"], medians),
        f"HPL (N={results['hpl']['n']}, 2 nodes, one rank each), GFLOP/s: {hpl_line}",
    ]) + "\n"  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench direct", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer OSU iterations, HPL N=2000")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (3)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = run(quick=args.quick, repeat=args.repeat)
    publish(args.out, "direct", results, report(results))
    return 0


def _ratios(mode: comm.Points, native_points: comm.Points) -> list[tuple[float, float]]:
    """mode / native at each size both have (a native 0 cannot divide)."""
    by_size = {s: v for s, v in native_points}
    return [(s, v / by_size[s]) for s, v in mode if by_size.get(s)]


def _median_ratio(mode: comm.Points, native_points: comm.Points) -> float:
    found = _ratios(mode, native_points)
    return statistics.median(r for _, r in found) if found else float("nan")
