"""What mpidock keeps: cached images on this node and archives in the shared store.

Pure functions turn `docker image inspect` attributes and store files into rows, pick
the rows unused for longer than a duration and render them; thin functions around them
talk to the engine and the file system. Last use of an image is its last tag time
(every job re-tags the image it uses), of an archive the .tar's mtime (loaders touch it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, NotFound

from launcher import storefiles
from launcher.errors import ImageError, UsageError
from launcher.images import REPO
from launcher.movement import BASE_REPO
from launcher.plan import LABEL_PREFIX
from launcher.record import human_size
from launcher.store import ImageStore

BASE_LABEL = f"{LABEL_PREFIX}.personal.base"
USER_LABEL = f"{LABEL_PREFIX}.personal.user"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION = re.compile(r"([0-9]+)([smhdw])")  # ASCII digits: \d would take "٣" too
ARCHIVE = re.compile(r"[0-9a-f]{64}\.tar")
# A dot file is a writer's write in progress; untouched for a day, it is a dead writer's.
# Lock files stay: their mtime does not tell whether a writer holds them now.
PARTIAL_AGE = 86400.0
LOCK = ".lock"
KINDS = ("personal", "base", "archive", "partial")
# Statuses after which the row's image or file no longer exists; those that count as done.
GONE = ("removed", "would remove", "gone")
DONE = ("removed", "would remove", "untagged")


@dataclass(frozen=True)
class Row:
    """One cached thing: a tag on this node's engine or a file in the shared store."""

    kind: str  # personal | base | archive | partial
    name: str  # the tag, or the image an archive holds (its file name when unknown)
    user: str  # whom a personalized image is for; "-" otherwise
    size: int  # bytes it holds on its own: a personalized image's layers over its base
    last_use: float  # unix time
    image: str  # image ID; "" for a partial write
    base: str = ""  # a personalized image's base image ID
    path: str = ""  # the store file; "" for an image


@dataclass(frozen=True)
class Outcome:
    """What pruning did with one row."""

    row: Row
    status: str  # removed | would remove | untagged | in use | kept | gone | failed
    freed: int = 0
    detail: str = ""


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `45s`, `30m`, `12h`, `7d` or `2w`."""
    match = DURATION.fullmatch(text.strip())
    if not match:
        raise UsageError(
            f"bad duration {text!r}",
            hint="give a whole number and a unit: 45s, 30m, 12h, 7d or 2w",
        )
    return float(int(match[1]) * UNITS[match[2]])


def parse_time(text: object) -> float | None:
    """Unix time of a Docker timestamp; None when absent, zero (0001-01-01) or unreadable."""
    if not isinstance(text, str) or not text or text.startswith("0001-01-01"):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def last_use(attrs: Mapping[str, Any]) -> float:
    """When a job last used the image: its last tag time, else its creation."""
    tagged = parse_time((attrs.get("Metadata") or {}).get("LastTagTime"))
    return tagged or parse_time(attrs.get("Created")) or 0.0


def labels(attrs: Mapping[str, Any]) -> dict[str, str]:
    return dict((attrs.get("Config") or {}).get("Labels") or {})


def image_rows(inspected: Iterable[Mapping[str, Any]], base_sizes: Mapping[str, int]) -> list[Row]:
    """One row per mpidock tag of each image; base_sizes holds each known base's Size."""
    return used_by_children([r for attrs in inspected for r in tag_rows(attrs, base_sizes)])


def tag_rows(attrs: Mapping[str, Any], base_sizes: Mapping[str, int]) -> list[Row]:
    marks = labels(attrs)
    base = marks.get(BASE_LABEL, "")
    size, used, image = int(attrs.get("Size") or 0), last_use(attrs), str(attrs["Id"])
    own = max(0, size - base_sizes.get(base, 0))
    rows = []
    for tag in attrs.get("RepoTags") or []:
        repo = tag.rpartition(":")[0]
        if repo == REPO:
            rows.append(Row("personal", tag, marks.get(USER_LABEL, "-"), own, used, image, base))
        elif repo == BASE_REPO:
            rows.append(Row("base", tag, "-", size, used, image))
    return rows


