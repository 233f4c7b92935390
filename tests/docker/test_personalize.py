"""Personalized images carry the user's exact identity, whatever the base image holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from launcher import images
from launcher.containers import docker_kwargs
from launcher.errors import ImageError
from launcher.plan import ContainerSpec, Identity
from tests.conftest import require
from tests.docker.conftest import build

# Ubuntu-like: UID 1000 and GID 1601 taken under other names, our user name taken with
# another UID, a non-root USER and an ENTRYPOINT that would swallow any command.
CROWDED = """FROM debian:bookworm
RUN groupadd -g 1000 ubuntu && useradd -u 1000 -g 1000 -m ubuntu \\
 && groupadd -g 1601 staff2 && useradd -u 4242 -m Mpi.User2
USER ubuntu
ENTRYPOINT ["/bin/false"]
"""
# No useradd or groupadd at all, as in busybox-style images.
BARE = """FROM debian:bookworm
RUN ["/bin/rm", "/usr/sbin/useradd", "/usr/sbin/groupadd", "/usr/sbin/adduser"]
"""
# Nothing but a static busybox: no /etc/passwd, no useradd, busybox's own sh and id.
BUSYBOX = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "mkdir", "-p", "/etc", "/usr/bin", "/usr/sbin", "/sbin"]
RUN ["/bin/busybox", "--install", "-s"]
"""
# No /bin/sh: nothing can run the personalization.
NO_SHELL = """FROM debian:bookworm
RUN ["/bin/rm", "/usr/bin/sh"]
"""
ODD = Identity(
    user="Mpi.User2",
    uid=1000,
    gid=1601,
    group="proj.A",
    groups=(("Data7", 1602), ("docker", 999)),
    home="/srv/x/Mpi.User2",
    shell="/bin/bash",
)


@pytest.fixture
def tags(client: docker.DockerClient) -> Iterator[list[str]]:
    """Tags made by a test, removed after it."""
    made: list[str] = []
    yield made
    for tag in made:
        client.images.remove(tag, force=True)


def run_as(client: docker.DockerClient, tag: str, ident: Identity, command: list[str]) -> str:
    """command in tag exactly as the launcher starts its containers, output returned."""
    spec = ContainerSpec(
        name=f"mpidock-test-{ident.uid}",
        image=tag,
        command=tuple(command),
        user=f"{ident.uid}:{ident.gid}",
        group_add=ident.supplementary_gids,
        labels=(),
        mounts=(),
        working_dir="/",
        network_mode="none",
    )
    kwargs = docker_kwargs(spec)
    container = client.containers.create(**kwargs)
    try:
        container.start()
        assert container.wait(timeout=60)["StatusCode"] == 0, container.logs().decode()
        return bytes(container.logs(stdout=True, stderr=False)).decode().strip()
    finally:
        container.remove(force=True)


@pytest.mark.parametrize("base", [CROWDED, BARE])
def test_identity_is_exact_in_a_crowded_or_bare_image(
    client: docker.DockerClient, tags: list[str], base: str
) -> None:
    tags.append(f"mpidock-test/base-{hash(base) & 0xFFFF:x}")
    build(client, tags[0], base)
    tag, how = images.ensure_personal(client, tags[0], ODD, "host")
    tags.append(tag)
    assert how == "built"
    script = "id; whoami; getent passwd Mpi.User2 ubuntu 1000 4242; true"
    out = run_as(client, tag, ODD, ["sh", "-c", script])
    ident_line, who, *passwd = out.splitlines()
    assert ident_line == (
        "uid=1000(Mpi.User2) gid=1601(proj.A) groups=1601(proj.A),999(docker),1602(Data7)"
    )
    assert who == "Mpi.User2"
    # The name and UID are found, once each; whoever held them before is gone.
    assert passwd == ["Mpi.User2:x:1000:1601::/srv/x/Mpi.User2:/bin/bash"] * 2


def test_identity_is_exact_in_a_busybox_only_image(
    client: docker.DockerClient, tags: list[str]
) -> None:
    require(Path("/bin/busybox").exists(), "no static busybox", "apt-get install busybox-static")
    tags.append("mpidock-test/base-busybox")
    build(client, tags[0], BUSYBOX, {"busybox": Path("/bin/busybox")})
    tag, how = images.ensure_personal(client, tags[0], ODD, "host")
    tags.append(tag)
    assert how == "built"
    out = run_as(client, tag, ODD, ["/bin/sh", "-c", "id; whoami; ls -l /etc/passwd"])
    ident_line, who, passwd = out.splitlines()
    # busybox's id lists the groups in the kernel's order, not primary first as coreutils.
    uid, gid, groups = ident_line.split()
    assert (uid, gid) == ("uid=1000(Mpi.User2)", "gid=1601(proj.A)")
    assert sorted(groups.removeprefix("groups=").split(",")) == [
        "1601(proj.A)", "1602(Data7)", "999(docker)"
    ]  # fmt: skip
    assert who == "Mpi.User2"
    assert passwd.startswith("-rw-r--r--")


def test_second_request_reuses_the_personalized_image(
    client: docker.DockerClient, tags: list[str]
) -> None:
    tags.append("mpidock-test/base-reuse")
    base = build(client, tags[0], BARE + "LABEL reuse=1\n")
    tag, how = images.ensure_personal(client, tags[0], ODD, "host")
    tags.append(tag)
    assert how == "built"
    assert images.ensure_personal(client, tags[0], ODD, "host") == (tag, "cached")
    assert tag == images.personal_tag(base, ODD)


def test_image_without_a_shell_gets_a_clear_error(
    client: docker.DockerClient, tags: list[str]
) -> None:
    tags.append("mpidock-test/base-noshell")
    build(client, tags[0], NO_SHELL)
    with pytest.raises(ImageError, match="cannot personalize mpidock-test/base-noshell") as info:
        images.ensure_personal(client, tags[0], ODD, "sim9")
    assert info.value.node == "sim9"
    assert "/bin/sh" in info.value.hint
