"""The Engine interface and what every engine shares."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import docker
from docker.errors import APIError, NotFound
from docker.models.containers import Container

from launcher.errors import LauncherError
from launcher.plan import ContainerSpec
from launcher.store import Archive

DEFAULT_PODMAN_ROOT = "/var/tmp/mpidock-podman-{uid}/{node}"


class EngineUnavailable(LauncherError):
    """The chosen engine cannot run here: not installed, not reachable, or refused."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a site may set about its engines (config keys `podman_root`, ...)."""

    podman_root: str = DEFAULT_PODMAN_ROOT
    # Rootless Podman's shared read-only image store ("": none); {user}, {uid} filled in.
    podman_image_store: str = ""


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

    def planned(self, spec: ContainerSpec) -> tuple[ContainerSpec, tuple[str, ...]]:
        """The spec as this engine will start it, as far as is known before it runs (for
        --dry-run), and a note for people on each change that matters."""
        return spec, ()

    def pauser(self, container: Container) -> Callable[[bool], bool]:
        """What pauses (True) or thaws (False) the container later, resolved now: a
        suspension leaves a second before Slurm stops this process, too short for more
        than the pause itself. Here the engine's daemon, outside the step, does it all:
        its cgroup freezer. The callable says False when the container is gone, already
        in that state, or not running."""
        return lambda paused: _freeze(container, paused)

    def shared_image(self, ref: str) -> bool:
        """True when ref (an image's name or ID) is read in place from a shared read-only
        image store: nothing moves, and it is never re-tagged or removed on the node."""
        return False

    def import_image(
        self,
        image: str,
        archive: Callable[[], Archive | None],
        registry_ref: str,
        personal: Callable[[str], tuple[str, str]],
        say: Callable[[str], None],
    ) -> tuple[int, float] | None:
        """Fills the engine's shared image store with image, from the archive or else the
        registry, and with the user's personalized image over it (`personal`: a base ID's
        tag and Dockerfile), unless the store holds it: (bytes filled, seconds), or None
        when the engine has no such store."""
        return None

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


def _freeze(container: Container, paused: bool) -> bool:
    """Freeze or thaw with the engine's cgroup freezer; an engine refuses a container not
    in the other state with 409."""
    try:
        if paused:
            container.pause()
        else:
            container.unpause()
    except NotFound:
        return False
    except APIError as e:
        if e.status_code != 409:
            raise
        return False
    return True
