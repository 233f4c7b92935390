"""A second user's job starts and `mpidock reap` never touch the first user's containers.

The testbed runs PrivateData=jobs: the attacker's squeue does not show the victim's job,
which the reaper once took for an ended one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from launcher.testbed.jobs import docker_on
from tests.testbed.conftest import (
    NODES,
    as_user,
    assert_nothing_left,
    entry_wrap,
    node_containers,
    sbatch,
    submit,
    wait,
)

ATTACKER = "mpiother"
VICTIM_RUNS = 40  # seconds: long enough for the attacker's jobs to run beside it
# The attacker's decoy: labelled as an ended job of the victim's, running as the attacker.
DECOY = "mpidock-1-worker-sim1"


def victim_containers(job_id: str) -> dict[str, list[str]]:
    return {n.name: node_containers(n, f"org.mpidock.job={job_id}") for n in NODES}


@pytest.fixture
def decoy() -> Iterator[str]:
    """On sim1, a container the victim's reaper must leave alone: its labels say it is
    the victim's, but it runs as the attacker."""
    node = NODES[0]
    docker_on(node, "rm", "-f", DECOY)
    docker_on(
        node, "run", "-d", "--name", DECOY, "-u", "1504:1504",
        "--label", "org.mpidock.job=1", "--label", "org.mpidock.user=mpiuser",
        "mpidock/openmpi", "sleep", "300",
    )  # fmt: skip
    yield DECOY
    docker_on(node, "rm", "-f", DECOY)


def test_another_users_job_starts_and_reap_leave_the_victims_containers(decoy: str) -> None:
    assert as_user(["squeue", "--noheader"], user=ATTACKER).returncode == 0
    victim = submit(
        ["-N", "3", "-n", "3"],
        entry_wrap(["--image", "mpidock/openmpi"], f"sleep {VICTIM_RUNS}"),
        timeout=240,
    )
    deadline = time.monotonic() + 120
    while not all(victim_containers(victim).values()):
        assert time.monotonic() < deadline, f"the victim's job {victim} never started"
        time.sleep(0.5)
    before = victim_containers(victim)
    # The attacker cannot see the victim's job...
    seen = as_user(["squeue", "--noheader", "--states=all"], user=ATTACKER).stdout
    assert victim not in seen.split()
    # ...and starts jobs on the same nodes (each start reaps), then reaps by hand.
    attack = sbatch(
        ["-N", "3", "-n", "3"],
        entry_wrap(["--image", "mpidock/openmpi", "--ppn", "1"], "true"),
        user=ATTACKER,
    )
    assert attack.state == "COMPLETED", attack.output
    by_hand = sbatch(["-N", "3", "-n", "3"], "srun mpidock reap", user=ATTACKER)
    assert by_hand.state == "COMPLETED", by_hand.output
    assert "removed" not in by_hand.output, by_hand.output
    assert victim_containers(victim) == before
    done = wait(victim, timeout=240)
    assert done.state == "COMPLETED", done.output
    assert "removed container" not in done.output  # the decoy is not the victim's
    assert node_containers(NODES[0], "org.mpidock.job=1") == [decoy]
    assert_nothing_left(done)
