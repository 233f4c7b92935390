"""Pure planning for an image made for host binaries: ldd and dpkg output in, a Dockerfile
and a content tag out. No subprocess and no engine call here."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from launcher.errors import ImageError

TAG_REPO = "mpidock-auto"
LABEL = "org.mpidock.containerize"
LIB_DIR = "/opt/mpidock-libs"  # libraries no package owns (built in the home, say)
BIN_DIR = "/usr/local/bin"  # on the default PATH of every ssh session, too
# Every image must run under mpidock's ssh launch mode: sshd in the workers, ssh in mpirun.
ALWAYS = ("openssh-client", "openssh-server")
# The MPI's launcher, named by the package that owns its libmpi.
LAUNCHERS = {"libopenmpi3": "openmpi-bin", "libmpich12": "mpich", "libmpich-dev": "mpich"}
_NAME = re.compile(r"[A-Za-z0-9._+-]+")
_LDD_LINE = re.compile(r"^\s*(\S+)(?:\s+=>\s+(.*?))?\s+\(0x[0-9a-f]+\)\s*$")


class ContainerizeError(ImageError):
    """A binary that cannot be containerized, or a host that cannot tell how."""


@dataclass(frozen=True)
class Library:
    """A shared library a binary loads: its soname and its path on the host."""

    name: str
    path: str


@dataclass(frozen=True)
class ImagePlan:
    """What the image holds; `tag` is derived from all of it and the base's ID."""

    base: str
    base_id: str
    binaries: tuple[tuple[str, str], ...]  # (name in the image, host path)
    packages: tuple[str, ...]
    unowned: tuple[Library, ...]  # copied into LIB_DIR
    digest: str
    tag: str

    @property
    def dockerfile(self) -> str:
        return dockerfile_text(self)


def parse_ldd(binary: str, text: str) -> tuple[Library, ...]:
    """The libraries `ldd BINARY` lists (the vDSO, having no file, left out).

    Raises:
        ContainerizeError: a library ldd cannot find, or no dynamic libraries (static).
    """
    if "not a dynamic executable" in text or "statically linked" in text:
        raise ContainerizeError(
            f"{binary} is statically linked: it needs no libraries",
            hint="run it in any image with --image, e.g. the site's base",
        )
    found, missing = [], []
    for line in text.splitlines():
        if "=> not found" in line:
            missing.append(line.split()[0])
        elif (m := _LDD_LINE.match(line)) and (m[2] or m[1]).startswith("/"):
            found.append(Library(m[1].rsplit("/", 1)[-1], m[2] or m[1]))
    if missing:
        raise ContainerizeError(
            f"{binary}: ldd finds no {', '.join(missing)}",
            hint="set LD_LIBRARY_PATH as the program runs here, then containerize again",
        )
    return tuple(found)


def parse_dpkg_search(text: str) -> dict[str, str]:
    """`dpkg-query -S PATH...` as {path: package} (the architecture suffix dropped; a
    diversion line and a path several packages share keep the first package)."""
    owners: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("diversion ") or ": " not in line:
            continue
        packages, path = line.split(": ", 1)
        first = packages.split(",")[0].strip().split(":")[0]
        owners.setdefault(path.strip(), first)
    return owners


def candidates(path: str, real: str) -> tuple[str, ...]:
    """Where dpkg may have recorded a library: as ldd names it, its target, and both with
    and without /usr (Debian's merged /usr: ldd says /lib, dpkg may say /usr/lib)."""
    out: list[str] = []
    for p in (path, real):
        out += [p, p.removeprefix("/usr") if p.startswith("/usr/") else "/usr" + p]
    return tuple(dict.fromkeys(out))


def owner(owners: Mapping[str, str], paths: Iterable[str]) -> str | None:
    return next((owners[p] for p in paths if p in owners), None)


def packages_for(owned: Iterable[str]) -> tuple[str, ...]:
    """The libraries' packages, the MPI's launcher and ssh: sorted, each once."""
    wanted = set(owned) | set(ALWAYS)
    wanted |= {LAUNCHERS[p] for p in wanted if p in LAUNCHERS}
    return tuple(sorted(wanted))


def binary_names(paths: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """(name in the image, host path) for each binary; names must be plain and distinct."""
    named = tuple((p.rsplit("/", 1)[-1], p) for p in paths)
    for name, path in named:
        if not _NAME.fullmatch(name):
            raise ContainerizeError(
                f"{path}: the name {name!r} is not plain", hint="rename it: letters, digits, ._+-"
            )
    names = [n for n, _ in named]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ContainerizeError(
            f"two binaries named {', '.join(dupes)}", hint="containerize them one at a time"
        )
    return named


def digest(base_id: str, packages: Sequence[str], files: Mapping[str, str], dockerfile: str) -> str:
    """The content hash: the base's ID, the packages, each copied file's name and sha256,
    and the Dockerfile that puts them together."""
    body = json.dumps([base_id, list(packages), sorted(files.items()), dockerfile])
    return hashlib.sha256(body.encode()).hexdigest()


def dockerfile_text(plan: ImagePlan, *, label: bool = True) -> str:
    """The Dockerfile, every path in JSON form (no shell sees a file name)."""
    lines = [
        f"FROM {plan.base}",
        "RUN apt-get update \\",
        " && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\",
        f"    {' '.join(plan.packages)} \\",
        " && rm -rf /var/lib/apt/lists/*",
    ]
    if plan.unowned:
        lines += [
            f'COPY ["libs/", "{LIB_DIR}/"]',
            # ld.so.conf, not LD_LIBRARY_PATH: ranks started through sshd get no image ENV.
            f"RUN echo {LIB_DIR} > /etc/ld.so.conf.d/mpidock.conf && ldconfig",
        ]
    lines += [json_copy(f"bin/{name}", f"{BIN_DIR}/{name}") for name, _ in plan.binaries]
    if label:
        lines.append(f"LABEL {LABEL}={plan.digest}")
    return "\n".join(lines) + "\n"


def json_copy(src: str, dst: str) -> str:
    return f"COPY {json.dumps([src, dst])}"


def make_plan(
    base: str,
    base_id: str,
    binaries: Sequence[str],
    packages: Sequence[str],
    unowned: Sequence[Library],
    sums: Mapping[str, str],
    tag: str = "",
) -> ImagePlan:
    """The plan, its digest over everything the image is made of. `sums` maps each
    context path (bin/NAME, libs/NAME) to the sha256 of its file."""
    draft = ImagePlan(
        base, base_id, binary_names(binaries), packages_for(packages), tuple(unowned), "", ""
    )
    text = dockerfile_text(draft, label=False)
    full = digest(base_id, draft.packages, sums, text)
    return ImagePlan(
        base, base_id, draft.binaries, draft.packages, draft.unowned, full,
        tag or f"{TAG_REPO}:{full[:16]}",
    )  # fmt: skip
