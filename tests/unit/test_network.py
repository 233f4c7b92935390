"""Choosing MPI's interface from `ip -j` output; the host commands are faked or read-only."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Sequence

import pytest

from launcher import network
from launcher.errors import CommandFailed, LauncherError, UsageError
from launcher.mpi import Network
from launcher.network import choose, device_network, route_device
from tests.conftest import require

# Captured from `ip -j route get 10.213.0.12` and `ip -j addr show dev eth0` on a node.
ROUTE_DIRECT = (
    '[{"dst":"10.213.0.12","dev":"eth0","prefsrc":"10.213.0.11","flags":[],"uid":0,"cache":[]}]'
)
ROUTE_VIA_GATEWAY = (
    '[{"dst":"192.0.2.7","gateway":"10.0.0.1","dev":"ens3","prefsrc":"10.0.0.5",'
    '"flags":[],"uid":1000,"cache":[]}]'
)
ROUTE_DOCKER = (
    '[{"dst":"172.17.0.2","dev":"docker0","prefsrc":"172.17.0.1","flags":[],"uid":0,"cache":[]}]'
)
ADDR_ETH0 = json.dumps(
    [
        {
            "ifindex": 2,
            "ifname": "eth0",
            "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
            "mtu": 1500,
            "qdisc": "noqueue",
            "operstate": "UP",
            "group": "default",
            "link_type": "ether",
            "address": "02:42:0a:d5:00:0b",
            "broadcast": "ff:ff:ff:ff:ff:ff",
            "addr_info": [
                {
                    "family": "inet6",
                    "local": "fe80::42:aff:fed5:b",
                    "prefixlen": 64,
                    "scope": "link",
                    "valid_life_time": 4294967295,
                    "preferred_life_time": 4294967295,
                },
                {
                    "family": "inet",
                    "local": "10.213.0.11",
                    "prefixlen": 24,
                    "broadcast": "10.213.0.255",
                    "scope": "global",
                    "label": "eth0",
                    "valid_life_time": 4294967295,
                    "preferred_life_time": 4294967295,
                },
                {"family": "inet", "local": "192.168.9.1", "prefixlen": 16, "scope": "global"},
            ],
        }
    ]
)
ADDR_IPV6_ONLY = (
    '[{"ifindex":3,"ifname":"ib0",'
    '"addr_info":[{"family":"inet6","local":"fe80::1","prefixlen":64}]}]'
)
ADDR_NO_ADDRESSES = '[{"ifindex":4,"ifname":"eth1","addr_info":[]}]'


# --- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "device"), [(ROUTE_DIRECT, "eth0"), (ROUTE_VIA_GATEWAY, "ens3")])
def test_route_device(text: str, device: str) -> None:
    assert route_device(text) == device


@pytest.mark.parametrize("text", ["", "[]", '[{"dst":"10.0.0.1","type":"unreachable"}]'])
def test_no_route(text: str) -> None:
    with pytest.raises(UsageError, match="no route to the other nodes") as info:
        route_device(text)
    assert "--iface" in info.value.hint


def test_device_network_takes_the_first_ipv4_network() -> None:
    assert device_network(ADDR_ETH0, "eth0") == Network("eth0", "10.213.0.0/24")


@pytest.mark.parametrize("text", [ADDR_IPV6_ONLY, ADDR_NO_ADDRESSES, "[]", ""])
def test_device_without_ipv4(text: str) -> None:
    with pytest.raises(UsageError, match="interface ib0 has no IPv4 address"):
        device_network(text, "ib0")


# --- choose() with a fake `ip` --------------------------------------------------------------


class FakeIp:
    """Answers `ip -j ...` argv lists from a table and records every call."""

    def __init__(self, routes: dict[str, str], addrs: dict[str, str]) -> None:
        self.routes = routes
        self.addrs = addrs
        self.calls: list[list[str]] = []

    def __call__(
        self, argv: Sequence[str], *, check: bool = True, hint: str = "", **_: object
    ) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        if argv[:4] == ["ip", "-j", "route", "get"]:
            return self._answer(argv, self.routes.get(argv[4]), check, hint)
        if argv[:5] == ["ip", "-j", "addr", "show", "dev"]:
            return self._answer(argv, self.addrs.get(argv[5]), check, hint)
        raise AssertionError(f"unexpected command {argv}")

    @staticmethod
    def _answer(
        argv: Sequence[str], out: str | None, check: bool, hint: str
    ) -> subprocess.CompletedProcess[str]:
        """Like launcher.proc.run: a failure raises when check, else returns its code."""
        if out is None:
            if check:
                raise CommandFailed(argv, 2, "RTNETLINK answers: Network is unreachable", hint)
            return subprocess.CompletedProcess(list(argv), 1, "", 'Device "x" does not exist.')
        return subprocess.CompletedProcess(list(argv), 0, out, "")


@pytest.fixture
def fake_ip(monkeypatch: pytest.MonkeyPatch) -> FakeIp:
    fake = FakeIp(
        routes={"10.213.0.12": ROUTE_DIRECT, "172.17.0.2": ROUTE_DOCKER, "10.9.9.9": "[]"},
        addrs={"eth0": ADDR_ETH0, "ens3": ADDR_ETH0.replace('"eth0"', '"ens3"')},
    )
    monkeypatch.setattr(network, "run", fake)
    return fake


def test_no_peers_and_no_iface_lets_mpi_choose(fake_ip: FakeIp) -> None:
    assert choose([], None) is None
    assert fake_ip.calls == []


def test_explicit_iface_needs_no_route(fake_ip: FakeIp) -> None:
    # 'sim2' does not resolve here: an explicit interface must not look peers up.
    assert choose(["sim2"], "eth0") == Network("eth0", "10.213.0.0/24")
    assert fake_ip.calls == [["ip", "-j", "addr", "show", "dev", "eth0"]]


def test_default_is_the_route_to_the_first_peer(fake_ip: FakeIp) -> None:
    # Peers given as addresses resolve without DNS.
    assert choose(["10.213.0.12", "10.9.9.9"], None) == Network("eth0", "10.213.0.0/24")
    assert fake_ip.calls == [
        ["ip", "-j", "route", "get", "10.213.0.12"],
        ["ip", "-j", "addr", "show", "dev", "eth0"],
    ]


def test_route_through_a_docker_bridge_is_refused(fake_ip: FakeIp) -> None:
    with pytest.raises(
        UsageError, match=r"the route to 172\.17\.0\.2 goes through docker0"
    ) as info:
        choose(["172.17.0.2"], None)
    assert "--iface" in info.value.hint


def test_empty_route_answer(fake_ip: FakeIp) -> None:
    with pytest.raises(UsageError, match="no route to the other nodes"):
        choose(["10.9.9.9"], None)


def test_unreachable_peer(fake_ip: FakeIp) -> None:
    with pytest.raises(LauncherError, match="Network is unreachable") as info:
        choose(["10.1.2.3"], None)
    assert "--iface" in info.value.hint


def test_unknown_iface(fake_ip: FakeIp) -> None:
    with pytest.raises(UsageError, match="no interface named wlan7 on this node"):
        choose([], "wlan7")


def test_unresolvable_peer(fake_ip: FakeIp, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(name: str) -> str:
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "gethostbyname", no_dns)
    with pytest.raises(UsageError, match=r"cannot resolve node name sim9: .*not known") as info:
        choose(["sim9"], None)
    assert "/etc/hosts" in info.value.hint
    assert fake_ip.calls == []


# --- choose() with the real `ip`, which only reads ------------------------------------------


@pytest.fixture
def real_ip() -> None:
    ip = shutil.which("ip")
    probe = [ip or "ip", "-j", "addr", "show", "dev", "lo"]
    works = ip is not None and subprocess.run(probe, capture_output=True).returncode == 0
    require(works, "no iproute2 `ip` with JSON output", "apt-get install iproute2")


@pytest.mark.usefixtures("real_ip")
def test_real_loopback_network() -> None:
    assert choose([], "lo") == Network("lo", "127.0.0.0/8")


@pytest.mark.usefixtures("real_ip")
def test_real_route_to_ourselves_is_refused() -> None:
    with pytest.raises(UsageError, match="goes through lo"):
        choose(["127.0.0.1"], None)
