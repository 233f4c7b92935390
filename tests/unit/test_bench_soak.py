"""The soak's pure parts: a family's summary, failures by kind, the table, its files and
its command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import soak
from bench.__main__ import main as bench_main

RUNS = [
    soak.Run("11", "ok", 9.5),
    soak.Run("12", "ok", 10.5),
    soak.Run("13", "timeout", 121.0, "TIMEOUT 0:0: rank 3 of 6 on sim2 uid 1501 gid 1501"),
    soak.Run("14", "error", 4.0, "FAILED 1:0: mpidock: sim1: ..."),
]


def test_summary_counts_failures_by_kind_and_times_every_run() -> None:
    found = soak.summary(soak.FAMILIES["mpich"], RUNS)
    assert {k: v for k, v in found.items() if k != "failed"} == {
        "family": "mpich", "about": "MPICH 4.0.2 + UCX 1.13.1 (Debian 12)",
        "image": "mpidock/mpich", "required": False, "runs": 4, "failures": 2,
        "timeouts": 1, "errors": 1, "median_s": 10.0, "worst_s": 121.0,
    }  # fmt: skip
    assert [f["job_id"] for f in found["failed"]] == ["13", "14"]


def test_the_table_marks_the_reference_family(tmp_path: Path) -> None:
    mpich5 = {**soak.summary(soak.FAMILIES["mpich5"], RUNS[:2]), "started": "T1"}
    mpich = {**soak.summary(soak.FAMILIES["mpich"], RUNS), "started": "T0"}
    results = {"nodes": 3, "ranks_per_node": 2, "time_limit_s": 120, "families": [mpich5, mpich]}
    soak.write(results, tmp_path)
    assert json.loads((tmp_path / "soak.json").read_text()) == results
    table = (tmp_path / "soak.md").read_text().splitlines()[-2:]
    assert table == [
        "| mpich5 | MPICH 5.0.2 (PyPI wheel) | `mpidock/mpich5` | 2 | 0 | 0 | 0 | 10.0 | 10.5 "
        "| T1 |",
        "| mpich (reference) | MPICH 4.0.2 + UCX 1.13.1 (Debian 12) | `mpidock/mpich` | 4 | 2 "
        "| 1 | 1 | 10.0 | 121.0 | T0 |",
    ]


def test_a_soak_of_some_families_keeps_the_others_figures(tmp_path: Path) -> None:
    old = {"family": "mpich", "runs": 20}
    (tmp_path / "soak.json").write_text(json.dumps({"families": [old, {"family": "mpich5"}]}))
    fresh = {"nodes": 3, "families": [{"family": "mpich5", "runs": 50}]}
    assert soak.merged(tmp_path / "soak.json", fresh) == {
        "nodes": 3, "families": [{"family": "mpich5", "runs": 50}, old],
    }  # fmt: skip
    assert soak.merged(tmp_path / "absent.json", fresh) == fresh


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["soak", "--runs", "0"], "expected a whole number above 0, got '0'"),
        (["soak", "--runs", "\u00b2"], "expected a whole number above 0"),
        (["soak", "--families", "lam"], "invalid choice: 'lam'"),
    ],
)
def test_bad_soak_options_are_one_line(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        bench_main(argv)
    assert done.value.code == 2
    assert error in capsys.readouterr().err
