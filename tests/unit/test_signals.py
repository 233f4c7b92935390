"""The signal inbox, fed by signals this test process sends to itself."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from launcher.signals import FORWARD, RESUME, STOP, SUSPEND, Inbox


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    """An installed Inbox; the previous handlers come back afterwards."""
    previous = {sig: signal.getsignal(sig) for sig in (*STOP, *FORWARD, SUSPEND, RESUME)}
    try:
        yield Inbox().install()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_install_handles_stop_and_forward_signals(inbox: Inbox) -> None:
    for sig in (*STOP, *FORWARD):
        assert signal.getsignal(sig) == inbox._on_signal


def test_forwarded_signals_queue_in_order(inbox: Inbox) -> None:
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR1):
        signal.raise_signal(sig)
    assert not inbox.stop.is_set()
    assert inbox.take_pending() == [signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR1]
    assert inbox.take_pending() == []


@pytest.mark.parametrize("sig", STOP)
def test_stop_signals_set_stop(inbox: Inbox, sig: signal.Signals) -> None:
    # SIGINT too: no KeyboardInterrupt, the main loop decides what to do.
    signal.raise_signal(sig)
    assert inbox.stop.is_set()
    assert inbox.stop_signal == sig
    assert inbox.take_pending() == []


def test_last_stop_signal_is_kept(inbox: Inbox) -> None:
    signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signal.SIGHUP)
    signal.raise_signal(signal.SIGUSR2)
    assert inbox.stop_signal == signal.SIGHUP
    assert inbox.take_pending() == [signal.SIGUSR2]


def test_a_fresh_inbox_is_empty() -> None:
    fresh = Inbox()
    assert (fresh.stop.is_set(), fresh.stop_signal, fresh.take_pending()) == (False, None, [])


def test_suspend_and_resume_are_recorded_with_their_time(inbox: Inbox) -> None:
    assert signal.getsignal(SUSPEND) == signal.getsignal(RESUME) == inbox._on_signal
    before = time.monotonic()
    signal.raise_signal(SUSPEND)  # handled: this process is not stopped
    assert inbox.suspended.is_set()
    assert inbox.changed.is_set()
    assert before <= inbox.since <= time.monotonic()
    inbox.changed.clear()
    signal.raise_signal(RESUME)
    assert not inbox.suspended.is_set()
    assert inbox.changed.is_set()
    assert not inbox.stop.is_set()
    assert inbox.take_pending() == []


def test_a_stop_wakes_whoever_follows_a_suspension(inbox: Inbox) -> None:
    signal.raise_signal(SUSPEND)
    inbox.changed.clear()
    signal.raise_signal(signal.SIGTERM)
    assert inbox.changed.is_set()
    assert inbox.stop.is_set()
    assert inbox.suspended.is_set()
