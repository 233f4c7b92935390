"""Files of the image store on a filesystem other users share: trusted reads, private
writes, and locks with deadlines.

A file is trusted only when lstat and fstat agree that it is a regular file (no symlink,
FIFO, socket or device), owned by a trusted UID and writable by its owner alone. It is
opened with O_NOFOLLOW|O_NONBLOCK, so a FIFO planted in place of a file is refused by
name instead of blocking the reader. New files are created with O_EXCL|O_NOFOLLOW, so a
planted symlink never redirects a write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pwd
import socket
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import BinaryIO

from launcher import proc
from launcher.errors import ImageError
from launcher.jobfiles import file_kind

LOCK_POLL = 0.1
# flock fails with these where the filesystem has no lock support (some NFS/FUSE mounts).
NO_FLOCK = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})
BUSY = frozenset({errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES})
Flock = Callable[[int, int], None]


class Untrusted(ImageError):
    """A store file that is not what it claims: not a regular file, or not ours."""

    def __init__(self, path: Path, why: str) -> None:
        self.path, self.why = path, why
        super().__init__(
            f"refusing {path}: {why}",
            hint=f"remove {path}; only you or the owner of the image store may write into it",
        )


class SaveAbandoned(ImageError):
    """The job no longer needs the save under way (it is ending for its own reason)."""


def owner_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def refusal(st: os.stat_result, trusted: Collection[int], kind: str = "file") -> str:
    """Why a stat result is not a trusted file (or directory); empty when it is."""
    is_kind = stat.S_ISDIR if kind == "directory" else stat.S_ISREG
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not is_kind(st.st_mode):
        return f"it is not a regular {kind} but a {file_kind(st.st_mode)}"
    if st.st_uid not in trusted:
        mine = " or ".join(owner_name(u) for u in sorted(trusted))
        return f"it belongs to {owner_name(st.st_uid)}, not to {mine}"
    if st.st_mode & 0o022:
        return f"it is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def check_dir(path: Path, trusted: Collection[int]) -> None:
    """Raises Untrusted unless path is a real directory, owned by a trusted UID, that
    nobody else may write into."""
    if why := refusal(os.lstat(path), trusted, "directory"):
        raise Untrusted(path, why)


def open_trusted(path: Path, trusted: Collection[int]) -> BinaryIO:
    """The file opened for reading, if it is a trusted regular file.

    Raises:
        FileNotFoundError: it is not there.
        Untrusted: it is there but not a trusted regular file.
    """
    if why := refusal(os.lstat(path), trusted):
        raise Untrusted(path, why)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO):  # swapped for a link or socket since
            raise Untrusted(path, "it changed into a link or socket while being opened") from e
        raise
    try:
        if why := refusal(os.fstat(fd), trusted):  # swapped between lstat and open
            raise Untrusted(path, why)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_trusted(path: Path, trusted: Collection[int], limit: int = 1 << 20) -> str | None:
    """The text of a small trusted file; None when absent or unreadable.

    Raises:
        Untrusted: it is there but not a trusted regular file.
    """
    try:
        with open_trusted(path, trusted) as f:
            return f.read(limit).decode()
    except (OSError, UnicodeDecodeError):
        return None


def create_new(path: Path, mode: int) -> BinaryIO:
    """A new file for writing; never follows or reuses what is already at path (the
    umask applies to mode, as for any file the user creates)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(path, flags, mode), "wb")


def write_text(path: Path, text: str, mode: int) -> None:
    """Replaces path with text at once: written beside it, then renamed over it."""
    partial = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)  # our own dead attempt; unlink never follows a link
    try:
        with create_new(partial, mode) as out:
            out.write(text.encode())
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(
    path: Path,
    timeout: float,
    stop: threading.Event | None = None,
    flock: Flock = fcntl.flock,
) -> Iterator[None]:
    """Holds the lock at path for the with-block: flock where the filesystem has it, else
    an O_EXCL lock file beside it. Only this user's own lock files are used.

    Raises:
        ImageError: another holder kept it past the timeout (named), or it is unusable.
        SaveAbandoned: stop was set while waiting.
    """
    until = time.monotonic() + timeout
    fd = _open_lock(path)
    try:
        if _flock(fd, path, until, stop, flock):
            yield
            return
    finally:
        os.close(fd)
    with _exclusive(path.with_name(path.name + ".excl"), until, stop):
        yield


def _open_lock(path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO):
            raise Untrusted(path, "it is a symbolic link or socket") from e
        raise ImageError(
            f"cannot write the image store {path.parent}: {e.strerror}",
            hint="set --image-store to a directory on the shared filesystem you can write",
        ) from e
    if why := refusal(os.fstat(fd), {os.geteuid()}):
        os.close(fd)
        raise Untrusted(path, why)
    return fd


def _flock(fd: int, path: Path, until: float, stop: threading.Event | None, flock: Flock) -> bool:
    """Takes the flock, polling until the deadline; False where flock is not supported."""
    while True:
        try:
            flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno in NO_FLOCK:
                return False
            if e.errno not in BUSY:
                raise ImageError(f"cannot lock {path}: {e.strerror}") from e
        _wait_turn(path, until, stop, "another save of this image")


@contextlib.contextmanager
def _exclusive(path: Path, until: float, stop: threading.Event | None) -> Iterator[None]:
    """An O_EXCL lock file holding `host pid`; one left by a dead process of this host
    is taken over, one of another host waits out the deadline and is named."""
    me = f"{socket.gethostname()} {os.getpid()}\n"
    while True:
        try:
            with create_new(path, 0o600) as out:
                out.write(me.encode())
            break
        except FileExistsError:
            holder = _holder(path)
            if holder is not None and _dead_here(holder):
                path.unlink(missing_ok=True)
                continue
            _wait_turn(path, until, stop, f"a save by {holder or 'an unknown process'}")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _holder(path: Path) -> str | None:
    try:
        return read_trusted(path, {os.geteuid()}, 256)
    except Untrusted:
        return None


def _dead_here(holder: str) -> bool:
    host, _, pid = holder.strip().partition(" ")
    if host != socket.gethostname() or not pid.isdecimal():
        return False
    return not proc.alive(int(pid))


def _wait_turn(path: Path, until: float, stop: threading.Event | None, who: str) -> None:
    if stop is not None and stop.is_set():
        raise SaveAbandoned("the save was abandoned: the job no longer needs it")
    if time.monotonic() > until:
        raise ImageError(
            f"{who} still holds {path} after the lock's deadline",
            hint=f"wait for it to finish, or remove {path} if no mpidock job of yours runs",
        )
    time.sleep(LOCK_POLL)
