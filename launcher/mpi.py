"""Pure builders of the mpirun command line for the MPI found in the image.

Open MPI 4 (ORTE) and 5 (PRRTE), MPICH's Hydra and Intel MPI's Hydra are supported; the
family and version come from the image's `mpirun --version`. Nothing here runs anything:
the leader executes the list these functions return.
"""

from __future__ import annotations

import ipaddress
import math
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
    """The launcher family of an MPI, as run records name it.

    Intel MPI's mpiexec is a Hydra too, but its bootstrap, interface and fabric settings
    have their own I_MPI_* names, so it is a family of its own.
    """

    OPENMPI = "openmpi"
    MPICH = "mpich"
    INTEL = "intel"

    @property
    def hydra(self) -> bool:
        """Launched by a Hydra mpiexec, which passes its whole environment to the ranks."""
        return self is not MpiFlavor.OPENMPI


@dataclass(frozen=True)
class MpiFound:
    """What `mpirun --version` says about the image's MPI.

    Attributes:
        flavor: the family.
        version: its version as printed (e.g. "5.0.11"), "" when the text names none.
    """

    flavor: MpiFlavor
    version: str = ""

    @property
    def major(self) -> int | None:
        """The major version, None when unknown."""
        head = self.version.split(".", 1)[0]
        return int(head) if head.isascii() and head.isdigit() else None

    def __str__(self) -> str:
        return f"{self.flavor.value} {self.version}".strip()


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
    """Tells the MPI's family from the output of ``mpirun --version`` run in the image.

    Raises:
        ImageError: the output matches no supported MPI.
    """
    return detect_mpi(version_text).flavor


# Where each family's `--version` output puts the version (checked in this order).
_VERSIONS = (
    (MpiFlavor.INTEL, re.compile(r"Intel\(R\) MPI Library.*?Version ([0-9][0-9.]*[0-9])", re.I)),
    (MpiFlavor.OPENMPI, re.compile(r"\((?:Open MPI|OpenRTE)\) ([0-9][0-9.]*[0-9])", re.I)),
    (MpiFlavor.MPICH, re.compile(r"^\s*Version:\s+([0-9][0-9.]*[0-9])", re.M)),
)
_ANY_VERSION = re.compile(r"\b([0-9]+\.[0-9]+(?:\.[0-9]+)?)\b")


def detect_mpi(version_text: str) -> MpiFound:
    """The family and version of the MPI from ``mpirun --version`` run in the image.

    Raises:
        ImageError: the output matches no supported MPI.
    """
    flavor = _family(version_text)
    pattern = dict(_VERSIONS)[flavor]
    found = pattern.search(version_text) or _ANY_VERSION.search(version_text)
    return MpiFound(flavor, found.group(1) if found else "")


def _family(version_text: str) -> MpiFlavor:
    lowered = version_text.lower()
    if "intel(r) mpi" in lowered:
        return MpiFlavor.INTEL
    if "open mpi" in lowered or "openrte" in lowered:
        return MpiFlavor.OPENMPI
    if "hydra" in lowered or "mpich" in lowered:
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
        version: the MPI's version from `mpirun --version`, "" when unknown (--mpi given):
            Open MPI 5 takes PRRTE's names, and an unknown Open MPI gets a form that
            both 4 and 5 accept.
    """

    flavor: MpiFlavor
    hosts: tuple[NodeSlots, ...]
    ssh_agent: str
    network: Network | None
    command: tuple[str, ...]
    extra_args: tuple[str, ...] = ()
    env_forward: tuple[str, ...] = ()
    env_set: tuple[tuple[str, str], ...] = ()
    version: str = ""

    @property
    def np(self) -> int:
        """Total ranks."""
        return sum(host.slots for host in self.hosts)

    @property
    def major(self) -> int | None:
        """The MPI's major version, None when unknown."""
        return MpiFound(self.flavor, self.version).major


def mpirun_argv(launch: MpiLaunch) -> list[str]:
    """Builds the launcher's argv: options, then the user's extra options, then the command.

    Raises:
        UsageError: no command, no hosts, a host without slots, a bad variable name, or a
            wrapper path Open MPI would split.
    """
    _validate(launch)
    if launch.flavor is MpiFlavor.OPENMPI:
        head = _openmpi_options(launch)
    elif launch.flavor is MpiFlavor.INTEL:
        head = _intel_options(launch)
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
    # Open MPI 5 starts its daemons with PRRTE, whose ssh launcher and out-of-band
    # channel are PRRTE settings (--prtemca); 5.0 still maps the ORTE names given to
    # --mca, so an Open MPI of unknown version gets those, which 4 and 5 both accept.
    if _prrte(launch):
        argv += ["--prtemca", "plm_ssh_agent", launch.ssh_agent]
        argv += ["--prtemca", "plm_ssh_no_tree_spawn", "1"]
    else:
        argv += ["--mca", "plm_rsh_agent", launch.ssh_agent, "--mca", "plm_rsh_no_tree_spawn", "1"]
    if launch.network:
        cidr = launch.network.cidr
        argv += ["--mca", "btl_tcp_if_include", cidr]
        argv += ["--prtemca" if _prrte(launch) else "--mca", "oob_tcp_if_include", cidr]
    for name, value in launch.env_set:
        argv += ["-x", f"{name}={value}"]
    for name in launch.env_forward:
        argv += ["-x", name]
    return argv


def _prrte(launch: MpiLaunch) -> bool:
    return launch.major is not None and launch.major >= 5


