"""mpidock: multi-node MPI programs inside Docker containers on Slurm clusters."""

import sys

__version__ = "0.1.0"

# docker-py reaches a daemon over ssh only through an optional transport that imports
# paramiko (and with it invoke): about 0.25 s of CPU at every start, on every node. mpidock
# never talks to an engine over ssh, and docker-py treats the transport as absent when it
# cannot be imported; the leader imports paramiko itself, for its readiness probe only.
sys.modules.setdefault("docker.transport.sshconn", None)  # type: ignore[arg-type]
