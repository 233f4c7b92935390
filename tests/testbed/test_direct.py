"""The direct launch (--launch pmix) on the testbed: every Slurm task one rank, wired up by
Slurm's PMIx server, one container per node, no sshd and no mpirun anywhere.

Each job runs through sbatch with a time limit (jobs.submit): as mpiuser under Docker,
and where a test takes the `engine` fixture once more as mpinodocker under rootless
Podman, each task with its own API service on the node's shared storage."""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from launcher.testbed.jobs import Job, home_of, wait
from launcher.testbed.layout import STATE as TMP
from tests.testbed.conftest import (
    NODES,
    assert_nothing_left,
    docker_on,
    node_containers,
    run,
    sbatch,
    submit,
)
from tests.testbed.engines import (
    PODMAN_USER,
    EngineCase,
    assert_nothing_left_podman,
    engine,
    podman_registry_config,
)

__all__ = ["engine"]  # the fixture, for pytest

HELLO = re.compile(r"rank (\d+) of (\d+) on (\S+) uid (\d+) gid (\d+)")
ENTRY = "mpidock slurm-entry --launch pmix --engine docker --image mpidock/openmpi"
# Every process a rank's container holds while the rank runs, one name a line (the image
# has no ps): an sshd or an orted there would be the ssh mode's. A process may end between
# the glob and its read.
PROCESSES = "{ cat /proc/[0-9]*/comm 2>/dev/null; true; }"


def direct(srun: str, command: str, timeout: float = 240) -> Job:
    wrap = f"srun --mpi=pmix {srun} {ENTRY} -- {command}"
    return sbatch(["-N", "3", "--ntasks-per-node=2"], wrap, timeout=timeout)


# The containers' init: Docker's, or the catatonit rootless Podman binds in as podman-init.
INIT = {"docker": "docker-init", "podman": "podman-init"}


def test_a_ring_of_two_ranks_per_node_runs_without_sshd_or_mpirun(engine: EngineCase) -> None:
    entry = ENTRY.replace("--engine docker", f"--engine {engine.name}")
    wrap = f"srun --mpi=pmix {entry} -- sh -c 'mpi-hello --ring && {PROCESSES}'"
    job = sbatch(["-N", "3", "--ntasks-per-node=2"], wrap, timeout=300, user=engine.user)
    assert job.state == "COMPLETED", job.output
    ranks = [m for m in HELLO.finditer(job.output)]
    assert sorted(int(m.group(1)) for m in ranks) == list(range(6))
    assert Counter(m.group(3) for m in ranks) == {n.name: 2 for n in NODES}
    ids = pwd.getpwnam(engine.user)
    assert {(m.group(4), m.group(5)) for m in ranks} == {(str(ids.pw_uid), str(ids.pw_gid))}
    assert "ring passed 6 ranks" in job.output
    names = set(job.output.split())
    assert INIT[engine.name] in names  # the containers' process tables were printed
    assert not names & {"sshd", "mpirun", "orted", "prted"}, job.output
    assert "mpidock: error" not in job.output
    engine.assert_nothing_left(job)


def test_a_rank_failing_on_one_node_fails_the_step_naming_that_node() -> None:
    job = direct("-K", "mpi-hello --ring --fail-rank 3 --exit-code 7")
    assert job.state == "FAILED", job.output
    assert "rank 3 failing with exit code 7 as asked" in job.output
    # Rank 3 is the second task of the second node: both mpidock and srun name it.
    assert "mpidock: sim2: rank 3 exited 7" in job.output
    assert "srun: error: sim2: task 3: Exited with exit code 7" in job.output
    assert_nothing_left(job)


def test_scancel_leaves_nothing_on_any_node() -> None:
    wrap = f"srun --mpi=pmix {ENTRY} -- mpi-hello --sleep 300"
    job_id = submit(["-N", "3", "--ntasks-per-node=2"], wrap, timeout=240)
    try:
        _wait_running(job_id)
    finally:
        subprocess.run(["scancel", job_id], check=False)
    job = wait(job_id, timeout=120)
    assert job.state == "CANCELLED", job.output
    assert_nothing_left(job)
    left = subprocess.run(["pgrep", "-f", "mpi-hello --sleep 300"], capture_output=True)
    assert left.stdout == b"", "a rank outlived its job"


