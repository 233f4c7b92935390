"""`mpidock runs [JOBID]`: the run records of this user's jobs, as tables.

The list shows one line a job, newest first; with a job id, that job's nodes: how each
got its image, its phases, its teardown and slurm-entry's own cost.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

from launcher.cache import age_text, columns
from launcher.errors import UsageError
from launcher.identity import current_identity
from launcher.record import read_json, runs_dir

Record = dict[str, Any]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("runs", help="list this user's run records, or show one job's")
    p.add_argument("job", nargs="?", metavar="JOBID", help="show this job's nodes and phases")
    p.add_argument("--last", type=int, default=20, metavar="N", help="list the N newest (20)")
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    folder = runs_dir(current_identity().home)
    if args.job:
        record = read_json(folder / f"{args.job}.json")
        if record is None:
            raise UsageError(
                f"no run record of job {args.job} in {folder}",
                hint="`mpidock runs` lists the jobs that have one",
            )
        print(json.dumps(record, indent=2) if args.json else job_table(record))
        return 0
    records = newest(folder, args.last)
    if args.json:
        print(json.dumps(records, indent=2))
    elif records:
        print(list_table(records, time.time()))
    else:
        print(f"no run records in {folder}")
    return 0


def newest(folder: Path, count: int) -> list[Record]:
    paths = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    readable = (r for r in map(read_json, paths) if r is not None)
    return list(itertools.islice(readable, count))


def list_table(records: list[Record], now: float) -> str:
    """JOB ENDED NODES IMAGE EXIT SECONDS ERROR, one line a job."""
    lines = [("JOB", "ENDED", "NODES", "IMAGE", "EXIT", "SECONDS", "ERROR")]
    for r in records:
        seconds = f"{r.get('ended', 0) - r.get('started', 0):.1f}"
        error = (r.get("error") or {}).get("message", "")
        lines.append((
            str(r.get("job_id", "?")), f"{age_text(now - r.get('ended', now))} ago",
            str(len(r.get("nodes", []))), str(r.get("image", "")),
            str(r.get("exit_code", "")), seconds, error[:60],
        ))  # fmt: skip
    return columns(lines)


def job_table(record: Record) -> str:
    """The job's summary line, then per node: role, image path and bytes, each phase in
    seconds, how its teardown ended and slurm-entry's peak memory."""
    nodes = {record["leader"]["node"]: ("leader", record["leader"])}
    nodes |= {name: ("worker", report) for name, report in record.get("workers", {}).items()}
    phases = sorted({p for _, n in nodes.values() for p in n.get("timings", {})})
    head = ("NODE", "ROLE", "IMAGE", "BYTES", *(p.upper() for p in phases), "END", "RSS-MB")
    lines = [head]
    for name, (role, node) in nodes.items():
        image = node.get("image") or {}
        timings = node.get("timings", {})
        lines.append((
            name, role, str(image.get("path", "-")), str(image.get("bytes", "-")),
            *(f"{timings[p]:.2f}" if p in timings else "-" for p in phases),
            str(node.get("teardown", "-" if role == "worker" else "")),
            str((node.get("self") or {}).get("max_rss_mb", "-")),
        ))  # fmt: skip
    error = record.get("error")
    summary = (
        f"job {record.get('job_id')}: {record.get('image')} ({record.get('mpi')}), "
        f"exit {record.get('exit_code')}"
        + (f", error on {error.get('node')}: {error.get('message')}" if error else "")
    )
    return summary + "\n" + columns(lines)
