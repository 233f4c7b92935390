"""`python -m bench model`: launch at 64, 256 and 1,024 nodes, predicted from the measured
16-node curve (results/scale.json), and the shared-filesystem load of the ssh mode's job
directory protocol at that size. Writes results/model.md.

Assumptions (each one is a reason the prediction may be wrong):
- Launch time grows linearly in the node count at the slope measured from 3 to 16 nodes
  (least squares over the medians), from the line through those points. On the testbed
  every node shares one machine's 2 cores, so a per-node cost that is really CPU
  contention on this machine is counted as if it were network or fan-out cost: the
  slopes are upper bounds for nodes with their own CPUs, and the 16-node points are
  the only evidence.
- The ssh mode's mpirun opens one ssh connection per node from the leader's container
  (`plm_rsh_no_tree_spawn 1`), serially bounded by the leader: its cost is the measured
  per-node slope. Open MPI's tree spawn would make it logarithmic: depth log_k(N) for
  fan-out k, each level costing one remote start (the measured first remote step).
- The pmix mode's tasks start in parallel through Slurm (srun's own tree); its per-node
  cost is what the measured slope says, nothing is assumed flat.
- Shared-filesystem metadata operations are counted from the protocol's code: the
  leader lists the job directory once a look (every readiness.POLL seconds while it
  waits for the workers, every leader.POLL while the job runs; a listing's getdents
  calls grow with the directory, FILES_PER_WORKER entries per worker) and opens only
  the reports the listing shows;
  a running worker stats the job's stop file and directory every POLL seconds for its
  first FAST_FOR seconds, every IDLE_POLL seconds after, and the leader's heartbeat at
  each check of its container (every CHECK_EVERY seconds, at most once a look). The
  "workers while running" column is a job past its first seconds. The pmix mode keeps
  its per-node state on node-local disk: no job directory. Where results/load.json is
  there (python -m bench load: every call counted with strace), the measured operations
  per second of the whole job, all nodes together, are fitted with a line in the node
  count and extrapolated beside the count from the code.
- Flux's figures for comparison are the published ones for one task per node (1.7 s at
  64 nodes, 10.6 s at 1,024), measured on real clusters, not here.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import launch
from bench.report import table
from launcher import leader, readiness, worker

RESULTS = Path(__file__).parent / "results"
SIZES = (64, 256, 1024)
FLUX = {64: 1.7, 1024: 10.6}
MODES = ("native-ssh", "ssh", "native-pmix", "pmix")
TREE_FANOUT = 32  # Open MPI's tree spawn: each daemon starts up to this many more
# Per look (worker._wait_end): the stop file and the job directory; the leader's
# heartbeat at each check of the container.
WORKER_STATS_PER_LOOK = 2
# Per look of the leader (readiness.wait_ready while it starts, leader._supervise while
# the job runs): one listing of the job directory, i.e. its open and the getdents calls
# that fill glibc's readdir buffer with every entry, and the empty one that ends it.
FILES_PER_WORKER = 4  # sshd_config, arrived and ready, with need, moving or done
DIRENT_BYTES = 40  # a linux_dirent64 of a name such as "sshd_config.sim1024"
GETDENTS_BUFFER = 32768


def line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line."""
    slope = launch.slope(points)
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    return mean_y - slope * mean_x, slope


def predict(scale: dict[str, Any]) -> dict[str, dict[int, float]]:
    """Each mode's end-to-end launch seconds at SIZES, from the points of 3 nodes up."""
    pts = [p for p in scale["points"] if p["nodes"] >= 3]
    found: dict[str, dict[int, float]] = {}
    for mode in MODES:
        base, slope = line([(p["nodes"], p[f"{mode}_end_s"]) for p in pts])
        found[mode] = {n: round(base + slope * n, 2) for n in SIZES}
    first = next(p for p in scale["points"] if p["nodes"] == 2)
    one = next(p for p in scale["points"] if p["nodes"] == 1)
    step = first["ssh_end_s"] - one["ssh_end_s"]  # the first remote node's cost
    three = next(p for p in scale["points"] if p["nodes"] == 3)["ssh_end_s"]
    found["ssh, tree spawn"] = {
        n: round(three + step * math.ceil(math.log(n, TREE_FANOUT)), 2) for n in SIZES
    }
    return found


