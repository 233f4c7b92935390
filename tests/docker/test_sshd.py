"""The worker's sshd, real and unprivileged, and the leader's paramiko handshake against it.

The handshake must succeed with the job's keys and refuse a host key other than the job's:
that is what makes StrictHostKeyChecking safe without ssh-keyscan.
"""

from __future__ import annotations

import pwd
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.models.containers import Container

from launcher import images, jobdir, keys, readiness
from launcher.containers import docker_kwargs
from launcher.errors import NodeFailed, NodeTimeout
from launcher.plan import ContainerSpec, Identity

USER = "mpiuser"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ident() -> Identity:
    pw = pwd.getpwnam(USER)
    return Identity(
        user=USER,
        uid=pw.pw_uid,
        gid=pw.pw_gid,
        group=USER,
        groups=(),
        home=pw.pw_dir,
        shell="/bin/sh",
    )


@pytest.fixture
def job(tmp_path: Path, ident: Identity) -> Iterator[jobdir.JobDir]:
    port = free_port()
    root = tmp_path / "jobs"
    root.mkdir()
    job = jobdir.create_job_dir(root / "7", hosts=["localhost"], port=port, user=USER)
    for path in [tmp_path, root, *root.rglob("*")]:
        shutil.chown(path, ident.uid, ident.gid)
    yield job
    jobdir.remove_job_dir(job.path)


@pytest.fixture
def sshd(client: docker.DockerClient, job: jobdir.JobDir, ident: Identity) -> Iterator[Container]:
    """The worker's container: host network, the job user, no capabilities."""
    tag, _ = images.ensure_personal(client, "mpidock/openmpi", ident, "host")
    spec = ContainerSpec(
        name="mpidock-test-sshd",
        image=tag,
        command=("/usr/sbin/sshd", "-D", "-e", "-f", str(job.sshd_config)),
        user=f"{ident.uid}:{ident.gid}",
        group_add=(),
        labels=(),
        mounts=((str(job.path.parent.parent),) * 2,),
        working_dir="/",
    )
    container = client.containers.create(**docker_kwargs(spec))
    container.start()
    yield container
    container.remove(force=True)


def port_of(job: jobdir.JobDir) -> int:
    text = job.sshd_config.read_text()
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("Port ")))


def test_handshake_with_the_job_keys_succeeds(job: jobdir.JobDir, sshd: Container) -> None:
    readiness.handshake(job, "localhost", port_of(job), USER, time.monotonic() + 20)
    sshd.reload()
    assert sshd.status == "running"
    assert sshd.attrs["HostConfig"]["CapDrop"] == ["ALL"]
    assert sshd.attrs["Config"]["User"].split(":")[0] != "0"


def test_a_different_host_key_is_refused(job: jobdir.JobDir, sshd: Container) -> None:
    readiness.handshake(job, "localhost", port_of(job), USER, time.monotonic() + 20)
    impostor = keys.new_keypair("impostor")
    forged = keys.known_hosts(["localhost"], port_of(job), impostor.public_openssh)
    job.known_hosts.write_text(forged)
    with pytest.raises(NodeFailed, match="refused") as info:
        readiness.handshake(job, "localhost", port_of(job), USER, time.monotonic() + 10)
    assert info.value.node == "localhost"


def test_a_foreign_user_key_is_refused(job: jobdir.JobDir, sshd: Container) -> None:
    readiness.handshake(job, "localhost", port_of(job), USER, time.monotonic() + 20)
    job.user_key.write_text(keys.new_keypair("stranger").private_openssh)
    with pytest.raises(NodeFailed, match="refused"):
        readiness.handshake(job, "localhost", port_of(job), USER, time.monotonic() + 10)


def test_no_sshd_times_out_with_the_node_and_port(job: jobdir.JobDir) -> None:
    with pytest.raises(NodeTimeout) as info:
        readiness.handshake(job, "localhost", port_of(job), USER, time.monotonic() + 1)
    assert str(port_of(job)) in str(info.value)
    assert "localhost" in str(info.value)
