"""The job user's identity, read from the host: name, UID, GID, groups, home, shell."""

from __future__ import annotations

import grp
import os
import pwd

from launcher.errors import UsageError
from launcher.plan import Identity


def current_identity() -> Identity:
    """Who runs this process, with supplementary groups exactly as the kernel has them."""
    uid, gid = os.getuid(), os.getgid()
    try:
        entry = pwd.getpwuid(uid)
    except KeyError as e:
        raise UsageError(
            f"UID {uid} has no passwd entry on this host",
            hint="the job user must be known to the node (getent passwd)",
        ) from e
    groups = tuple(
        sorted({(_group_name(g), g) for g in os.getgroups() if g != gid}, key=lambda p: p[1])
    )
    return Identity(
        user=entry.pw_name, uid=uid, gid=gid, group=_group_name(gid), groups=groups,
        home=entry.pw_dir, shell=entry.pw_shell or "/bin/sh",
    )  # fmt: skip


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return f"g{gid}"
