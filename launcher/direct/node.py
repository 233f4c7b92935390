"""The node's one container, shared by the step's tasks on the node.

The node's first task (SLURM_LOCALID 0) starts it; the others wait for it, with a
deadline. Its lifetime is counted twice, so that every way a task can end is covered:

- The count: each task, on joining, marks itself active (active.<localid>) and joined
  (joined.<localid>); on leaving it removes its active mark under the node's lock, and the
  task that finds none left, once every task of the node has joined, removes the container.
- The backstop: the container's PID 1 reads a FIFO that every task holds open for writing.
  When the last task ends, however (SIGKILL included), the kernel closes its end, PID 1
  reads end-of-file and exits, and the engine removes the container (auto-remove).

Both live in the step's PMIx client directory, which slurmstepd removes when the step ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import docker
from docker.errors import DockerException, NotFound
from docker.models.containers import Container

from launcher import containers, engines
from launcher.direct.plan import DirectPlan
from launcher.errors import NodeFailed, NodeTimeout
from launcher.signals import Inbox

POLL = 0.05  # a stat per look, node-local
JOIN_WAIT = 30.0  # seconds a leaving task waits for the node's tasks that have not joined


class NodeShare:
    """This task's membership of the node's container: a held FIFO end and its marks."""

    def __init__(self, plan: DirectPlan) -> None:
        self.plan = plan
        self.dir = Path(plan.share_dir)
        self._fd: int | None = None

    def join(self) -> None:
        """Hold the FIFO open and mark this task joined and active.

        Raises:
            NodeFailed: the meeting place cannot be made, or is not the user's own.
        """
        try:
            for path in (self.dir.parent, self.dir):
                with contextlib.suppress(FileExistsError):
                    path.mkdir(mode=0o700)
                _verify_private(path)
            with contextlib.suppress(FileExistsError):
                os.mkfifo(self.plan.fifo, 0o600)
            # Read and write: the open does not wait for a reader, and the end counts as a
            # writer for the container's PID 1 until this process closes it or dies.
            self._fd = os.open(self.plan.fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            if not stat.S_ISFIFO(os.fstat(self._fd).st_mode):
                raise OSError(errno.EINVAL, "not a FIFO")
            for mark in ("joined", "active"):
                (self.dir / f"{mark}.{self.plan.localid}").touch(mode=0o600)
        except OSError as e:
            raise NodeFailed(
                f"cannot join the node's container at {self.dir}: {e.strerror or e}",
                node=self.plan.node,
                hint="the step's PMIx client directory must be the user's own",
            ) from e

    def leave(self, *, stopping: bool) -> bool:
        """This task's active mark removed; True when it was the node's last task.

        Before a normal end, the node's tasks that have not joined yet are waited for
        (bounded): until they have, the container must stay for them.
        """
        if not stopping:
            self._wait_joined()
        with self._locked():
            (self.dir / f"active.{self.plan.localid}").unlink(missing_ok=True)
            last = not any(self.dir.glob("active.*")) and self._all_joined()
        return last

    def close(self) -> None:
        """Let go of the FIFO: the container ends once no task holds it."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        """The meeting place itself, once the last task has left (its own files only)."""
        for path in self.dir.iterdir():
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.dir.rmdir()

    def fail(self, message: str) -> None:
        """The starting task's failure, for the node's waiting tasks to report at once."""
        with contextlib.suppress(OSError):
            (self.dir / "failed").write_text(json.dumps({"error": message}))

    def _all_joined(self) -> bool:
        return all((self.dir / f"joined.{i}").exists() for i in range(self.plan.local_tasks))

    def _wait_joined(self) -> None:
        deadline = time.monotonic() + JOIN_WAIT
        while not self._all_joined() and time.monotonic() < deadline:
            time.sleep(POLL)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.dir / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _verify_private(path: Path) -> None:
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise OSError(errno.EPERM, f"{path} is not a private directory of this user")


def start(client: docker.DockerClient, plan: DirectPlan, tag: str) -> Container:
    """The node's container from the personalized image, removed by the engine when its
    PID 1 ends (the FIFO's last writer gone).

    Raises:
        NodeFailed: the engine refused to create or start it.
    """
    assert plan.container is not None
    spec = dataclasses.replace(plan.container, image=tag)
    containers.remove_named(client, spec.name)
    spec = engines.of(client).fit(spec, client)
    kwargs = {**containers.docker_kwargs(spec), "auto_remove": True}
    try:
        container = client.containers.create(**kwargs)
    except DockerException as e:
        raise NodeFailed(f"cannot create container {spec.name}: {e}", node=plan.node) from e
    try:
        container.start()
    except DockerException as e:
        containers.remove(container)
        raise NodeFailed(f"cannot start container {spec.name}: {e}", node=plan.node) from e
    return container


def announce(plan: DirectPlan, tag: str) -> None:
    """Tell the node's other tasks the container runs, and from which image."""
    share = Path(plan.share_dir)
    (share / "ready.new").write_text(json.dumps({"image": tag}))
    (share / "ready.new").replace(share / "ready")


def wait_started(client: docker.DockerClient, plan: DirectPlan, inbox: Inbox) -> Container:
    """The container the node's first task starts, once it runs.

    Raises:
        NodeFailed: the first task failed (its message), or a stop signal came.
        NodeTimeout: not started within the ready timeout.
    """
    share = Path(plan.share_dir)
    deadline = time.monotonic() + plan.ready_timeout
    while not (share / "ready").exists():
        if (failed := share / "failed").exists():
            said = json.loads(failed.read_text() or "{}").get("error", "unknown")
            raise NodeFailed(f"the node's first task failed: {said}", node=plan.node)
        if inbox.stop.is_set():
            raise NodeFailed("stopped by a signal before the rank started", node=plan.node)
        if time.monotonic() > deadline:
            raise NodeTimeout(
                plan.node, 0, plan.ready_timeout, f"container {plan.name} never started",
                hint="see the node's first task's error (SLURM_LOCALID 0)",
            )  # fmt: skip
        time.sleep(POLL)
    tag = str(json.loads((share / "ready").read_text()).get("image", ""))
    # An image of a shared store filled since this task's engine started is read now.
    engines.of(client).shared_image(tag)
    try:
        return client.containers.get(plan.name)
    except NotFound as e:
        raise NodeFailed(f"container {plan.name} is gone", node=plan.node) from e


def remove(client: docker.DockerClient, plan: DirectPlan) -> None:
    """The last task's removal; one already gone (auto-removed) is fine."""
    with contextlib.suppress(NotFound):
        containers.remove(client.containers.get(plan.name))
