"""`mpidock images [prune]` against the host's real engine, on images these tests build.

Prune is driven through cache.prune on this module's own rows only: the engine may hold
other people's images, which a real `mpidock images prune` here would remove.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import NotFound

from launcher import cache
from launcher.cli import main
from launcher.images import REPO
from tests.docker.conftest import DEBIAN, build

PAD = 100_000  # bytes of a personalized image's own layer


@pytest.fixture
def made(engine: docker.DockerClient) -> Iterator[list[str]]:
    """Tags and container names a test made; removed after it, containers first."""
    names: list[str] = []
    yield names
    for name in reversed(names):
        with contextlib.suppress(NotFound):
            if ":" in name:
                engine.images.remove(name, force=True)
            else:
                engine.containers.get(name).remove(force=True)


def base(engine: docker.DockerClient, made: list[str]) -> str:
    """A base tagged as mpidock tags the bases it loads; its image ID."""
    made.append(f"{cache.BASE_REPO}:test-{uuid.uuid4().hex[:12]}")
    return build(engine, made[-1], f'FROM {DEBIAN}\nLABEL nonce="{made[-1]}"\n')


def personal(engine: docker.DockerClient, made: list[str], base_id: str) -> str:
    """A personalized image over base_id, its own layer PAD bytes; its tag."""
    made.append(f"{REPO}:test-{uuid.uuid4().hex[:12]}")
    build(engine, made[-1], (
        f"FROM {base_id}\n"
        f'RUN ["/bin/dd", "if=/dev/zero", "of=/pad", "bs={PAD}", "count=1"]\n'
        f'LABEL org.mpidock.personal.base="{base_id}" org.mpidock.personal.user="Tëst User"\n'
    ))  # fmt: skip
    return made[-1]


def mine(engine: docker.DockerClient, made: list[str]) -> dict[str, cache.Row]:
    return {r.name: r for r in cache.list_images(engine) if r.name in made}


def test_lists_personal_and_base_with_user_own_size_and_last_use(
    engine: docker.DockerClient, made: list[str]
) -> None:
    before = time.time() - 1
    base_id = base(engine, made)
    tag = personal(engine, made, base_id)
    rows = mine(engine, made)
    assert [(r.kind, r.user, r.base) for r in rows.values()] == [
        ("personal", "Tëst User", base_id), ("base", "-", "")
    ]  # fmt: skip
    assert PAD <= rows[tag].size < PAD + 10_000
    assert rows[made[0]].size == engine.images.get(base_id).attrs["Size"]
    assert before < rows[made[0]].last_use == rows[tag].last_use < time.time() + 1


def test_using_an_image_again_renews_its_last_use(
    engine: docker.DockerClient, made: list[str]
) -> None:
    tag = personal(engine, made, engine.images.get(DEBIAN).id)
    first = mine(engine, made)[tag].last_use
    time.sleep(0.05)
    engine.images.get(tag).tag(*tag.split(":"))  # as a job does when it uses the image
    assert mine(engine, made)[tag].last_use > first


def test_prune_by_age_removes_personal_then_base(
    engine: docker.DockerClient, made: list[str]
) -> None:
    tag = personal(engine, made, base(engine, made))
    now = time.time()
    rows = list(mine(engine, made).values())
    assert cache.stale(rows, cache.parse_duration("1w"), now) == []
    remove = cache.remover(engine, now, now, dry_run=False)
    outcomes = cache.prune(cache.stale(rows, cache.parse_duration("0s"), now), remove)
    assert [(o.row.kind, o.status) for o in outcomes] == [
        ("personal", "removed"),
        ("base", "removed"),
    ]
    assert PAD <= outcomes[0].freed < PAD + 10_000
    assert mine(engine, made) == {}
    with pytest.raises(NotFound):
        engine.images.get(tag)


def test_an_image_a_container_uses_is_kept_in_use_with_its_base(
    engine: docker.DockerClient, made: list[str]
) -> None:
    tag = personal(engine, made, base(engine, made))
    made.append(f"mpidock-test-cache-{uuid.uuid4().hex[:8]}")
    engine.containers.run(tag, ["sleep", "300"], name=made[-1], detach=True, network_mode="none")
    now = time.time()
    rows = cache.stale(mine(engine, made).values(), 0, now)
    outcomes = cache.prune(rows, cache.remover(engine, now, now, dry_run=False))
    assert [(o.status, o.freed) for o in outcomes] == [("in use", 0), ("kept", 0)]
    assert "container" in outcomes[0].detail
    assert set(mine(engine, made)) == set(made[:2])


def test_a_tag_other_tags_share_is_only_untagged(
    engine: docker.DockerClient, made: list[str]
) -> None:
    tag = personal(engine, made, engine.images.get(DEBIAN).id)
    made.append(f"mpidock-test/cache-alias:{uuid.uuid4().hex[:8]}")
    engine.images.get(tag).tag(*made[-1].split(":"))
    now = time.time()
    (outcome,) = cache.prune(
        [mine(engine, made)[tag]], cache.remover(engine, now, now, dry_run=False)
    )
    assert (outcome.status, outcome.freed) == ("untagged", 0)
    engine.images.get(made[-1])


def test_cli_lists_this_node_and_the_store(
    engine: docker.DockerClient, made: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tag = personal(engine, made, engine.images.get(DEBIAN).id)
    archive = tmp_path / f"{'c' * 64}.tar"
    archive.write_bytes(b"x" * 2000)
    os.utime(archive, (315532800, 315532800))  # 1980: unused for longer than 1000w
    assert main(["images", "--image-store", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["store"] == str(tmp_path)
    kinds = {r["name"]: r["kind"] for r in data["rows"]}
    assert (kinds[tag], kinds[archive.name]) == ("personal", "archive")
    assert main(["images", "--image-store", str(tmp_path)]) == 0
    assert tag in capsys.readouterr().out
    argv = ["images", "prune", "--older-than", "1000w", "--dry-run", "--image-store", str(tmp_path)]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        f"would remove  archive  {archive.name}  2.0 kB",
        "total: 1 would be removed, 2.0 kB would be freed",
    ]
    assert archive.exists()
