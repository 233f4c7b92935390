"""A worker node: its sshd container, ready report, and teardown when the leader says so."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import logging
import socket
import sys
import time
from pathlib import Path
from typing import Any

import docker
from docker.models.containers import Container

from launcher import containers, distribution, images, jobdir, reap
from launcher.beats import Watch
from launcher.errors import JobEnded, LauncherError, NodeFailed, NodeTimeout
from launcher.plan import LaunchPlan
from launcher.record import Timings, own_cost, write_json
from launcher.signals import Inbox

log = logging.getLogger(__name__)
POLL = 0.05  # the job directory: a stat per look
CHECK_EVERY = 4  # looks between asking Docker whether sshd still runs
SSHD_LISTEN = 30.0  # seconds a started sshd has to listen on the job's port
LEADER_SILENCE = 6.0  # the leader beats every second; NFS attribute caches lag ~3 s
STOP_SLACK = 5.0  # after a stop signal, wait grace + this for the leader's end


def run_worker(plan: LaunchPlan, inbox: Inbox) -> int:
    """Start sshd, report, wait for the end, remove everything of the job on this node.

    From the moment the job directory exists every failure is reported to the leader
    (failed.<node>), so it stops at once instead of at its deadline.
    """
    timings = Timings(plan.node)
    _wait_job_dir(plan, inbox)
    _tell(plan, plan.job.arrived_file(plan.node), {})
    if plan.job.stop_file.exists():
        _report_done(plan, timings)
        return 0  # the leader ended the job before this node joined it
    client, container, tag = None, None, ""
    try:
        client = containers.client_for_node(plan.node)
        reap.at_start(client, plan)
        _check_port(plan.port, plan.node)
        with timings.phase("image"):
            tag, image = distribution.worker_image(plan, client, inbox)
        container = _start(plan, client, tag, timings)
        _wait_listening(plan, container)
        _tell(plan, plan.job.ready_file(plan.node), {"image": image, "timings": timings.phases})
        _wait_end(plan, container, inbox)
    except JobEnded:
        return 0  # the leader stopped the job and says why; nothing to add here
    except LauncherError as e:
        e.node = e.node or plan.node
        _report_failure(plan, e)
        raise
    finally:
        with timings.phase("teardown"):
            if container is not None:
                containers.remove(container)
            if client is not None and tag and not plan.keep_image:
                images.remove_personal(client, tag)
        _report_done(plan, timings)
    return 0


def _start(plan: LaunchPlan, client: docker.DockerClient, tag: str, timings: Timings) -> Container:
    assert plan.container is not None
    with timings.phase("container"):
        spec = dataclasses.replace(plan.container, image=tag)
        return containers.start(client, spec, plan.node)


def _check_port(port: int, node: str) -> None:
    """Fail early and by name when another program holds the job's port on this node."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            raise NodeFailed(
                f"port {port} is already in use",
                node=node,
                hint="choose another with --port or --port-range",
            ) from e


def _wait_listening(plan: LaunchPlan, container: Container) -> None:
    """Ready means sshd accepts connections; a container that exits instead is named."""
    deadline = time.monotonic() + SSHD_LISTEN
    while not _accepts(plan.port):
        status, code = containers.exit_info(container)
        if status != "running":
            raise NodeFailed(
                f"sshd container {status} (exit {code}): {containers.tail(container)}",
                node=plan.node,
                hint="the image needs OpenSSH's server at /usr/sbin/sshd",
            )
        if time.monotonic() > deadline:
            raise NodeTimeout(plan.node, plan.port, SSHD_LISTEN, "sshd does not listen")
        time.sleep(0.05)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _wait_job_dir(plan: LaunchPlan, inbox: Inbox) -> None:
    deadline = time.monotonic() + plan.ready_timeout
    while not plan.job.sshd_config.exists():
        if inbox.stop.is_set():
            raise NodeFailed("stopped by a signal before the job started", node=plan.node)
        if time.monotonic() > deadline:
            raise NodeTimeout(
                plan.node,
                plan.port,
                plan.ready_timeout,
                f"the leader never created {plan.job.path}",
                hint="is the job's home directory shared by every node?",
            )
        time.sleep(POLL)


def _wait_end(plan: LaunchPlan, container: Container, inbox: Inbox) -> None:
    """Block until the leader ends the job.

    A stop signal leaves the container up for the leader's grace period, so ranks on
    this node see mpirun's SIGTERM rather than a vanished sshd.

    Raises:
        NodeFailed: the container died, or the leader is gone (its keys are removed too).
    """
    leader = Watch(plan.job.heartbeat, LEADER_SILENCE)
    stop_by: float | None = None
    for look in itertools.count():
        if plan.job.stop_file.exists() or not plan.job.path.exists():
            return
        if inbox.stop.is_set():
            stop_by = stop_by or time.monotonic() + plan.grace + STOP_SLACK
            if time.monotonic() > stop_by:
                return
        if look % CHECK_EVERY:
            time.sleep(POLL)
            continue
        status, code = containers.exit_info(container)
        if status != "running":
            reason = f"sshd container {status} (exit {code}): {containers.tail(container)}"
            raise NodeFailed(reason, node=plan.node)
        if leader.silent():
            _remove_keys(plan)
            raise NodeFailed(
                f"the leader on {plan.nodes[0].node} is gone: no heartbeat for "
                f"{LEADER_SILENCE:.0f} s; this node's container and the job's keys are removed",
                node=plan.node,
            )
        time.sleep(POLL)


def _remove_keys(plan: LaunchPlan) -> None:
    """The leader died and cannot remove the job directory; a worker does (any may)."""
    try:
        jobdir.remove_job_dir(plan.job.path)
    except LauncherError as e:
        print(f"mpidock: {plan.node}: {e}", file=sys.stderr)


def _report_failure(plan: LaunchPlan, error: LauncherError) -> None:
    report = {"error": error.message, "hint": error.hint, "at": time.time()}
    _tell(plan, plan.job.failed_file(plan.node), report)


def _report_done(plan: LaunchPlan, timings: Timings) -> None:
    _tell(plan, plan.job.done_file(plan.node), {"timings": timings.phases, "self": own_cost()})


def _tell(plan: LaunchPlan, path: Path, report: dict[str, Any]) -> None:
    """A report to the leader; dropped when the job directory is already gone."""
    with contextlib.suppress(FileNotFoundError):
        write_json(path, {"node": plan.node, **report}, make_parents=False)
