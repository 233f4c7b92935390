"""The leader: job keys, waiting for workers, mpirun in its own container, the end signal."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import docker
from docker.models.containers import Container

from launcher import containers, jobdir, jobfiles, readiness
from launcher.beats import Beat
from launcher.errors import JobDirError, NodeFailed
from launcher.plan import LaunchPlan
from launcher.record import Timings
from launcher.signals import Inbox

log = logging.getLogger(__name__)
POLL = 0.2
DONE_WAIT = 15.0
STOP_DONE_WAIT = 5.0  # under a stop signal Slurm's KillWait runs: reports matter less
BLAME_WAIT = 1.0
OOM_HINT = "ask Slurm for more memory (--mem, --mem-per-cpu) or use less per rank"


@dataclasses.dataclass
class LeaderRun:
    """What the leader learnt while running; becomes the run record."""

    timings: Timings = dataclasses.field(default_factory=Timings)
    nodes: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    exit_code: int | None = None
    image: dict[str, Any] = dataclasses.field(default_factory=dict)
    archive: dict[str, Any] = dataclasses.field(default_factory=dict)
    image_id: str = ""
    started: float = dataclasses.field(default_factory=time.monotonic)
    created: bool = False  # the job directory is this launch's own: it removes it
    problems: list[str] = dataclasses.field(default_factory=list)  # of the teardown


def heartbeat(plan: LaunchPlan) -> Beat:
    """Touches job/heartbeat every second so workers notice a leader that died."""
    return Beat(plan.job.heartbeat, 1.0)


def create_job(plan: LaunchPlan, run: LeaderRun) -> None:
    """The job directory, then its keys; from the directory on, end_job tells the workers
    how the job ended, whatever fails next.

    Raises:
        JobDirExists: the directory is there already (end_job still says stop in it).
        JobDirError: it cannot be made or written, or the user's directory is not theirs.
    """
    jobdir.make_job_dir(plan.job.path)
    run.created = True
    jobdir.write_keys(plan.job, plan.identity.user)


def wait_workers(plan: LaunchPlan, run: LeaderRun, inbox: Inbox) -> None:
    user = plan.identity.user

    def publish(ports: dict[str, int]) -> None:
        # The leader's own node runs no sshd; its entry keeps the files whole for one node.
        jobdir.write_client_files(plan.job, {plan.node: plan.port, **ports}, user)

    with run.timings.phase("sshd_ready"):
        reports = readiness.wait_ready(
            plan.job, plan.workers, plan.port, user, plan.ready_timeout, inbox, publish
        )
    for node, report in reports.items():
        run.nodes.setdefault(node, {}).update(report)


def run_mpirun(
    plan: LaunchPlan, client: docker.DockerClient, run: LeaderRun, inbox: Inbox, image: str
) -> int:
    """mpirun in the leader's container, output streamed; its exit code is returned."""
    assert plan.container is not None
    spec = dataclasses.replace(plan.container, image=image)
    streams: list[Iterator[tuple[bytes | None, bytes | None]]] = []

    def attach(container: Container) -> None:
        streams.append(
            container.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)
        )

    with run.timings.phase("container"):
        container = containers.start(client, spec, plan.node, before=attach)
    try:
        with run.timings.phase("mpirun"):
            code = _supervise(plan, container, inbox, streams[0])
    finally:
        with run.timings.phase("removal"):
            containers.remove(container)
    if code != 0 and (oom := containers.oom_reason(container)):
        raise NodeFailed(f"mpirun exited {code}{oom}", node=plan.node, hint=OOM_HINT)
    if code != 0:
        _blame_workers(plan)
    return code


def _blame_workers(plan: LaunchPlan) -> None:
    """mpirun may fail on a lost connection before a dead worker's report arrives: give
    the reports a moment, so the failure names the node that caused it."""
    deadline = time.monotonic() + BLAME_WAIT
    while time.monotonic() < deadline:
        readiness.raise_failures(plan.job, plan.workers)
        time.sleep(POLL)


