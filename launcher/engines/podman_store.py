"""Rootless Podman's shared read-only image store: every node reads an image in place.

One store per user (`podman_image_store`, on the shared filesystem, the same path on every
node; `{user}` and `{uid}` are filled in). Its layout:
    <hex>/                    one entry: a whole containers-storage root (overlay driver)
                              holding the base image sha256:<hex> under the job's name,
                              the user's personalized image over it, and that image's top
                              layer mapped for --userns=keep-id: a node's container then
                              finds every layer it needs here and copies none
    <hex>/mpidock-entry.json  what the entry holds; written before the entry is renamed
                              into place, so an entry without it was never whole
    .staging-<host>-<pid>/    a fill under way, renamed to <hex> when whole
    .fill-<key>.lock          one filler of an image name at a time (storefiles.locked)

Each node's Podman service lists the entries as additional image stores
(`overlay.imagestore`), which Podman opens read-only.

Trust: Podman mounts an entry's layers as the lower directories of the user's containers
and believes its metadata, so whoever may write into the store decides what the user's
job runs. A store is therefore one user's own: the store directory and every directory
above it belong to the user or root, the store and its entries are writable by their
owner alone (checked with lstat, a symlink refused), and the parents are not writable
by others unless sticky (like /tmp). Anything else stops the job with one line naming the
path and its owner; nothing in it is read. A second user cannot plant an entry: the store
is made 0700.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from launcher import storefiles
from launcher.errors import ImageError
from launcher.storefiles import Untrusted

META = "mpidock-entry.json"
DRIVER = "overlay"
# What every whole entry holds, made by Podman itself: checked like the entry.
DRIVER_DIRS = (DRIVER, f"{DRIVER}-images", f"{DRIVER}-layers")
HEX = re.compile(r"[0-9a-f]{64}")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One whole image in the store."""

    path: Path
    image: str
    image_id: str
    personal: str
    bytes: int = 0

    def holds(self, ref: str) -> bool:
        """ref names this entry's base (name or ID) or its personalized image."""
        names = {self.image, self.image_id, self.image_id.removeprefix("sha256:"), self.personal}
        return ref in names or ref in {f"localhost/{n}" for n in names}


def store_path(template: str, uid: int, user: str) -> Path:
    """The user's store: `{user}` and `{uid}` filled in; a template without either gets
    the user's name appended, since users must never share one store.

    Raises:
        ImageError: not an absolute path, or one Podman's option syntax cannot carry.
    """
    if "{user}" not in template and "{uid}" not in template:
        template = template.rstrip("/") + "/{user}"
    path = Path(template.replace("{uid}", str(uid)).replace("{user}", user))
    if not path.is_absolute() or "," in str(path) or "=" in str(path):
        raise ImageError(
            f"podman_image_store {path} is not an absolute path without ',' or '='",
            hint="set podman_image_store to a directory on the shared filesystem, "
            "e.g. /shared/mpidock/podman-store/{user}",
        )
    return path


def open_store(path: Path, uid: int, *, create: bool) -> bool:
    """Checks the store and every directory above it; True when the store exists
    (made 0700 first when `create`).

    Raises:
        Untrusted: a directory on the way, or the store, is not trustworthy (named).
        ImageError: the store cannot be made.
    """
    trusted = {uid, 0}
    with _hinted():
        for parent in reversed(path.parents):
            _check_parent(parent, trusted)
        try:
            os.lstat(path)
        except FileNotFoundError:
            if not create:
                return False
            _make(path)
        storefiles.check_dir(path, trusted)
    return True


@contextlib.contextmanager
def _hinted() -> Iterator[None]:
    """A refusal's hint for this store, not the archive store's."""
    try:
        yield
    except Untrusted as e:
        e.hint = (
            f"only you or root may write where your podman image store is: have {e.path} "
            "removed (tell your admins if you did not make it), or set podman_image_store "
            "elsewhere"
        )
        raise


def _check_parent(path: Path, trusted: set[int]) -> None:
    """Owned by the user or root, and nobody else may rename what is in it (not
    writable by others, or sticky)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return  # made below by the user: checked as it is made
    why = storefiles.refusal(st, trusted, "directory")
    if why.startswith("it is writable by others") and st.st_mode & stat.S_ISVTX:
        return
    if why:
        raise Untrusted(path, why)


def _make(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass  # another node's fill made it: checked like any
    except OSError as e:
        raise ImageError(
            f"cannot make the podman image store {path}: {e.strerror}",
            hint="set podman_image_store to a shared directory you may write, or ask for one",
        ) from e


def entries(store: Path, uid: int) -> list[Entry]:
    """The whole entries of the store, each checked as the store is.

    Raises:
        Untrusted: an entry, a directory Podman reads in it, or its note is not the
            user's or root's own (named).
    """
    found = []
    try:
        names = sorted(os.listdir(store))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ImageError(f"cannot read the podman image store {store}: {e.strerror}") from e
    with _hinted():
        for name in names:
            if HEX.fullmatch(name) and (entry := read_entry(store / name, uid)):
                found.append(entry)
    return found


def read_entry(path: Path, uid: int) -> Entry | None:
    """The entry at path; None while it is not whole (no note, or a note of another ID)."""
    trusted = {uid, 0}
    storefiles.check_dir(path, trusted)
    text = storefiles.read_trusted(path / META, trusted)
    if text is None:
        return None
    for name in DRIVER_DIRS:
        storefiles.check_dir(path / name, trusted)
    try:
        meta = json.loads(text)
    except ValueError:
        return None
    if not isinstance(meta, dict) or meta.get("id") != f"sha256:{path.name}":
        return None
    return Entry(
        path, str(meta.get("image", "")), str(meta["id"]), str(meta.get("personal", "")),
        _count(meta.get("bytes")),
    )  # fmt: skip


def find(found: Sequence[Entry], ref: str) -> Entry | None:
    return next((e for e in found if e.holds(ref)), None)


def _count(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0
