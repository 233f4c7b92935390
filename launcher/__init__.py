"""mpidock: multi-node MPI programs inside Docker containers on Slurm clusters."""

__version__ = "0.1.0"
