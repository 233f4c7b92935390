"""Shared memory and single copy between ranks in one container, set up as the launcher
sets it up: two ranks move large messages through Open MPI's single copy (CMA,
process_vm_readv), intact, and the same ranks without those settings are refused it,
so this test fails if the settings stop mattering or stop being enough."""

from __future__ import annotations

import re
import secrets
from dataclasses import replace

import docker

from launcher.containers import docker_kwargs, remove
from launcher.plan import ContainerSpec

# Rank 0 sends 8 messages of 4 MiB at once (large enough for Open MPI's single copy),
# rank 1 receives them into its own buffers and compares their digests.
MESSAGES = r"""
import hashlib, os
from mpi4py import MPI
comm, size, count = MPI.COMM_WORLD, 4 << 20, 8
if comm.rank == 0:
    sent = [bytearray(os.urandom(size)) for _ in range(count)]
    MPI.Request.Waitall([comm.Isend(b, dest=1, tag=i) for i, b in enumerate(sent)])
    comm.send([hashlib.sha256(b).digest() for b in sent], dest=1)
else:
    got = [bytearray(size) for _ in range(count)]
    MPI.Request.Waitall([comm.Irecv(b, source=0, tag=i) for i, b in enumerate(got)])
    digests = comm.recv(source=0)
    intact = sum(hashlib.sha256(b).digest() == d for b, d in zip(got, digests))
    print(f"intact {intact} of {count}", flush=True)
"""
SPEC = ContainerSpec(
    name="", image="mpidock/openmpi", command=("mpirun", "-np", "2", "python3", "-c", MESSAGES),
    user="1501:1501", group_add=(), labels=(("org.mpidock.test", "shared-memory"),),
    mounts=(), working_dir="/tmp", environment=(("HOME", "/tmp"),), network_mode="none",
)  # fmt: skip
# Open MPI's line for a refused process_vm_readv: errno 1 is EPERM.
REFUSED = re.compile(r"Read -1, expected \d+, errno = 1\b")


def run(client: docker.DockerClient, spec: ContainerSpec) -> str:
    container = client.containers.create(
        **docker_kwargs(replace(spec, name=f"mpidock-test-shm-{secrets.token_hex(3)}"))
    )
    try:
        container.start()
        assert container.wait(timeout=300)["StatusCode"] == 0, container.logs().decode()
        return str(container.logs().decode(errors="replace"))
    finally:
        remove(container)


def test_single_copy_moves_large_messages_intact_and_needs_the_settings(
    client: docker.DockerClient,
) -> None:
    # Open MPI cannot see Docker's seccomp profile: it takes the same single-copy path in
    # both runs, which without SYS_PTRACE is refused (EPERM) for every large message and
    # recovered another way; with the launcher's settings nothing is refused.
    with_settings = run(client, SPEC)
    assert "intact 8 of 8" in with_settings, with_settings[-2000:]
    assert not REFUSED.search(with_settings), with_settings[-2000:]
    without = run(client, replace(SPEC, cap_add=(), shm_size="64m"))
    assert "intact 8 of 8" in without, without[-2000:]
    assert len(REFUSED.findall(without)) >= 8, without[-2000:]
