"""`mpidock submit --auto-image` on the testbed: a C MPI program compiled on the submit host
with Debian's mpicc, no image named, runs on 3 nodes in the image containerize makes; a
second submit builds nothing and ships nothing."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import run
from tests.testbed.conftest import HOME, NODES, node_containers
from tests.testbed.test_front_door import script, submit

pytestmark = pytest.mark.testbed
HELLO = Path(__file__).parents[2] / "launcher/testbed/dockerfiles/src/mpi_hello.c"
UID = 1501
JOB = """\
#!/bin/sh
#SBATCH -N 3
#SBATCH --ntasks-per-node=1
#SBATCH --time=0:05:00
mpirun -np 3 --map-by node ./{name} --ring
"""
BUILT = re.compile(r"containerize: built (mpidock-auto:[0-9a-f]{16}) \(resolve [\d.]+ s, build")


@dataclass(frozen=True)
class Program:
    """The host-compiled program in the user's home, its job script, the tags it got."""

    binary: Path
    job: Path
    tags: list[str] = field(default_factory=list)  # for the fixture to remove
    said: list[str] = field(default_factory=list)  # submit's stderr, for the job ids

    def submit(self) -> tuple[int, str, str]:
        code, output, err = submit("--auto-image", self.job.name)
        self.said.append(err)
        return code, output, err


def _hosts() -> list[list[str]]:
    """`docker` argv prefixes: the submit host's engine, then each node's."""
    return [["docker"], *(["docker", "-H", node.docker_url] for node in NODES)]


def _remove_image(tag: str) -> None:
    """The image and its personalized children everywhere, and its archive in the store."""
    for docker in _hosts():
        found = run([*docker, "image", "inspect", "-f", "{{.Id}}", tag])
        if found.returncode != 0:
            continue
        image_id = found.stdout.strip()
        label = f"label=org.mpidock.personal.base={image_id}"
        personal = run([*docker, "images", "-q", "--filter", label]).stdout.split()
        for image in dict.fromkeys(personal):
            run([*docker, "rmi", "-f", image])
        run([*docker, "rmi", "-f", tag])
        for path in (HOME / ".mpidock" / "images").glob(f"*{image_id.split(':')[-1]}*"):
            path.unlink()


@pytest.fixture
def program() -> Iterator[Program]:
    """A new program name (so a new image), compiled here and given to the test user."""
    name = f"auto-ring-{secrets.token_hex(3)}"
    binary = HOME / name
    done = subprocess.run(
        ["mpicc", "-O2", "-o", str(binary), str(HELLO)], capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    binary.chmod(0o755)
    os.chown(binary, UID, UID)
    job = script(f"{name}.sh", JOB.format(name=name))
    made = Program(binary, job)
    try:
        yield made
    finally:
        for job_id in re.findall(r"submitted job (\d+)", "".join(made.said)):
            (HOME / f"slurm-{job_id}.out").unlink(missing_ok=True)
        for tag in dict.fromkeys(made.tags):
            _remove_image(tag)
        binary.unlink(missing_ok=True)
        job.unlink(missing_ok=True)


def test_auto_image_runs_a_host_program_on_3_nodes_and_builds_it_once(program: Program) -> None:
    code, output, err = program.submit()
    built = BUILT.search(err)
    assert built, output + err
    tag = built.group(1)
    program.tags.append(tag)
    assert code == 0, output + err
    assert "libopenmpi3" in err  # the packages line
    hosts = set(re.findall(r"^rank \d of 3 on (\S+) uid 1501", output, re.M))
    assert hosts == {"sim1", "sim2", "sim3"}, output
    assert "ring passed 3 ranks" in output
    code, output, err = program.submit()
    assert code == 0, output + err
    assert f"containerize: {tag} is built already" in err  # same tag
    assert "build 0 s)" in err
    assert "ring passed 3 ranks" in output
    for node in NODES:
        assert node_containers(node, "org.mpidock.user=mpiuser") == [], node.name


NOTE_LIB = "int ring_note(int rank) { return 1000 + rank; }\n"
NOTE_MAIN = """\
#define _GNU_SOURCE
#include <dlfcn.h>
#include <mpi.h>
#include <stdio.h>
int ring_note(int rank);
int main(int argc, char **argv) {
    int rank, size, sum = 0, mine;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    mine = ring_note(rank);
    MPI_Reduce(&mine, &sum, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    Dl_info where;
    if (dladdr((void *)ring_note, &where))
        printf("rank %d: note from %s\\n", rank, where.dli_fname);
    if (rank == 0) printf("home library says %d from %d ranks\\n", sum, size);
    MPI_Finalize();
    return 0;
}
"""
NOTE_JOB = """\
#!/bin/sh
#SBATCH -N 3
#SBATCH --ntasks-per-node=1
#SBATCH --time=0:05:00
mpirun -np 3 --map-by node ./{name}
"""


@pytest.fixture
def home_library_program() -> Iterator[tuple[Program, Path]]:
    """A program linked against a library built in the user's home (no package owns it),
    no rpath: only the submit's LD_LIBRARY_PATH finds it on the host."""
    name = f"auto-note-{secrets.token_hex(3)}"
    libdir = HOME / f"{name}-lib"
    libdir.mkdir()
    source = libdir / "note.c"
    source.write_text(NOTE_LIB)
    main = HOME / f"{name}.c"
    main.write_text(NOTE_MAIN)
    binary = HOME / name
    for argv in (
        ["gcc", "-shared", "-fPIC", "-o", str(libdir / "libringnote.so"), str(source)],
        ["mpicc", "-O2", "-o", str(binary), str(main), f"-L{libdir}", "-lringnote"],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    for path in (libdir, libdir / "libringnote.so", binary):
        os.chown(path, UID, UID)
    job = script(f"{name}.sh", NOTE_JOB.format(name=name))
    made = Program(binary, job)
    try:
        yield made, libdir
    finally:
        for job_id in re.findall(r"submitted job (\d+)", "".join(made.said)):
            (HOME / f"slurm-{job_id}.out").unlink(missing_ok=True)
        for tag in dict.fromkeys(made.tags):
            _remove_image(tag)
        for path in (binary, job, main, source, libdir / "libringnote.so"):
            path.unlink(missing_ok=True)
        libdir.rmdir()


def test_a_library_built_in_the_home_is_copied_into_the_image_and_the_job_runs(
    home_library_program: tuple[Program, Path],
) -> None:
    program, libdir = home_library_program
    code, output, err = submit("--auto-image", program.job.name, env=(f"LD_LIBRARY_PATH={libdir}",))
    program.said.append(err)
    built = BUILT.search(err)
    assert built, output + err
    program.tags.append(built.group(1))
    lib = libdir / "libringnote.so"
    assert f"{lib} belongs to no package: copied into the image's /opt/mpidock-libs" in err
    assert code == 0, output + err
    assert "home library says 3003 from 3 ranks" in output, output
    # No rpath, and the step's LD_LIBRARY_PATH does not reach the ranks: the image's copy.
    loaded = set(re.findall(r"^rank \d: note from (\S+)$", output, re.M))
    assert loaded == {"/opt/mpidock-libs/libringnote.so"}, output
