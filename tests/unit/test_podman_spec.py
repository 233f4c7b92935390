"""A container spec as rootless Podman starts it: groups, limits, GPUs as device files,
resource limits within the step's; and what --dry-run says of it."""

from __future__ import annotations

import dataclasses

from launcher import engines
from launcher.devices import DeviceFile, NodeDevices, plan_devices
from launcher.engines.podman_spec import fit_spec, step_hard_limit
from launcher.plan import ContainerSpec

NODE = NodeDevices(
    nvidia=(
        DeviceFile("/dev/nvidia0", 0),
        DeviceFile("/dev/nvidia1", 0),
        DeviceFile("/dev/nvidia-uvm", 0),
        DeviceFile("/dev/nvidiactl", 0),
    ),
    infiniband=(DeviceFile("/dev/infiniband/uverbs0", 150),),
)
BASE = ContainerSpec(
    name="c", image="i", command=("x",), user="1500:1500", group_add=(), labels=(),
    mounts=(), working_dir="/",
)  # fmt: skip


def _spec(env: dict[str, str]) -> ContainerSpec:
    plan = plan_devices(NODE, env, groups=(1500, 150))
    return dataclasses.replace(
        BASE,
        devices=plan.devices,
        gpu_ids=plan.gpu_ids,
        gpu_files=plan.gpu_files,
        group_add=plan.group_add,
        cap_add=(*BASE.cap_add, *plan.cap_add),
        ulimits=plan.ulimits,
        environment=plan.environment,
    )


def test_the_steps_gpus_are_also_known_as_their_device_files() -> None:
    plan = plan_devices(NODE, {"SLURM_STEP_GPUS": "1"}, groups=())
    assert plan.gpu_ids == ("1",)
    assert plan.gpu_files == (
        "/dev/nvidia1:/dev/nvidia1:rwm",
        "/dev/nvidia-uvm:/dev/nvidia-uvm:rwm",
        "/dev/nvidiactl:/dev/nvidiactl:rwm",
    )
    # A GPU without its file, or named by UUID, has no file to tell.
    assert plan_devices(NODE, {"SLURM_STEP_GPUS": "1,2"}, groups=()).gpu_files == ()
    assert plan_devices(NODE, {"CUDA_VISIBLE_DEVICES": "GPU-8f2e"}, groups=()).gpu_files == ()


def test_under_podman_gpus_go_as_device_files_and_named_for_the_nvidia_hook() -> None:
    spec = _spec({"SLURM_STEP_GPUS": "1"})
    fitted, notes = fit_spec(spec, keeps_groups=False, limits=False, hard_limit=lambda _: -1)
    assert fitted.gpu_ids == ()
    assert "/dev/nvidia1:/dev/nvidia1:rwm" in fitted.devices
    assert "/dev/infiniband/uverbs0:/dev/infiniband/uverbs0:rwm" in fitted.devices
    assert dict(fitted.environment)["NVIDIA_VISIBLE_DEVICES"] == "1"
    assert dict(fitted.environment)["CUDA_VISIBLE_DEVICES"] == "0"
    assert any("NVIDIA GPUs 1 as device files (/dev/nvidia1, " in n for n in notes)
    uuid = _spec({"CUDA_VISIBLE_DEVICES": "GPU-8f2e"})
    fitted, notes = fit_spec(uuid, keeps_groups=False, limits=False, hard_limit=lambda _: -1)
    assert dict(fitted.environment)["NVIDIA_VISIBLE_DEVICES"] == "GPU-8f2e"
    assert any("no device files to pass" in n for n in notes)


def test_under_podman_runc_loses_the_device_groups_and_says_so() -> None:
    spec = _spec({})
    assert spec.group_add == (150,)
    fitted, notes = fit_spec(spec, keeps_groups=False, limits=False, hard_limit=lambda _: -1)
    assert fitted.group_add == ()
    assert any(n.startswith("groups 150 of the device files not kept") for n in notes)
    _, notes = fit_spec(spec, keeps_groups=True, limits=True, hard_limit=lambda _: -1)
    assert not any("groups" in n for n in notes)


def test_under_podman_a_limit_above_the_steps_hard_limit_is_lowered() -> None:
    spec = _spec({})
    assert spec.ulimits == (("memlock", -1, -1),)
    fitted, notes = fit_spec(spec, keeps_groups=True, limits=True, hard_limit=lambda _: 65536)
    assert fitted.ulimits == (("memlock", 65536, 65536),)
    assert any("memlock limited to 65536" in n for n in notes)
    fitted, notes = fit_spec(spec, keeps_groups=True, limits=True, hard_limit=lambda _: -1)
    assert fitted.ulimits == spec.ulimits
    assert notes == ()
    assert isinstance(step_hard_limit("memlock"), int)


def test_without_rootless_limits_no_limit_is_asked_for() -> None:
    spec = dataclasses.replace(BASE, cpuset_cpus="0-1", mem_limit=1 << 30, pids_limit=100)
    fitted, notes = fit_spec(spec, keeps_groups=False, limits=False)
    assert (fitted.cpuset_cpus, fitted.mem_limit, fitted.pids_limit) == ("", 0, 0)
    assert any(n.startswith("no CPU, memory or process limits") for n in notes)
    kept, notes = fit_spec(spec, keeps_groups=True, limits=True)
    assert (kept.cpuset_cpus, kept.mem_limit, kept.pids_limit) == ("0-1", 1 << 30, 100)
    assert notes == ()


def test_docker_starts_the_spec_as_planned() -> None:
    spec = _spec({"SLURM_STEP_GPUS": "1"})
    assert engines.select("docker", "sim1").planned(spec) == (spec, ())
