"""Cached images and archives without Docker: durations, rows, selection, text, files."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from launcher import cache
from launcher.cache import Outcome, Row
from launcher.cli import build_parser, main
from launcher.errors import ImageError, UsageError

NOW = 1_800_000_000.0
BASE_ID = "sha256:" + "b" * 64
HEX = "a" * 64


def attrs(tags: list[str], size: int, tagged: str, **labels: str) -> dict[str, Any]:
    """`docker image inspect` attributes, reduced to what the rows read."""
    return {
        "Id": f"sha256:{hash(tuple(tags)) & 0xFFFFFFFF:064x}",
        "RepoTags": tags,
        "Size": size,
        "Created": "2026-01-01T00:00:00.123456789Z",
        "Metadata": {"LastTagTime": tagged},
        "Config": {"Labels": {f"org.mpidock.personal.{k}": v for k, v in labels.items()}},
    }


def row(kind: str, name: str, idle: float, **more: Any) -> Row:
    return Row(kind, name, "-", 1000, NOW - idle, more.pop("image", f"sha256:{name}"), **more)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0s", 0), ("45s", 45), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600),
     (" 7d ", 604800), ("100w", 60480000)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert cache.parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "7", "d", "7x", "-1d", "1.5h", "7 d", "7D", "7days", "1d2h", "\u0663d", "\u00b2d"]
)
def test_a_bad_duration_names_the_value_and_the_valid_forms(text: str) -> None:
    with pytest.raises(UsageError) as info:
        cache.parse_duration(text)
    assert repr(text) in str(info.value)
    assert all(form in info.value.hint for form in ["30m", "12h", "7d", "2w"])


@pytest.mark.parametrize(
    ("metadata", "created", "expected"),
    [
        ({"LastTagTime": "2027-01-15T08:00:00.5Z"}, "2026-01-01T00:00:00Z", 1800000000.5),
        ({"LastTagTime": "0001-01-01T00:00:00Z"}, "2027-01-15T08:00:00Z", 1800000000.0),
        ({}, "2027-01-15T08:00:00.000000001Z", 1800000000.0),
        (None, "2027-01-15T10:00:00+02:00", 1800000000.0),
        ({}, "garbage", 0.0),
    ],
)
def test_last_use_is_the_last_tag_time_else_the_creation(
    metadata: dict[str, str] | None, created: str, expected: float
) -> None:
    assert cache.last_use({"Metadata": metadata, "Created": created}) == expected


def test_image_rows_per_mpidock_tag_with_user_own_size_and_base() -> None:
    base = attrs(["mpidock-base:bbbbbbbbbbbb", "lab/cfd:2.1"], 400, "2027-01-01T00:00:00Z")
    base["Id"] = BASE_ID
    personal = attrs(["mpidock-personal:bbb-111"], 450, "2027-01-15T08:00:00Z", base=BASE_ID,
                     user="alice", identity="111")  # fmt: skip
    other = attrs(["lab/other:1"], 10, "2027-01-15T08:00:00Z")
    rows = cache.image_rows([other, personal, base], {BASE_ID: 400})
    assert rows == [
        Row("personal", "mpidock-personal:bbb-111", "alice", 50, NOW, personal["Id"], BASE_ID),
        # The base takes the use of the image built on it.
        Row("base", "mpidock-base:bbbbbbbbbbbb", "-", 400, NOW, BASE_ID),
    ]


def test_a_personal_image_without_labels_or_known_base_counts_whole() -> None:
    bare = attrs(["mpidock-personal:x-y"], 450, "2027-01-15T08:00:00Z")
    (only,) = cache.image_rows([bare], {BASE_ID: 400})
    assert (only.user, only.size, only.base) == ("-", 450, "")


def test_a_base_keeps_its_own_later_use() -> None:
    base = row("base", "mpidock-base:b", 10, image=BASE_ID)
    child = row("personal", "mpidock-personal:b-1", 99, base=BASE_ID)
    assert cache.used_by_children([child, base])[1] == base


@pytest.mark.parametrize(
    ("name", "age", "kind"),
    [(f"{HEX}.tar", 5, "archive"), (f".{HEX}.tar.77.partial", 86401, "partial"),
     (f".{HEX}.tar.77.partial", 86399, None), (f"{HEX}.json", 10**6, None),
     (f".{HEX}.lock", 10**6, None), ("notes.tar", 10**6, None),
     (f"{HEX[:63]}.tar", 10**6, None)],
)  # fmt: skip
def test_store_files(name: str, age: float, kind: str | None) -> None:
    found = cache.store_row(Path("/s") / name, 7, NOW - age, None, NOW)
    assert (found.kind if found else None) == kind


def test_an_archive_row_names_the_image_its_json_records() -> None:
    meta = {"image": "lab/cfd:2.1", "id": f"sha256:{HEX}", "bytes": 7, "saved": 1}
    found = cache.store_row(Path("/s") / f"{HEX}.tar", 7, NOW - 5, meta, NOW)
    assert found == Row("archive", "lab/cfd:2.1", "-", 7, NOW - 5, f"sha256:{HEX}",
                        path=f"/s/{HEX}.tar")  # fmt: skip


def test_stale_selects_unused_longer_than_the_duration_personal_before_base() -> None:
    rows = [row("archive", "a", 100), row("base", "b", 3600), row("personal", "p2", 7200),
            row("personal", "p1", 86400), row("partial", ".x", 90000),
            row("personal", "new", 60)]  # fmt: skip
    chosen = cache.stale(rows, 60, NOW)
    assert [r.name for r in chosen] == ["p1", "p2", "b", "a", ".x"]
    assert cache.stale(rows, 10**9, NOW) == []
    assert len(cache.stale(rows, 0, NOW)) == len(rows)


def test_prune_keeps_a_base_while_an_image_built_on_it_stays() -> None:
    busy = row("personal", "busy", 99, base="sha256:b1")
    idle = row("personal", "idle", 99, base="sha256:b2")
    rows = [busy, idle, row("base", "b1", 99), row("base", "b2", 99)]

    def remove(r: Row) -> Outcome:
        return Outcome(r, "in use") if r is busy else Outcome(r, "removed", r.size)

    outcomes = cache.prune(rows, remove)
    assert [(o.row.name, o.status) for o in outcomes] == [
        ("busy", "in use"), ("idle", "removed"), ("b1", "kept"), ("b2", "removed")
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (1949, "1.9 kB"), (999_949, "999.9 kB"),
     (999_950, "1.0 MB"), (433_966_441, "434.0 MB"), (2 * 10**9, "2.0 GB"),
     (5 * 10**15, "5000.0 TB")],
)  # fmt: skip
def test_human_size(n: int, text: str) -> None:
    assert cache.human_size(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-5, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h"), (86400 * 6, "6d"),
     (86400 * 15, "2w")],
)  # fmt: skip
def test_age_text_in_the_forms_older_than_takes(seconds: float, text: str) -> None:
    assert cache.age_text(seconds) == text


def test_table_text() -> None:
    rows = [
        Row("archive", "lab/cfd:2.1", "-", 433_966_441, NOW - 3 * 86400, "sha256:a", path="/s/a"),
        Row("personal", "mpidock-personal:b-1", "alice", 1936, NOW - 90, "sha256:p", "sha256:b"),
        Row("base", "mpidock-base:bbbbbbbbbbbb", "-", 198_901_154, NOW - 90, "sha256:b"),
    ]
    assert cache.table(rows, NOW) == (
        "KIND      NAME                       USER   SIZE      LAST-USE\n"
        "personal  mpidock-personal:b-1       alice  1.9 kB    1m ago\n"
        "base      mpidock-base:bbbbbbbbbbbb  -      198.9 MB  1m ago\n"
        "archive   lab/cfd:2.1                -      434.0 MB  3d ago"
    )


def test_weird_names_cannot_break_the_table() -> None:
    weird = Row("archive", "evil\nKIND\tx", "-", 1, NOW, "sha256:a", path="/s/a")
    lines = cache.table([weird], NOW).splitlines()
    assert lines[1] == "archive  evil?KIND?x  -     1 B   0s ago"


def test_prune_report_lines_and_total() -> None:
    outcomes = [
        Outcome(row("personal", "p", 99), "removed", 2000),
        Outcome(row("personal", "q", 99), "in use", detail="container 1a2b uses it"),
        Outcome(row("base", "b", 99), "untagged", detail="other tags keep it"),
        Outcome(row("archive", "a", 99), "removed", 3_000_000),
    ]
    assert cache.prune_report(outcomes, "7d").splitlines() == [
        "STATUS    KIND      NAME  FREED",
        "removed   personal  p     2.0 kB",
        "in use    personal  q     -       container 1a2b uses it",
        "untagged  base      b     0 B     other tags keep it",
        "removed   archive   a     3.0 MB",
        "total: 3 removed, 3.0 MB freed; 1 not removed (in use)",
    ]


def test_prune_report_dry_run_and_nothing() -> None:
    outcomes = [Outcome(row("personal", "p", 99), "would remove", 2000)]
    assert cache.prune_report(outcomes, "7d").splitlines()[-1] == (
        "total: 1 would be removed, 2.0 kB would be freed"
    )
    assert cache.prune_report([], "7d") == "nothing unused for longer than 7d"


def make_store(store: Path, age: float) -> tuple[Path, Path, Path]:
    """An archive, its .json, a partial write and a writer's lock, touched age seconds ago."""
    store.mkdir(exist_ok=True)
    tar, meta = store / f"{HEX}.tar", store / f"{HEX}.json"
    partial = store / f".{HEX}.tar.node1.9.partial"
    tar.write_bytes(b"x" * 300)
    meta.write_text(json.dumps({"image": "lab/cfd:2.1", "id": f"sha256:{HEX}", "bytes": 300}))
    partial.write_bytes(b"y" * 20)
    (store / f".{HEX}.lock").touch()
    for path in store.iterdir():
        os.utime(path, (NOW - age, NOW - age))
    return tar, meta, partial


