"""Host bridge, one network namespace per node, the docker0 trap and the forward rule.

Every function is idempotent: it checks before it changes, so `up` repairs a half-dead
testbed and `down` tolerates a half-removed one.
"""

from __future__ import annotations

import json
from pathlib import Path

from launcher.proc import run, succeeds
from launcher.testbed.layout import BRIDGE, TRAP_ADDR, Layout, Node

FORWARD_RULE = ("FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT")


def link_exists(name: str, netns: str | None = None) -> bool:
    return succeeds([*_ip(netns), "link", "show", "dev", name])


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def addresses(name: str, netns: str | None = None) -> list[str]:
    """CIDR addresses of one link ('10.213.0.11/24'), empty when the link is missing."""
    done = run([*_ip(netns), "-j", "addr", "show", "dev", name], check=False)
    if done.returncode != 0:
        return []
    info = json.loads(done.stdout or "[]")
    return [f"{a['local']}/{a['prefixlen']}" for i in info for a in i.get("addr_info", [])]


def ensure_bridge(layout: Layout) -> None:
    if not link_exists(BRIDGE):
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    want = f"{layout.host_address}/{layout.prefix}"
    if want not in addresses(BRIDGE):
        run(["ip", "addr", "add", want, "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    ensure_forward_rule()


def ensure_forward_rule() -> None:
    """Let node-to-node traffic cross the bridge despite Docker's FORWARD policy DROP."""
    if not succeeds(["iptables", "-C", *FORWARD_RULE]):
        run(["iptables", "-I", FORWARD_RULE[0], "1", *FORWARD_RULE[1:]])


def remove_forward_rule() -> None:
    while succeeds(["iptables", "-C", *FORWARD_RULE]):
        run(["iptables", "-D", *FORWARD_RULE])


def ensure_node(layout: Layout, node: Node) -> None:
    """Namespace, veth pair (eth0 inside), address and loopback (the trap comes later)."""
    if not netns_exists(node.netns):
        run(["ip", "netns", "add", node.netns])
    if not link_exists("eth0", node.netns):
        if link_exists(node.veth):
            run(["ip", "link", "del", node.veth])
        veth_pair = [node.veth, "type", "veth", "peer", "name", "eth0", "netns", node.netns]
        run(["ip", "link", "add", *veth_pair])
    want = f"{node.address}/{layout.prefix}"
    if want not in addresses("eth0", node.netns):
        run([*_ip(node.netns), "addr", "add", want, "dev", "eth0"])
    run([*_ip(node.netns), "link", "set", "eth0", "up"])
    run([*_ip(node.netns), "link", "set", "lo", "up"])
    run(["ip", "link", "set", node.veth, "master", BRIDGE, "up"])


def ensure_trap(node: Node) -> None:
    """A bridge named docker0 with 172.17.0.1/16, as on every real Docker host.

    Made after the node's dockerd has started: with --bridge=none it deletes a docker0
    it finds at start.
    """
    if not link_exists("docker0", node.netns):
        run([*_ip(node.netns), "link", "add", "docker0", "type", "bridge"])
    if TRAP_ADDR not in addresses("docker0", node.netns):
        run([*_ip(node.netns), "addr", "add", TRAP_ADDR, "dev", "docker0"])
    run([*_ip(node.netns), "link", "set", "docker0", "up"])


def netns_pids(netns: str) -> list[int]:
    if not netns_exists(netns):
        return []
    done = run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in done.stdout.split()]


def remove_node(node: Node) -> None:
    if netns_exists(node.netns):
        run(["ip", "netns", "del", node.netns])
    if link_exists(node.veth):
        run(["ip", "link", "del", node.veth])


def remove_bridge() -> None:
    remove_forward_rule()
    if link_exists(BRIDGE):
        run(["ip", "link", "del", BRIDGE])


def _ip(netns: str | None) -> list[str]:
    return ["ip", "-n", netns] if netns else ["ip"]
