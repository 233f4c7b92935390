"""Run records: atomic JSON files, where they go, and per-phase timings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from launcher import record
from launcher.record import Timings, read_json, runs_dir, write_json

DATA = {"job_id": "42", "exit_code": 0, "nodes": [{"node": "sim1", "slots": 4}]}


def test_write_json_creates_parents_and_a_complete_file(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "deep" / "42.json"
    write_json(path, DATA)
    text = path.read_text()
    assert text.endswith("}\n")
    assert json.loads(text) == DATA
    assert read_json(path) == DATA
    assert [p.name for p in path.parent.iterdir()] == ["42.json"]


def test_write_json_replaces_instead_of_overwriting_in_place(tmp_path: Path) -> None:
    path = tmp_path / "42.json"
    write_json(path, {"round": 1, "padding": "x" * 10000})
    # A reader that opened the old file keeps reading the old, whole content.
    with path.open() as reader:
        write_json(path, {"round": 2})
        assert json.loads(reader.read())["round"] == 1
    assert read_json(path) == {"round": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["42.json"]


def test_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "42.json"
    write_json(path, DATA)
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert read_json(path) == DATA
    assert [p.name for p in tmp_path.iterdir()] == ["42.json"]


@pytest.mark.parametrize("text", [None, "", '{"job_id": "4', "[1, 2"])
def test_read_json_of_missing_or_partial_files(tmp_path: Path, text: str | None) -> None:
    path = tmp_path / "42.json"
    if text is not None:
        path.write_text(text)
    assert read_json(path) is None


def test_runs_dir_defaults_to_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MPIDOCK_RUNS_DIR", raising=False)
    assert runs_dir("/home/alice") == Path("/home/alice/.mpidock/runs")


def test_runs_dir_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MPIDOCK_RUNS_DIR", str(tmp_path / "records"))
    assert runs_dir("/home/alice") == tmp_path / "records"


def test_empty_runs_dir_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPIDOCK_RUNS_DIR", "")
    assert runs_dir("/home/alice") == Path("/home/alice/.mpidock/runs")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """A monotonic clock for launcher.record that returns the listed readings in turn."""
    readings: list[float] = []
    monkeypatch.setattr(record, "time", SimpleNamespace(monotonic=lambda: readings.pop(0)))
    yield readings
    assert readings == [], "the clock was read fewer times than expected"


def test_phases_are_timed_in_order(clock: list[float]) -> None:
    clock.extend([100.0, 101.5, 101.5, 104.25])
    timings = Timings()
    with timings.phase("image"):
        pass
    with timings.phase("container"):
        pass
    assert list(timings.phases.items()) == [("image", 1.5), ("container", 2.75)]


def test_a_failing_phase_is_timed_and_its_error_passes_through(clock: list[float]) -> None:
    clock.extend([10.0, 12.0])
    timings = Timings()
    with pytest.raises(RuntimeError, match="pull failed"), timings.phase("image"):
        raise RuntimeError("pull failed")
    assert timings.phases == {"image": 2.0}


def test_phase_durations_are_rounded(clock: list[float]) -> None:
    clock.extend([0.0, 1.234567])
    timings = Timings()
    with timings.phase("mpirun"):
        pass
    assert timings.phases == {"mpirun": 1.2346}


def test_phase_with_the_real_clock() -> None:
    timings = Timings()
    with timings.phase("nothing"):
        pass
    assert 0 <= timings.phases["nothing"] < 1
