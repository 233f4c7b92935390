"""The shared image store: one `docker save` archive per image ID, written once, atomically.

Layout of the store directory (on the shared filesystem, the same path on every node):
    <hex>.tar      the image saved by ID (no tags); readers only ever see whole files
    <hex>.json     {"image": name, "id": "sha256:<hex>", "bytes": n, "saved": unix time}
    <hex>.mpi      the image's `mpirun --version`, so later jobs need not ask the image
    .<hex>.lock    taken with flock by the one writer; others wait, then find the archive
    .<hex>.tar.<host>.<pid>.partial   a write in progress, renamed into place when whole

A reader touches the archive's mtime, which is its last use for `mpidock images prune`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import ImageError

CHUNK = 8 << 20


@dataclass(frozen=True)
class Archive:
    """One saved image in the store."""

    path: Path
    image: str
    image_id: str
    size: int


def hex_of(image_id: str) -> str:
    return image_id.split(":")[-1]


class ImageStore:
    """The store at `root`; created on first write, readable by every node."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def archive_path(self, image_id: str) -> Path:
        return self.root / f"{hex_of(image_id)}.tar"

    def meta_path(self, image_id: str) -> Path:
        return self.root / f"{hex_of(image_id)}.json"

    def find(self, image_id: str) -> Archive | None:
        path = self.archive_path(image_id)
        try:
            size = path.stat().st_size
        except OSError:
            return None
        meta = _read_meta(self.meta_path(image_id))
        return Archive(path, str(meta.get("image", "")), image_id, size)

    def find_by_name(self, image: str) -> Archive | None:
        """The newest archive saved under this image name, if any."""
        best: tuple[float, str] | None = None
        for meta_path in self.root.glob("[0-9a-f]*.json"):
            meta = _read_meta(meta_path)
            if meta.get("image") == image and self.archive_path(str(meta.get("id", "x"))).exists():
                saved = _number(meta.get("saved"))
                if best is None or saved > best[0]:
                    best = (saved, str(meta["id"]))
        return self.find(best[1]) if best else None

    def recall(self, image_id: str, kind: str) -> str | None:
        """A fact noted about an image ID earlier (such as its `mpirun --version`)."""
        try:
            return (self.root / f"{hex_of(image_id)}.{kind}").read_text()
        except OSError:
            return None

    def note(self, image_id: str, kind: str, text: str) -> None:
        """Notes a fact about an image ID; a store that cannot be written is no error."""
        with contextlib.suppress(OSError):
            self.root.mkdir(parents=True, exist_ok=True)
            _write_text(self.root / f"{hex_of(image_id)}.{kind}", text)

    def touch(self, archive: Archive) -> None:
        with contextlib.suppress(OSError):  # a read-only store still serves loads
            os.utime(archive.path)

    def write(self, image: str, image_id: str, chunks: Iterable[bytes]) -> tuple[Archive, bool]:
        """Saves the chunks as the archive of image_id unless it is already there.

        Returns the archive and whether this call wrote it. Concurrent writers on any
        node are serialized by a lock; a reader never sees a partial file because the
        archive appears by rename only when complete.
        """
        self._make_root()
        with self._lock(image_id):
            if found := self.find(image_id):
                return found, False
            partial = (
                self.root / f".{hex_of(image_id)}.tar.{socket.gethostname()}.{os.getpid()}.partial"
            )
            try:
                size = _write_chunks(partial, chunks)
                meta = {"image": image, "id": image_id, "bytes": size, "saved": time.time()}
                _write_text(self.meta_path(image_id), json.dumps(meta, sort_keys=True) + "\n")
                partial.replace(self.archive_path(image_id))
            except OSError as e:  # a full or over-quota store; workers wait on our answer
                raise ImageError(
                    f"cannot write {self.archive_path(image_id)}: {e.strerror or e}",
                    hint="free space in --image-store or set it to a directory with room",
                ) from e
            finally:
                partial.unlink(missing_ok=True)
        return Archive(self.archive_path(image_id), image, image_id, size), True

    def _make_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ImageError(
                f"cannot create the image store {self.root}: {e.strerror}",
                hint="set --image-store to a directory on the shared filesystem you can write",
            ) from e

    @contextlib.contextmanager
    def _lock(self, image_id: str) -> Iterator[None]:
        path = self.root / f".{hex_of(image_id)}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ImageError(
                f"cannot write the image store {self.root}: {e.strerror}",
                hint="set --image-store to a directory on the shared filesystem you can write",
            ) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _write_chunks(path: Path, chunks: Iterable[bytes]) -> int:
    size = 0
    with open(path, "wb") as out:
        for chunk in chunks:
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(path, 0o644)
    return size


def _write_text(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_text(text)
        os.chmod(partial, 0o644)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def _number(value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        return 0.0


def _read_meta(path: Path) -> dict[str, object]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def read_chunks(path: Path, size: int = CHUNK) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk
