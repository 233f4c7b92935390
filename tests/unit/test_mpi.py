"""Whole mpirun argv lists for Open MPI and Hydra, compared by equality."""

from __future__ import annotations

from dataclasses import replace

import pytest

from launcher.errors import ImageError, UsageError
from launcher.mpi import (
    MpiFlavor,
    MpiLaunch,
    Network,
    detect_flavor,
    display,
    forwarded_values,
    mpirun_argv,
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


@pytest.mark.parametrize(
    ("text", "flavor"),
    [
        (
            "mpirun (Open MPI) 4.1.4\n\nReport bugs to http://www.open-mpi.org/community/help/\n",
            "openmpi",
        ),
        ("mpirun (Open MPI) 5.0.3\n", "openmpi"),
        ("mpirun (OpenRTE) 1.10.7\n", "openmpi"),
        (
            "HYDRA build details:\n    Version:                                 4.0.2\n"
            "    Release Date:                            Thu Apr  2 12:59:19 CDT 2022\n",
            "mpich",
        ),
        (
            "Intel(R) MPI Library for Linux* OS, Version 2021.10 Build 20230619 (id: c2e19c2f3e)\n",
            "mpich",
        ),
    ],
)
def test_detect_flavor(text: str, flavor: str) -> None:
    assert detect_flavor(text) == MpiFlavor(flavor)


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
