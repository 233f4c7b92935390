"""Signals as data: handlers only record what arrived; the main loops act on it.

No Python code runs in a signal handler here. A handler may interrupt any bytecode of
the main thread, even another handler halfway through taking a lock (Slurm sends SIGCONT
and SIGTERM back to back at a time limit): a handler that sets a threading.Event there
waits forever for the lock its own thread holds. So the interpreter writes each signal's
number to a pipe (signal.set_wakeup_fd) and a thread of the Inbox turns the numbers into
events and queues; the Python-level handler does nothing.
"""

from __future__ import annotations

import os
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
HANDLED = (*STOP, *FORWARD, SUSPEND, RESUME)


class Inbox:
    """Signals received since install(): `stop` is set by a stop signal, `pending` to
    forward, `suspended` between SIGTSTP and SIGCONT; `changed` wakes whoever acts on a
    suspension, `since` is when (time.monotonic()) the last SIGTSTP or SIGCONT came."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.stop_signal: int | None = None
        self.pending: list[int] = []
        self._pending_lock = threading.Lock()
        self.suspended = threading.Event()
        self.changed = threading.Event()
        self.since = 0.0

    def install(self) -> Inbox:
        """Catch the signals from now on (from the main thread: Python's rule)."""
        read, write = os.pipe()
        os.set_blocking(write, False)  # the interpreter's write must never block
        threading.Thread(target=self._read, args=(read,), name="signals", daemon=True).start()
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        for sig in HANDLED:
            signal.signal(sig, caught)
        return self

    def take_pending(self) -> list[int]:
        with self._pending_lock:
            taken, self.pending = self.pending, []
        return taken

    def _read(self, fd: int) -> None:
        handled = {int(s) for s in HANDLED}
        while data := os.read(fd, 64):  # the write end stays open: read blocks, never ends
            for signum in data:
                if signum in handled:
                    self.receive(signum)

    def receive(self, signum: int) -> None:
        """Record one signal (on the Inbox's thread, or a test's)."""
        if signum in FORWARD:
            with self._pending_lock:
                self.pending.append(signum)
            return
        if signum in (SUSPEND, RESUME):
            self._suspend(signum == SUSPEND)
            return
        self.stop_signal = signum
        self.stop.set()
        self.changed.set()  # a stop while suspended thaws the containers for the teardown

    def _suspend(self, suspended: bool) -> None:
        # Only events are set here: pausing the containers takes an engine call, made on
        # the Freezer's thread (launcher/suspend.py), which wakes on `changed`.
        self.since = time.monotonic()
        if suspended:
            self.suspended.set()
        else:
            self.suspended.clear()
        self.changed.set()


def caught(_signum: int, _frame: FrameType | None) -> None:
    """The Python-level handler: nothing, the wakeup pipe carries the signal (see above)."""
