"""Docker engines: the host's, and one per node answering on the node's own socket."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import docker
from docker.errors import DockerException

from launcher.errors import TestbedError
from launcher.testbed import daemons
from launcher.testbed.layout import REGISTRY, STATE, Node

HOST_SOCK = "unix:///var/run/docker.sock"
HOST_PID = Path("/var/run/docker.pid")
Progress = Callable[[str], None]


def ping(url: str, timeout: float = 5) -> bool:
    try:
        with closing(docker.DockerClient(base_url=url, timeout=timeout)) as client:
            return bool(client.ping())
    except DockerException:
        return False


def ensure_host_engine(say: Progress) -> bool:
    """The host's engine answers; dockerd is started if none does. True when started."""
    if ping(HOST_SOCK):
        return False
    if not shutil.which("dockerd"):
        raise TestbedError(
            "no Docker engine answers and dockerd is not installed",
            hint="apt-get install docker.io",
        )
    if not daemons.running(HOST_PID, "dockerd"):
        say("host dockerd: starting")
        daemons.spawn(["dockerd"], "dockerd-host.log")
    daemons.wait_for(
        lambda: ping(HOST_SOCK),
        timeout=60,
        what="host dockerd",
        hint="see /var/log/mpidock-testbed/dockerd-host.log",
    )
    return True


def ensure_node_engine(node: Node) -> bool:
    """The node's own dockerd, inside the node; True when it had to be started."""
    pid = daemons.running(node.docker_pid, "dockerd")
    if pid and ping(node.docker_url) and _knows_registry(pid):
        daemons.rebind_hosts(pid)
        return False
    stale = daemons.read_pid(node.docker_pid)
    if stale and daemons.pid_runs(stale, "dockerd"):
        daemons.kill_pids([stale])
    node.run_dir.mkdir(parents=True, exist_ok=True)
    node.docker_sock.unlink(missing_ok=True)
    node.docker_pid.unlink(missing_ok=True)
    argv = [
        "dockerd", "--data-root", str(node.data_root), "--exec-root", str(node.run_dir / "exec"),
        "--host", node.docker_url, "--pidfile", str(node.docker_pid), "--bridge=none",
        "--iptables=false", "--ip-masq=false", "--group", "docker",
        "--insecure-registry", REGISTRY,
    ]  # fmt: skip
    binds = [(STATE / "hosts", "/etc/hosts")]
    daemons.spawn(daemons.node_exec_argv(node, binds, argv), f"dockerd-{node.name}.log")
    daemons.wait_for(
        lambda: ping(node.docker_url),
        timeout=60,
        what=f"dockerd on {node.name}",
        hint=f"see /var/log/mpidock-testbed/dockerd-{node.name}.log",
    )
    return True


def _knows_registry(pid: int) -> bool:
    """A node daemon from before the registry existed is restarted once to learn it."""
    try:
        return REGISTRY.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