def test_list_store_shows_archives_and_only_day_old_partials(tmp_path: Path) -> None:
    make_store(tmp_path / "s", 3600)
    (tmp_path / "s" / "sub.tar").mkdir()
    rows = cache.list_store(tmp_path / "s", NOW)
    assert [(r.kind, r.name, r.size, r.last_use) for r in rows] == [
        ("archive", "lab/cfd:2.1", 300, NOW - 3600)
    ]
    rows = cache.list_store(tmp_path / "s", NOW + 86400)
    assert [r.kind for r in rows] == ["partial", "archive"]
    assert cache.list_store(tmp_path / "missing", NOW) == []


def test_an_unreadable_store_is_an_error_with_a_hint(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ImageError, match="cannot read the image store") as info:
        cache.list_store(tmp_path / "file", NOW)
    assert "--image-store" in info.value.hint


def test_prune_removes_the_archive_with_its_json_and_the_dead_partial(tmp_path: Path) -> None:
    make_store(tmp_path, 2 * 86400)
    rows = cache.stale(cache.list_store(tmp_path, NOW), 86400, NOW)
    outcomes = cache.prune(rows, cache.remover(None, NOW - 86400, NOW, dry_run=False))
    assert [(o.status, o.freed) for o in outcomes] == [("removed", 300), ("removed", 20)]
    assert [p.name for p in tmp_path.iterdir()] == [f".{HEX}.lock"]


