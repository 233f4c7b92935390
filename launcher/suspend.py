"""Slurm's suspend and resume reach the containers: this node's are paused on SIGTSTP
and thawed on SIGCONT.

`scontrol suspend` stops the step's processes (SIGTSTP, then SIGSTOP a moment later), but
the ranks run in containers the engine started outside the step. A Freezer thread pauses
them (the engine's cgroup freezer, or SIGSTOP to their processes where the engine has
none: rootless Podman on cgroup v1) in the moment between the two signals, and thaws them
when SIGCONT continues this process, or when a stop signal needs them running again for
the teardown. The signal handler only sets events (launcher/signals.py); every engine call
is made here, on this thread, so the main loop never waits on one.

What a pause takes is looked up ahead (Engine.pauser), once a second while the job runs:
in the moment itself an engine whose API service is a process of the step (rootless
Podman's) may be stopped by Slurm halfway through a call. A container started less than
a second before the suspension is found then, if none was known yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from docker.errors import DockerException
from requests import RequestException

from launcher import containers, engines, progress
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
        self._pausers: list[Callable[[bool], bool]] = []

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
            elif not self.paused:
                self._look()
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
        except (DockerException, LauncherError) as e:  # the main thread reports it too
            log.warning("%s: no engine to pause containers on: %s", self.node, e)

    def _look(self) -> None:
        """The step's containers on this node now, and what pauses each."""
        try:
            self._pausers = self._find()
        except (DockerException, LauncherError, RequestException, OSError) as e:
            # An engine restarting (Podman's service after Slurm's SIGTERM) or going away
            # at the end: the next look, or the main thread, meets it.
            log.debug("%s: cannot look at the job's containers: %s", self.node, e)

    def _find(self) -> list[Callable[[bool], bool]]:
        if self._client is None:
            self._client = containers.client_for_node(self.node, timeout=ENGINE_TIMEOUT)
        found = containers.of_step(self._client, self.job_id, self.node, self.step)
        engine = engines.of(self._client)
        return [engine.pauser(c) for c in found]

    def _set(self, paused: bool) -> int:
        if paused and not self._pausers:
            self._pausers = self._find()
        return sum(pause(paused) for pause in self._pausers)


def _verb(paused: bool) -> str:
    return "pause" if paused else "unpause"
