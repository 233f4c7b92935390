"""Docker: the node's daemon at the default socket (DOCKER_HOST honoured)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

import docker
from docker.errors import DockerException

from launcher.engines.base import Engine
from launcher.errors import DockerUnavailable
from launcher.plan import ContainerSpec

log = logging.getLogger(__name__)
DEFAULT_SOCKET = "/var/run/docker.sock"


class DockerEngine(Engine):
    """The node's Docker daemon, shared by every user in group docker."""

    name = "docker"
    trust = "group docker: root-equivalent on every node"

    def __init__(self, node: str, timeout: float = 60) -> None:
        super().__init__(node)
        self.timeout = timeout
        self._client: docker.DockerClient | None = None

    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = client_for_node(self.node, self.timeout)
            self.on_client(self._client)
        return self._client

    def fit(self, spec: ContainerSpec, client: docker.DockerClient) -> ContainerSpec:
        return fit_cgroup(spec, cgroup_driver(client) if spec.cgroup_parent else "")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def docker_socket(env: Mapping[str, str]) -> str:
    """The socket path docker-py would use; "" for a DOCKER_HOST that is not a socket."""
    host = env.get("DOCKER_HOST", "")
    if not host:
        return DEFAULT_SOCKET
    return host.removeprefix("unix://") if host.startswith(("unix://", "/")) else ""


def client_for_node(node: str, timeout: float = 60) -> docker.DockerClient:
    """The node's engine at the default socket (DOCKER_HOST honoured)."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as e:
        if "Permission denied" in str(e):
            raise DockerUnavailable(
                "permission denied on the Docker socket: this user is not in its group",
                node=node,
                hint="use --engine podman (rootless), or ask an administrator to add you "
                "to the docker group, then log in again",
            ) from e
        raise DockerUnavailable(
            f"cannot reach the Docker engine: {e}", node=node,
            hint="is dockerd running, and are you in the docker group (id -nG)?",
        ) from e  # fmt: skip
    return client


def fit_cgroup(spec: ContainerSpec, cgroup_driver: str) -> ContainerSpec:
    """A cgroup parent is a path to the cgroupfs driver but a systemd slice to the systemd
    one, which Slurm's job cgroup is not: there the containers stay in the engine's
    cgroup, still held by their own limits."""
    if spec.cgroup_parent and cgroup_driver != "cgroupfs":
        log.info("engine's cgroup driver %r: not starting in %s", cgroup_driver, spec.cgroup_parent)
        return dataclasses.replace(spec, cgroup_parent="")
    return spec


def cgroup_driver(client: docker.DockerClient) -> str:
    try:
        return str(client.info().get("CgroupDriver", ""))
    except DockerException:
        return ""
