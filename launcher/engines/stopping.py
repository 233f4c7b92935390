"""Stop and continue a container's processes with signals, for engines without a freezer.

Rootless Podman on a cgroup v1 host gives a container no cgroup of its own, so it cannot
pause one ("can not pause containers on rootless containers with cgroup V1"). Its
processes run as the job user on the host, though, and the user owns their user
namespace: SIGSTOP to every process of the container's tree stops it as the freezer
would, SIGCONT continues it. A process forking while the tree is being stopped adds a
child the walk has not seen, so the walk repeats until a pass finds nothing new: a
stopped process cannot fork.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Iterable
from pathlib import Path

PASSES = 20  # walks of the tree at most; a stopped tree is still after the second
PROC = Path("/proc")


@dataclasses.dataclass(frozen=True)
class Root:
    """A container's root process, known by its PID and start time: a PID reused by
    another process since is not this root."""

    pid: int
    started: int

    @classmethod
    def of(cls, pid: int, proc: Path = PROC) -> Root:
        """The process `pid` now; Root(0, 0), which pauses nothing, when it is gone."""
        started = start_time(pid, proc) if pid > 0 else None
        return cls(pid, started) if started is not None else cls(0, 0)

    def pause(self, paused: bool, proc: Path = PROC) -> bool:
        """Stop (True) or continue (False) the tree; False when there was nothing to do."""
        if self.pid <= 0 or start_time(self.pid, proc) != self.started:
            return False
        done = stop_tree(self.pid, proc) if paused else continue_tree(self.pid, proc)
        return done > 0


def start_time(pid: int, proc: Path = PROC) -> int | None:
    """When `pid` started (clock ticks after boot, /proc/PID/stat's 22nd field); None
    when it is gone."""
    fields = stat_fields(pid, proc)
    try:
        return int(fields[19]) if fields else None  # field 22, counted from field 3
    except (IndexError, ValueError):
        return None


def stat_fields(pid: int | str, proc: Path = PROC) -> list[str]:
    """/proc/PID/stat's fields from the state (field 3) on; empty when the process is gone.
    The command before them is skipped whole: it may hold spaces and parentheses."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return []
    return stat[stat.rfind(")") + 2 :].split()


def stop_tree(root: int, proc: Path = PROC) -> int:
    """SIGSTOP `root` and every descendant of it that runs as this process's UID; how many
    processes were stopped. Processes of another UID are left alone (none should be there:
    nothing in our containers runs as root)."""
    stopped: set[int] = set()
    for _ in range(PASSES):
        fresh = [p for p in tree(root, proc) if p not in stopped]
        if not fresh:
            break
        stopped.update(p for p in fresh if _signal(p, signal.SIGSTOP))
    return len(stopped)


def continue_tree(root: int, proc: Path = PROC) -> int:
    """SIGCONT `root` and every descendant of it; how many processes were continued."""
    return sum(_signal(p, signal.SIGCONT) for p in tree(root, proc))


def tree(root: int, proc: Path = PROC) -> list[int]:
    """`root` and its descendants of this UID, parents before children; empty when `root`
    is gone."""
    return tree_of_any(root, proc, os.getuid())


def tree_of_any(root: int, proc: Path = PROC, uid: int | None = None) -> list[int]:
    """`root` and its descendants (of `uid` only, when given), parents before children."""
    parents = dict(_parents(proc))
    if root not in parents:
        return []
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if uid is None or parents[pid][1] == uid:
            found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _parents(proc: Path) -> Iterable[tuple[int, tuple[int, int]]]:
    """(pid, (parent pid, real UID)) of every process readable now."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:  # gone since the listing
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        try:
            ppid = int(fields["PPid"])
            uid = int(fields["Uid"].split()[0])
        except (KeyError, ValueError, IndexError):
            continue
        yield int(entry.name), (ppid, uid)


def _signal(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True
