"""The container engine seam: which engine runs a job's containers on this node.

An Engine hands the rest of the launcher a docker-py client (Docker's own daemon, or a
per-job rootless Podman service speaking the Docker-compatible API), says how a
container spec has to change to run on it, and removes what it started when closed.
Nothing outside this package asks which engine it has.
"""

from __future__ import annotations

import os
import shutil
import weakref
from collections.abc import Mapping

import docker

from launcher.engines.base import CURRENT, Engine, EngineUnavailable, Settings
from launcher.engines.docker import DockerEngine, docker_socket
from launcher.engines.docker import client_for_node as docker_client
from launcher.engines.podman import INSTALL_HINT, PodmanEngine

__all__ = [
    "CHOICES",
    "Engine",
    "EngineUnavailable",
    "Settings",
    "client_for_node",
    "of",
    "select",
]

CHOICES = ("auto", "docker", "podman")
_MADE_BY: weakref.WeakKeyDictionary[docker.DockerClient, Engine] = weakref.WeakKeyDictionary()


def select(name: str, node: str, settings: Settings | None = None) -> Engine:
    """The engine named (`auto`: Docker when this user can reach a Docker daemon, else
    Podman when installed); nothing is started until `client()`.

    Raises:
        EngineUnavailable: `auto` found neither engine on this node.
    """
    settings = settings or Settings()
    if name == "auto":
        name = auto(os.environ, node)
    if name == "docker":
        return _remember(DockerEngine(node))
    if name == "podman":
        return _remember(PodmanEngine(node, settings))
    raise EngineUnavailable(
        f"unknown engine {name!r}", node=node, hint=f"choose one of: {', '.join(CHOICES)}"
    )


def auto(env: Mapping[str, str], node: str) -> str:
    """`docker` when the Docker socket answers this user's permissions, else `podman`
    when it is installed; one line saying what to install otherwise."""
    socket = docker_socket(env)
    if socket and os.path.exists(socket) and os.access(socket, os.R_OK | os.W_OK):
        return "docker"
    if shutil.which("podman"):
        return "podman"
    raise EngineUnavailable(
        "no container engine: no Docker daemon this user may use, and podman is not installed",
        node=node,
        hint=f"{INSTALL_HINT}, or ask to be added to group docker (root-equivalent)",
    )


def of(client: docker.DockerClient) -> Engine:
    """The engine that made this client (Docker's for a client made elsewhere)."""
    return _MADE_BY.get(client) or DockerEngine("")


def client_for_node(node: str, timeout: float = 60) -> docker.DockerClient:
    """The client of the engine this process entered; Docker's when it entered none."""
    if CURRENT:
        return CURRENT[-1].client()
    return docker_client(node, timeout)


def current() -> Engine | None:
    return CURRENT[-1] if CURRENT else None


def _remember(engine: Engine) -> Engine:
    engine.on_client = lambda client: _MADE_BY.__setitem__(client, engine)
    return engine
