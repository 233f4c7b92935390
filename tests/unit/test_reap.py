"""Which leftovers may go: Slurm's answer read, running jobs spared, job dirs by name."""

from __future__ import annotations

from pathlib import Path

from launcher.reap import Leftover, active_jobs, job_dir_leftovers, reapable

SQUEUE = """\
101 COMPLETED
102 RUNNING
103 COMPLETING
104 PENDING
105 CANCELLED
106 TIMEOUT
107 SUSPENDED
108 NODE_FAIL
"""


def test_active_jobs_are_those_not_in_a_final_state() -> None:
    assert active_jobs(SQUEUE) == {"102", "103", "104", "107"}


def test_active_jobs_of_an_empty_queue() -> None:
    assert active_jobs("") == set()
    assert active_jobs("\n  \n") == set()


def test_reapable_spares_running_jobs_and_the_callers_own() -> None:
    found = [
        Leftover("container", "101", "mpidock-101-leader-sim1"),
        Leftover("container", "102", "mpidock-102-worker-sim1"),
        Leftover("container", "200", "mpidock-200-worker-sim1"),  # Slurm forgot it: ended
        Leftover("job dir", "105", "/home/u/.mpidock/jobs/105"),
        Leftover("job dir", "300", "/home/u/.mpidock/jobs/300"),
    ]
    doomed = reapable(found, active_jobs(SQUEUE), spare="300")
    assert [f.job_id for f in doomed] == ["101", "200", "105"]


def test_job_dirs_are_found_by_a_job_id_name_only(tmp_path: Path) -> None:
    for name in ("41", "42", "notes", "43.partial", ".hidden"):
        (tmp_path / name).mkdir()
    found = job_dir_leftovers(tmp_path)
    assert sorted(f.job_id for f in found) == ["41", "42"]
    assert {f.kind for f in found} == {"job dir"}


def test_a_missing_job_root_has_no_leftovers(tmp_path: Path) -> None:
    assert job_dir_leftovers(tmp_path / "absent") == []


def test_a_leftover_describes_itself() -> None:
    leftover = Leftover("container", "7", "mpidock-7-worker-sim2")
    assert leftover.describe() == "container mpidock-7-worker-sim2 of job 7"
