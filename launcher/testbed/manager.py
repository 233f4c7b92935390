"""`mpidock testbed up | down | status`: the whole cluster, idempotent and self-repairing."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import docker

from launcher.errors import TestbedError
from launcher.testbed import cluster, daemons, engines, hostmpi, images, install, net, registry
from launcher.testbed.layout import (
    LOGS,
    MAX_NODES,
    OTHER_USERS,
    REGISTRY,
    RUN,
    SHARED,
    SLURM_CONF,
    STATE,
    Layout,
    Node,
    make_layout,
)  # fmt: skip
from launcher.testbed.texts import hosts_file

Progress = Callable[[str], None]
SAVED = STATE / "layout.json"
TOOLS = {
    "ip": "iproute2", "iptables": "iptables", "nsenter": "util-linux", "dockerd": "docker.io",
    "debootstrap": "debootstrap", "slurmctld": "slurm-wlm", "slurmd": "slurm-wlm",
    "munged": "munge", "docker-registry": "docker-registry",
}  # fmt: skip


def up(
    count: int, *, cpus: tuple[int, ...] = (), user: str = "mpiuser", uid: int = 1501, say: Progress
) -> Layout:
    """Bring the testbed up, or repair it; a running testbed is left as it is."""
    _preflight(count, cpus)
    start = time.monotonic()
    layout = make_layout(count, cpus=cpus, user=user, uid=uid, host=socket.gethostname())
    _forget_extra_nodes(layout, say)
    if engines.ensure_host_engine(say):
        _remember({"host_dockerd_started": True})
    with closing(docker.DockerClient(base_url=engines.HOST_SOCK, timeout=1800)) as client:
        images.ensure_base(client, say)
        images.ensure_examples(client, layout, say)
        hostmpi.ensure(say)
        _ensure_nodes(layout, client, say)
    say(f"testbed up: {len(layout.nodes)} nodes in {time.monotonic() - start:.0f} s")
    return layout


def _ensure_nodes(layout: Layout, client: docker.DockerClient, say: Progress) -> None:
    net.ensure_bridge(layout)
    STATE.mkdir(parents=True, exist_ok=True)
    layout.hosts_file.write_text(hosts_file(layout))
    for node in layout.nodes:
        net.ensure_node(layout, node)
    cluster.ensure_user(layout)
    say(f"launcher for users: {install.ensure_installed()}")
    SHARED.mkdir(parents=True, exist_ok=True)
    if cluster.ensure_munge():
        say("munged: started")
    conf_changed = cluster.write_conf(layout)
    if cluster.ensure_slurmctld(layout, restart=conf_changed):
        say("slurmctld: started")
    if registry.ensure_registry():
        say(f"registry: started at {REGISTRY}")
    with ThreadPoolExecutor(max_workers=len(layout.nodes)) as pool:
        fresh = dict(
            zip(layout.nodes, pool.map(engines.ensure_node_engine, layout.nodes), strict=True)
        )
    for node, started in fresh.items():
        if started:
            say(f"{node.name}: dockerd started at {node.address}")
        net.ensure_trap(node)
    images.ensure_on_nodes(client, layout, say)
    registry.ensure_podman_trust()
    registry.publish(layout.nodes[0], layout.registry_images, say)
    died = [n.name for n in layout.nodes if not daemons.running(n.slurmd_pid, "slurmd")]
    for node in layout.nodes:
        if cluster.ensure_slurmd(node, restart=conf_changed or fresh[node]):
            say(f"{node.name}: slurmd started")
    if orphans := cluster.cancel_orphaned_jobs(died):
        say(f"cancelled jobs whose processes died with their nodes: {' '.join(orphans)}")
    cluster.wait_nodes_idle(layout)
    _remember(
        {"nodes": [[n.index, n.cpus] for n in layout.nodes], "user": layout.user, "uid": layout.uid}
    )


def down(*, purge: bool = False, say: Progress) -> None:
    """Stop every testbed process and remove namespaces, links, rules, mounts and pid files."""
    saved = _saved()
    nodes = _known_nodes(saved)
    pids = [p for n in nodes for p in net.netns_pids(n.netns)]
    pids += [p for n in nodes for p in _pid_of(n.slurmd_pid, "slurmd")]
    pids += _pid_of(RUN / "slurmctld.pid", "slurmctld") + _pid_of(cluster.MUNGE_PID, "munged")
    pids += _pid_of(registry.PID, "docker-registry")
    if saved.get("host_dockerd_started"):
        pids += _pid_of(engines.HOST_PID, "dockerd")
    daemons.kill_pids(sorted(set(pids)), grace=15)
    say(f"stopped {len(set(pids))} processes")
    for node in nodes:
        net.remove_node(node)
    net.remove_bridge()
    shutil.rmtree(RUN, ignore_errors=True)
    if SLURM_CONF.exists() and SLURM_CONF.read_text().startswith("# Written by `mpidock"):
        SLURM_CONF.unlink()
    registry.remove_podman_trust()
    hostmpi.remove_site_config()
    for leftover in (STATE / "hosts", SAVED):
        leftover.unlink(missing_ok=True)
    if purge:
        shutil.rmtree(STATE, ignore_errors=True)
        shutil.rmtree(LOGS, ignore_errors=True)
    say("testbed down" + (" (purged)" if purge else ""))


USABLE = ("idle", "mixed", "allocated", "completing")  # Slurm node states of a healthy node


@dataclass(frozen=True)
class NodeStatus:
    node: Node
    netns: bool
    dockerd: bool
    slurmd: str
    images: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.netns and self.dockerd and self.slurmd in USABLE


def status() -> list[NodeStatus]:
    """The state of every known node; empty when no testbed was ever brought up."""
    nodes = _known_nodes(_saved())
    states = cluster.node_states(make_layout(0, host="")) if nodes else {}
    return [
        NodeStatus(
            node=n,
            netns=net.netns_exists(n.netns),
            dockerd=engines.ping(n.docker_url, 3),
            slurmd=states.get(n.name, "absent")
            if daemons.running(n.slurmd_pid, "slurmd")
            else "stopped",
            images=tuple(images.node_images(n)),
        )
        for n in nodes
    ]


@dataclass(frozen=True)
class UserStatus:
    """One testbed user as the host knows them."""

    name: str
    uid: int | None  # None: not created (yet)
    docker: bool  # in group docker: root-equivalent on every node


def users() -> list[UserStatus]:
    """The test users: the main one (saved by up, mpiuser by default) and OTHER_USERS."""
    main = str(_saved().get("user", "mpiuser"))
    try:
        docker = grp.getgrnam("docker")
    except KeyError:
        docker = None
    found = []
    for name in [main, *(u.name for u in OTHER_USERS)]:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            found.append(UserStatus(name, None, False))
            continue
        member = docker is not None and docker.gr_gid in os.getgrouplist(name, entry.pw_gid)
        found.append(UserStatus(name, entry.pw_uid, member))
    return found


def _preflight(count: int, cpus: tuple[int, ...]) -> None:
    if os.geteuid() != 0:
        raise TestbedError("the testbed needs root", hint="run it as root")
    missing = sorted({pkg for tool, pkg in TOOLS.items() if not shutil.which(tool)})
    if missing:
        raise TestbedError(
            f"missing tools from {', '.join(missing)}", hint=f"apt-get install {' '.join(missing)}"
        )
    if not 1 <= count <= MAX_NODES:
        raise TestbedError(f"-N {count} is out of range", hint=f"use 1 to {MAX_NODES} nodes")
    if cpus and (len(cpus) != count or min(cpus) < 1):
        raise TestbedError(
            f"--cpus gives {len(cpus)} counts for {count} nodes",
            hint="give one positive count per node, e.g. --cpus 2,2,1",
        )


def _forget_extra_nodes(layout: Layout, say: Progress) -> None:
    """Nodes of an earlier, larger testbed are stopped and removed."""
    keep = {n.name for n in layout.nodes}
    for node in _known_nodes(_saved()):
        if node.name not in keep:
            daemons.kill_pids(net.netns_pids(node.netns) + _pid_of(node.slurmd_pid, "slurmd"))
            net.remove_node(node)
            say(f"{node.name}: removed")


def _known_nodes(saved: dict[str, object]) -> list[Node]:
    """Nodes from the saved layout plus any namespace of ours left behind without one."""
    listed = saved.get("nodes")
    pairs = listed if isinstance(listed, list) else []
    nodes = {int(i): Node(int(i), int(c)) for i, c in pairs}
    for path in Path("/run/netns").glob("mpidock-sim*") if Path("/run/netns").exists() else []:
        index = path.name.removeprefix("mpidock-sim")
        if index.isdigit():
            nodes.setdefault(int(index), Node(int(index)))
    return [nodes[i] for i in sorted(nodes)]


def _pid_of(pid_file: Path, program: str) -> list[int]:
    pid = daemons.running(pid_file, program)
    return [pid] if pid else []


def _saved() -> dict[str, object]:
    try:
        return dict(json.loads(SAVED.read_text()))
    except (OSError, ValueError):
        return {}


def _remember(values: dict[str, object]) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    SAVED.write_text(json.dumps({**_saved(), **values}))
