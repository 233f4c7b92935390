"""`mpidock check`: the example images pass every check, a bare Debian fails naming what is
missing, and nothing the check made is left on the engine."""

from __future__ import annotations

import subprocess

import docker
import pytest

from launcher.testbed.jobs import as_user
from tests.conftest import MPIDOCK

CHECKS = [
    "image",
    "devices",
    "shell",
    "sshd",
    "ssh client",
    "mpirun",
    "add a user",
    "2 ranks, 2 containers",
]


def results(stdout: str) -> dict[str, str]:
    """CHECK -> pass|FAIL from the table."""
    rows = [line for line in stdout.splitlines()[1:] if "  " in line]
    return {line[:23].strip(): line[23:].split()[0] for line in rows}


def leftovers(client: docker.DockerClient) -> list[str]:
    found = [
        c.name for c in client.containers.list(all=True, filters={"label": "org.mpidock.check"})
    ]
    found += [n.name for n in client.networks.list(filters={"label": "org.mpidock.check"})]
    return found


@pytest.mark.parametrize(
    ("image", "mpi"), [("mpidock/openmpi", "openmpi 4.1"), ("mpidock/mpich", "mpich 4.0")]
)
def test_the_example_images_pass(client: docker.DockerClient, image: str, mpi: str) -> None:
    done = subprocess.run([*MPIDOCK, "check", image], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert results(done.stdout) == dict.fromkeys(CHECKS, "pass")
    assert mpi in done.stdout
    assert "ranks ran on check-leader and check-worker" in done.stdout
    assert leftovers(client) == []


def test_a_user_in_the_docker_group_checks_as_itself(client: docker.DockerClient) -> None:
    done = as_user(["mpidock", "check", "mpidock/openmpi"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "uid=1501(mpiuser)" in done.stdout
    assert leftovers(client) == []


def test_bare_debian_fails_naming_what_is_missing(client: docker.DockerClient) -> None:
    done = subprocess.run(
        [*MPIDOCK, "check", "debian:bookworm"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1
    found = results(done.stdout)
    assert {k for k, v in found.items() if v == "FAIL"} == {
        "sshd", "ssh client", "mpirun", "2 ranks, 2 containers",
    }  # fmt: skip
    assert "cannot access '/usr/sbin/sshd'" in done.stdout
    assert "mpirun: not found" in done.stdout
    assert done.stdout.rstrip().endswith("4 of 8 checks passed")
    assert leftovers(client) == []


def test_an_absent_image_is_named() -> None:
    done = subprocess.run([*MPIDOCK, "check", "mpidock/absent"], capture_output=True, text=True)
    assert done.returncode == 1
    assert "mpidock/absent is not on this host's engine" in done.stdout
