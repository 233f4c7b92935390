"""mpidock installed as a user installs it (`pip install .`, not editable) brings up the
testbed: it finds its example images' sources as package data and gives every node a copy
of itself; the checkout's own install is restored afterwards."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.testbed.images import context_digest
from launcher.testbed.install import VENV
from tests.conftest import MPIDOCK, NODE_COUNT, run
from tests.testbed.conftest import launch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv holding a plain `pip install .` of this checkout; its mpidock."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    done = run([*pip, str(ROOT)], timeout=900)
    assert done.returncode == 0, done.stderr
    try:
        yield venv / "bin" / "mpidock"
    finally:
        back = run([*MPIDOCK, "testbed", "up", "-N", str(NODE_COUNT)], timeout=900)
        shutil.rmtree(venv, ignore_errors=True)
        assert back.returncode == 0, back.stderr
        said = [line for line in (back.stderr + back.stdout).splitlines() if "launcher for" in line]
        assert said, back.stderr
        assert "copy" not in said[0]  # the checkout's editable install is back...
        ask = [str(VENV / "bin" / "python"), "-c", "import launcher; print(launcher.__file__)"]
        where = subprocess.run(ask, capture_output=True, text=True, check=True, cwd="/").stdout
        assert Path(where.strip()).is_relative_to(ROOT), where  # ...and no copy shadows it


def test_the_installed_copy_carries_the_example_images_sources(installed: Path) -> None:
    ask = "from launcher.testbed import images; print(images.DOCKERFILES)"
    where = Path(_python(installed, ask))
    assert ROOT not in where.parents, where  # the copy in site-packages, not the checkout
    for name in ("openmpi", "mpich"):
        assert (where / name / "Dockerfile").is_file()
        assert _python(installed, _digest_of(name)) == context_digest(name)


def test_testbed_up_from_the_installed_copy_runs_jobs(installed: Path) -> None:
    done = run([str(installed), "testbed", "up", "-N", str(NODE_COUNT)], timeout=900)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert "Traceback" not in said
    assert "launcher for users: installed (copy of the installed package)" in said
    job = launch(["-N", "2"], ["--image", "mpidock/openmpi"], "mpi-hello --ring")
    assert job.state == "COMPLETED", job.output
    assert "ring passed 2 ranks" in job.output


def _python(installed: Path, code: str) -> str:
    """code run by the installed copy's Python, away from the checkout."""
    done = subprocess.run(
        [str(installed.parent / "python"), "-c", code],
        capture_output=True, text=True, timeout=60, check=False, cwd="/",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _digest_of(name: str) -> str:
    return f"from launcher.testbed.images import context_digest; print(context_digest({name!r}))"
