"""The archive handoff between leader and workers through a job directory on disk, with
a stand-in Docker client: every failure of the save reaches the workers with its reason,
a save the job no longer needs reports nothing, and a worker of a stopped job only ends."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from docker.errors import APIError

from launcher import distribution
from launcher.distribution import ArchiveServer
from launcher.errors import ImageError, JobEnded
from launcher.movement import Wanted
from launcher.plan import LaunchPlan, Options, build_plan
from launcher.record import read_json, write_json
from launcher.signals import Inbox
from launcher.slurm import SlurmEnv
from tests.unit.samples import ALICE, STEP

A = "sha256:" + "a" * 64
Saver = Callable[[], Iterator[bytes]]


class Image:
    def __init__(self, saver: Saver) -> None:
        self.saver = saver

    def save(self, chunk_size: int) -> Iterator[bytes]:
        return self.saver()


class Images:
    def __init__(self, saver: Saver) -> None:
        self.saver = saver

    def get(self, ref: str) -> Image:
        assert ref == A
        return Image(self.saver)


class Api:
    timeout = 60


class Client:
    """Stands in for a docker client whose `docker save` stream is `saver`."""

    def __init__(self, saver: Saver) -> None:
        self.images, self.api = Images(saver), Api()


@pytest.fixture
def plan(tmp_path: Path) -> LaunchPlan:
    opts = Options(image="solver:1", command=("./solver",), job_root=str(tmp_path / "jobs"))
    env = SlurmEnv.from_environ(STEP)
    plan = build_plan(env, opts, ALICE, cwd="/tmp", image="solver:1", flavor=None, network=None)
    plan.job.path.mkdir(parents=True)
    return replace(plan, image_store=str(tmp_path / "store"))


def wanted(plan: LaunchPlan) -> Wanted:
    return Wanted("solver:1", A, plan.image_store)


def serve(plan: LaunchPlan, saver: Saver) -> dict[str, Any]:
    """Runs the leader's server against one worker's request until it answers."""
    saved: dict[str, Any] = {}
    with ArchiveServer(plan, Client(saver), saved) as server:  # type: ignore[arg-type]
        server.offer(wanted(plan))
        write_json(plan.job.need_file("sim2"), {"node": "sim2", "image_id": A})
        deadline = time.monotonic() + 5
        while not saved and not plan.job.archive_failed.exists():
            assert time.monotonic() < deadline, "the server never answered"
            time.sleep(0.02)
    return saved


def failing(error: Exception) -> Saver:
    def saver() -> Iterator[bytes]:
        yield b"first"
        raise error

    return saver


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (APIError("500 Server Error: layer gone"), "cannot save solver:1 into"),
        (OSError(errno.EIO, "Input/output error"), "Input/output error"),
        (RuntimeError("something unforeseen"), "RuntimeError: something unforeseen"),
        (KeyError("Id"), "KeyError: 'Id'"),
    ],
)
def test_any_failure_of_the_save_reaches_the_workers_with_its_reason(
    plan: LaunchPlan, error: Exception, said: str
) -> None:
    assert serve(plan, failing(error)) == {}
    report = read_json(plan.job.archive_failed)
    assert said in report["error"]
    assert report["hint"]
    assert report["node"] == "sim1"
    with pytest.raises(ImageError) as info:
        distribution._request_archive(replace(plan, node="sim2"), wanted(plan), Inbox())
    assert info.value.message.startswith("the leader could not save the image: ")
    assert said in info.value.message
    assert info.value.hint == report["hint"]


def test_a_save_that_works_is_found_by_the_worker(plan: LaunchPlan) -> None:
    saved = serve(plan, lambda: iter([b"an ", b"archive"]))
    assert saved["path"] == "saved"
    found = distribution._request_archive(replace(plan, node="sim2"), wanted(plan), Inbox())
    assert found.path.read_bytes() == b"an archive"


def endless() -> Iterator[bytes]:
    while True:
        time.sleep(0.02)
        yield b"x" * 1024


def test_a_save_abandoned_at_the_jobs_end_reports_nothing(plan: LaunchPlan) -> None:
    saved: dict[str, Any] = {}
    with ArchiveServer(plan, Client(endless), saved) as server:  # type: ignore[arg-type]
        server.offer(wanted(plan))
        write_json(plan.job.need_file("sim2"), {"node": "sim2", "image_id": A})
        time.sleep(0.5)  # the save is under way
    assert not server.thread.is_alive()
    assert not plan.job.archive_failed.exists()
    assert list(Path(plan.image_store).glob("*.partial")) == []


def test_a_save_waiting_on_a_lock_at_the_jobs_end_reports_nothing(plan: LaunchPlan) -> None:
    store = Path(plan.image_store)
    store.mkdir()
    lock = os.open(store / f".{'a' * 64}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another writer of the same image
        with ArchiveServer(plan, Client(endless), {}) as server:  # type: ignore[arg-type]
            server.offer(wanted(plan))
            write_json(plan.job.need_file("sim2"), {"node": "sim2", "image_id": A})
            time.sleep(0.3)
        assert not server.thread.is_alive()
    finally:
        os.close(lock)
    assert not plan.job.archive_failed.exists()


def test_a_worker_of_a_job_the_leader_stopped_only_ends(plan: LaunchPlan) -> None:
    # Whatever the save left behind, a stop means the leader is reporting its own reason.
    write_json(plan.job.archive_failed, {"error": "the save was abandoned", "hint": "x"})
    plan.job.stop_file.write_text("stop\n")
    with pytest.raises(JobEnded):
        distribution._request_archive(replace(plan, node="sim2"), wanted(plan), Inbox())
