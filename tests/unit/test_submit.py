"""`mpidock submit`: words sorted between sbatch and slurm-entry, templates and job scripts
folded in, the batch script's one line quoted."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from launcher import jobscript
from launcher.cli import main
from launcher.errors import UsageError
from launcher.submit import (
    WAIT_EXPIRED,
    WaitLimit,
    follow,
    own_parser,
    prepare_submission,
    split,
    wait_limit,
)

SITE = """\
[templates.cfd]
image = "lab/cfd:2.1"
nodes = 4
cpus_per_node = 8
time = "2:00:00"
"""


@pytest.fixture(autouse=True)
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(SITE)
    monkeypatch.setenv("MPIDOCK_SITE_CONFIG", str(path))
    monkeypatch.setenv("MPIDOCK_USER_CONFIG", str(tmp_path / "absent.toml"))
    return path


def test_words_are_ours_or_sbatchs_in_order() -> None:
    words = ["-N", "3", "--image", "lab/cfd", "-x", "sim9", "--ppn=2", "--time", "5", "--wait"]
    ours, theirs = split(words, own_parser())
    assert ours == ["--image", "lab/cfd", "--ppn=2", "--wait"]
    assert theirs == ["-N", "3", "-x", "sim9", "--time", "5"]


def test_a_command_becomes_one_quoted_srun_line() -> None:
    plan = prepare_submission(
        ["-N", "2", "--image", "lab/cfd", "--wait", "--", "./solver", "in put.cfg"]
    )
    assert plan.sbatch == ("-N", "2")
    assert shlex.split(plan.wrap) == [
        "srun", "mpidock", "slurm-entry", "--image", "lab/cfd", "--", "./solver", "in put.cfg",
    ]  # fmt: skip


def test_a_direct_launch_asks_srun_for_slurms_pmi_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = prepare_submission(["-N", "2", "--image", "lab/cfd", "--launch", "pmix", "--", "./a"])
    assert shlex.split(plan.wrap)[:4] == ["srun", "--mpi=pmix", "mpidock", "slurm-entry"]
    assert "--launch" in shlex.split(plan.wrap)
    job = tmp_path / "job.sh"
    job.write_text("#!/bin/sh\n#MPIDOCK --image lab/cfd --launch pmi2\nmpirun ./a\n")
    with pytest.raises(UsageError, match="not a job script's mpirun"):
        prepare_submission([str(job)])
    monkeypatch.setenv("MPIDOCK_LAUNCH", "pmix")  # the configuration's choice counts too
    assert shlex.split(prepare_submission(["--image", "x", "--", "./a"]).wrap)[1] == "--mpi=pmix"
    monkeypatch.delenv("MPIDOCK_LAUNCH")
    assert shlex.split(prepare_submission(["--image", "x", "--", "./a"]).wrap)[1] == "mpidock"


def test_a_template_gives_defaults_the_command_line_overrides() -> None:
    plan = prepare_submission(["--template", "cfd", "-N", "2", "--", "./solver"])
    assert plan.image == "lab/cfd:2.1"
    assert plan.sbatch[-2:] == ("-N", "2")  # after the template's -N 4: sbatch takes the last
    assert plan.sbatch[:2] == ("-N", "4")
    assert shlex.split(plan.wrap)[3:5] == ["--image", "lab/cfd:2.1"]


def test_an_unknown_template_lists_the_valid_ones() -> None:
    with pytest.raises(UsageError) as info:
        prepare_submission(["--template", "cdf", "--", "./solver"])
    assert "unknown template 'cdf'" in str(info.value)
    assert "cfd" in info.value.hint


def test_a_job_script_gives_sbatch_and_launcher_options(tmp_path: Path) -> None:
    job = tmp_path / "job.pbs"
    job.write_text(
        "#!/bin/sh\n#PBS -l nodes=3:ppn=2\n#PBS -N ring\n#MPIDOCK --image lab/cfd\nmpirun ./app\n"
    )
    plan = prepare_submission(["--time", "10", str(job)])
    assert plan.sbatch == ("--nodes=3", "--ntasks-per-node=2", "--job-name=ring", "--time", "10")
    assert shlex.split(plan.wrap) == [
        "srun", "mpidock", "slurm-entry", "--image", "lab/cfd", "--script", str(job),
    ]  # fmt: skip


def test_nothing_to_run_and_no_image_are_named() -> None:
    with pytest.raises(UsageError, match="nothing to run"):
        prepare_submission(["-N", "2", "--image", "lab/cfd"])
    with pytest.raises(UsageError, match="no image to run"):
        prepare_submission(["-N", "2", "--", "./solver"])


LATIN1 = "#!/bin/sh\n#MPIDOCK --image lab/cfd\necho 'caf\u00e9'\n".encode("latin-1")


@pytest.mark.parametrize(
    "argv",
    [["submit", "--dry-run", "{job}"], ["slurm-entry", "--image", "lab/cfd", "--script", "{job}"]],
)
def test_a_script_not_in_utf8_is_one_line_naming_its_line(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "job.sh"
    job.write_bytes(LATIN1)
    assert main([word.format(job=job) for word in argv]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"mpidock: error: {job}:3: not UTF-8 text (byte 0xe9) "
        f"(hint: convert it, e.g. iconv -f latin1 -t utf-8 {job})\n"
    )


def test_an_unreadable_script_is_one_line(tmp_path: Path) -> None:
    job = tmp_path / "job.sh"
    job.mkdir()  # is_file() says no, so submit says there is nothing to run
    with pytest.raises(UsageError, match="nothing to run"):
        prepare_submission([str(job)])
    with pytest.raises(UsageError, match=f"cannot read job script {job}: Is a directory"):
        jobscript.load(job)


# --- --wait-timeout ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "limit"),
    [(["--wait"], None),
     (["--wait", "--wait-timeout", "45s"], WaitLimit(45.0, "45s")),
     (["--wait", "--wait-timeout=12h"], WaitLimit(43200.0, "12h")),
     (["--wait-timeout", "2w", "--wait"], WaitLimit(1209600.0, "2w"))],
)  # fmt: skip
def test_wait_timeout_is_a_duration(words: list[str], limit: WaitLimit | None) -> None:
    assert wait_limit(own_parser().parse_args(words)) == limit


@pytest.mark.parametrize(
    ("words", "message"),
    [(["--wait-timeout", "5m"], "--wait-timeout without --wait"),
     (["--wait", "--wait-timeout", "0s"], "--wait-timeout 0s would stop following at once"),
     (["--wait", "--wait-timeout", "5"], "bad duration '5'"),
     (["--wait", "--wait-timeout", "\u00b2s"], "bad duration '\u00b2s'"),
     (["--wait", "--wait-timeout", "1.5h"], "bad duration '1.5h'")],
)  # fmt: skip
def test_a_bad_wait_timeout_is_refused_before_anything_is_submitted(
    words: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # No sbatch on a unit test's PATH is needed: the refusal comes first.
    assert main(["submit", *words, "--image", "lab/cfd", "--", "./solver"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mpidock: error: {message}")
    assert len(err.splitlines()) == 1
    assert "(hint: " in err


def test_wait_timeout_stays_with_submit(capsys: pytest.CaptureFixture[str]) -> None:
    words = ["--dry-run", "--wait", "--wait-timeout", "5s", "--image", "lab/cfd", "--", "./app"]
    assert main(["submit", *words]) == 0
    assert "wait" not in capsys.readouterr().out


def test_follow_stops_at_the_limit_and_says_the_job_goes_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    asked: list[str] = []

    def running(job_id: str) -> tuple[str, int]:
        asked.append(job_id)
        return "RUNNING", 0

    assert follow("77", WaitLimit(0.0, "5s"), running) == WAIT_EXPIRED == 124
    assert asked == ["77"]
    assert capsys.readouterr().err == (
        "mpidock: stopped following job 77 after 5s (--wait-timeout); it keeps running "
        "(scancel 77 stops it)\n"
    )


def test_follow_within_the_limit_gives_the_jobs_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert follow("78", WaitLimit(3600.0, "1h"), lambda _: ("FAILED", 7)) == 7
    assert capsys.readouterr().err == "mpidock: job 78 FAILED, exit code 7\n"


def test_follow_waits_through_the_brief_states_before_the_end(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the time limit's signals go out while the job reads SIGNALING; TIMEOUT comes after
    monkeypatch.setattr("launcher.submit.POLL", 0.0)
    states = iter([("RUNNING", 0), ("SIGNALING", 0), ("STAGE_OUT", 0), ("TIMEOUT", 0)])
    assert follow("79", None, lambda _: next(states)) == 1
    assert capsys.readouterr().err == "mpidock: job 79 TIMEOUT, exit code 0\n"
