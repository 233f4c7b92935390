"""The direct launch as plain frozen data: one container per node, one rank per Slurm task.

Pure: the step's environment, Slurm's configuration text and this node's facts come in as
values; launcher.direct.node and launcher.direct.rank execute the result.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any

from launcher.devices import DevicePlan
from launcher.errors import UsageError
from launcher.limits import Limits
from launcher.mpi import Network
from launcher.plan import ContainerSpec, Identity, Options, labels, parse_mount
from launcher.slurm import SlurmEnv, parse_counts

MODES = ("ssh", "pmix", "pmi2")
ROLE = "direct"  # the containers' role label: reaping and suspend go by job and step
# What a rank needs of its task's environment (as enroot's 50-slurm-pmi hook passes it):
# Slurm's step, the PMIx server's rendezvous, PMI-2's fd and the user's Open MPI settings.
FORWARDED = ("PMIX_", "SLURM_", "PMI_", "OMPI_")
# PMIx's older names of its MCA choices, which a client library of another PMIx build
# reads only under their MCA names: (given, MCA name).
PMIX_MCA = (
    ("PMIX_PTL_MODULE", "PMIX_MCA_ptl"),
    ("PMIX_SECURITY_MODE", "PMIX_MCA_psec"),
    ("PMIX_GDS_MODULE", "PMIX_MCA_gds"),
)
SHARE = "mpidock"  # the node's tasks' meeting place, in the step's PMIx client directory
# The container's PID 1 (under the engine's init): it reads the node's FIFO, which every
# task of the node holds open for writing, so it ends, and the container with it, once
# the last of them has gone, however it went (SIGKILL included); the meeting place goes
# with it.
IDLE_SCRIPT = 'while read -r _; do :; done < "$1"; rm -rf "$2"'
_CONF_LINE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*=\s*(.*?)\s*$")


@dataclass(frozen=True)
class PmixDirs:
    """The step's PMIx directories on this node, bound into the container at their paths.

    Attributes:
        server: PMIX_SERVER_TMPDIR, the server's rendezvous and shared data store.
        client: the client directory Slurm made for the step (spmix_appdir_...), where
            the MPI keeps its session files.
    """

    server: str
    client: str


@dataclass(frozen=True)
class DirectPlan:
    """Everything one task of a direct launch does; printed by --dry-run.

    Attributes:
        starts: whether this task starts the node's container (the node's first task);
            the others wait for it.
        container: the node's container (for the starting task; None for the others).
        share_dir: node-local, per step: the FIFO that keeps the container, the tasks'
            markers and their lock.
        rank_env: what the rank gets of its task's environment, plus the user's -x.
    """

    job_id: str
    step_id: str
    node: str
    procid: int
    localid: int
    local_tasks: int
    name: str
    starts: bool
    container: ContainerSpec | None
    command: tuple[str, ...]
    rank_env: tuple[tuple[str, str], ...]
    pmix: PmixDirs | None
    share_dir: str
    image: str
    image_store: str
    registry: str
    ready_timeout: float = 120.0
    grace: float = 10.0
    keep_image: bool = True
    engine: str = "auto"
    podman_root: str = ""
    podman_image_store: str = ""
    mode: str = "pmix"

    @property
    def fifo(self) -> str:
        return f"{self.share_dir}/alive"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def require_server(mode: str, environ: Mapping[str, str], node: str) -> None:
    """A direct launch needs Slurm's PMIx (pmix) or PMI (pmi2) server for the step.

    Raises:
        UsageError: the task has none (srun without --mpi=pmix or --mpi=pmi2, or a Slurm
            without that plugin).
    """
    if mode == "pmix":
        present = environ.get("PMIX_RANK") is not None and bool(environ.get("PMIX_SERVER_TMPDIR"))
        what = "PMIx server"
    else:
        present, what = environ.get("PMI_FD", "").isdigit(), "PMI-2 server"
    if not present:
        mpi_type = environ.get("SLURM_MPI_TYPE", "")
        said = f"SLURM_MPI_TYPE={mpi_type}" if mpi_type else "no SLURM_MPI_TYPE"
        raise UsageError(
            f"--launch {mode} needs Slurm's {what} for the step, and this task has none ({said})",
            node=node,
            hint=f"run it as srun --mpi={mode} ... (srun --mpi=list names what Slurm has), "
            "or use --launch ssh",
        )


def require_pmix(environ: Mapping[str, str], node: str) -> None:
    require_server("pmix", environ, node)


def conf_value(text: str, key: str) -> str:
    """The value of a key in slurm.conf or mpi.conf text (keys are case-insensitive; the
    last one wins, as Slurm reads them); "" when absent."""
    value = ""
    for line in text.splitlines():
        match = _CONF_LINE.match(line.split("#", 1)[0])
        if match and match[1].lower() == key.lower():
            value = match[2]
    return value


def client_dir_candidates(
    environ: Mapping[str, str], node: str, uid: int, slurm_conf: str, mpi_conf: str
) -> tuple[str, ...]:
    """Where Slurm's mpi/pmix made the step's client directory, most likely first.

    The base is found as slurmstepd finds it: SLURM_PMIX_TMPDIR, else mpi.conf's
    PMIxCliTmpDirBase, else slurm.conf's TmpFS (%n is the node), else /tmp. The name
    carries the job's UID (Slurm 21.08 on); older releases left it out.
    """
    base = (
        environ.get("SLURM_PMIX_TMPDIR")
        or conf_value(mpi_conf, "PMIxCliTmpDirBase")
        or tmp_fs(node, slurm_conf)
    ).rstrip("/") or "/"
    step = f"{environ.get('SLURM_JOB_ID', '')}.{environ.get('SLURM_STEP_ID', '')}"
    return (f"{base}/spmix_appdir_{uid}_{step}", f"{base}/spmix_appdir_{step}")


def tmp_fs(node: str, slurm_conf: str) -> str:
    """The node's temporary directory as Slurm names it: TmpFS (%n, %h the node), /tmp."""
    value = conf_value(slurm_conf, "TmpFS").replace("%n", node).replace("%h", node)
    return value.rstrip("/") or "/tmp"


