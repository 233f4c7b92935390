"""The leader's wait for its workers: reports on the shared job directory (each with the
port its worker chose on its node), the client files for those ports, then a real SSH
handshake that verifies the job's host key. Every wait has a deadline."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from launcher.beats import Watch
from launcher.errors import LauncherError, NodeFailed, NodeTimeout, WorkerFailed
from launcher.jobdir import JobDir
from launcher.jobfiles import read_report
from launcher.signals import Inbox

POLL = 0.05
HANDSHAKE_MIN = 10.0


def wait_ready(
    job: JobDir,
    nodes: tuple[str, ...],
    port: int,
    user: str,
    timeout: float,
    inbox: Inbox,
    publish: Callable[[dict[str, int]], None] = lambda ports: None,
) -> dict[str, dict[str, Any]]:
    """Every worker's ready report, each confirmed by an SSH handshake on its port.

    A worker still moving its image (its moving.<node> file beats) is waited for past the
    deadline; one that has gone quiet is not. publish gets each node's port once all
    have reported, before the handshakes (it writes the client files they use).

    Args:
        port: the step's preferred port, named when a worker never reports.

    Raises:
        NodeFailed: a worker reported a failure (at once, not at the deadline).
        NodeTimeout: some workers were not ready in time (all of them are named).
    """
    deadline = time.monotonic() + timeout
    moving = {node: Watch(job.moving_file(node)) for node in nodes}
    reports: dict[str, dict[str, Any]] = {}
    while len(reports) < len(nodes):
        present = listing(job)
        raise_failures(job, nodes, present)
        for node in nodes:
            path = job.ready_file(node)
            if node not in reports and path.name in present and (ready := read_report(path)):
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
    ports = {node: port_of(node, reports[node]) for node in nodes}
    publish(ports)
    # A worker waited for past the deadline still gets a fair chance to answer.
    _handshakes(job, ports, user, max(deadline, time.monotonic() + HANDSHAKE_MIN))
    return reports


def port_of(node: str, report: Mapping[str, Any]) -> int:
    """The port a worker's sshd listens on, from its ready report.

    Raises:
        NodeFailed: the report names no valid port.
    """
    port = report.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
        raise NodeFailed(
            f"the worker's ready report names no valid port: {port!r}",
            node=node,
            hint="every node must run the same mpidock version",
        )
    return port


def listing(job: JobDir) -> frozenset[str]:
    """The job directory's names now (none once it is gone).

    One listing a look, however many nodes: looking for each worker's files by name cost
    an open per worker and file, tens of thousands of metadata operations a second on the
    shared filesystem at 1,024 nodes.
    """
    try:
        return frozenset(os.listdir(job.path))
    except FileNotFoundError:
        return frozenset()


def raise_failures(
    job: JobDir, nodes: tuple[str, ...], present: frozenset[str] | None = None
) -> None:
    """Raises WorkerFailed for the first worker that reported a failure.

    Args:
        present: the job directory's listing, when the caller has one; else it is read
            for many nodes, while one node's report is simply opened (one call either way).
    """
    if present is None and len(nodes) > 1:
        present = listing(job)
    for node in nodes:
        path = job.failed_file(node)
        report = read_report(path) if present is None or path.name in present else None
        if report:
            reason = report.get("error", "no reason given")
            hint, at = report.get("hint", ""), report.get("at")
            raise WorkerFailed(f"worker failed: {reason}", node=node, hint=hint, at=at)


def _handshakes(job: JobDir, ports: Mapping[str, int], user: str, deadline: float) -> None:
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(ports)))) as pool:
        list(pool.map(lambda n: handshake(job, n, ports[n], user, deadline), ports))


def handshake(job: JobDir, node: str, port: int, user: str, deadline: float) -> None:
    """Authenticate to the node's sshd with the job's keys, refusing any other host key."""
    import paramiko  # the leader's alone: a worker's start need not pay for it

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
