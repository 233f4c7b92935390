"""Jobs on the testbed as its ordinary users submit them: sbatch, wait, the run record.

Shared by the end-to-end tests and the benchmarks. Everything runs as the user through
runuser with a clean login-like environment, as a user's shell would.
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

from launcher.errors import TestbedError
from launcher.slurm import job_over, job_state_in
from launcher.testbed.layout import SHARED, Node

USER = "mpiuser"
HOME = SHARED / "home" / USER


def home_of(user: str) -> Path:
    return SHARED / "home" / user


def as_user(
    argv: Sequence[str], timeout: float = 300, cwd: Path | None = None, user: str = USER
) -> subprocess.CompletedProcess[str]:
    """argv as a test user with a clean login-like environment, as a user's shell runs it."""
    return subprocess.run(
        user_argv(argv, user),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd or home_of(user),
    )


def user_argv(argv: Sequence[str], user: str = USER) -> list[str]:
    """argv run by runuser as user, its environment only what a login would set."""
    env = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", f"HOME={home_of(user)}"]
    return ["runuser", "-u", user, "--", *env, f"USER={user}", *argv]


@dataclass(frozen=True)
class Job:
    """A finished batch job: its id, Slurm's verdict and its output file."""

    job_id: str
    state: str
    exit_code: str
    output: str
    home: Path = HOME

    def record(self) -> dict[str, Any]:
        """The leader's run record, ~/.mpidock/runs/<jobid>.json."""
        path = self.home / ".mpidock" / "runs" / f"{self.job_id}.json"
        return dict(json.loads(path.read_text()))

    def node_records(self) -> dict[str, dict[str, Any]]:
        """Every node's part of the record, the leader's included, by node name."""
        record = self.record()
        return {record["leader"]["node"]: record["leader"], **record["workers"]}

    def lines(self, prefix: str) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith(prefix)]


def sbatch(options: Sequence[str], wrap: str, timeout: float = 300, user: str = USER) -> Job:
    """Submits wrap with sbatch as a test user and returns the job once it has ended."""
    return wait(submit(options, wrap, timeout, user), timeout, user)


def submit(options: Sequence[str], wrap: str, timeout: float = 300, user: str = USER) -> str:
    """Submits wrap with sbatch as a test user; its job id. Slurm ends it at the timeout."""
    out = home_of(user) / "jobs-out"
    out.mkdir(exist_ok=True)
    os.chown(out, *_ids(user))
    minutes = str(max(1, int(timeout // 60)))
    argv = ["sbatch", "--parsable", "--time", minutes, "-o", f"{out}/%j.out", *options]
    done = as_user([*argv, "--wrap", wrap], user=user)
    match = re.match(r"(\d+)", done.stdout)
    assert match, f"sbatch printed no job id: {done.stdout!r} {done.stderr!r}"
    return match.group(1)


def wait(job_id: str, timeout: float = 300, user: str = USER) -> Job:
    """The job once it has ended.

    Slurm's state is polled every 0.2 s (sbatch --wait polls far more slowly). A job still
    running at the timeout is cancelled, so a hang fails its test and no other.
    """
    deadline = time.monotonic() + timeout
    while not job_over((state := _state(job_id))[0]):
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job_id], check=False)
            raise TestbedError(f"job {job_id} still {state[0]} after {timeout:.0f} s; cancelled")
        time.sleep(0.2)
    output_file = home_of(user) / "jobs-out" / f"{job_id}.out"
    return Job(
        job_id=job_id,
        state=state[0],
        exit_code=state[1],
        output=output_file.read_text() if output_file.exists() else "",
        home=home_of(user),
    )


def _state(job_id: str) -> tuple[str, str]:
    info = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, check=False
    ).stdout
    code = re.search(r"\bExitCode=(\S+)", info)
    return job_state_in(info), code.group(1) if code else "?"


def launch(
    options: Sequence[str],
    entry: Sequence[str],
    command: str,
    timeout: float = 300,
    user: str = USER,
) -> Job:
    """A job whose batch script runs `srun mpidock slurm-entry ENTRY -- COMMAND`."""
    return sbatch(options, entry_wrap(entry, command), timeout=timeout, user=user)


def entry_wrap(entry: Sequence[str], command: str) -> str:
    return " ".join(["srun", "mpidock", "slurm-entry", *entry, "--", command])


def _ids(user: str) -> tuple[int, int]:
    st = home_of(user).stat()
    return st.st_uid, st.st_gid


def docker_on(node: Node, *args: str, stdin: str | None = None) -> str:
    """The docker CLI against one node's daemon; its output, or TestbedError with stderr."""
    done = subprocess.run(
        ["docker", "-H", node.docker_url, *args],
        input=stdin, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise TestbedError(f"docker {' '.join(args)} on {node.name}: {done.stderr.strip()}")
    return done.stdout.strip()
