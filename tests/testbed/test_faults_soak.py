"""Soak: 20 back-to-back jobs on 3 nodes, a random fault in half of them. The healthy
ones all succeed, and no container, process, key or mount of any job is left."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable
from pathlib import Path

from launcher.testbed.jobs import Job, entry_wrap, submit
from tests.conftest import run
from tests.testbed.conftest import NODES, docker_on, node_containers
from tests.testbed.inject import (
    SLEEPER,
    containers_of,
    entry_pids,
    finish,
    job_dirs,
    kill_entry,
    start_running,
)

JOBS = 20
ENTRY = ["--image", "mpidock/openmpi", "--ready-timeout", "5"]


def _mid_run(act: Callable[[str], None], program: str = SLEEPER) -> Callable[[random.Random], Job]:
    def inject(rng: random.Random) -> Job:
        job_id = start_running(["-N", "3"], entry_wrap(ENTRY, program))
        act(job_id)
        return finish(job_id)

    return inject


def _kill_container(role: str) -> Callable[[str], None]:
    def act(job_id: str) -> None:
        node = NODES[0] if role == "leader" else NODES[1 + hash(job_id) % 2]
        (name,) = containers_of(job_id, node, role)
        docker_on(node, "kill", name)

    return act


def _worker_never_starts(rng: random.Random) -> Job:
    victim = rng.choice(["1", "2"])
    wrap = entry_wrap(ENTRY, "mpi-hello").replace(
        "srun ", f"srun sh -c '[ $SLURM_PROCID = {victim} ] && kill -9 $$; exec ", 1
    )
    return finish(submit(["-N", "3"], wrap + "'"))


def _failing_rank(rng: random.Random) -> Job:
    return finish(submit(["-N", "3"], entry_wrap(ENTRY, "mpi-hello --fail-rank 1")))


FAULTS: dict[str, Callable[[random.Random], Job]] = {
    "worker container killed": _mid_run(_kill_container("worker")),
    "leader container killed": _mid_run(_kill_container("leader")),
    "leader slurm-entry killed": _mid_run(lambda j: kill_entry(j, NODES[0])),
    # The job goes on (its sshd stays up) until the program ends; the Epilog takes the rest.
    "worker slurm-entry killed": _mid_run(lambda j: kill_entry(j, NODES[2]), "mpi-hello --sleep 3"),
    "scancel": _mid_run(lambda j: run(["scancel", j]) and None),
    "leader SIGTERM": _mid_run(lambda j: kill_entry(j, NODES[0], signal.SIGTERM)),
    "worker never starts": _worker_never_starts,
    "failing rank": _failing_rank,
}


def test_twenty_jobs_half_faulty_leave_nothing_behind() -> None:
    seed = int(os.environ.get("MPIDOCK_SOAK_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    plan: list[str | None] = [None] * (JOBS // 2) + [
        rng.choice(sorted(FAULTS)) for _ in range(JOBS - JOBS // 2)
    ]
    rng.shuffle(plan)
    outcomes = []
    for fault in plan:
        if fault is None:
            job = finish(submit(["-N", "3"], entry_wrap(ENTRY, "mpi-hello --ring")))
        else:
            job = FAULTS[fault](rng)
        outcomes.append((fault, job))
    story = f"seed {seed}: " + ", ".join(
        f"{j.job_id} {f or 'healthy'} {j.state}" for f, j in outcomes
    )
    for fault, job in outcomes:
        if fault is None:
            assert job.state == "COMPLETED", story
            assert "ring passed 3 ranks" in job.output, story
        else:
            assert job.state in ("FAILED", "CANCELLED"), story
    assert leftovers() == [], story


def leftovers() -> list[str]:
    """Anything of any job still on the testbed: containers, processes, keys, mounts."""
    found = [f"container {c} on {n.name}" for n in NODES for c in node_containers(n)]
    found += [f"slurm-entry pid {p} on {n.name}" for n in NODES for p in entry_pids("", n)]
    found += [f"job dir {d}" for d in job_dirs()]
    found += [f"sshd {line}" for line in _pgrep("sshd -D -e -f")]
    found += [
        f"mount {line}"
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if ".mpidock/jobs" in line
    ]
    return found


def _pgrep(pattern: str) -> list[str]:
    return run(["pgrep", "-af", pattern]).stdout.splitlines()
