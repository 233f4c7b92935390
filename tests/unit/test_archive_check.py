"""The check of a `docker save` archive before `docker load`, on tars built here."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launcher.archive_check import BadArchive, check_archive

CONFIG = json.dumps({"architecture": "amd64", "rootfs": {"type": "layers"}}).encode()
OTHER = json.dumps({"architecture": "arm64", "rootfs": {"type": "layers"}}).encode()
ID = "sha256:" + hashlib.sha256(CONFIG).hexdigest()
OTHER_ID = "sha256:" + hashlib.sha256(OTHER).hexdigest()
HEX = ID.split(":")[1]


def member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def manifest(tags: Any = None, config: str = f"{HEX}.json", count: int = 1) -> bytes:
    entry = {"Config": config, "RepoTags": tags, "Layers": ["l1/layer.tar"]}
    return json.dumps([entry] * count).encode()


def index(annotations: dict[str, str] | None = None, count: int = 1) -> bytes:
    entry: dict[str, Any] = {"digest": "sha256:" + "e" * 64, "size": 1}
    if annotations:
        entry["annotations"] = annotations
    return json.dumps({"schemaVersion": 2, "manifests": [entry] * count}).encode()


OCI_MANIFEST = json.dumps({"config": {"digest": ID}, "layers": []}).encode()


def archive(*members: tuple[str, bytes]) -> io.BytesIO:
    """A tar of the members in order; a plain docker save of ID when none are given."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        member(tar, "l1/layer.tar", b"layer bytes")
        for name, data in members or ((f"{HEX}.json", CONFIG), ("manifest.json", manifest())):
            member(tar, name, data)
    out.seek(0)
    return out


def plain(**changes: bytes) -> io.BytesIO:
    parts = {f"{HEX}.json": CONFIG, "manifest.json": manifest(), **changes}
    return archive(*parts.items())


def test_a_plain_save_by_id_passes_and_is_left_at_its_start() -> None:
    f = archive()
    f.seek(100)
    check_archive(f, ID, "x.tar")
    assert f.tell() == 0


def test_an_oci_layout_with_one_unnamed_image_passes() -> None:
    blob = "blobs/sha256/" + "e" * 64
    check_archive(plain(**{"index.json": index(), blob: OCI_MANIFEST}), ID, "x.tar")


Case = Callable[[], io.BytesIO]
CASES: list[tuple[str, Case, str]] = [
    ("tags", lambda: plain(**{"manifest.json": manifest(["mpidock/openmpi:latest"])}),
     "would tag mpidock/openmpi:latest on this node for every user"),
    ("two images", lambda: plain(**{"manifest.json": manifest(count=2)}),
     "does not describe exactly one image"),
    ("no images", lambda: plain(**{"manifest.json": b"[]"}), "does not describe exactly one"),
    ("other config", lambda: plain(**{f"{HEX}.json": OTHER}), f"holds image {OTHER_ID}, not {ID}"),
    ("no manifest", lambda: archive((f"{HEX}.json", CONFIG)), "it has no manifest.json"),
    ("config missing", lambda: archive(("manifest.json", manifest())), "0 copies of"),
    ("bad json", lambda: plain(**{"manifest.json": b"{"}), "its manifest.json is not JSON"),
    ("two manifests", lambda: archive(
        ("manifest.json", manifest()), (f"{HEX}.json", CONFIG), ("./manifest.json", manifest())),
     "2 copies of manifest.json"),
    ("named index", lambda: plain(**{
        "index.json": index({"io.containerd.image.name": "docker.io/library/debian:bookworm"}),
        "blobs/sha256/" + "e" * 64: OCI_MANIFEST}),
     "would tag docker.io/library/debian:bookworm"),
    ("index of two", lambda: plain(**{"index.json": index(count=2)}), "exactly one image"),
    ("index elsewhere", lambda: plain(**{
        "index.json": index(),
        "blobs/sha256/" + "e" * 64: json.dumps({"config": {"digest": OTHER_ID}}).encode()}),
     "its index.json points at another image"),
    ("not a tar", lambda: io.BytesIO(b"x" * 2048), "is not a docker save archive"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "said"), CASES, ids=[c[0] for c in CASES])
def test_an_archive_that_is_not_exactly_the_image_untagged_is_refused(
    case: str, make: Case, said: str
) -> None:
    with pytest.raises(BadArchive) as info:
        check_archive(make(), ID, "/store/x.tar")
    assert said in info.value.message
    assert info.value.message.startswith("refusing to load /store/x.tar: ")
    assert "remove /store/x.tar" in info.value.hint


def test_a_manifest_that_is_a_link_to_another_member_is_refused() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        member(tar, f"{HEX}.json", CONFIG)
        member(tar, "real.json", manifest())
        link = tarfile.TarInfo("manifest.json")
        link.type, link.linkname = tarfile.SYMTYPE, "real.json"
        tar.addfile(link)
    out.seek(0)
    with pytest.raises(BadArchive, match=r"its manifest\.json is not a regular file"):
        check_archive(out, ID, "x.tar")


def test_a_real_file_is_checked_the_same(tmp_path: Path) -> None:
    path = tmp_path / "x.tar"
    path.write_bytes(plain(**{"manifest.json": manifest(["lab/cfd:2.1"])}).getvalue())
    with open(path, "rb") as f, pytest.raises(BadArchive, match=r"would tag lab/cfd:2\.1"):
        check_archive(f, ID, str(path))
