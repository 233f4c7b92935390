"""Getting a job's base image onto a node, cheapest way first.

1. present      the image ID is on the node already: nothing moves
2. archive      the shared store holds `docker save` of that ID: one `docker load`
3. registry     a site registry is configured: one pull, checked against the ID
4. (requested)  the leader saves the archive once into the store, then 2.

Every move is measured (bytes, seconds) and long ones print progress lines.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import docker
from docker.errors import DockerException, NotFound
from docker.utils import parse_repository_tag
from requests import RequestException

from launcher import progress
from launcher.errors import ImageError
from launcher.record import human_size
from launcher.store import Archive, ImageStore, hex_of, open_archive, read_chunks
from launcher.storefiles import SaveAbandoned

BASE_REPO = "mpidock-base"
MOVE_TIMEOUT = 3600.0
PROGRESS_EVERY = 5.0
Say = Callable[[str], None]
DOCKER_HINT = "is this node's dockerd running and answering (docker info)?"


@dataclass(frozen=True)
class Wanted:
    """The job's image as the leader resolved it; workers read it from the job directory."""

    image: str
    image_id: str
    store: str
    registry: str = ""

    def to_dict(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Wanted:
        """The leader's choice as read back; an ID that is not `sha256:` + hex is refused."""
        wanted = cls(**{f.name: str(data.get(f.name, "")) for f in fields(cls)})
        hex_of(wanted.image_id)
        return wanted


@dataclass
class Moved:
    """How the base image reached this node."""

    path: str
    bytes: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        rate = self.bytes / self.seconds / 1e6 if self.seconds > 0 and self.bytes else 0.0
        return {
            "path": self.path,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(rate, 1),
        }


def stderr_say(node: str) -> Say:
    def say(text: str) -> None:
        progress.say(node, "image", text)

    return say


def local_id(client: docker.DockerClient, ref: str, node: str) -> str | None:
    try:
        return str(client.images.get(ref).id)
    except NotFound:  # Docker says ImageNotFound, Podman only NotFound
        return None
    except DockerException as e:
        raise ImageError(f"cannot inspect image {ref}: {e}", node=node, hint=DOCKER_HINT) from e


def resolve(
    client: docker.DockerClient, image: str, store: ImageStore, registry: str, node: str, say: Say
) -> tuple[Wanted, Moved]:
    """The leader's view: the image's ID, fetched onto this node if it is not here."""
    if image_id := local_id(client, image, node):
        return Wanted(image, image_id, str(store.root), registry), Moved("present")
    if archive := store.find_by_name(image):
        return Wanted(image, archive.image_id, str(store.root), registry), load(
            client, archive, node, say
        )
    if registry:
        image_id, moved = pull(client, registry_ref(registry, image), node, say)
        return Wanted(image, image_id, str(store.root), registry), moved
    raise ImageError(
        f"image {image} is not on this node and not in the image store {store.root}",
        node=node,
        hint=f"docker load or build {image} on this node, or set --registry to a site registry",
    )


def obtain(
    client: docker.DockerClient,
    wanted: Wanted,
    node: str,
    request: Callable[[], Archive],
    say: Say,
) -> Moved:
    """A worker's view: the wanted ID on this node, by the cheapest path that has it."""
    hex_of(wanted.image_id)  # never hand the engine or a path anything but an ID
    if local_id(client, wanted.image_id, node):
        return Moved("present")
    store = ImageStore(wanted.store, warn=say)
    if archive := store.find(wanted.image_id):
        return load(client, archive, node, say)
    if wanted.registry:
        image_id, moved = pull(client, registry_ref(wanted.registry, wanted.image), node, say)
        if image_id == wanted.image_id:
            return moved
        say(f"registry has {hex_of(image_id)[:12]}, the job runs {hex_of(wanted.image_id)[:12]}")
    return load(client, request(), node, say)


def load(client: docker.DockerClient, archive: Archive, node: str, say: Say) -> Moved:
    """`docker load` of one archive, streamed with progress; tags the base mpidock-base:<id>.

    Only a trusted regular file whose manifest holds exactly the wanted image, untagged,
    is loaded (launcher.store.open_archive): nothing else reaches the engine.
    """
    started = time.monotonic()
    meter = Meter(archive.size, f"loading {archive.path.name}", say)
    try:
        with open_archive(archive) as f, _long_timeout(client):
            client.images.load(meter.count(read_chunks(f)))
            with contextlib.suppress(OSError):  # the last use, for prune; read-only is fine
                os.utime(f.fileno())
    except ImageError as e:
        e.node = e.node or node
        raise
    except (OSError, DockerException, RequestException) as e:
        raise ImageError(f"cannot load {archive.path}: {e}", node=node) from e
    if not local_id(client, archive.image_id, node):
        raise ImageError(
            f"{archive.path} did not hold image {archive.image_id}",
            node=node,
            hint=f"remove {archive.path} and its .json; the next job saves it again",
        )
    tag_base(client, archive.image_id)
    return Moved("archive", archive.size, time.monotonic() - started)


def pull(client: docker.DockerClient, ref: str, node: str, say: Say) -> tuple[str, Moved]:
    """Pull from the registry, counting the compressed bytes of the layers downloaded."""
    started = time.monotonic()
    repo, tag = parse_repository_tag(ref)
    tag = tag or "latest"
    layers = Layers(f"pulling {ref}", say)
    try:
        with _long_timeout(client):
            for event in client.api.pull(repo, tag=tag, stream=True, decode=True):
                if "error" in event:
                    raise ImageError(f"cannot pull {ref}: {event['error']}", node=node)
                layers.update(event)
        local = f"{repo}@{tag}" if tag.startswith("sha256:") else f"{repo}:{tag}"
        image_id = str(client.images.get(local).id)
    except DockerException as e:
        raise ImageError(
            f"cannot pull {ref}: {e}",
            node=node,
            hint="check --registry and that every node's dockerd may reach it",
        ) from e
    return image_id, Moved("registry", sum(layers.totals.values()), time.monotonic() - started)


class Layers:
    """Bytes of each layer a pull downloads, from its progress events; a line now and then."""

    def __init__(self, what: str, say: Say) -> None:
        self.what, self.say = what, say
        self.totals: dict[str, int] = {}
        self.current: dict[str, int] = {}
        self.last = time.monotonic()

    def update(self, event: dict[str, Any]) -> None:
        if event.get("status") == "Downloading":
            detail = event.get("progressDetail", {})
            self.totals[event["id"]] = int(detail.get("total", 0))
            self.current[event["id"]] = int(detail.get("current", 0))
        if time.monotonic() - self.last >= PROGRESS_EVERY:
            self.last = time.monotonic()
            done, total = (
                human_size(sum(self.current.values())),
                human_size(sum(self.totals.values())),
            )
            self.say(f"{self.what}: {done} of {total} so far")


def save(
    client: docker.DockerClient,
    store: ImageStore,
    wanted: Wanted,
    node: str,
    say: Say,
    stop: threading.Event | None = None,
) -> Moved:
    """The leader saves its image into the store once; ('saved' | 'in store', bytes, s).

    Setting `stop` abandons a save under way or waiting for the lock (SaveAbandoned): its
    partial file is removed, not left."""
    started = time.monotonic()
    try:
        with _long_timeout(client):
            chunks = _until(client.images.get(wanted.image_id).save(chunk_size=1 << 20), stop)
            archive, wrote = store.write(wanted.image, wanted.image_id, chunks, stop)
    except (DockerException, RequestException) as e:
        raise ImageError(
            f"cannot save {wanted.image} into {store.root}: {e}",
            node=node,
            hint=f"check {node}'s dockerd (docker info) and that the image is still there",
        ) from e
    seconds = time.monotonic() - started
    if wrote:
        say(f"saved to {store.root}, {human_size(archive.size)} in {seconds:.1f} s")
    return Moved("saved" if wrote else "in store", archive.size if wrote else 0, seconds)


def _until(chunks: Iterator[bytes], stop: threading.Event | None) -> Iterator[bytes]:
    for chunk in chunks:
        if stop is not None and stop.is_set():
            raise SaveAbandoned("the save was abandoned: the job no longer needs it")
        yield chunk


def registry_ref(registry: str, image: str) -> str:
    """`image` under the registry, unless the name already starts with a registry host."""
    first = image.split("/")[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"{registry.rstrip('/')}/{image}"


def tag_base(client: docker.DockerClient, image_id: str) -> None:
    """Keeps a loaded base from looking dangling to `docker image prune`."""
    with contextlib.suppress(DockerException):
        client.api.tag(image_id, BASE_REPO, hex_of(image_id)[:12])


class Meter:
    """Counts bytes through an iterator and prints a progress line every few seconds."""

    def __init__(self, total: int, what: str, say: Say) -> None:
        self.total, self.what, self.say = total, what, say
        self.done = 0
        self.started = self.last = time.monotonic()

    def count(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.done += len(chunk)
            now = time.monotonic()
            if now - self.last >= PROGRESS_EVERY:
                self.last = now
                self.say(self.line(now - self.started))
            yield chunk

    def line(self, seconds: float) -> str:
        share = 100 * self.done / self.total if self.total else 100.0
        rate = self.done / seconds / 1e6 if seconds > 0 else 0.0
        done, total = human_size(self.done), human_size(self.total)
        return f"{self.what}: {done} of {total} ({share:.0f}%, {rate:.0f} MB/s)"


@contextlib.contextmanager
def _long_timeout(client: docker.DockerClient) -> Iterator[None]:
    """Moving gigabytes outlasts the client's usual per-call timeout."""
    before = client.api.timeout
    client.api.timeout = MOVE_TIMEOUT
    try:
        yield
    finally:
        client.api.timeout = before
