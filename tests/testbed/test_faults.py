"""Faults injected into real jobs: each ends in bounded time, names its node, and leaves
no container, key or process behind (the Epilog, which would hide leftovers, is checked
to have found nothing, except where a killed slurm-entry leaves it the work)."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.testbed.jobs import entry_wrap, submit
from tests.testbed.conftest import (
    HOME,
    NODES,
    as_user,
    assert_nothing_left,
    docker_on,
    launch,
    run,
)
from tests.testbed.inject import (
    SLEEPER,
    containers_of,
    ended,
    finish,
    kill_entry,
    start_running,
    until,
)
from tests.testbed.test_images import place

FAULTY = "mpidock/faulty"
RANK_TRAPS = (
    'sh -c \'trap "echo rank got USR1" USR1; trap "echo rank got TERM; exit 3" TERM; '
    'trap "echo rank got INT; exit 4" INT; while :; do sleep 0.2; done\''
)


@pytest.fixture(scope="module")
def faulty() -> Iterator[str]:
    """Broken images on sim1 only (the launcher moves them): no sshd, and an unknown MPI."""
    recipes = {
        "nosshd": "RUN rm /usr/sbin/sshd",
        "nompi": "RUN printf '#!/bin/sh\\necho FooMPI 1.0\\n' >/usr/local/bin/mpirun "
        "&& chmod 755 /usr/local/bin/mpirun",
    }
    for tag, step in recipes.items():
        text = f"FROM mpidock/openmpi\nUSER root\n{step}\n"
        docker_on(NODES[0], "build", "-q", "-t", f"{FAULTY}:{tag}", "-", stdin=text)
    yield FAULTY
    for node in NODES:
        for tag in recipes:
            run(["docker", "-H", node.docker_url, "rmi", "-f", f"{FAULTY}:{tag}"])


@pytest.fixture
def locked() -> Iterator[Path]:
    """A directory in the shared home that the test user can read but not write."""
    path = HOME / "locked"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def reported_within(job_id: str, seconds: float, home: Path = HOME) -> None:
    """The leader stopped within `seconds` of the worker's failure report."""
    from launcher.testbed.jobs import Job

    record = Job(job_id, "", "", "", home).record()
    error = record["error"]
    assert error["reported_at"] is not None, error
    assert record["ended"] - error["reported_at"] < seconds, record


# 1. A worker cannot start its container: reported at once, the leader stops within 5 s.


def test_a_worker_without_sshd_in_the_image_fails_the_job_at_once(faulty: str) -> None:
    started = time.monotonic()
    job = launch(["-N", "3"], ["--image", f"{faulty}:nosshd", "--ready-timeout", "120"], "true")
    assert job.state == "FAILED", job.output
    assert time.monotonic() - started < 60, "waited for the readiness deadline"
    error = job.record()["error"]
    assert error["node"] in ("sim2", "sim3")
    assert f"{error['node']}: worker failed: sshd container exited" in job.output
    assert "/usr/sbin/sshd" in job.output
    reported_within(job.job_id, 5)
    assert_nothing_left(job)


def test_a_docker_socket_the_user_may_not_open_fails_the_job_at_once() -> None:
    node = NODES[2]
    node.docker_sock.chmod(0o600)
    try:
        # Docker asked for by name: under `auto` that node would take rootless Podman.
        entry = ["--engine", "docker", "--image", "mpidock/openmpi", "--ready-timeout", "120"]
        job = launch(["-N", "3"], entry, "true")
    finally:
        node.docker_sock.chmod(0o660)
    assert job.state == "FAILED", job.output
    assert "sim3: worker failed: permission denied on the Docker socket" in job.output
    assert "docker group" in job.output
    assert job.record()["error"]["node"] == "sim3"
    reported_within(job.job_id, 5)
    assert_nothing_left(job)


