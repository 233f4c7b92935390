"""Containers stay inside the step's Slurm allocation: its CPUs, the job's memory."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testbed.conftest import HOME, NODES, as_user, assert_nothing_left, launch

IMAGE = ["--image", "mpidock/openmpi"]
# Two busy processes for a few seconds: the CPU time they get over the wall time they
# took is the number of CPUs the container may use.
BURNER = """\
import multiprocessing, os, resource, time

def burn(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass

start = time.monotonic()
workers = [multiprocessing.Process(target=burn, args=(3.0,)) for _ in range(2)]
for w in workers:
    w.start()
for w in workers:
    w.join()
wall = time.monotonic() - start
used = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"nproc {os.cpu_count()} {len(os.sched_getaffinity(0))}")
print(f"cpu-per-wall {(used.ru_utime + used.ru_stime) / wall:.2f}")
"""
# Prints the container's memory limit, then holds ever more memory, past it.
HOG = """\
import time
print("limit", open("/sys/fs/cgroup/memory/memory.limit_in_bytes").read().strip(), flush=True)
held = []
for _ in range(40):
    held.append(bytearray(50 * 1024 * 1024))
    time.sleep(0.02)
print("survived", flush=True)
"""


@pytest.fixture
def scripts() -> Iterator[Path]:
    """The test programs, in the user's home (bound into the containers)."""
    where = HOME / "allocation-tests"
    as_user(["mkdir", "-p", str(where)])
    for name, text in (("burn.py", BURNER), ("hog.py", HOG)):
        (where / name).write_text(text)
    yield where
    for name in ("burn.py", "hog.py"):
        (where / name).unlink(missing_ok=True)
    where.rmdir()


def test_a_one_cpu_job_gets_one_cpu_in_its_container(scripts: Path) -> None:
    job = launch(["-n", "1"], IMAGE, f"sh -c 'nproc; python3 {scripts}/burn.py'")
    assert job.state == "COMPLETED", job.output
    lines = job.output.splitlines()
    assert "1" in lines, job.output  # nproc
    assert "nproc 2 1" in lines, job.output  # the node's two CPUs, one of them usable
    ratio = float(re.search(r"cpu-per-wall (\S+)", job.output).group(1))  # type: ignore[union-attr]
    # Two CPUs would give about 2.0 (less when the machine is busy, never more than 1 here).
    assert 0.5 < ratio < 1.3, job.output
    assert_nothing_left(job)


def test_a_rank_past_the_jobs_memory_is_killed_and_named(scripts: Path) -> None:
    job = launch(["-n", "1", "--mem=300M"], IMAGE, f"python3 {scripts}/hog.py")
    assert job.state == "FAILED", job.output
    limit = int(re.search(r"^limit (\d+)$", job.output, re.M).group(1))  # type: ignore[union-attr]
    assert 0 < limit <= 300 * 1024 * 1024
    assert "survived" not in job.output
    errors = [line for line in job.output.splitlines() if "out of memory" in line]
    assert errors, job.output
    assert any(n.name in line for n in NODES for line in errors), errors
    assert_nothing_left(job)
