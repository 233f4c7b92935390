"""Signals as data: handlers only record what arrived; the main loops act on it."""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

STOP = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
FORWARD = (signal.SIGUSR1, signal.SIGUSR2)
# `scontrol suspend`: slurmstepd sends SIGTSTP, then SIGSTOP a moment later; `scontrol
# resume` sends SIGCONT. The ranks live in containers outside the step, so the node's
# containers are paused between the two (launcher/suspend.py).
SUSPEND = signal.SIGTSTP
RESUME = signal.SIGCONT


class Inbox:
    """Signals received since install(): `stop` is set by a stop signal, `pending` to
    forward, `suspended` between SIGTSTP and SIGCONT; `changed` wakes whoever acts on a
    suspension, `since` is when (time.monotonic()) the last SIGTSTP or SIGCONT came."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.stop_signal: int | None = None
        self.pending: list[int] = []
        self.suspended = threading.Event()
        self.changed = threading.Event()
        self.since = 0.0

    def install(self) -> Inbox:
        for sig in (*STOP, *FORWARD, SUSPEND, RESUME):
            signal.signal(sig, self._on_signal)
        return self

    def take_pending(self) -> list[int]:
        taken, self.pending = self.pending, []
        return taken

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum in FORWARD:
            self.pending.append(signum)
            return
        if signum in (SUSPEND, RESUME):
            self._suspend(signum == SUSPEND)
            return
        self.stop_signal = signum
        self.stop.set()
        self.changed.set()  # a stop while suspended thaws the containers for the teardown

    def _suspend(self, suspended: bool) -> None:
        # Only events are set here: pausing the containers takes an engine call, which a
        # handler must not make (it would delay the main loop and race Slurm's SIGSTOP).
        self.since = time.monotonic()
        if suspended:
            self.suspended.set()
        else:
            self.suspended.clear()
        self.changed.set()
