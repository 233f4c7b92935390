"""Shared memory and single copy between ranks in one container, set up as the launcher
sets it up: two ranks of mpidock-osu bw reach the single-copy path (Open MPI's CMA), and
the same run without those settings is measurably slower, so this test can fail."""

from __future__ import annotations

import secrets
import statistics
from dataclasses import replace

import docker

from bench import osu
from launcher.containers import docker_kwargs, remove
from launcher.plan import ContainerSpec

BW = ["mpirun", "-np", "2", "mpidock-osu", "bw", "--max-size", "4194304",
      "--iterations", "40", "--warmup", "5"]  # fmt: skip
SPEC = ContainerSpec(
    name="", image="mpidock/openmpi", command=tuple(BW), user="1501:1501", group_add=(),
    labels=(("org.mpidock.test", "shared-memory"),), mounts=(), working_dir="/tmp",
    environment=(("HOME", "/tmp"),), network_mode="none",
)  # fmt: skip


RUNS = 3


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


def curve(text: str) -> dict[int, float]:
    """Bandwidth (MB/s) by message size, from the OSU table in the output."""
    table = "\n".join(line for line in text.splitlines() if line[:1] in "#0123456789")
    return dict(osu.parse(table).rows)


def test_single_copy_works_and_is_what_makes_large_messages_fast(
    client: docker.DockerClient,
) -> None:
    without_settings = replace(SPEC, cap_add=(), shm_size="64m")
    fast, slow = best_of(client, SPEC, RUNS), best_of(client, without_settings, RUNS)
    # Single copy matters from 64 KiB up (measured here: 2.3 to 9 times the bandwidth);
    # the median over those sizes keeps one noisy size from deciding.
    gains = [fast[size] / slow[size] for size in fast if size >= 65536]
    assert statistics.median(gains) > 1.5, gains


def best_of(client: docker.DockerClient, spec: ContainerSpec, runs: int) -> dict[int, float]:
    """The best bandwidth at each size over several runs (OSU's peak): on two shared
    cores one run's two ranks can lose the CPU to anything else, with or without CMA,
    and a single pair of runs once measured single copy slower than two copies."""
    best: dict[int, float] = {}
    for _ in range(runs):
        text = run(client, spec)
        cma = spec.cap_add != ()
        # CMA's process_vm_readv refused (EPERM) exactly when the settings are missing.
        assert ("Read -1" in text) != cma, text[-2000:]
        for size, mbps in curve(text).items():
            best[size] = max(best.get(size, 0.0), mbps)
    return best
