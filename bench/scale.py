"""`python -m bench scale [--nodes N...] [--repeat R]`: the launch curve to 16 nodes in both
launch modes against their native baselines, one rank per node, images warm, measured in
one run (the testbed is widened to the largest count for it and narrowed back after):

- native-ssh: Open MPI's own `mpirun` in the allocation (bench/native.py);
- ssh: `srun mpidock slurm-entry` (sshd containers, the leader's mpirun);
- native-pmix: `srun --mpi=pmix` of the same program, no container;
- pmix: `srun --mpi=pmix mpidock slurm-entry --launch pmix` (one container per node).

Per point: seconds from the launch command's start to every rank past MPI_Init and to its
end (T0, T1 marks in the batch script), and the launcher's own CPU seconds per node
(/usr/bin/time around each `slurm-entry`: user + system, summed over the job's tasks and
divided by the nodes). Writes results/scale.json and scale.md; the 1,024-node model
(bench/model.py) reads scale.json.

Goals (issue 16), judged as decided before any run, each from the medians:
- pmix overhead over native-pmix at 3 nodes (end to end) at most 0.5 s;
- pmix growth: the least-squares slope of that overhead over the counts from 3 up at most
  0.05 s per node, and the slope of the launcher's total CPU seconds over the same counts
  at most 0.05 s per node;
- ssh growth: the slope of the ssh overhead over native-ssh from 3 up at most half of
  the committed bench's growth (bench/results/bench.json launch.growth_s_per_node, 0.337
  s per node when this was written).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import launch, native
from bench import testbed as bench_testbed
from bench.report import Goal, publish, table
from launcher.testbed.jobs import sbatch
from launcher.testbed.layout import SUBNET

RESULTS = Path(__file__).parent / "results"
MODES = ("native-ssh", "ssh", "native-pmix", "pmix")
IMAGE = "mpidock/openmpi"
COUNTS = (1, 2, 3, 4, 8, 12, 16)
TIME = ["/usr/bin/time", "-f", "mpidock-cpu %U %S"]
CPU = re.compile(r"^mpidock-cpu (\d+\.\d+) (\d+\.\d+)$", re.M)
# Slurm's pmix gives the ranks no interface choice: the testbed's network is named, as
# native.mpirun names it (the container mode's launcher picks the network itself). No
# comma in the value: --export splits on commas.
NATIVE_PMIX_ENV = f"ALL,OMPI_MCA_btl_tcp_if_include={SUBNET}"
OVERHEAD_LIMIT_S = 0.5
GROWTH_LIMIT_S = 0.05
CPU_GROWTH_LIMIT_S = 0.05


def command(mode: str, program: str) -> list[str]:
    """The batch script's launch command for a mode."""
    entry = ["mpidock", "slurm-entry", "--image", IMAGE]
    if mode == "native-ssh":
        return native.mpirun(1, [program, "--stamp"])
    if mode == "ssh":
        return ["srun", *TIME, *entry, "--", "mpi-hello", "--stamp"]
    if mode == "native-pmix":
        return ["srun", "--mpi=pmix", f"--export={NATIVE_PMIX_ENV}", program, "--stamp"]
    return ["srun", "--mpi=pmix", *TIME, *entry, "--launch", "pmix", "--", "mpi-hello", "--stamp"]


def measure(mode: str, n: int, program: str) -> dict[str, float]:
    options = ["-N", str(n), "--ntasks-per-node=1", "-w", launch.nodelist(n)]
    job = sbatch(options, launch.timed_wrap(command(mode, program)), timeout=600)
    if job.state != "COMPLETED":
        raise RuntimeError(
            f"{mode} job {job.job_id} on {n} nodes {job.state}: {job.output[-1500:]}"
        )
    figures = launch.times(job.output, n)
    if cpu := CPU.findall(job.output):
        figures["launcher_cpu_s"] = sum(float(u) + float(s) for u, s in cpu)
    return figures


def run(counts: Sequence[int], repeat: int) -> dict[str, Any]:
    """Every count and mode, `repeat` times, interleaved; medians per point."""
    program = str(native.build("mpi-hello", "mpi_hello.c"))
    for mode in MODES:  # warm-up at the widest, not counted
        measure(mode, max(counts), program)
    samples: dict[tuple[str, int], list[dict[str, float]]] = {}
    for _ in range(repeat):
        for n in counts:
            for mode in MODES:
                samples.setdefault((mode, n), []).append(measure(mode, n, program))
    points = [
        {"nodes": n, **{f"{m}_{k}": _median(samples[(m, n)], k)
                        for m in MODES for k in samples[(m, n)][0]}}
        for n in counts
    ]  # fmt: skip
    return {"repeat": repeat, "counts": list(counts), "points": points}


