"""The shared image store: one `docker save` archive per image ID, written once, atomically.

Layout of a store directory (on the shared filesystem, the same path on every node):
    <hex>.tar      the image saved by ID (no tags); readers only ever see whole files
    <hex>.json     {"image": name, "id": "sha256:<hex>", "bytes": n, "saved": unix time}
    <hex>.mpi      the image's `mpirun --version`, so later jobs need not ask the image
    .<hex>.lock    taken with flock by the one writer; others wait (with a deadline), then
                   find the archive; `.<hex>.lock.excl` is the lock where flock fails
    .<hex>.tar.<host>.<pid>.partial   a write in progress, renamed into place when whole

Whose files are trusted, and who writes where:
- A private store is a directory the user owns (the default, ~/.mpidock/images). Only
  the user's own files in it are trusted. mpidock creates it 0700; files are created 0600,
  or 0644 at most (less the umask) where the user has opened the directory to group or
  others: the directory's mode says who may read the archives.
- A shared store is a directory owned by someone else, its configured owner: root or the
  site account that publishes images there. Files at its top are trusted when they are
  the owner's (published for everyone) or the user's own. Each user saves into an own
  area `uid-<UID>/` in it (0700, files 0600): one user never reads another user's files,
  nobody can block another's save, and locks are per user, so each user's saves are
  separate. A site makes such a store with mode 1777 (sticky: nobody removes or renames
  another's area) or 2775 for one group. An area that is not the user's own real,
  private directory is refused by name. Whoever owns the store's directory can replace
  anything in it anyway, so trusting that owner adds nothing: point the store only at
  directories whose owner you trust.

Every file read is checked with lstat and fstat (launcher.storefiles): a regular file, of
a trusted owner, writable by that owner alone; a symlink or FIFO planted in its place is
refused by name, never followed or blocked on. Image IDs are `sha256:` and 64 hex digits
before any path is built from them. An archive's manifest is checked before it is loaded
(launcher.archive_check). A reader touches the archive's mtime, its last use for
`mpidock images prune`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from launcher import archive_check, storefiles
from launcher.errors import ImageError
from launcher.storefiles import Flock, Untrusted

log = logging.getLogger(__name__)
CHUNK = 8 << 20
ID = re.compile(r"sha256:[0-9a-f]{64}")
LOCK_TIMEOUT = 3600.0  # another writer saving the same image: as long as a move may take
Warn = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Archive:
    """One saved image in the store; `owners` are the UIDs its file may belong to."""

    path: Path
    image: str
    image_id: str
    size: int
    owners: frozenset[int] = dataclasses.field(default=frozenset(), compare=False)


def hex_of(image_id: str) -> str:
    """The 64 hex digits of an image ID; anything else is refused before it names a path."""
    if not ID.fullmatch(image_id):
        raise ImageError(
            f"bad image ID {image_id!r}: expected sha256: and 64 hex digits",
            hint="the job's image.json or a store file is damaged or planted; start the job again",
        )
    return image_id[len("sha256:") :]


def area_name(uid: int) -> str:
    """A user's own area in a shared store."""
    return f"uid-{uid}"


