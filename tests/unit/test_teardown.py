"""The leader's end of a job on the shared directory alone: who it waits for, how long,
and that the keys go; a stop signal passed on; job roots checked before anything starts."""

from __future__ import annotations

import json
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from launcher import entry, jobdir, leader
from launcher.devices import DevicePlan
from launcher.errors import JobDirError, JobDirExists
from launcher.plan import LaunchPlan, Options, build_plan
from launcher.record import write_json
from launcher.signals import Inbox
from launcher.slurm import SlurmEnv
from tests.unit.samples import ALICE, STEP


def plan_in(root: Path, ready_timeout: float = 60.0) -> LaunchPlan:
    opts = Options(image="solver:1", command=("./solver",), job_root=str(root))
    env = SlurmEnv.from_environ(STEP)
    plan = build_plan(env, opts, ALICE, cwd="/tmp", image="solver:1", flavor=None, network=None)
    return replace(plan, ready_timeout=ready_timeout)


@pytest.fixture
def plan(tmp_path: Path) -> LaunchPlan:
    plan = plan_in(tmp_path)
    leader.create_job(plan, leader.LeaderRun())
    return plan


def done(plan: LaunchPlan, node: str) -> None:
    write_json(plan.job.arrived_file(node), {"node": node})
    report = {"node": node, "timings": {"teardown": 0.5}, "self": {"max_rss_mb": 50.0}}
    write_json(plan.job.done_file(node), report)


def test_reports_of_every_worker_are_taken_and_the_keys_go(plan: LaunchPlan) -> None:
    done(plan, "sim2")
    done(plan, "sim3")
    run = leader.LeaderRun(created=True)
    leader.end_job(plan, run, stopping=False)
    assert run.nodes == {
        node: {"teardown": "clean", "timings": {"teardown": 0.5}, "self": {"max_rss_mb": 50.0}}
        for node in ("sim2", "sim3")
    }
    assert not plan.job.path.exists()


def test_a_worker_that_cannot_arrive_any_more_is_not_waited_for(tmp_path: Path) -> None:
    plan = plan_in(tmp_path, ready_timeout=0.5)
    leader.create_job(plan, leader.LeaderRun())
    done(plan, "sim2")
    run = leader.LeaderRun(created=True)
    started = time.monotonic()
    leader.end_job(plan, run, stopping=False)
    assert 0.3 < time.monotonic() - started < 3
    assert run.nodes["sim3"] == {"teardown": "never arrived"}
    assert not plan.job.path.exists()


def test_a_stop_signal_waits_for_no_arrival(plan: LaunchPlan) -> None:
    done(plan, "sim2")
    run = leader.LeaderRun(created=True)
    started = time.monotonic()
    leader.end_job(plan, run, stopping=True)
    assert time.monotonic() - started < 1
    assert run.nodes["sim3"] == {"teardown": "never arrived"}


def test_a_directory_already_removed_by_a_worker_is_fine(plan: LaunchPlan) -> None:
    jobdir.remove_job_dir(plan.job.path)
    run = leader.LeaderRun(created=True)
    leader.end_job(plan, run, stopping=False)
    assert run.nodes == {}


@pytest.mark.parametrize(
    ("received", "passed"),
    [
        (signal.SIGINT, signal.SIGINT),
        (signal.SIGTERM, signal.SIGTERM),
        (signal.SIGHUP, signal.SIGTERM),
        (None, signal.SIGTERM),
    ],
)
def test_the_stop_signal_mpirun_gets(received: int | None, passed: signal.Signals) -> None:
    assert leader.passed_on(received) is passed


def test_a_job_root_to_be_made_under_a_writable_parent_passes(tmp_path: Path) -> None:
    jobdir.check_root(tmp_path / "a" / "b", "alice", "sim1")


def test_a_file_in_the_way_of_the_job_root_is_named(tmp_path: Path) -> None:
    (tmp_path / "jobs").write_text("")
    with pytest.raises(JobDirError, match="is not a directory alice can write"):
        jobdir.check_root(tmp_path / "jobs" / "deeper", "alice", "sim1")


# --- the end cannot change how the job ended; the record says what happened ---------------


def test_a_job_dir_that_cannot_be_removed_is_noted_not_raised(
    plan: LaunchPlan, tmp_path: Path
) -> None:
    moved = tmp_path / "moved"
    plan.job.path.rename(moved)
    plan.job.path.symlink_to(moved)  # rmtree refuses a symlink: a real failure to remove
    run = leader.LeaderRun(created=True, exit_code=0)
    leader.end_job(plan, run, stopping=True)
    assert len(run.problems) == 1
    assert "cannot remove job directory" in run.problems[0]
    assert (moved / "stop").exists()


def test_teardown_problems_leave_a_successful_exit_and_reach_the_record(
    plan: LaunchPlan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MPIDOCK_RUNS_DIR", str(tmp_path / "runs"))
    moved = tmp_path / "moved"
    plan.job.path.rename(moved)
    plan.job.path.symlink_to(moved)
    run = leader.LeaderRun(created=True, exit_code=0)
    entry._teardown(plan, run, True, None, "")
    entry._write_record(plan, run, time.time(), None)
    record = json.loads((tmp_path / "runs" / "42.json").read_text())
    assert (record["exit_code"], record["error"]) == (0, None)
    assert "cannot remove job directory" in record["teardown_problems"][0]


def test_an_unexpected_exception_is_no_success_in_the_record(
    plan: LaunchPlan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MPIDOCK_RUNS_DIR", str(tmp_path / "runs"))
    run = leader.LeaderRun(created=True)
    entry._write_record(plan, run, time.time(), RuntimeError("no such\nthing"))
    record = json.loads((tmp_path / "runs" / "42.json").read_text())
    assert record["exit_code"] == entry.INTERNAL_ERROR
    assert record["error"] == {
        "message": "RuntimeError: no such thing", "node": "sim1", "kind": "internal error"
    }  # fmt: skip


def test_a_launcher_error_records_the_status_mpidock_exits_with(
    plan: LaunchPlan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MPIDOCK_RUNS_DIR", str(tmp_path / "runs"))
    entry._write_record(plan, leader.LeaderRun(), time.time(), JobDirError("no room"))
    record = json.loads((tmp_path / "runs" / "42.json").read_text())
    assert (record["exit_code"], record["error"]["kind"]) == (2, "JobDirError")


def test_a_later_step_keeps_its_own_record(tmp_path: Path) -> None:
    first = plan_in(tmp_path)
    assert entry.record_name(first) == "42.json"
    assert entry.record_name(replace(first, step_id="1")) == "42.1.json"


def test_a_leader_that_finds_its_job_dir_taken_tells_the_workers_and_records_it(
    plan: LaunchPlan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before anything starts: the directory of the same job and step is there (a launch
    killed before this one). The workers waiting in it are told to stop at once."""
    monkeypatch.setenv("MPIDOCK_RUNS_DIR", str(tmp_path / "runs"))
    env = SlurmEnv.from_environ(STEP)
    opts = Options(image="solver:1", command=("./solver",), job_root=str(tmp_path))
    with pytest.raises(JobDirExists):
        entry._lead(env, opts, plan, Inbox(), None, DevicePlan())
    assert plan.job.stop_file.exists()
    assert plan.job.authorized_keys.exists()  # the earlier launch's: not removed
    record = json.loads((tmp_path / "runs" / "42.json").read_text())
    assert (record["exit_code"], record["error"]["kind"]) == (2, "JobDirExists")
