"""mpidock containerize against the host engine: a C MPI program compiled here with Debian's
mpicc runs in its image as a plain user, a second call builds nothing, a library built in a
home directory is copied into the image, and a static or missing binary is one line."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import DockerException

from launcher.containerize.build import Outcome, containerize
from launcher.containerize.plan import LIB_DIR, ContainerizeError
from tests.docker.conftest import DEBIAN

pytestmark = pytest.mark.docker
HELLO = Path(__file__).parents[2] / "launcher/testbed/dockerfiles/src/mpi_hello.c"
LIBRARY = "int greet(void) { return 42; }\n"
PROGRAM = (
    '#include <stdio.h>\nint greet(void);\nint main(void) { printf("greet %d\\n", greet()); }\n'
)


def compile_c(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def images(engine: docker.DockerClient) -> Iterator[list[str]]:
    """Tags a test made; removed after (an image another test uses stays)."""
    made: list[str] = []
    yield made
    for tag in made:
        with contextlib.suppress(DockerException):
            engine.images.remove(tag)


def run_in(engine: docker.DockerClient, tag: str, command: list[str]) -> str:
    out = engine.containers.run(
        tag, command, user="1501:1501", environment={"HOME": "/tmp"}, remove=True,
        network_mode="none", stderr=True,
    )  # fmt: skip
    return out.decode()


def test_an_mpi_program_runs_in_its_image_and_a_second_call_builds_nothing(
    engine: docker.DockerClient, images: list[str], tmp_path: Path
) -> None:
    where = tmp_path / "a dir 'quoted'"  # the host's path never reaches the Dockerfile
    where.mkdir()
    ring = where / "ring"
    compile_c(["mpicc", "-O2", "-o", str(ring), str(HELLO)])
    first = containerize(engine, DEBIAN, [str(ring)])
    images.append(first.plan.tag)
    assert "libopenmpi3" in first.plan.packages
    assert "openmpi-bin" in first.plan.packages
    assert first.plan.unowned == ()
    out = run_in(
        engine, first.plan.tag, ["mpirun", "--oversubscribe", "-np", "2", "ring", "--ring"]
    )
    assert "rank 0 of 2" in out
    assert "uid 1501 gid 1501" in out
    assert "ring passed 2 ranks" in out
    second: Outcome = containerize(engine, DEBIAN, [str(ring)])
    assert not second.built
    assert second.plan.tag == first.plan.tag
    assert second.build_s < 2.0  # an image lookup, no build


def test_a_library_built_in_the_home_is_copied_and_found(
    engine: docker.DockerClient, images: list[str], tmp_path: Path
) -> None:
    lib = tmp_path / "home" / "lib"
    lib.mkdir(parents=True)
    (tmp_path / "greet.c").write_text(LIBRARY)
    (tmp_path / "main.c").write_text(PROGRAM)
    compile_c(
        ["gcc", "-shared", "-fPIC", "-o", str(lib / "libgreet.so"), str(tmp_path / "greet.c")]
    )
    program = tmp_path / "greeter"
    compile_c([
        "gcc", "-o", str(program), str(tmp_path / "main.c"), f"-L{lib}", "-lgreet",
        f"-Wl,-rpath,{lib}",
    ])  # fmt: skip
    outcome = containerize(engine, DEBIAN, [str(program)])
    images.append(outcome.plan.tag)
    assert [u.name for u in outcome.plan.unowned] == ["libgreet.so"]
    # The rpath names a directory the image lacks: the copy under LIB_DIR is what loads.
    assert run_in(engine, outcome.plan.tag, ["greeter"]) == "greet 42\n"
    found = run_in(engine, outcome.plan.tag, ["sh", "-c", "ldd /usr/local/bin/greeter"])
    assert f"{LIB_DIR}/libgreet.so" in found
    # The library rebuilt: another image.
    (tmp_path / "greet.c").write_text(LIBRARY.replace("42", "43"))
    compile_c(
        ["gcc", "-shared", "-fPIC", "-o", str(lib / "libgreet.so"), str(tmp_path / "greet.c")]
    )
    again = containerize(engine, DEBIAN, [str(program)])
    images.append(again.plan.tag)
    assert again.plan.tag != outcome.plan.tag
    assert run_in(engine, again.plan.tag, ["greeter"]) == "greet 43\n"


def test_a_static_or_missing_binary_is_one_line(
    engine: docker.DockerClient, tmp_path: Path
) -> None:
    (tmp_path / "main.c").write_text("int main(void) { return 0; }\n")
    static = tmp_path / "static"
    compile_c(["gcc", "-static", "-o", str(static), str(tmp_path / "main.c")])
    with pytest.raises(ContainerizeError, match="is statically linked"):
        containerize(engine, DEBIAN, [str(static)])
    with pytest.raises(ContainerizeError, match="no such executable file"):
        containerize(engine, DEBIAN, [str(tmp_path / "absent")])
