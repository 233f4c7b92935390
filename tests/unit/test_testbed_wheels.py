"""The example images built from PyPI wheels: every wheel of an image is staged into its
build context and counted in its digest (mpidock/intelmpi has two: impi-rt, impi-devel)."""

from __future__ import annotations

from pathlib import Path

from launcher.testbed.images import WHEELS, _stage, context_digest


def wheels(tmp_path: Path, *names: str) -> list[Path]:
    made = []
    for name in names:
        path = tmp_path / name
        path.write_bytes(f"pretend wheel {name}".encode())
        made.append(path)
    return made


def test_intel_mpi_takes_the_runtime_and_the_compiler_wrappers() -> None:
    assert WHEELS["intelmpi"] == ("impi-rt==2021.18.1", "impi-devel==2021.18.1")


def test_every_wheel_is_staged_beside_the_dockerfile(tmp_path: Path) -> None:
    rt, devel = wheels(tmp_path, "impi_rt-1-x.whl", "impi_devel-1-x.whl")
    context = _stage(tmp_path / "context", "intelmpi", [rt, devel])
    assert sorted(p.name for p in (context / "intelmpi" / "wheel").iterdir()) == [
        "impi_devel-1-x.whl", "impi_rt-1-x.whl",
    ]  # fmt: skip
    assert (context / "intelmpi" / "Dockerfile").is_file()
    assert (context / "src" / "mpi_hello.c").is_file()


def test_an_image_without_wheels_stages_no_wheel_directory(tmp_path: Path) -> None:
    context = _stage(tmp_path / "context", "openmpi", [])
    assert not (context / "openmpi" / "wheel").exists()


def test_the_digest_follows_every_wheel(tmp_path: Path) -> None:
    rt, devel = wheels(tmp_path, "impi_rt-1-x.whl", "impi_devel-1-x.whl")
    both = context_digest("intelmpi", [rt, devel])
    assert both == context_digest("intelmpi", [rt, devel])
    assert both != context_digest("intelmpi", [rt])
    devel.write_bytes(b"a new build of the same name")
    assert context_digest("intelmpi", [rt, devel]) != both
