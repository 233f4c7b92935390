"""Slurm's suspend and resume reach the containers: this node's are paused on SIGTSTP
and thawed on SIGCONT.

`scontrol suspend` stops the step's processes (SIGTSTP, then SIGSTOP a moment later), but
the ranks run in containers the engine started outside the step. A Freezer thread pauses
them (the engine's cgroup freezer) in the moment between the two signals, and thaws them
when SIGCONT continues this process, or when a stop signal needs them running again for
the teardown. The signal handler only sets events (launcher/signals.py); every engine call
is made here, on this thread, so the main loop never waits on one.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from docker.errors import DockerException

from launcher import containers, progress
from launcher.beats import Background
from launcher.errors import LauncherError
from launcher.signals import Inbox

log = logging.getLogger(__name__)
ENGINE_TIMEOUT = 5.0  # seconds for one engine call; Slurm's SIGSTOP comes ~1 s after SIGTSTP
IDLE = 1.0  # seconds between looks at the inbox when no signal wakes the thread


class Freezer(Background):
    """For the length of a with-block: this step's containers on `node` follow the inbox's
    suspended state. `latencies` holds (what, seconds from the signal to done, count)."""

    def __init__(self, inbox: Inbox, job_id: str, node: str, step: str = "") -> None:
        super().__init__()
        self.inbox, self.job_id, self.node, self.step = inbox, job_id, node, step
        self.paused = False
        self.latencies: list[tuple[str, float, int]] = []
        self._client: Any = None

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.inbox.changed.set()  # wake the thread so it ends now
        self.thread.join(timeout=self.join_timeout)

    def loop(self) -> None:
        self._connect()  # now, not in the second between SIGTSTP and SIGSTOP
        while not self.done.is_set():
            self.inbox.changed.wait(IDLE)
            self.inbox.changed.clear()
            want = self.inbox.suspended.is_set() and not self.inbox.stop.is_set()
            if want != self.paused:
                self._follow(want)
        if self.paused:  # the with-block ends while suspended: leave nothing frozen
            self._follow(False)

    def _follow(self, paused: bool) -> None:
        since = self.inbox.since
        try:
            done = self._set(paused)
        except (DockerException, LauncherError) as e:
            log.warning("%s: cannot %s the job's containers: %s", self.node, _verb(paused), e)
            return
        self.paused = paused
        took = time.monotonic() - since
        self.latencies.append((_verb(paused), took, done))
        what = "suspended" if paused else "resumed"
        progress.say(self.node, what, f"{done} container(s) {_verb(paused)}d in {took:.2f} s")

    def _connect(self) -> None:
        try:
            self._client = containers.client_for_node(self.node, timeout=ENGINE_TIMEOUT)
        except LauncherError as e:  # the main thread meets and reports the same engine
            log.warning("%s: no engine to pause containers on: %s", self.node, e)

    def _set(self, paused: bool) -> int:
        if self._client is None:
            self._client = containers.client_for_node(self.node, timeout=ENGINE_TIMEOUT)
        found = containers.of_step(self._client, self.job_id, self.node, self.step)
        return sum(containers.pause(c, paused=paused) for c in found)


def _verb(paused: bool) -> str:
    return "pause" if paused else "unpause"
