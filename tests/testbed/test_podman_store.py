"""Rootless Podman's shared read-only image store, end to end as mpinodocker.

The store lives under a fresh shared directory (root's, 1777, as a site makes one); the
image comes from the testbed's site registry. mpiother plays the user who plants
directories where mpinodocker's store will be.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from launcher.slurm import job_over
from launcher.store import ImageStore
from launcher.testbed.engines import HOST_SOCK
from launcher.testbed.jobs import Job, as_user, entry_wrap, sbatch, submit, user_argv, wait
from launcher.testbed.layout import REGISTRY, SHARED
from tests.testbed.conftest import NODES, sticky_shared
from tests.testbed.engines import assert_nothing_left_podman, user_processes
from tests.testbed.inject import state
from tests.testbed.test_jobs import HELLO

USER, OTHER = "mpinodocker", "mpiother"
UID = pwd.getpwnam(USER).pw_uid
PODMAN_ROOT = Path("/var/tmp") / f"mpidock-podman-{UID}"
IMAGE = "mpidock/openmpi"
ARCHIVED = "mpidock/mpich5"  # in the host's Docker only, not in the site registry


@pytest.fixture
def shared() -> Iterator[Path]:
    """A fresh shared directory for the stores; the user's Podman root on this host (an
    import made here) removed afterwards when the test made it."""
    here = PODMAN_ROOT / socket.gethostname()
    made = not here.exists()
    yield from sticky_shared(SHARED / "podman-store-test")
    if made:
        shutil.rmtree(here, ignore_errors=True)


def settings(shared: Path) -> list[str]:
    return [f"MPIDOCK_PODMAN_IMAGE_STORE={shared}/{{user}}", f"MPIDOCK_REGISTRY={REGISTRY}"]


def import_argv(shared: Path) -> list[str]:
    return ["env", *settings(shared), "mpidock", "images", "import", IMAGE]


def entries(store: Path) -> list[str]:
    return sorted(p.name for p in store.iterdir() if not p.name.endswith(".lock"))


def local_bytes(node: str) -> int:
    """The disk the node's own overlay storage of the user takes, in bytes (du: blocks
    allocated, since Podman's database file is sparse and its apparent size grows)."""
    path = PODMAN_ROOT / node / "storage-overlay"
    done = subprocess.run(["du", "-sB1", str(path)], capture_output=True, text=True, check=False)
    return int(done.stdout.split()[0]) if done.returncode == 0 else 0


def sampled(options: list[str], wrap: str, before: dict[str, int]) -> tuple[Job, dict[str, int]]:
    """The user's job, ended, and the most node-local storage each node held meanwhile:
    sampled while the containers exist, since a per-container copy goes with its container."""
    job_id = submit(options, wrap, user=USER)
    most = dict(before)
    while not job_over(state(job_id)):
        most = {n: max(most[n], local_bytes(n)) for n in most}
        time.sleep(0.5)
    return wait(job_id, user=USER), most


def test_a_cold_three_node_job_fills_the_store_once_and_no_node_holds_a_copy(
    shared: Path,
) -> None:
    store = shared / USER
    before = {n.name: local_bytes(n.name) for n in NODES}
    wrap = (
        " ".join(settings(shared))
        + " "
        + entry_wrap(
            ["--engine", "podman", "--image", IMAGE], "sh -c 'mpi-hello --ring && sleep 4'"
        )
    )
    job, most = sampled(["-N", "3"], wrap, before)
    assert job.state == "COMPLETED", job.output
    assert len(HELLO.findall(job.output)) == 3
    after = {n.name: local_bytes(n.name) for n in NODES}
    print(f"node-local overlay storage, bytes: before {before}, most {most}, after {after}")
    # The ranks' own writes land in their containers' layers (Open MPI's session segments
    # in /tmp: 8.4 MB); a copy of the image (440 MB, 389 MB chowned for keep-id) would not
    # fit. Growth only: the same storage holds what jobs without the store pulled.
    assert all(most[n] - before[n] < 32 << 20 for n in most), (before, most)
    record = job.record()
    leader = record["leader"]["image"]
    assert (leader["path"], leader["bytes"] > 100 << 20) == ("shared store", True), leader
    assert {n: w["image"]["bytes"] for n, w in record["workers"].items()} == {
        n: 0 for n in record["workers"]
    }
    assert record["engine"]["image_store"] == str(store)
    (entry,) = entries(store)
    meta = json.loads((store / entry / "mpidock-entry.json").read_text())
    assert (meta["image"], meta["id"], meta["source"]) == (IMAGE, f"sha256:{entry}", "registry")
    assert_nothing_left_podman(job)


def test_two_imports_of_one_image_at_once_both_succeed_and_leave_one_entry(
    shared: Path,
) -> None:
    argv = user_argv(import_argv(shared), user=USER)
    runs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd="/") for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outs
    said = sorted(out.split(": ", 1)[1].split(" (")[0] for out, _ in outs)
    assert said[0] == "already in the store"
    assert said[1].startswith("imported")
    assert len(entries(shared / USER)) == 1
    assert not [p for p in (shared / USER).iterdir() if p.name.startswith(".staging")]


def plant_dir(path: Path) -> None:
    done = as_user(["mkdir", "-m", "700", str(path)], user=OTHER)
    assert done.returncode == 0, done.stderr


def plant_open_dir(path: Path) -> None:
    done = as_user(["mkdir", "-m", "777", str(path)], user=OTHER)
    assert done.returncode == 0, done.stderr


