"""Rootless Podman end to end: a user outside group docker runs the whole ssh flow.

mpinodocker reaches no Docker socket; each node runs a per-job Podman API service as
that user, with node-local storage, pulling the image from the testbed's site registry.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from launcher.engines import stopping
from launcher.slurm import job_over
from launcher.testbed.jobs import entry_wrap, submit, wait
from launcher.testbed.layout import Node
from tests.conftest import run
from tests.testbed.conftest import NODES, as_user, epilog_lines, launch
from tests.testbed.engines import PODMAN_ROOT, podman_ps, podman_registry_config, user_processes
from tests.testbed.engines import PODMAN_USER as USER
from tests.testbed.engines import assert_nothing_left_podman as assert_nothing_left_podman
from tests.testbed.inject import SLEEPER, ended, kill_entry, state, until
from tests.testbed.test_faults import RANK_TRAPS

__all__ = ["PODMAN_ROOT", "USER", "podman_ps", "user_processes"]  # for other Podman tests


@pytest.fixture
def registry_config() -> Iterator[None]:
    with podman_registry_config():
        yield


def conmons(job_id: str, node: Node) -> dict[str, int]:
    """The job's containers running on the node: name -> the pid of their conmon, found
    in the node's network namespace (no podman call, which would start a user namespace)."""
    found = {}
    for pid in run(["ip", "netns", "pids", node.netns]).stdout.split():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if Path(argv[0]).name == "conmon" and "-n" in argv:
            name = argv[argv.index("-n") + 1]
            if name.startswith(f"mpidock-{job_id}."):
                found[name] = int(pid)
    return found


def children(ppid: int) -> list[int]:
    return [
        int(entry.name)
        for entry in Path("/proc").glob("[0-9]*")
        if stopping.stat_fields(entry.name)[1:2] == [str(ppid)]
    ]


def started(conmon: int) -> bool:
    """The container's init runs under its conmon: created and started, not in `runc init`
    still (a kill then would hit the runtime, not the container)."""
    for pid in children(conmon):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"/run/podman-init"):
                return True
    return False


def start_running_podman(wrap_command: str, timeout: float = 300) -> str:
    """Submits a 3-node Podman job as the user; returns once every node's container runs."""
    wrap = entry_wrap(["--engine", "podman", "--image", "mpidock/openmpi"], wrap_command)
    job_id = submit(["-N", "3"], wrap, timeout=timeout, user=USER)
    until(
        lambda: all(_all_started(job_id, n) for n in NODES) or job_over(state(job_id)),
        180,
        f"job {job_id} running on every node",
    )
    assert state(job_id) == "RUNNING", f"job {job_id} ended early"
    return job_id


def _all_started(job_id: str, node: Node) -> bool:
    found = conmons(job_id, node)
    return bool(found) and all(map(started, found.values()))


def nothing_runs(job_id: str) -> Callable[[], bool]:
    return lambda: not any(conmons(job_id, n) for n in NODES) and job_over(state(job_id))


def test_the_podman_user_reaches_no_docker_daemon() -> None:
    """The engine tests' Podman user (tests/testbed/engines.py: the ring, records,
    identity, a failing rank... under both engines) is outside group docker, and Docker's
    socket refuses it."""
    assert USER not in grp.getgrnam("docker").gr_mem
    done = as_user(["docker", "version", "--format", "{{.Server.Version}}"], user=USER)
    assert done.returncode != 0
    assert "permission denied" in done.stderr.lower(), done.stderr


# Fault classes under Podman (the Docker versions: test_faults.py).


@pytest.mark.usefixtures("registry_config")
def test_scancel_of_a_podman_job_leaves_nothing_within_the_kill_wait() -> None:
    job_id = start_running_podman(RANK_TRAPS)
    time.sleep(1)
    run(["scancel", job_id])
    assert until(nothing_runs(job_id), 30, "containers and job gone") < 30
    job = wait(job_id, timeout=60, user=USER)
    assert job.state == "CANCELLED", job.output
    assert "sim1: SIGTERM passed to mpirun" in job.output
    assert_nothing_left_podman(job)


@pytest.mark.usefixtures("registry_config")
def test_the_time_limit_of_a_podman_job_leaves_nothing() -> None:
    job_id = start_running_podman(SLEEPER, timeout=60)  # --time 1
    job = wait(job_id, timeout=150, user=USER)
    assert job.state == "TIMEOUT", job.output
    assert_nothing_left_podman(job)


