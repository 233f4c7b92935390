"""Device files and the step's environment to what the containers of a node get."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from launcher.devices import (
    SHARED_MEMORY,
    DeviceFile,
    DevicePlan,
    NodeDevices,
    plan_devices,
    probe,
)
from launcher.errors import UsageError

NVIDIA = NodeDevices(nvidia=(DeviceFile("/dev/nvidia0", 0), DeviceFile("/dev/nvidiactl", 0)))
AMD = NodeDevices(
    kfd=DeviceFile("/dev/kfd", 109),
    render=tuple(DeviceFile(f"/dev/dri/renderD{minor}", 109) for minor in (128, 129, 130, 131)),
)
# The video group owns kfd on some distributions, render on others.
AMD_VIDEO_KFD = NodeDevices(kfd=DeviceFile("/dev/kfd", 44), render=AMD.render)
INFINIBAND = NodeDevices(
    infiniband=(
        DeviceFile("/dev/infiniband/rdma_cm", 0),
        DeviceFile("/dev/infiniband/uverbs0", 150),
    )
)
IB_DEVICES = (
    "/dev/infiniband/rdma_cm:/dev/infiniband/rdma_cm:rwm",
    "/dev/infiniband/uverbs0:/dev/infiniband/uverbs0:rwm",
)
# The user's groups on the host: the device groups above (video 44, render 109, rdma 150).
HELD = (1000, 44, 109, 150)


def passed(plan: DevicePlan) -> DevicePlan:
    """The plan without its summary: what reaches Docker."""
    return replace(plan, summary="")


# --- probe: the only I/O ----------------------------------------------------------------------


def make(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def test_probe_lists_device_files_at_their_host_paths(tmp_path: Path) -> None:
    make(
        tmp_path,
        *(f"dev/infiniband/{n}" for n in ("uverbs10", "uverbs2", "rdma_cm", "umad0", "issm0")),
        "dev/kfd",
        "dev/dri/card0",
        "dev/dri/renderD129",
        "dev/dri/renderD128",
        "dev/nvidia1",
        "dev/nvidiactl",
        "dev/nvidia-caps/nvidia-cap1",
        "dev/null",
    )
    gid = os.getgid()
    assert probe(tmp_path) == NodeDevices(
        # umad and issm (management datagrams, subnet manager) are never passed.
        infiniband=tuple(
            DeviceFile(f"/dev/infiniband/{name}", gid)
            for name in ("rdma_cm", "uverbs2", "uverbs10")
        ),
        kfd=DeviceFile("/dev/kfd", gid),
        render=(DeviceFile("/dev/dri/renderD128", gid), DeviceFile("/dev/dri/renderD129", gid)),
        # nvidia-caps is a directory: not a device to pass.
        nvidia=(DeviceFile("/dev/nvidia1", gid), DeviceFile("/dev/nvidiactl", gid)),
    )


@pytest.mark.parametrize("tree", [(), ("dev/null", "dev/dri/card0"), ("dev/infiniband/",)])
def test_probe_of_a_node_without_devices(tmp_path: Path, tree: tuple[str, ...]) -> None:
    for name in tree:
        if name.endswith("/"):
            (tmp_path / name).mkdir(parents=True)
        else:
            make(tmp_path, name)
    assert probe(tmp_path) == NodeDevices()


# --- nothing to pass ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [{}, {"SLURM_JOB_GPUS": "0,1"}, {"UCX_TLS": "rc", "NCCL_DEBUG": "INFO", "FI_PROVIDER": "x"}],
)
def test_a_node_without_devices_gets_nothing(env: dict[str, str]) -> None:
    plan = plan_devices(NodeDevices(), env, groups=HELD)
    assert passed(plan) == DevicePlan()
    assert plan.summary.endswith(SHARED_MEMORY)


def test_gpus_allocated_where_no_gpu_device_exists_are_named_not_passed() -> None:
    plan = plan_devices(NodeDevices(), {"SLURM_JOB_GPUS": "0,1"}, groups=HELD)
    assert "GPUs 0,1 allocated (SLURM_JOB_GPUS)" in plan.summary
    assert "none passed" in plan.summary


def test_the_summary_of_nothing() -> None:
    assert (
        plan_devices(NodeDevices(), {}, groups=HELD).summary
        == f"no GPUs, no InfiniBand; {SHARED_MEMORY}"
    )


# --- NVIDIA ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "gpu_ids"),
    [
        # The step's GPUs, not the job's, nor the renumbered runtime view.
        (
            {"SLURM_STEP_GPUS": "2,3", "SLURM_JOB_GPUS": "0,1,2,3", "CUDA_VISIBLE_DEVICES": "0,1"},
            ("2", "3"),
        ),
        ({"SLURM_JOB_GPUS": "1", "CUDA_VISIBLE_DEVICES": "0"}, ("1",)),
        ({"CUDA_VISIBLE_DEVICES": "GPU-8f2e,GPU-11ab"}, ("GPU-8f2e", "GPU-11ab")),
        ({"CUDA_VISIBLE_DEVICES": "MIG-4d1c"}, ("MIG-4d1c",)),
        ({"GPU_DEVICE_ORDINAL": "0,1,2"}, ("0", "1", "2")),
        ({"SLURM_JOB_GPUS": " 4 , 5 ,"}, ("4", "5")),
    ],
)
def test_nvidia_gpus_of_the_step(env: dict[str, str], gpu_ids: tuple[str, ...]) -> None:
    plan = plan_devices(NVIDIA, env, groups=HELD)
    renumbered = ",".join(str(i) for i in range(len(gpu_ids)))
    assert passed(plan) == DevicePlan(
        gpu_ids=gpu_ids, environment=(("CUDA_VISIBLE_DEVICES", renumbered),)
    )
    assert plan.summary.startswith(f"NVIDIA GPUs {','.join(gpu_ids)} (")


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"SLURM_JOB_GPUS": "NoDevFiles", "CUDA_VISIBLE_DEVICES": "0"},
        {"SLURM_STEP_GPUS": "NoDevFiles"},
        {"CUDA_VISIBLE_DEVICES": ""},
        # A step without GPUs in a job with them does not get the job's.
        {"SLURM_STEP_GPUS": "", "SLURM_JOB_GPUS": "0,1"},
    ],
)
def test_no_nvidia_gpus_allocated(env: dict[str, str]) -> None:
    plan = plan_devices(NVIDIA, env, groups=HELD)
    assert passed(plan) == DevicePlan()
    assert "CUDA_VISIBLE_DEVICES" not in dict(plan.environment)


def test_nvidia_node_is_not_given_amd_devices() -> None:
    both = NodeDevices(nvidia=NVIDIA.nvidia, kfd=AMD.kfd, render=AMD.render)
    plan = plan_devices(both, {"SLURM_JOB_GPUS": "0"}, groups=HELD)
    assert (plan.gpu_ids, plan.devices) == (("0",), ())


# --- AMD ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "minors"),
    [
        ({"SLURM_JOB_GPUS": "1,2"}, (129, 130)),
        ({"SLURM_STEP_GPUS": "3", "SLURM_JOB_GPUS": "2,3", "ROCR_VISIBLE_DEVICES": "0"}, (131,)),
        ({"ROCR_VISIBLE_DEVICES": "0,2"}, (128, 130)),
        ({"GPU_DEVICE_ORDINAL": "0"}, (128,)),
    ],
)
def test_amd_gpus_are_kfd_and_their_render_nodes(
    env: dict[str, str], minors: tuple[int, ...]
) -> None:
    plan = plan_devices(AMD_VIDEO_KFD, env, groups=HELD)
    renders = tuple(f"/dev/dri/renderD{m}:/dev/dri/renderD{m}:rwm" for m in minors)
    renumbered = ",".join(str(i) for i in range(len(minors)))
    assert passed(plan) == DevicePlan(
        devices=("/dev/kfd:/dev/kfd:rwm", *renders),
        group_add=(44, 109),
        environment=(("ROCR_VISIBLE_DEVICES", renumbered),),
    )
    assert plan.summary.startswith("AMD GPUs ")


@pytest.mark.parametrize(
    "env", [{}, {"SLURM_JOB_GPUS": "NoDevFiles"}, {"ROCR_VISIBLE_DEVICES": ""}]
)
def test_amd_node_without_gpus_allocated_gets_no_render_node(env: dict[str, str]) -> None:
    assert passed(plan_devices(AMD, env, groups=HELD)) == DevicePlan()


def test_amd_gpu_without_its_render_node_is_named() -> None:
    plan = plan_devices(AMD, {"SLURM_JOB_GPUS": "1,5"}, groups=HELD)
    assert plan.devices == ("/dev/kfd:/dev/kfd:rwm", "/dev/dri/renderD129:/dev/dri/renderD129:rwm")
    assert dict(plan.environment) == {"ROCR_VISIBLE_DEVICES": "0"}
    assert "no render node for GPU 5" in plan.summary


def test_amd_gpus_none_of_which_has_a_render_node_pass_nothing() -> None:
    plan = plan_devices(AMD, {"SLURM_JOB_GPUS": "7"}, groups=HELD)
    assert passed(plan) == DevicePlan()
    assert "none passed" in plan.summary


@pytest.mark.parametrize("gpu", ["GPU-4f2a", "\u00b2"])
def test_amd_gpu_not_named_by_index_is_an_error(gpu: str) -> None:
    with pytest.raises(UsageError, match=f"AMD GPU '{gpu}'") as info:
        plan_devices(AMD, {"ROCR_VISIBLE_DEVICES": gpu}, groups=HELD)
    assert "SLURM_JOB_GPUS" in info.value.hint


# --- InfiniBand -----------------------------------------------------------------------------


FABRIC_ENV = {
    "UCX_TLS": "rc,sm,self",
    "UCX_NET_DEVICES": "mlx5_0:1",
    "FI_PROVIDER": "verbs",
    "NCCL_IB_HCA": "mlx5_0",
    "OMPI_MCA_btl_openib_allow_ib": "1",
    "OMPI_MCA_pml": "ucx",
    "OMPI_MCA_osc": "ucx",
}
NOT_FABRIC = {
    "PATH": "/usr/bin",
    "OMPI_MCA_btl": "^openib",
    "OMPI_MCA_pml_ucx_verbose": "1",
    "UCXX": "1",
    "MY_UCX_TLS": "tcp",
    "SLURM_JOB_ID": "42",
}


def test_infiniband_devices_memlock_and_ipc_lock() -> None:
    plan = plan_devices(INFINIBAND, {}, groups=HELD)
    assert passed(plan) == DevicePlan(
        devices=IB_DEVICES,
        # Root's group (of rdma_cm) is never added.
        group_add=(150,),
        cap_add=("IPC_LOCK",),
        ulimits=(("memlock", -1, -1),),
    )
    assert plan.summary.startswith("InfiniBand: 2 devices, memlock unlimited;")


def test_infiniband_node_forwards_the_fabric_settings() -> None:
    plan = plan_devices(INFINIBAND, {**FABRIC_ENV, **NOT_FABRIC}, groups=HELD)
    names = tuple(sorted(FABRIC_ENV))
    assert plan.forward == names
    assert plan.environment == tuple((name, FABRIC_ENV[name]) for name in names)
    assert f"forwarding {', '.join(names)}" in plan.summary


def test_gpus_and_infiniband_together() -> None:
    node = NodeDevices(nvidia=NVIDIA.nvidia, infiniband=INFINIBAND.infiniband)
    plan = plan_devices(node, {"SLURM_STEP_GPUS": "0,1", "NCCL_IB_HCA": "mlx5_0"}, groups=HELD)
    assert passed(plan) == DevicePlan(
        devices=IB_DEVICES,
        gpu_ids=("0", "1"),
        group_add=(150,),
        cap_add=("IPC_LOCK",),
        ulimits=(("memlock", -1, -1),),
        environment=(("CUDA_VISIBLE_DEVICES", "0,1"), ("NCCL_IB_HCA", "mlx5_0")),
        forward=("NCCL_IB_HCA",),
    )
    assert plan.summary.split("; ")[0] == "NVIDIA GPUs 0,1 (SLURM_STEP_GPUS) as 0,1"
    assert plan.summary.endswith(SHARED_MEMORY)


# --- groups: only those the user holds on the host ---------------------------------------------


def test_a_device_group_the_user_lacks_is_not_added() -> None:
    # rdma (150) owns uverbs0, but this user is not in it on the host.
    plan = plan_devices(INFINIBAND, {}, groups=(1000, 44))
    assert plan.group_add == ()
    assert plan.devices == IB_DEVICES


def test_only_the_held_groups_of_several_devices_are_added() -> None:
    # kfd belongs to video (44), the render nodes to render (109); the user holds render only.
    plan = plan_devices(AMD_VIDEO_KFD, {"SLURM_JOB_GPUS": "0"}, groups=(1000, 109))
    assert plan.group_add == (109,)
    assert plan.devices == (
        "/dev/kfd:/dev/kfd:rwm",
        "/dev/dri/renderD128:/dev/dri/renderD128:rwm",
    )


def test_probe_skips_management_datagram_files_of_any_number(tmp_path: Path) -> None:
    make(tmp_path, *(f"dev/infiniband/{n}" for n in ("umad0", "umad12", "issm0", "issm3")))
    assert probe(tmp_path) == NodeDevices()
