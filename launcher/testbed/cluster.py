"""Slurm and munge on the testbed: munged and slurmctld on the host, one slurmd per node."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
from collections.abc import Collection
from pathlib import Path

from launcher.errors import LauncherError
from launcher.proc import run, succeeds
from launcher.testbed import daemons
from launcher.testbed.layout import EPILOG, OTHER_USERS, RUN, SLURM_CONF, STATE, Layout, Node
from launcher.testbed.texts import epilog_script, slurm_conf

MUNGE_PID = Path("/run/munge/munged.pid")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
DOCKER_SOCK = "/run/docker.sock"


def ensure_munge() -> bool:
    """munged on the host; True when it had to be started."""
    if daemons.running(MUNGE_PID, "munged") and succeeds(["munge", "-n"]):
        return False
    munge = pwd.getpwnam("munge")
    MUNGE_PID.parent.mkdir(parents=True, exist_ok=True)
    os.chown(MUNGE_PID.parent, munge.pw_uid, munge.pw_gid)
    MUNGE_SOCKET.unlink(missing_ok=True)
    Path(f"{MUNGE_SOCKET}.lock").unlink(missing_ok=True)
    daemons.spawn(["munged", "--foreground"], "munged.log", user="munge")
    daemons.wait_for(lambda: succeeds(["munge", "-n"]), timeout=30, what="munged")
    return True


def write_conf(layout: Layout) -> bool:
    """Write slurm.conf; True when it changed (slurmctld must then restart)."""
    text = slurm_conf(layout)
    EPILOG.parent.mkdir(parents=True, exist_ok=True)
    EPILOG.write_text(epilog_script())
    EPILOG.chmod(0o755)
    for node in layout.nodes:
        ensure_node_tmp(node)
    if SLURM_CONF.exists() and SLURM_CONF.read_text() == text:
        return False
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SLURM_CONF.write_text(text)
    for node in layout.nodes:
        (STATE / node.name / "slurmd").mkdir(parents=True, exist_ok=True)
    (STATE / "slurmctld").mkdir(parents=True, exist_ok=True)
    return True


def ensure_node_tmp(node: Node) -> Path:
    """The node's own TmpFS (slurm.conf): world-writable and sticky, like /tmp, since
    Slurm's PMIx plugin makes each step's client directory there as the job's user."""
    tmp = STATE / node.name / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    tmp.chmod(0o1777)
    return tmp


def ensure_slurmctld(layout: Layout, *, restart: bool) -> bool:
    pid = daemons.running(layout.slurmctld_pid, "slurmctld")
    if pid and not restart:
        return False
    if pid:
        daemons.kill_pids([pid])
    RUN.mkdir(parents=True, exist_ok=True)
    daemons.spawn(["slurmctld", "-D"], "slurmctld.out")
    daemons.wait_for(
        lambda: succeeds(["scontrol", "ping"], timeout=10),
        timeout=60,
        what="slurmctld",
        hint="see /var/log/mpidock-testbed/slurmctld.log",
    )
    return True


def ensure_slurmd(node: Node, *, restart: bool) -> bool:
    """slurmd inside the node, seeing the node's docker socket at the default path."""
    pid = daemons.running(node.slurmd_pid, "slurmd")
    if pid and not restart:
        daemons.rebind_hosts(pid)
        return False
    if pid:
        daemons.kill_pids([pid])
    if not Path(DOCKER_SOCK).exists():
        Path(DOCKER_SOCK).touch()  # a bind mount needs something to mount on
    binds = [(STATE / "hosts", "/etc/hosts"), (node.docker_sock, DOCKER_SOCK)]
    argv = daemons.node_exec_argv(node, binds, ["slurmd", "-D", "-N", node.name])
    daemons.spawn(argv, f"slurmd-{node.name}.out")
    daemons.wait_for(
        lambda: daemons.running(node.slurmd_pid, "slurmd") is not None,
        timeout=30,
        what=f"slurmd on {node.name}",
    )
    return True


