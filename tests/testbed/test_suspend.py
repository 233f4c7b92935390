"""Slurm's suspend and resume reach the ranks: `scontrol suspend` pauses every container
of the job on every node (no CPU used while suspended), `scontrol resume` continues them,
and the job completes with its known result, longer suspended than the heartbeat deadline."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.testbed.jobs import submit, wait
from launcher.testbed.layout import Node
from tests.testbed.conftest import HOME, NODES, assert_nothing_left, node_containers, run

pytestmark = pytest.mark.testbed
ITERATIONS = 250  # of 20 ms busy and 80 ms asleep: about 25 s running
SUSPENDED_S = 20.0
SPIN = f"""\
import time
from mpi4py import MPI
world = MPI.COMM_WORLD
if world.rank == 0:
    print("spinning", flush=True)
n = 0
for i in range({ITERATIONS}):
    start = time.monotonic()
    while time.monotonic() - start < 0.02:
        n += 1
    time.sleep(0.08)
    if i % 50 == 0:
        world.barrier()
total = world.allreduce(i + 1, op=MPI.SUM)
if world.rank == 0:
    print(f"spun {{total}} in {{world.size}} ranks", flush=True)
"""


@pytest.fixture
def spin() -> Iterator[Path]:
    path = HOME / "suspend_spin.py"
    path.write_text(SPIN)
    try:
        yield path
    finally:
        path.unlink()


def _pids(node: Node, job_id: str) -> list[int]:
    """Each of the job's containers' first process on the node, seen from the host."""
    found = run(
        ["docker", "-H", node.docker_url, "ps", "-q", "--filter", f"label=org.mpidock.job={job_id}"]
    )
    ids = found.stdout.split()
    if not ids:
        return []
    inspect = run(["docker", "-H", node.docker_url, "inspect", "-f", "{{.State.Pid}}", *ids])
    return [int(p) for p in inspect.stdout.split()]


def _cpu_ns(pid: int) -> int:
    """The CPU time of the container's cgroup (every process in it), in nanoseconds."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpuacct" in controllers.split(","):
            return int(Path(f"/sys/fs/cgroup/{controllers}{path}/cpuacct.usage").read_text())
    raise AssertionError(f"no cpuacct cgroup for {pid}")


def _usage(pids: list[int]) -> list[int]:
    return [_cpu_ns(p) for p in pids]


def _states(node: Node, job_id: str) -> set[str]:
    return set(node_containers(node, f"org.mpidock.job={job_id}", "State"))


def _until(what: str, check: object, seconds: float) -> float:
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - start < seconds, f"not {what} after {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - start


def _output(job_id: str) -> str:
    path = HOME / "jobs-out" / f"{job_id}.out"
    return path.read_text() if path.exists() else ""


def test_a_suspended_job_uses_no_cpu_and_completes_after_resume(spin: Path) -> None:
    job_id = submit(
        ["-N", "3", "--ntasks-per-node", "1"],
        f"srun mpidock slurm-entry --image mpidock/openmpi -- python3 {spin}",
        timeout=300,
    )
    try:
        _until("spinning", lambda: "spinning" in _output(job_id), 180)
        pids = [p for node in NODES for p in _pids(node, job_id)]
        assert len(pids) == 3, pids
        before = _usage(pids)
        time.sleep(1.0)
        assert all(b > a for a, b in zip(before, _usage(pids), strict=True)), "ranks idle?"
        subprocess.run(["scontrol", "suspend", job_id], check=True)
        suspended = time.monotonic()
        paused = _until("paused", lambda: all(_states(n, job_id) == {"paused"} for n in NODES), 2.0)
        time.sleep(1.0)
        first = _usage(pids)
        time.sleep(SUSPENDED_S - 5)
        assert _usage(pids) == first, "a rank used CPU while the job was suspended"
        time.sleep(max(0.0, SUSPENDED_S - (time.monotonic() - suspended)))
        subprocess.run(["scontrol", "resume", job_id], check=True)
        running = _until(
            "running", lambda: all(_states(n, job_id) == {"running"} for n in NODES), 2.0
        )
    finally:
        job = wait(job_id, timeout=300)
    print(
        f"from the host: paused {paused:.2f} s after suspend, running {running:.2f} s after resume"
    )
    assert job.state == "COMPLETED", job.output
    assert f"spun {3 * ITERATIONS} in 3 ranks" in job.output
    took = re.findall(
        r"mpidock: (\S+) suspended: \d+ container\(s\) paused in ([0-9.]+) s", job.output
    )
    assert {node for node, _ in took} == {n.name for n in NODES}, job.output
    assert all(float(s) < 2.0 for _, s in took), took
    assert "gone" not in job.output
    assert_nothing_left(job)
