"""Images reach each node at most once, by the cheapest path, and warm jobs move nothing.

Each test makes its own image on sim1 (a new layer, so no node has it by accident),
places it where the case needs it, runs real jobs and reads the run records.
"""

from __future__ import annotations

import io
import json
import secrets
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.testbed.layout import REGISTRY, Node
from tests.testbed.conftest import (
    HOME,
    NODES,
    as_user,
    assert_nothing_left,
    docker_on,
    entry_wrap,
    home_of,
    launch,
    run,
    sticky_shared,
    submit,
    wait,
)

# A user whose UID the image gives to someone else, with an odd but valid name.
TESTER = "Mpi.Tester3"
TESTER_UID = 1502


def place(tag: str, src: Node, dst: Node) -> None:
    """docker save on src piped into docker load on dst: the same image ID on both."""
    save = subprocess.Popen(["docker", "-H", src.docker_url, "save", tag], stdout=subprocess.PIPE)
    done = subprocess.run(
        ["docker", "-H", dst.docker_url, "load", "-q"],
        stdin=save.stdout,
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert save.wait(timeout=600) == 0
    assert done.returncode == 0, done.stderr


class Fresh:
    """A new image built on sim1 for one test, removed from every node and store after."""

    def __init__(self, extra: str = "") -> None:
        self.tag = f"mpidock/fresh-{secrets.token_hex(4)}"
        self.stamp = secrets.token_hex(8)
        text = (
            "FROM mpidock/openmpi\nUSER 0\n"  # 2 MB that compress to 2 MB: a real layer
            f"RUN echo {self.stamp} > /stamp && head -c 2000000 /dev/urandom > /blob\n{extra}"
        )
        docker_on(NODES[0], "build", "-q", "-t", self.tag, "-", stdin=text)
        self.image_id = docker_on(NODES[0], "image", "inspect", "-f", "{{.Id}}", self.tag)
        self.hex = self.image_id.split(":")[-1]

    def archive(self, home: Path = HOME) -> Path:
        return home / ".mpidock" / "images" / f"{self.hex}.tar"

    def personal_on(self, node: Node) -> list[str]:
        label = f"label=org.mpidock.personal.base={self.image_id}"
        return docker_on(node, "images", "-q", "--filter", label).split()

    def remove(self) -> None:
        for node in NODES:
            for image in set(self.personal_on(node)):
                run(["docker", "-H", node.docker_url, "rmi", "-f", image])
            run(["docker", "-H", node.docker_url, "rmi", "-f", self.image_id])
        for home in (HOME, home_of(TESTER)):
            for path in (home / ".mpidock" / "images").glob(f"*{self.hex}*"):
                path.unlink()


@pytest.fixture
def fresh() -> Iterator[Fresh]:
    image = Fresh()
    yield image
    image.remove()


@pytest.fixture(scope="module")
def tester() -> Iterator[str]:
    """A second user, in the docker group and two project groups, created for this module."""
    home = home_of(TESTER)
    run(["userdel", "-r", TESTER])
    done = run(
        ["useradd", "--badname", "-m", "-d", str(home), "-u", str(TESTER_UID), "-U",
         "-G", "docker,mpiproj,mpidata", "-s", "/bin/bash", TESTER]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    yield TESTER
    run(["userdel", "-r", TESTER])
    shutil.rmtree(home, ignore_errors=True)


def stamps(output: str, stamp: str) -> int:
    return sum(line == stamp for line in output.splitlines())


def test_a_new_image_reaches_each_node_once_then_moves_nothing(fresh: Fresh) -> None:
    first = launch(["-N", "3"], ["--image", fresh.tag], "cat /stamp")
    assert first.state == "COMPLETED", first.output
    assert stamps(first.output, fresh.stamp) == 3
    size = fresh.archive().stat().st_size
    nodes = first.node_records()
    assert nodes["sim1"]["image"]["path"] == "built"
    assert nodes["sim1"]["archive"]["path"] == "saved"
    assert nodes["sim1"]["archive"]["bytes"] == size
    for name in ("sim2", "sim3"):
        assert nodes[name]["image"]["path"] == "archive"
        assert nodes[name]["image"]["bytes"] == size  # once: the archive, whole, no more
        assert nodes[name]["image"]["mb_per_s"] > 0
    assert len(first.lines("mpidock: sim2 image: archive")) == 1
    second = launch(["-N", "3"], ["--image", fresh.tag], "cat /stamp")
    assert second.state == "COMPLETED", second.output
    for name, node in second.node_records().items():
        assert node["image"]["path"] == "cached", name
        assert node["image"]["bytes"] == 0, name
    assert second.record()["leader"]["archive"] == {}
    assert_nothing_left(second)


def test_base_on_every_node_costs_a_new_user_a_local_build_only(tester: str) -> None:
    image = Fresh(extra=f"RUN useradd -u {TESTER_UID} -m ubuntu\n")
    try:
        for node in NODES[1:]:
            place(image.tag, NODES[0], node)
        job = launch(["-N", "3"], ["--image", image.tag], "id", user=tester)
        assert job.state == "COMPLETED", job.output
        for name, node in job.node_records().items():
            assert node["image"]["path"] == "built", name
            assert node["image"]["bytes"] == 0, name
        assert not image.archive(home_of(tester)).exists()
        host_id = run(["id", tester]).stdout.strip()
        assert "mpiproj" in host_id
        assert "(ubuntu)" not in host_id
        ids = [line for line in job.output.splitlines() if line.startswith("uid=")]
        assert ids == [host_id] * 3
    finally:
        image.remove()


def test_two_jobs_starting_at_once_share_one_archive(fresh: Fresh) -> None:
    wrap = entry_wrap(["--image", fresh.tag], "cat /stamp")
    ids = [submit(["-N", "3", "--ntasks-per-node=1"], wrap) for _ in range(2)]
    jobs = [wait(job_id) for job_id in ids]
    for job in jobs:
        assert job.state == "COMPLETED", job.output
        assert stamps(job.output, fresh.stamp) == 3
    saved = [job.record()["leader"]["archive"].get("path") for job in jobs]
    assert saved.count("saved") <= 1
    store = fresh.archive().parent
    assert [p.name for p in store.glob(f"*{fresh.hex}.tar*")] == [f"{fresh.hex}.tar"]
    assert not list(store.glob("*.partial"))


def test_an_image_only_in_the_registry_is_pulled_on_every_node(fresh: Fresh) -> None:
    remote = f"{REGISTRY}/{fresh.tag}"
    docker_on(NODES[0], "tag", fresh.tag, remote)
    docker_on(NODES[0], "push", "-q", remote)
    docker_on(NODES[0], "rmi", fresh.tag, remote)
    job = launch(["-N", "3"], ["--image", fresh.tag, "--registry", REGISTRY], "cat /stamp")
    assert job.state == "COMPLETED", job.output
    assert stamps(job.output, fresh.stamp) == 3
    for name, node in job.node_records().items():
        assert node["image"]["path"] == "registry", name
    for node in NODES[1:]:
        assert job.node_records()[node.name]["image"]["bytes"] > 0
    assert not fresh.archive().exists()


def test_remove_policy_leaves_no_personalized_image(fresh: Fresh) -> None:
    job = launch(["-N", "3"], ["--image", fresh.tag, "--image-cleanup", "remove"], "true")
    assert job.state == "COMPLETED", job.output
    for node in NODES:
        assert fresh.personal_on(node) == [], node.name


def test_an_image_nowhere_is_named_with_a_hint() -> None:
    job = launch(["-N", "2"], ["--image", "mpidock/no-such-image"], "true")
    assert job.state == "FAILED"
    assert "sim1: image mpidock/no-such-image is not on this node" in job.output
    assert "--registry" in job.output
    assert_nothing_left(job)


def test_images_lists_what_jobs_cached(fresh: Fresh) -> None:
    job = launch(["-N", "3"], ["--image", fresh.tag], "true")
    assert job.state == "COMPLETED", job.output
    listing = as_user(["env", f"DOCKER_HOST={NODES[0].docker_url}", "mpidock", "images"])
    assert listing.returncode == 0, listing.stderr
    assert fresh.hex[:12] in listing.stdout


def test_a_worker_still_moving_its_image_is_waited_for_past_the_deadline(fresh: Fresh) -> None:
    # The archive takes seconds to save and load; the workers beat while it moves.
    job = launch(["-N", "3"], ["--image", fresh.tag, "--ready-timeout", "1"], "cat /stamp")
    assert job.state == "COMPLETED", job.output
    assert stamps(job.output, fresh.stamp) == 3
    moved = [node["image"]["seconds"] for node in job.record()["workers"].values()]
    assert max(moved) > 1


# A store shared by every user of the cluster, and what another user plants in it.
SHARED_STORE = HOME.parent.parent / "shared-store"
ATTACKER = "mpiother"
POISON_TAG = "mpidock/openmpi:latest"  # the name a poisoned archive would take over


@pytest.fixture
def shared_store() -> Iterator[Path]:
    """A site-wide store: root's, sticky and writable by all (mode 1777)."""
    yield from sticky_shared(SHARED_STORE)


@pytest.fixture
def attacker_files() -> Iterator[Path]:
    """A directory of the attacker's own, to prepare what he plants."""
    path = home_of(ATTACKER) / "plant"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def poisoned_archive(path: Path) -> str:
    """A real `docker save` of a small image, its manifest rewritten to tag it as
    POISON_TAG: what an attacker leaves as someone else's archive. Its ID is returned."""
    tag = f"mpidock/poison-{secrets.token_hex(4)}"
    empty_tar = "\0" * 10240
    image_id = docker_on(NODES[0], "import", "-c", "LABEL x=1", "-", tag, stdin=empty_tar)
    try:
        saved = path.with_name("saved.tar")
        with open(saved, "wb") as out:
            done = subprocess.run(["docker", "-H", NODES[0].docker_url, "save", tag], stdout=out)
        assert done.returncode == 0
    finally:
        docker_on(NODES[0], "rmi", tag)
    with tarfile.open(saved) as src, tarfile.open(path, "w") as dst:
        for info in src:
            data = src.extractfile(info) if info.isreg() else None
            if info.name == "manifest.json" and data is not None:
                manifest = json.loads(data.read())
                manifest[0]["RepoTags"] = [POISON_TAG]
                text = json.dumps(manifest).encode()
                info.size, data = len(text), io.BytesIO(text)
            dst.addfile(info, data)
    saved.unlink()
    path.chmod(0o644)
    return image_id


def plant(store: Path, name: str, source: Path | None = None) -> None:
    """The attacker puts a file (a FIFO without a source) into the shared store."""
    argv = ["cp", str(source), str(store / name)] if source else ["mkfifo", str(store / name)]
    done = as_user(argv, user=ATTACKER)
    assert done.returncode == 0, done.stderr


def ids_of(tag: str) -> list[str]:
    return [docker_on(node, "image", "inspect", "-f", "{{.Id}}", tag) for node in NODES]


def test_a_poisoned_archive_in_a_shared_store_is_ignored_and_moves_no_name(
    fresh: Fresh, shared_store: Path, attacker_files: Path
) -> None:
    before = ids_of(POISON_TAG)
    poison = attacker_files / "poison.tar"
    poison_id = poisoned_archive(poison)
    note = attacker_files / "note.json"
    note.write_text(json.dumps({"image": fresh.tag, "id": fresh.image_id, "saved": 9e9}))
    note.chmod(0o644)
    plant(shared_store, f"{fresh.hex}.tar", poison)
    plant(shared_store, f"{fresh.hex}.json", note)
    plant(shared_store, f"{fresh.hex}.mpi")  # a FIFO: reading it would block forever
    job = launch(
        ["-N", "3"], ["--image", fresh.tag, "--image-store", str(shared_store)], "cat /stamp"
    )
    assert job.state == "COMPLETED", job.output
    assert stamps(job.output, fresh.stamp) == 3
    area = shared_store / "uid-1501"
    refused = f"ignoring {shared_store / fresh.hex}.tar: it belongs to mpiother (uid 1504)"
    assert any(refused in line for line in job.lines("mpidock: sim2 image:")), job.output
    for name in ("sim2", "sim3"):
        assert job.node_records()[name]["image"]["path"] == "archive", name
    assert (area / f"{fresh.hex}.tar").stat().st_uid == 1501
    assert stat.S_IMODE(area.stat().st_mode) == 0o700
    assert stat.S_IMODE((area / f"{fresh.hex}.tar").stat().st_mode) == 0o600
    assert ids_of(POISON_TAG) == before  # nothing re-tagged on any node
    for node in NODES:
        assert docker_on(node, "images", "-q", "--no-trunc").count(poison_id) == 0, node.name
    assert_nothing_left(job)


def test_a_squatted_area_in_a_shared_store_stops_the_job_naming_it(
    fresh: Fresh, shared_store: Path
) -> None:
    area = shared_store / "uid-1501"
    done = as_user(["mkdir", "-m", "777", str(area)], user=ATTACKER)
    assert done.returncode == 0, done.stderr
    job = launch(["-N", "3"], ["--image", fresh.tag, "--image-store", str(shared_store)], "true")
    assert job.state == "FAILED"
    errors = job.lines("mpidock: error:")
    assert errors, job.output
    for line in errors:
        assert f"refusing {area}: it belongs to mpiother (uid 1504)" in line, errors
        assert "(hint: remove " in line, errors
    assert list(area.iterdir()) == []
    assert_nothing_left(job)