def used_by_children(rows: Sequence[Row]) -> list[Row]:
    """A base is in use while an image built on it is: it takes their latest use."""
    latest: dict[str, float] = {}
    for r in rows:
        if r.kind == "personal" and r.base:
            latest[r.base] = max(latest.get(r.base, 0.0), r.last_use)
    return [
        replace(r, last_use=max(r.last_use, latest.get(r.image, 0.0))) if r.kind == "base" else r
        for r in rows
    ]


def store_row(
    path: Path, size: int, mtime: float, meta: Mapping[str, Any] | None, now: float
) -> Row | None:
    """An archive `<64 hex>.tar`, a dead writer's dot file, or None for anything else."""
    if ARCHIVE.fullmatch(path.name):
        name = str((meta or {}).get("image") or path.name)
        return Row("archive", name, "-", size, mtime, f"sha256:{path.stem}", path=str(path))
    dead = now - mtime > PARTIAL_AGE
    if path.name.startswith(".") and not path.name.endswith(LOCK) and dead:
        return Row("partial", path.name, "-", size, mtime, "", path=str(path))
    return None


def stale(rows: Iterable[Row], older_than: float, now: float) -> list[Row]:
    """Rows unused for longer than older_than seconds, personalized images before bases."""
    return sorted((r for r in rows if now - r.last_use > older_than), key=order)


def order(row: Row) -> tuple[int, float, str]:
    return KINDS.index(row.kind), row.last_use, row.name


def prune(rows: Sequence[Row], remove: Callable[[Row], Outcome]) -> list[Outcome]:
    """Removes rows in order; a base stays while an image built on it stays."""
    outcomes: list[Outcome] = []
    for row in rows:
        kept = {o.row.base for o in outcomes if o.status not in GONE}
        if row.kind == "base" and row.image in kept:
            outcomes.append(Outcome(row, "kept", detail="an image built on it stays"))
        else:
            outcomes.append(remove(row))
    return outcomes


def age_text(seconds: float) -> str:
    """The largest unit that fits, in the forms --older-than takes: 45s, 30m, 12h, 3d, 2w."""
    s = max(0, int(seconds))
    return next((f"{s // UNITS[u]}{u}" for u in "wdhm" if s >= UNITS[u]), f"{s}s")


def table(rows: Iterable[Row], now: float) -> str:
    """KIND NAME USER SIZE LAST-USE, one line a row, least recently used first per kind."""
    lines = [("KIND", "NAME", "USER", "SIZE", "LAST-USE")]
    for r in sorted(rows, key=order):
        age = f"{age_text(now - r.last_use)} ago"
        lines.append((r.kind, r.name, r.user, human_size(r.size), age))
    return columns(lines)


def rows_json(rows: Iterable[Row], now: float) -> list[dict[str, Any]]:
    return [asdict(r) | {"idle_s": round(now - r.last_use, 3)} for r in sorted(rows, key=order)]


def prune_report(outcomes: Sequence[Outcome], older_than: str) -> str:
    """One line per row pruning touched, then the total."""
    if not outcomes:
        return f"nothing unused for longer than {older_than}"
    lines = [("STATUS", "KIND", "NAME", "FREED", "")]
    for o in outcomes:
        freed = human_size(o.freed) if o.status in DONE else "-"
        lines.append((o.status, o.row.kind, o.row.name, freed, o.detail))
    return columns(lines) + "\n" + total(outcomes)


def total(outcomes: Sequence[Outcome]) -> str:
    done = [o for o in outcomes if o.status in DONE]
    freed = human_size(sum(o.freed for o in done))
    if any(o.status == "would remove" for o in done):
        text = f"total: {len(done)} would be removed, {freed} would be freed"
    else:
        text = f"total: {len(done)} removed, {freed} freed"
    kept = [o.status for o in outcomes if o.status not in DONE]
    return text + (f"; {len(kept)} not removed ({', '.join(kept)})" if kept else "")


