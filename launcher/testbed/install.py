"""Make `mpidock` runnable by every user on every node: a venv outside any home.

From a checkout the venv gets the source (editable where every user can read it, else a
copy); from an installed mpidock (`pip install .`, no source beside it) it gets a copy
of the installed package and the same dependencies.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import stat
from pathlib import Path

from launcher.proc import run
from launcher.testbed.layout import MPIDOCK_BIN

VENV = Path("/opt/mpidock/venv")
LINK = MPIDOCK_BIN
SYSTEM_PYTHON = "/usr/bin/python3"


PACKAGE = Path(__file__).resolve().parents[1]  # the launcher package, wherever it is
ENTRY = "#!{python}\nimport sys\n\nfrom launcher.cli import main\n\nsys.exit(main())\n"


def source_root() -> Path | None:
    """The checkout this launcher runs from, or None for an installed copy."""
    root = PACKAGE.parent
    return root if (root / "pyproject.toml").is_file() else None


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
    if src is None:
        return _install_package_copy()
    editable = world_readable(src / "launcher" / "__init__.py")
    stamp = VENV / ".mpidock-source"
    want = f"{src}\n{editable}\n{_digest(src / 'pyproject.toml')}\n"
    if editable and stamp.exists() and stamp.read_text() == want and LINK.exists():
        return "up to date"
    _fresh_venv()
    pip = [str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    run([*pip, *(["-e", str(src)] if editable else ["--force-reinstall", str(src)])], timeout=600)
    stamp.write_text(want)
    if LINK.is_symlink() or LINK.exists():
        LINK.unlink()
    os.symlink(VENV / "bin" / "mpidock", LINK)
    return "installed (editable)" if editable else "installed (copy)"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _install_package_copy() -> str:
    """The installed launcher package copied into the venv, beside its dependencies."""
    stamp = VENV / ".mpidock-source"
    want = f"{PACKAGE}\ncopy\n{_tree_digest(PACKAGE)}\n"
    if stamp.exists() and stamp.read_text() == want and LINK.exists():
        return "up to date (copy of the installed package)"
    _fresh_venv()
    requires = [r for r in importlib.metadata.requires("mpidock") or [] if "extra ==" not in r]
    pip = [str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    run([*pip, *requires], timeout=600)
    site = Path(_venv_purelib())
    shutil.copytree(PACKAGE, site / "launcher", ignore=shutil.ignore_patterns("__pycache__"))
    entry = VENV / "bin" / "mpidock"
    entry.write_text(ENTRY.format(python=VENV / "bin" / "python"))
    entry.chmod(0o755)
    stamp.write_text(want)
    if LINK.is_symlink() or LINK.exists():
        LINK.unlink()
    os.symlink(entry, LINK)
    return "installed (copy of the installed package)"


def _fresh_venv() -> None:
    """The venv, holding no launcher: an earlier install of either kind would shadow the
    next (a copied package in site-packages hides an editable install's finder)."""
    if not (VENV / "bin" / "python").exists():
        run([SYSTEM_PYTHON, "-m", "venv", str(VENV)], timeout=300)
        return
    uninstall = [str(VENV / "bin" / "pip"), "uninstall", "-y", "-q", "mpidock"]
    run(uninstall, timeout=300, check=False)
    shutil.rmtree(Path(_venv_purelib()) / "launcher", ignore_errors=True)


def _venv_purelib() -> str:
    """The venv's own site-packages, as its Python (not ours) lays it out."""
    ask = "import sysconfig; print(sysconfig.get_path('purelib'))"
    return str(run([str(VENV / "bin" / "python"), "-c", ask], timeout=60).stdout).strip()


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]
