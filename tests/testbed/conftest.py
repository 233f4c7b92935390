"""The end-to-end tier: real jobs on the 3-node Slurm + Docker testbed.

Every test submits real jobs as the ordinary test user, then checks what Slurm, the node
daemons and the shared home say.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest

from launcher.testbed.jobs import (
    HOME,
    USER,
    Job,
    as_user,
    docker_on,
    entry_wrap,
    home_of,
    launch,
    sbatch,
    submit,
    wait,
)
from launcher.testbed.layout import LOGS, Node
from tests.conftest import MPIDOCK, run

__all__ = [
    "HOME", "MPIDOCK", "USER", "as_user", "docker_on", "entry_wrap", "home_of", "launch", "run",
    "sbatch", "submit", "wait",
]  # fmt: skip

NODES = (Node(1), Node(2), Node(3))


def node_containers(node: Node, label: str = "org.mpidock.job", field: str = "Names") -> list[str]:
    """Names (or another field, e.g. State) of every container, running or not, that
    carries label on the node's daemon."""
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
            f"{{{{.{field}}}}}",
        ]
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def assert_nothing_left(job: Job, epilog_removed: Collection[str] = ()) -> None:
    """No container of the job on any node and no job directory (keys) in the shared home.

    The testbed's Epilog (`mpidock reap --job`) would hide a launcher that leaves things
    behind, so what it removed is checked too: nothing, but on the nodes named.
    """
    for node in NODES:
        assert node_containers(node, f"org.mpidock.job={job.job_id}") == [], node.name
        removed = [line for line in epilog_lines(job.job_id, node) if ": removed " in line]
        if node.name in epilog_removed:
            assert removed, f"{node.name}: the Epilog removed nothing of job {job.job_id}"
        else:
            assert removed == [], f"the launcher left these to the Epilog: {removed}"
    assert job_dirs_of(job) == []


def job_dirs_of(job: Job, root: Path | None = None) -> list[str]:
    """The job's directories (one per step, <job>.<step>) left in the user's directory of
    the job root (default ~/.mpidock/jobs)."""
    mine = (root or job.home / ".mpidock" / "jobs") / job.home.name
    found = mine.iterdir() if mine.is_dir() else iter(())
    return sorted(p.name for p in found if p.name.split(".")[0] == job.job_id)


def epilog_lines(job_id: str, node: Node) -> list[str]:
    """What the node's Epilog said of the job: 'nothing to remove' or each removal."""
    log = LOGS / f"epilog-{node.name}.log"
    lines = log.read_text().splitlines() if log.exists() else []
    about = re.compile(rf"^{node.name}: .*\bjob {job_id}\b")
    return [line for line in lines if about.match(line)]


def trap_addresses(node: Node) -> set[tuple[str, int]]:
    """The IPv4 addresses of docker0 inside the node; empty when there is no docker0."""
    done = run(["ip", "netns", "exec", node.netns, "ip", "-j", "addr", "show", "docker0"])
    if done.returncode != 0:
        return set()
    (link,) = json.loads(done.stdout)
    return {(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["family"] == "inet"}


@pytest.fixture(autouse=True)
def _needs_testbed(testbed: None) -> None:
    """Every test of this tier runs on the testbed."""


def sticky_shared(path: Path) -> Iterator[Path]:
    """A directory every user shares, as a site makes one: root's, mode 1777; fresh, and
    removed afterwards. For fixtures: `yield from sticky_shared(PATH)`."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)
