"""The MPI families from PyPI's wheels end to end: Open MPI 5 (PRRTE), MPICH 5 (Hydra) and
Intel MPI 2021 (Intel's Hydra, ssh bootstrap, libfabric's tcp provider).

Each is detected from its image's `mpirun --version` (family and version in the run record,
the launch in that family's form), and a short soak (3 jobs of a 3-node, 2-ranks-per-node
ring, each with a Slurm --time of 2 minutes) passes without a hang or a failure. The
50-run figures are `python -m bench soak`'s, committed in bench/results/soak.md.
"""

from __future__ import annotations

import re

import pytest

from bench import soak
from tests.testbed.conftest import (
    HOME,
    NODES,
    assert_nothing_left,
    launch,
    node_containers,
    sbatch,
)


@pytest.mark.parametrize(
    ("image", "mpi", "version", "at", "launch_form"),
    [
        ("mpidock/openmpi5", "openmpi", "5.0.11", 5, ["--prtemca", "plm_ssh_agent"]),
        ("mpidock/mpich5", "mpich", "5.0.2", 0, ["mpiexec", "-launcher", "ssh"]),
        ("mpidock/intelmpi", "intel", "2021.18.1", 0, ["mpiexec", "-bootstrap", "ssh"]),
    ],
)
def test_ring_is_launched_in_the_detected_familys_form(
    image: str, mpi: str, version: str, at: int, launch_form: list[str]
) -> None:
    job = launch(["-N", "3", "--ntasks-per-node=2"], ["--image", image], "mpi-hello --ring")
    assert job.state == "COMPLETED", job.output
    assert "ring passed 6 ranks" in job.output
    record = job.record()
    assert (record["mpi"], record["mpi_version"]) == (mpi, version)
    argv = record["mpirun_argv"]
    assert argv[at : at + len(launch_form)] == launch_form, argv
    if mpi == "openmpi":  # PRRTE's names only, none of ORTE's
        assert "plm_rsh_agent" not in argv
        assert argv[argv.index("oob_tcp_if_include") - 1] == "--prtemca"
    assert {h["node"]: h["slots"] for h in record["nodes"]} == {n.name: 2 for n in NODES}
    assert_nothing_left(job)


def test_short_soak_of_the_new_families_has_no_failure() -> None:
    families = [soak.FAMILIES[name] for name in ("openmpi5", "mpich5", "intelmpi")]
    found = soak.soak(families, runs=3, lock=None)  # the tier runs under the lock already
    failures = {f["family"]: (f["runs"], f["failures"], f["failed"]) for f in found["families"]}
    assert failures == {name: (3, 0, []) for name in ("openmpi5", "mpich5", "intelmpi")}


def test_intel_mpi_places_uneven_slots_and_talks_over_the_nodes_interface() -> None:
    # --np 5 on 3 nodes of 2 CPUs: 2, 2 and 1 ranks. Intel's -hosts has no per-node counts,
    # so sim1 and sim2 are named twice; I_MPI_DEBUG shows the fabric each rank took.
    job = launch(
        ["-N", "3", "--exclusive"], ["--image", "mpidock/intelmpi", "--np", "5"],
        "env I_MPI_DEBUG=5 mpi-hello --ring", timeout=120,
    )  # fmt: skip
    assert job.state == "COMPLETED", job.output
    assert "ring passed 5 ranks" in job.output
    record = job.record()
    assert [(h["node"], h["slots"]) for h in record["nodes"]] == [
        ("sim1", 2), ("sim2", 2), ("sim3", 1),
    ]  # fmt: skip
    argv = record["mpirun_argv"]
    assert argv[argv.index("-hosts") :][:4] == ["-hosts", "sim1,sim1,sim2,sim2,sim3", "-ppn", "1"]
    # Searched, not split in lines: Hydra can join one rank's line to another's output.
    ranks = sorted(re.findall(r"rank \d of 5 on (sim\d)", job.output))
    assert ranks == ["sim1", "sim1", "sim2", "sim2", "sim3"], job.output
    assert "libfabric provider: tcp" in job.output
    pinned = re.findall(r"MPI startup\(\): +([01]) +0 +(\w+)", job.output)
    assert pinned == [("0", "eth0"), ("1", "eth0")], job.output  # sim1's ranks: eth0 only
    assert "docker0" not in job.output
    assert_nothing_left(job)


def test_check_on_a_node_names_intel_mpi_and_its_abi() -> None:
    job = sbatch(["-N", "1", "-w", "sim2"], "mpidock check mpidock/intelmpi", timeout=120)
    assert job.state == "COMPLETED", job.output  # check exits 1 on any FAIL row
    assert " FAIL " not in job.output
    rows = {line.split()[0]: line for line in job.output.splitlines() if line.strip()}
    assert "intel 2021.18.1" in rows["mpirun"]
    assert "libmpi.so.12 (MPICH ABI)" in rows["MPI"]
    assert "ranks ran on check-leader and check-worker" in job.output
    assert node_containers(NODES[1], label="org.mpidock.check") == []


INTEL_SCRIPTS = {
    # Even slots: I_MPI_PERHOST carries them to a plain mpirun.
    "even": ("--ntasks-per-node=2", "", "mpirun mpi-hello --ring\n", 6),
    # Uneven: Intel's host file drops the counts; -machinefile on the job's keeps them.
    "uneven": (
        "--exclusive", "--np 5",
        'mpirun -machinefile "$I_MPI_HYDRA_HOST_FILE" -n 5 mpi-hello --ring\n', 5,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(INTEL_SCRIPTS))
def test_an_intel_job_scripts_own_mpirun_places_every_nodes_slots(case: str) -> None:
    allocation, entry, body, ranks = INTEL_SCRIPTS[case]
    path = HOME / f"intel-{case}.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    try:
        wrap = f"srun mpidock slurm-entry --image mpidock/intelmpi {entry} --quiet --script {path}"
        job = sbatch(["-N", "3", allocation], wrap, timeout=120)
    finally:
        path.unlink()
    assert job.state == "COMPLETED", job.output
    assert f"ring passed {ranks} ranks" in job.output
    placed = sorted(re.findall(rf"rank \d of {ranks} on (sim\d)", job.output))
    assert placed == ["sim1", "sim1", "sim2", "sim2", "sim3", "sim3"][:ranks], job.output
    assert_nothing_left(job)