def test_an_image_a_worker_cannot_get_fails_the_job_at_once(locked: Path) -> None:
    # The image is on sim1 only, there is no registry, and the store cannot be written.
    store = locked
    text = f"FROM mpidock/openmpi\nRUN echo {time.time()} >/stamp\n"
    docker_on(NODES[0], "build", "-q", "-t", "mpidock/sim1-only", "-", stdin=text)
    try:
        job = launch(
            ["-N", "3"],
            ["--image", "mpidock/sim1-only", "--image-store", str(store), "--ready-timeout", "120"],
            "true",
        )
    finally:
        for node in NODES:
            run(["docker", "-H", node.docker_url, "rmi", "-f", "mpidock/sim1-only"])
    assert job.state == "FAILED", job.output
    error = job.record()["error"]
    assert error["node"] in ("sim2", "sim3")
    assert "the leader could not save the image" in error["message"]
    assert "Permission denied" in error["message"]
    reported_within(job.job_id, 5)
    assert_nothing_left(job)


# 2. A worker never reports: the leader stops at the readiness deadline, naming it.


def test_a_worker_that_never_starts_is_named_at_the_deadline() -> None:
    entry = entry_wrap(["--image", "mpidock/openmpi", "--ready-timeout", "4"], "true")
    never = entry.replace("srun ", "srun sh -c '[ $SLURM_PROCID = 2 ] && kill -9 $$; exec ", 1)
    started = time.monotonic()
    job = finish(submit(["-N", "3"], never + "'"))
    took = time.monotonic() - started
    assert job.state == "FAILED", job.output
    assert "sim3: not ready on port" in job.output
    assert "no ready report from the worker" in job.output
    assert job.record()["error"]["node"] == "sim3"
    assert 4 <= job.record()["ended"] - job.record()["started"] < 15
    assert took < 40
    assert_nothing_left(job)


# 3. A worker's container killed while mpirun runs: the job ends within 10 s, naming it.


def test_a_worker_container_killed_mid_run_ends_the_job_within_10_s() -> None:
    job_id = start_running(["-N", "3"], entry_wrap(["--image", "mpidock/openmpi"], SLEEPER))
    (victim,) = containers_of(job_id, NODES[1])
    killed = time.monotonic()
    docker_on(NODES[1], "kill", victim)
    assert until(ended(job_id), 10, "the job's end") < 10
    took = time.monotonic() - killed
    job = finish(job_id)
    assert job.state == "FAILED", job.output
    assert "sim2: worker failed: sshd container exited" in job.output
    assert job.record()["error"]["node"] == "sim2"
    assert took < 10
    assert_nothing_left(job)


# 4. The leader's container or slurm-entry killed: every worker is gone within 10 s.


def test_the_leader_container_killed_mid_run_stops_every_worker_within_10_s() -> None:
    job_id = start_running(["-N", "3"], entry_wrap(["--image", "mpidock/openmpi"], SLEEPER))
    (victim,) = containers_of(job_id, NODES[0], "leader")
    docker_on(NODES[0], "kill", victim)
    until(lambda: not any(containers_of(job_id, n) for n in NODES[1:]), 10, "workers gone")
    job = finish(job_id)
    assert job.state == "FAILED", job.output
    assert job.record()["exit_code"] != 0
    assert_nothing_left(job)


def test_the_leader_slurm_entry_killed_mid_run_stops_every_worker_within_10_s() -> None:
    job_id = start_running(["-N", "3"], entry_wrap(["--image", "mpidock/openmpi"], SLEEPER))
    kill_entry(job_id, NODES[0])
    took = until(lambda: not any(containers_of(job_id, n) for n in NODES[1:]), 10, "workers gone")
    assert took < 10
    job = finish(job_id)
    assert job.state == "FAILED", job.output
    assert "the leader on sim1 is gone" in job.output
    # Workers remove the keys when they outlive the leader; if Slurm ended them first,
    # the user's next start or `mpidock reap` does (the job has ended).
    assert as_user(["mpidock", "reap"]).returncode == 0
    # Nothing could remove the leader's own container but the Epilog on its node.
    assert_nothing_left(job, epilog_removed={"sim1"})


# 5. scancel and the time limit: everything removed before Slurm's KillWait (30 s).


def test_scancel_removes_every_container_before_the_kill_wait() -> None:
    job_id = start_running(["-N", "3"], entry_wrap(["--image", "mpidock/openmpi"], RANK_TRAPS))
    time.sleep(1)
    cancelled = time.monotonic()
    run(["scancel", job_id])
    took = until(lambda: not any(containers_of(job_id, n) for n in NODES), 30, "containers gone")
    job = finish(job_id)
    assert job.state == "CANCELLED", job.output
    assert took < 30
    assert job.output.count("rank got TERM") == 3, job.output
    assert "sim1: SIGTERM passed to mpirun" in job.output
    assert time.monotonic() - cancelled < 45
    assert_nothing_left(job)


