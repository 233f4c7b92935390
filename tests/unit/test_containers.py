"""ContainerSpec to docker-py arguments, checked against docker-py's own translation."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, cast

import pytest
from docker.errors import NotFound
from docker.models.containers import _create_container_args
from docker.types import DeviceRequest, Ulimit
from requests.exceptions import ReadTimeout

from launcher.containers import docker_kwargs, exit_info, fit_engine, start
from launcher.errors import NodeFailed
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
# A node with two NVIDIA GPUs and InfiniBand, as launcher.devices plans it.
DEVICES = replace(
    SPEC,
    devices=("/dev/infiniband/uverbs0:/dev/infiniband/uverbs0:rwm",),
    gpu_ids=("2", "3"),
    ulimits=(("memlock", -1, -1),),
    cap_add=("SYS_PTRACE", "IPC_LOCK"),
    cpuset_cpus="2-3",
    mem_limit=300 * 1024**2,
    memswap_limit=300 * 1024**2,
    pids_limit=4096,
    cgroup_parent="/slurm/uid_1000/job_42",
)
# docker-py's create() arguments that are not ContainerSpec fields.
FIXED = {"detach": True, "stdin_open": False, "tty": False}
# Fields docker-py knows by another name; readonly is carried by the mounts themselves.
# gpu_files: the GPUs again as device files, for an engine without device requests (Podman).
RENAMED = {"gpu_ids": "device_requests", "gpu_files": None, "readonly": None}
DEVICE_KWARGS = {"devices", "device_requests", "ulimits"}
LIMIT_KWARGS = {"cpuset_cpus", "mem_limit", "memswap_limit", "pids_limit", "cgroup_parent"}


def test_every_field_of_the_spec_is_passed() -> None:
    kwargs = docker_kwargs(DEVICES)
    names = {RENAMED.get(f.name, f.name) for f in fields(ContainerSpec)} - {None}
    assert set(kwargs) == names | set(FIXED)
    assert {k: kwargs[k] for k in FIXED} == FIXED


def test_devices_only_when_planned() -> None:
    assert not DEVICE_KWARGS & set(docker_kwargs(SPEC))
    only_ib = replace(DEVICES, gpu_ids=())
    assert set(docker_kwargs(only_ib)) & DEVICE_KWARGS == {"devices", "ulimits"}
    only_gpus = replace(SPEC, gpu_ids=("0",))
    assert set(docker_kwargs(only_gpus)) & DEVICE_KWARGS == {"device_requests"}


def test_device_values() -> None:
    kwargs = docker_kwargs(DEVICES)
    assert kwargs["devices"] == ["/dev/infiniband/uverbs0:/dev/infiniband/uverbs0:rwm"]
    assert kwargs["device_requests"] == [
        DeviceRequest(driver="nvidia", device_ids=["2", "3"], capabilities=[["gpu"]])
    ]
    assert kwargs["ulimits"] == [Ulimit(name="memlock", soft=-1, hard=-1)]
    assert kwargs["cap_add"] == ["SYS_PTRACE", "IPC_LOCK"]


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


def test_docker_py_accepts_the_devices() -> None:
    host = _create_container_args({**docker_kwargs(DEVICES), "version": "1.44"})["host_config"]
    assert host["Devices"] == [
        {
            "PathOnHost": "/dev/infiniband/uverbs0",
            "PathInContainer": "/dev/infiniband/uverbs0",
            "CgroupPermissions": "rwm",
        }
    ]
    assert host["DeviceRequests"] == [
        {
            "Driver": "nvidia",
            "Count": 0,
            "DeviceIDs": ["2", "3"],
            "Capabilities": [["gpu"]],
            "Options": {},
        }
    ]
    assert host["Ulimits"] == [{"Name": "memlock", "Soft": -1, "Hard": -1}]
    assert host["CapAdd"] == ["SYS_PTRACE", "IPC_LOCK"]
    assert not host.get("Privileged")


def test_no_device_settings_reach_the_engine_unplanned(created: dict[str, Any]) -> None:
    host = created["host_config"]
    assert not {"Devices", "DeviceRequests", "Ulimits"} & set(host)
    assert host["CapAdd"] == ["SYS_PTRACE"]


# --- the step's share of the node ---------------------------------------------------------------


def test_limits_only_when_planned() -> None:
    assert not LIMIT_KWARGS & set(docker_kwargs(SPEC))
    cpus_only = replace(SPEC, cpuset_cpus="0")
    assert set(docker_kwargs(cpus_only)) & LIMIT_KWARGS == {"cpuset_cpus"}


def test_docker_py_accepts_the_limits() -> None:
    host = _create_container_args({**docker_kwargs(DEVICES), "version": "1.44"})["host_config"]
    assert host["CpusetCpus"] == "2-3"
    assert host["Memory"] == host["MemorySwap"] == 300 * 1024**2
    assert host["PidsLimit"] == 4096
    assert host["CgroupParent"] == "/slurm/uid_1000/job_42"


@pytest.mark.parametrize(
    ("driver", "parent"),
    [("cgroupfs", "/slurm/uid_1000/job_42"), ("systemd", ""), ("", "")],
)
def test_a_cgroup_parent_only_on_an_engine_that_takes_a_path(driver: str, parent: str) -> None:
    fitted = fit_engine(DEVICES, driver)
    assert fitted.cgroup_parent == parent
    assert replace(fitted, cgroup_parent=DEVICES.cgroup_parent) == DEVICES


class _Stuck:
    """A container whose engine never answers its start (a runtime stuck in its init)."""

    def start(self) -> None:
        raise ReadTimeout("Read timed out. (read timeout=60)")

    def remove(self, force: bool = False) -> None:
        raise ReadTimeout("Read timed out. (read timeout=60)")


class _Client:
    """Only what containers.start calls, for the stuck case (no engine hangs on demand)."""

    def __init__(self) -> None:
        self.containers = self
        self.made = _Stuck()

    def get(self, name: str) -> None:
        raise NotFound(name)

    def create(self, **_: Any) -> _Stuck:
        return self.made


def test_an_engine_that_does_not_answer_a_start_is_one_line_naming_the_node() -> None:
    with pytest.raises(NodeFailed) as info:
        start(_Client(), SPEC, "sim1")  # type: ignore[arg-type]
    assert info.value.node == "sim1"
    assert "cannot start container mpidock-42-worker-sim2: Read timed out" in info.value.message
    assert "did not answer" in info.value.hint


class _Reported:
    """A container whose engine reports this state at each reload."""

    def __init__(self, state: dict[str, Any] | None) -> None:
        self.state = state
        self.attrs: dict[str, Any] = {}

    def reload(self) -> None:
        if self.state is None:
            raise NotFound("gone")
        self.attrs = {"State": self.state}


@pytest.mark.parametrize(
    ("state", "seen"),
    [
        ({"Status": "running", "ExitCode": 0}, ("running", 0)),
        ({"Status": "exited", "ExitCode": 137}, ("exited", 137)),
        ({"Status": "stopped", "ExitCode": 137}, ("exited", 137)),  # Podman before cleanup
        (None, ("gone", -1)),
    ],
)
def test_an_ended_container_is_exited_whatever_the_engine(
    state: dict[str, Any] | None, seen: tuple[str, int]
) -> None:
    assert exit_info(cast(Any, _Reported(state))) == seen