def columns(lines: Sequence[tuple[str, ...]]) -> str:
    """Left-aligned columns two spaces apart; unprintable characters shown as '?'."""
    cells = [[_printable(c) for c in line] for line in lines]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    text = ("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells)
    return "\n".join(line.rstrip() for line in text)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def list_images(client: docker.DockerClient) -> list[Row]:
    """Rows for this engine's personalized images and the bases mpidock loaded."""
    found = {a["Id"]: a for repo in (REPO, BASE_REPO) for a in _inspect_repo(client, repo)}
    bases = {labels(a).get(BASE_LABEL, "") for a in found.values()} - {""}
    sizes = {b: int(a.get("Size") or 0) for b in bases if (a := _inspect(client, b))}
    return image_rows(found.values(), sizes)


def _inspect_repo(client: docker.DockerClient, repo: str) -> list[dict[str, Any]]:
    summaries = client.api.images(name=repo)
    return [a for s in summaries if (a := _inspect(client, s["Id"]))]


def _inspect(client: docker.DockerClient, ref: str) -> dict[str, Any] | None:
    """The image's attributes; None once it is gone (another prune may run meanwhile)."""
    try:
        return dict(client.api.inspect_image(ref))
    except NotFound:
        return None


def list_store(store: Path, now: float) -> list[Row]:
    """The store's archives and dead writers' leftovers, with the user's own area of a
    shared store (launcher.store); a missing store holds nothing."""
    rows = _list_dir(store, now)
    area = ImageStore(store).area
    if area != store and area.is_dir() and not area.is_symlink():
        rows += _list_dir(area, now)
    return rows


def _list_dir(store: Path, now: float) -> list[Row]:
    try:
        names = sorted(os.listdir(store))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ImageError(
            f"cannot read the image store {store}: {e.strerror}",
            hint="pass a readable store with --image-store DIR or MPIDOCK_IMAGE_STORE",
        ) from e
    rows = (_store_file(store / name, now) for name in names)
    return [r for r in rows if r]


def _store_file(path: Path, now: float) -> Row | None:
    try:
        st = path.lstat()  # a link or FIFO planted in a shared store is no row
    except OSError:
        return None  # removed since the listing
    if not stat.S_ISREG(st.st_mode):
        return None
    meta = _meta(path.with_suffix(".json"), st.st_uid) if ARCHIVE.fullmatch(path.name) else None
    return store_row(path, st.st_size, st.st_mtime, meta, now)


def _meta(path: Path, owner: int) -> dict[str, Any] | None:
    """An archive's note, if it is a regular file of the archive's owner (never blocks)."""
    try:
        text = storefiles.read_trusted(path, {owner})
        data = json.loads(text) if text else None
    except (ImageError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remover(
    client: docker.DockerClient, cutoff: float, now: float, *, dry_run: bool
) -> Callable[[Row], Outcome]:
    """Removes one row; anything used after cutoff (or a partial younger than a day) stays."""

    def remove(row: Row) -> Outcome:
        if dry_run:
            return Outcome(row, "would remove", row.size)
        if row.kind == "partial":
            return remove_file(row, min(cutoff, now - PARTIAL_AGE))
        if row.path:
            return remove_file(row, cutoff)
        return remove_image(client, row, cutoff)

    return remove


def remove_file(row: Row, cutoff: float) -> Outcome:
    """Deletes an archive and its .json, or a partial write, unless touched after cutoff."""
    path = Path(row.path)
    try:
        if path.stat().st_mtime > cutoff:
            return Outcome(row, "kept", detail="used since the listing")
        path.unlink()
    except FileNotFoundError:
        return Outcome(row, "gone")
    except OSError as e:
        return Outcome(row, "failed", detail=f"{e.strerror}: {path}")
    if row.kind == "archive":
        # Without its .tar the notes about it describe nothing; a leftover one is harmless.
        for note in (".json", ".mpi"):
            with contextlib.suppress(OSError):
                path.with_suffix(note).unlink()
    return Outcome(row, "removed", row.size)


def remove_image(client: docker.DockerClient, row: Row, cutoff: float) -> Outcome:
    """Removes the tag without force: the engine refuses while a container uses the image."""
    attrs = _inspect(client, row.name)
    if attrs is None:
        return Outcome(row, "gone")
    if attrs["Id"] != row.image or last_use(attrs) > cutoff:
        return Outcome(row, "kept", detail="used since the listing")
    try:
        client.images.remove(row.name)
    except NotFound:
        return Outcome(row, "gone")
    except APIError as e:
        return Outcome(row, "in use" if e.status_code == 409 else "failed", detail=_why(e))
    except DockerException as e:
        return Outcome(row, "failed", detail=_why(e))
    if _inspect(client, row.image) is None:
        return Outcome(row, "removed", row.size)
    return Outcome(row, "untagged", detail="other tags or images built on it keep it")


def _why(e: DockerException) -> str:
    text = str(getattr(e, "explanation", None) or e).strip()
    return (text.splitlines() or [""])[0][:200]
