"""Signals as data: handlers only record what arrived; the main loops act on it."""

from __future__ import annotations

import signal
import threading
from types import FrameType

STOP = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
FORWARD = (signal.SIGUSR1, signal.SIGUSR2)


class Inbox:
    """Signals received since install(): `stop` is set by a stop signal, `pending` to forward."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.stop_signal: int | None = None
        self.pending: list[int] = []

    def install(self) -> Inbox:
        for sig in (*STOP, *FORWARD):
            signal.signal(sig, self._on_signal)
        return self

    def take_pending(self) -> list[int]:
        taken, self.pending = self.pending, []
        return taken

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum in FORWARD:
            self.pending.append(signum)
            return
        self.stop_signal = signum
        self.stop.set()
