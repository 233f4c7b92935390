"""Host MPI injection: the ABI verdict between an image's MPI and a site's, and the injection.

A site names its own MPI installations in the configuration (`[host_mpi.NAME]`, see
launcher.config); `--host-mpi NAME` asks for one in place of the image's MPI. The leader
probes the image once per image ID (PROBE: its `mpirun --version`, its PATH and
LD_LIBRARY_PATH, the shared libraries its loader finds) and decides here, before any
container of the job starts:

The image's ABIs are the MPI libraries it holds: libmpi.so.12 (and Debian's name for
the same library, libmpich.so.12) is the MPICH ABI, shared by MPICH since 3.1 and Intel
MPI; libmpi.so.40 is Open MPI's (3.0 to 5); libmpi_abi.so.1 is the MPI-5 standard ABI,
whatever the family. The soname's number is the ABI's major version. The host MPI's
`abi` must be one of the image's ABIs, whatever the check; then, by the host MPI's
`check`:

- ``major`` (the default): nothing more. The soname is the ABI's promise, so an image
  built against Debian's MPICH 4.0.2 runs with a host MPICH 5 (both libmpi.so.12).
- ``full``: also the same family, and the host's version at least the image's
  (compared number by number: 5.0.2 >= 4.0.2); an image whose version is unknown is
  refused.
- ``strict``: also the same family and the identical version.

Refusal is one HostMpiRefused line naming both sides and the fix. A pass gives an
Injection: the host MPI's prefix (and its `libs`, such as its own libfabric and UCX)
bound read-only at the same path into every container; its bin/ first on PATH and its
lib/ and `libs` first on LD_LIBRARY_PATH, in the leader's container and for every rank;
the host's own mpiexec (mpirun) by its full path, so that Hydra's ssh'd proxies (Open
MPI's daemons, through --prefix) are the host's too. A program linked against Debian's
libmpich.so.12 finds the host's libmpi.so.12 under that name through a link in the job
directory (ALIASES), put first on the library path.

Pure: nothing here runs anything; launcher.injection gathers the facts and writes links.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from launcher.errors import ImageError, LauncherError
from launcher.mpi import MpiFlavor, MpiFound, detect_mpi

CHECKS = ("major", "full", "strict")
MPICH_ABI = "libmpi.so.12"
OPENMPI_ABI = "libmpi.so.40"
STANDARD_ABI = "libmpi_abi.so.1"
ABI_NAMES = {MPICH_ABI: "MPICH ABI", OPENMPI_ABI: "Open MPI ABI", STANDARD_ABI: "MPI-5 ABI"}
# Debian and Ubuntu name the MPICH ABI's libraries libmpich*: the host's, by those names.
ALIASES = {
    "libmpich.so.12": "libmpi.so.12",
    "libmpichcxx.so.12": "libmpicxx.so.12",
    "libmpichfort.so.12": "libmpifort.so.12",
}
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHIM = "host-mpi"  # the job directory's subdirectory of ALIASES links
_SONAME = re.compile(r"lib[A-Za-z0-9_+-]+\.so\.[0-9]+")
_MPI_LIB = re.compile(r"lib(mpi|mpi_abi|mpich|mpichcxx|mpichfort)\.so\.[0-9]+")
_C_LIB = re.compile(r"lib(mpi|mpi_abi)\.so\.[0-9]+")
_MARK = "@@mpidock-libraries"

# Run in the image (on its base, as its own user) once per image ID: the launcher's
# version, then the environment and the libraries its loader would find.
PROBE = (
    "/bin/sh",
    "-c",
    "mpirun --version 2>&1 || mpiexec --version 2>&1\n"
    f"echo {_MARK}\n"
    "printf 'PATH=%s\\n' \"$PATH\"\n"
    "printf 'LD_LIBRARY_PATH=%s\\n' \"${LD_LIBRARY_PATH:-}\"\n"
    "{ ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null | while read -r name rest; do\n"
    "  printf 'LIB %s\\n' \"$name\"; done\n"
    "IFS=:\n"
    'for dir in ${LD_LIBRARY_PATH:-}; do for f in "$dir"/lib*.so.*; do\n'
    '  [ -e "$f" ] && printf \'LIB %s\\n\' "${f##*/}"; done; done\n'
    "exit 0\n",
)


class HostMpiRefused(LauncherError):
    """The image's MPI and the host MPI asked for are not ABI compatible under its check."""