def filesystem_load(nodes: int) -> dict[str, float]:
    """Metadata operations per second on the shared job directory, ssh mode."""
    looks = 1 / worker.IDLE_POLL  # a job past its first worker.FAST_FOR seconds
    checks = 1 / max(worker.CHECK_EVERY, worker.IDLE_POLL)
    running = (nodes - 1) * (looks * WORKER_STATS_PER_LOOK + checks)
    entries = (nodes - 1) * FILES_PER_WORKER * DIRENT_BYTES
    listing = 1 + math.ceil(entries / GETDENTS_BUFFER) + 1
    return {
        "start_up_ops_s": round(listing / readiness.POLL),
        "leader_running_ops_s": round(listing / leader.POLL),
        "running_ops_s": round(running),
    }


def measured_load(load: dict[str, Any]) -> dict[str, dict[int, float]]:
    """Per mode, the whole job's job-directory and shared-filesystem operations per second
    at 16 and SIZES nodes: a line through the measured totals (rate per node x nodes)."""
    found: dict[str, dict[int, float]] = {}
    for mode in sorted({p["mode"] for p in load["points"]}):
        pts = [p for p in load["points"] if p["mode"] == mode]
        for what, key in (
            ("job dir", "fs_ops_per_node_per_s"),
            ("shared", "shared_ops_per_node_per_s"),
        ):
            totals = [(p["nodes"], p[key] * p["nodes"]) for p in pts]
            if len(totals) < 2:
                continue
            base, slope = line(totals)
            found[f"{mode}, {what}"] = {n: round(max(0.0, base + slope * n)) for n in (16, *SIZES)}
    return found


def report(scale: dict[str, Any], load: dict[str, Any] | None = None) -> str:
    found = predict(scale)
    rows = [[mode, *[f"{found[mode][n]:.1f}" for n in SIZES]] for mode in found]
    rows.append(["Flux (published)", *[f"{FLUX[n]:.1f}" if n in FLUX else "-" for n in SIZES]])
    counted = [[n, *filesystem_load(n).values()] for n in (16, *SIZES)]
    return "\n\n".join([
        "# Launch at 1,024 nodes: a model from the 16-node curve (python -m bench model)",
        "Seconds from the launch command's start to its end, one rank per node; lines fit "
        "to the medians of results/scale.json from 3 nodes up. Assumptions: bench/model.py.",
        table(["mode", *[f"{n} nodes" for n in SIZES]], rows, numeric=len(SIZES)),
        "The ssh mode's shared job directory, metadata operations per second (from the "
        "protocol's code; the pmix mode makes none):",
        table(
            ["nodes", "leader start-up", "leader while running", "workers while running"],
            counted,
            numeric=4,
        ),
        *_measured(load),
    ]) + "\n"  # fmt: skip


def _measured(load: dict[str, Any] | None) -> list[str]:
    if not load:
        return []
    found = measured_load(load)
    counts = ", ".join(str(n) for n in load["counts"])
    rows = [[what, *[f"{v:.0f}" for v in by_n.values()]] for what, by_n in found.items()]
    return [
        f"Measured (results/load.json, strace of every call at {counts} nodes), operations per "
        "second of the whole job, all nodes, extrapolated with a line:",
        table(["mode, paths", *[f"{n} nodes" for n in (16, *SIZES)]], rows, numeric=4),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench model", description=__doc__)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    scale = json.loads((args.out / "scale.json").read_text())
    load_path = args.out / "load.json"
    load = json.loads(load_path.read_text()) if load_path.exists() else None
    text = report(scale, load)
    (args.out / "model.md").write_text(text)
    print(text)
    return 0
