"""Real MPI jobs through sbatch: placement, identity, exit status, records, no leftovers.

Each job test runs under both engines: Docker as mpiuser, rootless Podman as mpinodocker
(tests/testbed/engines.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter

import pytest

from tests.testbed.conftest import NODES, as_user, run
from tests.testbed.engines import NONE, EngineCase, engine

__all__ = ["engine"]  # the fixture

HELLO = re.compile(r"rank (\d+) of (\d+) on (\S+) uid (\d+) gid (\d+)")


def ranks_per_host(output: str) -> dict[str, int]:
    return dict(Counter(m.group(3) for m in HELLO.finditer(output)))


def test_openmpi_two_ranks_per_node_ring_and_files_owned_by_the_user(engine: EngineCase) -> None:
    out_dir = engine.home / "ring-files"
    shutil.rmtree(out_dir, ignore_errors=True)
    as_user(["mkdir", "-p", str(out_dir)], user=engine.user)
    try:
        job = engine.launch(
            ["-N", "3", "--ntasks-per-node=2"],
            ["--image", "mpidock/openmpi"],
            f"mpi-hello --ring --write {out_dir}",
        )
        assert job.state == "COMPLETED", job.output
        assert ranks_per_host(job.output) == {n.name: 2 for n in NODES}
        assert "ring passed 6 ranks" in job.output
        user = engine.home.stat()
        ids = {(int(m.group(4)), int(m.group(5))) for m in HELLO.finditer(job.output)}
        assert ids == {(user.st_uid, user.st_gid)}
        written = sorted(out_dir.iterdir())
        assert [p.name for p in written] == [f"rank-{r}.txt" for r in range(6)]
        owners = {(p.stat().st_uid, p.stat().st_gid) for p in written}
        assert owners == {(user.st_uid, user.st_gid)}
        assert job.record()["engine"]["engine"] == engine.name
        engine.assert_nothing_left(job)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def test_run_record_has_phases_argv_and_exit_status(engine: EngineCase) -> None:
    job = engine.launch(["-N", "3"], ["--image", "mpidock/openmpi"], "mpi-hello")
    assert job.state == "COMPLETED", job.output
    record = job.record()
    assert record["exit_code"] == 0
    assert record["error"] is None
    assert [n["node"] for n in record["nodes"]] == [n.name for n in NODES]
    leader = record["leader"]
    assert set(leader["timings"]) >= {"image", "sshd_ready", "container", "mpirun", "teardown"}
    workers = record["workers"]
    assert sorted(workers) == [n.name for n in NODES[1:]]
    for report in workers.values():
        assert report["teardown"] == "clean"
        assert set(report["timings"]) >= {"image", "container", "teardown"}
    argv = record["mpirun_argv"]
    assert argv[0] == "mpirun"
    assert "sim1:1,sim2:1,sim3:1" in argv
    assert "docker0" not in " ".join(argv)


def test_heterogeneous_allocation_places_ranks_as_slurm_did(engine: EngineCase) -> None:
    job = engine.launch(["-N", "3", "-n", "5"], ["--image", "mpidock/openmpi"], "mpi-hello --ring")
    assert job.state == "COMPLETED", job.output
    assert ranks_per_host(job.output) == {"sim1": 2, "sim2": 2, "sim3": 1}
    assert "ring passed 5 ranks" in job.output


def test_ranks_run_with_the_users_uid_gid_and_groups(engine: EngineCase) -> None:
    """Rootless runc cannot map host groups into the user namespace (README, Engines):
    under Podman the user of this test has its primary group only, so `id` is the same."""
    expected = as_user(["id"], user=engine.user).stdout.strip()
    job = engine.launch(["-N", "3"], ["--image", "mpidock/openmpi", "--ppn", "1"], "id")
    assert job.state == "COMPLETED", job.output
    lines = job.lines("uid=")
    assert lines == [expected] * 3


def test_failing_rank_fails_the_job_and_cleans_up(engine: EngineCase) -> None:
    job = engine.launch(
        ["-N", "3"], ["--image", "mpidock/openmpi"], "mpi-hello --fail-rank 2 --exit-code 7"
    )
    assert job.state == "FAILED", job.output
    assert job.exit_code != "0:0"
    assert "rank 2 failing with exit code 7" in job.output
    record = job.record()
    assert record["exit_code"] != 0
    engine.assert_nothing_left(job)


def test_mpich_is_detected_and_launched_with_hydra(engine: EngineCase) -> None:
    # One node: MPICH 4.0.2 with UCX 1.13.1 (Debian 12) over TCP between nodes
    # intermittently hangs in MPI_Finalize (see README, Known problems).
    job = engine.launch(
        ["-N", "1", "--ntasks-per-node=2"], ["--image", "mpidock/mpich"], "mpi-hello --ring"
    )
    assert job.state == "COMPLETED", job.output
    assert ranks_per_host(job.output) == {"sim1": 2}
    assert "ring passed 2 ranks" in job.output
    record = job.record()
    assert record["mpi"] == "mpich"
    assert record["mpirun_argv"][:2] == ["mpiexec", "-launcher"]
    engine.assert_nothing_left(job)


def test_port_taken_on_a_node_is_named(engine: EngineCase) -> None:
    port, node = 29876, NODES[2]
    holder = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            node.netns,
            "python3",
            "-c",
            "import socket,time;s=socket.socket();"
            f"s.bind(('0.0.0.0',{port}));s.listen();time.sleep(120)",
        ]
    )
    try:
        _wait_listening(node.netns, port)
        job = engine.launch(
            ["-N", "3"], ["--image", "mpidock/openmpi", "--port", str(port)], "mpi-hello"
        )
    finally:
        holder.kill()
        holder.wait()
    assert job.state == "FAILED", job.output
    assert f"port {port} is already in use" in job.output
    assert node.name in job.output
    error = job.record()["error"]
    assert error["node"] == node.name
    engine.assert_nothing_left(job)


def test_dry_run_prints_the_plan_and_starts_nothing(engine: EngineCase) -> None:
    job = engine.launch(["-N", "3"], ["--image", "mpidock/openmpi", "--dry-run"], "mpi-hello")
    assert job.state == "COMPLETED", job.output
    assert job.lines("role: leader on sim1")
    assert len(job.lines("role: worker")) == 2
    assert job.lines("mpirun: mpirun")
    assert job.lines(f"engine: {engine.name}")
    if engine.name == "podman":  # as the engine will start it: runc keeps no limits here
        assert job.lines("engine: no CPU, memory or process limits of its own"), job.output
        assert '"cpuset_cpus": ""' in job.output
    assert not (engine.home / ".mpidock" / "runs" / f"{job.job_id}.json").exists()
    engine.assert_nothing_left(job)


def test_outside_slurm_the_missing_variables_are_named() -> None:
    done = as_user(["mpidock", "slurm-entry", "--image", "mpidock/openmpi", "--", "true"])
    assert done.returncode == 2
    assert "SLURM_JOB_ID" in done.stderr
    assert "SLURM_PROCID" in done.stderr


def _wait_listening(netns: str, port: int) -> None:
    for _ in range(100):
        listening = run(["ip", "netns", "exec", netns, "ss", "-Hltn", f"sport = :{port}"])
        if listening.stdout.strip():
            return
        subprocess.run(["sleep", "0.1"], check=True)
    pytest.fail(f"nothing listens on {port} in {netns}")


def test_ranks_hold_no_capability_and_single_copy_shared_memory_works(
    engine: EngineCase,
) -> None:
    """Docker: no capability at all. Rootless Podman makes a capability it adds effective
    for the container's non-root user: SYS_PTRACE (for CMA), held only inside the job's
    own user namespace, over processes that are all the user's (README, Engines)."""
    job = engine.launch(
        ["-N", "1", "--ntasks-per-node=2"],
        ["--image", "mpidock/openmpi"],
        "sh -c 'grep CapEff /proc/self/status; cat /proc/self/uid_map; "
        "exec mpidock-osu bw --max-size 1048576'",
    )
    assert job.state == "COMPLETED", job.output
    assert job.lines("CapEff:") == [f"CapEff:\t{engine.rank_capabilities}"] * 2
    # Open MPI's CMA single copy (process_vm_readv) fails with EPERM under Docker's
    # seccomp profile unless the container may hold SYS_PTRACE; it then says so per read.
    assert "Read -1" not in job.output
    maps = {tuple(line.split()) for line in job.output.splitlines() if line.count(" ") > 3}
    maps = {m for m in maps if len(m) == 3 and all(f.isdigit() for f in m)}
    assert (("0", "0", "4294967295") in maps) == (engine.rank_capabilities == NONE), maps
    assert job.lines("1048576")
