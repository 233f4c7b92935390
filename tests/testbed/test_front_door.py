"""The front door on the testbed: `mpidock submit` with a command, a template, a #PBS and
an #SBATCH job script whose plain mpirun reaches every node; --wait's exit status and
--wait-timeout."""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.slurm import job_over
from launcher.submit import WAIT_EXPIRED
from launcher.testbed.jobs import user_argv
from tests.conftest import run
from tests.testbed.conftest import HOME, NODES, as_user, assert_nothing_left, wait
from tests.testbed.engines import EngineCase, engine
from tests.testbed.inject import containers_of, state, until

__all__ = ["engine"]  # a fixture

TEMPLATES = """\
[templates.ring3]
image = "mpidock/openmpi"
nodes = 3
cpus_per_node = 1
time = "0:05:00"
comment = "a token ring over three nodes"
"""
PBS = """\
#!/bin/sh
#PBS -l nodes=3:ppn=1,walltime=00:05:00
#PBS -N pbs-ring
#MPIDOCK --image mpidock/openmpi
echo "script on $(hostname)"
mpirun mpi-hello --ring
"""
SLURM = """\
#!/bin/bash
#SBATCH -N 3
#SBATCH --ntasks-per-node=2
#MPIDOCK --image mpidock/openmpi --quiet
mpirun mpi-hello --ring
"""


def submit(
    *words: str, env: tuple[str, ...] = (), user: EngineCase | None = None
) -> tuple[int, str, str]:
    """`mpidock submit --wait WORDS` as the test user (or the engine's): (exit status, job
    output, stderr)."""
    argv = ["env", *env, "mpidock", "submit", "--wait", *words]
    done = as_user(argv, timeout=300, user=user.user) if user else as_user(argv, timeout=300)
    match = re.search(r"^(\d+)$", done.stdout, re.M)
    assert match, done.stdout + done.stderr
    output = (user.home if user else HOME) / f"slurm-{match.group(1)}.out"
    return done.returncode, output.read_text() if output.exists() else "", done.stderr


def script(name: str, text: str) -> Path:
    path = HOME / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_submit_waits_and_returns_the_jobs_exit_status() -> None:
    code, output, err = submit("-N", "3", "--image", "mpidock/openmpi", "--", "mpi-hello")
    assert code == 0, output + err
    assert len(re.findall(r"^rank \d of 3", output, re.M)) == 3
    assert "COMPLETED, exit code 0" in err
    code, output, err = submit(
        "-N", "3", "--image", "mpidock/openmpi", "--", "mpi-hello", "--fail-rank", "1",
        "--exit-code", "7",
    )  # fmt: skip
    assert code != 0, output + err
    assert "FAILED" in err


def test_submit_runs_a_ring_under_each_engine(engine: EngineCase) -> None:
    code, output, err = submit(
        "-N", "3", "--engine", engine.name, "--image", "mpidock/openmpi", "--",
        "mpi-hello", "--ring", user=engine,
    )  # fmt: skip
    assert code == 0, output + err
    assert "ring passed 3 ranks" in output
    ids = {line.split(" uid ", 1)[1] for line in output.splitlines() if " uid " in line}
    pw = pwd.getpwnam(engine.user)
    assert ids == {f"{pw.pw_uid} gid {pw.pw_gid}"}, output
    if engine.name == "podman":
        assert "rootless podman ready" in output


def test_submit_launches_directly_through_slurms_pmix() -> None:
    """--launch pmix: sbatch's script runs srun --mpi=pmix, every task a rank, no sshd."""
    code, output, err = submit(
        "-N", "2", "--ntasks-per-node", "2", "--launch", "pmix", "--image", "mpidock/openmpi",
        "--", "mpi-hello", "--ring",
    )  # fmt: skip
    assert code == 0, output + err
    assert "ring passed 4 ranks" in output
    assert "sshd" not in output
    refused = as_user(["mpidock", "submit", "--launch", "pmix", str(script("r.sh", SLURM))])
    assert refused.returncode == 2
    assert "not a job script's mpirun" in refused.stderr