def test_time_limit_forwards_the_warning_signal_then_stops_cleanly() -> None:
    job_id = submit(
        ["-N", "3", "--signal=USR1@50"],
        entry_wrap(["--image", "mpidock/openmpi"], RANK_TRAPS),
        timeout=60,
    )
    job = finish(job_id)
    assert job.state == "TIMEOUT", job.output
    assert job.output.count("rank got USR1") == 3, job.output
    assert job.output.count("rank got TERM") == 3, job.output
    assert "sim1: SIGUSR1 passed to mpirun" in job.output
    assert_nothing_left(job)


# 6. slurm-entry SIGKILLed on a node: what it left goes, a running job's never does.


def test_a_killed_worker_entry_leaves_its_container_to_the_epilog_alone() -> None:
    job_id = start_running(["-N", "3"], entry_wrap(["--image", "mpidock/openmpi"], SLEEPER))
    kill_entry(job_id, NODES[1])
    time.sleep(2)
    # The job still runs: its container is not a leftover yet, and nothing removes it.
    assert containers_of(job_id, NODES[1])
    run(["scancel", job_id])
    job = finish(job_id)
    assert job.state == "CANCELLED"
    assert_nothing_left(job, epilog_removed={"sim2"})


# A container reap may take: labelled with the user's name and running as their UID.
AS_USER = ("--label", "org.mpidock.user=mpiuser", "-u", "1501:1501")


def test_reap_and_the_next_start_remove_an_ended_jobs_containers_only() -> None:
    node = NODES[1]
    run(["docker", "-H", node.docker_url, "rm", "-f", "mpidock-test-ended", "mpidock-test-running"])
    running = start_running(["-N", "3"], entry_wrap(["--image", "mpidock/openmpi"], SLEEPER))
    for name, job in (("mpidock-test-ended", "7"), ("mpidock-test-running", running)):
        docker_on(node, "run", "-d", "--name", name, "--label", f"org.mpidock.job={job}",
                  *AS_USER, "mpidock/openmpi", "sleep", "600")  # fmt: skip
    nearby = launch(["-N", "1", "-w", node.name], ["--image", "mpidock/openmpi"], "true")
    assert nearby.state == "COMPLETED", nearby.output
    assert "sim2: removed container mpidock-test-ended of job 7" in nearby.output
    assert sorted(containers_of(running, node)) == sorted(
        ["mpidock-test-running", f"mpidock-{running}.0-worker-sim2"]
    )
    docker_on(node, "run", "-d", "--name", "mpidock-test-ended", "--label",
              "org.mpidock.job=7", *AS_USER, "mpidock/openmpi", "sleep", "600")  # fmt: skip
    reaped = as_user(["srun", "-w", node.name, "mpidock", "reap"])
    assert reaped.returncode == 0, reaped.stderr
    assert "sim2: removed container mpidock-test-ended of job 7" in reaped.stdout
    assert "mpidock-test-running" not in reaped.stdout
    assert len(containers_of(running, node)) == 2
    run(["scancel", running])
    job = finish(running)
    # The planted container of the running job is that job's leftover: its Epilog takes it.
    assert_nothing_left(job, epilog_removed={"sim2"})


# 7. Signals straight to slurm-entry reach mpirun, with a grace period.


def test_sigint_to_the_leader_entry_reaches_the_ranks() -> None:
    job_id = start_running(["-N", "3"], entry_wrap(["--image", "mpidock/openmpi"], RANK_TRAPS))
    time.sleep(1)
    kill_entry(job_id, NODES[0], signal.SIGINT)
    assert until(ended(job_id), 20, "the job's end") < 20
    job = finish(job_id)
    assert job.state == "FAILED", job.output
    assert "sim1: SIGINT passed to mpirun; SIGKILL in 10 s" in job.output
    assert "rank got" in job.output
    assert_nothing_left(job)


