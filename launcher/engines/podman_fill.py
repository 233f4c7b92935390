"""Filling rootless Podman's shared image store (launcher.engines.podman_store): one
image at a time, in a staging directory renamed into place when whole.

A fill runs the podman CLI on the staging directory as its storage root: the base image
pulled from a registry or loaded from a checked Docker archive, tagged with the name jobs
use, the user's personalized image built over it, and that image's top layer mapped for
--userns=keep-id by creating (and removing) one container. Fills of one image name take
a lock with a deadline; a fill that loses the rename to another of the same ID keeps the
other's entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from launcher import proc, storefiles
from launcher.engines import storage
from launcher.engines.podman_store import (
    DRIVER,
    HEX,
    META,
    Entry,
    entries,
    find,
    open_store,
    read_entry,
)
from launcher.errors import ImageError
from launcher.store import Archive, open_archive

LOCK_TIMEOUT = 3600.0  # another fill of the same image: as long as a pull may take
FILL_NAME = "mpidock-fill"
# Runs one podman command (argv, stdin) and returns its standard output.
Run = Callable[[Sequence[str], BinaryIO | None], str]
Say = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a fill takes the image from: the Docker archive store, else a registry."""

    archive: Archive | None = None
    ref: str = ""

    @property
    def size(self) -> int:
        return self.archive.size if self.archive else 0

    @property
    def kind(self) -> str:
        return "archive" if self.archive else "registry"


@dataclasses.dataclass(frozen=True)
class Podman:
    """The podman CLI as a fill runs it: `base` is podman with its runtime and cgroup
    manager; each call names the storage root it works on."""

    base: tuple[str, ...]
    runroot: Path

    def argv(self, root: Path, *args: str) -> list[str]:
        return [
            *self.base, "--root", str(root), "--runroot", str(self.runroot),
            "--storage-driver", DRIVER, *args,
        ]  # fmt: skip

    def unshare(self, *args: str) -> list[str]:
        """A command inside the user's namespace: what removes layers owned by its IDs."""
        return [self.base[0], "unshare", *args]


@dataclasses.dataclass(frozen=True)
class Personal:
    """The user's personalized image of a base ID: its tag and its Dockerfile."""

    tag: str
    dockerfile: str


def fill(
    store: Path,
    image: str,
    source: Source,
    personal: Callable[[str], Personal],
    podman: Podman,
    run: Run,
    say: Say,
    lock_timeout: float = LOCK_TIMEOUT,
) -> tuple[Entry, bool]:
    """The store's entry of image, filled from source unless it is there; True when this
    call filled it.

    One filler of an image name at a time (a lock with a deadline); the fill works in a
    fresh staging directory that becomes the entry by one rename, so no reader ever sees
    half an entry, and a fill that lost a race to another (same ID) leaves the other's.

    Raises:
        ImageError: a podman step failed, the lock outlived its deadline, or the store
            is not trustworthy (Untrusted).
    """
    uid = os.geteuid()
    open_store(store, uid, create=True)
    key = hashlib.sha256(image.encode()).hexdigest()[:16]
    with storefiles.locked(store / f".fill-{key}.lock", lock_timeout):
        if entry := find(entries(store, uid), image):
            return entry, False
        remove_dead_staging(store, podman, run)
        staging = store / f".staging-{socket.gethostname()}-{os.getpid()}"
        staging.mkdir(mode=0o700)
        try:
            entry = _fill_staging(staging, image, source, personal, podman, run, say)
            return _publish(staging, entry, uid)
        finally:
            if staging.exists():
                remove_tree(staging, podman, run)


def _fill_staging(
    staging: Path,
    image: str,
    source: Source,
    personal: Callable[[str], Personal],
    podman: Podman,
    run: Run,
    say: Say,
) -> Entry:
    started = time.monotonic()
    image_id = _take(staging, source, podman, run)
    run(podman.argv(staging, "tag", image_id, image), None)
    mine = personal(image_id)
    with tempfile.TemporaryDirectory(dir=podman.runroot) as context:
        (Path(context) / "Dockerfile").write_text(mine.dockerfile)
        run(podman.argv(staging, "build", "-q", "--network", "none", "-t", mine.tag, context), None)
    # The personalized image's top layer mapped once for keep-id, here: a node's
    # container finds it in the store instead of making a chowned copy of every layer.
    name = f"{FILL_NAME}-{os.getpid()}"
    keep_id = ("--userns", "keep-id", "--name", name, mine.tag, "true")
    run(podman.argv(staging, "create", *keep_id), None)
    run(podman.argv(staging, "rm", name), None)
    size = source.size or tree_size(staging)
    meta = {"image": image, "id": image_id, "personal": mine.tag, "bytes": size,
            "source": source.kind, "filled": time.time()}  # fmt: skip
    storefiles.write_text(staging / META, json.dumps(meta, sort_keys=True) + "\n", 0o600)
    seconds = time.monotonic() - started
    say(f"filled the podman image store from the {source.kind} in {seconds:.1f} s")
    return Entry(staging, image, image_id, mine.tag, size)


