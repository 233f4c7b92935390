"""The docker tier: the launcher's image and sshd pieces against the host's real engine."""

from __future__ import annotations

import io
from collections.abc import Iterator

import docker
import pytest


@pytest.fixture(scope="session")
def client(testbed: None) -> Iterator[docker.DockerClient]:
    """The host engine, with debian:bookworm and the example images (testbed up made them)."""
    c = docker.from_env(timeout=600)
    yield c
    c.close()


def build(client: docker.DockerClient, tag: str, dockerfile: str) -> str:
    """Builds dockerfile (no context) as tag and returns the image ID."""
    image, _ = client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, network_mode="none"
    )
    return str(image.id)
