"""Slurm's suspend and resume reach the ranks: `scontrol suspend` pauses every container
of the job on every node (no CPU used while suspended), `scontrol resume` continues them,
and the job completes with its known result, longer suspended than the heartbeat deadline.
Under both engines: Docker's cgroup freezer, and rootless Podman's stopped processes."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from launcher.testbed.jobs import submit, wait
from launcher.testbed.layout import Node
from tests.testbed.conftest import NODES, node_containers
from tests.testbed.engines import DOCKER, EngineCase, engine

__all__ = ["engine"]  # the fixture

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
def spin(engine: EngineCase) -> Iterator[Path]:
    path = engine.home / "suspend_spin.py"
    path.write_text(SPIN)
    try:
        yield path
    finally:
        path.unlink()


def _ranks(spin: Path) -> list[int]:
    """The ranks' processes on the host: python3 running the spin script."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if Path(argv[0]).name.startswith("python3") and argv[1:2] == [str(spin)]:
            found.append(int(entry.name))
    return sorted(found)


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def _usage(pids: list[int]) -> list[int]:
    """Each rank's CPU time (user + system) in clock ticks."""
    return [int(_stat(p)[11]) + int(_stat(p)[12]) for p in pids]


def _stopped(engine: EngineCase, job_id: str, pids: list[int], stopped: bool) -> Callable[[], bool]:
    """Docker pauses the containers (the cgroup freezer: state `paused`); rootless Podman
    on cgroup v1 has no freezer, so the ranks themselves are stopped (state T)."""
    if engine is DOCKER:
        want = {"paused"} if stopped else {"running"}
        return lambda: all(_states(n, job_id) == want for n in NODES)
    return lambda: all((_stat(p)[0] == "T") == stopped for p in pids)


def _states(node: Node, job_id: str) -> set[str]:
    return set(node_containers(node, f"org.mpidock.job={job_id}", "State"))


def _until(what: str, check: object, seconds: float) -> float:
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - start < seconds, f"not {what} after {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - start


def _output(engine: EngineCase, job_id: str) -> str:
    path = engine.home / "jobs-out" / f"{job_id}.out"
    return path.read_text() if path.exists() else ""


def test_a_suspended_job_uses_no_cpu_and_completes_after_resume(
    engine: EngineCase, spin: Path
) -> None:
    wrap = f"srun mpidock slurm-entry --engine {engine.name} --image mpidock/openmpi"
    suspend_and_resume(engine, f"{wrap} -- python3 {spin}", spin)


def test_a_suspended_direct_launch_job_uses_no_cpu_and_completes_after_resume() -> None:
    """The pmix mode: one container per node, each Slurm task a rank in it."""
    path = DOCKER.home / "suspend_spin_direct.py"
    path.write_text(SPIN)
    try:
        wrap = "srun --mpi=pmix mpidock slurm-entry --launch pmix --image mpidock/openmpi"
        suspend_and_resume(DOCKER, f"{wrap} -- python3 {path}", path)
    finally:
        path.unlink()


def suspend_and_resume(engine: EngineCase, wrap: str, spin: Path) -> None:
    """A 3-node job of spin, suspended for SUSPENDED_S once it spins, then resumed: no CPU
    used while suspended, the known result after, nothing left."""
    job_id = submit(["-N", "3", "--ntasks-per-node", "1"], wrap, timeout=300, user=engine.user)
    try:
        _until("spinning", lambda: "spinning" in _output(engine, job_id), 180)
        pids = _ranks(spin)
        assert len(pids) == 3, pids
        before = _usage(pids)
        time.sleep(1.0)
        assert all(b > a for a, b in zip(before, _usage(pids), strict=True)), "ranks idle?"
        subprocess.run(["scontrol", "suspend", job_id], check=True)
        suspended = time.monotonic()
        paused = _until("paused", _stopped(engine, job_id, pids, True), 2.0)
        time.sleep(1.0)
        first = _usage(pids)
        time.sleep(SUSPENDED_S - 5)
        assert _usage(pids) == first, "a rank used CPU while the job was suspended"
        time.sleep(max(0.0, SUSPENDED_S - (time.monotonic() - suspended)))
        subprocess.run(["scontrol", "resume", job_id], check=True)
        running = _until("running", _stopped(engine, job_id, pids, False), 2.0)
    except BaseException:  # a job left suspended would hold its nodes for the next tests
        subprocess.run(["scontrol", "resume", job_id], check=False, capture_output=True)
        subprocess.run(["scancel", job_id], check=False)
        raise
    finally:
        job = wait(job_id, timeout=300, user=engine.user)
    print(
        f"{wrap.split(' -- ')[0]}, from the host: stopped {paused:.2f} s after suspend, "
        f"running {running:.2f} s after resume"
    )
    assert job.state == "COMPLETED", job.output
    assert f"spun {3 * ITERATIONS} in 3 ranks" in job.output
    took = re.findall(
        r"mpidock: (\S+) suspended: \d+ container\(s\) paused in ([0-9.]+) s", job.output
    )
    assert {node for node, _ in took} == {n.name for n in NODES}, job.output
    assert all(float(s) < 2.0 for _, s in took), took
    assert "gone" not in job.output
    engine.assert_nothing_left(job)
