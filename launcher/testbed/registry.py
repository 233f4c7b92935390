"""A site registry for the testbed: Debian's docker-registry on the host, on the bridge.

Nodes reach it at the host's bridge address; their daemons list it as an insecure
registry (plain HTTP on a private bridge), as a site registry inside a cluster would be.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import closing, suppress
from pathlib import Path

import docker

from launcher.errors import TestbedError
from launcher.testbed import daemons
from launcher.testbed.layout import REGISTRY, RUN, STATE, Node

PID = RUN / "registry.pid"
CONFIG = STATE / "registry.yml"
STORAGE = STATE / "registry"
# Podman (rootless users, who reach no Docker daemon) pull from the registry: it speaks
# plain HTTP on the private bridge, as the node daemons' --insecure-registry says too.
PODMAN_TRUST = Path("/etc/containers/registries.conf.d/50-mpidock-testbed.conf")
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def config_text() -> str:
    """The registry's configuration (pure): storage under the testbed's state, no auth."""
    return (
        "# Written by `mpidock testbed up`.\n"
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {STORAGE}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {REGISTRY}\n"
    )


def answers(timeout: float = 2) -> bool:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a bridge address
    with suppress(OSError), direct.open(f"http://{REGISTRY}/v2/", timeout=timeout) as reply:
        return int(reply.status) == 200
    return False


def ensure_registry() -> bool:
    """The registry answers on the bridge; True when it had to be started."""
    if daemons.running(PID, "docker-registry") and answers():
        return False
    STORAGE.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(config_text())
    RUN.mkdir(parents=True, exist_ok=True)
    pid = daemons.spawn(["docker-registry", "serve", str(CONFIG)], "registry.log")
    PID.write_text(f"{pid}\n")
    daemons.wait_for(
        answers, timeout=30, what="the registry", hint="see /var/log/mpidock-testbed/registry.log"
    )
    return True


def podman_trust_text() -> str:
    """The registries.conf drop-in (pure) that lets Podman pull from the registry."""
    return (
        "# Written by `mpidock testbed up`: the testbed's site registry speaks plain HTTP"
        " on its bridge.\n"
        f'[[registry]]\nlocation = "{REGISTRY}"\ninsecure = true\n'
    )


def ensure_podman_trust() -> None:
    PODMAN_TRUST.parent.mkdir(parents=True, exist_ok=True)
    if not PODMAN_TRUST.exists() or PODMAN_TRUST.read_text() != podman_trust_text():
        PODMAN_TRUST.write_text(podman_trust_text())


def remove_podman_trust() -> None:
    if PODMAN_TRUST.exists() and PODMAN_TRUST.read_text().startswith("# Written by `mpidock"):
        PODMAN_TRUST.unlink()


def publish(node: Node, names: Sequence[str], say: Callable[[str], None]) -> None:
    """Each image, as the node's daemon has it, in the registry (pushed through that
    daemon, which trusts the registry); one the registry holds already is left."""
    with closing(docker.DockerClient(base_url=node.docker_url, timeout=1800)) as client:
        for name in names:
            image = client.images.get(name)
            if registry_config_digest(name) == image.id:
                continue
            remote = f"{REGISTRY}/{name}"
            image.tag(remote, tag="latest")
            try:
                for line in client.images.push(remote, tag="latest", stream=True, decode=True):
                    if "error" in line:
                        raise TestbedError(f"pushing {name} to {REGISTRY}: {line['error']}")
            finally:
                client.images.remove(f"{remote}:latest")  # the tag only
            say(f"image {name}: in the registry {REGISTRY}")


def registry_config_digest(name: str) -> str:
    """The config digest (the image ID) of name:latest in the registry; "" when absent."""
    request = urllib.request.Request(
        f"http://{REGISTRY}/v2/{name}/manifests/latest", headers={"Accept": MANIFEST}
    )
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with suppress(OSError, ValueError, KeyError), direct.open(request, timeout=10) as reply:
        return str(json.loads(reply.read())["config"]["digest"])
    return ""
