"""The signal inbox, fed by signals this test process sends to itself: the interpreter's
wakeup pipe carries them to the Inbox's thread, so each check waits briefly for it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from launcher.signals import FORWARD, HANDLED, RESUME, STOP, SUSPEND, Inbox, caught

ARRIVES = 2.0  # seconds a signal has to reach the Inbox's thread


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    """An installed Inbox; the previous handlers and wakeup pipe come back afterwards."""
    previous = {sig: signal.getsignal(sig) for sig in HANDLED}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    try:
        yield Inbox().install()
    finally:
        signal.set_wakeup_fd(wakeup)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _soon(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + ARRIVES
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_install_handles_every_signal_it_records(inbox: Inbox) -> None:
    assert all(signal.getsignal(sig) is caught for sig in HANDLED)
    assert {*STOP, *FORWARD, SUSPEND, RESUME} == set(HANDLED)


def test_forwarded_signals_queue_in_order(inbox: Inbox) -> None:
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR1):
        signal.raise_signal(sig)
    assert _soon(lambda: len(inbox.pending) == 3)
    assert not inbox.stop.is_set()
    assert inbox.take_pending() == [signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR1]
    assert inbox.take_pending() == []


@pytest.mark.parametrize("sig", STOP)
def test_stop_signals_set_stop(inbox: Inbox, sig: signal.Signals) -> None:
    # SIGINT too: no KeyboardInterrupt, the main loop decides what to do.
    signal.raise_signal(sig)
    assert inbox.stop.wait(ARRIVES)
    assert inbox.stop_signal == sig
    assert inbox.take_pending() == []


def test_last_stop_signal_is_kept(inbox: Inbox) -> None:
    signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signal.SIGHUP)
    signal.raise_signal(signal.SIGUSR2)
    assert _soon(lambda: inbox.pending == [signal.SIGUSR2])
    assert inbox.stop_signal == signal.SIGHUP
    assert inbox.take_pending() == [signal.SIGUSR2]


def test_a_fresh_inbox_is_empty() -> None:
    fresh = Inbox()
    assert (fresh.stop.is_set(), fresh.stop_signal, fresh.take_pending()) == (False, None, [])


def test_suspend_and_resume_are_recorded_with_their_time(inbox: Inbox) -> None:
    before = time.monotonic()
    signal.raise_signal(SUSPEND)  # handled: this process is not stopped
    assert inbox.changed.wait(ARRIVES)
    assert inbox.suspended.is_set()
    assert before <= inbox.since <= time.monotonic()
    inbox.changed.clear()
    signal.raise_signal(RESUME)
    assert inbox.changed.wait(ARRIVES)
    assert not inbox.suspended.is_set()
    assert not inbox.stop.is_set()
    assert inbox.take_pending() == []


def test_a_stop_wakes_whoever_follows_a_suspension(inbox: Inbox) -> None:
    signal.raise_signal(SUSPEND)
    assert inbox.changed.wait(ARRIVES)
    inbox.changed.clear()
    signal.raise_signal(signal.SIGTERM)
    assert inbox.changed.wait(ARRIVES)
    assert inbox.stop.is_set()
    assert inbox.suspended.is_set()


def test_a_burst_of_resume_and_stop_signals_never_blocks_the_main_thread() -> None:
    """Slurm's time limit sends SIGCONT and SIGTERM back to back. A handler that took a lock
    could interrupt another one holding it and wait for it forever. A child process
    installs an Inbox and keeps taking the same locks while its own child sends thousands
    of signals; a blocked main thread would never end it."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _RECEIVER], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the main thread blocked under a burst of signals")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["stopped", "resumed", "forwarded"], done.stdout


_SENDER = """
import os, signal
for _ in range(3000):
    os.kill(os.getppid(), signal.SIGCONT)
    os.kill(os.getppid(), signal.SIGTERM)
    os.kill(os.getppid(), signal.SIGUSR1)
"""

_RECEIVER = f"""
import subprocess, sys, time
from launcher.signals import Inbox
inbox = Inbox().install()
sender = subprocess.Popen([sys.executable, "-c", {_SENDER!r}])
forwarded = 0
while sender.poll() is None:
    inbox.changed.set()  # the lock a handler would have taken
    forwarded += len(inbox.take_pending())
time.sleep(0.5)
forwarded += len(inbox.take_pending())
print("stopped" if inbox.stop.is_set() else "running")
print("suspended" if inbox.suspended.is_set() else "resumed")
print("forwarded" if forwarded > 0 else "none")
sys.exit(sender.returncode)
"""