def _take(staging: Path, source: Source, podman: Podman, run: Run) -> str:
    """The base image into staging, by `podman load` of a checked archive or a pull;
    its ID (`sha256:` and hex, checked before any path is built from it)."""
    if source.archive is not None:
        with open_archive(source.archive) as f:  # only a checked archive reaches podman
            run(podman.argv(staging, "load", "-q"), f)
    else:
        run(podman.argv(staging, "pull", "-q", source.ref), None)
    ids = run(podman.argv(staging, "images", "-q", "--no-trunc"), None).split()
    if len(set(ids)) != 1 or not HEX.fullmatch(ids[0].removeprefix("sha256:")):
        raise ImageError(
            f"the fill of {image_from(source)} left {len(set(ids))} images, not one",
            hint="the archive or the registry's image is not one image; check it",
        )
    return "sha256:" + ids[0].removeprefix("sha256:")


def image_from(source: Source) -> str:
    return str(source.archive.path) if source.archive else source.ref


def _publish(staging: Path, entry: Entry, uid: int) -> tuple[Entry, bool]:
    """The staging directory renamed to its entry (True); an entry of the same ID another
    fill published first is kept (False), and ours dropped by the caller."""
    target = staging.parent / entry.image_id.removeprefix("sha256:")
    try:
        staging.rename(target)
    except OSError as e:
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise ImageError(f"cannot publish {target}: {e.strerror}") from e
        if (there := read_entry(target, uid)) is None:
            raise ImageError(
                f"{target} is in the way and not a whole entry",
                hint=f"remove it (podman unshare rm -rf {target}) and import again",
            ) from e
        return there, False
    return dataclasses.replace(entry, path=target), True


def remove_dead_staging(store: Path, podman: Podman, run: Run) -> None:
    """Staging directories of fills of this host whose process is gone."""
    prefix = f".staging-{socket.gethostname()}-"
    for path in store.glob(f"{prefix}*"):
        pid = path.name.removeprefix(prefix)
        if pid.isdecimal() and not proc.alive(int(pid)):
            remove_tree(path, podman, run)


def remove_tree(path: Path, podman: Podman, run: Run) -> None:
    """A storage tree removed inside the user's namespace: its layers hold files of the
    user's subordinate IDs, which the user cannot remove from outside."""
    with contextlib.suppress(ImageError):
        run(podman.unshare("rm", "-rf", "--", str(path)), None)


def tree_size(path: Path) -> int:
    """Bytes of the regular files under path that the user can see (best effort: layer
    directories of subordinate IDs are skipped)."""
    total = 0
    for top, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(top, name))
                total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


def source_for(image: str, archive: Archive | None, registry_ref: str) -> Source:
    """The archive when the Docker archive store has one, else the registry.

    Raises:
        ImageError: neither has the image.
    """
    if archive is not None:
        return Source(archive=archive)
    if registry_ref:
        return Source(ref=registry_ref)
    raise ImageError(
        f"cannot fill the podman image store with {image}: it is in no image archive "
        "store and no registry is set",
        hint="set --registry, or save the image into --image-store with Docker first",
    )


def runner(env: Mapping[str, str], node: str) -> Run:
    """Runs podman commands with env; a failure is an ImageError naming its last line."""

    def run(argv: Sequence[str], stdin: BinaryIO | None) -> str:
        done = subprocess.run(
            list(argv), stdin=stdin if stdin is not None else subprocess.DEVNULL,
            capture_output=True, env=dict(env), check=False,
        )  # fmt: skip
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip().splitlines()
            raise ImageError(
                f"{' '.join(argv[-3:])} failed ({done.returncode}): "
                f"{said[-1][:300] if said else 'no output'}",
                node=node,
                hint="see the podman message; the store was left as it was",
            )
        return done.stdout.decode(errors="replace")

    return run


def cli(root: Path, runtime: str, env: Mapping[str, str], node: str) -> tuple[Podman, Run]:
    """The podman CLI of a fill from the engine's node-local root: the service's runtime
    directory (its user namespace), a runroot of its own, no keep-id default (layers are
    stored in Podman's default mapping; the fill maps one layer for keep-id itself)."""
    runroot = root / f"fill-{os.getpid()}"
    runroot.mkdir(mode=0o700, exist_ok=True)
    conf = root / "fill.conf"
    storage.write_private(conf, "# Written by mpidock for its image store fills.\n[containers]\n")
    base = (shutil.which("podman") or "podman", "--runtime", runtime,
            "--cgroup-manager", "cgroupfs")  # fmt: skip
    return Podman(base, runroot), runner({**env, "CONTAINERS_CONF": str(conf)}, node)


def import_into(
    store: Path,
    image: str,
    archive: Callable[[], Archive | None],
    registry_ref: str,
    personal: Callable[[str], tuple[str, str]],
    podman: Podman,
    run: Run,
    say: Say,
) -> int:
    """The store filled with image unless it holds it: the bytes filled (0 when it was
    there); the fill's runroot removed afterwards.

    Raises:
        ImageError: no source has the image, or the fill failed.
    """
    try:
        if find(entries(store, os.geteuid()), image) is not None:
            return 0
        source = source_for(image, archive(), registry_ref)
        entry, wrote = fill(
            store, image, source, lambda base: Personal(*personal(base)), podman, run, say
        )
    finally:
        remove_tree(podman.runroot, podman, run)
    return entry.bytes if wrote else 0
