"""Forwarded variables (-x, --env, #PBS -v) reach every rank with the step's value."""

from __future__ import annotations

import re

import pytest

from tests.testbed.conftest import NODES, sbatch
from tests.testbed.test_front_door import script, submit

VALUE = "two words; $dollar 'quoted'"
EXPORT = "export FOO=\"two words; \\$dollar 'quoted'\""  # VALUE, in the batch script's shell
# Not an MPI program: the variable's arrival on every node is what is tested.
SHOW = """sh -c 'echo "FOO=[$FOO] on $(hostname)"'"""


def seen(output: str) -> dict[str, str]:
    """Each node's FOO as its rank printed it."""
    found = re.finditer(r"^FOO=\[(.*)\] on (\S+)$", output, re.M)
    return {m.group(2): m.group(1) for m in found}


@pytest.mark.parametrize("image", ["mpidock/openmpi", "mpidock/mpich"])
def test_a_forwarded_variable_reaches_every_rank(image: str) -> None:
    wrap = f"{EXPORT}; srun mpidock slurm-entry -x FOO --image {image} -- {SHOW}"
    job = sbatch(["-N", "3", "--time", "2"], wrap)
    assert job.state == "COMPLETED", job.output
    assert seen(job.output) == {n.name: VALUE for n in NODES}, job.output


def test_forwarding_an_unset_variable_is_one_line() -> None:
    wrap = f"srun mpidock slurm-entry -x NOT_SET_ANYWHERE --image mpidock/openmpi -- {SHOW}"
    job = sbatch(["-N", "3", "--time", "2"], wrap)
    assert job.state == "FAILED", job.output
    errors = [line for line in job.output.splitlines() if line.startswith("mpidock: error")]
    assert errors, job.output
    assert all("NOT_SET_ANYWHERE is not set" in line for line in errors), job.output
    assert "Traceback" not in job.output


def test_a_pbs_script_forwards_its_v_variables_to_every_rank() -> None:
    text = (
        "#!/bin/sh\n#PBS -l nodes=3:ppn=1,walltime=00:02:00\n#PBS -v FOO\n"
        f"#MPIDOCK --image mpidock/openmpi\nmpirun {SHOW}\n"
    )
    code, output, err = submit(str(script("forward.pbs", text)), env=(f"FOO={VALUE}",))
    assert code == 0, output + err
    assert seen(output) == {n.name: VALUE for n in NODES}, output
