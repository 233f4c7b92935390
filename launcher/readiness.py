"""The leader's wait for its workers: reports on the shared job directory, then a real
SSH handshake that verifies the job's host key. Every wait has a deadline."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import paramiko

from launcher.beats import Watch
from launcher.errors import LauncherError, NodeFailed, NodeTimeout, WorkerFailed
from launcher.jobdir import JobDir
from launcher.record import read_json
from launcher.signals import Inbox

POLL = 0.05
HANDSHAKE_MIN = 10.0


def wait_ready(
    job: JobDir, nodes: tuple[str, ...], port: int, user: str, timeout: float, inbox: Inbox
) -> dict[str, dict[str, Any]]:
    """Every worker's ready report, each confirmed by an SSH handshake.

    A worker still moving its image (its moving.<node> file beats) is waited for past the
    deadline; one that has gone quiet is not.

    Raises:
        NodeFailed: a worker reported a failure (at once, not at the deadline).
        NodeTimeout: some workers were not ready in time (all of them are named).
    """
    deadline = time.monotonic() + timeout
    moving = {node: Watch(job.moving_file(node)) for node in nodes}
    reports: dict[str, dict[str, Any]] = {}
    while len(reports) < len(nodes):
        raise_failures(job, nodes)
        for node in nodes:
            if node not in reports and (ready := read_json(job.ready_file(node))):
                reports[node] = ready
        if inbox.stop.is_set():
            raise LauncherError("stopped by a signal while waiting for the workers")
        late = [n for n in nodes if n not in reports]
        if time.monotonic() > deadline and late and not any(moving[n].beating() for n in late):
            raise NodeTimeout(
                ", ".join(late),
                port,
                timeout,
                "no ready report from the worker",
                hint="see the job's output of those nodes; raise --ready-timeout",
            )
        time.sleep(POLL)
    # A worker waited for past the deadline still gets a fair chance to answer.
    _handshakes(job, nodes, port, user, max(deadline, time.monotonic() + HANDSHAKE_MIN))
    return reports


def raise_failures(job: JobDir, nodes: tuple[str, ...]) -> None:
    """Raises WorkerFailed for the first worker that reported a failure."""
    for node in nodes:
        report = read_json(job.failed_file(node))
        if report:
            reason = report.get("error", "no reason given")
            hint, at = report.get("hint", ""), report.get("at")
            raise WorkerFailed(f"worker failed: {reason}", node=node, hint=hint, at=at)


def _handshakes(job: JobDir, nodes: tuple[str, ...], port: int, user: str, deadline: float) -> None:
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(nodes)))) as pool:
        list(pool.map(lambda n: handshake(job, n, port, user, deadline), nodes))


def handshake(job: JobDir, node: str, port: int, user: str, deadline: float) -> None:
    """Authenticate to the node's sshd with the job's keys, refusing any other host key."""
    key = paramiko.Ed25519Key.from_private_key_file(str(job.user_key))
    started = time.monotonic()
    while True:
        client = paramiko.SSHClient()
        client.load_host_keys(str(job.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                node,
                port=port,
                username=user,
                pkey=key,
                timeout=5,
                banner_timeout=5,
                auth_timeout=5,
                allow_agent=False,
                look_for_keys=False,
            )
            return
        except (paramiko.BadHostKeyException, paramiko.AuthenticationException) as e:
            raise NodeFailed(
                f"ssh handshake on port {port} refused: {e}",
                node=node,
                hint="another sshd holds the port, or the job keys differ",
            ) from e
        except (OSError, paramiko.SSHException) as e:
            raise_failures(job, (node,))
            if time.monotonic() > deadline:
                waited = time.monotonic() - started
                raise NodeTimeout(node, port, waited, f"sshd does not answer: {e}") from e
            time.sleep(0.2)
        finally:
            client.close()