def test_prune_keeps_files_touched_since_the_listing(tmp_path: Path) -> None:
    tar, _, partial = make_store(tmp_path, 2 * 86400)
    rows = cache.list_store(tmp_path, NOW)
    os.utime(tar, (NOW - 10, NOW - 10))
    os.utime(partial, (NOW - 7200, NOW - 7200))
    # Unused for longer than 1h, but a partial younger than a day may be a live writer's.
    outcomes = cache.prune(rows, cache.remover(None, NOW - 3600, NOW, dry_run=False))
    assert [o.status for o in outcomes] == ["kept", "kept"]
    assert tar.exists()
    assert partial.exists()


def test_dry_run_and_vanished_files(tmp_path: Path) -> None:
    tar, _, _ = make_store(tmp_path, 2 * 86400)
    (archive,) = [r for r in cache.list_store(tmp_path, NOW) if r.kind == "archive"]
    dry = cache.remover(None, NOW, NOW, dry_run=True)
    assert dry(archive) == Outcome(archive, "would remove", 300)
    assert tar.exists()
    tar.unlink()
    assert cache.remove_file(archive, NOW).status == "gone"
    assert cache.remove_file(replace(archive, path=str(tmp_path)), NOW).status == "failed"


@pytest.mark.parametrize(
    "argv",
    [["images", "--image-store", "/x", "prune", "--older-than", "7d"],
     ["images", "prune", "--older-than", "7d", "--image-store", "/x"]],
)  # fmt: skip
def test_image_store_is_taken_before_or_after_prune(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.verb, args.older_than, args.image_store) == ("prune", "7d", "/x")
    assert not args.dry_run


def test_a_bad_duration_exits_2_before_touching_docker(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["images", "prune", "--older-than", "7days", "--image-store", "/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mpidock: error: bad duration '7days' (hint: ")
