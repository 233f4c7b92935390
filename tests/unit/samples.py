"""Values several unit-test modules share: one Slurm step, one user, one network."""

from __future__ import annotations

from launcher.mpi import Network
from launcher.plan import Identity

# Task 0 of `sbatch -N 3` on sim[1-3] holding 4, 4 and 2 CPUs.
STEP = {
    "SLURM_JOB_ID": "42",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NTASKS": "3",
    "SLURM_JOB_NODELIST": "sim[1-3]",
    "SLURMD_NODENAME": "sim1",
    "SLURM_JOB_CPUS_PER_NODE": "4(x2),2",
    "SLURM_STEP_ID": "0",
}
# The worker task of the same step on sim2.
WORKER = {"SLURM_PROCID": "1", "SLURM_NODEID": "1", "SLURMD_NODENAME": "sim2"}

ALICE = Identity(
    user="alice",
    uid=1000,
    gid=1000,
    group="alice",
    groups=(("docker", 998), ("hpc", 2000)),
    home="/home/alice",
    shell="/bin/bash",
)
NET = Network("eth0", "10.213.0.0/24")
