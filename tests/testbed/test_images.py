"""Images reach each node at most once, by the cheapest path, and warm jobs move nothing.

Each test makes its own image on sim1 (a new layer, so no node has it by accident),
places it where the case needs it, runs real jobs and reads the run records.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
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
