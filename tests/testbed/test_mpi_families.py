"""The MPI families from PyPI's wheels end to end: Open MPI 5 (PRRTE) and MPICH 5 (Hydra).

Each is detected from its image's `mpirun --version` (family and version in the run record,
the launch in that family's form), and a short soak (3 jobs of a 3-node, 2-ranks-per-node
ring, each with a Slurm --time of 2 minutes) passes without a hang or a failure. The
50-run figures are `python -m bench soak`'s, committed in bench/results/soak.md.
"""

from __future__ import annotations

import pytest

from bench import soak
from tests.testbed.conftest import NODES, assert_nothing_left, launch


@pytest.mark.parametrize(
    ("image", "mpi", "version", "at", "launch_form"),
    [
        ("mpidock/openmpi5", "openmpi", "5.0.11", 5, ["--prtemca", "plm_ssh_agent"]),
        ("mpidock/mpich5", "mpich", "5.0.2", 0, ["mpiexec", "-launcher", "ssh"]),
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
    families = [soak.FAMILIES["openmpi5"], soak.FAMILIES["mpich5"]]
    found = soak.soak(families, runs=3, lock=None)  # the tier runs under the lock already
    failures = {f["family"]: (f["runs"], f["failures"], f["failed"]) for f in found["families"]}
    assert failures == {"openmpi5": (3, 0, []), "mpich5": (3, 0, [])}
