"""What a rootless Podman job left running on this node, ended by root from the Epilog.

A `slurm-entry` killed with SIGKILL cannot stop its per-job Podman service, and the
containers outlive both: conmon, the container's monitor, left the step's process tree when
Podman double-forked it. Nothing of that can be asked of a Podman service as root without
entering the user's namespaces, so the Epilog (root, acting for SLURM_JOB_UID) works from
/proc alone and signals processes; it never reads or writes the user's storage:
- each conmon of the job's containers (its `-n mpidock-<job>.` name) and every process
  of its container;
- each Podman API service of the user whose `slurm-entry` (the pid in its socket's name)
  is gone;
- the user's pause process (the user namespace keeper), once nothing of the user's Podman
  runs on the node.
Only processes of the job's UID in this node's network namespace count (a site runs one
node per host; the testbed several, each in its own namespace). The stopped container's
record stays in the user's node-local storage; the user's next job on the node removes it
(its start-up reap, through its own service).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from launcher.engines import stopping

PROC = Path("/proc")
SOCKET = re.compile(r"/api-(\d+)\.sock$")
GONE_WAIT = 3.0  # seconds for SIGKILLed processes to go before the pause process is judged


@dataclass(frozen=True)
class Process:
    """One process as /proc shows it."""

    pid: int
    uid: int
    argv: tuple[str, ...]

    @property
    def name(self) -> str:
        return Path(self.argv[0]).name if self.argv else ""


@dataclass(frozen=True)
class Ended:
    """What was ended, for the Epilog's log."""

    what: str
    pid: int

    def describe(self) -> str:
        return f"{self.what} (pid {self.pid})"


def reap_job(job_id: str, uid: int, proc: Path = PROC) -> list[Ended]:
    """End the job's containers, the user's orphaned services and, when nothing of the
    user's Podman remains, the pause process; what was ended."""
    here = _netns(proc, "self")
    mine = [p for p in processes(proc) if p.uid == uid and _netns(proc, str(p.pid)) == here]
    ended: list[Ended] = []
    for conmon in (p for p in mine if p.name == "conmon"):
        name = container_name(conmon.argv)
        if name.startswith(f"mpidock-{job_id}."):
            _kill_tree(conmon.pid, proc)
            ended.append(Ended(f"container {name}", conmon.pid))
    alive = {p.pid for p in mine}
    for service in (p for p in mine if p.name == "podman" and _is_service(p.argv)):
        owner = entry_of(service.argv)
        if owner is not None and owner not in alive and not _exists(owner, proc):
            _kill(service.pid, signal.SIGKILL)
            ended.append(Ended(f"podman service of ended slurm-entry {owner}", service.pid))
    _wait_gone([e.pid for e in ended], proc)
    left = [p for p in processes(proc) if p.uid == uid and p.name in ("podman", "conmon")]
    if not [p for p in left if _netns(proc, str(p.pid)) == here and _running(p.pid, proc)]:
        for pause in (p for p in mine if p.name == "catatonit" and "-P" in p.argv):
            _kill(pause.pid, signal.SIGKILL)
            ended.append(Ended("podman pause process", pause.pid))
    return ended


def conmon_running(uid: int, proc: Path = PROC) -> bool:
    """A conmon of the user runs in this node's network namespace (a container exiting:
    its exit command, `podman container cleanup`, recreates the runtime directory)."""
    here = _netns(proc, "self")
    return any(
        p.uid == uid and p.name == "conmon" and _netns(proc, str(p.pid)) == here
        for p in processes(proc)
        if _running(p.pid, proc)
    )


def processes(proc: Path = PROC) -> Iterator[Process]:
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            uid = entry.stat().st_uid
        except OSError:
            continue
        if argv and argv[-1] == "":
            argv.pop()
        if argv:
            yield Process(int(entry.name), uid, tuple(argv))


def container_name(argv: tuple[str, ...]) -> str:
    """The container's name in a conmon command line (`-n NAME`); "" without one."""
    for i, word in enumerate(argv[:-1]):
        if word in ("-n", "--name"):
            return argv[i + 1]
    return ""


def entry_of(argv: tuple[str, ...]) -> int | None:
    """The pid of the slurm-entry a service belongs to, from its socket's name."""
    for word in argv:
        if match := SOCKET.search(word):
            return int(match.group(1))
    return None


def _is_service(argv: tuple[str, ...]) -> bool:
    return "system" in argv and "service" in argv


def _kill_tree(root: int, proc: Path) -> None:
    """The container's processes, then conmon: SIGKILL, as `podman kill` would."""
    for pid in reversed(stopping.tree_of_any(root, proc)):
        _kill(pid, signal.SIGKILL)


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _wait_gone(pids: list[int], proc: Path, seconds: float = GONE_WAIT) -> None:
    """Until the killed processes are gone (or zombies), at most `seconds`."""
    deadline = time.monotonic() + seconds
    while any(_running(p, proc) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _running(pid: int, proc: Path) -> bool:
    """Alive and not a zombie."""
    fields = stopping.stat_fields(pid, proc)
    return bool(fields) and fields[0] != "Z"


def _exists(pid: int, proc: Path) -> bool:
    return (proc / str(pid)).exists()


def _netns(proc: Path, pid: str) -> str:
    try:
        return os.readlink(proc / pid / "ns" / "net")
    except OSError:
        return ""
