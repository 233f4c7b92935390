"""Rootless Podman's shared image store: its trust checks and its fill, with a fake podman
that makes the directories a real one would."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import pytest

from launcher import config
from launcher.engines import podman, podman_fill, podman_store, storage
from launcher.engines.podman_fill import Personal, Podman, Source
from launcher.engines.podman_store import META, Entry
from launcher.errors import ImageError
from launcher.storefiles import Untrusted

HEX = "ab" * 32
IMAGE_ID = f"sha256:{HEX}"
UID = os.geteuid()


class FakePodman:
    """Answers the fill's podman commands as Podman would, on the storage root named."""

    def __init__(self, fail: str = "", slow: float = 0.0, on_rm: object = None) -> None:
        self.calls: list[list[str]] = []
        self.fail, self.slow, self.on_rm = fail, slow, on_rm
        self.lock = threading.Lock()

    def __call__(self, argv: Sequence[str], stdin: BinaryIO | None) -> str:
        argv = list(argv)
        with self.lock:
            self.calls.append(argv)
        if argv[1] == "unshare":
            shutil.rmtree(argv[-1], ignore_errors=True)
            return ""
        verb = argv[argv.index("--storage-driver") + 2]
        root = Path(argv[argv.index("--root") + 1])
        if verb == self.fail:
            raise ImageError(f"{verb} failed")
        if verb in ("pull", "load"):
            time.sleep(self.slow)
            for name in podman_store.DRIVER_DIRS:
                (root / name).mkdir(mode=0o700)
            (root / "overlay" / "layer").write_bytes(b"x" * 1000)
        if verb == "rm" and callable(self.on_rm):
            self.on_rm()
        return f"{IMAGE_ID}\n" if verb == "images" else ""

    def verbs(self) -> list[str]:
        return [c[c.index("--storage-driver") + 2] for c in self.calls if "--storage-driver" in c]


def cli(tmp_path: Path) -> Podman:
    runroot = tmp_path / "runroot"
    runroot.mkdir(exist_ok=True)
    return Podman(("podman", "--runtime", "runc"), runroot)


def personal(base: str) -> Personal:
    return Personal(f"mpidock-personal:{base[7:19]}-me", f"FROM {base}\n")


def fill(tmp_path: Path, run: FakePodman, image: str = "lab/app:1") -> tuple[Entry, bool]:
    store = tmp_path / "store" / "ada"
    source = Source(ref=f"registry.example.org:5000/{image}")
    return podman_fill.fill(store, image, source, personal, cli(tmp_path), run, lambda _: None)


def whole_entry(store: Path, hexid: str = HEX, image: str = "lab/app:1") -> Path:
    path = store / hexid
    path.mkdir(mode=0o700, parents=True)
    for name in podman_store.DRIVER_DIRS:
        (path / name).mkdir(mode=0o700)
    meta = {"image": image, "id": f"sha256:{hexid}", "personal": "mpidock-personal:x"}
    (path / META).write_text(json.dumps(meta))
    os.chmod(path / META, 0o600)
    return path


def foreign(path: Path) -> int:
    """A UID to check path as, under which path belongs to somebody else."""
    if UID == 0:
        os.lchown(path, 4242, 4242)
        return 0
    return UID + 1


# --- where the store is, and whether it is trusted --------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [("/shared/store/{user}", "/shared/store/ada"), ("/shared/{uid}/s", "/shared/1234/s"),
     ("/shared/store", "/shared/store/ada"), ("/shared/store/", "/shared/store/ada")],
)  # fmt: skip
def test_each_user_has_a_store_of_their_own(template: str, expected: str) -> None:
    assert podman_store.store_path(template, 1234, "ada") == Path(expected)


@pytest.mark.parametrize("template", ["relative/{user}", "/a,b/{user}", "/a=b/{user}"])
def test_a_store_path_podman_cannot_carry_is_one_line(template: str) -> None:
    with pytest.raises(ImageError, match="podman_image_store") as e:
        podman_store.store_path(template, 1234, "ada")
    assert "\n" not in str(e.value)


def test_a_missing_store_is_made_private_under_a_sticky_shared_directory(tmp_path: Path) -> None:
    shared = tmp_path / "podman-store"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    assert podman_store.open_store(shared / "ada", UID, create=True)
    assert (shared / "ada").stat().st_mode & 0o777 == 0o700


def test_a_missing_store_is_not_made_for_a_reader(tmp_path: Path) -> None:
    assert not podman_store.open_store(tmp_path / "ada", UID, create=False)
    assert not (tmp_path / "ada").exists()


def test_a_group_writable_store_is_refused_by_name(tmp_path: Path) -> None:
    store = tmp_path / "ada"
    store.mkdir(mode=0o700)
    os.chmod(store, 0o770)
    with pytest.raises(Untrusted, match=f"{store}: it is writable by others"):
        podman_store.open_store(store, UID, create=False)


