"""The launch as plain frozen data: who runs, where, in which containers, with what argv.

Builders here do no I/O: facts (environment, identity, network, MPI flavour) are
gathered first by launcher.facts, then turned into a LaunchPlan, then executed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from launcher.devices import DevicePlan
from launcher.errors import UsageError
from launcher.hostmpi import SHIM, HostMpi, Injection, launcher_argv
from launcher.jobdir import JobDir, job_path
from launcher.limits import Limits
from launcher.mpi import MpiFlavor, MpiLaunch, Network, mpirun_argv, script_env
from launcher.slurm import NodeSlots, SlurmEnv, job_port, slots_per_node

LABEL_PREFIX = "org.mpidock"
NO_DEVICES = DevicePlan()


@dataclass(frozen=True)
class Identity:
    """The job user exactly as the host knows them."""

    user: str
    uid: int
    gid: int
    group: str
    groups: tuple[tuple[str, int], ...]
    home: str
    shell: str = "/bin/sh"

    @property
    def supplementary_gids(self) -> tuple[int, ...]:
        return tuple(gid for _, gid in self.groups)


@dataclass(frozen=True)
class Options:
    """What the user asked for on the command line (after configuration is applied)."""

    image: str
    command: tuple[str, ...]
    np: int | None = None
    ppn: int | None = None
    port: int | None = None
    port_range: tuple[int, int] = (20000, 29999)
    iface: str | None = None
    mpi: str = "auto"
    mpi_args: tuple[str, ...] = ()
    env_forward: tuple[str, ...] = ()
    # The forwarded variables' values from the step's environment (mpi.forwarded_values).
    env_values: tuple[tuple[str, str], ...] = ()
    mounts: tuple[str, ...] = ()
    job_root: str | None = None
    ready_timeout: float = 120.0
    grace: float = 10.0
    shm_size: str = "1g"
    script: str = ""  # a job script the leader's container runs instead of mpirun
    keep_image: bool = True
    image_store: str | None = None
    registry: str = ""
    engine: str = "auto"  # launcher.engines: docker, podman or auto
    podman_root: str = ""
    podman_image_store: str = ""
    host_mpi: HostMpi | None = None  # a site's MPI injected in place of the image's


@dataclass(frozen=True)
class ContainerSpec:
    """One container, in the terms launcher.containers turns into docker-py arguments."""

    name: str
    image: str
    command: tuple[str, ...]
    user: str
    group_add: tuple[int, ...]
    labels: tuple[tuple[str, str], ...]
    mounts: tuple[tuple[str, str], ...]
    working_dir: str
    readonly: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    network_mode: str = "host"
    hostname: str = ""  # empty: Docker's own (the node's, on the host network)
    cap_drop: tuple[str, ...] = ("ALL",)
    # Docker's seccomp profile admits process_vm_readv/writev (MPI's single-copy shared
    # memory, CMA) only for containers holding SYS_PTRACE. It stays in the bounding set
    # alone: a non-root process under no-new-privileges never has it effective, so it may
    # read its own ranks' memory, exactly as it may outside a container, and nothing more.
    cap_add: tuple[str, ...] = ("SYS_PTRACE",)
    security_opt: tuple[str, ...] = ("no-new-privileges",)
    init: bool = True
    shm_size: str = "1g"
    # From launcher.devices: device files "HOST:CONTAINER:rwm", NVIDIA GPUs for one device
    # request, and (name, soft, hard) resource limits.
    devices: tuple[str, ...] = ()
    gpu_ids: tuple[str, ...] = ()
    gpu_files: tuple[str, ...] = ()  # the same GPUs as device files (launcher.devices)
    ulimits: tuple[tuple[str, int, int], ...] = ()
    # From launcher.limits: the step's CPUs ("0-1"), its memory in bytes (memory plus swap
    # the same: no swap beyond it), a processes limit and Slurm's job cgroup; 0 or empty
    # for none.
    cpuset_cpus: str = ""
    mem_limit: int = 0
    memswap_limit: int = 0
    pids_limit: int = 0
    cgroup_parent: str = ""


@dataclass(frozen=True)
class LaunchPlan:
    """Everything one task of the step will do; printed by --dry-run."""

    role: str
    job_id: str
    node: str
    nodes: tuple[NodeSlots, ...]
    port: int
    identity: Identity
    job_dir: str
    image: str
    container: ContainerSpec | None
    mpirun: tuple[str, ...] = ()
    flavor: str = ""
    network: Network | None = None
    ready_timeout: float = 120.0
    grace: float = 10.0
    keep_image: bool = True
    image_store: str = ""
    registry: str = ""
    workers: tuple[str, ...] = field(default=())
    devices: str = ""  # what the containers get of the node's GPUs and fabrics, for people
    limits: str = ""  # the containers' share of the node (CPUs, memory, pids), for people
    step_id: str = ""
    # Where a worker looks for a free port, from `port` (the step's preferred one) on.
    port_range: tuple[int, int] = (20000, 29999)
    mpi_version: str = ""  # from the image's `mpirun --version`; "" when --mpi named it
    engine: str = "auto"  # as asked; the engine that ran is in the run record
    podman_root: str = ""
    podman_image_store: str = ""
    injection: Injection | None = None  # the host MPI injected (launcher.hostmpi)

    @property
    def job(self) -> JobDir:
        return JobDir(Path(self.job_dir))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def role_of(env: SlurmEnv) -> str:
    if not env.acts:
        return "idle"
    return "leader" if env.is_leader else "worker"


def labels(
    job_id: str, role: str, node: str, user: str, step: str | None = None
) -> tuple[tuple[str, str], ...]:
    """Reaping goes by job; the step tells concurrent steps of that job apart."""
    marks = (
        (f"{LABEL_PREFIX}.job", job_id),
        (f"{LABEL_PREFIX}.role", role),
        (f"{LABEL_PREFIX}.node", node),
        (f"{LABEL_PREFIX}.user", user),
    )
    return (*marks, (f"{LABEL_PREFIX}.step", step)) if step else marks


def build_plan(
    env: SlurmEnv,
    opts: Options,
    ident: Identity,
    *,
    cwd: str,
    image: str,
    flavor: MpiFlavor | None,
    network: Network | None,
    devices: DevicePlan | None = None,
    limits: Limits | None = None,
    mpi_version: str = "",
    injection: Injection | None = None,
) -> LaunchPlan:
    """The plan for this task: its role, its container and (leader) the mpirun argv.

    devices (from launcher.devices.plan_devices) go to the container of every role;
    without them no device, GPU or fabric setting is passed. limits (from
    launcher.limits.plan_limits) likewise; without them the containers are unlimited.
    With opts.host_mpi, injection (the leader's, once the image passed the verdict) or
    the host MPI alone puts that MPI into every container and the launch.
    """
    dev = devices or NO_DEVICES
    hosts = slots_per_node(env, ppn=opts.ppn, np=opts.np)
    role = role_of(env)
    if role == "worker" and env.node_name not in {h.node for h in hosts}:
        role = "idle"  # --np left this node without ranks: no sshd to start
    port, ports = _ports(env, opts)
    job_root = opts.job_root or f"{ident.home}/.mpidock/jobs"
    job = JobDir(job_path(job_root, ident.user, env.job_key))
    leader_node = hosts[0].node
    argv: tuple[str, ...] = ()
    extra_env: tuple[tuple[str, str], ...] = ()
    inject = injection or (Injection(opts.host_mpi) if opts.host_mpi else None)
    inject_env = inject.environment(str(job.path / SHIM)) if inject else ()
    if role == "leader" and flavor is not None:
        launch = _mpi_launch(opts, hosts, job, flavor, network, dev.forward, mpi_version)
        launch = replace(launch, env_set=(*launch.env_set, *inject_env))
        argv = tuple(mpirun_argv(launch))
        argv = tuple(launcher_argv(argv, inject.host)) if inject else argv
        if opts.script:  # the script's own mpirun finds everything in its environment
            argv, extra_env = (), tuple(script_env(launch, str(job.hostfile)))
    spec = None
    if role != "idle":
        leads = opts.command if opts.script else argv
        command = leads if role == "leader" else _sshd_command(job, env.node_name)
        spec = _container(env, opts, ident, role, image, command, cwd, job_root, extra_env, dev)
        spec = _limited(spec, limits or Limits())
        spec = _injected(spec, inject, inject_env if role == "leader" else ())
    return LaunchPlan(
        role=role, job_id=env.job_id, node=env.node_name, nodes=hosts, port=port,
        identity=ident, job_dir=str(job.path), image=image, container=spec, mpirun=argv,
        flavor=flavor.value if flavor else "", network=network,
        ready_timeout=opts.ready_timeout, grace=opts.grace, keep_image=opts.keep_image,
        image_store=opts.image_store or f"{ident.home}/.mpidock/images", registry=opts.registry,
        workers=tuple(h.node for h in hosts if h.node != leader_node),
        limits=limits.summary if limits else "",
        devices=dev.summary, step_id=env.step_id or "", port_range=ports,
        mpi_version=mpi_version, engine=opts.engine, podman_root=opts.podman_root,
        podman_image_store=opts.podman_image_store,
        injection=inject,
    )  # fmt: skip


def _ports(env: SlurmEnv, opts: Options) -> tuple[int, tuple[int, int]]:
    """The step's preferred port and the range a node may move within when it is taken;
    --port pins the port (a node where it is taken fails, naming it)."""
    if opts.port is not None:
        return _port(opts.port), (opts.port, opts.port)
    return job_port(env.job_id, *opts.port_range, env.step_id), opts.port_range


def _port(port: int) -> int:
    # The same bounds as --port-range: sshd runs unprivileged, so it cannot bind below 1024.
    if not 1024 <= port <= 65535:
        raise UsageError(
            f"bad port {port}: expected 1024 <= port <= 65535",
            hint="pick an unprivileged port that no service on the nodes uses",
        )
    return port


def _mpi_launch(
    opts: Options,
    hosts: tuple[NodeSlots, ...],
    job: JobDir,
    flavor: MpiFlavor,
    network: Network | None,
    device_forward: tuple[str, ...] = (),
    version: str = "",
) -> MpiLaunch:
    # Ranks on other nodes start through the job's sshd, in a fresh environment: Open MPI
    # must forward the host's fabric settings. Hydra passes mpiexec's whole environment
    # unless given a -genvlist, which would then pass only the names listed.
    if flavor.hydra:
        device_forward = ()
    forward = tuple(dict.fromkeys((*opts.env_forward, *device_forward)))
    return MpiLaunch(
        flavor=flavor, hosts=hosts, ssh_agent=str(job.ssh_wrapper), network=network,
        command=opts.command, extra_args=opts.mpi_args, env_forward=forward,
        env_set=_mpi_env(flavor), version=version,
    )  # fmt: skip


def _mpi_env(flavor: MpiFlavor) -> tuple[tuple[str, str], ...]:
    if flavor is MpiFlavor.MPICH:
        return MPICH_ENV
    return ()


# Settings proven on the testbed for MPICH over UCX with several ranks per node.
MPICH_ENV: tuple[tuple[str, str], ...] = ()


def _sshd_command(job: JobDir, node: str) -> tuple[str, ...]:
    return ("/usr/sbin/sshd", "-D", "-e", "-f", str(job.node_sshd_config(node)))


def _container(
    env: SlurmEnv,
    opts: Options,
    ident: Identity,
    role: str,
    image: str,
    command: tuple[str, ...],
    cwd: str,
    job_root: str,
    extra_env: tuple[tuple[str, str], ...] = (),
    dev: DevicePlan = NO_DEVICES,
) -> ContainerSpec:
    # The launcher's own variables win over the host's fabric settings of the same name,
    # and both over what the user forwards; mpirun passes the leader's values to the ranks.
    forwarded = opts.env_values if role == "leader" else ()
    environment = {
        **dict(forwarded), "HOME": ident.home, "USER": ident.user, "LOGNAME": ident.user,
        **dict(dev.environment), **dict(extra_env),
    }  # fmt: skip
    return ContainerSpec(
        name=f"mpidock-{env.job_key}-{role}-{env.node_name}",
        image=image,
        command=command,
        user=f"{ident.uid}:{ident.gid}",
        group_add=tuple(dict.fromkeys((*ident.supplementary_gids, *dev.group_add))),
        labels=labels(env.job_id, role, env.node_name, ident.user, env.step_id),
        mounts=_mounts(ident, opts, cwd, job_root),
        readonly=tuple(m.target for m in map(parse_mount, opts.mounts) if m.readonly),
        working_dir=cwd,
        environment=tuple(environment.items()),
        cap_add=tuple(dict.fromkeys((*ContainerSpec.cap_add, *dev.cap_add))),
        shm_size=opts.shm_size,
        devices=dev.devices,
        gpu_ids=dev.gpu_ids,
        gpu_files=dev.gpu_files,
        ulimits=dev.ulimits,
    )


def _injected(
    spec: ContainerSpec, inject: Injection | None, env: tuple[tuple[str, str], ...]
) -> ContainerSpec:
    """The host MPI's directories bound read-only at their own paths, and (the leader's)
    its PATH and LD_LIBRARY_PATH over the image's."""
    if inject is None:
        return spec
    binds = inject.host.binds
    return replace(
        spec,
        mounts=(*spec.mounts, *((path, path) for path in binds)),
        readonly=(*spec.readonly, *binds),
        environment=tuple({**dict(spec.environment), **dict(env)}.items()),
    )


