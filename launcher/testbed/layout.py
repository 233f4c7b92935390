"""Where every piece of the testbed lives: names, addresses and paths as plain data."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

BRIDGE = "mpidk0"
SUBNET = ipaddress.IPv4Network("10.213.0.0/24")
STATE = Path("/var/lib/mpidock-testbed")
RUN = Path("/run/mpidock-testbed")
LOGS = Path("/var/log/mpidock-testbed")
EPILOG = STATE / "epilog"
MPIDOCK_BIN = Path("/usr/local/bin/mpidock")
SHARED = Path("/srv/mpidock")
SLURM_CONF = Path("/etc/slurm/slurm.conf")
TRAP_ADDR = "172.17.0.1/16"
REGISTRY = f"{SUBNET.network_address + 1}:5000"  # the host on the bridge
MAX_NODES = 32
FULL_NODES = 3  # nodes that carry every example image


@dataclass(frozen=True)
class TestUser:
    """A further ordinary testbed user, home in the shared directory."""

    __test__ = False
    name: str
    uid: int
    groups: tuple[str, ...]


# mpiother plays the hostile second user; mpinodocker reaches no Docker socket.
OTHER_USERS = (TestUser("mpinodocker", 1503, ()), TestUser("mpiother", 1504, ("docker",)))


@dataclass(frozen=True)
class Node:
    """One simulated compute node."""

    index: int
    cpus: int = 2

    @property
    def name(self) -> str:
        return f"sim{self.index}"

    @property
    def netns(self) -> str:
        return f"mpidock-{self.name}"

    @property
    def veth(self) -> str:
        return f"mpidk-{self.name}"

    @property
    def address(self) -> str:
        return str(SUBNET.network_address + 10 + self.index)

    @property
    def run_dir(self) -> Path:
        return RUN / self.name

    @property
    def docker_sock(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def docker_pid(self) -> Path:
        return self.run_dir / "docker.pid"

    @property
    def slurmd_pid(self) -> Path:
        return RUN / f"slurmd-{self.name}.pid"

    @property
    def data_root(self) -> Path:
        return STATE / self.name / "docker"

    @property
    def docker_url(self) -> str:
        return f"unix://{self.docker_sock}"


@dataclass(frozen=True)
class Layout:
    """The whole testbed: its nodes, its user and the host's place on the bridge."""

    nodes: tuple[Node, ...]
    user: str = "mpiuser"
    uid: int = 1501
    host_name: str = "localhost"
    images: tuple[str, ...] = field(
        default=(
            "mpidock/openmpi",
            "mpidock/mpich",
            "mpidock/openmpi5",
            "mpidock/mpich5",
            "mpidock/intelmpi",
        )
    )
    # In the site registry too, for users who reach no Docker daemon (rootless Podman).
    registry_images: tuple[str, ...] = ("mpidock/openmpi", "mpidock/mpich")

    def images_on(self, node: Node) -> tuple[str, ...]:
        """Every example image on the first FULL_NODES nodes; a node beyond them (a testbed
        widened for scale) carries the base example image alone: 13 more copies of every
        MPI's image would cost gigabytes and minutes for jobs that run one image."""
        return self.images if node.index <= FULL_NODES else self.images[:1]

    @property
    def host_address(self) -> str:
        return str(SUBNET.network_address + 1)

    @property
    def prefix(self) -> int:
        return SUBNET.prefixlen

    @property
    def home(self) -> Path:
        return SHARED / "home" / self.user

    @property
    def hosts_file(self) -> Path:
        return STATE / "hosts"

    @property
    def slurmctld_pid(self) -> Path:
        return RUN / "slurmctld.pid"

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


def make_layout(
    count: int, *, cpus: tuple[int, ...] = (), user: str = "mpiuser", uid: int = 1501, host: str
) -> Layout:
    """Layout for `count` nodes; `cpus` gives per-node CPU counts (default 2 each)."""
    counts = cpus or (2,) * count
    nodes = tuple(Node(i + 1, counts[i]) for i in range(count))
    return Layout(nodes=nodes, user=user, uid=uid, host_name=host)
