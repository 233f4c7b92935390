"""Real `docker save` archives against the load check: a save by ID loads, an archive that
carries a tag or another image is refused before the engine sees it, and no tag moves."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import NotFound

from launcher import movement
from launcher.archive_check import BadArchive
from launcher.store import Archive, ImageStore
from tests.docker.conftest import DEBIAN, build


@pytest.fixture(scope="module")
def images(engine: docker.DockerClient) -> Iterator[dict[str, str]]:
    """Two small images (configs differ by a label, no layer of their own) and a name that
    points at the first: what a poisoned archive would re-point at the second."""
    run = uuid.uuid4().hex[:8]
    tags = {
        "victim": f"mpidock-test-victim:{run}",
        "poison": f"mpidock-test-poison:{run}",
    }
    made = {
        name: build(engine, tag, f"FROM {DEBIAN}\nLABEL org.mpidock.test={name}-{run}\n")
        for name, tag in tags.items()
    }
    yield {**made, **{f"{name}_tag": tag for name, tag in tags.items()}}
    bases = [f"{movement.BASE_REPO}:{made[name].split(':')[1][:12]}" for name in tags]
    for tag in [*tags.values(), *bases]:  # a load tags its image's base name too
        with contextlib.suppress(NotFound):
            engine.images.remove(tag, force=True)


def save(engine: docker.DockerClient, ref: str, path: Path) -> Path:
    """`docker save ref` into path: by ID without tags, by name with its tag."""
    with open(path, "wb") as out:
        for chunk in engine.api.get_image(ref):
            out.write(chunk)
    path.chmod(0o600)
    return path


def archive_of(path: Path, image_id: str) -> Archive:
    return Archive(path, "", image_id, path.stat().st_size)


def test_a_save_by_id_passes_the_check_and_loads(
    engine: docker.DockerClient, images: dict[str, str], tmp_path: Path
) -> None:
    store = ImageStore(tmp_path)
    with open(save(engine, images["victim"], tmp_path / "by-id.tar"), "rb") as f:
        archive, _ = store.write("victim", images["victim"], iter(lambda: f.read(1 << 20), b""))
    said: list[str] = []
    moved = movement.load(engine, archive, "host", said.append)
    assert (moved.path, moved.bytes) == ("archive", archive.size)


def test_an_archive_with_a_tag_is_refused_and_no_name_moves(
    engine: docker.DockerClient, images: dict[str, str], tmp_path: Path
) -> None:
    # The poison image saved under the victim's name: loading it would re-point that name
    # at the poison for every user of the engine.
    engine.api.tag(images["poison"], images["victim_tag"].split(":")[0], "poisoned")
    poisoned = images["victim_tag"].split(":")[0] + ":poisoned"
    try:
        path = save(engine, poisoned, tmp_path / "tagged.tar")
        engine.images.remove(poisoned)
        engine.api.tag(images["victim"], poisoned.split(":")[0], "poisoned")  # the name now
        with pytest.raises(BadArchive) as info:
            movement.load(engine, archive_of(path, images["poison"]), "host", print)
        assert f"would tag {poisoned} on this node for every user" in info.value.message
        assert engine.images.get(poisoned).id == images["victim"]
    finally:
        with contextlib.suppress(NotFound):
            engine.images.remove(poisoned)


def test_an_archive_of_another_image_is_refused(
    engine: docker.DockerClient, images: dict[str, str], tmp_path: Path
) -> None:
    path = save(engine, images["poison"], tmp_path / "other.tar")
    with pytest.raises(BadArchive) as info:
        movement.load(engine, archive_of(path, images["victim"]), "host", print)
    assert f"it holds image {images['poison']}, not {images['victim']}" in info.value.message
    assert info.value.node == "host"
