"""Leftovers of jobs that ended without cleaning up, found by label (containers) and by
name (job directories of keys), removed only once Slurm says their job has ended.

Three callers: every slurm-entry as it starts (best effort, never failing the job),
`mpidock reap` by hand, and `mpidock reap --job ID` from a Slurm Epilog, where the job
has ended by definition and Slurm is not asked.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException

from launcher import containers, jobdir, proc
from launcher.errors import LauncherError
from launcher.plan import LABEL_PREFIX, LaunchPlan

# squeue's job states after which nothing of the job runs any more.
FINAL = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
    "OUT_OF_MEMORY", "PREEMPTED", "SPECIAL_EXIT", "TIMEOUT",
})  # fmt: skip
JOB_ID = re.compile(r"^\d+$")


@dataclass(frozen=True)
class Leftover:
    """One thing a job left: a container on this node's engine, or a job directory."""

    kind: str  # "container" | "job dir"
    job_id: str
    name: str

    def describe(self) -> str:
        return f"{self.kind} {self.name} of job {self.job_id}"


def reapable(found: Iterable[Leftover], active: set[str], spare: str = "") -> list[Leftover]:
    """The leftovers whose job is neither active in Slurm nor the caller's own (`spare`)."""
    return [f for f in found if f.job_id not in active and f.job_id != spare]


def active_jobs(squeue_lines: str) -> set[str]:
    """Job ids squeue lists in a state that is not final ("%A %T" lines)."""
    active = set()
    for line in squeue_lines.splitlines():
        job_id, _, state = line.strip().partition(" ")
        if job_id and state.strip() not in FINAL:
            active.add(job_id)
    return active


def ask_slurm() -> set[str]:
    """The jobs Slurm still runs.

    Raises:
        LauncherError: squeue failed; then nothing may be reaped.
    """
    done = proc.run(
        ["squeue", "--noheader", "--states=all", "--format=%A %T"],
        timeout=20,
        hint="without Slurm's answer no leftover can be told from a running job's",
    )
    return active_jobs(done.stdout)


def node_leftovers(client: docker.DockerClient) -> list[Leftover]:
    """Every container carrying our job label on this node's engine."""
    return [
        Leftover("container", c.labels.get(f"{LABEL_PREFIX}.job", ""), c.name or c.id)
        for c in containers.job_containers(client)
    ]


def job_dir_leftovers(job_root: Path) -> list[Leftover]:
    """Job directories under the user's job root (named by job id)."""
    try:
        entries = list(job_root.iterdir())
    except OSError:
        return []
    return [Leftover("job dir", p.name, str(p)) for p in entries if JOB_ID.match(p.name)]


def remove(client: docker.DockerClient | None, leftover: Leftover) -> None:
    """Removes one leftover; one already gone is fine.

    Raises:
        LauncherError: Docker or the file system refused.
    """
    if leftover.kind == "job dir":
        jobdir.remove_job_dir(Path(leftover.name))
        return
    assert client is not None
    try:
        containers.remove_named(client, leftover.name)
    except DockerException as e:
        raise LauncherError(f"cannot remove {leftover.describe()}: {e}") from e


def remove_all(
    client: docker.DockerClient | None, leftovers: Sequence[Leftover], say: Callable[[str], None]
) -> list[str]:
    """Removes each, saying so; the failures, one line each."""
    failures = []
    for leftover in leftovers:
        try:
            remove(client, leftover)
            say(f"removed {leftover.describe()}")
        except LauncherError as e:
            failures.append(str(e))
    return failures


def at_start(client: docker.DockerClient, plan: LaunchPlan) -> None:
    """Before a job starts on a node: remove what ended jobs left there.

    Slurm is asked only when something of another job is found, so a clean node costs
    one container list. Never fails the job: problems become one line on stderr.
    """
    found = node_leftovers(client)
    if plan.role == "leader":
        found += job_dir_leftovers(plan.job.path.parent)
    if not any(f.job_id != plan.job_id for f in found):
        return

    def say(line: str) -> None:
        print(f"mpidock: {plan.node}: {line}", file=sys.stderr)

    try:
        doomed = reapable(found, ask_slurm(), spare=plan.job_id)
    except LauncherError as e:
        say(f"leftovers not reaped: {e}")
        return
    for failure in remove_all(client, doomed, say):
        say(failure)
