"""The shared image store on a local directory: write once, find, notes, modes, races."""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import signal
import stat
import time
from collections.abc import Callable, Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from launcher.errors import ImageError
from launcher.store import Archive, ImageStore

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
IMAGE = "lab/cfd:2.1"
# Eight distinct 64 KiB chunks, so a torn or reordered archive cannot equal the content.
CHUNKS = [bytes([i]) * (64 << 10) for i in range(8)]
CONTENT = b"".join(CHUNKS)
WRITERS = 4


def counted(chunks: list[bytes], taken: list[int], delay: float = 0.0) -> Iterator[bytes]:
    """Yields the chunks, noting each one taken, optionally slowly."""
    for chunk in chunks:
        taken.append(len(chunk))
        time.sleep(delay)
        yield chunk


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.endswith((".partial", ".tar")))


def test_write_then_find(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    archive, wrote = store.write(IMAGE, A, iter(CHUNKS))
    expected = Archive(tmp_path / "store" / f"{'a' * 64}.tar", IMAGE, A, len(CONTENT))
    assert (archive, wrote) == (expected, True)
    assert store.find(A) == expected
    assert store.find_by_name(IMAGE) == expected
    assert archive.path.read_bytes() == CONTENT
    meta = json.loads(store.meta_path(A).read_text())
    assert {k: meta[k] for k in ("image", "id", "bytes")} == {
        "image": IMAGE,
        "id": A,
        "bytes": len(CONTENT),
    }
    assert (store.find(B), store.find_by_name("lab/other")) == (None, None)


def test_nothing_is_found_in_a_store_never_written(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "never")
    assert (store.find(A), store.find_by_name(IMAGE), store.recall(A, "mpi")) == (None,) * 3


def set_saved(store: ImageStore, image_id: str, saved: float) -> None:
    meta = json.loads(store.meta_path(image_id).read_text())
    store.meta_path(image_id).write_text(json.dumps({**meta, "saved": saved}))


@pytest.mark.parametrize(
    ("saved_a", "saved_b", "newest"),
    [(100.0, 200.0, B), (200.0, 100.0, A)],
)
def test_find_by_name_takes_the_newest_saved(
    tmp_path: Path, saved_a: float, saved_b: float, newest: str
) -> None:
    store = ImageStore(tmp_path)
    for image_id, image, saved in [(A, IMAGE, saved_a), (B, IMAGE, saved_b), (C, "x", 999.0)]:
        store.write(image, image_id, [image_id.encode()])
        set_saved(store, image_id, saved)
    found = store.find_by_name(IMAGE)
    assert found is not None
    assert found.image_id == newest


def test_find_by_name_ignores_an_id_whose_archive_is_gone(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    store.write(IMAGE, B, [b"older"])
    store.write(IMAGE, A, [b"newer"])
    set_saved(store, B, 100.0)
    set_saved(store, A, 200.0)
    store.archive_path(A).unlink()
    assert store.find(A) is None
    found = store.find_by_name(IMAGE)
    assert found is not None
    assert found.image_id == B


def test_a_second_write_finds_the_archive_and_writes_nothing(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    first, _ = store.write(IMAGE, A, iter(CHUNKS))
    before = first.path.stat()
    meta_before = store.meta_path(A).read_text()
    taken: list[int] = []
    again, wrote = store.write(IMAGE, A, counted([b"different"], taken))
    assert (again, wrote, taken) == (first, False, [])
    after = first.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert first.path.read_bytes() == CONTENT
    assert store.meta_path(A).read_text() == meta_before


def write_slowly(root: str, barrier: Barrier, results: Queue[tuple[bool, int, int]]) -> None:
    """One writer process: all start together, each offering the same content slowly."""
    taken: list[int] = []
    barrier.wait()
    archive, wrote = ImageStore(root).write(IMAGE, A, counted(CHUNKS, taken, delay=0.03))
    results.put((wrote, len(taken), archive.size))


def test_concurrent_writers_write_once_and_readers_see_only_whole_archives(
    tmp_path: Path,
) -> None:
    ctx = multiprocessing.get_context()
    barrier, results = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [
        ctx.Process(target=write_slowly, args=(str(tmp_path), barrier, results))
        for _ in range(WRITERS)
    ]
    reader, sizes = ImageStore(tmp_path), set()
    try:
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            found = reader.find(A)
            sizes.add(found.size if found else None)
            time.sleep(0.002)
        outcomes = sorted(results.get(timeout=5) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0] * WRITERS
    # The one writer took every chunk; the others waited, found it and took none.
    assert outcomes == [(False, 0, len(CONTENT))] * (WRITERS - 1) + [
        (True, len(CHUNKS), len(CONTENT))
    ]
    assert sizes == {None, len(CONTENT)}  # polled before and after, never in between
    assert reader.archive_path(A).read_bytes() == CONTENT
    assert leftovers(tmp_path) == [f"{'a' * 64}.tar"]


def test_a_failed_write_leaves_no_archive_and_releases_the_lock(tmp_path: Path) -> None:
    def broken() -> Iterator[bytes]:
        yield CHUNKS[0]
        raise RuntimeError("docker save broke")

    store = ImageStore(tmp_path)
    with pytest.raises(RuntimeError, match="docker save broke"):
        store.write(IMAGE, A, broken())
    assert (store.find(A), store.find_by_name(IMAGE), leftovers(tmp_path)) == (None, None, [])
    assert not store.meta_path(A).exists()
    assert store.write(IMAGE, A, iter(CHUNKS))[1] is True


def write_past_a_size_limit(root: str, results: Queue[tuple[str, str, str]]) -> None:
    """One writer process that may write only 100 kB per file, like a full store."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
    try:
        ImageStore(root).write(IMAGE, A, iter(CHUNKS))
        results.put(("wrote", "", ""))
    except Exception as e:
        results.put((type(e).__name__, str(e), getattr(e, "hint", "")))


def test_a_store_that_runs_out_of_room_raises_an_image_error(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context()
    results = ctx.Queue()
    proc = ctx.Process(target=write_past_a_size_limit, args=(str(tmp_path), results))
    proc.start()
    try:
        kind, message, hint = results.get(timeout=10)
    finally:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
    assert (kind, "File too large" in message, "--image-store" in hint) == (
        "ImageError",
        True,
        True,
    )
    assert (ImageStore(tmp_path).find(A), leftovers(tmp_path)) == (None, [])


@pytest.mark.parametrize("below", ["file/store", "file"])
def test_a_store_that_cannot_be_created_says_to_set_image_store(tmp_path: Path, below: str) -> None:
    (tmp_path / "file").write_text("not a directory\n")
    taken: list[int] = []
    with pytest.raises(ImageError) as info:
        ImageStore(tmp_path / below).write(IMAGE, A, counted(CHUNKS, taken))
    assert str(tmp_path / below) in info.value.message
    assert "--image-store" in info.value.hint
    assert taken == []


def test_notes_round_trip(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "new")
    store.note(A, "mpi", "mpirun (Open MPI) 4.1.4\n")
    store.note(A, "mpi", "mpirun (Open MPI) 4.1.5\n")
    assert store.recall(A, "mpi") == "mpirun (Open MPI) 4.1.5\n"
    assert (store.recall(A, "other"), store.recall(B, "mpi")) == (None, None)
    assert sorted(p.name for p in store.root.iterdir()) == [f"{'a' * 64}.mpi"]


def test_a_note_on_an_unwritable_store_is_silent(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory\n")
    store = ImageStore(tmp_path / "file" / "store")
    store.note(A, "mpi", "mpirun (Open MPI) 4.1.4\n")
    assert store.recall(A, "mpi") is None


def test_touch_marks_the_last_use(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    archive, _ = store.write(IMAGE, A, iter(CHUNKS))
    os.utime(archive.path, (1000.0, 1000.0))
    store.touch(archive)
    assert archive.path.stat().st_mtime > time.time() - 60
    store.touch(Archive(tmp_path / "gone.tar", IMAGE, B, 1))  # a missing archive is no error


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Sets the umask for one test and restores it after."""
    before = os.umask(0o022)
    yield os.umask
    os.umask(before)


def modes(root: Path) -> dict[str, int]:
    return {p.suffix: stat.S_IMODE(p.stat().st_mode) for p in root.glob("a*")}


def test_a_new_store_is_private(tmp_path: Path, umask: Callable[[int], None]) -> None:
    umask(0o022)
    store = ImageStore(tmp_path / "new")
    store.write(IMAGE, A, iter(CHUNKS))
    store.note(A, "mpi", "mpirun (Open MPI) 4.1.4\n")
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert modes(store.root) == {".tar": 0o600, ".json": 0o600, ".mpi": 0o600}


@pytest.mark.parametrize(
    ("dir_mode", "mask", "file_mode"),
    [(0o755, 0o022, 0o644), (0o750, 0o022, 0o640), (0o755, 0o077, 0o600), (0o700, 0o000, 0o600)],
)
def test_files_are_as_readable_as_the_directory_and_umask_allow(
    tmp_path: Path, umask: Callable[[int], None], dir_mode: int, mask: int, file_mode: int
) -> None:
    tmp_path.chmod(dir_mode)
    umask(mask)
    store = ImageStore(tmp_path)
    store.write(IMAGE, A, iter(CHUNKS))
    store.note(A, "mpi", "mpirun (Open MPI) 4.1.4\n")
    assert modes(tmp_path) == {".tar": file_mode, ".json": file_mode, ".mpi": file_mode}
