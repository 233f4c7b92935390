"""`mpidock check`: the example images pass every check, a bare Debian fails naming what is
missing, and nothing the check made is left on the engine."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import docker
import pytest

from launcher.testbed.jobs import as_user
from tests.conftest import MPIDOCK
from tests.docker.conftest import build

CHECKS = [
    "image",
    "devices",
    "shell",
    "sshd",
    "ssh client",
    "mpirun",
    "MPI ABI",
    "add a user",
    "2 ranks, 2 containers",
]


def results(stdout: str) -> dict[str, str]:
    """CHECK -> pass|FAIL from the table (information rows, shown "-", left out)."""
    rows = [line for line in stdout.splitlines()[1:] if "  " in line]
    found = {line[:23].strip(): line[23:].split()[0] for line in rows}
    return {check: result for check, result in found.items() if result != "-"}


# How each example image's MPI can be launched directly (launcher.direct.support).
DIRECT = {
    "mpidock/openmpi": "pmix: Open MPI's pmix component ext3x",
    "mpidock/mpich": "pmi2: libmpich.so.12 has a PMI-1 client (simple PMI)",
    "mpidock/openmpi5": "pmix: libmpi.so.40 links libpmix.so.2",
    "mpidock/mpich5": "pmi2: libmpi.so.12 has a PMI-1 client (simple PMI) and a PMI-2 client",
    "mpidock/intelmpi": "pmi2: libmpi.so.12 has a PMI-1 client (simple PMI)",
}


def leftovers(client: docker.DockerClient) -> list[str]:
    found = [
        c.name for c in client.containers.list(all=True, filters={"label": "org.mpidock.check"})
    ]
    found += [n.name for n in client.networks.list(filters={"label": "org.mpidock.check"})]
    return found


def details(stdout: str) -> dict[str, str]:
    """CHECK -> DETAIL from the table."""
    rows = [line for line in stdout.splitlines()[1:] if "  " in line]
    return {line[:23].strip(): line[23:].split(None, 1)[1].strip() for line in rows}


@pytest.mark.parametrize(
    ("image", "mpi", "abi"),
    [
        ("mpidock/openmpi", "openmpi 4.1.4", "libmpi.so.40 (Open MPI ABI)"),
        ("mpidock/mpich", "mpich 4.0.2", "libmpich.so.12 (MPICH ABI)"),
        ("mpidock/openmpi5", "openmpi 5.0.11", "libmpi.so.40 (Open MPI ABI)"),
        (
            "mpidock/mpich5",
            "mpich 5.0.2",
            "libmpi.so.12 (MPICH ABI), libmpi_abi.so.1 (MPI-5 standard ABI)",
        ),
        (
            "mpidock/intelmpi",
            "intel 2021.18.1",
            "libmpi.so.12 (MPICH ABI), libmpi_abi.so.1 (MPI-5 standard ABI)",
        ),
    ],
)
def test_the_example_images_pass(
    client: docker.DockerClient, image: str, mpi: str, abi: str
) -> None:
    done = subprocess.run([*MPIDOCK, "check", image], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert results(done.stdout) == dict.fromkeys(CHECKS, "pass")
    assert details(done.stdout)["mpirun"] == mpi
    assert details(done.stdout)["MPI ABI"] == abi
    assert "ranks ran on check-leader and check-worker" in done.stdout
    assert details(done.stdout)["direct launch"] == DIRECT[image]
    # Outside an allocation the direct proof is a note, not a failure.
    assert details(done.stdout)["direct, 2 ranks"].startswith("not tried: needs a Slurm allocation")
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
        "sshd", "ssh client", "mpirun", "MPI ABI", "2 ranks, 2 containers",
    }  # fmt: skip
    assert "cannot access '/usr/sbin/sshd'" in done.stdout
    assert "mpirun: not found" in done.stdout
    assert details(done.stdout)["MPI ABI"] == "no libmpi.so.* known to the loader or beside mpirun"
    assert details(done.stdout)["direct launch"].startswith("neither: no PMIx or PMI client")
    assert done.stdout.rstrip().endswith("4 of 9 checks passed")
    assert leftovers(client) == []


def test_an_absent_image_is_named() -> None:
    done = subprocess.run([*MPIDOCK, "check", "mpidock/absent"], capture_output=True, text=True)
    assert done.returncode == 1
    assert "mpidock/absent is not on this host's engine" in done.stdout


HANGING_SSH = """\
FROM debian:bookworm
RUN printf '#!/bin/sh\\nexec sleep 600\\n' >/usr/local/bin/ssh && chmod 755 /usr/local/bin/ssh
"""


@pytest.fixture
def hanging_image(client: docker.DockerClient) -> Iterator[str]:
    """An image whose `ssh -V` never returns."""
    tag = "mpidock-test/hanging-ssh"
    build(client, tag, HANGING_SSH)
    yield tag
    client.images.remove(tag, force=True)


def test_a_probe_that_hangs_is_a_fail_row_after_the_timeout(
    client: docker.DockerClient, hanging_image: str
) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [*MPIDOCK, "check", "--timeout", "3", hanging_image],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert results(done.stdout)["ssh client"] == "FAIL"
    assert "`ssh -V` still running after 3 s" in done.stdout
    assert results(done.stdout)["2 ranks, 2 containers"] == "FAIL"
    assert time.monotonic() - started < 120  # the default 120 s per probe was not waited
    assert leftovers(client) == []


@pytest.mark.parametrize("value", ["0", "-1", "soon", "\u00b2"])
def test_a_bad_timeout_is_one_line(value: str) -> None:
    done = subprocess.run(
        [*MPIDOCK, "check", "--timeout", value, "mpidock/openmpi"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.startswith("mpidock: error: argument --timeout: expected a number")
    assert len(done.stderr.splitlines()) == 1
