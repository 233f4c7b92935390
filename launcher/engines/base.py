"""The Engine interface and what every engine shares."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import docker

from launcher.errors import LauncherError
from launcher.plan import ContainerSpec

DEFAULT_PODMAN_ROOT = "/var/tmp/mpidock-podman-{uid}/{node}"


class EngineUnavailable(LauncherError):
    """The chosen engine cannot run here: not installed, not reachable, or refused."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a site may set about its engines (config keys `podman_root`, ...)."""

    podman_root: str = DEFAULT_PODMAN_ROOT


class Engine:
    """One node's container engine for one job; a context manager closing it at the end."""

    name = ""
    # Who is trusted with what: shown by --dry-run and `mpidock check`.
    trust = ""

    def __init__(self, node: str) -> None:
        self.node = node
        self.on_client: Callable[[docker.DockerClient], None] = lambda _client: None

    def client(self) -> docker.DockerClient:
        """A docker-py client of this engine, started on first use."""
        raise NotImplementedError

    def fit(self, spec: ContainerSpec, client: docker.DockerClient) -> ContainerSpec:
        """The spec as this engine can start it."""
        return spec

    def close(self) -> None:
        """Stop what this engine started for the job; safe to call twice."""

    def describe(self) -> dict[str, Any]:
        """For the run record and progress lines."""
        return {"engine": self.name}

    def __enter__(self) -> Engine:
        """This engine serves every client the process asks for until it is closed."""
        CURRENT.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(ValueError):
            CURRENT.remove(self)
        self.close()


# The engine entered by this process (mpidock slurm-entry enters one for the step).
CURRENT: list[Engine] = []