@pytest.mark.usefixtures("registry_config")
def test_a_podman_worker_container_killed_mid_run_ends_the_job_naming_it() -> None:
    job_id = start_running_podman(SLEEPER)
    assert "-worker-sim2" in _kill_container(job_id, NODES[1])
    assert until(ended(job_id), 10, "the job's end") < 10
    job = wait(job_id, timeout=60, user=USER)
    assert job.state == "FAILED", job.output
    assert "sim2: worker failed: sshd container exited" in job.output
    assert job.record()["error"]["node"] == "sim2"
    assert_nothing_left_podman(job)


@pytest.mark.usefixtures("registry_config")
def test_a_killed_podman_worker_entry_leaves_nothing_running_after_the_epilog() -> None:
    """slurm-entry SIGKILLed on a node: its Podman service and container outlive it (outside
    the step's process tree); the Epilog ends them, and the user's next job on the node
    removes the stopped container's record."""
    uid = pwd.getpwnam(USER).pw_uid
    job_id = start_running_podman(SLEEPER)
    node = NODES[1]
    kill_entry(job_id, node)
    time.sleep(2)
    assert conmons(job_id, node), "the container went with its slurm-entry"
    run(["scancel", job_id])
    job = wait(job_id, timeout=120, user=USER)
    assert job.state == "CANCELLED", job.output
    until(lambda: user_processes(uid) == [], 30, "nothing of the user's Podman running")
    said = epilog_lines(job_id, node)
    assert any(f"ended container mpidock-{job_id}." in line for line in said), said
    assert any("ended podman service of ended slurm-entry" in line for line in said), said
    nearby = launch(
        ["-N", "1", "-w", node.name],
        ["--engine", "podman", "--image", "mpidock/openmpi"],
        "true",
        user=USER,
    )
    assert nearby.state == "COMPLETED", nearby.output
    assert f"{node.name}: removed container mpidock-{job_id}." in nearby.output
    assert_nothing_left_podman(job)


def _kill_container(job_id: str, node: Node) -> str:
    """SIGKILL to the job's container on the node (its init, as `podman kill` would); its name."""
    ((name, conmon),) = conmons(job_id, node).items()
    for pid in children(conmon):
        os.kill(pid, signal.SIGKILL)
    return name


@pytest.mark.usefixtures("registry_config")
def test_the_podman_leader_container_killed_mid_run_stops_every_worker_within_20_s() -> None:
    job_id = start_running_podman(SLEEPER)
    assert "-leader-sim1" in _kill_container(job_id, NODES[0])
    # Docker's bound is 10 s; a rootless container's removal alone takes seconds here.
    until(lambda: not any(conmons(job_id, n) for n in NODES[1:]), 20, "workers gone")
    job = wait(job_id, timeout=60, user=USER)
    assert job.state == "FAILED", job.output
    assert job.record()["exit_code"] != 0
    assert_nothing_left_podman(job)


@pytest.mark.usefixtures("registry_config")
def test_the_podman_leader_entry_killed_mid_run_stops_every_worker_within_10_s() -> None:
    uid = pwd.getpwnam(USER).pw_uid
    job_id = start_running_podman(SLEEPER)
    kill_entry(job_id, NODES[0])
    until(lambda: not any(conmons(job_id, n) for n in NODES[1:]), 10, "workers gone")
    job = wait(job_id, timeout=60, user=USER)
    assert job.state == "FAILED", job.output
    assert "the leader on sim1 is gone" in job.output
    until(lambda: user_processes(uid) == [], 30, "nothing of the user's Podman running")
    said = epilog_lines(job_id, NODES[0])
    # mpirun in the leader's container ends by itself once the workers' sshd containers
    # are gone, mostly before the Epilog runs; when it has not, the Epilog ends it.
    ended = (f"ended container mpidock-{job_id}.", f"job {job_id}: nothing to remove")
    assert any(mark in line for line in said for mark in ended), said
    assert as_user(["mpidock", "reap"], user=USER).returncode == 0  # the keys, if left
    nearby = launch(
        ["-N", "1", "-w", NODES[0].name],
        ["--engine", "podman", "--image", "mpidock/openmpi"],
        "true",
        user=USER,
    )
    assert nearby.state == "COMPLETED", nearby.output
    assert_nothing_left_podman(job)


@pytest.mark.usefixtures("registry_config")
def test_sigint_to_the_podman_leader_entry_reaches_the_ranks() -> None:
    job_id = start_running_podman(RANK_TRAPS)
    time.sleep(1)
    kill_entry(job_id, NODES[0], signal.SIGINT)
    assert until(ended(job_id), 20, "the job's end") < 20
    job = wait(job_id, timeout=60, user=USER)
    assert job.state == "FAILED", job.output
    assert "sim1: SIGINT passed to mpirun; SIGKILL in 10 s" in job.output
    assert "rank got" in job.output
    assert_nothing_left_podman(job)
