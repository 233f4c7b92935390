"""A worker node: its sshd container, ready report, and teardown when the leader says so."""

from __future__ import annotations

import dataclasses
import errno
import logging
import socket
import time

import docker
from docker.models.containers import Container

from launcher import containers, distribution, images
from launcher.beats import Watch
from launcher.errors import LauncherError, NodeFailed, NodeTimeout
from launcher.plan import LaunchPlan
from launcher.record import Timings, write_json
from launcher.signals import Inbox

log = logging.getLogger(__name__)
POLL = 0.2


def run_worker(plan: LaunchPlan, client: docker.DockerClient, inbox: Inbox) -> int:
    """Start sshd, report, wait for the end, remove everything of the job on this node."""
    timings = Timings()
    _wait_job_dir(plan, inbox)
    container, tag = None, ""
    try:
        _check_port(plan.port, plan.node)
        with timings.phase("image"):
            tag, image = distribution.worker_image(plan, client, inbox)
        container = _start(plan, client, tag, timings)
        write_json(
            plan.job.ready_file(plan.node),
            {"node": plan.node, "image": image, "timings": timings.phases},
        )
        reason = _wait_end(plan, container, inbox)
        if reason:
            raise NodeFailed(reason, node=plan.node)
    except LauncherError as e:
        _report_failure(plan, e)
        raise
    finally:
        with timings.phase("teardown"):
            if container is not None:
                containers.remove(container)
            if tag and not plan.keep_image:
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


def _wait_end(plan: LaunchPlan, container: Container, inbox: Inbox) -> str:
    """Block until the job ends; returns '' for a normal end, else why this node failed."""
    leader = Watch(plan.job.heartbeat)
    while True:
        if inbox.stop.is_set() or plan.job.stop_file.exists() or not plan.job.path.exists():
            return ""
        status, code = containers.exit_info(container)
        if status != "running":
            return f"sshd container {status} (exit {code}): {containers.tail(container)}"
        if leader.silent():
            return ""  # the leader is gone; nothing will use this node any more
        time.sleep(POLL)


def _report_failure(plan: LaunchPlan, error: LauncherError) -> None:
    if plan.job.path.exists():
        report = {"node": plan.node, "error": error.message, "hint": error.hint}
        write_json(plan.job.failed_file(plan.node), report)


def _report_done(plan: LaunchPlan, timings: Timings) -> None:
    if plan.job.path.exists():
        write_json(
            plan.job.path / f"done.{plan.node}", {"node": plan.node, "timings": timings.phases}
        )
