"""Host MPI injection end to end: the testbed's host MPICH 5 and Open MPI 5
(`[host_mpi.mpich5]`, `[host_mpi.openmpi5]` in its site configuration, from PyPI's
wheels) injected into images, or refused.

An image built against Debian's MPICH 4.0.2 runs a 3-node, 2-ranks-per-node ring with the
host's MPICH 5: its own Hydra launches, every rank loads the host's libmpi.so.12 (under
the image's name libmpich.so.12) and the host's own UCX; Debian's Open MPI 4.1 image runs
it with the host's Open MPI 5 (mpirun --prefix). An Open MPI image, and an MPICH
image under a `strict` check that its version fails, are refused before any container
of the job starts: one line, a failed job, nothing left on any node. Every job has a
Slurm --time (launch's timeout), so a hang fails one test.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import soak
from launcher.testbed import hostmpi
from launcher.testbed.jobs import Job
from tests.testbed.conftest import (
    HOME,
    NODES,
    assert_nothing_left,
    entry_wrap,
    launch,
    run,
    sbatch,
)

PREFIX = str(hostmpi.PREFIX)
RING = ["-N", "3", "--ntasks-per-node=2"]
# Each rank first says which libraries its loader takes, in the rank's own environment.
LDD_RING = "sh -c 'ldd /usr/local/bin/mpi-hello; exec mpi-hello --ring'"


def started_containers(job: Job, since: float) -> list[str]:
    """Every container event of the job on any node since `since` (epoch seconds)."""
    until = str(int(time.time()) + 1)
    found = []
    for node in NODES:
        done = run(
            ["docker", "-H", node.docker_url, "events", "--since", str(int(since) - 1),
             "--until", until, "--filter", f"label=org.mpidock.job={job.job_id}",
             "--format", "{{.Action}} {{.Actor.Attributes.name}}"]
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        found += [f"{node.name}: {line}" for line in done.stdout.splitlines()]
    return found


def assert_refused_early(job: Job, since: float, *said: str) -> None:
    """A failed job, the refusal in one line naming both sides, no container of the job
    created on any node, and nothing left."""
    assert job.state == "FAILED", job.output
    assert job.exit_code != "0:0"
    refusals = [line for line in job.output.splitlines() if "refused" in line]
    assert len(refusals) == 1, job.output
    assert refusals[0].startswith("mpidock: error: sim1: --host-mpi "), refusals
    for words in said:
        assert words in refusals[0], refusals[0]
    assert "(hint: run without --host-mpi" in refusals[0]
    assert job.record()["error"]["kind"] == "HostMpiRefused"
    assert started_containers(job, since) == []
    assert_nothing_left(job)


def test_debian_mpich_image_runs_its_ring_with_the_hosts_mpich5_injected() -> None:
    job = launch(RING, ["--image", "mpidock/mpich", "--host-mpi", "mpich5"], LDD_RING, 180)
    assert job.state == "COMPLETED", job.output
    assert "ring passed 6 ranks" in job.output
    record = job.record()
    assert record["host_mpi"]["ran"] == (
        "host MPI mpich5 (mpich 5.0.2) injected into image's mpich 4.0.2"
    )
    assert (record["mpi"], record["mpi_version"]) == ("mpich", "5.0.2")
    assert record["mpirun_argv"][0] == f"{PREFIX}/bin/mpiexec"
    # Every rank's libmpich.so.12 is the host's libmpi.so.12, linked in the job directory,
    # and its UCX the host's bundled one, never the image's.
    mpi = re.findall(r"libmpich\.so\.12 => (\S+)", job.output)
    assert len(mpi) == 6, job.output
    assert {Path(p).parent.name for p in mpi} == {"host-mpi"}
    ucp = re.findall(r"libucp\.so\.0 => (\S+)", job.output)
    assert ucp == [f"{PREFIX}/lib/mpich/libucp.so.0"] * 6
    assert "/lib/x86_64-linux-gnu/libmpich" not in job.output
    assert {h["node"]: h["slots"] for h in record["nodes"]} == {n.name: 2 for n in NODES}
    assert_nothing_left(job)


def test_debian_open_mpi_image_runs_its_ring_with_the_hosts_open_mpi_5_injected() -> None:
    """Open MPI's injection: the host's mpirun with --prefix, so the PRRTE daemons ssh'd
    to the other nodes are the host's too, and every rank loads its libmpi.so.40."""
    ompi = "/opt/mpidock/host-mpi/openmpi5"
    entry = ["--image", "mpidock/openmpi", "--host-mpi", "openmpi5"]
    job = launch(RING, entry, LDD_RING, 180)
    assert job.state == "COMPLETED", job.output
    assert "ring passed 6 ranks" in job.output
    record = job.record()
    assert record["host_mpi"]["ran"] == (
        "host MPI openmpi5 (openmpi 5.0.11) injected into image's openmpi 4.1.4"
    )
    assert record["mpirun_argv"][:3] == [f"{ompi}/bin/mpirun", "--prefix", ompi]
    assert "--prtemca" in record["mpirun_argv"]  # launched as the Open MPI 5 it is
    mpi = re.findall(r"libmpi\.so\.40 => (\S+)", job.output)
    assert mpi == [f"{ompi}/lib/libmpi.so.40"] * 6, job.output
    assert_nothing_left(job)


