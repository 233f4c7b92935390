"""Rootless Podman end to end: a user outside group docker runs the whole ssh flow.

mpinodocker reaches no Docker socket; each node runs a per-job Podman API service as
that user, with node-local storage, pulling the image from the testbed's site registry.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from launcher.testbed.jobs import ACTIVE, Job, entry_wrap, submit, wait
from launcher.testbed.layout import REGISTRY, Node
from tests.conftest import run
from tests.testbed.conftest import NODES, as_user, home_of, job_dirs_of, launch
from tests.testbed.inject import SLEEPER, ended, state, until
from tests.testbed.test_faults import RANK_TRAPS
from tests.testbed.test_jobs import HELLO

USER = "mpinodocker"
HOME = home_of(USER)
PODMAN_ROOT = Path("/var/tmp") / f"mpidock-podman-{pwd.getpwnam(USER).pw_uid}"


@pytest.fixture
def registry_config() -> Iterator[None]:
    """The user's configuration names the site registry (the podman user's image path);
    removed afterwards. mpinodocker is the testbed's own user: a file a killed run left
    is overwritten."""
    path = HOME / ".config" / "mpidock" / "config.toml"
    as_user(["mkdir", "-p", str(path.parent)], user=USER)
    as_user(["sh", "-c", f"echo 'registry = \"{REGISTRY}\"' > {path}"], user=USER)
    yield
    path.unlink()


@pytest.fixture
def out_dir() -> Iterator[Path]:
    path = HOME / "podman-ring-files"
    shutil.rmtree(path, ignore_errors=True)
    as_user(["mkdir", "-p", str(path)], user=USER)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def user_processes(uid: int) -> list[str]:
    """podman, conmon and catatonit processes of the user still alive (zombies aside)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/status"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        name, state = fields.get("Name", "").strip(), fields.get("State", "").strip()
        mine = fields.get("Uid", "").split()[:1] == [str(uid)] and not state.startswith("Z")
        if mine and name in ("podman", "conmon", "catatonit"):
            found.append(f"{stat.parent.name} {name}")
    return found


def podman_ps(node_name: str) -> str:
    """The containers in the node's storage, asked when no job of the user runs there.

    Podman keeps the runtime directory it first ran with in its database (ROOT/xdg), so
    this check's pause process is recorded there: killed, and the directory removed.
    """
    root = PODMAN_ROOT / node_name
    runtime = f"XDG_RUNTIME_DIR={root}/xdg-check"
    done = as_user(
        ["sh", "-c", f'mkdir -m 700 -p {root}/xdg-check && env {runtime} podman '
         f'--runtime /usr/sbin/runc --cgroup-manager cgroupfs --root {root}/storage '
         f'--runroot {root}/run ps -a --format "{{{{.Names}}}}"; '
         f'for d in xdg-check xdg; do p=$(cat {root}/$d/libpod/tmp/pause.pid 2>/dev/null) '
         f'&& kill -9 $p; rm -rf {root}/$d; done'],
        user=USER,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def assert_nothing_left_podman(job: Job) -> None:
    """No job directory, no podman/conmon/catatonit process of the user, no runtime
    directory and no container in any node's storage."""
    uid = pwd.getpwnam(USER).pw_uid
    assert job_dirs_of(job) == []
    assert user_processes(uid) == []
    for node in NODES:
        assert not (PODMAN_ROOT / node.name / "xdg").exists(), node.name
        assert podman_ps(node.name) == "", node.name
    assert user_processes(uid) == []  # nor the checks' own


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
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == ppid:
                found.append(int(stat.parent.name))
    return found


def start_running_podman(wrap_command: str, timeout: float = 300) -> str:
    """Submits a 3-node Podman job as the user; returns once every node's container runs."""
    wrap = entry_wrap(["--engine", "podman", "--image", "mpidock/openmpi"], wrap_command)
    job_id = submit(["-N", "3"], wrap, timeout=timeout, user=USER)
    until(
        lambda: all(conmons(job_id, n) for n in NODES) or state(job_id) not in ACTIVE,
        180,
        f"job {job_id} running on every node",
    )
    assert state(job_id) == "RUNNING", f"job {job_id} ended early"
    return job_id


def nothing_runs(job_id: str) -> Callable[[], bool]:
    return lambda: not any(conmons(job_id, n) for n in NODES) and state(job_id) not in ACTIVE


@pytest.mark.usefixtures("registry_config")
def test_podman_ring_as_a_user_outside_group_docker(out_dir: Path) -> None:
    uid = pwd.getpwnam(USER).pw_uid
    gid = pwd.getpwnam(USER).pw_gid
    assert USER not in grp.getgrnam("docker").gr_mem  # no Docker socket for this user
    job = launch(
        ["-N", "3", "--ntasks-per-node=2"],
        ["--engine", "podman", "--image", "mpidock/openmpi"],
        f"mpi-hello --ring --write {out_dir}",
        timeout=600,
        user=USER,
    )
    assert job.state == "COMPLETED", job.output
    assert "ring passed 6 ranks" in job.output
    ids = {(int(m.group(4)), int(m.group(5))) for m in HELLO.finditer(job.output)}
    assert ids == {(uid, gid)}
    written = list(out_dir.iterdir())
    assert written
    assert {(p.stat().st_uid, p.stat().st_gid) for p in written} == {(uid, gid)}
    assert job.record()["engine"]["engine"] == "podman"
    assert_nothing_left_podman(job)


# Fault classes under Podman (the Docker versions: test_faults.py).


@pytest.mark.usefixtures("registry_config")
def test_a_failing_rank_fails_the_podman_job() -> None:
    job = launch(
        ["-N", "3"],
        ["--engine", "podman", "--image", "mpidock/openmpi"],
        "mpi-hello --fail-rank 2 --exit-code 7",
        user=USER,
    )
    assert job.state == "FAILED", job.output
    assert "rank 2 failing with exit code 7" in job.output
    assert job.record()["exit_code"] != 0
    assert_nothing_left_podman(job)


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
    ((name, conmon),) = conmons(job_id, NODES[1]).items()
    assert "-worker-sim2" in name
    for pid in children(conmon):  # the container's init, as `podman kill` would
        os.kill(pid, signal.SIGKILL)
    assert until(ended(job_id), 10, "the job's end") < 10
    job = wait(job_id, timeout=60, user=USER)
    assert job.state == "FAILED", job.output
    assert "sim2: worker failed: sshd container exited" in job.output
    assert job.record()["error"]["node"] == "sim2"
    assert_nothing_left_podman(job)