def plant_symlink(path: Path) -> None:
    target = path.parent / "theirs"
    done = as_user(["sh", "-c", f"mkdir -m 755 {target} && ln -s {target} {path}"], user=OTHER)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("plant", "why"),
    [(plant_dir, "it belongs to mpiother (uid 1504), not to"),
     (plant_open_dir, "it belongs to mpiother (uid 1504), not to"),
     (plant_symlink, "it is a symbolic link")],
)  # fmt: skip
def test_a_store_planted_by_another_user_is_refused_in_one_line(
    shared: Path, plant: object, why: str
) -> None:
    store = shared / USER
    assert callable(plant)
    plant(store)
    done = as_user(import_argv(shared), user=USER)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"refusing {store}: {why}" in lines[0]
    assert not os.path.exists(store / "mpidock-entry.json")


def test_a_group_writable_store_of_the_user_is_refused_by_a_job(shared: Path) -> None:
    store = shared / USER
    assert as_user(["mkdir", "-m", "770", str(store)], user=USER).returncode == 0
    wrap = (
        " ".join(settings(shared))
        + " "
        + entry_wrap(["--engine", "podman", "--image", IMAGE], "mpi-hello")
    )
    job = sbatch(["-N", "1"], wrap, user=USER)
    assert job.state != "COMPLETED"
    refusals = [line for line in job.output.splitlines() if f"refusing {store}" in line]
    assert refusals, job.output
    assert "it is writable by others (mode 0770)" in refusals[0]
    assert entries(store) == []


def test_images_prune_and_check_run_under_podman_and_leave_the_store_alone(
    shared: Path,
) -> None:
    assert as_user(import_argv(shared), user=USER, timeout=600).returncode == 0
    store = shared / USER
    (entry,) = entries(store)
    env = ["env", *settings(shared), "mpidock"]
    listed = as_user([*env, "images", "--engine", "podman", "--json"], user=USER)
    assert listed.returncode == 0, listed.stderr
    personal = json.loads((store / entry / "mpidock-entry.json").read_text())["personal"]
    node_rows = json.loads(listed.stdout)["rows"]
    assert [r for r in node_rows if entry in r["image"] or r["name"] == personal] == []
    prune = [*env, "images", "--engine", "podman", "prune", "--older-than", "1s"]
    pruned = as_user(prune, user=USER)
    assert pruned.returncode == 0, pruned.stderr
    assert entries(store) == [entry]
    checked = as_user([*env, "check", "--engine", "podman", IMAGE], user=USER, timeout=600)
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in checked.stdout.splitlines()[1:-1])
    # A "-" row is a note, not a check (direct launch: its proof needs an allocation).
    failed = [n for n, said in rows.items() if not said.startswith(("pass", "-"))]
    assert failed in (
        [],
        # Rootless Podman makes the check's private network with slirp4netns, which needs
        # /dev/net/tun open to users: this VM keeps it root's (0600).
        ["2 ranks, 2 containers"],
    ), checked.stdout
    if "FAIL" in rows["2 ranks, 2 containers"]:
        assert "/dev/net/tun" in rows["2 ranks, 2 containers"]
    assert user_processes(UID) == []


@pytest.fixture
def archives() -> Iterator[Path]:
    """A shared Docker archive store published by root, its owner (as a site publishes
    images), holding ARCHIVED saved from the host's Docker; removed afterwards."""
    path = SHARED / "archive-store-test"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o755)
    with contextlib.closing(docker.DockerClient(base_url=HOST_SOCK, timeout=600)) as client:
        image = client.images.get(ARCHIVED)
        ImageStore(path).write(ARCHIVED, str(image.id), image.save(chunk_size=1 << 20))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_an_import_from_the_docker_archive_store_needs_no_registry(
    shared: Path, archives: Path
) -> None:
    env = [f"MPIDOCK_PODMAN_IMAGE_STORE={shared}/{{user}}", f"MPIDOCK_IMAGE_STORE={archives}"]
    done = as_user(["env", *env, "mpidock", "images", "import", ARCHIVED], user=USER, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"{ARCHIVED}: imported" in done.stdout
    (entry,) = entries(shared / USER)
    meta = json.loads((shared / USER / entry / "mpidock-entry.json").read_text())
    assert (meta["image"], meta["source"]) == (ARCHIVED, "archive")
    (archive,) = archives.glob("*.tar")
    assert meta["id"] == f"sha256:{archive.stem}"


def test_a_cold_direct_step_fills_the_store_once_for_every_node(shared: Path) -> None:
    # --launch pmix: each node's first task fills the store or waits for the fill of
    # another node's; no node copies the image into its own storage.
    store = shared / USER
    before = {n.name: local_bytes(n.name) for n in NODES}
    wrap = " ".join([
        *settings(shared), "srun --mpi=pmix mpidock slurm-entry --launch pmix --engine podman",
        f"--image {IMAGE} -- sh -c 'mpi-hello --ring && sleep 4'",
    ])  # fmt: skip
    job, most = sampled(["-N", "3", "--ntasks-per-node=2"], wrap, before)
    assert job.state == "COMPLETED", job.output
    assert "ring passed 6 ranks" in job.output
    assert all(most[n] - before[n] < 32 << 20 for n in most), (before, most)
    (entry,) = entries(store)
    meta = json.loads((store / entry / "mpidock-entry.json").read_text())
    assert (meta["image"], meta["id"]) == (IMAGE, f"sha256:{entry}")
    assert job.record()["engine"]["image_store"] == str(store)
    assert_nothing_left_podman(job)
