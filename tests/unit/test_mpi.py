"""Whole mpirun argv lists for Open MPI 4 and 5, MPICH's Hydra and Intel MPI's, compared by
equality; the family and version read from `mpirun --version` texts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from launcher.errors import ImageError, UsageError
from launcher.mpi import (
    MpiFlavor,
    MpiFound,
    MpiLaunch,
    Network,
    detect_flavor,
    detect_mpi,
    display,
    forwarded_values,
    hostfile_text,
    mpirun_argv,
    script_env,
)
from launcher.slurm import NodeSlots

WRAPPER = "/shared/mpidock/jobs/42/ssh"
HOSTS = (NodeSlots("sim1", 2), NodeSlots("sim2", 2), NodeSlots("sim3", 1))
NET = Network("eth0", "10.213.0.0/24")


def launch(flavor: MpiFlavor, **changes: object) -> MpiLaunch:
    base = MpiLaunch(
        flavor=flavor,
        hosts=HOSTS,
        ssh_agent=WRAPPER,
        network=None,
        command=("./solver", "in.cfg"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


MPICH5_TEXT = """HYDRA build details:
    Version:                                 5.0.2
    Release Date:                            Fri Sep 25 20:45:26 UTC 2026
    CC:                              cc
    Configure options:                       --with-device=ch4:ucx,ofi --with-pm=hydra:gforker
