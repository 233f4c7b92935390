"""Make `mpidock` runnable by every user on every node: a venv outside any home."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from launcher.proc import run
from launcher.testbed.layout import MPIDOCK_BIN

VENV = Path("/opt/mpidock/venv")
LINK = MPIDOCK_BIN
SYSTEM_PYTHON = "/usr/bin/python3"


def source_root() -> Path:
    return Path(__file__).resolve().parents[2]


def world_readable(path: Path) -> bool:
    """True when others may read path and traverse every directory above it."""
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        need = stat.S_IXOTH if p != path or stat.S_ISDIR(mode) else stat.S_IROTH
        if not mode & need:
            return False
    return bool(path.stat().st_mode & stat.S_IROTH)


def ensure_installed(src: Path | None = None) -> str:
    """Install the launcher from src into the shared venv; returns what was done."""
    src = src or source_root()
    editable = world_readable(src / "launcher" / "__init__.py")
    stamp = VENV / ".mpidock-source"
    want = f"{src}\n{editable}\n{_digest(src / 'pyproject.toml')}\n"
    if editable and stamp.exists() and stamp.read_text() == want and LINK.exists():
        return "up to date"
    if not (VENV / "bin" / "python").exists():
        run([SYSTEM_PYTHON, "-m", "venv", str(VENV)], timeout=300)
    pip = [str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    run([*pip, *(["-e", str(src)] if editable else ["--force-reinstall", str(src)])], timeout=600)
    stamp.write_text(want)
    if LINK.is_symlink() or LINK.exists():
        LINK.unlink()
    os.symlink(VENV / "bin" / "mpidock", LINK)
    return "installed (editable)" if editable else "installed (copy)"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
