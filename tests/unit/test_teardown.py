"""The leader's end of a job on the shared directory alone: who it waits for, how long,
and that the keys go; a stop signal passed on; job roots checked before anything starts."""

from __future__ import annotations

import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from launcher import jobdir, leader
from launcher.errors import JobDirError
from launcher.plan import LaunchPlan, Options, build_plan
from launcher.record import write_json
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
    leader.create_job(plan)
    return plan


def done(plan: LaunchPlan, node: str) -> None:
    write_json(plan.job.arrived_file(node), {"node": node})
    report = {"node": node, "timings": {"teardown": 0.5}, "self": {"max_rss_mb": 50.0}}
    write_json(plan.job.done_file(node), report)


def test_reports_of_every_worker_are_taken_and_the_keys_go(plan: LaunchPlan) -> None:
    done(plan, "sim2")
    done(plan, "sim3")
    run = leader.LeaderRun()
    leader.end_job(plan, run, stopping=False)
    assert run.nodes == {
        node: {"teardown": "clean", "timings": {"teardown": 0.5}, "self": {"max_rss_mb": 50.0}}
        for node in ("sim2", "sim3")
    }
    assert not plan.job.path.exists()


def test_a_worker_that_cannot_arrive_any_more_is_not_waited_for(tmp_path: Path) -> None:
    plan = plan_in(tmp_path, ready_timeout=0.5)
    leader.create_job(plan)
    done(plan, "sim2")
    run = leader.LeaderRun()
    started = time.monotonic()
    leader.end_job(plan, run, stopping=False)
    assert 0.3 < time.monotonic() - started < 3
    assert run.nodes["sim3"] == {"teardown": "never arrived"}
    assert not plan.job.path.exists()


def test_a_stop_signal_waits_for_no_arrival(plan: LaunchPlan) -> None:
    done(plan, "sim2")
    run = leader.LeaderRun()
    started = time.monotonic()
    leader.end_job(plan, run, stopping=True)
    assert time.monotonic() - started < 1
    assert run.nodes["sim3"] == {"teardown": "never arrived"}


def test_a_directory_already_removed_by_a_worker_is_fine(plan: LaunchPlan) -> None:
    jobdir.remove_job_dir(plan.job.path)
    run = leader.LeaderRun()
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
