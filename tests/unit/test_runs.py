"""`mpidock runs`: run records as tables, newest first; one job's nodes and phases."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from launcher.cli import main
from launcher.runs import job_table, list_table, newest

RECORD = {
    "job_id": "42", "started": 1000.0, "ended": 1002.5, "image": "lab/cfd:2.1", "mpi": "openmpi",
    "nodes": [{"node": "sim1", "slots": 2}, {"node": "sim2", "slots": 2}],
    "exit_code": 0, "error": None,
    "leader": {"node": "sim1", "image": {"path": "cached", "bytes": 0},
               "timings": {"image": 0.01, "mpirun": 0.8}, "self": {"max_rss_mb": 47.9}},
    "workers": {"sim2": {"image": {"path": "archive", "bytes": 441000000},
                         "timings": {"image": 4.2, "teardown": 0.06}, "teardown": "clean",
                         "self": {"max_rss_mb": 47.2}}},
}  # fmt: skip


def test_the_list_has_one_line_a_job() -> None:
    error = {"message": "sim2: worker failed: port 20042 is already in use"}
    failed = RECORD | {"job_id": "43", "exit_code": 2, "error": error}
    lines = list_table([RECORD, failed], now=1062.5).splitlines()
    assert lines[0].split() == ["JOB", "ENDED", "NODES", "IMAGE", "EXIT", "SECONDS", "ERROR"]
    assert lines[1].split() == ["42", "1m", "ago", "2", "lab/cfd:2.1", "0", "2.5"]
    assert lines[2].endswith("sim2: worker failed: port 20042 is already in use")


def test_one_job_shows_each_node_and_phase() -> None:
    lines = job_table(RECORD).splitlines()
    assert lines[0] == "job 42: lab/cfd:2.1 (openmpi), exit 0"
    assert lines[1].split() == [
        "NODE", "ROLE", "IMAGE", "BYTES", "IMAGE", "MPIRUN", "TEARDOWN", "END", "RSS-MB",
    ]  # fmt: skip
    assert lines[2].split() == ["sim1", "leader", "cached", "0", "0.01", "0.80", "-", "47.9"]
    assert lines[3].split() == [
        "sim2", "worker", "archive", "441000000", "4.20", "-", "0.06", "clean", "47.2",
    ]  # fmt: skip


def test_newest_first_and_unreadable_records_skipped(tmp_path: Path) -> None:
    for job, mtime in (("1", 100), ("2", 300), ("3", 200)):
        path = tmp_path / f"{job}.json"
        path.write_text(json.dumps(RECORD | {"job_id": job}))
        os.utime(path, (mtime, mtime))
    (tmp_path / "4.json").write_text("{not json")
    (tmp_path / "5.json").write_text("[1, 2]")  # JSON, but not a record
    assert [r["job_id"] for r in newest(tmp_path, 3)] == ["2", "3", "1"]


def test_the_command_names_a_missing_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MPIDOCK_RUNS_DIR", str(tmp_path))
    assert main(["runs", "99"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mpidock: error: no run record of job 99 in {tmp_path}")
    (tmp_path / "42.json").write_text(json.dumps(RECORD))
    assert main(["runs"]) == 0
    assert "lab/cfd:2.1" in capsys.readouterr().out


@pytest.mark.parametrize("last", ["-1", "0", "²", "x"])
def test_a_bad_last_is_one_line(last: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["runs", "--last", last])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("mpidock: error: argument --last: expected a whole number, 1 or more")
    assert len(err.splitlines()) == 1


def test_a_record_without_leader_or_numbers_shows_what_it_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An older or cut-short record: no leader, odd types; the tables show dashes, no crash."""
    monkeypatch.setenv("MPIDOCK_RUNS_DIR", str(tmp_path))
    partial = {k: v for k, v in RECORD.items() if k != "leader"}
    partial |= {"ended": "soon", "nodes": 3, "error": "a string, not a table"}
    partial["workers"] = {"sim2": {"timings": {"image": "slow"}, "image": None}}
    (tmp_path / "42.json").write_text(json.dumps(partial))
    assert main(["runs", "42"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "job 42: lab/cfd:2.1 (openmpi), exit 0"
    assert lines[2].split() == ["sim2", "worker", "-", "-", "-", "-", "-"]
    assert main(["runs"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == [
        "42", "-", "-", "lab/cfd:2.1", "0", "-",
    ]  # fmt: skip


def test_a_direct_launch_record_names_its_mode() -> None:
    direct = {k: v for k, v in RECORD.items() if k not in ("mpi", "workers")}
    assert job_table(direct | {"launch": "pmix"}).splitlines()[0] == (
        "job 42: lab/cfd:2.1 (pmix launch), exit 0"
    )
    assert job_table(direct).splitlines()[0] == "job 42: lab/cfd:2.1 (MPI unknown), exit 0"