class ImageStore:
    """The store at `root`; created on first write, readable by every node.

    Args:
        root: the store directory.
        warn: told of each store file refused (default: the log).
        flock: the lock call, replaceable where a test stands in for a filesystem
            without flock.
    """

    def __init__(
        self, root: str | Path, warn: Warn | None = None, flock: Flock | None = None
    ) -> None:
        self.root = Path(root)
        self.uid = os.geteuid()
        self.said: Warn = log.warning if warn is None else warn
        self.warned: set[str] = set()
        self.flock: Flock = flock or fcntl.flock

    def warn(self, text: str) -> None:
        """Says each refusal once, however often a waiting reader looks again."""
        if text not in self.warned:
            self.warned.add(text)
            self.said(text)

    @property
    def owner(self) -> int:
        """The UID owning the store's directory; the user's own while it does not exist."""
        try:
            return self.root.stat().st_uid
        except OSError:
            return self.uid

    @property
    def area(self) -> Path:
        """Where this user writes: the store itself when it is the user's, else an own area."""
        owner = self.owner
        return self.root if owner == self.uid else self.root / area_name(self.uid)

    def archive_path(self, image_id: str) -> Path:
        return self.area / f"{hex_of(image_id)}.tar"

    def meta_path(self, image_id: str) -> Path:
        return self.area / f"{hex_of(image_id)}.json"

    def places(self) -> list[tuple[Path, frozenset[int]]]:
        """Directories to read from, each with the owners trusted there, own area first."""
        owner = self.owner
        if owner == self.uid:
            return [(self.root, frozenset({self.uid}))]
        found = [(self.root, frozenset({self.uid, owner}))]
        area = self.root / area_name(self.uid)
        try:
            storefiles.check_dir(area, {self.uid})
        except FileNotFoundError:
            return found
        except Untrusted as e:
            self.warn(f"ignoring {area}: {e.why}")
            return found
        return [(area, frozenset({self.uid})), *found]

    def find(self, image_id: str) -> Archive | None:
        hexid = hex_of(image_id)
        for where, owners in self.places():
            if found := self._archive_in(where, hexid, image_id, owners):
                return found
        return None

    def _archive_in(
        self, where: Path, hexid: str, image_id: str, owners: frozenset[int]
    ) -> Archive | None:
        path = where / f"{hexid}.tar"
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if why := storefiles.refusal(st, owners):
            self.warn(f"ignoring {path}: {why}")
            return None
        meta = self._meta(where / f"{hexid}.json", owners)
        image = str(meta.get("image", "")) if meta.get("id") == image_id else ""
        return Archive(path, image, image_id, st.st_size, owners)

    def find_by_name(self, image: str) -> Archive | None:
        """The newest archive saved under this image name, if any."""
        best: tuple[float, str] | None = None
        for where, owners in self.places():
            for meta_path in sorted(where.glob("[0-9a-f]*.json")):
                meta = self._meta(meta_path, owners, quiet=True)
                image_id = str(meta.get("id", ""))
                if meta.get("image") != image or image_id != f"sha256:{meta_path.stem}":
                    continue  # another image's, or a note renamed to claim another ID
                saved = _number(meta.get("saved"))
                if (best is None or saved > best[0]) and self.find(image_id):
                    best = (saved, image_id)
        return self.find(best[1]) if best else None

    def recall(self, image_id: str, kind: str) -> str | None:
        """A fact noted about an image ID earlier (such as its `mpirun --version`)."""
        hexid = hex_of(image_id)
        for where, owners in self.places():
            try:
                if (text := storefiles.read_trusted(where / f"{hexid}.{kind}", owners)) is not None:
                    return text
            except Untrusted as e:
                self.warn(f"ignoring {e.path}: {e.why}")
        return None

    def note(self, image_id: str, kind: str, text: str) -> None:
        """Notes a fact about an image ID; a store that cannot be written is no error."""
        path = self.area / f"{hex_of(image_id)}.{kind}"
        with contextlib.suppress(OSError, ImageError):
            area = self._make_area()
            storefiles.write_text(path, text, _file_mode(area))

    def touch(self, archive: Archive) -> None:
        with contextlib.suppress(OSError):  # a read-only store still serves loads
            os.utime(archive.path, follow_symlinks=False)

    def write(
        self,
        image: str,
        image_id: str,
        chunks: Iterable[bytes],
        stop: threading.Event | None = None,
        lock_timeout: float = LOCK_TIMEOUT,
    ) -> tuple[Archive, bool]:
        """Saves the chunks as the archive of image_id unless it is already there.

        Returns the archive and whether this call wrote it. Concurrent writers of this
        user on any node are serialized by a lock with a deadline; a reader never sees
        a partial file because the archive appears by rename only when complete.

        Raises:
            ImageError: the store cannot be made or written, a lock outlived its
                deadline, or a file in the way is not the user's own.
            SaveAbandoned: `stop` was set while waiting for the lock.
        """
        hexid = hex_of(image_id)
        area = self._make_area()
        with storefiles.locked(area / f".{hexid}.lock", lock_timeout, stop, self.flock):
            if found := self.find(image_id):
                return found, False
            size = self._write_new(area, image, image_id, chunks)
        return Archive(area / f"{hexid}.tar", image, image_id, size, frozenset({self.uid})), True

    def _write_new(self, area: Path, image: str, image_id: str, chunks: Iterable[bytes]) -> int:
        hexid, mode = hex_of(image_id), _file_mode(area)
        partial = area / f".{hexid}.tar.{socket.gethostname()}.{os.getpid()}.partial"
        target = area / f"{hexid}.tar"
        try:
            partial.unlink(missing_ok=True)  # our own dead attempt: the lock is ours
            size = _write_chunks(partial, _source(chunks), mode)
            meta = {"image": image, "id": image_id, "bytes": size, "saved": time.time()}
            storefiles.write_text(
                area / f"{hexid}.json", json.dumps(meta, sort_keys=True) + "\n", mode
            )
            partial.replace(target)
        except _SourceFailed as e:  # docker's or the caller's error, not the store's
            raise e.error from None
        except OSError as e:  # a full or over-quota store; workers wait on our answer
            raise ImageError(
                f"cannot write {target}: {e.strerror or e}",
                hint="free space in --image-store or set it to a directory with room",
            ) from e
        finally:
            partial.unlink(missing_ok=True)
        return size

    def _make_area(self) -> Path:
        """The user's area, made private if new. In a shared store it must be the user's
        own real, private directory; a private store's directory is the user's to set up."""
        area = self.area
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            if area != self.root:
                area.mkdir(mode=0o700, exist_ok=True)
                storefiles.check_dir(area, {self.uid})
        except OSError as e:
            raise ImageError(
                f"cannot create the image store {area}: {e.strerror}",
                hint="set --image-store to a directory on the shared filesystem you can write",
            ) from e
        return area

    def _meta(self, path: Path, owners: Collection[int], quiet: bool = False) -> dict[str, object]:
        try:
            text = storefiles.read_trusted(path, owners)
        except Untrusted as e:
            if not quiet:
                self.warn(f"ignoring {path}: {e.why}")
            return {}
        try:
            data = json.loads(text or "")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}


