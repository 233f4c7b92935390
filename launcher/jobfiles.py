"""Files in a directory other users may reach: trusted only when lstat says they are real
(no symlink, no FIFO), the user's own and not open to others; read without following a
symlink or blocking on a FIFO, checked again on the open file; written whole.

The per-job directory (launcher.jobdir) is made of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from launcher.errors import JobDirError


def verify_dir(path: Path, uid: int | None = None) -> None:
    """A real directory (lstat: no symlink), owned by uid (default: ours), mode 0700.

    Raises:
        JobDirError: it is not.
    """
    info = _lstat(path)
    owner = os.geteuid() if uid is None else uid
    if not stat.S_ISDIR(info.st_mode):
        _untrusted(path, f"is a {file_kind(info.st_mode)}, not a directory")
    if info.st_uid != owner:
        _untrusted(path, f"is owned by UID {info.st_uid}, not {owner}")
    if stat.S_IMODE(info.st_mode) & 0o077:
        _untrusted(path, f"has mode {stat.S_IMODE(info.st_mode):04o}, not 0700")


def verify_file(path: Path, uid: int | None = None, *, private: bool = False) -> None:
    """A regular file (lstat: no symlink, no FIFO), owned by uid, writable only by it;
    private: readable only by it too.

    Raises:
        JobDirError: it is not, or it is missing.
    """
    info = _lstat(path)
    _check_file(path, info, os.geteuid() if uid is None else uid, private)


def read_trusted(path: Path, uid: int | None = None) -> str:
    """The text of a verified file, opened without following a symlink or blocking on a
    FIFO, checked again on the open file.

    Raises:
        JobDirError: it is missing, unreadable or not trustworthy.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise JobDirError(f"cannot read {path}: {e.strerror}") from e
    with os.fdopen(fd, "r", encoding="utf-8") as f:
        _check_file(path, os.fstat(fd), os.geteuid() if uid is None else uid, False)
        return f.read()


def read_report(path: Path) -> dict[str, Any] | None:
    """A node's JSON report in the job directory, read as read_trusted reads; None while
    it is missing or not whole.

    Raises:
        JobDirError: it is there but not trustworthy (a symlink, a FIFO, someone else's).
    """
    try:
        text = read_trusted(path)
    except JobDirError as e:
        if isinstance(e.__cause__, FileNotFoundError):
            return None
        raise
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def write_file(target: Path, text: str, mode: int) -> None:
    """Writes a job file whole: readers on other nodes never see half of it.

    Written to a temporary name, created 0600 and set to its final mode before any
    secret is written, then renamed into place (replacing an earlier version).

    Raises:
        JobDirError: it cannot be written.
    """
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
        os.replace(partial, target)
    except OSError as e:
        _unlink(partial)
        raise JobDirError(f"cannot write {target}: {e.strerror or e}") from e


def _check_file(path: Path, info: os.stat_result, owner: int, private: bool) -> None:
    if not stat.S_ISREG(info.st_mode):
        _untrusted(path, f"is a {file_kind(info.st_mode)}, not a regular file")
    if info.st_uid != owner:
        _untrusted(path, f"is owned by UID {info.st_uid}, not {owner}")
    mode = stat.S_IMODE(info.st_mode)
    if mode & (0o077 if private else 0o022):
        _untrusted(path, f"has mode {mode:04o}, open to other users")


def _lstat(path: Path) -> os.stat_result:
    try:
        return path.lstat()
    except OSError as e:
        raise JobDirError(f"cannot check {path}: {e.strerror}") from e


def file_kind(mode: int) -> str:
    """What an lstat or fstat mode is, in words, for an error naming a planted file."""
    kinds = {stat.S_ISLNK: "symlink", stat.S_ISFIFO: "FIFO", stat.S_ISSOCK: "socket"}
    kinds |= {stat.S_ISCHR: "character device", stat.S_ISBLK: "block device"}
    kinds |= {stat.S_ISDIR: "directory", stat.S_ISREG: "regular file"}
    return next((name for test, name in kinds.items() if test(mode)), "special file")


def _untrusted(path: Path, why: str) -> None:
    raise JobDirError(
        f"{path} {why}: it is not this user's own, so mpidock does not trust it",
        hint="another user may have planted it in a shared job root: tell your admins, "
        "and remove it or use another --job-root",
    )


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
