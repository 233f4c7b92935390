"""The leader: job keys, waiting for workers, mpirun in its own container, the end signal."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import docker
from docker.models.containers import Container

from launcher import containers, keys, readiness
from launcher.beats import Beat
from launcher.errors import LauncherError, NodeFailed
from launcher.plan import LaunchPlan
from launcher.record import Timings, read_json
from launcher.signals import Inbox

log = logging.getLogger(__name__)
POLL = 0.2
DONE_WAIT = 15.0


@dataclasses.dataclass
class LeaderRun:
    """What the leader learnt while running; becomes the run record."""

    timings: Timings = dataclasses.field(default_factory=Timings)
    nodes: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    exit_code: int | None = None
    image: dict[str, Any] = dataclasses.field(default_factory=dict)
    archive: dict[str, Any] = dataclasses.field(default_factory=dict)
    image_id: str = ""


def heartbeat(plan: LaunchPlan) -> Beat:
    """Touches job/heartbeat every second so workers notice a leader that died."""
    return Beat(plan.job.heartbeat, 1.0)


def create_job(plan: LaunchPlan) -> keys.JobDir:
    hosts = [h.node for h in plan.nodes]
    return keys.create_job_dir(plan.job.path, hosts=hosts, port=plan.port, user=plan.identity.user)


def wait_workers(plan: LaunchPlan, run: LeaderRun, inbox: Inbox) -> None:
    with run.timings.phase("sshd_ready"):
        reports = readiness.wait_ready(
            plan.job, plan.workers, plan.port, plan.identity.user, plan.ready_timeout, inbox
        )
    for node, report in reports.items():
        run.nodes.setdefault(node, {}).update(report)


def run_mpirun(
    plan: LaunchPlan, client: docker.DockerClient, run: LeaderRun, inbox: Inbox, image: str
) -> int:
    """mpirun in the leader's container, output streamed; its exit code is returned."""
    assert plan.container is not None
    spec = dataclasses.replace(plan.container, image=image)
    with run.timings.phase("container"):
        container = containers.start(client, spec, plan.node)
    try:
        with run.timings.phase("mpirun"):
            return _supervise(plan, container, inbox)
    finally:
        containers.remove(container)


def _supervise(plan: LaunchPlan, container: Container, inbox: Inbox) -> int:
    streamer = threading.Thread(target=_stream, args=(container,), daemon=True)
    streamer.start()
    stop_deadline: float | None = None
    while True:
        status, code = containers.exit_info(container)
        if status in ("exited", "dead", "gone"):
            streamer.join(timeout=5)
            return code
        for sig in inbox.take_pending():
            _kill(container, sig)
        if stop_deadline is None and inbox.stop.is_set():
            _kill(container, signal.SIGTERM)
            stop_deadline = time.monotonic() + plan.grace
        if stop_deadline is not None and time.monotonic() > stop_deadline:
            _kill(container, signal.SIGKILL)
        _check_workers(plan, container)
        time.sleep(POLL)


def _check_workers(plan: LaunchPlan, container: Container) -> None:
    """A worker that fails mid-run ends the job at once, naming the node."""
    try:
        readiness.raise_failures(plan.job, plan.workers)
    except NodeFailed:
        _kill(container, signal.SIGKILL)
        raise


def _kill(container: Container, sig: int) -> None:
    with contextlib.suppress(docker.errors.APIError):  # it has just exited
        container.kill(signal=int(sig))


def _stream(container: Container) -> None:
    """Copy the container's stdout and stderr to ours as bytes arrive."""
    out: Callable[[bytes], object] = sys.stdout.buffer.write
    err: Callable[[bytes], object] = sys.stderr.buffer.write
    try:
        for chunk_out, chunk_err in container.attach(
            stdout=True, stderr=True, stream=True, logs=True, demux=True
        ):
            if chunk_out:
                out(chunk_out)
                sys.stdout.buffer.flush()
            if chunk_err:
                err(chunk_err)
                sys.stderr.buffer.flush()
    except docker.errors.DockerException as e:
        log.debug("output stream ended: %s", e)


def end_job(plan: LaunchPlan, run: LeaderRun) -> None:
    """Tell every worker to stop, wait (bounded) for their teardown reports, drop the keys."""
    job = plan.job
    if not job.path.exists():
        return
    with run.timings.phase("teardown"):
        job.stop_file.write_text("stop\n")
        deadline = time.monotonic() + DONE_WAIT
        pending = set(plan.workers)
        while pending and time.monotonic() < deadline:
            for node in list(pending):
                if report := read_json(job.path / f"done.{node}"):
                    entry = run.nodes.setdefault(node, {})
                    entry.setdefault("timings", {}).update(report.get("timings", {}))
                    entry["teardown"] = "clean"
                    pending.discard(node)
            time.sleep(0.05)
        for node in pending:
            run.nodes.setdefault(node, {})["teardown"] = f"no report within {DONE_WAIT:.0f} s"
        keys.remove_job_dir(job.path)


def failure_node(error: LauncherError) -> str | None:
    return error.node
