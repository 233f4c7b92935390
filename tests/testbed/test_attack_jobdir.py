"""A second user on the same cluster (mpiother) against mpiuser's jobs: a job directory
planted on a shared job root, the job's port squatted on a node; and two steps of one job
side by side. The victim's job runs normally or stops with one line naming the problem."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from launcher.keys import new_keypair
from launcher.slurm import job_port
from launcher.testbed.jobs import USER, Job, user_argv, wait
from tests.testbed.conftest import (
    NODES,
    as_user,
    assert_nothing_left,
    entry_wrap,
    job_dirs_of,
    node_containers,
    run,
    sticky_shared,
    submit,
)

ATTACKER = "mpiother"
ATTACKER_UID = 1504
SHARED_ROOT = Path("/srv/mpidock/shared-jobs")
IMAGE = ["--image", "mpidock/openmpi"]


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A job root every user shares, as a site would make it: root's, mode 1777."""
    yield from sticky_shared(SHARED_ROOT)


def held(options: list[str], wrap: str) -> str:
    """A victim's job, submitted held: the attacker sees its id (squeue shows it) first."""
    return submit(["--hold", *options], wrap)


def release(job_id: str) -> Job:
    done = run(["scontrol", "release", job_id])
    assert done.returncode == 0, done.stderr
    return wait(job_id)


def as_attacker(*argv: str) -> subprocess.CompletedProcess[str]:
    return as_user(list(argv), user=ATTACKER)


def plant(path: Path, text: str) -> None:
    done = as_attacker("sh", "-c", 'printf %s "$1" > "$2"', "plant", text, str(path))
    assert done.returncode == 0, done.stderr


def error_lines(job: Job) -> list[str]:
    return job.lines("mpidock: error:")


def test_a_planted_job_directory_stops_the_job_with_one_line_and_no_sshd(
    shared_root: Path,
) -> None:
    wrap = entry_wrap([*IMAGE, "--job-root", str(shared_root)], "mpi-hello")
    job_id = held(["-N", "3"], wrap)
    # The attacker makes the victim's user directory and next job directory his own, with
    # his key authorized, his sshd settings and his image named.
    planted = shared_root / USER / f"{job_id}.0"
    assert as_attacker("mkdir", "-m", "0777", "-p", str(planted)).returncode == 0
    attacker_key = new_keypair("attacker").public_openssh
    plant(planted / "authorized_keys", f"{attacker_key}\n")
    plant(planted / "sshd_config", "Port 2222\nAuthorizedKeysFile /tmp/anything\n")
    plant(planted / "image.json", '{"image": "attacker/evil", "image_id": "sha256:00"}\n')
    before = {p.name: p.read_text() for p in planted.iterdir()}
    job = release(job_id)
    assert job.state == "FAILED", job.output
    assert "Traceback" not in job.output
    lines = error_lines(job)
    assert len(lines) == 3, job.output  # one a node, each naming the problem
    for line in lines:
        assert f"{shared_root / USER} is owned by UID {ATTACKER_UID}, not 1501" in line, line
    # No sshd ever started with the attacker's files: no container of the job anywhere.
    for node in NODES:
        assert node_containers(node, f"org.mpidock.job={job_id}") == [], node.name
    assert {p.name: p.read_text() for p in planted.iterdir()} == before
    assert job.record()["error"]["kind"] == "JobDirError"


def test_the_victims_own_user_directory_keeps_the_attacker_out(shared_root: Path) -> None:
    wrap = entry_wrap([*IMAGE, "--job-root", str(shared_root)], "mpi-hello")
    first = release(held(["-N", "3"], wrap))
    assert first.state == "COMPLETED", first.output
    mine = shared_root / USER
    assert (mine.stat().st_uid, mine.stat().st_mode & 0o777) == (1501, 0o700)
    job_id = held(["-N", "3"], wrap)
    tried = as_attacker("mkdir", str(mine / f"{job_id}.0"))
    assert tried.returncode != 0
    assert "Permission denied" in tried.stderr
    assert as_attacker("mv", str(mine), str(shared_root / "taken")).returncode != 0  # sticky
    job = release(job_id)
    assert job.state == "COMPLETED", job.output
    assert "rank 2 of 3" in job.output
    assert job_dirs_of(job, shared_root) == []
    assert_nothing_left(job)


def test_a_squatted_port_on_a_node_moves_that_node_to_another(shared_root: Path) -> None:
    node = NODES[1]
    job_id = held(["-N", "3"], entry_wrap(IMAGE, "mpi-hello"))
    port = job_port(job_id, 20000, 29999, "0")
    with squatter(node.netns, port):
        job = release(job_id)
    assert job.state == "COMPLETED", job.output
    assert "rank 2 of 3" in job.output
    workers = job.record()["workers"]
    assert workers["sim2"]["port"] != port
    assert workers["sim3"]["port"] == port
    assert_nothing_left(job)


def test_two_steps_of_one_job_run_side_by_side() -> None:
    step = entry_wrap(IMAGE, "mpi-hello").replace("srun ", "srun --overlap ", 1)
    script = f"{step} & a=$!; {step} & b=$!; wait $a; ra=$?; wait $b; rb=$?; exit $((ra | rb))"
    job = wait(submit(["-N", "3"], script))
    assert job.state == "COMPLETED", job.output
    assert job.output.count("rank 0 of 3") == 2
    records = [job.record(), json_record(job, f"{job.job_id}.1.json")]
    assert [(r["exit_code"], r["error"]) for r in records] == [(0, None), (0, None)]
    ports = {r["workers"]["sim2"]["port"] for r in records}
    assert len(ports) == 2  # each step its own sshd on sim2
    assert_nothing_left(job)


def json_record(job: Job, name: str) -> dict[str, Any]:
    return dict(json.loads((job.home / ".mpidock" / "runs" / name).read_text()))


# Listens until its stdin closes, so that closing it ends the process wherever it runs.
LISTEN = (
    "import socket, sys\n"
    "s = socket.socket(); s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen()\n"
    "print('listening', flush=True); sys.stdin.read()\n"
)


@contextlib.contextmanager
def squatter(netns: str, port: int) -> Iterator[None]:
    """A process of the attacker listening on a port in a node's network namespace."""
    argv = [
        "ip",
        "netns",
        "exec",
        netns,
        *user_argv(["python3", "-c", LISTEN, str(port)], ATTACKER),
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "listening"
        yield
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
