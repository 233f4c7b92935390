"""`mpidock runs [JOBID]`: the run records of this user's jobs, as tables.

The list shows one line a job, newest first; with a job id, that job's nodes: how each
got its image, its phases, its teardown and slurm-entry's own cost.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
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
    p.add_argument("--last", type=_count, default=20, metavar="N", help="list the N newest (20)")
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


def _count(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number, 1 or more, got {text!r}")
    return int(text)


def newest(folder: Path, count: int) -> list[Record]:
    paths = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    readable = (r for r in map(read_json, paths) if r is not None)
    return list(itertools.islice(readable, count))


def list_table(records: list[Record], now: float) -> str:
    """JOB ENDED NODES IMAGE EXIT SECONDS ERROR, one line a job."""
    lines = [("JOB", "ENDED", "NODES", "IMAGE", "EXIT", "SECONDS", "ERROR")]
    for r in records:
        ended, started = _number(r.get("ended")), _number(r.get("started"))
        seconds = "-" if ended is None or started is None else f"{ended - started:.1f}"
        error = str(_mapping(r.get("error")).get("message", ""))
        nodes = r.get("nodes")
        lines.append((
            str(r.get("job_id", "?")), "-" if ended is None else f"{age_text(now - ended)} ago",
            str(len(nodes) if isinstance(nodes, list) else "-"), str(r.get("image", "")),
            str(r.get("exit_code", "")), seconds, error[:60],
        ))  # fmt: skip
    return columns(lines)


def job_table(record: Record) -> str:
    """The job's summary line, then per node: role, image path and bytes, each phase in
    seconds, how its teardown ended and slurm-entry's peak memory. A record missing parts
    (an older mpidock's, or a leader killed before writing them) shows what it has."""
    nodes = _nodes(record)
    phases = sorted({p for _, n in nodes.values() for p in _mapping(n.get("timings"))})
    head = ("NODE", "ROLE", "IMAGE", "BYTES", *(p.upper() for p in phases), "END", "RSS-MB")
    lines = [head]
    for name, (role, node) in nodes.items():
        image = _mapping(node.get("image"))
        timings = _mapping(node.get("timings"))
        lines.append((
            name, role, str(image.get("path", "-")), str(image.get("bytes", "-")),
            *(_seconds(timings.get(p)) for p in phases),
            str(node.get("teardown", "-" if role == "worker" else "")),
            str(_mapping(node.get("self")).get("max_rss_mb", "-")),
        ))  # fmt: skip
    error = _mapping(record.get("error"))
    summary = (
        f"job {record.get('job_id')}: {record.get('image')} ({_how(record)}), "
        f"exit {record.get('exit_code')}"
        + (f", error on {error.get('node')}: {error.get('message')}" if error else "")
    )
    return summary + "\n" + columns(lines)


def _how(record: Record) -> str:
    """The MPI family (the ssh mode knows it) or the direct launch mode (no mpirun ran)."""
    if record.get("mpi"):
        return str(record["mpi"])
    launch = record.get("launch")
    return f"{launch} launch" if launch else "MPI unknown"


def _nodes(record: Record) -> dict[str, tuple[str, Record]]:
    """Node name -> (role, its report): the leader's first, when the record has one."""
    nodes: dict[str, tuple[str, Record]] = {}
    if leader := _mapping(record.get("leader")):
        nodes[str(leader.get("node", "?"))] = ("leader", leader)
    workers = _mapping(record.get("workers"))
    nodes |= {str(name): ("worker", _mapping(report)) for name, report in workers.items()}
    return nodes


def _mapping(value: object) -> Record:
    return value if isinstance(value, dict) else {}


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _seconds(value: object) -> str:
    return "-" if (seconds := _number(value)) is None else f"{seconds:.2f}"
