"""Starting, finding and stopping the testbed's daemons.

Daemons run in the foreground of a detached session so their pid is known at once;
each also writes its own pid file, which is how a later `up` or `down` finds them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from launcher import proc
from launcher.errors import TestbedError
from launcher.testbed.layout import LOGS, STATE, Node


def spawn(argv: Sequence[str], log_name: str, *, user: str | None = None) -> int:
    """Start argv detached from us, output appended to LOGS/log_name; return its pid."""
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / log_name, "ab") as out:
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            cwd="/",  # not the caller's directory, which may be deleted while we run
        )
    return child.pid


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_runs(pid: int | None, program: str) -> bool:
    """True when pid is alive and its command line names program."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(os.path.basename(arg.decode(errors="replace")) == program for arg in cmdline[:1])


def running(pid_file: Path, program: str) -> int | None:
    """The pid from pid_file if that process is program and alive; a stale file is removed."""
    pid = read_pid(pid_file)
    if pid_runs(pid, program):
        return pid
    pid_file.unlink(missing_ok=True)
    return None


def wait_for(check: Callable[[], bool], *, timeout: float, what: str, hint: str = "") -> None:
    """Poll check until it is true or raise TestbedError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TestbedError(f"{what} not ready after {timeout:.0f} s", hint=hint)
        time.sleep(0.2)


def kill_pids(pids: Sequence[int], *, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL what is still alive after grace seconds."""
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(proc.alive(p) for p in pids):
        time.sleep(0.1)
    _signal_all([p for p in pids if proc.alive(p)], signal.SIGKILL)


def node_exec_argv(node: Node, binds: Sequence[tuple[Path, str]], argv: Sequence[str]) -> list[str]:
    """argv run inside node: its network namespace, own hostname, files bound over paths.

    `ip netns exec` would remount /sys and lose the cgroup mounts dockerd needs, so the
    node is entered with nsenter (network) and unshare (mount and UTS) instead. Values
    reach the script as positional parameters, never as shell text.
    """
    script = "set -e\n"
    for i in range(len(binds)):
        script += f'mount --bind "${2 * i + 2}" "${2 * i + 3}"\n'
    script += f'hostname "$1"\nshift {2 * len(binds) + 1}\nexec "$@"\n'
    params = [str(p) for src, dst in binds for p in (src, dst)]
    return [
        "nsenter", f"--net=/run/netns/{node.netns}",
        "unshare", "--mount", "--uts", "--propagation", "slave",
        "sh", "-c", script, "sh", node.name, *params, *argv,
    ]  # fmt: skip


def _signal_all(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def rebind_hosts(pid: int) -> None:
    """The node's /etc/hosts bound again in a node daemon's mount namespace when it shows
    the host's.

    Replacing the host's /etc/hosts (an editor or `sed -i` renames over it) dissolves the
    bind mounts made on it in the nodes' namespaces: node names stop resolving for every
    later step (slurmd) or container (dockerd copies its /etc/hosts into host-network
    containers). A new bind in the running daemon's namespace repairs it without a restart.
    """
    ns_hosts = Path(f"/proc/{pid}/root/etc/hosts")
    try:
        if ns_hosts.read_bytes() == (STATE / "hosts").read_bytes():
            return
    except OSError:
        return
    argv = ["nsenter", "-t", str(pid), "-m", "mount", "--bind", str(STATE / "hosts")]
    subprocess.run([*argv, "/etc/hosts"], capture_output=True, timeout=10, check=False)
