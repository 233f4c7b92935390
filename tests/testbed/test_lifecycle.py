"""Down leaves nothing behind; up comes back after a clean down and after a dead testbed.

This module runs last in its tier (files run in name order) and leaves the testbed up.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from launcher.testbed.layout import BRIDGE, RUN, STATE
from tests.testbed.conftest import MPIDOCK, NODES, run, sbatch, submit, trap_addresses, wait

PROGRAMS = ("slurmd", "slurmctld", "munged", "dockerd", "containerd")


def traces() -> list[str]:
    """Everything of the testbed the system still shows, one line each; empty when gone."""
    found = [f"netns {n}" for n in run(["ip", "netns", "list"]).stdout.split() if "mpidock" in n]
    found += [
        f"link {line}"
        for line in run(["ip", "-o", "link"]).stdout.splitlines()
        if BRIDGE in line or "mpidk-" in line
    ]
    found += [
        f"rule {rule}" for rule in run(["iptables", "-S"]).stdout.splitlines() if BRIDGE in rule
    ]
    found += [
        f"mount {m}"
        for m in Path("/proc/self/mountinfo").read_text().splitlines()
        if "mpidock" in m
    ]
    found += [f"process {p}" for p in _processes() if "mpidock-testbed" in p or " sim" in p]
    found += [f"file {p}" for p in [RUN] if p.exists()]
    return found


def test_down_leaves_nothing_and_up_comes_back() -> None:
    done = run([*MPIDOCK, "testbed", "down"])
    assert done.returncode == 0, done.stderr
    assert traces() == []
    assert run([*MPIDOCK, "testbed", "status"]).returncode != 0
    _up_and_run_a_job()


def test_up_repairs_a_testbed_whose_processes_all_died() -> None:
    # A job running at the kill comes back RUNNING from slurmctld's saved state; up cancels it,
    # else it would hold every node until its time limit.
    running = submit(["-N", str(len(NODES)), "--exclusive"], "srun sleep 600", timeout=900)
    _wait_running(running)
    victims = _testbed_pids()
    assert len(victims) >= 2 * len(NODES) + 2
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    _wait_gone(victims)
    stale = run([*MPIDOCK, "testbed", "status"])
    assert stale.returncode != 0
    assert "down" in stale.stdout or "stopped" in stale.stdout
    _up_and_run_a_job()
    assert wait(running, timeout=60).state == "CANCELLED"


def _up_and_run_a_job() -> None:
    done = run([*MPIDOCK, "testbed", "up", "-N", str(len(NODES))], timeout=900)
    assert done.returncode == 0, done.stderr
    assert run([*MPIDOCK, "testbed", "status"]).returncode == 0
    assert all(trap_addresses(n) == {("172.17.0.1", 16)} for n in NODES)
    job = sbatch(["-N", "3"], "srun hostname")
    assert job.state == "COMPLETED", job
    assert sorted(job.output.split()) == [n.name for n in NODES]


def _wait_running(job_id: str) -> None:
    """The job running, and saved so by slurmctld (it saves its state a while after a change)."""
    deadline = time.monotonic() + 60
    while run(["squeue", "-h", "-j", job_id, "-o", "%T"]).stdout.strip() != "RUNNING":
        assert time.monotonic() < deadline, f"job {job_id} not running after 60 s"
        time.sleep(0.2)
    running_at = time.time()
    saved = STATE / "slurmctld" / "job_state"
    while not saved.exists() or saved.stat().st_mtime <= running_at:
        assert time.monotonic() < deadline, f"slurmctld has not saved job {job_id} running"
        time.sleep(0.2)


def _testbed_pids() -> list[int]:
    """Every process of the testbed: node namespaces, Slurm, munge, our host engine."""
    pids = {int(p) for n in NODES for p in run(["ip", "netns", "pids", n.netns]).stdout.split()}
    for program in ("slurmctld", "munged"):
        pids |= {int(p) for p in run(["pgrep", "-x", program]).stdout.split()}
    host_engine = run(["pgrep", "-x", "dockerd"]).stdout.split()
    for pid in host_engine:
        pids.add(int(pid))
        pids |= {int(p) for p in run(["pgrep", "-P", pid]).stdout.split()}
    return sorted(pids)


def _processes() -> list[str]:
    lines = run(["ps", "-eo", "pid=,args="]).stdout.splitlines()
    return [line for line in lines if any(p in line for p in PROGRAMS)]


def _wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.1)
