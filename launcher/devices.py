"""GPUs, fast fabrics and shared memory inside containers.

Facts first: `probe` lists this node's device files, the only I/O here. Then the pure
`plan_devices` decides, from those files and the step's environment, what every container
on this node gets. launcher.plan copies the result into each ContainerSpec and
launcher.containers turns it into docker-py arguments. Nothing here is privileged: devices
are passed one by one, only those the libraries need, the only capability added is IPC_LOCK,
for InfiniBand, and a device's group is added only for a user who holds it on the host.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from launcher.errors import UsageError

# Where Slurm (and the GPU runtimes before it) say which GPUs are this step's, most
# trusted first. SLURM_STEP_GPUS and SLURM_JOB_GPUS hold the host's indices; the runtime
# variables may already be renumbered when Slurm confines the step's devices, so they
# are only read when neither Slurm variable is set.
NVIDIA_SOURCES = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL")
AMD_SOURCES = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "ROCR_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL")
# Slurm's value for a GPU GRES without device files: nothing to pass.
NO_DEV_FILES = "NoDevFiles"
# The first render node; the kernel numbers DRM render minors from here.
RENDER_MINOR_BASE = 128
# What verbs needs of /dev/infiniband: the verbs devices and the connection manager. The
# MAD devices (umad*, issm*) send management datagrams to the fabric (issm can make the
# port a subnet manager): nothing an MPI rank needs, so never passed.
VERBS_FILES = ("infiniband/uverbs*", "infiniband/rdma_cm")

# The host's fabric tuning that containers on an InfiniBand node receive.
FABRIC_PREFIXES = ("UCX_", "FI_", "NCCL_", "OMPI_MCA_btl_openib_")
FABRIC_NAMES = ("OMPI_MCA_pml", "OMPI_MCA_osc")

# What ContainerSpec always has (its cap_add holds SYS_PTRACE), stated in every summary.
SHARED_MEMORY = "shared memory: single-copy (CMA) through SYS_PTRACE"

_T = TypeVar("_T")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"(\d+)")


@dataclass(frozen=True)
class DeviceFile:
    """A device node of the host, by its host path, and the group owning it."""

    path: str
    gid: int


@dataclass(frozen=True)
class NodeDevices:
    """The device files of this node that MPI, GPU and fabric libraries open.

    Attributes:
        infiniband: the verbs files of /dev/infiniband (uverbs*, rdma_cm), no MAD files.
        kfd: /dev/kfd, the ROCm compute interface; None on nodes without AMD GPUs.
        render: the DRM render nodes /dev/dri/renderD*.
        nvidia: the /dev/nvidia* files; any of them marks an NVIDIA node.
    """

    infiniband: tuple[DeviceFile, ...] = ()
    kfd: DeviceFile | None = None
    render: tuple[DeviceFile, ...] = ()
    nvidia: tuple[DeviceFile, ...] = ()


@dataclass(frozen=True)
class DevicePlan:
    """What every container on this node gets; the empty plan passes nothing.

    Attributes:
        devices: device files as docker's "HOST:CONTAINER:rwm", each at its host path.
        gpu_ids: NVIDIA GPUs for one Docker device request (driver "nvidia"); the host's
            indices or UUIDs. Docker itself sets NVIDIA_VISIBLE_DEVICES from them for the
            NVIDIA runtime, so the plan does not.
        gpu_files: the same GPUs as device files (their /dev/nvidiaN and the driver's
            control files), for an engine that takes no device request (launcher.engines).
        group_add: the groups owning the passed device files (video, render, rdma...)
            that the user holds on the host; never root's.
        cap_add: capabilities added to ContainerSpec's own (SYS_PTRACE).
        ulimits: (name, soft, hard), -1 meaning unlimited.
        environment: variables set in the containers.
        forward: names mpirun passes from the leader's container to every rank.
        summary: one line for people: what was passed and why.
    """

    devices: tuple[str, ...] = ()
    gpu_ids: tuple[str, ...] = ()
    gpu_files: tuple[str, ...] = ()
    group_add: tuple[int, ...] = ()
    cap_add: tuple[str, ...] = ()
    ulimits: tuple[tuple[str, int, int], ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    forward: tuple[str, ...] = ()
    summary: str = ""


def probe(root: Path = Path("/")) -> NodeDevices:
    """Lists the device files under root/dev, reported by their paths on the host.

    Args:
        root: the file system root; tests pass a tree of plain files.
    """
    dev = root / "dev"
    kfd = _files(dev, "kfd")
    return NodeDevices(
        infiniband=tuple(sorted((f for p in VERBS_FILES for f in _files(dev, p)), key=_by_path)),
        kfd=kfd[0] if kfd else None,
        render=_files(dev, "dri/renderD*"),
        nvidia=_files(dev, "nvidia*"),
    )


def plan_devices(
    devices: NodeDevices, env: Mapping[str, str], *, groups: Collection[int]
) -> DevicePlan:
    """Decides what the containers on this node get, from its device files and the step's
    environment (usually os.environ of slurm-entry on that node).

    Args:
        devices: this node's device files (from probe).
        env: the step's environment.
        groups: the job user's groups on the host (primary and supplementary). A device
            file's group is added to the containers only if it is one of them: a container
            must not give its user a group the host does not.

    Raises:
        UsageError: an allocated AMD GPU is named by something other than an index.
    """
    parts = [_gpus(devices, env), _infiniband(devices, env)]
    held = frozenset(groups)
    said = [part.summary for part in parts if part.summary] or ["no GPUs, no InfiniBand"]
    return DevicePlan(
        devices=tuple(d for part in parts for d in part.devices),
        gpu_ids=tuple(g for part in parts for g in part.gpu_ids),
        gpu_files=tuple(f for part in parts for f in part.gpu_files),
        group_add=_unique(g for part in parts for g in part.group_add if g in held),
        cap_add=_unique(c for part in parts for c in part.cap_add),
        ulimits=tuple(u for part in parts for u in part.ulimits),
        environment=tuple(e for part in parts for e in part.environment),
        forward=_unique(n for part in parts for n in part.forward),
        summary="; ".join([*said, SHARED_MEMORY]),
    )


def allocated_gpus(env: Mapping[str, str], sources: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """The GPUs of this step on this node, as (variable, ids) from the first variable set.

    A variable that is set decides even when empty: a step without GPUs in a job with
    them has SLURM_STEP_GPUS empty, and must not fall back to the job's. ("", ()) when
    none is set.
    """
    for name in sources:
        if name in env:
            value = env[name].strip()
            if value == NO_DEV_FILES:
                return name, ()
            return name, tuple(gpu.strip() for gpu in value.split(",") if gpu.strip())
    return "", ()


def _gpus(devices: NodeDevices, env: Mapping[str, str]) -> DevicePlan:
    # One GPU vendor per node: the Slurm variables do not say which vendor they count.
    if devices.nvidia:
        return _nvidia(devices.nvidia, env)
    if devices.kfd is not None:
        return _amd(devices.kfd, devices.render, env)
    source, ids = allocated_gpus(env, NVIDIA_SOURCES)
    if not ids:
        return DevicePlan()
    return DevicePlan(
        summary=f"GPUs {','.join(ids)} allocated ({source}) but this node has neither "
        "/dev/nvidia* nor /dev/kfd: none passed"
    )


def _nvidia(files: tuple[DeviceFile, ...], env: Mapping[str, str]) -> DevicePlan:
    """The allocated GPUs as one device request; the runtime shows them as 0..n-1.

    Indices are taken to name the same GPU for Slurm and for the NVIDIA runtime (NVML
    order), as they do when gres.conf is detected by NVML or lists the files in PCI order.
    CUDA_VISIBLE_DEVICES=0..n-1 is what CUDA would see anyway in a container holding only
    these GPUs; set, it also overrides any value a rank inherits. The same GPUs as files:
    /dev/nvidiaN of each index and every control file (nvidiactl, nvidia-uvm...); a GPU
    named by UUID has no file to tell, so then there are none.
    """
    source, ids = allocated_gpus(env, NVIDIA_SOURCES)
    if not ids:
        return DevicePlan()
    present = {f.path for f in files}
    numbered = [f"/dev/nvidia{gpu}" for gpu in ids]
    control = [f.path for f in files if not re.fullmatch(r"/dev/nvidia[0-9]+", f.path)]
    chosen = (*numbered, *control) if present.issuperset(numbered) else ()
    gpu_files = tuple(f"{path}:{path}:rwm" for path in chosen)
    return DevicePlan(
        gpu_ids=ids,
        gpu_files=gpu_files,
        environment=(("CUDA_VISIBLE_DEVICES", _renumbered(len(ids))),),
        summary=f"NVIDIA GPUs {','.join(ids)} ({source}) as {_renumbered(len(ids))}",
    )


def _amd(kfd: DeviceFile, render: tuple[DeviceFile, ...], env: Mapping[str, str]) -> DevicePlan:
    """/dev/kfd and the allocated GPUs' render nodes, at their host paths.

    GPU index i is taken to be /dev/dri/renderD{128+i}: true when every render node of
    the node is an allocatable AMD GPU (no integrated or other vendor's GPU before them).
    Render nodes keep their host names because ROCm matches them with the sysfs topology;
    it then numbers the GPUs it can open 0..n-1, hence ROCR_VISIBLE_DEVICES.
    """
    source, ids = allocated_gpus(env, AMD_SOURCES)
    if not ids:
        return DevicePlan()
    if bad := [gpu for gpu in ids if not re.fullmatch(r"[0-9]+", gpu)]:  # not "²": int() fails
        raise UsageError(
            f"cannot tell the render node of AMD GPU {bad[0]!r} ({source}={env[source]!r})",
            hint="ask Slurm for the GPUs (--gpus), which names them by index in SLURM_JOB_GPUS",
        )
    by_path = {f.path: f for f in render}
    present = [by_path.get(f"/dev/dri/renderD{RENDER_MINOR_BASE + int(gpu)}") for gpu in ids]
    chosen = [f for f in present if f is not None]
    missing = [gpu for gpu, f in zip(ids, present, strict=True) if f is None]
    lacking = f" (no render node for GPU {','.join(missing)})" if missing else ""
    if not chosen:
        return DevicePlan(summary=f"AMD GPUs {','.join(ids)} ({source}): none passed{lacking}")
    files = (kfd, *chosen)
    return DevicePlan(
        devices=tuple(map(_passed, files)),
        group_add=_gids(files),
        environment=(("ROCR_VISIBLE_DEVICES", _renumbered(len(chosen))),),
        summary=f"AMD GPUs {','.join(ids)} ({source}) as {_renumbered(len(chosen))}{lacking}",
    )


def _infiniband(devices: NodeDevices, env: Mapping[str, str]) -> DevicePlan:
    """The verbs and CM devices, and leave to pin all of memory for RDMA.

    The memlock limit is what lets verbs register memory: IPC_LOCK, which vendor guides
    add too, stays in the bounding set only for our non-root user under no-new-privileges.
    The host's fabric tuning is set in every container, and launcher.plan has the leader's
    mpirun forward it: ranks on other nodes start through the job's sshd, which gives them a
    fresh environment (PermitUserEnvironment no), not their container's.
    """
    if not devices.infiniband:
        return DevicePlan()
    names = fabric_variables(env)
    forwarded = f"; forwarding {', '.join(names)}" if names else ""
    return DevicePlan(
        devices=tuple(map(_passed, devices.infiniband)),
        group_add=_gids(devices.infiniband),
        cap_add=("IPC_LOCK",),
        ulimits=(("memlock", -1, -1),),
        environment=tuple((name, env[name]) for name in names),
        forward=names,
        summary=f"InfiniBand: {len(devices.infiniband)} devices, memlock unlimited{forwarded}",
    )


def fabric_variables(env: Mapping[str, str]) -> tuple[str, ...]:
    """The names of the host's UCX, libfabric, NCCL and Open MPI fabric settings, sorted."""
    return tuple(
        sorted(
            name
            for name in env
            if (name.startswith(FABRIC_PREFIXES) or name in FABRIC_NAMES)
            and _ENV_NAME.fullmatch(name)
        )
    )


def _files(dev: Path, pattern: str) -> tuple[DeviceFile, ...]:
    found: list[DeviceFile] = []
    for path in sorted(dev.glob(pattern), key=_natural):
        try:
            info = path.stat()
        except OSError:
            continue  # gone since the listing: not there to pass
        if not stat.S_ISDIR(info.st_mode):
            found.append(DeviceFile(f"/dev/{path.relative_to(dev).as_posix()}", info.st_gid))
    return tuple(found)


def _by_path(file: DeviceFile) -> list[str | int]:
    return _natural(Path(file.path))


def _natural(path: Path) -> list[str | int]:
    """uverbs2 before uverbs10."""
    return [int(p) if p.isdigit() else p for p in _NUMBER.split(path.name)]


def _passed(file: DeviceFile) -> str:
    return f"{file.path}:{file.path}:rwm"


def _gids(files: Iterable[DeviceFile]) -> tuple[int, ...]:
    return _unique(f.gid for f in files if f.gid != 0)


def _renumbered(n: int) -> str:
    return ",".join(map(str, range(n)))


def _unique(items: Iterable[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))