"""


# `mpirun --version` of mpidock/intelmpi (impi-rt 2021.18.1): mpirun is Intel's shell
# script, which runs mpiexec.hydra.
INTEL_TEXT = """Intel(R) MPI Library for Linux* OS, Version 2021.18.1 Build 20260626 (id: b44796a)
Copyright 2003-2026, Intel Corporation.
"""


@pytest.mark.parametrize(
    ("text", "flavor", "version"),
    [
        (
            "mpirun (Open MPI) 4.1.4\n\nReport bugs to http://www.open-mpi.org/community/help/\n",
            "openmpi",
            "4.1.4",
        ),
        (
            "mpirun (Open MPI) 5.0.11\n\nReport bugs to https://www.open-mpi.org/\n",
            "openmpi",
            "5.0.11",
        ),
        ("mpirun (OpenRTE) 1.10.7\n", "openmpi", "1.10.7"),
        (
            "HYDRA build details:\n    Version:                                 4.0.2\n"
            "    Release Date:                            Thu Apr  2 12:59:19 CDT 2022\n",
            "mpich",
            "4.0.2",
        ),
        (MPICH5_TEXT, "mpich", "5.0.2"),
        (
            "Intel(R) MPI Library for Linux* OS, Version 2021.10 Build 20230619 (id: c2e19c2f3e)\n"
            "Copyright 2003-2023, Intel Corporation.\n",
            "intel",
            "2021.10",
        ),
        (INTEL_TEXT, "intel", "2021.18.1"),
        ("mpiexec (Open MPI)\n", "openmpi", ""),
    ],
)
def test_detect_mpi(text: str, flavor: str, version: str) -> None:
    assert detect_mpi(text) == MpiFound(MpiFlavor(flavor), version)
    assert detect_flavor(text) == MpiFlavor(flavor)


@pytest.mark.parametrize(
    ("version", "major"), [("5.0.11", 5), ("2021.10", 2021), ("", None), ("x.1", None)]
)
def test_major_version(version: str, major: int | None) -> None:
    assert MpiFound(MpiFlavor.OPENMPI, version).major == major
    assert launch(MpiFlavor.OPENMPI, version=version).major == major


def test_run_records_keep_the_family_names() -> None:
    assert [f.value for f in MpiFlavor] == ["openmpi", "mpich", "intel"]
    assert [f.hydra for f in MpiFlavor] == [False, True, True]
    assert str(MpiFound(MpiFlavor.MPICH, "5.0.2")) == "mpich 5.0.2"


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("mpirun_rsh version 2.3\nmore\n", "mpirun_rsh version 2.3"),
        ("", "(no output)"),
        ("bash: mpirun: command not found\n", "bash: mpirun: command not found"),
    ],
)
def test_detect_flavor_rejects(text: str, first: str) -> None:
    with pytest.raises(ImageError) as info:
        detect_flavor(text)
    assert info.value.message == (
        f"cannot tell which MPI the image has from `mpirun --version`: {first}"
    )
    assert all(name in info.value.hint for name in ("Open MPI", "MPICH (Hydra)", "Intel MPI"))


def test_np_is_the_sum_of_slots() -> None:
    assert launch(MpiFlavor.OPENMPI).np == 5


def test_openmpi_plain() -> None:
    assert mpirun_argv(launch(MpiFlavor.OPENMPI)) == [
        "mpirun", "--np", "5", "--host", "sim1:2,sim2:2,sim3:1",
        "--mca", "plm_rsh_agent", WRAPPER,
        "--mca", "plm_rsh_no_tree_spawn", "1",
        "./solver", "in.cfg",
    ]  # fmt: skip


def test_openmpi_everything() -> None:
    full = launch(
        MpiFlavor.OPENMPI,
        network=NET,
        env_set=(("OMP_NUM_THREADS", "2"), ("MSG", "a b=c")),
        env_forward=("LD_LIBRARY_PATH", "CASE"),
        extra_args=("--bind-to", "core"),
    )
    assert mpirun_argv(full) == [
        "mpirun", "--np", "5", "--host", "sim1:2,sim2:2,sim3:1",
        "--mca", "plm_rsh_agent", WRAPPER,
        "--mca", "plm_rsh_no_tree_spawn", "1",
        "--mca", "btl_tcp_if_include", "10.213.0.0/24",
        "--mca", "oob_tcp_if_include", "10.213.0.0/24",
        "-x", "OMP_NUM_THREADS=2", "-x", "MSG=a b=c",
        "-x", "LD_LIBRARY_PATH", "-x", "CASE",
        "--bind-to", "core",
        "./solver", "in.cfg",
    ]  # fmt: skip


def test_hydra_plain() -> None:
    assert mpirun_argv(launch(MpiFlavor.MPICH)) == [
        "mpiexec", "-launcher", "ssh", "-launcher-exec", WRAPPER,
        "-hosts", "sim1:2,sim2:2,sim3:1", "-n", "5",
        "./solver", "in.cfg",
    ]  # fmt: skip


def test_hydra_everything() -> None:
    full = launch(
        MpiFlavor.MPICH,
        hosts=(NodeSlots("sim1", 4),),
        network=NET,
        env_set=(("OMP_NUM_THREADS", "2"), ("MSG", "a b=c")),
        env_forward=("LD_LIBRARY_PATH", "CASE"),
        extra_args=("-bind-to", "core"),
    )
    assert mpirun_argv(full) == [
        "mpiexec", "-launcher", "ssh", "-launcher-exec", WRAPPER,
        "-hosts", "sim1:4", "-n", "4",
        "-iface", "eth0", "-genv", "UCX_NET_DEVICES", "eth0",
        "-genv", "OMP_NUM_THREADS", "2", "-genv", "MSG", "a b=c",
        "-genvlist", "LD_LIBRARY_PATH,CASE",
        "-bind-to", "core",
        "./solver", "in.cfg",
    ]  # fmt: skip


def test_openmpi5_takes_prrte_names() -> None:
    full = launch(
        MpiFlavor.OPENMPI, version="5.0.11", network=NET, env_set=(("OMP_NUM_THREADS", "2"),),
        env_forward=("CASE",),
    )  # fmt: skip
    assert mpirun_argv(full) == [
        "mpirun", "--np", "5", "--host", "sim1:2,sim2:2,sim3:1",
        "--prtemca", "plm_ssh_agent", WRAPPER,
        "--prtemca", "plm_ssh_no_tree_spawn", "1",
        "--mca", "btl_tcp_if_include", "10.213.0.0/24",
        "--prtemca", "oob_tcp_if_include", "10.213.0.0/24",
        "-x", "OMP_NUM_THREADS=2", "-x", "CASE",
        "./solver", "in.cfg",
    ]  # fmt: skip


@pytest.mark.parametrize("version", ["", "4.1.4"])
def test_openmpi_of_unknown_or_4_takes_orte_names(version: str) -> None:
    argv = mpirun_argv(launch(MpiFlavor.OPENMPI, version=version, network=NET))
    assert argv == mpirun_argv(launch(MpiFlavor.OPENMPI, network=NET))
    assert "--prtemca" not in argv
    assert argv[5:7] == ["--mca", "plm_rsh_agent"]


def test_mpich5_is_launched_as_mpich4() -> None:
    four = launch(MpiFlavor.MPICH, network=NET, version="4.0.2")
    assert mpirun_argv(replace(four, version="5.0.2")) == mpirun_argv(four)


def test_intel_everything() -> None:
    full = launch(
        MpiFlavor.INTEL, version="2021.10", network=NET, env_set=(("OMP_NUM_THREADS", "2"),),
        env_forward=("CASE",), extra_args=("-l",),
    )  # fmt: skip
    assert mpirun_argv(full) == [
        "mpiexec", "-bootstrap", "ssh", "-bootstrap-exec", WRAPPER,
        "-hosts", "sim1,sim1,sim2,sim2,sim3", "-ppn", "1", "-n", "5",
        "-iface", "eth0",
        "-genv", "I_MPI_FABRICS", "shm:ofi",
        "-genv", "FI_PROVIDER", "tcp",
        "-genv", "FI_TCP_IFACE", "eth0",
        "-genv", "OMP_NUM_THREADS", "2",
        "-genvlist", "CASE",
        "-l",
        "./solver", "in.cfg",
    ]  # fmt: skip


def test_intel_without_a_network_leaves_the_fabric_to_intel_mpi() -> None:
    assert mpirun_argv(launch(MpiFlavor.INTEL)) == [
        "mpiexec", "-bootstrap", "ssh", "-bootstrap-exec", WRAPPER,
        "-hosts", "sim1,sim1,sim2,sim2,sim3", "-ppn", "1", "-n", "5",
        "./solver", "in.cfg",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("slots", "hosts", "ppn"),
    [
        ((2, 2, 2), "sim1,sim2,sim3", "2"),  # even: each node named once
        ((1, 1, 1), "sim1,sim2,sim3", "1"),
        ((4, 2, 6), "sim1,sim1,sim2,sim3,sim3,sim3", "2"),  # uneven: by their divisor
        ((3, 1), "sim1,sim1,sim1,sim2", "1"),
        ((8,), "sim1", "8"),
    ],
)
def test_intel_places_every_nodes_slots(slots: tuple[int, ...], hosts: str, ppn: str) -> None:
    # Intel's -hosts takes no `node:N` counts: -ppn ranks go to each name, and a node
    # named again in a row gets them in the same proxy.
    nodes = tuple(NodeSlots(f"sim{i + 1}", n) for i, n in enumerate(slots))
    argv = mpirun_argv(launch(MpiFlavor.INTEL, hosts=nodes))
    at = argv.index("-hosts")
    assert argv[at : at + 6] == ["-hosts", hosts, "-ppn", ppn, "-n", str(sum(slots))]
    assert ":" not in hosts


def test_intel_takes_the_interface_never_docker0_of_its_own_choice() -> None:
    argv = mpirun_argv(launch(MpiFlavor.INTEL, network=Network("ib0", "10.1.0.0/16")))
    assert argv[argv.index("-iface") + 1] == "ib0"
    assert argv[argv.index("FI_TCP_IFACE") + 1] == "ib0"
    assert "docker0" not in argv


# --- a job script's own mpirun ------------------------------------------------------------

HOSTFILE = "/shared/mpidock/jobs/42/hostfile"


def test_script_env_openmpi4() -> None:
    env = script_env(launch(MpiFlavor.OPENMPI, version="4.1.4", network=NET), HOSTFILE)
    assert env == [
        ("OMPI_MCA_orte_default_hostfile", HOSTFILE),
        ("OMPI_MCA_plm_rsh_agent", WRAPPER),
        ("OMPI_MCA_plm_rsh_no_tree_spawn", "1"),
        ("OMPI_MCA_oob_tcp_if_include", "10.213.0.0/24"),
        ("OMPI_MCA_btl_tcp_if_include", "10.213.0.0/24"),
    ]


def test_script_env_openmpi5() -> None:
    five = launch(
        MpiFlavor.OPENMPI, version="5.0.11", network=NET, env_forward=("A", "B"),
        env_set=(("X", "1"),),
    )  # fmt: skip
    assert script_env(five, HOSTFILE) == [
        ("PRTE_MCA_prte_default_hostfile", HOSTFILE),
        ("PRTE_MCA_plm_ssh_agent", WRAPPER),
        ("PRTE_MCA_plm_ssh_no_tree_spawn", "1"),
        ("PRTE_MCA_oob_tcp_if_include", "10.213.0.0/24"),
        ("OMPI_MCA_btl_tcp_if_include", "10.213.0.0/24"),
        ("OMPI_MCA_mca_base_env_list", "A;B"),
        ("X", "1"),
    ]


def test_script_env_openmpi_of_unknown_version_has_both_names() -> None:
    env = dict(script_env(launch(MpiFlavor.OPENMPI), HOSTFILE))
    assert env["OMPI_MCA_orte_default_hostfile"] == env["PRTE_MCA_prte_default_hostfile"]
    assert env["OMPI_MCA_plm_rsh_agent"] == env["PRTE_MCA_plm_ssh_agent"] == WRAPPER


def test_script_env_mpich() -> None:
    assert script_env(launch(MpiFlavor.MPICH, network=NET), HOSTFILE) == [
        ("HYDRA_HOST_FILE", HOSTFILE),
        ("HYDRA_LAUNCHER", "ssh"),
        ("HYDRA_LAUNCHER_EXEC", WRAPPER),
        ("HYDRA_IFACE", "eth0"),
        ("UCX_NET_DEVICES", "eth0"),
    ]


def test_script_env_intel() -> None:
    # Uneven slots: Intel's host file ignores the counts, so no I_MPI_PERHOST either (the
    # script passes -machinefile "$I_MPI_HYDRA_HOST_FILE" for them).
    assert script_env(launch(MpiFlavor.INTEL, network=NET), HOSTFILE) == [
        ("I_MPI_HYDRA_HOST_FILE", HOSTFILE),
        ("I_MPI_HYDRA_BOOTSTRAP", "ssh"),
        ("I_MPI_HYDRA_BOOTSTRAP_EXEC", WRAPPER),
        ("I_MPI_HYDRA_IFACE", "eth0"),
        ("I_MPI_FABRICS", "shm:ofi"),
        ("FI_PROVIDER", "tcp"),
        ("FI_TCP_IFACE", "eth0"),
    ]


def test_script_env_intel_even_slots_per_host() -> None:
    even = (NodeSlots("sim1", 2), NodeSlots("sim2", 2))
    env = script_env(launch(MpiFlavor.INTEL, hosts=even, env_set=(("X", "1"),)), HOSTFILE)
    assert env == [
        ("I_MPI_HYDRA_HOST_FILE", HOSTFILE),
        ("I_MPI_HYDRA_BOOTSTRAP", "ssh"),
        ("I_MPI_HYDRA_BOOTSTRAP_EXEC", WRAPPER),
        ("I_MPI_PERHOST", "2"),
        ("X", "1"),
    ]


@pytest.mark.parametrize(
    ("flavor", "text"),
    [
        (MpiFlavor.OPENMPI, "sim1 slots=2\nsim2 slots=2\nsim3 slots=1\n"),
        (MpiFlavor.MPICH, "sim1:2\nsim2:2\nsim3:1\n"),
        (MpiFlavor.INTEL, "sim1:2\nsim2:2\nsim3:1\n"),
    ],
)
def test_hostfile_text(flavor: MpiFlavor, text: str) -> None:
    assert hostfile_text(flavor, HOSTS) == text


def test_hydra_takes_a_wrapper_path_with_spaces() -> None:
    argv = mpirun_argv(launch(MpiFlavor.MPICH, ssh_agent="/my jobs/42/ssh"))
    assert argv[4] == "/my jobs/42/ssh"


def test_command_is_never_shell_text() -> None:
    argv = mpirun_argv(launch(MpiFlavor.OPENMPI, command=("sh", "-c", "echo $HOME; rm -rf /x")))
    assert argv[-3:] == ["sh", "-c", "echo $HOME; rm -rf /x"]


def test_display_quotes_for_logs() -> None:
    assert display(["mpirun", "-x", "MSG=a b", "./it's"]) == "mpirun -x 'MSG=a b' './it'\"'\"'s'"


@pytest.mark.parametrize("flavor", list(MpiFlavor))
@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"command": ()}, "no command"),
        ({"hosts": ()}, "at least one slot"),
        ({"hosts": (NodeSlots("sim1", 0),)}, "at least one slot"),
        ({"env_forward": ("BAD-NAME",)}, "BAD-NAME"),
        ({"env_forward": ("A,B",)}, "A,B"),
        ({"env_set": (("1X", "v"),)}, "1X"),
        ({"env_set": (("X", "v"),), "env_forward": ("X",)}, "both set and forwarded: X"),
    ],
)
def test_bad_launches(flavor: MpiFlavor, changes: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        mpirun_argv(launch(flavor, **changes))


def test_openmpi_rejects_a_wrapper_path_with_spaces() -> None:
    with pytest.raises(UsageError, match="white space"):
        mpirun_argv(launch(MpiFlavor.OPENMPI, ssh_agent="/my jobs/42/ssh"))


@pytest.mark.parametrize(
    ("device", "cidr"),
    [("", "10.0.0.0/8"), ("eth 0", "10.0.0.0/8"), ("eth0", "10.0.0/33"), ("eth0", "")],
)
def test_bad_network(device: str, cidr: str) -> None:
    with pytest.raises(UsageError):
        Network(device, cidr)


# --- forwarded variables --------------------------------------------------------------------


def test_forwarded_values_are_the_steps_own() -> None:
    environ = {"FOO": "two words; $x", "EMPTY": "", "OTHER": "no"}
    assert forwarded_values(("FOO", "EMPTY", "FOO"), environ) == (
        ("FOO", "two words; $x"),
        ("EMPTY", ""),
    )


def test_forwarding_an_unset_variable_is_named() -> None:
    with pytest.raises(UsageError, match=r"-x FOO: FOO is not set") as caught:
        forwarded_values(("FOO",), {})
    assert "export FOO=VALUE" in caught.value.hint


def test_forwarding_a_bad_name_is_named() -> None:
    with pytest.raises(UsageError, match="bad environment variable name 'A,B'"):
        forwarded_values(("A,B",), {"A,B": "x"})
