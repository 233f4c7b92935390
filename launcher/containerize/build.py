"""Asks the submit host (ldd, dpkg-query, its engine) and builds the planned image."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException, ImageNotFound

from launcher.containerize.plan import (
    LABEL,
    ContainerizeError,
    ImagePlan,
    Library,
    candidates,
    make_plan,
    owner,
    parse_dpkg_search,
    parse_ldd,
)

TIMEOUT = 60.0  # seconds for ldd or dpkg-query


@dataclass(frozen=True)
class Outcome:
    """What `containerize` did: the plan, whether it built, and how long each part took."""

    plan: ImagePlan
    built: bool
    resolve_s: float
    build_s: float


def find_binary(name: str) -> str:
    """An executable file, named by a path or found on PATH."""
    path = name if "/" in name else shutil.which(name) or name
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise ContainerizeError(
            f"{name}: no such executable file", hint="give the program's path, e.g. ./app"
        )
    return os.path.abspath(path)


def plan_image(
    client: docker.DockerClient, base: str, names: Sequence[str], tag: str = ""
) -> ImagePlan:
    """ldd for each binary, dpkg for each library, the base's ID: the plan."""
    binaries = [find_binary(n) for n in names]
    libs: dict[str, Library] = {}
    for path in binaries:
        for lib in parse_ldd(path, _output(["ldd", path])):
            libs.setdefault(lib.path, lib)
    owned, unowned = _owners(list(libs.values()))
    unowned = list({lib.name: lib for lib in unowned}.values())
    files = {f"bin/{Path(p).name}": p for p in binaries}
    files |= {f"libs/{lib.name}": lib.path for lib in unowned}
    sums = {name: _sha256(path) for name, path in files.items()}
    return make_plan(base, _base_id(client, base), binaries, owned, unowned, sums, tag)


def containerize(
    client: docker.DockerClient, base: str, names: Sequence[str], tag: str = ""
) -> Outcome:
    """The image for these binaries, built unless one with the same content exists."""
    start = time.monotonic()
    plan = plan_image(client, base, names, tag)
    resolved = time.monotonic()
    built = not present(client, plan)
    if built:
        _build(client, plan)
    return Outcome(plan, built, resolved - start, time.monotonic() - resolved)


def _owners(libs: Sequence[Library]) -> tuple[list[str], list[Library]]:
    """(the owning packages, the libraries no package owns)."""
    if not libs:
        return [], []
    looks = {lib.path: candidates(lib.path, os.path.realpath(lib.path)) for lib in libs}
    paths = list(dict.fromkeys(p for ps in looks.values() for p in ps))
    # dpkg-query exits 1 when some path is no package's: that answer is wanted too.
    owners = parse_dpkg_search(_output(["dpkg-query", "-S", *paths], ok=(0, 1)))
    owned, unowned = [], []
    for lib in libs:
        package = owner(owners, looks[lib.path])
        if package is None:
            unowned.append(lib)
        else:
            owned.append(package)
    return owned, unowned


def _output(argv: list[str], ok: Sequence[int] = (0, 1)) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ContainerizeError(
            f"{argv[0]} failed: {e}", hint="containerize needs ldd and dpkg (Debian) here"
        ) from e
    if done.returncode not in ok:
        raise ContainerizeError(f"{argv[0]}: {done.stderr.strip()}", hint="")
    return done.stdout + done.stderr


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _base_id(client: docker.DockerClient, base: str) -> str:
    try:
        return str(client.images.get(base).id)
    except ImageNotFound as e:
        raise ContainerizeError(
            f"the base image {base} is not in this host's engine",
            hint="docker pull it, or name another with --base or containerize_base in config",
        ) from e


def present(client: docker.DockerClient, plan: ImagePlan) -> bool:
    """Whether the engine holds the plan's tag with the plan's content."""
    try:
        labels = client.images.get(plan.tag).labels or {}
    except ImageNotFound:
        return False
    return labels.get(LABEL) == plan.digest


def _build(client: docker.DockerClient, plan: ImagePlan) -> None:
    context = _context(plan)
    try:
        client.images.build(fileobj=context, custom_context=True, tag=plan.tag, rm=True)
    except DockerException as e:
        raise ContainerizeError(
            f"building {plan.tag} failed: {e}",
            hint="run with --dry-run and build the Dockerfile by hand to see the step",
        ) from e


def _context(plan: ImagePlan) -> io.BytesIO:
    """The build context: the Dockerfile, bin/NAME for each binary, libs/NAME for each
    library no package owns; every file as the user's read of it, modes kept."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        text = plan.dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
        for name, path in plan.binaries:
            tar.add(path, arcname=f"bin/{name}")
        for lib in plan.unowned:
            tar.add(os.path.realpath(lib.path), arcname=f"libs/{lib.name}")
    out.seek(0)
    return out
