"""A worker node: its sshd container, ready report, and teardown when the leader says so.

Nothing in the job directory is used before it is verified to be the user's own. The
worker writes its sshd configuration itself, with a port free on its node (the step's
preferred one when it is free), and names that port in its ready report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import socket
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import docker
from docker.models.containers import Container

from launcher import containers, distribution, images, jobdir, jobfiles, reap
from launcher.beats import Watch
from launcher.errors import JobEnded, LauncherError, NodeFailed, NodeTimeout
from launcher.plan import LaunchPlan
from launcher.record import Timings, own_cost, write_json
from launcher.signals import Inbox

log = logging.getLogger(__name__)
POLL = 0.05  # the job directory: a stat per look, while the job starts
IDLE_POLL = 0.5  # ...once it has waited or run FAST_FOR seconds: shared-FS load at scale
FAST_FOR = 5.0
CHECK_EVERY = 0.2  # seconds between asking the engine whether sshd still runs
OOM_EVERY = 1.0  # ...and whether a rank was killed for memory (its events: whole seconds)
SSHD_LISTEN = 30.0  # seconds a started sshd has to listen on the job's port
PORT_TRIES = 3  # sshd starts, each on another port, when the chosen one is taken meanwhile
PORT_SCAN = 200  # ports looked at, from the step's preferred one on, for a free one
BIND_FAILED = ("Address already in use", "Cannot bind any address")
LEADER_SILENCE = 6.0  # the leader beats every second; NFS attribute caches lag ~3 s
STOP_SLACK = 5.0  # after a stop signal, wait grace + this for the leader's end


def run_worker(plan: LaunchPlan, inbox: Inbox) -> int:
    """Start sshd, report, wait for the end, remove everything of the job on this node.

    From the moment the job directory exists every failure is reported to the leader
    (failed.<node>), so it stops at once instead of at its deadline.
    """
    timings = Timings(plan.node)
    try:
        _wait_job_dir(plan, inbox)
    except LauncherError as e:
        e.node = e.node or plan.node
        raise  # nothing to report it in: the directory is missing or not the user's
    _tell(plan, plan.job.arrived_file(plan.node), {})
    if plan.job.stop_file.exists():
        _report_done(plan, timings)
        return 0  # the leader ended the job before this node joined it
    client, container, tag = None, None, ""
    try:
        _check_keys(plan)
        client = containers.client_for_node(plan.node)
        reap.at_start(client, plan)
        free_port(plan)  # a full port range fails the job now, not after the image phase
        with timings.phase("image"):
            tag, image = distribution.worker_image(plan, client, inbox)
        container, port = _start_sshd(plan, client, tag, timings)
        ready = {"image": image, "timings": timings.phases, "port": port}
        _tell(plan, plan.job.ready_file(plan.node), ready)
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


def _check_keys(plan: LaunchPlan) -> None:
    """The keys sshd will read are the user's own, private, regular files."""
    for path in (plan.job.host_key, plan.job.authorized_keys):
        jobfiles.verify_file(path, private=True)


def _start_sshd(
    plan: LaunchPlan, client: docker.DockerClient, tag: str, timings: Timings
) -> tuple[Container, int]:
    """sshd on a port free on this node; one taken between the look and sshd's bind
    (another program was quicker) means another try on the next free port."""
    assert plan.container is not None
    spec = dataclasses.replace(plan.container, image=tag)
    config = plan.job.node_sshd_config(plan.node)
    tried: set[int] = set()
    while True:
        port = free_port(plan, tried)
        tried.add(port)
        jobdir.write_sshd_config(plan.job, config, port, plan.identity.user)
        jobfiles.verify_file(config)
        with timings.phase("container"):
            container = containers.start(client, spec, plan.node)
        try:
            listening = _wait_listening(plan, container, port, last=len(tried) >= PORT_TRIES)
        except BaseException:
            containers.remove(container)  # not yet the caller's to remove
            raise
        if listening:
            return container, port
        log.warning("%s: port %d was taken as sshd started; trying another", plan.node, port)
        containers.remove(container)


def free_port(plan: LaunchPlan, tried: Collection[int] = ()) -> int:
    """The first port free on this node from the step's preferred one on, within range.

    Raises:
        NodeFailed: none is free (with --port: that one is taken).
    """
    low, high = plan.port_range
    size = high - low + 1
    for i in range(min(size, PORT_SCAN)):
        port = low + (plan.port - low + i) % size
        if port not in tried and _free(port):
            return port
    if size == 1:
        raise NodeFailed(
            f"port {plan.port} is already in use",
            node=plan.node,
            hint="leave out --port: each node then takes a free port of --port-range",
        )
    raise NodeFailed(
        f"no free port among {min(size, PORT_SCAN)} of {low}-{high} from {plan.port}",
        node=plan.node,
        hint="choose a less busy range with --port-range",
    )


