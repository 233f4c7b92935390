"""One rank: the task's program run in the node's container through the engine's exec,
with the task's PMIx environment. Its exit status is the task's; the signals Slurm sends
the task reach the rank, whose process the engine started outside the step.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import docker
from docker.errors import DockerException

from launcher import containers, proc
from launcher.direct.plan import DirectPlan
from launcher.errors import NodeFailed
from launcher.signals import Inbox

log = logging.getLogger(__name__)
POLL = 0.1
EXIT_WAIT = 5.0  # seconds for the engine to record an exit after the output ended
Output = Iterator[tuple[bytes | None, bytes | None]]


def run(
    client: docker.DockerClient,
    plan: DirectPlan,
    inbox: Inbox,
    extra_env: tuple[tuple[str, str], ...] = (),
) -> int:
    """The rank to its end; its exit status.

    Raises:
        NodeFailed: the engine would not start it (the container is gone, or no such
            program is found).
    """
    api = client.api
    try:
        exec_id = api.exec_create(
            plan.name, list(plan.command), environment=dict((*plan.rank_env, *extra_env)),
            stdout=True, stderr=True,
        )["Id"]  # fmt: skip
        output: Output = api.exec_start(exec_id, stream=True, demux=True)
    except DockerException as e:
        raise NodeFailed(
            f"cannot start rank {plan.procid} in {plan.name}: {e}", node=plan.node
        ) from e
    copier = threading.Thread(target=containers.copy_output, args=(output,), daemon=True)
    copier.start()
    _supervise(api, exec_id, plan, inbox, copier)
    code = _exit_code(api, exec_id)
    if code is None and inbox.stop.is_set():
        # Rootless Podman's API service is a process of the step: Slurm's SIGTERM ends it
        # with the rest, and the service revived in its place never learns how an exec
        # it did not start ended. The rank is gone (supervised to its end).
        sig = passed_on(inbox.stop_signal)
        _say(plan, f"ended after {sig.name} (its status lost with the engine's service)")
        return 128 + sig
    if code is None:
        raise NodeFailed(f"rank {plan.procid} ended without an exit status", node=plan.node)
    if code != 0:
        _say(plan, f"exited {code}")
    return code


def _say(plan: DirectPlan, what: str) -> None:
    print(f"mpidock: {plan.node}: rank {plan.procid} {what}", file=sys.stderr)


def _supervise(
    api: Any, exec_id: str, plan: DirectPlan, inbox: Inbox, copier: threading.Thread
) -> None:
    """Until the rank has ended: forward USR1/USR2, and a stop signal as SIGTERM (SIGINT
    as itself), then SIGKILL once the grace period is over. Its output ends with it, or
    earlier when the engine's service is lost: then its process is watched to its end."""
    kill_at: float | None = None
    pid = 0
    while True:
        if not copier.is_alive():
            pid = pid or _pid(api, exec_id)
            if pid <= 0 or not proc.alive(pid):
                return
        for sig in inbox.take_pending():
            _signal(api, exec_id, sig, plan)
        if kill_at is None and inbox.stop.is_set():
            _signal(api, exec_id, passed_on(inbox.stop_signal), plan)
            kill_at = time.monotonic() + plan.grace
        if kill_at is not None and time.monotonic() > kill_at:
            _signal(api, exec_id, signal.SIGKILL, plan)
            kill_at = float("inf")
        if copier.is_alive():
            copier.join(POLL)
        else:
            time.sleep(POLL)  # watching the process: a join of an ended thread returns at once


def passed_on(received: int | None) -> signal.Signals:
    """SIGINT stays SIGINT; any other stop signal (SIGTERM, SIGHUP) is SIGTERM."""
    return signal.SIGINT if received == signal.SIGINT else signal.SIGTERM


def _signal(api: Any, exec_id: str, sig: int, plan: DirectPlan) -> None:
    """The signal to the rank's process, by the PID the engine reports for the exec: the
    engine started it outside the step, so Slurm's signals never reach it by themselves."""
    try:
        info = api.exec_inspect(exec_id)
    except DockerException as e:
        log.warning("%s: cannot find rank %d to signal: %s", plan.node, plan.procid, e)
        return
    pid = int(info.get("Pid") or 0)
    if not info.get("Running") or pid <= 0:
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # it has just ended
    except PermissionError as e:
        log.warning("%s: cannot signal rank %d (pid %d): %s", plan.node, plan.procid, pid, e)


def _pid(api: Any, exec_id: str) -> int:
    """The rank's host PID while the engine says it runs; 0 when it has ended."""
    try:
        info = api.exec_inspect(exec_id)
    except DockerException:
        return 0
    return int(info.get("Pid") or 0) if info.get("Running") else 0


def _exit_code(api: Any, exec_id: str) -> int | None:
    deadline = time.monotonic() + EXIT_WAIT
    while True:
        info = api.exec_inspect(exec_id)
        if not info.get("Running") and info.get("ExitCode") is not None:
            return int(info["ExitCode"])
        if time.monotonic() > deadline:
            return None
        time.sleep(POLL)
