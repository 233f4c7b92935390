"""The end-to-end tier: real jobs on the 3-node Slurm + Docker testbed.

Every test submits real jobs as the ordinary test user, then checks what Slurm, the node
daemons and the shared home say.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from launcher.testbed.layout import SHARED, Node
from tests.conftest import MPIDOCK, run

__all__ = ["MPIDOCK", "run"]

USER = "mpiuser"
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING")
HOME = SHARED / "home" / USER
NODES = (Node(1), Node(2), Node(3))
USER_ENV = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", f"HOME={HOME}", f"USER={USER}"]


def as_user(
    argv: Sequence[str], timeout: float = 300, cwd: Path = HOME
) -> subprocess.CompletedProcess[str]:
    """argv as the test user with a clean login-like environment, as a user's shell runs it."""
    return subprocess.run(
        ["runuser", "-u", USER, "--", *USER_ENV, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


@dataclass(frozen=True)
class Job:
    """A finished batch job: its id, Slurm's verdict and its output file."""

    job_id: str
    state: str
    exit_code: str
    output: str

    def record(self) -> dict[str, Any]:
        """The leader's run record, ~/.mpidock/runs/<jobid>.json."""
        return dict(json.loads((HOME / ".mpidock" / "runs" / f"{self.job_id}.json").read_text()))

    def lines(self, prefix: str) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith(prefix)]


def sbatch(options: Sequence[str], wrap: str, timeout: float = 300) -> Job:
    """Submits wrap with sbatch as the test user and returns the job once it has ended.

    Slurm's state is polled every 0.2 s (sbatch --wait polls far more slowly). A job still
    running at the timeout is cancelled, so a hang fails its test and no other.
    """
    out = HOME / "jobs-out"
    out.mkdir(exist_ok=True)
    os.chown(out, *_ids())
    minutes = str(max(1, int(timeout // 60)))
    argv = ["sbatch", "--parsable", "--time", minutes, "-o", f"{out}/%j.out", *options]
    done = as_user([*argv, "--wrap", wrap])
    match = re.match(r"(\d+)", done.stdout)
    assert match, f"sbatch printed no job id: {done.stdout!r} {done.stderr!r}"
    job_id = match.group(1)
    deadline = time.monotonic() + timeout
    while (state := _state(job_id))[0] in ACTIVE:
        if time.monotonic() > deadline:
            run(["scancel", job_id])
            pytest.fail(f"job {job_id} still {state[0]} after {timeout:.0f} s; cancelled")
        time.sleep(0.2)
    output_file = out / f"{job_id}.out"
    return Job(
        job_id=job_id,
        state=state[0],
        exit_code=state[1],
        output=output_file.read_text() if output_file.exists() else "",
    )


def _state(job_id: str) -> tuple[str, str]:
    info = run(["scontrol", "show", "job", job_id]).stdout
    state = re.search(r"JobState=(\S+)", info)
    code = re.search(r"\bExitCode=(\S+)", info)
    return (state.group(1) if state else "UNKNOWN", code.group(1) if code else "?")


def launch(options: Sequence[str], entry: Sequence[str], command: str, timeout: float = 300) -> Job:
    """A job whose batch script runs `srun mpidock slurm-entry ENTRY -- COMMAND`."""
    wrap = " ".join(["srun", "mpidock", "slurm-entry", *entry, "--", command])
    return sbatch(options, wrap, timeout=timeout)


def node_containers(node: Node, label: str = "org.mpidock.job") -> list[str]:
    """Names of every container, running or not, that carries label on the node's daemon."""
    done = run(
        [
            "docker",
            "-H",
            node.docker_url,
            "ps",
            "-a",
            "--filter",
            f"label={label}",
            "--format",
            "{{.Names}}",
        ]
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def assert_nothing_left(job: Job) -> None:
    """No container of the job on any node and no job directory (keys) in the shared home."""
    for node in NODES:
        assert node_containers(node, f"org.mpidock.job={job.job_id}") == [], node.name
    assert not (HOME / ".mpidock" / "jobs" / job.job_id).exists()


def trap_addresses(node: Node) -> set[tuple[str, int]]:
    """The IPv4 addresses of docker0 inside the node; empty when there is no docker0."""
    done = run(["ip", "netns", "exec", node.netns, "ip", "-j", "addr", "show", "docker0"])
    if done.returncode != 0:
        return set()
    (link,) = json.loads(done.stdout)
    return {(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["family"] == "inet"}


def _ids() -> tuple[int, int]:
    st = HOME.stat()
    return st.st_uid, st.st_gid


@pytest.fixture(autouse=True)
def _needs_testbed(testbed: None) -> None:
    """Every test of this tier runs on the testbed."""
