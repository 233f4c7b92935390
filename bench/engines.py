"""`python -m bench engines`: rootless Podman against Docker (and native), on the same nodes
in one run, interleaved: the launch at 3 nodes (warm images, one rank per node) and OSU's
latency and bandwidth between two nodes. Writes results/engines.json and engines.md.

Goals (issue 14), judged as decided before any run:
- MPI: Podman within 2 % of Docker. Latency: the worst podman/docker ratio over all sizes
  at most 1.02; bandwidth: the worst over sizes of 64 KiB and up at least 0.98 (the
  same sizes and worst-case rule as bench.md's container/native goals).
- Launch: the median seconds from the launch command's start to its end (T0 to T1) at
  3 nodes, Podman's at most 0.5 s above Docker's.
Native rows are shown beside them, not judged here.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import comm, launch, native, osu
from bench.report import Goal, from_size, publish, table
from launcher.testbed.jobs import USER, entry_wrap, sbatch
from launcher.testbed.layout import REGISTRY

RESULTS = Path(__file__).parent / "results"
MODES = ("native", "docker", "podman")
PODMAN_USER = "mpinodocker"  # outside group docker: rootless Podman, images from the registry
LAUNCH_NODES = 3
KiB = 1024
MPI_GOALS = (("latency", 1.02, True, 0), ("bandwidth", 0.98, False, 64 * KiB))
LAUNCH_LIMIT_S = 0.5


def entry(mode: str) -> list[str]:
    """slurm-entry's options for a container mode (the Podman user names the registry)."""
    if mode == "podman":
        return ["--engine", "podman", "--registry", REGISTRY, "--image", comm.IMAGE]
    return ["--engine", "docker", "--image", comm.IMAGE]


def user(mode: str) -> str:
    return PODMAN_USER if mode == "podman" else USER


def wrap(mode: str, argv: list[str], per_node: int) -> str:
    if mode == "native":
        return shlex.join(native.mpirun(per_node, argv))
    return entry_wrap([*entry(mode), "--quiet"], shlex.join(argv))


def launch_once(mode: str, program: str) -> dict[str, float]:
    """Seconds to every rank past MPI_Init and to the end, at LAUNCH_NODES nodes."""
    argv = [program if mode == "native" else "mpi-hello", "--stamp"]
    command = native.mpirun(1, argv) if mode == "native" else _entry_argv(mode, argv)
    options = ["-N", str(LAUNCH_NODES), "--ntasks-per-node=1", "-w", launch.nodelist(3)]
    job = sbatch(options, launch.timed_wrap(command), timeout=600, user=user(mode))
    if job.state != "COMPLETED":
        raise RuntimeError(f"{mode} launch job {job.job_id} {job.state}: {job.output[-1500:]}")
    return launch.times(job.output, LAUNCH_NODES)


def osu_once(mode: str, test: str, binary: str, quick: bool) -> comm.Points:
    """One OSU curve between two nodes, one rank each."""
    program = binary if mode == "native" else "mpidock-osu"
    argv = [program, comm.SUBCOMMANDS[test], *comm.ITERATIONS[quick]]
    options = ["-N", "2", "--ntasks-per-node=1", "-w", launch.nodelist(2)]
    job = sbatch(options, wrap(mode, argv, 1), timeout=1800, user=user(mode))
    if job.state != "COMPLETED":
        raise RuntimeError(f"{mode} {test} job {job.job_id} {job.state}: {job.output[-1500:]}")
    return [[size, value] for size, value in osu.parse(job.output).rows]


def run(*, quick: bool, repeat: int) -> dict[str, Any]:
    """Every mode in turn, `repeat` times (noise falls on all alike); medians."""
    hello = str(native.build("mpi-hello", "mpi_hello.c"))
    osu_binary = str(native.build("mpidock-osu", "mpi_osu.c"))
    for mode in MODES:  # warm-up, not counted: images on every node, services' first start
        launch_once(mode, hello)
    launches: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    tests = ("latency", "bandwidth")
    curves: dict[str, dict[str, list[comm.Points]]] = {t: {m: [] for m in MODES} for t in tests}
    for _ in range(repeat):
        for mode in MODES:
            launches[mode].append(launch_once(mode, hello))
            for test, found in curves.items():
                found[mode].append(osu_once(mode, test, osu_binary, quick))
    return {
        "quick": quick,
        "repeat": repeat,
        "launch": {m: _medians(runs) for m, runs in launches.items()},
        "comm": {
            t: {m: comm.median_curve(r) for m, r in found.items()} for t, found in curves.items()
        },
    }


def goals(results: dict[str, Any]) -> list[Goal]:
    """The issue's goals, judged as the module's docstring says."""
    found = []
    for test, limit, lower, least in MPI_GOALS:
        pair = results["comm"][test]
        found.append(ratio_goal(test, engine_ratios(pair), limit, lower, least))
    docker, podman = results["launch"]["docker"]["end_s"], results["launch"]["podman"]["end_s"]
    extra = podman - docker
    found.append(Goal(
        f"launch at {LAUNCH_NODES} nodes", f"podman - docker ≤ {LAUNCH_LIMIT_S} s",
        f"{extra:+.2f} s (docker {docker:.2f} s, podman {podman:.2f} s)", extra <= LAUNCH_LIMIT_S,
    ))  # fmt: skip
    return found


def engine_ratios(pair: dict[str, comm.Points]) -> list[tuple[float, float]]:
    """podman / docker at each size both have."""
    docker = {s: v for s, v in pair["docker"]}
    return [(s, v / docker[s]) for s, v in pair["podman"] if docker.get(s)]


def ratio_goal(test: str, found: list[tuple[float, float]], limit: float, lower: bool,
               least: int) -> Goal:  # fmt: skip
    judged = from_size(found, least)
    sizes = f"at every size ≥ {least // KiB} KiB" if least else "at every size"
    target = f"podman/docker {'≤' if lower else '≥'} {limit:.2f} {sizes}"
    if not judged:
        return Goal(f"{test} between nodes", target, "no size measured both ways", None)
    size, worst = (max if lower else min)(judged, key=lambda p: p[1])
    middle = statistics.median(r for _, r in judged)
    measured = f"worst {worst:.3f} at {size:.0f} B, median {middle:.3f}"
    met = worst <= limit if lower else worst >= limit
    return Goal(f"{test} between nodes", target, measured, met)


def report(results: dict[str, Any]) -> str:
    rows = [[g.name, g.target, g.measured, {True: "yes", False: "**no**", None: "?"}[g.met]]
            for g in goals(results)]  # fmt: skip
    launches = [[m, f"{results['launch'][m]['init_s']:.2f}", f"{results['launch'][m]['end_s']:.2f}"]
                for m in MODES]  # fmt: skip
    return "\n\n".join([
        "# Rootless Podman against Docker (python -m bench engines)",
        f"One run, {results['repeat']} repetition(s), medians; quick: {results['quick']}.",
        table(["goal", "target", "measured", "met"], rows),
        f"Launch at {LAUNCH_NODES} nodes, one rank each (seconds from the launch command's "
        "start):",
        table(["mode", "all ranks past MPI_Init", "end"], launches, numeric=2),
    ]) + "\n"  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench engines", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer OSU iterations")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (3)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = run(quick=args.quick, repeat=args.repeat)
    publish(args.out, "engines", results, report(results))
    return 0


def _entry_argv(mode: str, argv: list[str]) -> list[str]:
    return ["srun", "mpidock", "slurm-entry", *entry(mode), "--", *argv]


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