def test_the_time_limit_leaves_nothing_on_any_node() -> None:
    wrap = f"srun --mpi=pmix {ENTRY} -- mpi-hello --sleep 300"
    job_id = submit(["-N", "3", "--ntasks-per-node=2"], wrap, timeout=60)  # --time 1
    job = wait(job_id, timeout=240)
    assert job.state == "TIMEOUT", job.output
    assert "rank 5 of 6" in job.output  # it ran until Slurm's limit
    assert_nothing_left(job)
    left = subprocess.run(["pgrep", "-f", "mpi-hello --sleep 300"], capture_output=True)
    assert left.stdout == b"", "a rank outlived its job"


def test_sigkilled_tasks_take_their_nodes_container_and_ranks_with_them() -> None:
    # Nothing of mpidock runs after a SIGKILL: the container's PID 1 sees the FIFO the
    # node's tasks held closed by the kernel, ends, and the engine removes the container.
    wrap = f"srun --mpi=pmix {ENTRY} -- mpi-hello --sleep 300"
    job_id = submit(["-N", "3", "--ntasks-per-node=2"], wrap, timeout=240)
    try:
        _wait_running(job_id)
        tasks = _entry_pids(job_id, "sim2")
        assert len(tasks) == 2, tasks
        for pid in tasks:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while node_containers(NODES[1], f"org.mpidock.job={job_id}"):
            assert time.monotonic() < deadline, "sim2's container outlived its tasks"
            time.sleep(0.2)
        assert node_containers(NODES[0], f"org.mpidock.job={job_id}", "State") == ["running"]
    finally:
        subprocess.run(["scancel", job_id], check=False)
    job = wait(job_id, timeout=120)
    assert_nothing_left(job)


