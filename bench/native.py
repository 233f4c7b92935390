"""The baseline every container figure is divided by: the same programs, built from the
same sources against the same Open MPI (Debian 12's, in the image and on the host), run
on the same testbed nodes by a plain `mpirun` inside the allocation, without containers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from launcher.testbed.images import DOCKERFILES
from launcher.testbed.layout import SHARED, SUBNET

SOURCES = DOCKERFILES / "src"
BIN = SHARED / "bench" / "bin"
# The MPI network mpidock picks on the testbed, given to the native run as well.
MCA = ("--mca", "btl_tcp_if_include", str(SUBNET), "--mca", "oob_tcp_if_include", str(SUBNET))


def build(name: str, source: str) -> Path:
    """mpicc -O2 of the example images' src/<source> into the shared bin every node sees."""
    BIN.mkdir(parents=True, exist_ok=True)
    out = BIN / name
    done = subprocess.run(
        ["mpicc", "-O2", "-o", str(out), str(SOURCES / source)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"mpicc {source}: {done.stderr.strip()}")
    os.chmod(out, 0o755)
    return out


def mpirun(ranks_per_node: int, argv: list[str]) -> list[str]:
    """Open MPI's mpirun as a user runs it in a batch script: Slurm places the ranks."""
    return ["mpirun", "--map-by", f"ppr:{ranks_per_node}:node", *MCA, *argv]