def summary(results: dict[str, Any]) -> dict[str, float]:
    """Overheads at 3 nodes and the slopes from 3 up."""
    pts = [p for p in results["points"] if p["nodes"] >= 3]
    three = next(p for p in results["points"] if p["nodes"] == 3)

    def overhead(p: dict[str, float], mode: str) -> float:
        return p[f"{mode}_end_s"] - p[f"native-{mode}_end_s"]

    def growth(value: Callable[[dict[str, float]], float]) -> float:
        return round(launch.slope([(p["nodes"], value(p)) for p in pts]), 4)

    return {
        "pmix_overhead_3_s": round(overhead(three, "pmix"), 3),
        "ssh_overhead_3_s": round(overhead(three, "ssh"), 3),
        "pmix_growth_s_per_node": growth(lambda p: overhead(p, "pmix")),
        "ssh_growth_s_per_node": growth(lambda p: overhead(p, "ssh")),
        "pmix_cpu_growth_s_per_node": growth(lambda p: p["pmix_launcher_cpu_s"]),
        "ssh_cpu_growth_s_per_node": growth(lambda p: p["ssh_launcher_cpu_s"]),
        "native_pmix_growth_s_per_node": growth(lambda p: p["native-pmix_end_s"]),
        "native_ssh_growth_s_per_node": growth(lambda p: p["native-ssh_end_s"]),
    }


def goals(found: dict[str, float], today_ssh_growth: float | None) -> list[Goal]:
    ssh_limit = today_ssh_growth / 2 if today_ssh_growth else None
    ssh = found["ssh_growth_s_per_node"]
    return [
        _at_most("pmix overhead at 3 nodes", found["pmix_overhead_3_s"], OVERHEAD_LIMIT_S, "s"),
        _at_most("pmix growth, wall", found["pmix_growth_s_per_node"], GROWTH_LIMIT_S, "s/node"),
        _at_most("pmix growth, launcher CPU", found["pmix_cpu_growth_s_per_node"],
                 CPU_GROWTH_LIMIT_S, "CPU s/node"),
        Goal("ssh growth, wall", f"≤ half of today's {today_ssh_growth} s/node"
             if ssh_limit else "half of today's (no committed figure)",
             f"{ssh:.3f} s/node", ssh <= ssh_limit if ssh_limit else None),
    ]  # fmt: skip


def _at_most(name: str, value: float, limit: float, unit: str) -> Goal:
    return Goal(name, f"≤ {limit} {unit}", f"{value:.3f} {unit}", value <= limit)


def report(results: dict[str, Any], today_ssh_growth: float | None) -> str:
    found = results["summary"]
    rows = [[g.name, g.target, g.measured, {True: "yes", False: "**no**", None: "?"}[g.met]]
            for g in goals(found, today_ssh_growth)]  # fmt: skip
    header = ["nodes", *[f"{m} end s" for m in MODES], "ssh CPU s", "pmix CPU s"]
    points = [[p["nodes"], *[f"{p[f'{m}_end_s']:.2f}" for m in MODES],
               f"{p.get('ssh_launcher_cpu_s', 0):.2f}", f"{p.get('pmix_launcher_cpu_s', 0):.2f}"]
              for p in results["points"]]  # fmt: skip
    return "\n\n".join([
        "# Launch to 16 nodes (python -m bench scale)",
        f"One run, {results['repeat']} repetition(s) per point, medians; one rank per node; "
        "CPU s: the launcher's user + system seconds summed over the job's tasks.",
        table(["goal", "target", "measured", "met"], rows),
        table(header, points, numeric=len(header) - 1),
        "Slopes from 3 nodes up (s per node): "
        + ", ".join(f"{k} {v}" for k, v in found.items() if k.endswith("per_node")),
    ]) + "\n"  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__)
    parser.add_argument("--nodes", type=int, nargs="+", default=list(COUNTS), metavar="N")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions per point (1)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    counts = sorted(set(args.nodes))
    if 3 not in counts or len([n for n in counts if n >= 3]) < 2:
        parser.error("--nodes must hold 3 and another count above it (the goals' slope)")
    have = bench_testbed.node_count()
    widest = max(counts)
    if widest > have:
        bench_testbed.up(widest)
    try:
        results = run(counts, args.repeat)
    finally:
        if widest > have:
            bench_testbed.up(have)
    results["summary"] = summary(results)
    today = _today_ssh_growth()
    publish(args.out, "scale", results, report(results, today))
    return 0


def _median(runs: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 3)


def _today_ssh_growth() -> float | None:
    try:
        found = json.loads((RESULTS / "bench.json").read_text())["launch"]["growth_s_per_node"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(found)