def test_dry_run_says_the_host_mpi_will_be_injected() -> None:
    job = sbatch(
        ["-N", "1"],
        "srun mpidock slurm-entry --dry-run --image mpidock/mpich --host-mpi mpich5 -- ./app",
        timeout=120,
    )
    assert job.state == "COMPLETED", job.output
    assert (
        "mpi: host MPI mpich5 (mpich 5.0.2) to be injected (check major of the image's MPI "
        "at launch)"
    ) in job.output
    assert f"mpirun: {PREFIX}/bin/mpiexec -launcher ssh" in job.output


def test_open_mpi_image_with_the_mpich_host_mpi_is_refused_before_any_container() -> None:
    since = time.time()
    job = launch(RING, ["--image", "mpidock/openmpi", "--host-mpi", "mpich5"], "mpi-hello", 120)
    assert_refused_early(
        job,
        since,
        "the image's MPI is openmpi 4.1.4 (libmpi.so.40)",
        "host MPI mpich5 (mpich 5.0.2, libmpi.so.12) (check major)",
        "the ABI differs",
    )


@pytest.fixture
def strict_site() -> Iterator[Path]:
    """A site file declaring the testbed's MPICH 5 under check strict, as `strict`."""
    path = HOME / "site-host-mpi-strict.toml"
    text = hostmpi.site_text({"mpich5": "5.0.2"})
    text = text.replace(f"[host_mpi.{hostmpi.NAME}]", "[host_mpi.strict]")
    path.write_text(text.replace('check = "major"', 'check = "strict"'))
    path.chmod(0o644)
    yield path
    path.unlink(missing_ok=True)


def test_mpich_image_of_another_version_is_refused_under_strict(strict_site: Path) -> None:
    since = time.time()
    wrap = f"export MPIDOCK_SITE_CONFIG={strict_site}; " + entry_wrap(
        ["--image", "mpidock/mpich", "--host-mpi", "strict"], "mpi-hello"
    )
    job = sbatch(RING, wrap, timeout=120)
    assert_refused_early(
        job,
        since,
        "the image's MPI is mpich 4.0.2 (libmpich.so.12, libmpichcxx.so.12, libmpichfort.so.12)",
        "host MPI strict (mpich 5.0.2, libmpi.so.12) (check strict)",
        "check strict needs the identical version",
    )


def test_short_soak_of_the_injected_mpich_has_no_failure() -> None:
    """Debian's MPICH 4.0.2 alone hangs in MPI_Finalize across nodes (README Known
    problems); with the host's MPICH 5 injected its ring ends cleanly, run after run."""
    found = soak.soak([soak.FAMILIES["mpich-host5"]], runs=3, lock=None)  # tier holds the lock
    (row,) = found["families"]
    assert (row["family"], row["runs"], row["failures"], row["failed"]) == ("mpich-host5", 3, 0, [])