def _hydra_options(launch: MpiLaunch) -> list[str]:
    argv = ["mpiexec", "-launcher", "ssh", "-launcher-exec", launch.ssh_agent]
    argv += ["-hosts", _host_list(launch.hosts), "-n", str(launch.np)]
    if launch.network:
        device = launch.network.device
        argv += ["-iface", device, "-genv", "UCX_NET_DEVICES", device]
    return argv + _hydra_env(launch)


def _intel_options(launch: MpiLaunch) -> list[str]:
    """Intel MPI's Hydra: its own names for the ssh bootstrap through the job's wrapper;
    the interface for Hydra and for libfabric's tcp provider, and its shm:ofi fabrics,
    follow the network."""
    names, ppn = _intel_hosts(launch.hosts)
    argv = ["mpiexec", "-bootstrap", "ssh", "-bootstrap-exec", launch.ssh_agent]
    argv += ["-hosts", names, "-ppn", str(ppn), "-n", str(launch.np)]
    if launch.network:
        argv += ["-iface", launch.network.device]
    for name, value in _intel_fabric(launch):
        argv += ["-genv", name, value]
    return argv + _hydra_env(launch)


def _intel_hosts(hosts: Sequence[NodeSlots]) -> tuple[str, int]:
    """Intel's -hosts ignores MPICH's `node:N` counts (every node gets -ppn ranks) and
    starts a node named again in a row in the same proxy: each node is named slots/ppn
    times, ppn the greatest common divisor of the slots, so uneven slots are placed
    exactly and even ones stay one name per node."""
    ppn = math.gcd(*(host.slots for host in hosts))
    return ",".join(host.node for host in hosts for _ in range(host.slots // ppn)), ppn


def _intel_fabric(launch: MpiLaunch) -> list[tuple[str, str]]:
    """Shared memory within a node, libfabric's tcp provider on the chosen interface
    between nodes (else Intel MPI's own choice, which can take docker0)."""
    if not launch.network:
        return []
    device = launch.network.device
    return [("I_MPI_FABRICS", "shm:ofi"), ("FI_PROVIDER", "tcp"), ("FI_TCP_IFACE", device)]


def _hydra_env(launch: MpiLaunch) -> list[str]:
    argv: list[str] = []
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
        env = _openmpi_env(launch, hostfile)
    elif launch.flavor is MpiFlavor.INTEL:
        env = _intel_env(launch, hostfile)
    else:
        env = _mpich_env(launch, hostfile)
    return env + list(launch.env_set)


def _openmpi_env(launch: MpiLaunch, hostfile: str) -> list[tuple[str, str]]:
    # Open MPI 5's mpirun reads its ssh, hostfile and out-of-band settings as PRTE_MCA_*
    # only (OMPI_MCA_orte_default_hostfile is ignored there); 4 reads only OMPI_MCA_*.
    # An Open MPI of unknown version gets both.
    cidr = launch.network.cidr if launch.network else ""
    env: list[tuple[str, str]] = []
    if launch.major is None or launch.major < 5:
        env += [
            ("OMPI_MCA_orte_default_hostfile", hostfile),
            ("OMPI_MCA_plm_rsh_agent", launch.ssh_agent),
            ("OMPI_MCA_plm_rsh_no_tree_spawn", "1"),
        ]
        env += [("OMPI_MCA_oob_tcp_if_include", cidr)] if cidr else []
    if launch.major is None or launch.major >= 5:
        env += [
            ("PRTE_MCA_prte_default_hostfile", hostfile),
            ("PRTE_MCA_plm_ssh_agent", launch.ssh_agent),
            ("PRTE_MCA_plm_ssh_no_tree_spawn", "1"),
        ]
        env += [("PRTE_MCA_oob_tcp_if_include", cidr)] if cidr else []
    env += [("OMPI_MCA_btl_tcp_if_include", cidr)] if cidr else []
    if launch.env_forward:
        env.append(("OMPI_MCA_mca_base_env_list", ";".join(launch.env_forward)))
    return env


def _mpich_env(launch: MpiLaunch, hostfile: str) -> list[tuple[str, str]]:
    env = [
        ("HYDRA_HOST_FILE", hostfile),
        ("HYDRA_LAUNCHER", "ssh"),
        ("HYDRA_LAUNCHER_EXEC", launch.ssh_agent),
    ]
    if launch.network:
        env += [("HYDRA_IFACE", launch.network.device), ("UCX_NET_DEVICES", launch.network.device)]
    return env


def _intel_env(launch: MpiLaunch, hostfile: str) -> list[tuple[str, str]]:
    """As _intel_options, through Intel MPI's I_MPI_HYDRA_* variables. Intel's host file
    (I_MPI_HYDRA_HOST_FILE, mpirun -f) ignores per-node counts; only -machinefile honours
    them, so even slots are set as I_MPI_PERHOST, and a script on uneven slots passes
    `-machinefile "$I_MPI_HYDRA_HOST_FILE"` (the job's hostfile has the counts)."""
    env = [
        ("I_MPI_HYDRA_HOST_FILE", hostfile),
        ("I_MPI_HYDRA_BOOTSTRAP", "ssh"),
        ("I_MPI_HYDRA_BOOTSTRAP_EXEC", launch.ssh_agent),
    ]
    if len({host.slots for host in launch.hosts}) == 1:
        env.append(("I_MPI_PERHOST", str(launch.hosts[0].slots)))
    if launch.network:
        env.append(("I_MPI_HYDRA_IFACE", launch.network.device))
    return env + _intel_fabric(launch)


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
        # Open MPI splits plm_rsh_agent (5: plm_ssh_agent) at white space into a command
        # and its arguments.
        raise UsageError(
            f"Open MPI cannot use an ssh wrapper whose path has white space: {launch.ssh_agent!r}",
            hint="put the job directory on a path without spaces",
        )
