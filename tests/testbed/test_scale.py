"""16 nodes: the testbed widened (and narrowed back to 3 after), mpi4py's helloworld on
every node in both launch modes, one rank per node."""

from __future__ import annotations

import re
import resource
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.testbed import manager
from launcher.testbed.layout import STATE
from tests.testbed.conftest import NODES, sbatch

pytestmark = pytest.mark.testbed
WIDE = 16
HELLO = re.compile(r"^Hello, World! I am process +(\d+) of (\d+) on (\S+)\.$", re.M)
HELLOWORLD = "python3 -m mpi4py.bench helloworld"


def _available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) >> 10
    raise AssertionError("no MemAvailable in /proc/meminfo")


@pytest.fixture(scope="module")
def wide() -> Iterator[None]:
    """The testbed at 16 nodes for the module, then back at 3; what it cost, printed."""
    before, started = _available_mib(), time.monotonic()
    disk = shutil.disk_usage(STATE).used
    manager.up(WIDE, say=lambda line: print(f"[testbed] {line}"))
    took = time.monotonic() - started
    print(
        f"widened to {WIDE} nodes in {took:.0f} s; memory available {before} -> "
        f"{_available_mib()} MiB; disk used +{(shutil.disk_usage(STATE).used - disk) >> 20} MiB; "
        f"this process peaked at {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10} MiB"
    )
    try:
        yield
    finally:
        manager.up(len(NODES), say=lambda line: print(f"[testbed] {line}"))


def _hosts(output: str) -> dict[int, str]:
    found = {int(m.group(1)): m.group(3) for m in HELLO.finditer(output)}
    assert {m.group(2) for m in HELLO.finditer(output)} == {str(WIDE)}, output
    return found


@pytest.mark.usefixtures("wide")
def test_mpi4py_helloworld_on_16_nodes_over_ssh() -> None:
    job = sbatch(
        ["-N", str(WIDE), "--ntasks-per-node=1"],
        f"srun mpidock slurm-entry --image mpidock/openmpi -- {HELLOWORLD}",
        timeout=600,
    )
    assert job.state == "COMPLETED", job.output
    hosts = _hosts(job.output)
    assert sorted(hosts) == list(range(WIDE)), job.output
    assert set(hosts.values()) == {f"sim{i}" for i in range(1, WIDE + 1)}


@pytest.mark.usefixtures("wide")
def test_mpi4py_helloworld_on_16_nodes_through_pmix() -> None:
    job = sbatch(
        ["-N", str(WIDE), "--ntasks-per-node=1"],
        f"srun --mpi=pmix mpidock slurm-entry --launch pmix --image mpidock/openmpi "
        f"-- {HELLOWORLD}",
        timeout=600,
    )
    assert job.state == "COMPLETED", job.output
    hosts = _hosts(job.output)
    assert sorted(hosts) == list(range(WIDE)), job.output
    assert set(hosts.values()) == {f"sim{i}" for i in range(1, WIDE + 1)}
