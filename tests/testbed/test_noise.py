"""What Open MPI prints besides the program's output is only its known, harmless noise."""

from __future__ import annotations

import re

from tests.testbed.conftest import launch

# The parent's redundant setpgid after the child exec'd ssh: EACCES, ignored by Open MPI.
BENIGN = re.compile(
    r"plm:rsh: Warning: setpgid\((\d+),\1\) failed in parent with errno=Permission denied\(13\)"
)


def test_the_only_setpgid_warning_is_the_parents_benign_race() -> None:
    job = launch(["-N", "3", "--ntasks-per-node=2"], ["--image", "mpidock/openmpi"], "mpi-hello")
    assert job.state == "COMPLETED", job.output
    warnings = [line for line in job.output.splitlines() if "setpgid" in line]
    assert all(BENIGN.search(line) for line in warnings), warnings
