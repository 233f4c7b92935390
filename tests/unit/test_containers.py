"""ContainerSpec to docker-py arguments, checked against docker-py's own translation."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
from docker.models.containers import _create_container_args

from launcher.containers import docker_kwargs
from launcher.plan import ContainerSpec

SPEC = ContainerSpec(
    name="mpidock-42-worker-sim2",
    image="mpidock-personal:0123456789ab-b4ea52f8ce52",
    command=("/usr/sbin/sshd", "-D", "-e", "-f", "/home/alice/.mpidock/jobs/42/sshd_config"),
    user="1000:1000",
    group_add=(998, 2000),
    labels=(("org.mpidock.job", "42"), ("org.mpidock.role", "worker")),
    mounts=(("/home/alice", "/home/alice"), ("/data", "/mnt/data")),
    readonly=("/mnt/data",),
    working_dir="/home/alice/case",
    environment=(("HOME", "/home/alice"), ("USER", "alice")),
    shm_size="2g",
)
# docker-py's create() arguments that are not ContainerSpec fields.
FIXED = {"detach": True, "stdin_open": False, "tty": False}


def test_every_field_of_the_spec_is_passed() -> None:
    kwargs = docker_kwargs(SPEC)
    # readonly is carried by the mounts themselves.
    assert set(kwargs) == {f.name for f in fields(ContainerSpec)} - {"readonly"} | set(FIXED)
    assert {k: kwargs[k] for k in FIXED} == FIXED


def test_values() -> None:
    kwargs = docker_kwargs(SPEC)
    assert kwargs["command"] == list(SPEC.command)
    assert kwargs["group_add"] == ["998", "2000"]
    assert kwargs["labels"] == {"org.mpidock.job": "42", "org.mpidock.role": "worker"}
    assert kwargs["environment"] == {"HOME": "/home/alice", "USER": "alice"}
    assert kwargs["cap_drop"] == ["ALL"]
    assert kwargs["security_opt"] == ["no-new-privileges"]
    assert (kwargs["network_mode"], kwargs["init"], kwargs["shm_size"]) == ("host", True, "2g")


@pytest.fixture
def created() -> dict[str, Any]:
    """What docker-py would send to the engine for SPEC (it raises on unknown arguments)."""
    return dict(_create_container_args({**docker_kwargs(SPEC), "version": "1.44"}))


def test_docker_py_accepts_the_arguments(created: dict[str, Any]) -> None:
    assert created["image"] == SPEC.image
    assert created["command"] == list(SPEC.command)
    assert created["name"] == SPEC.name
    assert created["user"] == "1000:1000"
    assert created["working_dir"] == "/home/alice/case"
    assert created["labels"] == dict(SPEC.labels)


def test_host_config_locks_the_container_down(created: dict[str, Any]) -> None:
    host = created["host_config"]
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["NetworkMode"] == "host"
    assert host["Init"] is True
    assert host["GroupAdd"] == ["998", "2000"]
    assert host["ShmSize"] == 2 * 1024**3
    assert not host.get("Privileged")


def test_mounts_are_binds_at_the_given_targets(created: dict[str, Any]) -> None:
    mounts = [
        (m["Source"], m["Target"], m["Type"], m["ReadOnly"])
        for m in created["host_config"]["Mounts"]
    ]
    assert mounts == [
        ("/home/alice", "/home/alice", "bind", False),
        ("/data", "/mnt/data", "bind", True),
    ]