def rank_environment(
    environ: Mapping[str, str],
    forwarded: Sequence[tuple[str, str]] = (),
    drop: Sequence[str] = (),
) -> tuple[tuple[str, str], ...]:
    """The task's PMIx, PMI, Slurm and Open MPI variables (less `drop`), PMIx's MCA names
    of its module choices where only the older names are set, then the user's forwarded
    variables."""
    env = {
        name: value
        for name, value in sorted(environ.items())
        if name.startswith(FORWARDED) and name not in drop
    }
    for given, mca in PMIX_MCA:
        if given in env and mca not in env:
            env[mca] = env[given]
    env.update(forwarded)
    return tuple(env.items())


def network_env(network: Network | None) -> tuple[tuple[str, str], ...]:
    """The MPI families' own settings that keep their traffic on the cluster's interface,
    off loopback and the Docker bridge every node has."""
    if network is None:
        return ()
    return (
        ("OMPI_MCA_btl_tcp_if_include", network.cidr),
        ("UCX_NET_DEVICES", network.device),
    )


def local_tasks(env: SlurmEnv, environ: Mapping[str, str]) -> int:
    """The step's tasks on this node, from Slurm's per-node counts of the step.

    Raises:
        UsageError: the counts are malformed or do not cover this node.
    """
    text = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE", "")
    counts = parse_counts(text) if text else (1,)
    if env.nodeid >= len(counts) or env.localid >= counts[env.nodeid]:
        raise UsageError(
            f"Slurm's tasks per node {text!r} do not cover task {env.localid} of node {env.nodeid}",
            node=env.node_name,
        )
    return counts[env.nodeid]


def container_name(env: SlurmEnv) -> str:
    return f"mpidock-{env.job_key}-{ROLE}-{env.node_name}"


def idle_command(share_dir: str) -> tuple[str, ...]:
    return ("/bin/sh", "-c", IDLE_SCRIPT, "mpidock-idle", f"{share_dir}/alive", share_dir)


def node_container(
    env: SlurmEnv,
    opts: Options,
    ident: Identity,
    *,
    cwd: str,
    binds: Sequence[str],
    share_dir: str,
    network: Network | None,
    devices: DevicePlan,
    limits: Limits,
) -> ContainerSpec:
    """The node's container: the user's identity, host network, `binds` (the PMIx
    directories, or the meeting place) at their own paths, an idle PID 1 the tasks' ranks
    join."""
    environment = {
        "HOME": ident.home, "USER": ident.user, "LOGNAME": ident.user,
        **dict(devices.environment), **dict(network_env(network)),
    }  # fmt: skip
    return ContainerSpec(
        name=container_name(env),
        image=opts.image,
        command=idle_command(share_dir),
        user=f"{ident.uid}:{ident.gid}",
        group_add=tuple(dict.fromkeys((*ident.supplementary_gids, *devices.group_add))),
        labels=labels(env.job_id, ROLE, env.node_name, ident.user, env.step_id),
        mounts=_mounts(ident, opts, cwd, binds),
        readonly=tuple(m.target for m in map(parse_mount, opts.mounts) if m.readonly),
        working_dir=cwd,
        environment=tuple(environment.items()),
        cap_add=tuple(dict.fromkeys((*ContainerSpec.cap_add, *devices.cap_add))),
        shm_size=opts.shm_size,
        devices=devices.devices,
        gpu_ids=devices.gpu_ids,
        gpu_files=devices.gpu_files,
        ulimits=devices.ulimits,
        cpuset_cpus=limits.cpuset_cpus,
        mem_limit=limits.mem_limit,
        memswap_limit=limits.memswap_limit,
        pids_limit=limits.pids_limit,
        cgroup_parent=limits.cgroup_parent,
    )


