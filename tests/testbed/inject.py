"""Fault injection on the testbed: find a running job's containers and processes, break
them, and time how long the launcher takes to notice."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from launcher.slurm import job_over, job_state_in
from launcher.testbed.jobs import Job, home_of, submit, wait
from launcher.testbed.layout import Node
from tests.conftest import run
from tests.testbed.conftest import NODES, node_containers

SLEEPER = "mpi-hello --sleep 120"


def containers_of(job_id: str, node: Node, role: str = "") -> list[str]:
    names = node_containers(node, f"org.mpidock.job={job_id}")
    return [n for n in names if not role or f"-{role}-" in n]


def until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Polls check every 0.1 s; the seconds it took. Fails the test at the timeout."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)
    return time.monotonic() - started


def state(job_id: str) -> str:
    """The job's JobState; UNKNOWN once slurmctld no longer holds it."""
    return job_state_in(run(["scontrol", "show", "job", job_id]).stdout)


def start_running(options: list[str], wrap: str, user: str = "mpiuser") -> str:
    """Submits and returns once every node's container of the job is running."""
    job_id = submit(options, wrap, timeout=300, user=user)
    until(
        lambda: (
            (
                bool(containers_of(job_id, NODES[0], "leader"))
                and all(containers_of(job_id, n, "worker") for n in NODES[1:])
            )
            or job_over(state(job_id))
        ),
        120,
        f"job {job_id} running on every node",
    )
    assert state(job_id) == "RUNNING", f"job {job_id} ended early"
    return job_id


def ended(job_id: str) -> Callable[[], bool]:
    return lambda: job_over(state(job_id))


def finish(job_id: str, user: str = "mpiuser") -> Job:
    return wait(job_id, timeout=120, user=user)


def entry_pids(job_id: str, node: Node) -> list[int]:
    """The node's `mpidock slurm-entry` processes of the job (by their Slurm environment),
    or of any job when job_id is empty."""
    pids = []
    for pid in run(["ip", "netns", "pids", node.netns]).stdout.split():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        # python3 /usr/local/bin/mpidock slurm-entry ...; not srun, whose argv looks alike
        is_entry = argv[0].endswith(b"python3") and argv[1:3] == [
            b"/usr/local/bin/mpidock",
            b"slurm-entry",
        ]
        if is_entry and (not job_id or f"SLURM_JOB_ID={job_id}".encode() in environ):
            pids.append(int(pid))
    return pids


def kill_entry(job_id: str, node: Node, sig: int = signal.SIGKILL) -> None:
    pids = entry_pids(job_id, node)
    assert pids, f"no slurm-entry of job {job_id} on {node.name}"
    for pid in pids:
        os.kill(pid, sig)


def job_dirs(user: str = "mpiuser") -> list[str]:
    root = home_of(user) / ".mpidock" / "jobs" / user
    return sorted(p.name for p in root.iterdir()) if root.exists() else []
