"""`python -m bench load [--nodes N...]`: what one job asks of the shared filesystem and of
the engine, per node, in both launch modes, counted rather than estimated.

Each point runs the launch twice, one rank per node, images warm: once under strace, which
records every file system call of `slurm-entry` and its children (stat, open, rename,
listdir...) and every request it sends to the engine's API, and once untraced for the wall
time (strace slows what it traces). Counted on each node:
- job-directory operations: calls on a path under the job root (`.mpidock/jobs/`),
  including directories listed through a descriptor of one, by kind;
- shared-filesystem operations: the same on any path of the shared directory the nodes
  mount (the job directory, and the user's configuration, run records and stores);
- engine API calls: HTTP requests written to a socket (GET, POST, DELETE, PUT, HEAD).
The rate per node is the traced count divided by the untraced job's seconds. Writes
results/load.json and load.md; bench/model.py can read them for the 1,024-node figures.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench import launch
from bench import testbed as bench_testbed
from bench.report import publish, table
from launcher.testbed.jobs import HOME, sbatch
from launcher.testbed.layout import SHARED

RESULTS = Path(__file__).parent / "results"
MODES = ("ssh", "pmix")
IMAGE = "mpidock/openmpi"
JOB_ROOT_PART = "/.mpidock/jobs/"
TRACED = "%file,getdents64,sendto"
# A syscall's kind, for the table; anything else on a job path is "other".
KINDS = {
    "stat": ("stat", "lstat", "newfstatat", "statx", "fstatat64", "access", "faccessat",
             "faccessat2", "readlink", "readlinkat"),
    "open": ("open", "openat", "openat2", "creat"),
    "rename": ("rename", "renameat", "renameat2"),
    "listdir": ("getdents64", "getdents"),
}  # fmt: skip
FIELDS = (*KINDS, "other", "shared", "api")
_CALL = re.compile(r"^(?:\[pid\s+)?\d+\]?\s+(\w+)\(")
_REQUEST = re.compile(r'^(?:\[pid\s+)?\d+\]?\s+sendto\([^,]*, "(GET|POST|DELETE|PUT|HEAD) /')


def kind(syscall: str) -> str:
    return next((k for k, names in KINDS.items() if syscall in names), "other")


def count(lines: Iterable[str], shared: str = f"{SHARED}/") -> dict[str, int]:
    """One trace's job-directory operations by kind, its shared-filesystem operations and
    its API requests."""
    found: Counter[str] = Counter()
    for line in lines:
        if _REQUEST.match(line):
            found["api"] += 1
            continue
        match = _CALL.match(line)
        if not match or match.group(1) == "sendto":
            continue
        if JOB_ROOT_PART in line:
            found[kind(match.group(1))] += 1
        # A quoted path, or a descriptor of one (3</path>); not the cwd strace shows
        # beside AT_FDCWD.
        if f'"{shared}' in line or re.search(rf"\b\d+<{re.escape(shared)}", line):
            found["shared"] += 1
    return {k: found.get(k, 0) for k in FIELDS}


def command(mode: str, traces: Path | None) -> list[str]:
    """The launch command; under strace (one trace file per node) when `traces` is given."""
    entry = ["mpidock", "slurm-entry", "--image", IMAGE]
    if mode == "pmix":
        entry += ["--launch", "pmix"]
    entry += ["--", "mpi-hello", "--stamp"]
    srun = ["srun", "--mpi=pmix"] if mode == "pmix" else ["srun"]
    if traces is None:
        return [*srun, *entry]
    # The node's name is the step's variable, read by the shell; argv passes through "$@".
    script = f'exec strace -f -qq -yy -s 40 -e trace={TRACED} -o "$0/$SLURMD_NODENAME" "$@"'
    return [*srun, "sh", "-c", script, str(traces), *entry]


def measure(mode: str, n: int) -> dict[str, Any]:
    """The untraced job's seconds, then the traced job's counts per node."""
    options = ["-N", str(n), "--ntasks-per-node=1", "-w", launch.nodelist(n)]
    plain = _job(options, command(mode, None), n)
    traces = HOME / "bench-load" / f"{mode}-{n}"
    shutil.rmtree(traces, ignore_errors=True)
    traces.mkdir(parents=True)
    owner = HOME.stat()
    for path in (traces.parent, traces):
        os.chown(path, owner.st_uid, owner.st_gid)
    _job(options, command(mode, traces), n)
    per_node = {p.name: count(p.read_text(errors="replace").splitlines())
                for p in sorted(traces.iterdir())}  # fmt: skip
    if len(per_node) != n:
        raise RuntimeError(f"{mode} on {n} nodes: traces of {sorted(per_node)} only")
    seconds = plain["end_s"]
    mean = {k: statistics.mean(c[k] for c in per_node.values()) for k in FIELDS}
    fs_ops = sum(mean[k] for k in (*KINDS, "other"))
    return {
        "mode": mode, "nodes": n, "seconds": round(seconds, 3), "per_node": per_node,
        "mean_per_node": {k: round(v, 1) for k, v in mean.items()},
        "fs_ops_per_node": round(fs_ops, 1),
        "fs_ops_per_node_per_s": round(fs_ops / seconds, 1),
        "shared_ops_per_node": round(mean["shared"], 1),
        "shared_ops_per_node_per_s": round(mean["shared"] / seconds, 1),
        "api_calls_per_node": round(mean["api"], 1),
    }  # fmt: skip


def report(results: dict[str, Any]) -> str:
    header = ["mode", "nodes", "job s", *KINDS, "other", "job dir ops/node", "per s",
              "shared fs ops/node", "per s", "API calls/node"]  # fmt: skip
    rows = [[p["mode"], p["nodes"], f"{p['seconds']:.2f}",
             *[f"{p['mean_per_node'][k]:.1f}" for k in (*KINDS, "other")],
             f"{p['fs_ops_per_node']:.1f}", f"{p['fs_ops_per_node_per_s']:.1f}",
             f"{p['shared_ops_per_node']:.1f}", f"{p['shared_ops_per_node_per_s']:.1f}",
             f"{p['api_calls_per_node']:.1f}"] for p in results["points"]]  # fmt: skip
    return "\n\n".join([
        "# What one job asks of the shared filesystem and the engine (python -m bench load)",
        "One traced and one untraced job per point, one rank per node, images warm. Counts "
        "are means over the job's nodes of its slurm-entry's calls on job-directory paths "
        "(by kind), on any path of the shared directory, and of its HTTP requests to the "
        "engine; a rate divides by the untraced job's seconds (T0 to T1).",
        table(header, rows, numeric=len(header) - 1),
    ]) + "\n"  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench load", description=__doc__)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 3, 8, 16], metavar="N")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    counts = sorted(set(args.nodes))
    if shutil.which("strace") is None:
        parser.error("strace is not installed: apt-get install strace")
    have, widest = bench_testbed.node_count(), max(counts)
    if widest > have:
        bench_testbed.up(widest)
    try:
        points = [measure(mode, n) for n in counts for mode in MODES]
    finally:
        if widest > have:
            bench_testbed.up(have)
    results = {"counts": counts, "points": points}
    publish(args.out, "load", results, report(results))
    return 0


def _job(options: list[str], argv: list[str], n: int) -> dict[str, float]:
    job = sbatch(options, launch.timed_wrap(argv), timeout=900)
    if job.state != "COMPLETED":
        raise RuntimeError(f"job {job.job_id} on {n} nodes {job.state}: {job.output[-1500:]}")
    return launch.times(job.output, n)