def _entry_pids(job_id: str, node: str) -> list[int]:
    """The job's slurm-entry processes on node (every node's run on this machine)."""
    found = subprocess.run(
        ["pgrep", "-u", "mpiuser", "-f", "slurm-entry --launch pmix"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    wanted = {f"SLURM_JOB_ID={job_id}", f"SLURMD_NODENAME={node}"}
    return [int(pid) for pid in found if wanted <= _environ(int(pid))]


def _environ(pid: int) -> set[str]:
    try:
        return set(Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0"))
    except OSError:
        return set()


def test_pmix_mode_without_srun_mpi_pmix_is_one_line_and_leaves_nothing() -> None:
    wrap = f"srun {ENTRY} -- mpi-hello"  # MpiDefault=none: no PMIx server for the step
    job = sbatch(["-N", "3"], wrap, timeout=120)
    assert job.state == "FAILED", job.output
    said = [line for line in job.output.splitlines() if line.startswith("mpidock: error:")]
    assert len(said) == 3, job.output  # one line per task, nothing else of ours
    assert all("--launch pmix needs Slurm's PMIx server" in line for line in said)
    assert all("srun --mpi=pmix" in line for line in said)
    assert "Traceback" not in job.output
    assert_nothing_left(job)


def _wait_running(job_id: str, timeout: float = 120) -> None:
    """Until every node runs the job's container (its ranks are in it then or soon)."""

    def running() -> bool:
        states = [node_containers(n, f"org.mpidock.job={job_id}", "State") for n in NODES]
        return all(s == ["running"] for s in states)

    _wait(running, f"job {job_id}: the nodes' containers all running", timeout)


def _wait(ready: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            time.sleep(2)  # the ranks' execs start right after
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def test_mpich_through_pmi2_one_rank_per_node_and_two_on_one_node() -> None:
    # Debian's MPICH 4.0.2 speaks PMI-1, which Slurm's mpi/pmi2 answers, through each
    # task's relay. Two ranks per node on several nodes hit MPICH 4.0.2's hang in
    # MPI_Finalize over UCX (README, Known problems), as the ssh mode does.
    entry = "mpidock slurm-entry --launch pmi2 --engine docker --image mpidock/mpich"
    for nodes, per_node in (("3", "1"), ("1", "2")):
        wrap = f"srun --mpi=pmi2 {entry} -- mpi-hello --ring"
        job = sbatch(["-N", nodes, f"--ntasks-per-node={per_node}"], wrap, timeout=120)
        assert job.state == "COMPLETED", job.output
        ranks = int(nodes) * int(per_node)
        assert f"ring passed {ranks} ranks" in job.output
        assert len(HELLO.findall(job.output)) == ranks
        assert_nothing_left(job)
    left = [p for n in NODES for p in (TMP / n.name / "tmp" / "mpidock-1501").glob("*")]
    assert left == [], "a step's meeting place outlived it"


def test_scancel_of_a_podman_step_leaves_nothing_on_any_node() -> None:
    # mpinodocker reaches no Docker socket: auto takes rootless Podman. Every task's API
    # service, the node's container (its conmon) and the user's namespace go.
    wrap = "srun --mpi=pmix mpidock slurm-entry --launch pmix --image mpidock/openmpi -- " + (
        "mpi-hello --sleep 300"
    )
    with podman_registry_config():
        job_id = submit(["-N", "3", "--ntasks-per-node=2"], wrap, timeout=240, user=PODMAN_USER)
        try:
            said = f"job {job_id}: 6 ranks said hello"
            _wait(lambda: _ranks_said_hello(job_id, PODMAN_USER, 6), said)
        finally:
            subprocess.run(["scancel", job_id], check=False)
        job = wait(job_id, timeout=120, user=PODMAN_USER)
    assert job.state == "CANCELLED", job.output
    assert "Traceback" not in job.output
    assert_nothing_left_podman(job)
    left = subprocess.run(["pgrep", "-f", "mpi-hello --sleep 300"], capture_output=True)
    assert left.stdout == b"", "a rank outlived its job"


def _ranks_said_hello(job_id: str, user: str, ranks: int) -> bool:
    out = home_of(user) / "jobs-out" / f"{job_id}.out"
    return out.exists() and len(HELLO.findall(out.read_text(errors="replace"))) == ranks


@pytest.mark.parametrize(
    ("image", "mode", "evidence"),
    [
        ("mpidock/openmpi", "pmix", "Open MPI's pmix component ext3x"),
        ("mpidock/mpich", "pmi2", "libmpich.so.12 has a PMI-1 client (simple PMI)"),
    ],
)
def test_check_in_a_job_names_the_direct_launch_and_proves_it(
    image: str, mode: str, evidence: str
) -> None:
    # One node, one task: the proof's 2-rank step overcommits the allocation's CPU.
    job = sbatch(["-N", "1", "-w", "sim2"], f"mpidock check --engine docker {image}", timeout=240)
    assert job.state == "COMPLETED", job.output  # check exits 1 on any FAIL row
    rows = {line[:23].strip(): line[23:].split(None, 1) for line in job.output.splitlines()}
    assert rows["direct launch"] == ["-", f"{mode}: {evidence}"]
    result, detail = rows["direct, 2 ranks"]
    assert result == "pass", job.output
    assert detail.startswith(f"ranks 0 and 1 ran through srun --mpi={mode} (container started")
    assert job.output.rstrip().endswith("10 of 10 checks passed")
    assert node_containers(NODES[1], label="org.mpidock.check") == []
    assert not (job.home / ".mpidock" / "runs" / f"{job.job_id}.json").exists()  # the check's
    assert_nothing_left(job)


def test_a_direct_step_leaves_one_run_record_by_its_first_task() -> None:
    job = direct("", "mpi-hello --ring")
    assert job.state == "COMPLETED", job.output
    record = job.record()
    assert (record["launch"], record["image"], record["engine"]["engine"]) == (
        "pmix", "mpidock/openmpi", "docker",
    )  # fmt: skip
    assert record["nodes"] == [{"node": n.name} for n in NODES]
    assert (record["rank"], record["exit_code"], record["error"]) == (0, 0, None)
    assert record["leader"]["node"] == "sim1"
    assert list(record["container_start_s"]) == ["sim1"]
    assert 0 < record["container_start_s"]["sim1"] < 30
    assert record["started"] < record["ended"]
    assert_nothing_left(job)


NO_SSHD = "mpidock-test/nosshd-direct:1"


def test_an_image_without_sshd_runs_directly() -> None:
    """The direct modes start no sshd, so an image without one runs (the ssh mode refuses
    it: tests/testbed/test_faults.py)."""
    recipe = "FROM mpidock/openmpi\nUSER root\nRUN rm /usr/sbin/sshd\n"
    for node in NODES:
        docker_on(node, "build", "-q", "-t", NO_SSHD, "-", stdin=recipe)
    try:
        wrap = (
            f"srun --mpi=pmix mpidock slurm-entry --launch pmix --engine docker "
            f"--image {NO_SSHD} -- sh -c 'test ! -e /usr/sbin/sshd && mpi-hello --ring'"
        )
        job = sbatch(["-N", "3", "--ntasks-per-node=2"], wrap, timeout=240)
    finally:
        for node in NODES:
            run(["docker", "-H", node.docker_url, "rmi", "-f", NO_SSHD])
    assert job.state == "COMPLETED", job.output
    assert "ring passed 6 ranks" in job.output
    assert_nothing_left(job)
