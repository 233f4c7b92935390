"""Liveness through the shared job directory: one side touches a file, the other watches it.

Only changes of the file's mtime are compared, never its value against this node's clock,
so clock skew between nodes and the file server does not matter.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Self

log = logging.getLogger(__name__)
SILENCE = 10.0  # seconds without a change after which the writer is taken to be gone


class Background:
    """A daemon thread running `loop` for the length of a with-block; `done` asks it to end."""

    join_timeout = 5.0

    def __init__(self) -> None:
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join(timeout=self.join_timeout)

    def loop(self) -> None:
        raise NotImplementedError


class Beat(Background):
    """Touches `path` every `every` seconds until the with-block ends."""

    def __init__(self, path: Path, every: float) -> None:
        super().__init__()
        self.path, self.every = path, every

    def loop(self) -> None:
        # A failed write (a full quota, a stale NFS handle, a directory briefly away) is
        # retried at the next beat: only a writer that stops beating is silent.
        failing: str | None = None
        while not self.done.is_set():
            try:
                self.path.write_text(f"{time.time()}\n")
            except OSError as e:
                if failing is None:
                    log.warning(
                        "cannot write %s (retrying every %g s): %s", self.path, self.every, e
                    )
                failing = str(e)
            else:
                if failing is not None:
                    log.warning("writing %s again after: %s", self.path, failing)
                failing = None
            self.done.wait(self.every)


class Watch:
    """Notices when `path` has not changed for `silence` seconds (a missing file counts
    as a state too, so a writer that never started is noticed as well)."""

    def __init__(self, path: Path, silence: float = SILENCE) -> None:
        self.path, self.silence = path, silence
        self.seen = mtime(path)
        self.changed = self.looked = time.monotonic()

    def silent(self) -> bool:
        now, seen = time.monotonic(), mtime(self.path)
        if seen != self.seen:
            self.seen, self.changed = seen, now
        elif now - self.looked > self.silence / 2:
            # The watcher itself stood still (the job was suspended, SIGSTOP froze this
            # process while the monotonic clock ran on): the writer was suspended too and
            # gets a whole silence period from now to be heard again.
            self.changed = now
        self.looked = now
        return now - self.changed > self.silence

    def beating(self) -> bool:
        """The file exists and changed within the silence period."""
        return not self.silent() and self.seen != 0.0


def mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
