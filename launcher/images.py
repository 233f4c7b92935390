"""Personalized images: the user's identity baked into a thin layer over any base image.

The layer is built from a Dockerfile whose values travel as JSON exec-form arguments to a
POSIX sh script, so no value is ever parsed as shell. It edits /etc/passwd, /etc/group
and /etc/shadow directly, which works on images without useradd (busybox, distroless-ish)
and on images where the UID, the GID or the name is already taken by someone else.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import asdict

import docker
from docker.errors import BuildError, DockerException, NotFound

from launcher import engines
from launcher.errors import ImageError
from launcher.plan import LABEL_PREFIX, Identity

log = logging.getLogger(__name__)
REPO = "mpidock-personal"
# What names the image's MPI: its launcher's version text, on stdout.
MPI_VERSION = ["/bin/sh", "-c", "mpirun --version 2>&1 || mpiexec --version 2>&1"]

PERSONALIZE_SH = r"""set -e
user=$1 uid=$2 gid=$3 group=$4 home=$5 shell=$6
shift 6
[ -x "$shell" ] || shell=/bin/sh
keep() {  # print lines of $1 whose first field is not $2 and third field is not $3
  while IFS= read -r line || [ -n "$line" ]; do
    name=${line%%:*}; rest=${line#*:}; rest=${rest#*:}; id=${rest%%:*}
    [ "$name" = "$2" ] || [ "$id" = "$3" ] || printf '%s\n' "$line"
  done < "$1"
}
rewrite() {  # replace $1's content with stdin, keeping its inode and mode
  cat > "$1.mpidock"; cat "$1.mpidock" > "$1"; rm -f "$1.mpidock"
}
touch /etc/passwd /etc/group
keep /etc/passwd "$user" "$uid" | rewrite /etc/passwd
printf '%s:x:%s:%s::%s:%s\n' "$user" "$uid" "$gid" "$home" "$shell" >> /etc/passwd
keep /etc/group "$group" "$gid" | rewrite /etc/group
printf '%s:x:%s:\n' "$group" "$gid" >> /etc/group
for pair in "$@"; do
  gname=${pair%:*}; gnum=${pair##*:}
  keep /etc/group "$gname" "$gnum" | rewrite /etc/group
  printf '%s:x:%s:%s\n' "$gname" "$gnum" "$user" >> /etc/group
done
if [ -f /etc/shadow ]; then
  keep /etc/shadow "$user" "no:such:id" | rewrite /etc/shadow
  printf '%s:*:19000:0:99999:7:::\n' "$user" >> /etc/shadow
fi
"""


def identity_key(ident: Identity) -> str:
    return hashlib.sha256(json.dumps(asdict(ident), sort_keys=True).encode()).hexdigest()[:12]


def personal_of(ident: Identity) -> Callable[[str], tuple[str, str]]:
    """A base ID's personalized tag and Dockerfile for ident (what a store fill builds)."""
    return lambda base: (personal_tag(base, ident), dockerfile(base, ident))


def personal_tag(base_id: str, ident: Identity) -> str:
    """Content-addressed tag: same base image ID and identity, same tag, on every node."""
    return f"{REPO}:{base_id.split(':')[-1][:12]}-{identity_key(ident)}"


def dockerfile(base_id: str, ident: Identity) -> str:
    """The personalization Dockerfile (pure; golden-tested)."""
    args = [ident.user, str(ident.uid), str(ident.gid), ident.group, ident.home, ident.shell]
    args += [f"{name}:{gid}" for name, gid in ident.groups]
    run = json.dumps(["/bin/sh", "-c", PERSONALIZE_SH, "personalize", *args])
    labels = {
        f"{LABEL_PREFIX}.personal.base": base_id,
        f"{LABEL_PREFIX}.personal.identity": identity_key(ident),
        f"{LABEL_PREFIX}.personal.user": ident.user,
    }
    label_line = " ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())
    return (
        f"FROM {base_id}\n"
        "USER 0:0\n"
        f"RUN {run}\n"
        f"LABEL {label_line}\n"
        f"USER {ident.uid}:{ident.gid}\n"
        "ENTRYPOINT []\n"
        "CMD []\n"
    )


def base_id(client: docker.DockerClient, image: str, node: str) -> str:
    try:
        return str(client.images.get(image).id)
    except NotFound as e:
        raise ImageError(
            f"image {image} is not on this node",
            node=node,
            hint=f"docker load or docker pull {image} on every node",
        ) from e


def ensure_personal(
    client: docker.DockerClient, base: str, ident: Identity, node: str, name: str = ""
) -> tuple[str, str]:
    """The personalized tag for base (a name or ID) and ident: (tag, 'cached' | 'built')."""
    image_id = base_id(client, base, node)
    tag = personal_tag(image_id, ident)
    if touch(client, tag, node):
        return tag, "cached"
    try:
        client.images.build(
            fileobj=io.BytesIO(dockerfile(image_id, ident).encode()),
            tag=tag, rm=True, forcerm=True, network_mode="none", timeout=600,
        )  # fmt: skip
    except BuildError as e:
        raise ImageError(
            f"cannot personalize {name or base}: {_build_reason(e)}",
            node=node,
            hint="the image needs /bin/sh and writable /etc/passwd",
        ) from e
    except DockerException as e:
        raise ImageError(f"cannot personalize {name or base}: {e}", node=node) from e
    return tag, "built"


def touch(client: docker.DockerClient, tag: str, node: str) -> bool:
    """Marks a use of tag (re-tagging sets its LastTagTime); False when it is not here."""
    if engines.of(client).shared_image(tag):
        return True  # read in place from a shared store, where a new tag would copy it
    repo, _, version = tag.rpartition(":")
    try:
        client.api.tag(tag, repo, version)
    except NotFound:
        return False
    except DockerException as e:
        raise ImageError(
            f"cannot tag image {tag}: {e}", node=node, hint="is this node's dockerd answering?"
        ) from e
    return True


def remove_personal(client: docker.DockerClient, tag: str) -> None:
    """The `remove` cleanup policy; an image another job still runs stays, and one of a
    shared store is the store's."""
    if engines.of(client).shared_image(tag):
        return
    try:
        client.images.remove(tag, noprune=False)
    except NotFound:
        pass
    except DockerException as e:
        log.info("kept %s: %s", tag, e)


def _build_reason(e: BuildError) -> str:
    lines = [str(c.get("stream") or c.get("error") or "").strip() for c in e.build_log]
    useful = [line for line in lines if line and not line.startswith(("Step", "--->"))]
    return (useful[-1] if useful else e.msg)[:300]


def mpi_version_text(client: docker.DockerClient, tag: str, node: str) -> str:
    """`mpirun --version` (else `mpiexec --version`) run in a throwaway container."""
    try:
        out = client.containers.run(
            tag, MPI_VERSION, remove=True, network_mode="none",
            cap_drop=["ALL"], security_opt=["no-new-privileges"], entrypoint=[],
        )  # fmt: skip
    except DockerException as e:
        raise ImageError(
            f"cannot run mpirun --version in {tag}: {e}",
            node=node,
            hint="the image needs Open MPI, MPICH or Intel MPI on its PATH",
        ) from e
    return bytes(out).decode(errors="replace")
