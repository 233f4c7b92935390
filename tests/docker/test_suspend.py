"""The Freezer against the host engine: a step's containers follow the inbox's suspension."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import docker
import pytest
from docker.models.containers import Container

from launcher import containers
from launcher.plan import LABEL_PREFIX
from launcher.signals import Inbox
from launcher.suspend import Freezer
from tests.docker.conftest import DEBIAN

pytestmark = pytest.mark.docker
NODE = "suspend-node"


@pytest.fixture
def step(engine: docker.DockerClient) -> Iterator[tuple[str, list[Container]]]:
    """Two containers of one job's step on NODE and one of another step; removed after."""
    job = f"suspend-{uuid.uuid4().hex[:8]}"
    started = [_busy(engine, job, step) for step in ("", "", "1")]
    try:
        yield job, started
    finally:
        for c in started:
            containers.remove(c)


def _busy(engine: docker.DockerClient, job: str, step: str) -> Container:
    labels = {f"{LABEL_PREFIX}.job": job, f"{LABEL_PREFIX}.node": NODE}
    if step:
        labels[f"{LABEL_PREFIX}.step"] = step
    return engine.containers.run(
        DEBIAN, ["sh", "-c", "while :; do :; done"], detach=True, labels=labels, init=True
    )


def _status(c: Container) -> str:
    return containers.exit_info(c)[0]


def _until(status: str, c: Container, seconds: float = 5.0) -> float:
    start = time.monotonic()
    while _status(c) != status:
        assert time.monotonic() - start < seconds, f"still {_status(c)}"
        time.sleep(0.02)
    return time.monotonic() - start


def _signal(inbox: Inbox, *, suspended: bool) -> None:
    """What Inbox's handler does for SIGTSTP / SIGCONT (sending them would stop pytest)."""
    inbox._suspend(suspended)


def test_the_steps_containers_pause_and_resume_with_the_job(
    step: tuple[str, list[Container]],
) -> None:
    job, (first, second, other) = step
    inbox = Inbox()
    with Freezer(inbox, job, NODE) as freezer:
        _signal(inbox, suspended=True)
        assert _until("paused", first) < 1.0  # Slurm's SIGSTOP comes about a second later
        assert _until("paused", second) < 1.0
        assert _status(other) == "running"  # another step of the job is not this one's
        _signal(inbox, suspended=False)
        _until("running", first)
        _until("running", second)
    assert [what for what, _, count in freezer.latencies] == ["pause", "unpause"]
    assert [count for _, _, count in freezer.latencies] == [2, 2]


@pytest.mark.parametrize("how", ["stop signal", "end of block"])
def test_a_suspended_step_is_thawed_for_its_teardown(
    step: tuple[str, list[Container]], how: str
) -> None:
    job, (first, _, _) = step
    inbox = Inbox()
    with Freezer(inbox, job, NODE):
        _signal(inbox, suspended=True)
        _until("paused", first)
        if how == "stop signal":
            inbox.stop.set()
            inbox.changed.set()
            _until("running", first)
    _until("running", first)
