"""The worker's wait for the end of a job: how often it looks at the shared job directory
and the engine, and what wakes it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from launcher import worker
from launcher.errors import NodeFailed
from launcher.jobdir import JobDir
from launcher.signals import Inbox


class Sshd:
    """A container as docker-py shows it, counting each time the worker asks about it."""

    def __init__(self, status: str = "running") -> None:
        self.asked = self.events_asked = 0
        self.attrs: dict[str, Any] = {"State": {"Status": status, "ExitCode": 0}}
        self.id = "c0ffee"
        self.client = SimpleNamespace(api=SimpleNamespace(events=self._events))

    def _events(self, **_: Any) -> Any:
        self.events_asked += 1
        return iter(())

    def reload(self) -> None:
        self.asked += 1

    def logs(self, tail: int) -> bytes:
        return b"sshd: exited"


def _plan(tmp_path: Path) -> Any:
    job = JobDir(tmp_path / "job")
    job.path.mkdir()
    job.heartbeat.write_text("")
    leader = SimpleNamespace(node="sim1")
    return SimpleNamespace(job=job, grace=1.0, node="sim2", nodes=(leader,))


def _waiting(plan: Any, sshd: Sshd, inbox: Inbox) -> threading.Thread:
    args = (plan, cast(Any, sshd), inbox)
    waiter = threading.Thread(target=worker._wait_end, args=args, daemon=True)
    waiter.start()
    return waiter


def test_a_long_job_s_directory_is_looked_at_rarely_and_a_signal_wakes_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "FAST_FOR", 0.0)
    monkeypatch.setattr(worker, "IDLE_POLL", 60.0)
    plan, sshd, inbox = _plan(tmp_path), Sshd(), Inbox()
    waiter = _waiting(plan, sshd, inbox)
    time.sleep(1.0)
    plan.job.stop_file.write_text("")  # the leader ends the job; nobody looks for a minute
    assert waiter.is_alive()
    assert sshd.asked >= 3  # the node's own engine is still asked every CHECK_EVERY (0.2 s)
    assert 1 <= sshd.events_asked <= 2  # for a rank killed for memory: once a second
    inbox.stop.set()  # a signal: the worker looks at once, sees the end and returns
    waiter.join(10)
    assert not waiter.is_alive()


def test_a_starting_job_is_looked_at_often(tmp_path: Path) -> None:
    plan, sshd, inbox = _plan(tmp_path), Sshd(), Inbox()
    waiter = _waiting(plan, sshd, inbox)
    time.sleep(1.0)
    plan.job.stop_file.write_text("")
    waiter.join(10)
    assert not waiter.is_alive()
    assert sshd.asked >= 2  # every CHECK_EVERY (0.2 s) while it starts


def test_a_dead_sshd_fails_the_node(tmp_path: Path) -> None:
    with pytest.raises(NodeFailed, match=r"sshd container exited \(exit 0\): sshd: exited"):
        worker._wait_end(_plan(tmp_path), cast(Any, Sshd("exited")), Inbox())


def test_a_container_dying_in_a_long_job_is_found_within_a_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "FAST_FOR", 0.0)
    monkeypatch.setattr(worker, "IDLE_POLL", 60.0)
    plan, sshd, failures = _plan(tmp_path), Sshd(), list[NodeFailed]()

    def wait() -> None:
        try:
            worker._wait_end(plan, cast(Any, sshd), Inbox())
        except NodeFailed as e:
            failures.append(e)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    time.sleep(0.5)
    sshd.attrs["State"] = {"Status": "exited", "ExitCode": 137}
    killed = time.monotonic()
    waiter.join(10)
    assert time.monotonic() - killed < 2.0  # CHECK_EVERY, not the directory's IDLE_POLL
    assert [e.message for e in failures] == ["sshd container exited (exit 137): sshd: exited"]


def test_a_leader_slow_to_start_is_looked_for_rarely_and_a_signal_wakes_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "FAST_FOR", 0.0)
    monkeypatch.setattr(worker, "IDLE_POLL", 60.0)
    jobs = tmp_path / "jobs"
    plan = SimpleNamespace(job=JobDir(jobs / "job"), ready_timeout=120.0, node="sim2", port=0)
    inbox, outcome = Inbox(), []

    def wait() -> None:
        try:
            worker._wait_job_dir(cast(Any, plan), inbox)
            outcome.append("found")
        except NodeFailed as e:
            outcome.append(str(e))

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    time.sleep(0.5)
    plan.job.path.mkdir(mode=0o700)
    plan.job.authorized_keys.write_text("")  # the leader's keys; nobody looks for a minute
    time.sleep(0.5)
    assert waiter.is_alive()
    inbox.stop.set()  # a signal: the worker looks at once and finds the keys
    waiter.join(10)
    assert outcome == ["found"]
