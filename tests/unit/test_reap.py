"""Which leftovers may go: only the caller's own, and only of jobs Slurm says have ended."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import docker
import pytest

from launcher.reap import (
    Caller,
    Leftover,
    caller,
    job_dir_leftovers,
    job_ended,
    node_leftovers,
    reapable,
)

ME = Caller(1501, "mpiuser")


@pytest.mark.parametrize(
    ("text", "ended"),
    [
        ("JobId=101 JobName=wrap UserId=mpiuser(1501) JobState=COMPLETED Reason=None", True),
        ("JobId=105 JobState=CANCELLED Reason=None Dependency=(null)", True),
        ("JobId=106 JobState=TIMEOUT Reason=TimeLimit", True),
        ("JobId=108 JobState=NODE_FAIL Reason=NodeDown", True),
        ("JobId=102 JobState=RUNNING Reason=None", False),
        ("JobId=103 JobState=COMPLETING Reason=None", False),  # its processes may still run
        ("JobId=104 JobState=PENDING Reason=Resources", False),
        ("JobId=107 JobState=SUSPENDED Reason=None", False),
        ("", False),  # no answer is no evidence
        ("No jobs in the system", False),
    ],
)
def test_a_job_has_ended_only_in_a_final_state(text: str, ended: bool) -> None:
    assert job_ended(text) is ended


def test_reapable_takes_only_ended_jobs_and_never_the_callers_own() -> None:
    found = [
        Leftover("container", "101", "mpidock-101-leader-sim1"),
        Leftover("container", "102", "mpidock-102-worker-sim1"),  # running, or not visible
        Leftover("job dir", "105", "/home/u/.mpidock/jobs/u/105.0"),
        Leftover("job dir", "300", "/home/u/.mpidock/jobs/u/300.0"),
    ]
    doomed = reapable(found, ended={"101", "105", "300"}, spare="300")
    assert [f.job_id for f in doomed] == ["101", "105"]


# --- whose containers ---------------------------------------------------------------------------

OWN_LABEL = {"org.mpidock.job": "7", "org.mpidock.user": "mpiuser"}


@pytest.mark.parametrize(
    ("labels", "config_user", "ours"),
    [
        (OWN_LABEL, "1501:1501", True),
        (OWN_LABEL, "1501", True),
        # The attacker labels his own container with the victim's name: his UID gives it away.
        (OWN_LABEL, "1504:1504", False),
        # Running as our UID but labelled as another user's: not ours to judge.
        ({**OWN_LABEL, "org.mpidock.user": "mpiother"}, "1501:1501", False),
        ({"org.mpidock.job": "7"}, "1501:1501", False),
        (OWN_LABEL, "", False),  # root in the container: never an mpidock container of ours
        (OWN_LABEL, "mpiuser", False),  # we always run by number
    ],
)
def test_a_user_owns_a_container_by_label_and_uid(
    labels: dict[str, str], config_user: str, ours: bool
) -> None:
    assert ME.owns_container(labels, config_user) is ours


def test_acting_for_everyone_owns_every_container() -> None:
    assert Caller(None).owns_container({}, "1504:1504")


@pytest.mark.usefixtures("root")
def test_root_acts_for_the_jobs_user_in_an_epilog_and_for_everyone_by_hand() -> None:
    assert caller({"SLURM_JOB_UID": "1501", "SLURM_JOB_USER": "mpiuser"}) == ME
    assert caller({}) == Caller(None)


@dataclass
class FakeContainer:
    id: str
    name: str
    labels: dict[str, str]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeContainers:
    found: list[FakeContainer]
    filters: list[dict[str, str]] = field(default_factory=list)

    def list(self, all: bool, filters: dict[str, str]) -> list[FakeContainer]:
        self.filters.append(filters)
        return self.found


@dataclass
class FakeClient:
    containers: FakeContainers


def test_node_leftovers_are_the_callers_containers_by_id() -> None:
    found = [
        FakeContainer("aa", "mpidock-7-worker-sim1", OWN_LABEL, {"Config": {"User": "1501:1501"}}),
        FakeContainer("bb", "mpidock-8-worker-sim1", OWN_LABEL, {"Config": {"User": "1504:1504"}}),
        FakeContainer("cc", "mpidock-9-worker-sim1", {"org.mpidock.job": "9"}, {"Config": {}}),
    ]
    client = FakeClient(FakeContainers(found))
    leftovers = node_leftovers(cast(docker.DockerClient, client), ME)
    assert leftovers == [Leftover("container", "7", "mpidock-7-worker-sim1", "aa")]
    assert client.containers.filters == [{"label": "org.mpidock.job"}]


# --- whose job directories ----------------------------------------------------------------------


SELF = Caller(os.getuid(), "self")


def test_job_dirs_are_found_by_a_job_or_step_name_only(tmp_path: Path) -> None:
    for name in ("41", "42.0", "43_2.batch", "44+1.3", "notes", "43.partial-x", ".hidden"):
        (tmp_path / "self" / name).mkdir(parents=True)
    found = job_dir_leftovers(tmp_path, SELF)
    assert sorted((f.job_id, Path(f.ref).name) for f in found) == [
        ("41", "41"),
        ("42", "42.0"),
        ("43_2", "43_2.batch"),
        ("44+1", "44+1.3"),
    ]
    assert {f.kind for f in found} == {"job dir"}


def test_job_dirs_of_others_files_and_symlinks_are_never_leftovers(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "jobs"
    (root / "self").mkdir(parents=True)
    (root / "self" / "51").symlink_to(elsewhere)  # planted: removing it would remove "elsewhere"
    (root / "self" / "52").write_text("not a directory")
    (root / "self" / "53").mkdir()
    found = job_dir_leftovers(root, Caller(os.getuid() + 1, "self"))  # someone else's view
    assert found == []
    mine = job_dir_leftovers(root, SELF)
    assert [f.job_id for f in mine] == ["53"]


def test_root_for_everyone_looks_in_every_users_directory(tmp_path: Path) -> None:
    for user in ("self", "other"):
        (tmp_path / user / "61.0").mkdir(parents=True)
    (tmp_path / "linked").symlink_to(tmp_path / "self")  # never followed
    found = job_dir_leftovers(tmp_path, Caller(None))
    assert sorted(Path(f.ref).parent.name for f in found) == ["other", "self"]
    assert job_dir_leftovers(tmp_path, SELF)[0].ref == str(tmp_path / "self" / "61.0")


def test_a_missing_job_root_has_no_leftovers(tmp_path: Path) -> None:
    assert job_dir_leftovers(tmp_path / "absent", ME) == []


def test_a_leftover_describes_itself() -> None:
    leftover = Leftover("container", "7", "mpidock-7-worker-sim2", "aa")
    assert leftover.describe() == "container mpidock-7-worker-sim2 of job 7"