def _mounts(
    ident: Identity, opts: Options, cwd: str, own: Sequence[str]
) -> tuple[tuple[str, str], ...]:
    """Home, the working directory and the PMIx directories at their own paths (none
    under another), then the user's --mount binds."""
    pairs: dict[str, str] = {}
    for path in (ident.home, cwd, *own):
        path = str(PurePosixPath(path))
        if not any(_under(path, p) for p in pairs):
            pairs[path] = path
    for mount in map(parse_mount, opts.mounts):
        pairs[mount.source] = mount.target
    return tuple(pairs.items())


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def build(
    env: SlurmEnv,
    opts: Options,
    ident: Identity,
    environ: Mapping[str, str],
    *,
    cwd: str,
    pmix: PmixDirs | None,
    share: str,
    container: ContainerSpec | None = None,
    mode: str = "pmix",
) -> DirectPlan:
    """The plan for this task; `container` only for the node's first task, which starts it.
    A pmi2 rank reaches Slurm through the task's relay (launcher.direct.pmi), not PMI_FD.

    Raises:
        UsageError: no command, a job script (a direct launch runs no mpirun), or tasks
            per node that do not cover this task.
    """
    if opts.script:
        raise UsageError(
            "--script runs mpirun in the leader's container; --launch pmix starts no mpirun",
            hint="give the program after --, or use --launch ssh for a job script",
        )
    if not opts.command:
        raise UsageError("no command to run", hint="put the program after --: -- ./app args")
    return DirectPlan(
        job_id=env.job_id, step_id=env.step_id or "", node=env.node_name, procid=env.procid,
        localid=env.localid, local_tasks=local_tasks(env, environ), name=container_name(env),
        starts=env.localid == 0, container=container if env.localid == 0 else None,
        command=opts.command,
        rank_env=rank_environment(environ, opts.env_values, ("PMI_FD",) if mode == "pmi2" else ()),
        pmix=pmix, share_dir=share, image=opts.image,
        image_store=opts.image_store or f"{ident.home}/.mpidock/images",
        registry=opts.registry, ready_timeout=opts.ready_timeout, grace=opts.grace,
        keep_image=opts.keep_image, engine=opts.engine, podman_root=opts.podman_root,
        podman_image_store=opts.podman_image_store, mode=mode,
    )  # fmt: skip


def pmi_share_dir(tmp: str, uid: int, env: SlurmEnv) -> str:
    """Without PMIx's client directory: in the user's own directory of the node's TmpFS
    (bound into the container, whose PID 1 removes the step's directory as it ends)."""
    return f"{tmp.rstrip('/')}/mpidock-{uid}/{env.job_key}.{env.node_name}"


def share_dir(pmix: PmixDirs, node: str) -> str:
    """In the step's PMIx client directory: node-local, the user's own and private, and
    removed by slurmstepd when the step ends, whatever became of the tasks."""
    return f"{pmix.client.rstrip('/')}/{SHARE}.{node}"


def describe(plan: DirectPlan) -> list[str]:
    """--dry-run's lines for people."""
    lines = [
        f"launch: {plan.mode}, task {plan.procid} (local {plan.localid} of {plan.local_tasks}) "
        f"on {plan.node} (job {plan.job_id}.{plan.step_id})",
        f"container: {plan.name}" + (" (started by this task)" if plan.starts else ""),
        f"rank: {shlex.join(plan.command)}",
    ]
    if plan.pmix:
        lines.insert(2, f"pmix: server {plan.pmix.server}, client {plan.pmix.client}")
    names = [name for name, _ in plan.rank_env]
    lines.append(f"rank env: {len(names)} variables ({', '.join(names[:6])}, ...)")
    return lines
