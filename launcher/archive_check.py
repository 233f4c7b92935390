"""What a `docker save` archive would do to a node, checked before `docker load` runs.

`docker load` trusts the archive: every name in its manifest.json `RepoTags` (or, in the
OCI layout, its index.json name annotations) is tagged on the node for every user, and
the image it creates is whatever config the archive holds. So before loading, the archive
must hold exactly one image, whose config hashes to the wanted ID, under no name at all.
The engine itself checks each layer against the config's diff IDs while loading, so a
config of the right digest pins the whole image.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from typing import Any, BinaryIO

from launcher.errors import ImageError

MANIFEST = "manifest.json"
INDEX = "index.json"
META_LIMIT = 16 << 20  # manifests and configs are kilobytes; refuse absurd ones unread
# Annotations through which the OCI layout names (tags) an image on load.
NAME_KEYS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


class BadArchive(ImageError):
    """An archive that is not exactly the one image wanted, untagged."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(
            f"refusing to load {path}: {why}",
            hint=f"remove {path} and its .json; the next job saves the image again",
        )


def check_archive(archive: BinaryIO, image_id: str, path: str) -> None:
    """Raises BadArchive unless the tar holds exactly image_id, with no tags.

    The file is read from its start and left at its start, ready to be streamed.
    """
    archive.seek(0)
    try:
        with tarfile.open(fileobj=archive, mode="r:") as tar:
            _check(tar, image_id)
    except (tarfile.TarError, EOFError) as e:
        raise BadArchive(path, f"it is not a docker save archive ({e})") from e
    except _Wrong as e:
        raise BadArchive(path, str(e)) from e
    finally:
        archive.seek(0)


class _Wrong(Exception):
    """What is wrong with the archive, in words."""


def _check(tar: tarfile.TarFile, image_id: str) -> None:
    members = _by_name(tar)
    if MANIFEST not in members:
        raise _Wrong(f"it has no {MANIFEST}")
    manifest = _json(tar, members, MANIFEST)
    if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
        raise _Wrong(f"its {MANIFEST} does not describe exactly one image")
    entry: dict[str, Any] = manifest[0]
    if tags := entry.get("RepoTags"):
        raise _Wrong(f"it would tag {', '.join(map(str, tags))} on this node for every user")
    config = entry.get("Config")
    if not isinstance(config, str):
        raise _Wrong(f"its {MANIFEST} names no image config")
    found = "sha256:" + hashlib.sha256(_read(tar, members, config)).hexdigest()
    if found != image_id:
        raise _Wrong(f"it holds image {found}, not {image_id}")
    if INDEX in members:
        _check_index(tar, members, image_id)


def _check_index(
    tar: tarfile.TarFile, members: dict[str, list[tarfile.TarInfo]], image_id: str
) -> None:
    """The OCI layout's index: one manifest, unnamed, whose config is the wanted one."""
    index = _json(tar, members, INDEX)
    listed = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(listed, list) or len(listed) != 1 or not isinstance(listed[0], dict):
        raise _Wrong(f"its {INDEX} does not list exactly one image")
    notes = listed[0].get("annotations") or {}
    if names := [str(notes[k]) for k in NAME_KEYS if isinstance(notes, dict) and k in notes]:
        raise _Wrong(f"it would tag {', '.join(names)} on this node for every user")
    algorithm, _, digest = str(listed[0].get("digest", "")).partition(":")
    manifest = _json(tar, members, f"blobs/{algorithm}/{digest}")
    config = manifest.get("config") if isinstance(manifest, dict) else None
    if not isinstance(config, dict) or config.get("digest") != image_id:
        raise _Wrong(f"its {INDEX} points at another image than {image_id}")


def _by_name(tar: tarfile.TarFile) -> dict[str, list[tarfile.TarInfo]]:
    """Members by the name the engine extracts them to (cleaned, relative)."""
    members: dict[str, list[tarfile.TarInfo]] = {}
    for info in tar:
        members.setdefault(_clean(info.name), []).append(info)
    return members


def _clean(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


def _read(tar: tarfile.TarFile, members: dict[str, list[tarfile.TarInfo]], name: str) -> bytes:
    """One member's bytes: it must be there once, as a regular file of sane size."""
    found = members.get(_clean(name), [])
    if len(found) != 1:
        raise _Wrong(f"it holds {len(found)} copies of {name}, not one")
    (info,) = found
    if not info.isreg():
        raise _Wrong(f"its {name} is not a regular file")
    if info.size > META_LIMIT:
        raise _Wrong(f"its {name} is {info.size} bytes, too large for image metadata")
    data = tar.extractfile(info)
    assert data is not None  # a regular member always has data
    return data.read()


def _json(tar: tarfile.TarFile, members: dict[str, list[tarfile.TarInfo]], name: str) -> Any:
    try:
        return json.loads(_read(tar, members, name))
    except ValueError as e:
        raise _Wrong(f"its {name} is not JSON") from e