def test_an_interrupted_wait_stops_following_and_leaves_the_job_running() -> None:
    argv = ["mpidock", "submit", "--wait", "-N", "1", "--image", "mpidock/openmpi", "--",
            "sleep", "120"]  # fmt: skip
    follower = subprocess.Popen(
        user_argv(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HOME
    )
    try:
        assert follower.stdout is not None
        job_id = follower.stdout.readline().strip()  # printed at once, before the following
        assert job_id.isdigit(), job_id
        until(lambda: bool(containers_of(job_id, NODES[0], "leader")), 60, "the job running")
        (mpidock,) = run(["pgrep", "-P", str(follower.pid)]).stdout.split()
        os.kill(int(mpidock), signal.SIGINT)
        _, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
        follower.wait()
    assert follower.returncode == 130, err
    assert f"stopped following job {job_id}; it keeps running (scancel {job_id} stops it)" in err
    assert "Traceback" not in err
    assert state(job_id) == "RUNNING"
    run(["scancel", job_id])
    job = wait(job_id, timeout=60)
    assert job.state == "CANCELLED"
    assert_nothing_left(job)


@pytest.fixture
def left_running() -> Iterator[list[str]]:
    """Jobs a test leaves running on purpose: cancelled at its end, their output removed."""
    jobs: list[str] = []
    yield jobs
    for job_id in jobs:
        if not job_over(state(job_id)):
            run(["scancel", job_id])
            wait(job_id, timeout=60)
        (HOME / f"slurm-{job_id}.out").unlink(missing_ok=True)


def test_a_wait_timeout_stops_following_and_leaves_the_job_running(
    left_running: list[str],
) -> None:
    done = as_user(
        ["mpidock", "submit", "--wait", "--wait-timeout", "5s", "-N", "1",
         "--image", "mpidock/openmpi", "--", "sleep", "120"],
        timeout=120,
    )  # fmt: skip
    match = re.search(r"^(\d+)$", done.stdout, re.M)
    assert match, done.stdout + done.stderr
    job_id = match.group(1)
    left_running.append(job_id)
    assert done.returncode == WAIT_EXPIRED == 124, done.stderr
    assert (
        f"mpidock: stopped following job {job_id} after 5s (--wait-timeout); it keeps "
        f"running (scancel {job_id} stops it)"
    ) in done.stderr
    assert "Traceback" not in done.stderr
    until(lambda: bool(containers_of(job_id, NODES[0], "leader")), 60, "the job running")
    assert state(job_id) == "RUNNING"
    run(["scancel", job_id])
    job = wait(job_id, timeout=60)
    assert job.state == "CANCELLED"
    assert_nothing_left(job)


def test_a_template_gives_image_and_resources() -> None:
    site = HOME / "site-config.toml"
    site.write_text(TEMPLATES)
    env = (f"MPIDOCK_SITE_CONFIG={site}",)
    listed = as_user(["env", *env, "mpidock", "templates"])
    assert listed.returncode == 0, listed.stderr
    assert "ring3" in listed.stdout
    assert "a token ring over three nodes" in listed.stdout
    code, output, err = submit("--template", "ring3", "--", "mpi-hello", "--ring", env=env)
    assert code == 0, output + err
    assert "ring passed 3 ranks" in output
    unknown = as_user(["env", *env, "mpidock", "submit", "--template", "nope", "--", "true"])
    assert unknown.returncode == 2
    assert "unknown template 'nope'" in unknown.stderr
    assert "ring3" in unknown.stderr


def test_a_pbs_script_runs_its_plain_mpirun_on_every_node() -> None:
    code, output, err = submit(str(script("ring.pbs", PBS)))
    assert code == 0, output + err
    assert "script on sim1" in output
    assert "ring passed 3 ranks" in output
    assert sorted(set(re.findall(r"rank \d of 3 on (\S+)", output))) == ["sim1", "sim2", "sim3"]


def test_an_sbatch_script_with_mpidock_lines_runs_six_ranks() -> None:
    code, output, err = submit(str(script("ring.sbatch", SLURM)))
    assert code == 0, output + err
    assert "ring passed 6 ranks" in output
    assert "mpidock: sim2 container" not in output  # --quiet from the #MPIDOCK line
