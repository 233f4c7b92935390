"""Podman's node-local storage of one user: where it is, and that it is the user's own.

Checked with lstat from the top down: another user who made the directory first, a
symlink planted in its place, or a network filesystem (rootless overlay storage breaks
on NFS, and nodes must not share one store) each stop the job with one line.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import IO

from launcher.engines.base import EngineUnavailable

NETWORK_FS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "beegfs", "ceph", "fuse.sshfs", "9p"}
)


@dataclasses.dataclass(frozen=True)
class Layout:
    """What lives under one user's Podman root on one node."""

    root: Path

    @property
    def storage(self) -> Path:
        """Overlay storage (native rootless overlay), with or without a shared image store;
        Podman's own default here is vfs, which copies the whole image per container."""
        return self.root / "storage-overlay"

    @property
    def runroot(self) -> Path:
        return self.root / "run-overlay"

    @property
    def runtime_dir(self) -> Path:
        return self.root / "xdg"

    @property
    def containers_conf(self) -> Path:
        return self.root / "containers.conf"

    def socket(self, pid: int) -> Path:
        return self.root / f"api-{pid}.sock"

    def log(self, pid: int) -> Path:
        return self.root / f"service-{pid}.log"

    def stale(self) -> list[Path]:
        """The sockets and logs of services whose slurm-entry (the pid in the name) no
        longer runs: killed before it could remove them. A reused pid keeps its files."""
        found = []
        for path in [*self.root.glob("api-*.sock"), *self.root.glob("service-*.log")]:
            pid = path.stem.split("-", 1)[1]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                found.append(path)
        return sorted(found)

    def make(self) -> None:
        for path in (self.storage, self.runroot, self.runtime_dir):
            path.mkdir(mode=0o700, exist_ok=True)
            os.chmod(path, 0o700)


def expand(template: str, uid: int, user: str, node: str) -> str:
    """`{uid}`, `{user}` and `{node}` filled in; a template without `{node}` gets the
    node's name appended, since nodes must never share one store."""
    if "{node}" not in template:
        template = template.rstrip("/") + "/{node}"
    return template.replace("{uid}", str(uid)).replace("{user}", user).replace("{node}", node)


def prepare_root(template: str, uid: int, user: str, node: str) -> Path:
    """The user's Podman root on this node, made 0700 where missing.

    Raises:
        EngineUnavailable: a path that is relative, on a network filesystem, or where a
            directory on the way belongs to another user (or is writable by others
            without the sticky bit), or the root itself is not the user's directory.
    """
    root = Path(expand(template, uid, user, node))
    if not root.is_absolute():
        raise _refused(root, "is not an absolute path", node)
    if (fs := fs_type(root)) in NETWORK_FS:
        raise _refused(root, f"is on {fs}: rootless storage must be node-local", node)
    for part in [*reversed(root.parents), root]:
        _step(part, uid, node, last=part == root)
    return root


def _step(path: Path, uid: int, node: str, *, last: bool) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass  # another step of the job made it: checked below like any
        except OSError as e:
            raise _refused(path, f"cannot be made: {e.strerror}", node) from e
        info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) and (last or info.st_uid not in (0, uid)):
        raise _refused(path, "is a symlink", node)
    if last:
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
            raise _refused(path, f"is not a directory of UID {uid}", node)
        if info.st_mode & 0o077:
            os.chmod(path, 0o700)
        return
    if info.st_uid not in (0, uid):
        raise _refused(path, f"belongs to UID {info.st_uid}", node)
    if info.st_uid != uid and info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise _refused(path, "is writable by others", node)


def _refused(path: Path, why: str, node: str) -> EngineUnavailable:
    return EngineUnavailable(
        f"podman storage {path} {why}",
        node=node,
        hint="set podman_root (MPIDOCK_PODMAN_ROOT) to a node-local directory of your own, "
        "e.g. /var/tmp/mpidock-podman-{uid}/{node}",
    )


def fs_type(path: Path, mountinfo: str | None = None) -> str:
    """The filesystem type of the mount holding path (longest mount point prefix)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return ""
    best, kind = "", ""
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        point = fields[4].replace("\\040", " ")
        inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, right.split()[0]
    return kind


def require_subids(path: Path, user: str, uid: int, node: str) -> None:
    """The user has a subordinate ID range of at least 65536 in path (/etc/subuid, ...)."""
    try:
        text = path.read_text()
    except OSError:
        text = ""
    if subid_count(text, user, uid) < 65536:
        raise EngineUnavailable(
            f"{user} has no {path.name} range for rootless Podman",
            node=node,
            hint=f"as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 "
            f"{user} (a range no other user has)",
        )


def subid_count(text: str, user: str, uid: int) -> int:
    """How many subordinate IDs text grants the user (by name or UID)."""
    total = 0
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (user, str(uid)) and parts[2].isdigit():
            total += int(parts[2])
    return total


def write_private(path: Path, text: str) -> None:
    """Whole, 0600, by rename: a concurrent job of the user reads the old or the new."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def open_lock(path: Path) -> IO[str]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    return os.fdopen(fd, "r+")
