"""Launch cost: for 1..K nodes (one rank each, images warm), the seconds from the start of
the launch command in the batch script to every rank past MPI_Init, and to its end;
mpidock against a native mpirun of the same program on the same nodes, interleaved.

The container jobs' run records also give the teardown per node (end of mpirun to the
node's container gone) and slurm-entry's own peak memory and CPU seconds per node.
"""

from __future__ import annotations

import re
import shlex
import statistics
from typing import Any

from bench import native
from launcher.testbed.jobs import Job, sbatch

IMAGE = "mpidock/openmpi"
STAMP = re.compile(r"^rank (\d+) init (\d+\.\d+)$", re.M)
MARK = re.compile(r"^(T0|T1) (\d+\.\d+)$", re.M)


def command(mode: str, program: str) -> list[str]:
    if mode == "container":
        return ["srun", "mpidock", "slurm-entry", "--image", IMAGE, "--", "mpi-hello", "--stamp"]
    return native.mpirun(1, [program, "--stamp"])


def timed_wrap(argv: list[str]) -> str:
    """The batch script: wall-clock marks around the launch command (fixed text only)."""
    return f'echo "T0 $(date +%s.%N)"; {shlex.join(argv)}; echo "T1 $(date +%s.%N)"'


def nodelist(n: int) -> str:
    return ",".join(f"sim{i}" for i in range(1, n + 1))


def measure(mode: str, n: int, program: str) -> dict[str, Any]:
    job = sbatch(["-N", str(n), "--ntasks-per-node=1", "-w", nodelist(n)],
                 timed_wrap(command(mode, program)), timeout=600)  # fmt: skip
    if job.state != "COMPLETED":
        raise RuntimeError(
            f"{mode} job {job.job_id} on {n} nodes {job.state}: {job.output[-1500:]}"
        )
    figures: dict[str, Any] = times(job.output, n)
    if mode == "container":
        figures |= record_figures(job)
    return figures


def times(output: str, ranks: int) -> dict[str, float]:
    """Seconds from T0 to the last rank past MPI_Init, and to T1.

    Raises:
        RuntimeError: a mark or a rank's stamp is missing.
    """
    marks = dict(MARK.findall(output))
    stamps = [float(t) for _, t in STAMP.findall(output)]
    if len(stamps) != ranks or set(marks) != {"T0", "T1"}:
        raise RuntimeError(f"expected T0, T1 and {ranks} init stamps in: {output[-1500:]}")
    start = float(marks["T0"])
    return {"init_s": max(stamps) - start, "end_s": float(marks["T1"]) - start}


def record_figures(job: Job) -> dict[str, Any]:
    """Teardown seconds and slurm-entry's own cost per node, from the run record."""
    record = job.record()
    leader = record["leader"]
    teardown = {leader["node"]: leader["timings"]["removal"]}
    cost = {leader["node"]: leader.get("self", {})}
    for node, report in record["workers"].items():
        teardown[node] = report["timings"]["teardown"]
        cost[node] = report.get("self", {})
    return {"teardown": teardown, "self": cost}


def run(max_nodes: int, repeat: int) -> dict[str, Any]:
    """Every node count, both modes, `repeat` times, interleaved; medians and the fit."""
    program = str(native.build("mpi-hello", "mpi_hello.c"))
    for mode in ("native", "container"):  # warm-up, not counted
        measure(mode, max_nodes, program)
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for _ in range(repeat):
        for n in range(1, max_nodes + 1):
            for mode in ("native", "container"):
                samples.setdefault((mode, n), []).append(measure(mode, n, program))
    return summarize(samples, max_nodes)


def summarize(
    samples: dict[tuple[str, int], list[dict[str, Any]]], max_nodes: int
) -> dict[str, Any]:
    def median(mode: str, n: int, key: str) -> float:
        return round(float(statistics.median(s[key] for s in samples[(mode, n)])), 3)

    points = [
        {"nodes": n,
         "container_init_s": median("container", n, "init_s"),
         "container_end_s": median("container", n, "end_s"),
         "native_init_s": median("native", n, "init_s"),
         "native_end_s": median("native", n, "end_s")}
        for n in range(1, max_nodes + 1)
    ]  # fmt: skip
    overhead = {str(p["nodes"]): round(p["container_end_s"] - p["native_end_s"], 3) for p in points}
    widest = samples[("container", max_nodes)]
    steps = [(int(n), v) for n, v in overhead.items()]
    return {
        "points": points,
        "overhead_s": overhead,
        "growth_s_per_node": round(slope(steps), 4),
        "first_remote_step_s": round(overhead["2"] - overhead["1"], 3) if max_nodes > 1 else 0,
        "growth_from_2_s_per_node": round(slope(steps[1:]), 4),
        "teardown": per_node_median([s["teardown"] for s in widest]),
        "self": per_node_costs([s["self"] for s in widest]),
    }


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope; 0 for a single point."""
    if len(points) < 2:
        return 0.0
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    num = sum((x - mean_x) * (y - mean_y) for x, y in points)
    den = sum((x - mean_x) ** 2 for x, _ in points)
    return num / den


def per_node_median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {node: round(statistics.median(r[node] for r in runs), 3) for node in runs[0]}


def per_node_costs(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The worst peak memory and the median CPU seconds per node."""
    return {
        node: {
            "max_rss_mb": max(r[node].get("max_rss_mb", 0.0) for r in runs),
            "cpu_s": round(statistics.median(r[node].get("cpu_s", 0.0) for r in runs), 3),
        }
        for node in runs[0]
    }
