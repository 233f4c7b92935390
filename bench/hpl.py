"""HPL through Debian's hpcc (the whole HPC Challenge suite runs; HPL's GFLOP/s is read):
two nodes, one rank each (the testbed's two cores), in mpidock's containers against a
native mpirun of the host's hpcc, the same Debian package as in the image."""

from __future__ import annotations

import os
import re
import shutil
import statistics
from typing import Any

from bench import native
from launcher.testbed.jobs import HOME, entry_wrap, sbatch

IMAGE = "mpidock/openmpi"
TFLOPS = re.compile(r"^HPL_Tflops=([0-9.eE+-]+)$", re.M)
NB = 128
RANKS = 2


def hpccinf(n: int, nb: int = NB, p: int = 1, q: int = RANKS) -> str:
    """hpcc's input: HPL.dat's 31 lines, the separator, then PTRANS's sizes."""
    return f"""HPLinpack benchmark input file
Written by mpidock's bench/hpl.py
HPL.out      output file name (if any)
8            device out (6=stdout,7=stderr,file)
1            # of problems sizes (N)
{n}         Ns
1            # of NBs
{nb}          NBs
0            PMAP process mapping (0=Row-,1=Column-major)
1            # of process grids (P x Q)
{p}            Ps
{q}            Qs
16.0         threshold
1            # of panel fact
2            PFACTs (0=left, 1=Crout, 2=Right)
1            # of recursive stopping criterium
4            NBMINs (>= 1)
1            # of panels in recursion
2            NDIVs
1            # of recursive panel fact.
1            RFACTs (0=left, 1=Crout, 2=Right)
1            # of broadcast
1            BCASTs (0=1rg,1=1rM,2=2rg,3=2rM,4=Lng,5=LnM)
1            # of lookahead depth
1            DEPTHs (>=0)
2            SWAP (0=bin-exch,1=long,2=mix)
64           swapping threshold
0            L1 in (0=transposed,1=no-transposed) form
0            U  in (0=transposed,1=no-transposed) form
1            Equilibration (0=no,1=yes)
8            memory alignment in double (> 0)
##### This line (no. 32) is ignored (it serves as a separator). ######
0                               Number of additional problem sizes for PTRANS
1200 10000 30000                values of N
0                               number of additional blocking sizes for PTRANS
40 9 8 13 13 20 16 32 64        values of NB
"""


def gflops(output: str) -> float:
    """HPL's GFLOP/s from hpccoutf.txt's summary."""
    match = TFLOPS.search(output)
    if not match:
        raise RuntimeError("no HPL_Tflops= line in hpccoutf.txt: did HPL run?")
    return float(match.group(1)) * 1000


def one(mode: str, n: int) -> float:
    """One hpcc run in a fresh working directory of the test user; HPL GFLOP/s."""
    work = HOME / "bench-hpl" / mode
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "hpccinf.txt").write_text(hpccinf(n))
    owner = HOME.stat()
    for path in (work.parent, work, work / "hpccinf.txt"):
        os.chown(path, owner.st_uid, owner.st_gid)
    job = sbatch(
        ["-N", str(RANKS), "--ntasks-per-node=1", "-D", str(work)], wrap(mode), timeout=1800
    )
    out = work / "hpccoutf.txt"
    if job.state != "COMPLETED" or not out.exists():
        raise RuntimeError(f"hpcc {mode} job {job.job_id} {job.state}: {job.output[-1500:]}")
    return gflops(out.read_text())


def wrap(mode: str) -> str:
    """The batch script's launch of hpcc: native mpirun, mpidock's ssh mode (container) or
    its direct mode through Slurm's PMIx (pmix)."""
    if mode == "container":
        return entry_wrap(["--image", IMAGE], "hpcc")
    if mode == "pmix":
        return f"srun --mpi=pmix mpidock slurm-entry --launch pmix --image {IMAGE} -- hpcc"
    return " ".join(native.mpirun(1, ["hpcc"]))


def run(n: int, repeat: int) -> dict[str, Any]:
    """Both modes, interleaved, `repeat` times; medians and their ratio."""
    runs: dict[str, list[float]] = {"native": [], "container": []}
    for _ in range(repeat):
        for mode in runs:
            runs[mode].append(one(mode, n))
    container = statistics.median(runs["container"])
    native_gflops = statistics.median(runs["native"])
    return {
        "container_gflops": round(container, 3), "native_gflops": round(native_gflops, 3),
        "ratio": round(container / native_gflops, 4), "n": n, "nb": NB, "ranks": RANKS,
        "runs": runs,
    }  # fmt: skip
