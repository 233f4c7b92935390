"""Stopping a container's process tree with signals (the rootless Podman freezer): real
processes, every descendant stopped and continued, a tree that forks while stopped
caught whole; what the Epilog reads of Podman's processes."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.engines import podman_reap, stopping


def _state(pid: int) -> str:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2]


def _until(check: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.02)


@pytest.fixture
def family() -> Iterator[subprocess.Popen[bytes]]:
    """A shell with two sleeping children and a grandchild that keeps forking."""
    script = "sleep 60 & sleep 60 & sh -c 'while :; do sleep 0.01; done' & wait"
    shell = subprocess.Popen(["sh", "-c", script])
    _until(lambda: len(stopping.tree(shell.pid)) >= 5)
    yield shell
    stopping.continue_tree(shell.pid)
    for pid in stopping.tree(shell.pid)[1:]:
        subprocess.run(["kill", str(pid)], check=False)
    shell.kill()
    shell.wait()


def test_every_process_of_the_tree_stops_and_continues(family: subprocess.Popen[bytes]) -> None:
    stopped = stopping.stop_tree(family.pid)
    members = stopping.tree(family.pid)
    assert stopped >= 5
    # A `sleep 0.01` that ended just before its stopped shell could reap it stays a zombie.
    _until(lambda: all(_state(p) in ("T", "Z") for p in members))
    time.sleep(0.2)  # a forking loop that escaped would show a new, running member now
    assert stopping.tree(family.pid) == members
    held = [p for p in members if _state(p) == "T"]
    # Parents are continued first: the loop's shell may reap its zombie before it is reached.
    assert len(held) <= stopping.continue_tree(family.pid) <= len(members)
    _until(lambda: all(_state(p) != "T" for p in stopping.tree(family.pid)))


def test_a_root_known_ahead_stops_and_continues_its_tree(
    family: subprocess.Popen[bytes],
) -> None:
    root = stopping.Root.of(family.pid)
    assert root.pid == family.pid
    assert root.started > 0
    assert root.pause(True)
    _until(lambda: _state(family.pid) == "T")
    assert root.pause(False)
    _until(lambda: _state(family.pid) != "T")


def test_a_root_whose_pid_was_reused_or_is_gone_pauses_nothing(
    family: subprocess.Popen[bytes],
) -> None:
    other = stopping.Root(family.pid, stopping.Root.of(family.pid).started + 1)
    assert not other.pause(True)
    assert _state(family.pid) != "T"
    gone = subprocess.Popen(["true"])
    root = stopping.Root.of(gone.pid)
    gone.wait()
    assert not root.pause(True)
    assert stopping.Root.of(gone.pid) == stopping.Root(0, 0)


def test_a_gone_process_has_no_tree() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert stopping.tree(gone.pid) == []
    assert stopping.stop_tree(gone.pid) == 0
    assert stopping.continue_tree(gone.pid) == 0


def test_the_epilog_reads_a_conmon_name_and_a_services_entry() -> None:
    conmon = ("/usr/bin/conmon", "--api-version", "1", "-c", "abc", "-n", "mpidock-42.0-worker-n2")
    assert podman_reap.container_name(conmon) == "mpidock-42.0-worker-n2"
    assert podman_reap.container_name(("/usr/bin/conmon", "-c", "abc")) == ""
    service = ("podman", "system", "service", "--time", "0", "unix:///var/tmp/r/api-31974.sock")
    assert podman_reap.entry_of(service) == 31974
    assert podman_reap.entry_of(("podman", "system", "service", "unix:///run/podman.sock")) is None


def test_the_epilog_ends_nothing_of_a_user_with_no_podman() -> None:
    nobody = 65534 if os.getuid() != 65534 else 65533
    assert podman_reap.reap_job("1", nobody) == []