# 8. Bad input: one line with a hint on each node, a non-zero exit, nothing left.


def one_line_errors(output: str) -> list[str]:
    errors = [line for line in output.splitlines() if line.startswith("mpidock: error:")]
    assert errors, output
    assert all("(hint: " in line for line in errors), errors
    assert not [line for line in output.splitlines() if line.startswith(("usage:", "Traceback"))]
    return errors


@pytest.mark.parametrize(
    ("option", "said"),
    [
        (["--port-range", "3000"], "argument --port-range: '3000': expected LOW-HIGH"),
        (["--port", "80"], "bad port 80"),
        (["--mount", "relative/dir"], "option --mount: bad mount 'relative/dir'"),
        (["--mpi", "lam"], "argument --mpi: invalid choice: 'lam'"),
    ],
)
def test_malformed_options_are_one_line_each(option: list[str], said: str) -> None:
    job = launch(["-N", "3"], ["--image", "mpidock/openmpi", *option], "true")
    assert job.state == "FAILED"
    errors = one_line_errors(job.output)
    assert len(errors) == 3
    assert all(said in line for line in errors), errors
    assert_nothing_left(job)


def test_a_job_root_no_one_can_write_fails_every_node_at_once(locked: Path) -> None:
    started = time.monotonic()
    job = launch(["-N", "3"], ["--image", "mpidock/openmpi", "--job-root", str(locked)], "true")
    assert job.state == "FAILED"
    assert time.monotonic() - started < 30
    errors = one_line_errors(job.output)
    assert sorted(e.split(":")[2].strip() for e in errors) == ["sim1", "sim2", "sim3"]
    assert all(f"{locked} is not a directory mpiuser can write" in e for e in errors)
    assert_nothing_left(job)


def test_a_leader_failing_before_its_setup_stops_the_workers_at_once() -> None:
    # The leader's network choice fails (no such interface); the workers, waiting for the
    # job directory, must hear of it at once, not at their 120 s deadline.
    started = time.monotonic()
    job = launch(["-N", "3"], ["--image", "mpidock/openmpi", "--iface", "nosuch0"], "true")
    assert job.state == "FAILED"
    assert time.monotonic() - started < 60
    (error,) = one_line_errors(job.output)
    assert error.startswith("mpidock: error: sim1: no interface named nosuch0"), error
    assert_nothing_left(job)


@pytest.mark.parametrize("where", ["sim1 only", "every node"])
def test_an_image_with_an_unknown_mpi_is_named(faulty: str, where: str) -> None:
    # On sim1 only, with no archive in the store, the workers wait on the leader's save
    # when the leader stops the job: they must add no failure of their own.
    image = f"{faulty}:nompi"
    hexid = docker_on(NODES[0], "image", "inspect", "-f", "{{.Id}}", image).split(":")[1]
    store = HOME / ".mpidock" / "images"
    for path in store.glob(f"{hexid}.*"):
        path.unlink()
    if where == "every node":
        for node in NODES[1:]:
            place(image, NODES[0], node)
    job = launch(["-N", "3"], ["--image", image], "true")
    assert job.state == "FAILED"
    (error,) = one_line_errors(job.output)
    assert "sim1: cannot tell which MPI the image has from `mpirun --version`: FooMPI" in error
    assert "could not save" not in job.output
    assert_nothing_left(job)
    for path in store.glob(f"*{hexid}*"):
        path.unlink()


def test_a_user_outside_the_docker_group_is_told_so() -> None:
    # mpinodocker: the testbed's user in no docker group, who reaches no Docker socket.
    # With `--engine docker`: under `auto` this user gets rootless Podman (test_podman.py).
    entry = ["--engine", "docker", "--image", "mpidock/openmpi"]
    job = launch(["-N", "3"], entry, "true", user="mpinodocker")
    assert job.state == "FAILED"
    # The leader fails and ends the job; a worker arriving later sees it is over, one
    # arriving sooner fails the same way.
    errors = one_line_errors(job.output)
    assert any(e.startswith("mpidock: error: sim1: permission denied") for e in errors)
    assert all("permission denied on the Docker socket" in e for e in errors), errors
    assert all("add you to the docker group" in e for e in errors), errors
    assert_nothing_left(job)