@dataclass(frozen=True)
class HostMpi:
    """One `[host_mpi.NAME]` of the configuration: an MPI installed on every node.

    Attributes:
        name: the table's NAME, as --host-mpi names it.
        path: its prefix on the host (bin/, lib/), the same on every node.
        family: its launcher family.
        abi: the soname its C library provides, e.g. libmpi.so.12.
        version: its version, e.g. 5.0.2.
        check: how closely the image's MPI must match: major, full or strict.
        libs: further host directories its libraries need (its own libfabric, UCX).
        source: where it is declared (file:line).
    """

    name: str
    path: str
    family: MpiFlavor
    abi: str
    version: str
    check: str = "major"
    libs: tuple[str, ...] = ()
    source: str = ""

    @property
    def bin_dir(self) -> str:
        return f"{self.path.rstrip('/')}/bin"

    @property
    def lib_dir(self) -> str:
        return f"{self.path.rstrip('/')}/lib"

    @property
    def launcher(self) -> str:
        """Its mpiexec (Open MPI: mpirun) by full path: Hydra starts its proxies from
        the directory its own program was found in."""
        return f"{self.bin_dir}/{'mpiexec' if self.family.hydra else 'mpirun'}"

    @property
    def binds(self) -> tuple[str, ...]:
        """Host directories bound read-only at the same path into every container."""
        return tuple(dict.fromkeys((self.path, *self.libs)))

    def __str__(self) -> str:
        return f"host MPI {self.name} ({self.family.value} {self.version}, {self.abi})"


@dataclass(frozen=True)
class ImageMpi:
    """What the probe found of the image's MPI.

    Attributes:
        family: from `mpirun --version`; None when the image has no launcher we know.
        version: its version, "" when unknown.
        libs: the MPI libraries' sonames its loader finds (libmpi.so.12, ...).
        path: the image's PATH ("" when it sets none).
        ld_library_path: the image's LD_LIBRARY_PATH.
    """

    family: MpiFlavor | None
    version: str = ""
    libs: tuple[str, ...] = ()
    path: str = ""
    ld_library_path: str = ""

    @property
    def abis(self) -> tuple[str, ...]:
        """The ABIs its libraries provide, Debian's libmpich.so.12 as libmpi.so.12."""
        names = (ALIASES.get(lib, lib) for lib in self.libs)
        return tuple(dict.fromkeys(name for name in names if _C_LIB.fullmatch(name)))

    def __str__(self) -> str:
        what = f"{self.family.value} {self.version}".strip() if self.family else "an MPI"
        return f"{what} ({', '.join(self.libs) or 'no shared libmpi'})"


def parse_probe(text: str) -> ImageMpi:
    """The image's MPI from PROBE's output."""
    version_text, _, rest = text.partition(_MARK)
    try:
        found: MpiFound | None = detect_mpi(version_text)
    except ImageError:  # a library without a launcher: the host's launches it
        found = None
    values: dict[str, str] = {}
    libs: list[str] = []
    for line in rest.splitlines():
        if line.startswith("LIB "):
            name = line[4:].strip()
            if _MPI_LIB.fullmatch(name) and name not in libs:
                libs.append(name)
        elif "=" in line:
            key, _, value = line.partition("=")
            values[key] = value
    return ImageMpi(
        family=found.flavor if found else None,
        version=found.version if found else "",
        libs=tuple(sorted(libs)),
        path=values.get("PATH", ""),
        ld_library_path=values.get("LD_LIBRARY_PATH", ""),
    )


def valid_abi(text: str) -> bool:
    return bool(_SONAME.fullmatch(text))


def version_key(version: str) -> tuple[int, ...] | None:
    """5.0.2 -> (5, 0, 2); None for a version without a leading number."""
    parts = re.match(r"[0-9]+(\.[0-9]+)*", version)
    return tuple(int(p) for p in parts.group(0).split(".")) if parts else None


