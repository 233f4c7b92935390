"""Which interface MPI traffic should use: the one that reaches the other nodes.

Every Docker host carries docker0 = 172.17.0.1/16; MPI's own interface choice picks it
and hangs. We ask the kernel which device routes to a peer node and hand MPI that
device's network, never loopback or a Docker bridge.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Sequence
from typing import Any

from launcher.errors import UsageError
from launcher.mpi import Network
from launcher.proc import run

AVOID = ("lo", "docker0")


def route_device(route_json: str) -> str:
    """Device name from `ip -j route get ADDR` output."""
    routes: list[dict[str, Any]] = json.loads(route_json or "[]")
    if not routes or "dev" not in routes[0]:
        raise UsageError("no route to the other nodes", hint="pass --iface DEVICE")
    return str(routes[0]["dev"])


def device_network(addr_json: str, device: str) -> Network:
    """The device's first IPv4 network from `ip -j addr show dev DEVICE` output."""
    links: list[dict[str, Any]] = json.loads(addr_json or "[]")
    for link in links:
        for a in link.get("addr_info", []):
            if a.get("family") == "inet":
                net = ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
                return Network(device, str(net))
    raise UsageError(f"interface {device} has no IPv4 address", hint="pass --iface DEVICE")


def choose(peers: Sequence[str], iface: str | None) -> Network | None:
    """The network for MPI: the given interface, else the route to the first peer node."""
    if iface is None and not peers:
        return None
    if iface is None:
        address = _resolve(peers[0])
        routed = run(["ip", "-j", "route", "get", address], hint="pass --iface DEVICE")
        iface = route_device(routed.stdout)
        if iface in AVOID:
            raise UsageError(
                f"the route to {peers[0]} goes through {iface}",
                hint="pass --iface with the cluster interface",
            )
    done = run(["ip", "-j", "addr", "show", "dev", iface], check=False)
    if done.returncode != 0:
        raise UsageError(f"no interface named {iface} on this node", hint="see `ip addr`")
    return device_network(done.stdout, iface)


def _resolve(node: str) -> str:
    try:
        return socket.gethostbyname(node)
    except OSError as e:
        raise UsageError(
            f"cannot resolve node name {node}: {e}",
            hint="node names must resolve on every node (/etc/hosts or DNS)",
        ) from e