def cancel_orphaned_jobs(died: Collection[str]) -> list[str]:
    """Cancel jobs Slurm still holds as running on nodes whose slurmd had died.

    slurmctld restores its saved state: a job that was running when the testbed was killed
    comes back RUNNING and holds its nodes, though none of its processes survived.
    """
    done = run(["squeue", "-h", "-t", "running,completing", "-o", "%i %N"], check=False, timeout=10)
    orphans = []
    for line in done.stdout.splitlines():
        job, _, nodelist = line.strip().partition(" ")
        if job and nodelist and set(_hostnames(nodelist)) & set(died):
            orphans.append(job)
    if orphans:
        run(["scancel", *orphans], check=False, timeout=10)
    return orphans


def _hostnames(nodelist: str) -> list[str]:
    done = run(["scontrol", "show", "hostnames", nodelist], check=False, timeout=10)
    return done.stdout.split()


def node_states(layout: Layout) -> dict[str, str]:
    """Slurm's state of each node ('idle', 'alloc', 'down*', ...); empty if slurmctld is down."""
    if not daemons.running(layout.slurmctld_pid, "slurmctld"):
        return {}  # sinfo would retry for a long while
    try:
        done = run(["sinfo", "-h", "-N", "-o", "%N %T"], check=False, timeout=10)
    except LauncherError:
        return {}
    if done.returncode != 0:
        return {}
    pairs = (line.split() for line in done.stdout.splitlines() if line.strip())
    return {p[0]: p[1] for p in pairs if len(p) == 2}


def wait_nodes_idle(layout: Layout) -> None:
    """Every node registered and usable; nodes Slurm marked down are resumed once."""
    names = [n.name for n in layout.nodes]

    def usable() -> bool:
        states = node_states(layout)
        stuck = [n for n in names if states.get(n, "").startswith(("down", "drain"))]
        if stuck and not any(s.endswith("*") for s in (states[n] for n in stuck)):
            run(["scontrol", "update", f"nodename={','.join(stuck)}", "state=resume"], check=False)
        return all(
            states.get(n, "").rstrip("*~#") in ("idle", "mixed", "allocated")
            and not states[n].endswith("*")
            for n in names
        )

    daemons.wait_for(
        usable, timeout=90, what="Slurm nodes", hint="see /var/log/mpidock-testbed/slurmd-*.log"
    )


def ensure_user(layout: Layout) -> None:
    """The ordinary test user, home in the shared directory, in group docker; then the
    others (OTHER_USERS): the attacker of the shared-cluster tests and the rootless one."""
    extra = {"mpiproj": layout.uid + 100, "mpidata": layout.uid + 101}
    for name, gid in {layout.user: layout.uid, **extra}.items():
        if not _group(name):
            run(["groupadd", "-g", str(gid), name])
    if not shutil.which("dockerd") or not _group("docker"):
        run(["groupadd", "-r", "docker"], check=False)
    layout.home.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.home.parent.parent, 0o755)
    os.chmod(layout.home.parent, 0o755)
    _ensure_one(layout.user, layout.uid, ("docker", *extra), layout.home)
    for user in OTHER_USERS:
        if not _group(user.name):
            run(["groupadd", "-g", str(user.uid), user.name])
        _ensure_one(user.name, user.uid, user.groups, layout.home.parent / user.name)


def _ensure_one(name: str, uid: int, groups: tuple[str, ...], home: Path) -> None:
    try:
        pwd.getpwnam(name)
        if groups:
            run(["usermod", "-a", "-G", ",".join(groups), name])
    except KeyError:
        also = ["-G", ",".join(groups)] if groups else []
        run(
            [
                "useradd",
                "-u",
                str(uid),
                "-g",
                name,
                *also,
                "-d",
                str(home),
                "-m",
                "-s",
                "/bin/bash",
                name,
            ]
        )
    home.mkdir(mode=0o750, exist_ok=True)
    os.chown(home, uid, uid)


def _group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True