def verdict(image: ImageMpi, host: HostMpi) -> None:
    """Passes, or refuses in one line naming both sides and the fix.

    Raises:
        HostMpiRefused: the ABI differs, or the host's check finds the versions apart.
    """
    if found := _mismatch(image, host):
        why, fix = found
        raise HostMpiRefused(
            f"--host-mpi {host.name}: refused: the image's MPI is {image}, {host} "
            f"(check {host.check}): {why}",
            hint=fix,
        )


def _mismatch(image: ImageMpi, host: HostMpi) -> tuple[str, str] | None:
    """Why the host MPI cannot replace the image's, and the fix; None when it can."""
    without = "run without --host-mpi (the image's own MPI)"
    if not image.libs:
        why = "no shared MPI library found (ldconfig -p, LD_LIBRARY_PATH)"
        return why, f"{without}: a static MPI cannot be replaced"
    if host.abi not in image.abis:
        why = f"the ABI differs ({host.abi} is not among {', '.join(image.abis)})"
        return why, f"{without}, or name a host MPI of ABI {' or '.join(image.abis)}"
    if host.check == "major":
        return None
    if image.family is not host.family:
        return f"check {host.check} needs the same family", f"{without}, or another host MPI"
    mine, theirs = version_key(image.version), version_key(host.version)
    if mine is None or theirs is None:
        why = f"check {host.check} needs the image's version, which is unknown"
        return why, f"{without}, or ask the site for a host MPI with check major"
    if host.check == "full" and theirs < mine:
        why = f"check full needs the host's version >= {image.version}"
        return why, f"{without}, or name a newer host MPI"
    if host.check == "strict" and theirs != mine:
        why = "check strict needs the identical version"
        fix = f"{without}, or an image built with {host.family.value} {host.version}"
        return why, fix
    return None


@dataclass(frozen=True)
class Injection:
    """A host MPI the plan puts into the job's containers, and the image it goes into
    (None until the leader has probed the image: the workers' and --dry-run's plans)."""

    host: HostMpi
    image: ImageMpi | None = None

    def aliases(self) -> tuple[tuple[str, str], ...]:
        """(name, host library) links the job directory's SHIM holds: the image's
        libmpich*.so.12 names for the host's libraries (MPICH ABI hosts only)."""
        if self.image is None or self.host.abi != MPICH_ABI:
            return ()
        names = [lib for lib in self.image.libs if lib in ALIASES]
        return tuple((name, f"{self.host.lib_dir}/{ALIASES[name]}") for name in names)

    def environment(self, shim: str) -> tuple[tuple[str, str], ...]:
        """PATH and LD_LIBRARY_PATH: the host MPI's first, then the image's own."""
        image = self.image or ImageMpi(None)
        path = [self.host.bin_dir, image.path or DEFAULT_PATH]
        ld = [*([shim] if self.aliases() else []), self.host.lib_dir, *self.host.libs]
        ld += [image.ld_library_path] if image.ld_library_path else []
        return (("PATH", ":".join(path)), ("LD_LIBRARY_PATH", ":".join(ld)))

    def describe(self) -> str:
        """Which MPI runs: 'host MPI mpich5 (mpich 5.0.2) injected into image's mpich 4.0.2'."""
        host = self.host
        said = f"host MPI {host.name} ({host.family.value} {host.version})"
        if (image := self.image) is None:
            return f"{said} to be injected (check {host.check} of the image's MPI at launch)"
        mpi = f"{image.family.value} {image.version}".strip() if image.family else "MPI"
        return f"{said} injected into image's {mpi}"

    def record(self) -> dict[str, Any]:
        host, image = self.host, self.image
        return {
            "name": host.name, "family": host.family.value, "version": host.version,
            "abi": host.abi, "check": host.check, "path": host.path, "libs": list(host.libs),
            "image": None if image is None else {
                "family": image.family.value if image.family else None,
                "version": image.version, "libs": list(image.libs),
            },
            "ran": self.describe(),
        }  # fmt: skip


def launcher_argv(argv: Sequence[str], host: HostMpi) -> list[str]:
    """The family's argv with the host's launcher by full path; Open MPI's gets --prefix
    so that its ssh'd daemons find the host's installation on every node."""
    if not argv:
        return []
    head = [host.launcher] + ([] if host.family.hydra else ["--prefix", host.path])
    return [*head, *argv[1:]]
