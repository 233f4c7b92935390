"""Rootless Podman end to end: a user outside group docker runs the whole ssh flow.

mpinodocker reaches no Docker socket; each node runs a per-job Podman API service as
that user, with node-local storage, pulling the image from the testbed's site registry.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.testbed.layout import REGISTRY
from tests.testbed.conftest import NODES, as_user, home_of, job_dirs_of, launch
from tests.testbed.test_jobs import HELLO

USER = "mpinodocker"
HOME = home_of(USER)
PODMAN_ROOT = Path("/var/tmp") / f"mpidock-podman-{pwd.getpwnam(USER).pw_uid}"


@pytest.fixture
def registry_config() -> Iterator[None]:
    """The user's configuration names the site registry (the podman user's image path);
    removed afterwards."""
    path = HOME / ".config" / "mpidock" / "config.toml"
    if path.exists():
        pytest.skip(f"{path} exists: not overwriting the user's own configuration")
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
    root = PODMAN_ROOT / node_name
    runtime = f"XDG_RUNTIME_DIR={root}/xdg-check"
    done = as_user(
        ["sh", "-c", f'mkdir -m 700 -p {root}/xdg-check && env {runtime} podman '
         f'--runtime /usr/sbin/runc --cgroup-manager cgroupfs --root {root}/storage '
         f'--runroot {root}/run ps -a --format "{{{{.Names}}}}"; '
         f'p=$(cat {root}/xdg-check/libpod/tmp/pause.pid 2>/dev/null) && kill -9 $p; '
         f'rm -rf {root}/xdg-check'],
        user=USER,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


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
    assert job_dirs_of(job) == []
    assert user_processes(uid) == []
    for node in NODES:
        assert not (PODMAN_ROOT / node.name / "xdg").exists(), node.name
        assert podman_ps(node.name) == "", node.name
    # The checks' own `podman ps` leaves a pause process each (the launcher's are gone,
    # asserted above): removed by their process IDs.
    for line in user_processes(uid):
        pid, name = line.split()
        if name == "catatonit":
            os.kill(int(pid), signal.SIGKILL)