def _free(port: int) -> bool:
    """Nothing listens on the port, on any address of this node (IPv4 or IPv6)."""
    for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As sshd does: connections of an earlier job still closing do not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind((address, port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return False
                if e.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    raise
    return True


def _wait_listening(plan: LaunchPlan, container: Container, port: int, *, last: bool) -> bool:
    """Ready means sshd accepts connections: True. False: it could not bind the port
    (unless this was the last try). A container that exits otherwise is named."""
    deadline = time.monotonic() + SSHD_LISTEN
    while not _accepts(port):
        status, code = containers.exit_info(container)
        if status != "running":
            said = containers.tail(container)
            if not last and any(text in said for text in BIND_FAILED):
                return False
            raise NodeFailed(
                f"sshd container {status} (exit {code}): {said}",
                node=plan.node,
                hint="the image needs OpenSSH's server at /usr/sbin/sshd",
            )
        if time.monotonic() > deadline:
            raise NodeTimeout(plan.node, port, SSHD_LISTEN, "sshd does not listen")
        time.sleep(0.05)
    return True


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _wait_job_dir(plan: LaunchPlan, inbox: Inbox) -> None:
    """Until the leader has written the keys (or said stop), in a directory verified to be
    the user's own before anything in it is looked at.

    Raises:
        JobDirError: the user's directory or the job directory is not the user's own.
        NodeFailed, NodeTimeout: a stop signal, or no job directory in time.
    """
    job, started = plan.job, time.monotonic()
    deadline = started + plan.ready_timeout
    # Made here too, so that a directory someone else made in its place fails every
    # node at once, not at the deadline.
    jobdir.ensure_user_dir(job.path.parent)
    while True:
        if os.path.lexists(job.path):
            jobdir.verify_job_dir(job)
            if job.authorized_keys.exists() or job.stop_file.exists():
                return
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
        # A leader slow to start (its own image, a busy node) is looked for less often.
        inbox.stop.wait(POLL if time.monotonic() - started < FAST_FOR else IDLE_POLL)


def _wait_end(plan: LaunchPlan, container: Container, inbox: Inbox) -> None:
    """Block until the leader ends the job.

    The shared job directory (the stop file, the leader's heartbeat) is looked at every
    POLL seconds while the job starts, then every IDLE_POLL: a long job on 1,024 nodes stats
    it a few thousand times a second, not tens of thousands. The node's own engine is asked
    every CHECK_EVERY whether sshd and the ranks live, so a dead container is reported
    before mpirun's lost connection is taken for the cause. A signal wakes the wait at
    once; a stop signal leaves the container up for the leader's grace period, so ranks
    on this node see mpirun's SIGTERM rather than a vanished sshd.

    Raises:
        NodeFailed: the container died, or the leader is gone (its keys are removed too).
    """
    leader = Watch(plan.job.heartbeat, LEADER_SILENCE)
    stop_by: float | None = None
    started = next_look = next_check = next_oom = time.monotonic()
    while True:
        now = time.monotonic()
        if inbox.stop.is_set() and stop_by is None:
            stop_by, next_look = now + plan.grace + STOP_SLACK, now
        if stop_by is not None and now > stop_by:
            return
        if now >= next_look:
            if plan.job.stop_file.exists() or not plan.job.path.exists():
                return
            _check_leader(plan, leader)
            fast = stop_by is not None or now - started < FAST_FOR
            next_look = now + (POLL if fast else IDLE_POLL)
        if now >= next_check:
            ask_oom = now >= next_oom
            _check_container(plan, container, oom=ask_oom)
            next_check = now + CHECK_EVERY
            if ask_oom:
                next_oom = now + OOM_EVERY
        wake = max(0.0, min(next_look, next_check) - time.monotonic())
        if stop_by is None:
            inbox.stop.wait(wake)
        else:
            time.sleep(wake)


def _check_container(plan: LaunchPlan, container: Container, *, oom: bool = True) -> None:
    """Raises NodeFailed when this node's sshd container, or a rank in it, died.

    Args:
        oom: whether to ask the engine's events for a rank killed for memory while sshd
            lives on (an exited container says so itself, asked or not).
    """
    status, code = containers.exit_info(container)
    status = "running" if status == "paused" else status  # a suspended job's, thawing
    ask = oom or status != "running"
    oom_said = containers.oom_reason(container) if ask else ""
    if status != "running" or oom_said:
        what = f"sshd container {status} (exit {code})" if status != "running" else "a rank died"
        reason = f"{what}{oom_said}: {containers.tail(container)}"
        raise NodeFailed(reason, node=plan.node)


def _check_leader(plan: LaunchPlan, leader: Watch) -> None:
    """Raises NodeFailed when the leader has gone silent; the job's keys are removed."""
    if leader.silent():
        _remove_keys(plan)
        raise NodeFailed(
            f"the leader on {plan.nodes[0].node} is gone: no heartbeat for "
            f"{LEADER_SILENCE:.0f} s; this node's container and the job's keys are removed",
            node=plan.node,
        )


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