def test_a_symlink_in_place_of_the_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / "theirs").mkdir(mode=0o700)
    (tmp_path / "ada").symlink_to(tmp_path / "theirs")
    with pytest.raises(Untrusted, match="it is a symbolic link"):
        podman_store.open_store(tmp_path / "ada", UID, create=True)


def test_a_store_of_another_owner_is_refused_naming_the_owner(tmp_path: Path) -> None:
    store = tmp_path / "ada"
    store.mkdir(mode=0o700)
    uid = foreign(store)
    with pytest.raises(Untrusted, match=r"it belongs to .*uid \d+\)?, not to") as e:
        podman_store.open_store(store, uid, create=False)
    assert str(store) in str(e.value)


def test_a_parent_others_may_write_without_sticky_bit_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "open"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(Untrusted, match=f"{shared}: it is writable by others"):
        podman_store.open_store(shared / "ada", UID, create=True)
    assert not (shared / "ada").exists()


# --- the store's entries ----------------------------------------------------------------


def test_whole_entries_are_listed_and_found_by_any_of_their_names(tmp_path: Path) -> None:
    path = whole_entry(tmp_path)
    (tmp_path / f".staging-{socket.gethostname()}-1").mkdir()
    (found,) = podman_store.entries(tmp_path, UID)
    assert found == Entry(path, "lab/app:1", IMAGE_ID, "mpidock-personal:x")
    for ref in ("lab/app:1", "localhost/lab/app:1", IMAGE_ID, HEX, "mpidock-personal:x"):
        assert podman_store.find([found], ref) == found
    assert podman_store.find([found], "lab/app:2") is None


def test_an_entry_without_its_note_or_with_another_id_is_not_whole(tmp_path: Path) -> None:
    whole_entry(tmp_path)
    (tmp_path / HEX / META).unlink()
    other = whole_entry(tmp_path, "cd" * 32)
    (other / META).write_text(json.dumps({"id": IMAGE_ID}))
    assert podman_store.entries(tmp_path, UID) == []


def test_an_entry_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    path = whole_entry(tmp_path)
    os.chmod(path / "overlay-layers", 0o777)
    with pytest.raises(Untrusted, match="overlay-layers: it is writable by others"):
        podman_store.entries(tmp_path, UID)


def test_a_planted_note_is_refused(tmp_path: Path) -> None:
    path = whole_entry(tmp_path)
    (path / META).unlink()
    (path / META).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(Untrusted, match="symbolic link"):
        podman_store.entries(tmp_path, UID)


# --- the fill ---------------------------------------------------------------------------


def test_a_fill_stages_pulls_personalizes_maps_and_publishes_by_rename(tmp_path: Path) -> None:
    run = FakePodman()
    entry, filled = fill(tmp_path, run)
    store = tmp_path / "store" / "ada"
    assert filled
    assert entry.path == store / HEX
    assert run.verbs() == ["pull", "images", "tag", "build", "create", "rm"]
    create = next(c for c in run.calls if "create" in c)
    assert create[create.index("create") :][:3] == ["create", "--userns", "keep-id"]
    assert [p.name for p in store.iterdir() if p.name.startswith(".staging")] == []
    assert podman_store.entries(store, UID) == [
        Entry(store / HEX, "lab/app:1", IMAGE_ID, "mpidock-personal:abababababab-me", entry.bytes)
    ]


def test_a_second_fill_of_the_image_finds_it_and_pulls_nothing(tmp_path: Path) -> None:
    fill(tmp_path, FakePodman())
    run = FakePodman()
    entry, filled = fill(tmp_path, run)
    assert (filled, run.calls) == (False, [])
    assert entry.image_id == IMAGE_ID


def test_a_failed_fill_leaves_no_entry_and_no_staging(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="build failed"):
        fill(tmp_path, FakePodman(fail="build"))
    store = tmp_path / "store" / "ada"
    assert sorted(p.name for p in store.iterdir() if not p.name.endswith(".lock")) == []


def test_a_fill_that_loses_the_rename_keeps_the_winners_entry(tmp_path: Path) -> None:
    store = tmp_path / "store" / "ada"
    run = FakePodman(on_rm=lambda: whole_entry(store, image="lab/app:latest"))
    entry, filled = fill(tmp_path, run)
    assert (filled, entry.image) == (False, "lab/app:latest")
    assert [p.name for p in store.iterdir() if not p.name.endswith(".lock")] == [HEX]


