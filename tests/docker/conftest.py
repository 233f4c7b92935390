"""The docker tier: the launcher's image and sshd pieces against the host's real engine."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import docker
import pytest
from docker.errors import DockerException


@pytest.fixture(scope="session")
def client(testbed: None) -> Iterator[docker.DockerClient]:
    """The host engine, with debian:bookworm and the example images (testbed up made them)."""
    c = docker.from_env(timeout=600)
    yield c
    c.close()


def build(
    client: docker.DockerClient, tag: str, dockerfile: str, files: Mapping[str, Path] = {}
) -> str:
    """Builds dockerfile as tag, with files (name in the context: host path) as its
    context, and returns the image ID."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        text = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
        for name, path in files.items():
            tar.add(path, arcname=name)
    context.seek(0)
    image, _ = client.images.build(
        fileobj=context, custom_context=True, tag=tag, rm=True, network_mode="none"
    )
    return str(image.id)


DEBIAN = "debian:bookworm"


def engine_ready() -> bool:
    try:
        c = docker.from_env(timeout=10)
    except DockerException:
        return False
    try:
        c.images.get(DEBIAN)
    except DockerException:
        return False
    finally:
        c.close()
    return True


@pytest.fixture(scope="module")
def engine(request: pytest.FixtureRequest) -> Iterator[docker.DockerClient]:
    """The host engine with debian:bookworm; the testbed is brought up only if they lack."""
    if not engine_ready():
        request.getfixturevalue("testbed")
    c = docker.from_env(timeout=600)
    yield c
    c.close()
