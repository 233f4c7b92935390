"""What another user can plant in an image store: refused by name, never followed, never
blocked on; image IDs checked before they name a path; locks with deadlines."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from launcher.errors import ImageError
from launcher.movement import Wanted
from launcher.store import Archive, ImageStore, hex_of, open_archive
from launcher.storefiles import SaveAbandoned, Untrusted
from tests.unit.test_archive_check import ID as SAVED_ID
from tests.unit.test_archive_check import archive as saved_tar

A = "sha256:" + "a" * 64
HEX = "a" * 64
IMAGE = "lab/cfd:2.1"
META = f'{{"image": "{IMAGE}", "id": "{A}"}}'
OTHER_UID = 1504  # another user's files; chown needs root
as_root = pytest.mark.usefixtures("root")


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """A store read that blocks (on a FIFO) fails the test instead of hanging it."""

    def expire(_sig: int, _frame: FrameType | None) -> None:
        raise TimeoutError("blocked on a store file")

    before = signal.signal(signal.SIGALRM, expire)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, before)


class Said(list[str]):
    """Collects the store's refusals."""

    def __call__(self, text: str) -> None:
        self.append(text)


@pytest.mark.parametrize(
    "bad",
    ["sha256:../../x", "sha256:" + "A" * 64, "sha256:" + "a" * 63, "a" * 64,
     "sha256:" + "a" * 64 + "/x", "md5:" + "a" * 32, "", "sha256:" + "a" * 64 + "\n"],
)  # fmt: skip
def test_an_image_id_that_is_not_sha256_hex_is_refused_before_any_path(
    tmp_path: Path, bad: str
) -> None:
    store = ImageStore(tmp_path / "store")
    calls = [
        lambda: hex_of(bad),
        lambda: store.find(bad),
        lambda: store.recall(bad, "mpi"),
        lambda: store.write(IMAGE, bad, [b"x"]),
        lambda: Wanted.from_dict({"image": IMAGE, "image_id": bad, "store": str(tmp_path)}),
    ]
    for call in calls:
        with pytest.raises(ImageError, match="bad image ID"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_hex_of_a_good_id() -> None:
    assert hex_of(A) == HEX


def plant(store: ImageStore, suffix: str, kind: str) -> Path:
    """Puts a FIFO, a symlink or a group-writable file where the store expects a file."""
    store.root.mkdir(exist_ok=True)
    path = store.root / f"{HEX}{suffix}"
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "symlink":
        real = store.root.parent / f"real{suffix}"
        real.write_text(META)
        path.symlink_to(real)
    else:
        path.write_text(META)
        path.chmod(0o664)
    return path


REASONS = {
    "fifo": "it is not a regular file but a FIFO",
    "symlink": "it is a symbolic link",
    "writable": "it is writable by others (mode 0664)",
}


@pytest.mark.parametrize("kind", sorted(REASONS))
def test_a_planted_archive_is_ignored_by_name_and_never_blocks(tmp_path: Path, kind: str) -> None:
    said = Said()
    store = ImageStore(tmp_path / "store", warn=said)
    path = plant(store, ".tar", kind)
    store.root.joinpath(f"{HEX}.json").write_text(META)
    assert (store.find(A), store.find_by_name(IMAGE)) == (None, None)
    assert said == [f"ignoring {path}: {REASONS[kind]}"]  # once, however often it is asked
    with pytest.raises(Untrusted, match=re.escape(REASONS[kind])):
        open_archive(Archive(path, IMAGE, A, 0))


@pytest.mark.parametrize("kind", sorted(REASONS))
def test_planted_notes_are_ignored_and_never_block(tmp_path: Path, kind: str) -> None:
    said = Said()
    store = ImageStore(tmp_path / "store", warn=said)
    store.write(IMAGE, A, [b"archive"])
    store.meta_path(A).unlink()
    plant(store, ".json", kind)
    mpi = plant(store, ".mpi", kind) if kind != "symlink" else None
    found = store.find(A)
    assert found is not None
    assert found.image == ""  # the name from an untrusted note is not believed
    assert store.find_by_name(IMAGE) is None
    if mpi is not None:
        assert store.recall(A, "mpi") is None
        assert f"ignoring {mpi}: {REASONS[kind]}" in said


def test_a_note_renamed_to_claim_another_id_is_not_believed(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    b = "sha256:" + "b" * 64
    store.write(IMAGE, A, [b"a"])
    store.write("lab/other", b, [b"b"])
    store.meta_path(A).replace(tmp_path / "c.json")
    store.meta_path(b).replace(store.meta_path(A))  # says image lab/other, id b
    assert store.find_by_name("lab/other") is None
    found = store.find(A)
    assert found is not None
    assert found.image == ""


@as_root
def test_another_users_files_in_a_private_store_are_ignored(tmp_path: Path) -> None:
    said = Said()
    store = ImageStore(tmp_path, warn=said)
    store.write(IMAGE, A, [b"archive"])
    for name in (f"{HEX}.tar", f"{HEX}.json"):
        os.chown(tmp_path / name, OTHER_UID, OTHER_UID)
    assert (store.find(A), store.find_by_name(IMAGE)) == (None, None)
    assert f"belongs to uid {OTHER_UID}" in said[0] or "(uid 1504)" in said[0]


def test_a_symlink_in_place_of_a_partial_write_is_not_followed(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    store.root.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    partial = store.root / f".{HEX}.tar.{socket.gethostname()}.{os.getpid()}.partial"
    partial.symlink_to(victim)
    archive, wrote = store.write(IMAGE, A, [b"archive"])
    assert (wrote, archive.path.read_bytes()) == (True, b"archive")
    assert victim.read_text() == "precious\n"
    assert not partial.is_symlink()


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_a_planted_lock_file_is_refused_by_name(tmp_path: Path, kind: str) -> None:
    store = ImageStore(tmp_path)
    lock = tmp_path / f".{HEX}.lock"
    if kind == "fifo":
        os.mkfifo(lock, 0o600)
    else:
        lock.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(Untrusted) as info:
        store.write(IMAGE, A, [b"archive"])
    assert str(lock) in info.value.message
    assert not (tmp_path / "elsewhere").exists()


def test_a_save_waiting_on_a_held_lock_gives_up_at_its_deadline(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    tmp_path.joinpath(f".{HEX}.lock").touch(mode=0o600)
    taken: list[bytes] = []
    with holding(tmp_path / f".{HEX}.lock"):
        started = time.monotonic()
        with pytest.raises(ImageError) as info:
            store.write(IMAGE, A, iter_taken([b"x"], taken), lock_timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 3
    assert "another save of this image still holds" in info.value.message
    assert str(tmp_path / f".{HEX}.lock") in info.value.message
    assert taken == []


def test_a_save_waiting_on_a_lock_is_abandoned_when_asked(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    tmp_path.joinpath(f".{HEX}.lock").touch(mode=0o600)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    with holding(tmp_path / f".{HEX}.lock"), pytest.raises(SaveAbandoned):
        store.write(IMAGE, A, [b"x"], stop=stop)


def iter_taken(chunks: list[bytes], taken: list[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        taken.append(chunk)
        yield chunk


class holding:
    """Holds the flock of path from another open file, as another writer would."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR)

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *_: object) -> None:
        os.close(self.fd)


def no_flock(_fd: int, _op: int) -> None:
    """A filesystem without flock, as some NFS and FUSE mounts are."""
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))


def test_without_flock_an_exclusive_lock_file_serializes_and_is_removed(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, flock=no_flock)
    archive, wrote = store.write(IMAGE, A, [b"archive"])
    assert (wrote, archive.path.read_bytes()) == (True, b"archive")
    assert not (tmp_path / f".{HEX}.lock.excl").exists()


def test_without_flock_another_hosts_lock_is_waited_for_then_named(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, flock=no_flock)
    excl = tmp_path / f".{HEX}.lock.excl"
    excl.write_text("sim9 4242\n")
    excl.chmod(0o600)
    with pytest.raises(ImageError) as info:
        store.write(IMAGE, A, [b"archive"], lock_timeout=0.3)
    assert f"a save by sim9 4242\n still holds {excl}" in info.value.message
    assert f"remove {excl}" in info.value.hint
    assert excl.exists()


def test_without_flock_a_dead_local_holder_is_taken_over(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, flock=no_flock)
    excl = tmp_path / f".{HEX}.lock.excl"
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    excl.write_text(f"{socket.gethostname()} {dead}\n")
    assert store.write(IMAGE, A, [b"archive"], lock_timeout=5)[1] is True
    assert not excl.exists()


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A site-wide store: owned by another account, sticky and writable by all."""
    root = tmp_path / "shared"
    root.mkdir()
    os.chown(root, OTHER_UID, OTHER_UID)
    root.chmod(0o1777)
    return root


@as_root
def test_in_a_shared_store_each_user_saves_into_a_private_area(shared: Path) -> None:
    store = ImageStore(shared)
    assert store.area == shared / f"uid-{os.geteuid()}"
    archive, wrote = store.write(IMAGE, A, [b"archive"])
    store.note(A, "mpi", "mpirun (Open MPI) 4.1.4\n")
    assert (wrote, archive.path.parent) == (True, store.area)
    assert oct(store.area.stat().st_mode & 0o7777) == oct(0o700)
    assert {p.name: p.stat().st_mode & 0o777 for p in store.area.glob("a*")} == {
        f"{HEX}.tar": 0o600, f"{HEX}.json": 0o600, f"{HEX}.mpi": 0o600,
    }  # fmt: skip
    assert store.find(A) == archive
    assert store.find_by_name(IMAGE) == archive
    assert store.recall(A, "mpi") == "mpirun (Open MPI) 4.1.4\n"


@as_root
def test_in_a_shared_store_the_owners_files_are_trusted_and_a_strangers_are_not(
    shared: Path,
) -> None:
    published = shared / f"{HEX}.tar"
    published.write_bytes(b"published")
    os.chown(published, OTHER_UID, OTHER_UID)
    found = ImageStore(shared).find(A)
    assert found is not None
    assert found.path == published
    os.chown(published, OTHER_UID + 1, OTHER_UID + 1)  # a third user, not the store's owner
    said = Said()
    assert ImageStore(shared, warn=said).find(A) is None
    (line,) = said
    assert line.startswith(f"ignoring {published}: it belongs to uid 1505, not to root (uid 0)")


@as_root
@pytest.mark.parametrize("kind", ["stranger", "symlink"])
def test_an_area_planted_in_a_shared_store_is_refused_by_name(shared: Path, kind: str) -> None:
    area = shared / f"uid-{os.geteuid()}"
    if kind == "stranger":
        area.mkdir(mode=0o777)
        os.chown(area, OTHER_UID, OTHER_UID)
    else:
        (shared / "theirs").mkdir()
        area.symlink_to(shared / "theirs")
    with pytest.raises(Untrusted) as info:
        ImageStore(shared).write(IMAGE, A, [b"archive"])
    assert str(area) in info.value.message
    assert list((shared / "theirs").iterdir() if kind == "symlink" else area.iterdir()) == []


def test_open_archive_checks_the_manifest_and_streams_from_the_start(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    body = saved_tar().getvalue()
    archive, _ = store.write(IMAGE, SAVED_ID, [body])
    with open_archive(archive) as f:
        assert f.read() == body
    with pytest.raises(ImageError, match="holds image"):
        open_archive(Archive(archive.path, IMAGE, A, archive.size))
