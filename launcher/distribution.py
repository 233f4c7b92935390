"""The image phase of a job on each node, and its handoffs through the job directory.

The leader resolves the image to an ID and publishes it (image.json). Each worker then
gets that ID onto its node the cheapest way (launcher.movement); a worker that needs an
archive the store lacks writes need.<node>, and the leader's ArchiveServer saves it once.
Both then personalize it locally. While a node moves bytes it touches moving.<node>, so
the leader's readiness wait knows it is alive and busy rather than gone.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import docker

from launcher import engines, images, movement
from launcher.beats import Background, Beat, Watch
from launcher.errors import ImageError, JobEnded, LauncherError, NodeFailed
from launcher.jobdir import JobDir
from launcher.movement import Moved, Wanted
from launcher.plan import LaunchPlan
from launcher.record import human_size, read_json, write_json
from launcher.signals import Inbox
from launcher.store import Archive, ImageStore
from launcher.storefiles import SaveAbandoned

log = logging.getLogger(__name__)
POLL = 0.1
BEAT = 2.0


def lead_image(
    plan: LaunchPlan,
    client: docker.DockerClient,
    server: ArchiveServer,
    check: Callable[[Wanted], None] | None = None,
) -> tuple[str, Wanted, dict[str, Any]]:
    """The leader's image phase: resolve, check (a refusal raises before any worker
    learns the image, so none starts a container), publish for the workers, personalize."""
    say = movement.stderr_say(plan.node)
    store = ImageStore(plan.image_store, warn=say)
    started = time.monotonic()
    # An engine reading images in place from a shared store fills it once, for every node.
    ref = movement.registry_ref(plan.registry, plan.image) if plan.registry else ""
    personal = images.personal_of(plan.identity)
    filled = engines.of(client).import_image(
        plan.image, lambda: store.find_by_name(plan.image), ref, personal, say
    )
    wanted, moved = movement.resolve(client, plan.image, store, plan.registry, plan.node, say)
    moved = Moved("shared store", *filled) if filled else moved
    if check is not None:
        check(wanted)
    write_json(plan.job.image_file, wanted.to_dict(), make_parents=False)
    server.offer(wanted)
    tag, how = images.ensure_personal(client, wanted.image_id, plan.identity, plan.node, plan.image)
    return tag, wanted, _summary(moved, how, time.monotonic() - started, say)


def worker_image(
    plan: LaunchPlan, client: docker.DockerClient, inbox: Inbox
) -> tuple[str, dict[str, Any]]:
    """A worker's image phase: the leader's ID onto this node, then personalized."""
    say = movement.stderr_say(plan.node)
    wanted = _wait_wanted(plan, inbox)
    started = time.monotonic()
    tag = images.personal_tag(wanted.image_id, plan.identity)
    if images.touch(client, tag, plan.node):
        return tag, _summary(Moved("present"), "cached", time.monotonic() - started, say)
    with Beat(plan.job.moving_file(plan.node), BEAT):
        moved = movement.obtain(
            client, wanted, plan.node, lambda: _request_archive(plan, wanted, inbox), say
        )
        _check_ended(plan)  # the leader stopped the job while this node moved its image
        tag, how = images.ensure_personal(
            client, wanted.image_id, plan.identity, plan.node, plan.image
        )
    return tag, _summary(moved, how, time.monotonic() - started, say)


def _summary(moved: Moved, how: str, seconds: float, say: movement.Say) -> dict[str, Any]:
    """One record entry and one progress line: path, bytes, seconds, MB/s."""
    path = how if moved.path == "present" else moved.path
    entry = {**moved.to_dict(), "path": path, "personal": how, "seconds": round(seconds, 3)}
    rate = f" ({entry['mb_per_s']} MB/s)" if moved.bytes else ""
    say(f"{path}, {human_size(moved.bytes)}{rate}, {seconds:.2f} s")
    return entry


def _wait_wanted(plan: LaunchPlan, inbox: Inbox) -> Wanted:
    deadline, leader = time.monotonic() + plan.ready_timeout, Watch(plan.job.heartbeat)
    while not (data := read_json(plan.job.image_file)):
        _check_wait(plan, inbox, deadline, leader, "the leader never said which image to run")
    return Wanted.from_dict(data)


def _request_archive(plan: LaunchPlan, wanted: Wanted, inbox: Inbox) -> Archive:
    """Ask the leader to save the image into the store, and wait until it is whole.

    A leader that stops the job for its own reason says why itself: then this node only
    ends (JobEnded), whatever became of the save. archive-failed.json counts only while
    the job goes on: it is the leader's report that the save itself failed.
    """
    store = ImageStore(wanted.store, warn=movement.stderr_say(plan.node))
    try:
        need = {"node": plan.node, "image_id": wanted.image_id}
        write_json(plan.job.need_file(plan.node), need, make_parents=False)
    except FileNotFoundError as e:
        raise JobEnded("the leader ended the job", node=plan.node) from e
    deadline, leader = time.monotonic() + movement.MOVE_TIMEOUT, Watch(plan.job.heartbeat)
    while True:
        _check_ended(plan)
        if failed := read_json(plan.job.archive_failed):
            raise ImageError(
                f"the leader could not save the image: {failed.get('error')}",
                node=plan.node,
                hint=str(failed.get("hint") or "see the leader's error on the first node"),
            )
        if archive := store.find(wanted.image_id):
            return archive
        what = f"no archive of {wanted.image} appeared in {store.area}"
        _check_wait(plan, inbox, deadline, leader, what)


def _check_ended(plan: LaunchPlan) -> None:
    if plan.job.stop_file.exists() or not plan.job.path.exists():
        raise JobEnded("the leader ended the job", node=plan.node)


def _check_wait(plan: LaunchPlan, inbox: Inbox, deadline: float, leader: Watch, what: str) -> None:
    _check_ended(plan)
    if inbox.stop.is_set():
        raise NodeFailed("stopped by a signal while waiting for the image", node=plan.node)
    if leader.silent():
        raise NodeFailed("the leader is gone (its heartbeat stopped)", node=plan.node)
    if time.monotonic() > deadline:
        raise NodeFailed(f"gave up waiting: {what}", node=plan.node)
    time.sleep(POLL)


class ArchiveServer(Background):
    """The leader's side of need.<node>: saves the job's image into the store, once."""

    join_timeout = 5.0  # a save still running at the job's end is abandoned and removed

    def __init__(
        self, plan: LaunchPlan, client: docker.DockerClient, saved: dict[str, Any]
    ) -> None:
        super().__init__()
        self.plan, self.client, self.saved = plan, client, saved
        self.wanted: Wanted | None = None

    def offer(self, wanted: Wanted) -> None:
        """From now on a worker's need.<node> is answered with this image."""
        self.wanted = wanted

    def loop(self) -> None:
        job: JobDir = self.plan.job
        try:
            while not self.done.is_set():
                if self.wanted is not None and any(job.path.glob("need.*")):
                    self._save(job, self.wanted)
                    return
                self.done.wait(POLL)
        except Exception as e:  # a thread's failure would otherwise leave workers waiting
            self._failed(job, e)

    def _save(self, job: JobDir, wanted: Wanted) -> None:
        say = movement.stderr_say(self.plan.node)
        try:
            with Beat(job.moving_file(self.plan.node), BEAT):
                store = ImageStore(wanted.store, warn=say)
                moved = movement.save(self.client, store, wanted, self.plan.node, say, self.done)
            self.saved.update(moved.to_dict())
        except SaveAbandoned:
            return  # the job is ending; the leader reports why, workers see its stop
        except Exception as e:  # any failure, not only ImageError: workers must not wait
            self._failed(job, e)

    def _failed(self, job: JobDir, error: Exception) -> None:
        """Tells the workers at once why there will be no archive.

        Nothing is written once the job is ending (`done` set before the leader's stop):
        the leader then reports its own reason, and a worker invents no failure.
        """
        if self.done.is_set():
            return
        if isinstance(error, LauncherError):
            hint = error.hint or f"see the leader's error on {self.plan.node}"
            report = {"error": error.message, "hint": hint}
        else:
            log.debug("the archive save failed", exc_info=error)
            report = {
                "error": f"{type(error).__name__}: {error}",
                "hint": "an unexpected error in mpidock; run with --verbose and report it",
            }
        report["node"] = getattr(error, "node", None) or self.plan.node
        with contextlib.suppress(OSError):
            write_json(job.archive_failed, report, make_parents=False)