def open_archive(archive: Archive) -> BinaryIO:
    """The archive opened for loading, once it is a trusted regular file whose manifest
    holds exactly the wanted image, untagged.

    Raises:
        ImageError: it is gone, not trusted, or not the wanted image alone (named).
    """
    owners = archive.owners or frozenset({os.geteuid()})
    try:
        f = storefiles.open_trusted(archive.path, owners)
    except OSError as e:
        raise ImageError(f"cannot read {archive.path}: {e.strerror}") from e
    try:
        archive_check.check_archive(f, archive.image_id, str(archive.path))
    except BaseException:
        f.close()
        raise
    return f


def _file_mode(area: Path) -> int:
    """0600, plus read for group and others where the directory grants them read."""
    try:
        return 0o600 | (area.stat().st_mode & 0o044)
    except OSError:
        return 0o600


class _SourceFailed(Exception):
    """The chunks' source failed: its error, kept apart from the store's own OSErrors."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _source(chunks: Iterable[bytes]) -> Iterator[bytes]:
    it = iter(chunks)
    while True:
        try:
            chunk = next(it)
        except StopIteration:
            return
        except Exception as e:
            raise _SourceFailed(e) from e
        yield chunk


def _write_chunks(path: Path, chunks: Iterable[bytes], mode: int) -> int:
    size = 0
    with storefiles.create_new(path, mode) as out:
        for chunk in chunks:
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size


def _number(value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        return 0.0


def read_chunks(f: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    while chunk := f.read(size):
        yield chunk