def _supervise(
    plan: LaunchPlan,
    container: Container,
    inbox: Inbox,
    output: Iterator[tuple[bytes | None, bytes | None]],
) -> int:
    streamer = threading.Thread(target=containers.copy_output, args=(output,), daemon=True)
    streamer.start()
    stop_deadline: float | None = None
    while True:
        status, code = containers.exit_info(container)
        if status in ("exited", "dead", "gone"):
            streamer.join(timeout=5)
            return code
        for sig in inbox.take_pending():
            _say(plan, f"{signal.Signals(sig).name} passed to mpirun")
            _kill(container, sig)
        if stop_deadline is None and inbox.stop.is_set():
            sig = passed_on(inbox.stop_signal)
            _say(plan, f"{sig.name} passed to mpirun; SIGKILL in {plan.grace:g} s")
            _kill(container, sig)
            stop_deadline = time.monotonic() + plan.grace
        if stop_deadline is not None and time.monotonic() > stop_deadline:
            _say(plan, "grace period over: SIGKILL")
            _kill(container, signal.SIGKILL)
            stop_deadline = float("inf")
        _check_workers(plan, container)
        time.sleep(POLL)


def passed_on(received: int | None) -> signal.Signals:
    """The signal mpirun gets for a stop signal: SIGINT stays SIGINT, others are SIGTERM."""
    return signal.SIGINT if received == signal.SIGINT else signal.SIGTERM


def _say(plan: LaunchPlan, line: str) -> None:
    print(f"mpidock: {plan.node}: {line}", file=sys.stderr, flush=True)


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


def end_job(plan: LaunchPlan, run: LeaderRun, *, stopping: bool) -> None:
    """Tell every worker to stop, wait (bounded) for their teardown reports, drop the keys.

    The directory stays until every worker has arrived (or could no longer arrive in
    time), so none is left waiting for a job that has already ended. A stop signal ends
    that wait at once: Slurm's SIGKILL follows within its KillWait.
    """
    job = plan.job
    if not run.created:
        _stop_in_place(plan)
        return
    if not job.path.exists():
        return
    with run.timings.phase("teardown"):
        with contextlib.suppress(FileNotFoundError):  # a worker removed it: we were silent
            job.stop_file.write_text("stop\n")
        arrive_by = time.monotonic() if stopping else run.started + plan.ready_timeout
        done_by = time.monotonic() + (STOP_DONE_WAIT if stopping else DONE_WAIT)
        pending = set(plan.workers)
        while pending:
            now, present = time.monotonic(), readiness.listing(job)
            for node in list(pending):
                done = job.done_file(node)
                if done.name in present and (report := jobfiles.read_report(done)):
                    entry = run.nodes.setdefault(node, {})
                    entry.setdefault("timings", {}).update(report.get("timings", {}))
                    entry["teardown"] = "clean"
                    entry["self"] = report.get("self", {})
                elif job.arrived_file(node).name not in present and now > arrive_by:
                    run.nodes.setdefault(node, {})["teardown"] = "never arrived"
                elif now > max(done_by, arrive_by):
                    run.nodes.setdefault(node, {})["teardown"] = "no report in time"
                else:
                    continue
                pending.discard(node)
            time.sleep(0.05)
        try:
            jobdir.remove_job_dir(job.path)
        except JobDirError as e:  # noted in the record: the job's outcome stays as it was
            run.problems.append(str(e))
            _say(plan, f"teardown: {e}")


def _stop_in_place(plan: LaunchPlan) -> None:
    """A launch that found the job directory already there (one killed before it, of the
    same job and step) still tells the workers waiting in it to stop: only in a directory
    that is the user's own, and leaving it for `mpidock reap`."""
    try:
        jobdir.verify_job_dir(plan.job)
        jobfiles.write_file(plan.job.stop_file, "stop\n", 0o600)
    except JobDirError as e:
        log.debug("no stop file for the workers: %s", e)
