"""MPI communication in containers against native, on the same nodes in the same run:
mpidock-osu (OSU's method and output: latency, bw, bcast, allreduce) between nodes and
within one node, and mpi4py's own ping-pong between nodes."""

from __future__ import annotations

import functools
import shlex
import statistics
import subprocess
from collections.abc import Callable
from typing import Any

from bench import native, osu
from launcher.testbed.jobs import entry_wrap, sbatch

IMAGE = "mpidock/openmpi"
SUBCOMMANDS = {"latency": "latency", "bandwidth": "bw", "bcast": "bcast", "allreduce": "allreduce"}
# scope -> test -> (nodes, ranks per node)
SHAPES = {
    "inter": {"latency": (2, 1), "bandwidth": (2, 1), "bcast": (3, 1), "allreduce": (3, 1)},
    "intra": {"latency": (1, 2), "bandwidth": (1, 2), "bcast": (1, 2), "allreduce": (1, 2)},
}
Points = list[list[float]]  # [[message size in bytes, value], ...]
# OSU's own counts (10000 round trips for small messages) take hours over the testbed's
# TCP, whose round trip is bounded by the 4 ms scheduler tick: fixed, smaller counts.
ITERATIONS = {
    True: ["--iterations", "50", "--warmup", "5"],
    False: ["--iterations", "200", "--warmup", "20"],
}
MPI4PY = ["python3", "-m", "mpi4py.bench", "pingpong"]


def job_output(mode: str, argv: list[str], nodes: int, per_node: int) -> str:
    """One job running argv on `nodes` nodes, `per_node` ranks each; its output."""
    if mode == "container":
        wrap = entry_wrap(["--image", IMAGE, "--quiet"], shlex.join(argv))
    else:
        wrap = shlex.join(native.mpirun(per_node, argv))
    hosts = ",".join(f"sim{i}" for i in range(1, nodes + 1))
    options = ["-N", str(nodes), f"--ntasks-per-node={per_node}", "-w", hosts]
    job = sbatch(options, wrap, timeout=1800)
    if job.state != "COMPLETED":
        raise RuntimeError(f"{mode} {argv[0]} job {job.job_id} {job.state}: {job.output[-1500:]}")
    return job.output


def osu_curve(mode: str, scope: str, test: str, binary: str, quick: bool) -> Points:
    nodes, per_node = SHAPES[scope][test]
    program = "mpidock-osu" if mode == "container" else binary
    argv = [program, SUBCOMMANDS[test], *ITERATIONS[quick]]
    curve = osu.parse(job_output(mode, argv, nodes, per_node))
    return [[size, value] for size, value in curve.rows]


def mpi4py_curve(mode: str) -> Points:
    curve = osu.parse_mpi4py_pingpong(job_output(mode, MPI4PY, 2, 1))
    return [[size, value] for size, value in curve.rows]


def median_curve(runs: list[Points]) -> Points:
    """Per size, the median over runs (sizes as the first run has them)."""
    by_size = [dict((s, v) for s, v in run) for run in runs]
    return [[size, round(statistics.median(r[size] for r in by_size), 3)] for size, _ in runs[0]]


def interleaved(repeat: int, measure: Callable[[str], Points]) -> dict[str, Points]:
    """Native then container, `repeat` times (noise falls on both alike); median curves."""
    runs: dict[str, list[Points]] = {"native": [], "container": []}
    for _ in range(repeat):
        for mode, found in runs.items():
            found.append(measure(mode))
    return {mode: median_curve(found) for mode, found in runs.items()}


def run(*, quick: bool, repeat: int) -> dict[str, Any]:
    """Every scope and test, and mpi4py's ping-pong: median curves of both modes."""
    binary = str(native.build("mpidock-osu", "mpi_osu.c"))
    result: dict[str, Any] = {}
    for scope, tests in SHAPES.items():
        result[scope] = {}
        for test in tests:
            measure = functools.partial(
                osu_curve, scope=scope, test=test, binary=binary, quick=quick
            )
            result[scope][test] = interleaved(repeat, measure)
    if mpi4py_pingpong():
        result["mpi4py"] = interleaved(repeat, mpi4py_curve)
    else:  # the image has the same Debian mpi4py as the host
        result["mpi4py_skipped"] = "this mpi4py has no `python3 -m mpi4py.bench pingpong` (4.0+)"
    return result


def mpi4py_pingpong() -> bool:
    """Whether the host's mpi4py (the image's is the same package) has the ping-pong."""
    done = subprocess.run(["/usr/bin/python3", "-m", "mpi4py.bench", "--help"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    return "pingpong" in done.stdout
