"""The cluster itself: distinct nodes, one Docker daemon each, the docker0 trap, status."""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from pathlib import Path

from launcher.testbed import registry
from launcher.testbed.layout import REGISTRY, Node
from tests.testbed.conftest import (
    MPIDOCK,
    NODES,
    as_user,
    docker_on,
    launch,
    run,
    sbatch,
    trap_addresses,
)


def test_batch_job_runs_on_three_distinct_nodes() -> None:
    job = sbatch(["-N", "3"], "srun hostname")
    assert job.state == "COMPLETED", job
    assert sorted(job.output.split()) == [n.name for n in NODES]


def test_every_node_answers_with_its_own_docker_daemon() -> None:
    done = as_user(["srun", "-N", "3", "docker", "info", "--format", "{{.Name}}"])
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == [n.name for n in NODES]


def test_host_network_container_sees_its_node() -> None:
    node = NODES[1]
    argv = [
        "srun",
        "-N",
        "1",
        "-w",
        node.name,
        "docker",
        "run",
        "--rm",
        "--net=host",
        "mpidock/openmpi",
        "sh",
        "-c",
        "hostname; hostname -I",
    ]
    done = as_user(argv)
    assert done.returncode == 0, done.stderr
    name, addresses = done.stdout.splitlines()
    assert name == node.name
    assert node.address in addresses.split()


def test_every_node_carries_the_docker0_trap() -> None:
    for node in NODES:
        assert trap_addresses(node) == {("172.17.0.1", 16)}


def test_status_lists_every_node_up_with_its_images() -> None:
    # A node is `completing` while the Epilog of the previous test's job still runs.
    for _ in range(150):
        done = run([*MPIDOCK, "testbed", "status"])
        if "completing" not in done.stdout:
            break
        time.sleep(0.2)
    assert done.returncode == 0, done.stdout
    node_part, user_part = done.stdout.split("\n\n")
    rows = {line.split()[0]: line.split() for line in node_part.splitlines()[1:]}
    assert sorted(rows) == [n.name for n in NODES]
    users = [line.split() for line in user_part.splitlines()[1:]]
    assert users == [
        ["mpiuser", "1501", "yes"], ["mpinodocker", "1503", "no"], ["mpiother", "1504", "yes"]
    ]  # fmt: skip
    for node in NODES:
        _name, address, netns, dockerd, slurmd, *images = rows[node.name]
        assert (address, netns, dockerd, slurmd) == (node.address, "up", "up", "idle")
        assert "mpidock/openmpi:latest," in images or "mpidock/openmpi:latest" in images


def test_up_on_a_running_testbed_changes_nothing() -> None:
    before = _testbed_pids()
    done = run([*MPIDOCK, "testbed", "up", "-N", str(len(NODES))])
    assert done.returncode == 0, done.stderr
    changes = [line for line in done.stderr.splitlines() if "started" in line or "loaded" in line]
    assert changes == []
    assert _testbed_pids() == before


def _testbed_pids() -> dict[str, str]:
    """Daemon name to pid, for every testbed daemon in the host and node namespaces."""
    pids = {}
    for node in NODES:
        pids[f"{node.name}-netns"] = " ".join(
            sorted(run(["ip", "netns", "pids", node.netns]).stdout.split())
        )
    for program in ("slurmctld", "munged"):
        pids[program] = run(["pgrep", "-x", program]).stdout.strip()
    return pids


def test_up_rebinds_the_nodes_hosts_a_replaced_etc_hosts_cut_off() -> None:
    # An editor or `sed -i` replaces /etc/hosts by rename: the nodes' bind mounts of their
    # own hosts file detach, and their containers can no longer resolve the other nodes.
    hosts = Path("/etc/hosts")
    fresh = hosts.with_name("hosts.mpidock-test")
    shutil.copy2(hosts, fresh)
    os.replace(fresh, hosts)
    assert "sim2" not in node_hosts(NODES[0])
    done = run([*MPIDOCK, "testbed", "up", "-N", str(len(NODES))], timeout=600)
    assert done.returncode == 0, done.stderr
    for node in NODES:
        assert "dockerd started" not in done.stderr  # repaired in place, jobs keep running
        assert node.address in node_hosts(node)
    job = launch(["-N", "3"], ["--image", "mpidock/openmpi"], "mpi-hello --ring")
    assert "ring passed 3 ranks" in job.output, job.output


def node_hosts(node: Node) -> str:
    """/etc/hosts as the node's dockerd (and so its host-network containers) sees it."""
    pid = int(node.docker_pid.read_text())
    return Path(f"/proc/{pid}/root/etc/hosts").read_text()


def test_up_publishes_the_rootless_users_image_and_podmans_trust_of_the_registry() -> None:
    # What a user outside group docker pulls through Podman: gone from the registry and
    # the drop-in removed, `up` puts both back.
    name = "mpidock/openmpi"
    digest = manifest_digest(name)
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"http://{REGISTRY}/v2/{name}/manifests/{digest}")
    request.method = "DELETE"
    direct.open(request, timeout=10).close()
    assert registry.registry_config_digest(name) == ""
    registry.PODMAN_TRUST.unlink()
    done = run([*MPIDOCK, "testbed", "up", "-N", str(len(NODES))], timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"image {name}: in the registry {REGISTRY}" in done.stderr
    node_id = docker_on(NODES[0], "image", "inspect", "-f", "{{.Id}}", name)
    assert registry.registry_config_digest(name) == node_id
    assert "insecure = true" in registry.PODMAN_TRUST.read_text()


def manifest_digest(name: str) -> str:
    """The registry's digest of name:latest's manifest (what a delete names)."""
    request = urllib.request.Request(
        f"http://{REGISTRY}/v2/{name}/manifests/latest", headers={"Accept": registry.MANIFEST}
    )
    request.method = "HEAD"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with direct.open(request, timeout=10) as reply:
        return str(reply.headers["Docker-Content-Digest"])
