"""Pure builders of the mpirun command line for the MPI found in the image.

Open MPI and MPICH's Hydra (which Intel MPI also uses) are supported. Nothing here runs
anything: the leader executes the list these functions return.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from launcher.errors import ImageError, UsageError
from launcher.slurm import NodeSlots

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEVICE = re.compile(r"[A-Za-z0-9_.:@-]+")


class MpiFlavor(StrEnum):
    """The launcher family of an MPI; Intel MPI uses Hydra, so it counts as MPICH."""

    OPENMPI = "openmpi"
    MPICH = "mpich"


def forwarded_values(
    names: Sequence[str], environ: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """The values of the variables the user forwards (-x, --env, #PBS -v), as the step has
    them: mpirun's -x (Hydra's -genvlist) passes on mpirun's own environment, so the
    leader's container must hold them.

    Raises:
        UsageError: a bad name, or a variable the step does not have.
    """
    pairs: dict[str, str] = {}
    for name in names:
        if not _ENV_NAME.fullmatch(name):
            raise UsageError(f"bad environment variable name {name!r}", hint="e.g. OMP_NUM_THREADS")
        if name not in environ:
            raise UsageError(
                f"-x {name}: {name} is not set where the job step started",
                hint=f"export {name}=VALUE before sbatch/srun, or stop forwarding it",
            )
        pairs[name] = environ[name]
    return tuple(pairs.items())


def detect_flavor(version_text: str) -> MpiFlavor:
    """Tells the MPI from the output of ``mpirun --version`` run in the image.

    Raises:
        ImageError: the output matches no supported MPI.
    """
    lowered = version_text.lower()
    if "open mpi" in lowered or "openrte" in lowered:
        return MpiFlavor.OPENMPI
    if any(mark in lowered for mark in ("hydra", "mpich", "intel(r) mpi")):
        return MpiFlavor.MPICH
    first = version_text.strip().splitlines()[0] if version_text.strip() else "(no output)"
    raise ImageError(
        f"cannot tell which MPI the image has from `mpirun --version`: {first}",
        hint="supported are Open MPI, MPICH (Hydra) and Intel MPI; install one in the image",
    )


@dataclass(frozen=True)
class Network:
    """The interface MPI traffic must use, by name and by subnet.

    Raises:
        UsageError: the device name or the CIDR is malformed.
    """

    device: str
    cidr: str

    def __post_init__(self) -> None:
        if not _DEVICE.fullmatch(self.device):
            raise UsageError(f"bad network device name {self.device!r}", hint="e.g. eth0")
        try:
            ipaddress.ip_network(self.cidr, strict=False)
        except ValueError as e:
            raise UsageError(f"bad network {self.cidr!r}: {e}", hint="e.g. 10.0.0.0/24") from e


@dataclass(frozen=True)
class MpiLaunch:
    """Everything mpirun needs to know about one job.

    Attributes:
        flavor: which launcher syntax to produce.
        hosts: the nodes and how many ranks each runs.
        ssh_agent: the ssh wrapper that carries the job's ssh configuration.
        network: the interface for MPI traffic, or None to let MPI choose.
        command: the program and its arguments.
        extra_args: the user's own mpirun options, placed before the command.
        env_forward: names of variables every rank gets from the leader's environment.
        env_set: variables the launcher sets for every rank.
    """

    flavor: MpiFlavor
    hosts: tuple[NodeSlots, ...]
    ssh_agent: str
    network: Network | None
    command: tuple[str, ...]
    extra_args: tuple[str, ...] = ()
    env_forward: tuple[str, ...] = ()
    env_set: tuple[tuple[str, str], ...] = ()

    @property
    def np(self) -> int:
        """Total ranks."""
        return sum(host.slots for host in self.hosts)


def mpirun_argv(launch: MpiLaunch) -> list[str]:
    """Builds the launcher's argv: options, then the user's extra options, then the command.

    Raises:
        UsageError: no command, no hosts, a host without slots, a bad variable name, or a
            wrapper path Open MPI would split.
    """
    _validate(launch)
    if launch.flavor is MpiFlavor.OPENMPI:
        head = _openmpi_options(launch)
    else:
        head = _hydra_options(launch)
    return [*head, *launch.extra_args, *launch.command]


def display(argv: Sequence[str]) -> str:
    """Renders an argv for logs and ``--dry-run``; never executed."""
    return shlex.join(argv)


def _host_list(hosts: Sequence[NodeSlots]) -> str:
    return ",".join(f"{host.node}:{host.slots}" for host in hosts)


def _openmpi_options(launch: MpiLaunch) -> list[str]:
    argv = ["mpirun", "--np", str(launch.np), "--host", _host_list(launch.hosts)]
    argv += ["--mca", "plm_rsh_agent", launch.ssh_agent, "--mca", "plm_rsh_no_tree_spawn", "1"]
    if launch.network:
        cidr = launch.network.cidr
        argv += ["--mca", "btl_tcp_if_include", cidr, "--mca", "oob_tcp_if_include", cidr]
    for name, value in launch.env_set:
        argv += ["-x", f"{name}={value}"]
    for name in launch.env_forward:
        argv += ["-x", name]
    return argv


def _hydra_options(launch: MpiLaunch) -> list[str]:
    argv = ["mpiexec", "-launcher", "ssh", "-launcher-exec", launch.ssh_agent]
    argv += ["-hosts", _host_list(launch.hosts), "-n", str(launch.np)]
    if launch.network:
        device = launch.network.device
        argv += ["-iface", device, "-genv", "UCX_NET_DEVICES", device]
    for name, value in launch.env_set:
        argv += ["-genv", name, value]
    if launch.env_forward:
        argv += ["-genvlist", ",".join(launch.env_forward)]
    return argv


def script_env(launch: MpiLaunch, hostfile: str) -> list[tuple[str, str]]:
    """The environment in which a job script's plain `mpirun ./app` (or `mpiexec`) reaches
    every node as mpirun_argv would: the same hosts, ssh wrapper and network, set through
    the MPI's own variables. launch.command is not used."""
    if launch.flavor is MpiFlavor.OPENMPI:
        env = [
            ("OMPI_MCA_orte_default_hostfile", hostfile),
            ("OMPI_MCA_plm_rsh_agent", launch.ssh_agent),
            ("OMPI_MCA_plm_rsh_no_tree_spawn", "1"),
        ]
        if launch.network:
            cidr = launch.network.cidr
            env += [("OMPI_MCA_btl_tcp_if_include", cidr), ("OMPI_MCA_oob_tcp_if_include", cidr)]
        if launch.env_forward:
            env.append(("OMPI_MCA_mca_base_env_list", ";".join(launch.env_forward)))
        return env + list(launch.env_set)
    env = [
        ("HYDRA_HOST_FILE", hostfile),
        ("HYDRA_LAUNCHER", "ssh"),
        ("HYDRA_LAUNCHER_EXEC", launch.ssh_agent),
    ]
    if launch.network:
        env += [("HYDRA_IFACE", launch.network.device), ("UCX_NET_DEVICES", launch.network.device)]
    return env + list(launch.env_set)