def _limited(spec: ContainerSpec, limits: Limits) -> ContainerSpec:
    return replace(
        spec,
        cpuset_cpus=limits.cpuset_cpus,
        mem_limit=limits.mem_limit,
        memswap_limit=limits.memswap_limit,
        pids_limit=limits.pids_limit,
        cgroup_parent=limits.cgroup_parent,
    )


def _mounts(ident: Identity, opts: Options, cwd: str, job_root: str) -> tuple[tuple[str, str], ...]:
    """Host paths bound at the same path: home, job root, working directory, user mounts."""
    pairs: dict[str, str] = {}
    for path in (ident.home, job_root, cwd):
        if not any(_under(path, p) for p in pairs):
            pairs[path] = path
    for mount in map(parse_mount, opts.mounts):
        pairs[mount.source] = mount.target
    return tuple(pairs.items())


@dataclass(frozen=True)
class UserMount:
    """One --mount SRC[:DST][:ro|rw] option."""

    source: str
    target: str
    readonly: bool


def parse_mount(spec: str) -> UserMount:
    """Reads SRC, SRC:DST or SRC:DST:ro|rw, as docker run -v does; paths must be absolute."""
    parts = spec.split(":")
    mode = parts.pop() if len(parts) == 3 else "rw"
    if len(parts) == 2 and parts[1] in ("ro", "rw"):
        mode = parts.pop()
    source, target = parts[0], parts[-1]
    absolute = source.startswith("/") and target.startswith("/")
    if len(parts) > 2 or mode not in ("ro", "rw") or not absolute:
        raise UsageError(
            f"bad --mount {spec!r}: expected SRC[:DST][:ro] with absolute paths",
            hint="e.g. --mount /scratch or --mount /data/ref:/ref:ro",
        )
    return UserMount(source, target, mode == "ro")


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")
