"""Host MPI injection's facts and files (launcher.hostmpi decides): the image probed once
per image ID, the verdict given before the workers learn which image to run, and the
job directory's links to the host's libraries."""

from __future__ import annotations

import os
from typing import Any

from docker.errors import DockerException

from launcher import movement
from launcher.errors import ImageError
from launcher.hostmpi import (
    PROBE,
    SHIM,
    HostMpi,
    HostMpiRefused,
    ImageMpi,
    Injection,
    parse_probe,
    verdict,
)
from launcher.movement import Wanted
from launcher.plan import LaunchPlan
from launcher.store import ImageStore

NOTE = "mpi-abi"  # the store's note of PROBE's output, per image ID


class Check:
    """distribution.lead_image's check: the image resolved, before any worker is told of
    it, so that a refusal starts no container of the job on any node."""

    def __init__(self, client: Any, plan: LaunchPlan, host: HostMpi) -> None:
        self.client, self.plan, self.host = client, plan, host
        self.injection: Injection | None = None

    def __call__(self, wanted: Wanted) -> None:
        """Raises HostMpiRefused (one line naming both sides) when the ABIs do not match,
        or when this node lacks the host MPI's launcher."""
        host = self.host
        if not os.path.isfile(host.launcher):
            raise HostMpiRefused(
                f"--host-mpi {host.name}: {host.launcher} is not on {self.plan.node}",
                node=self.plan.node,
                hint=f"install it at {host.path} on every node, or fix {host.source}",
            )
        image = probe(self.client, self.plan, wanted.image_id)
        verdict(image, self.host)
        self.injection = Injection(self.host, image)


def probe(client: Any, plan: LaunchPlan, image_id: str) -> ImageMpi:
    """PROBE's findings of the image, asked once per image ID and noted in the store."""
    store = ImageStore(plan.image_store, warn=movement.stderr_say(plan.node))
    if (text := store.recall(image_id, NOTE)) is None:
        text = _run(client, image_id, plan.node)
        store.note(image_id, NOTE, text)
    return parse_probe(text)


def _run(client: Any, image: str, node: str) -> str:
    try:
        out = client.containers.run(
            image, list(PROBE), remove=True, network_mode="none",
            cap_drop=["ALL"], security_opt=["no-new-privileges"], entrypoint=[],
        )  # fmt: skip
    except DockerException as e:
        raise ImageError(
            f"cannot look for the image's MPI libraries in {image}: {e}",
            node=node,
            hint="the image needs /bin/sh for --host-mpi",
        ) from e
    return bytes(out).decode(errors="replace")


def write_links(plan: LaunchPlan) -> None:
    """The image's libmpich*.so.12 names for the host's libraries, in the job directory
    (shared, and bound into every container); only links to libraries the host has."""
    if plan.injection is None or not (aliases := plan.injection.aliases()):
        return
    shim = plan.job.path / SHIM
    shim.mkdir(mode=0o700, exist_ok=True)
    for name, target in aliases:
        if os.path.exists(target) and not os.path.lexists(shim / name):
            os.symlink(target, shim / name)