def hostfile_text(flavor: MpiFlavor, hosts: Sequence[NodeSlots]) -> str:
    """The job's hostfile in the MPI's own syntax."""
    if flavor is MpiFlavor.OPENMPI:
        return "".join(f"{h.node} slots={h.slots}\n" for h in hosts)
    return "".join(f"{h.node}:{h.slots}\n" for h in hosts)


def _validate(launch: MpiLaunch) -> None:
    if not launch.command:
        raise UsageError("no command to run", hint="put it after --, e.g. -- ./solver in.cfg")
    if not launch.hosts or any(host.slots < 1 for host in launch.hosts):
        raise UsageError(f"every host needs at least one slot, got {_host_list(launch.hosts)!r}")
    set_names = [name for name, _ in launch.env_set]
    for name in [*set_names, *launch.env_forward]:
        if not _ENV_NAME.fullmatch(name):
            raise UsageError(f"bad environment variable name {name!r}", hint="e.g. OMP_NUM_THREADS")
    both = sorted(set(set_names) & set(launch.env_forward))
    if both:
        raise UsageError(f"variables both set and forwarded: {', '.join(both)}")
    if launch.flavor is MpiFlavor.OPENMPI and re.search(r"\s", launch.ssh_agent):
        # Open MPI splits plm_rsh_agent at white space into a command and its arguments.
        raise UsageError(
            f"Open MPI cannot use an ssh wrapper whose path has white space: {launch.ssh_agent!r}",
            hint="put the job directory on a path without spaces",
        )