def test_two_fills_of_one_image_at_once_both_succeed_and_leave_one_entry(tmp_path: Path) -> None:
    run = FakePodman(slow=0.3)
    results: list[tuple[Entry, bool]] = []
    threads = [threading.Thread(target=lambda: results.append(fill(tmp_path, run))) for _ in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(filled for _, filled in results) == [False, True]
    assert run.verbs().count("pull") == 1
    store = tmp_path / "store" / "ada"
    assert [p.name for p in store.iterdir() if not p.name.endswith(".lock")] == [HEX]


def test_staging_of_a_dead_fill_on_this_host_is_removed_by_the_next(tmp_path: Path) -> None:
    store = tmp_path / "store" / "ada"
    store.mkdir(parents=True, mode=0o700)
    dead = store / f".staging-{socket.gethostname()}-999999999"
    (dead / "overlay").mkdir(parents=True)
    elsewhere = store / ".staging-othernode-1"
    elsewhere.mkdir()
    fill(tmp_path, FakePodman())
    assert not dead.exists()
    assert elsewhere.exists()  # another host's fill may still run


def test_the_archive_store_is_the_first_source_then_the_registry() -> None:
    from launcher.store import Archive

    archive = Archive(Path("/s/x.tar"), "lab/app:1", IMAGE_ID, 10)
    assert podman_fill.source_for("lab/app:1", archive, "reg/lab/app:1").kind == "archive"
    assert podman_fill.source_for("lab/app:1", None, "reg/lab/app:1") == Source(ref="reg/lab/app:1")
    with pytest.raises(ImageError, match="no image archive store and no registry"):
        podman_fill.source_for("lab/app:1", None, "")


# --- the service reads the entries in place ---------------------------------------------


def test_the_service_reads_the_entries_as_additional_image_stores(tmp_path: Path) -> None:
    layout = storage.Layout(tmp_path)
    sock = tmp_path / "api.sock"
    plain = podman.service_argv("podman", "runc", layout, sock)
    assert "--storage-opt" not in plain
    assert podman.service_argv("podman", "runc", layout, sock, ()) == plain  # an empty store
    argv = podman.service_argv("podman", "runc", layout, sock, (Path("/s/a"), Path("/s/b")))
    assert argv[argv.index("--storage-opt") + 1] == "overlay.imagestore=/s/a,/s/b"
    for found in (plain, argv):  # one overlay storage, with the store or without
        assert found[found.index("--root") + 1] == str(tmp_path / "storage-overlay")
        assert found[found.index("--runroot") + 1] == str(tmp_path / "run-overlay")
        assert found[found.index("--storage-driver") + 1] == "overlay"


def test_an_import_fills_once_and_removes_its_runroot(tmp_path: Path) -> None:
    store, podman = tmp_path / "store" / "ada", cli(tmp_path)

    def personal_pair(base: str) -> tuple[str, str]:
        return f"mpidock-personal:{base[7:19]}-me", f"FROM {base}\n"

    def once(run: FakePodman, registry_ref: str = "reg/lab/app:1") -> int:
        podman.runroot.mkdir(exist_ok=True)
        return podman_fill.import_into(
            store, "lab/app:1", lambda: None, registry_ref, personal_pair, podman, run, print
        )

    assert once(FakePodman()) > 0
    assert not podman.runroot.exists()
    run = FakePodman()
    assert once(run, registry_ref="") == 0  # there already: no source needed
    assert run.verbs() == []


def test_an_import_without_a_source_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    store, podman = tmp_path / "store" / "ada", cli(tmp_path)
    with pytest.raises(ImageError, match="no image archive store and no registry") as e:
        podman_fill.import_into(
            store, "lab/app:1", lambda: None, "", lambda b: (b, b), podman, FakePodman(), print
        )
    assert "\n" not in str(e.value)
    assert not podman.runroot.exists()


def test_a_refusal_says_how_to_get_a_store_of_ones_own(tmp_path: Path) -> None:
    store = tmp_path / "ada"
    store.mkdir(mode=0o770)
    os.chmod(store, 0o770)
    with pytest.raises(Untrusted) as e:
        podman_store.open_store(store, UID, create=False)
    assert "podman_image_store" in e.value.hint


@pytest.mark.parametrize(
    ("value", "expected"), [("/shared/store/{user}", "/shared/store/{user}"), ("", "")]
)
def test_the_store_is_a_setting_and_off_by_default(value: str, expected: str) -> None:
    env = {"MPIDOCK_SITE_CONFIG": "/nonexistent", "MPIDOCK_USER_CONFIG": "/nonexistent"}
    assert config.load(env, {}, "/home/ada").podman_image_store == ""
    set_ = config.load(env | {"MPIDOCK_PODMAN_IMAGE_STORE": value}, {}, "/home/ada")
    assert set_.podman_image_store == expected


@pytest.mark.parametrize("value", ["relative", "/a,b", "/a=b"])
def test_a_store_setting_podman_cannot_carry_is_refused(value: str) -> None:
    env = {"MPIDOCK_SITE_CONFIG": "/nonexistent", "MPIDOCK_USER_CONFIG": "/nonexistent"}
    with pytest.raises(config.ConfigError, match="MPIDOCK_PODMAN_IMAGE_STORE"):
        config.load(env | {"MPIDOCK_PODMAN_IMAGE_STORE": value}, {}, "/home/ada")
