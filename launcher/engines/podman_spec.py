"""A container spec as rootless Podman can start it (pure, but for the step's own limits).

What changes, and why:
- Groups: the user's identity comes from keep-id; host groups cannot be added inside the
  user namespace. crun keeps the user's supplementary groups (keep-groups, set for the
  service); runc keeps none, so a device file readable only by its group is not readable.
- Cgroups: rootless Podman makes none on cgroup v1; Slurm's is the caller's own already.
  Where the runtime applies no limits rootless (runc on cgroup v1), none are asked for.
- NVIDIA GPUs: Podman 4's Docker-compatible API takes no device request, and no CDI
  name among the devices either (measured on Podman 4.3: a CDI device request is
  silently dropped, a CDI name fails "stat nvidia.com/gpu=0: no such file or directory").
  The GPUs go as their device files, and NVIDIA_VISIBLE_DEVICES names them for the NVIDIA
  OCI hook, which mounts the driver's libraries where a site installed it for Podman.
- Resource limits: an unprivileged process cannot raise a hard limit, so a limit above the
  step's own (memlock for InfiniBand) is lowered to it.
"""

from __future__ import annotations

import dataclasses
import resource
from collections.abc import Callable

from launcher.plan import ContainerSpec

HardLimit = Callable[[str], int]  # a limit's name to this process's hard limit, -1 unlimited


def step_hard_limit(name: str) -> int:
    """This process's hard limit `name` (memlock, nofile, stack...); -1 for unlimited."""
    hard = resource.getrlimit(getattr(resource, f"RLIMIT_{name.upper()}"))[1]
    return -1 if hard == resource.RLIM_INFINITY else hard


def fit_spec(
    spec: ContainerSpec,
    *,
    keeps_groups: bool,
    limits: bool,
    hard_limit: HardLimit = step_hard_limit,
) -> tuple[ContainerSpec, tuple[str, ...]]:
    """The spec for rootless Podman and one note for people on each change that matters."""
    notes: list[str] = []
    fitted = dataclasses.replace(spec, group_add=(), cgroup_parent="")
    if spec.group_add and not keeps_groups:
        gids = ",".join(map(str, spec.group_add))
        notes.append(
            f"groups {gids} of the device files not kept (runc keeps no supplementary "
            "groups rootless): a device readable by its group only is not readable"
        )
    if not limits:
        fitted = dataclasses.replace(
            fitted, cpuset_cpus="", mem_limit=0, memswap_limit=0, pids_limit=0
        )
        if (spec.cpuset_cpus, spec.mem_limit, spec.pids_limit) != ("", 0, 0):
            notes.append(
                "no CPU, memory or process limits of its own: runc applies none rootless "
                "on a cgroup v1 host (Slurm's cgroup of the step still holds its processes)"
            )
    if spec.gpu_ids:
        fitted, note = _gpus_as_files(fitted)
        notes.append(note)
    if spec.ulimits:
        fitted, lowered = _within_hard_limits(fitted, hard_limit)
        notes.extend(lowered)
    return fitted, tuple(notes)


def _gpus_as_files(spec: ContainerSpec) -> tuple[ContainerSpec, str]:
    visible = ",".join(spec.gpu_ids)
    fitted = dataclasses.replace(
        spec,
        gpu_ids=(),
        gpu_files=(),
        devices=(*spec.devices, *spec.gpu_files),
        environment=(*spec.environment, ("NVIDIA_VISIBLE_DEVICES", visible)),
    )
    if not spec.gpu_files:
        return fitted, (
            f"NVIDIA GPUs {visible}: no device files to pass (a GPU named by UUID); only "
            "NVIDIA_VISIBLE_DEVICES, for the NVIDIA OCI hook"
        )
    files = ", ".join(f.split(":", 1)[0] for f in spec.gpu_files)
    return fitted, (
        f"NVIDIA GPUs {visible} as device files ({files}) and NVIDIA_VISIBLE_DEVICES for "
        "the NVIDIA OCI hook: Podman's Docker API takes no device request"
    )


def _within_hard_limits(
    spec: ContainerSpec, hard_limit: HardLimit
) -> tuple[ContainerSpec, list[str]]:
    kept, notes = [], []
    for name, soft, hard in spec.ulimits:
        ours = hard_limit(name)
        if ours != -1 and (hard == -1 or hard > ours):
            kept.append((name, min(soft, ours) if soft != -1 else ours, ours))
            notes.append(
                f"{name} limited to {ours} (the step's hard limit: rootless cannot raise it)"
            )
        else:
            kept.append((name, soft, hard))
    return dataclasses.replace(spec, ulimits=tuple(kept)), notes
