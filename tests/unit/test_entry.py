"""`mpidock slurm-entry`: argument errors and --dry-run, inside a faked Slurm step."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from launcher import containers, devices, entry, images, leader, network, worker
from launcher.cli import main
from launcher.devices import DeviceFile, NodeDevices
from launcher.identity import current_identity
from launcher.mpi import Network
from launcher.signals import Inbox
from tests.unit.samples import NET, STEP, WORKER

USER = current_identity().user


class Step:
    """The Slurm variables of this process, the interfaces MPI was offered, and the node's
    device files (none, whatever the machine running the tests has)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.chosen: list[tuple[list[str], str | None]] = []
        self.devices = NodeDevices()
        self.probed: list[Path] = []

    def set(self, **changes: str) -> None:
        for name in list(os.environ):
            if name.startswith(("SLURM_", "SLURMD_")):
                self.monkeypatch.delenv(name)
        for name, value in {**STEP, **changes}.items():
            self.monkeypatch.setenv(name, value)

    def choose(self, peers: list[str], iface: str | None) -> Network | None:
        self.chosen.append((list(peers), iface))
        return NET if peers or iface else None

    def probe(self, root: Path) -> NodeDevices:
        self.probed.append(root)
        return self.devices


def started(*_: object, **__: object) -> Any:
    raise AssertionError("a dry run must not start anything")


@pytest.fixture
def step(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Step:
    """Task 0 of a three-node step, with every way of starting something booby-trapped."""
    fake = Step(monkeypatch)
    fake.set()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(network, "choose", fake.choose)
    monkeypatch.setattr(devices, "probe", fake.probe)
    for module, name in [
        (containers, "client_for_node"),
        (containers, "start"),
        (images, "ensure_personal"),
        (leader, "create_job"),
        (worker, "run_worker"),
        (Inbox, "install"),
        (entry, "write_json"),
    ]:
        monkeypatch.setattr(module, name, started)
    return fake


def slurm_entry(*args: str) -> int:
    return main(["slurm-entry", "--image", "solver:1", *args])


def dry_run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert slurm_entry("--dry-run", "--json", *args, "--", "./solver", "in.cfg") == 0
    out, err = capsys.readouterr()
    assert err == ""
    data: dict[str, Any] = json.loads(out)
    return data


# --- --dry-run ------------------------------------------------------------------------------


def test_dry_run_json_of_the_leader(
    step: Step, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plan = dry_run_json(capsys)
    assert plan["role"] == "leader"
    assert plan["node"] == "sim1"
    assert plan["nodes"] == [
        {"node": "sim1", "slots": 4},
        {"node": "sim2", "slots": 4},
        {"node": "sim3", "slots": 2},
    ]
    assert plan["workers"] == ["sim2", "sim3"]
    assert 20000 <= plan["port"] <= 29999
    assert plan["network"] == {"device": "eth0", "cidr": "10.213.0.0/24"}
    assert step.chosen == [(["sim2", "sim3"], None)]
    # Without --mpi the flavour is only known at launch; the plan says what it assumed.
    assert plan["flavor"].startswith("auto")
    assert plan["mpirun"][:5] == ["mpirun", "--np", "10", "--host", "sim1:4,sim2:4,sim3:2"]
    assert plan["mpirun"][-2:] == ["./solver", "in.cfg"]
    container = plan["container"]
    assert container["command"] == plan["mpirun"]
    assert container["user"] == f"{os.getuid()}:{os.getgid()}"
    assert container["working_dir"] == str(tmp_path)
    assert [str(tmp_path), str(tmp_path)] in container["mounts"]
    assert container["cap_drop"] == ["ALL"]
    assert container["network_mode"] == "host"


def test_dry_run_json_of_a_worker(step: Step, capsys: pytest.CaptureFixture[str]) -> None:
    step.set(**WORKER)
    plan = dry_run_json(capsys)
    assert (plan["role"], plan["node"], plan["mpirun"]) == ("worker", "sim2", [])
    assert plan["container"]["command"][0] == "/usr/sbin/sshd"
    assert plan["network"] is None
    assert step.chosen == []


def test_dry_run_of_an_idle_task(step: Step, capsys: pytest.CaptureFixture[str]) -> None:
    step.set(SLURM_PROCID="2", SLURM_LOCALID="1")
    plan = dry_run_json(capsys)
    assert (plan["role"], plan["container"]) == ("idle", None)


def test_dry_run_options_reach_the_plan(
    step: Step, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    plan = dry_run_json(
        capsys, "--mpi", "mpich", "--np", "5", "--port", "2222", "--iface", "eth0",
        "--job-root", "/shared/jobs", "-x", "OMP_NUM_THREADS", "--mpi-arg=-bind-to",
        "--mpi-arg", "core",
    )  # fmt: skip
    assert plan["flavor"] == "mpich"
    assert plan["port"] == 2222
    assert plan["job_dir"] == f"/shared/jobs/{USER}/42.0"
    assert step.chosen == [(["sim2", "sim3"], "eth0")]
    assert plan["mpirun"] == [
        "mpiexec", "-launcher", "ssh", "-launcher-exec", f"/shared/jobs/{USER}/42.0/ssh",
        "-hosts", "sim1:4,sim2:1", "-n", "5",
        "-iface", "eth0", "-genv", "UCX_NET_DEVICES", "eth0",
        "-genvlist", "OMP_NUM_THREADS",
        "-bind-to", "core",
        "./solver", "in.cfg",
    ]  # fmt: skip
    assert ["OMP_NUM_THREADS", "3"] in plan["container"]["environment"]


def test_dry_run_shows_the_nodes_devices(
    step: Step, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    step.devices = NodeDevices(infiniband=(DeviceFile("/dev/infiniband/uverbs0", 0),))
    monkeypatch.setenv("UCX_TLS", "rc,sm,self")
    plan = dry_run_json(capsys)
    assert step.probed == [Path("/")]
    container = plan["container"]
    assert container["devices"] == ["/dev/infiniband/uverbs0:/dev/infiniband/uverbs0:rwm"]
    assert container["ulimits"] == [["memlock", -1, -1]]
    assert container["cap_add"] == ["SYS_PTRACE", "IPC_LOCK"]
    assert container["gpu_ids"] == []
    assert ["UCX_TLS", "rc,sm,self"] in container["environment"]
    assert plan["mpirun"][plan["mpirun"].index("-x") + 1] == "UCX_TLS"
    assert plan["devices"].startswith("InfiniBand: 1 devices, memlock unlimited")


def test_dry_run_of_a_node_without_devices(step: Step, capsys: pytest.CaptureFixture[str]) -> None:
    container = dry_run_json(capsys)["container"]
    assert (container["devices"], container["gpu_ids"], container["ulimits"]) == ([], [], [])
    assert container["cap_add"] == ["SYS_PTRACE"]


def test_dry_run_text(step: Step, capsys: pytest.CaptureFixture[str]) -> None:
    assert slurm_entry("--dry-run", "--ppn", "1", "--", "./solver", "a b") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "role: leader on sim1 (job 42)"
    assert lines[1] == "nodes: sim1:1, sim2:1, sim3:1"
    assert lines[3].startswith("devices: no GPUs, no InfiniBand; shared memory: ")
    assert lines[-1].startswith("mpirun: mpirun --np 3 --host sim1:1,sim2:1,sim3:1 ")
    assert lines[-1].endswith(" ./solver 'a b'")


def test_command_without_the_separator(step: Step, capsys: pytest.CaptureFixture[str]) -> None:
    assert slurm_entry("--dry-run", "--json", "./solver", "--np", "3") == 0
    plan = json.loads(capsys.readouterr().out)
    # Everything after the program is the program's.
    assert plan["mpirun"][-3:] == ["./solver", "--np", "3"]
    assert plan["mpirun"][2] == "10"


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--np", "0"], "--np must be at least 1, got 0"),
        (["--ppn", "0"], "--ppn must be at least 1, got 0"),
        (["--np", "11"], "--np 11 exceeds the 10 slots of the allocation"),
        (["--port-range", "100-200"], "option --port-range: bad port range 100-200"),
        (["--port-range", "30000-20000"], "option --port-range: bad port range 30000-20000"),
        (["--port", "80"], "bad port 80"),
        (["--port", "0"], "bad port 0"),
    ],
)
def test_bad_values(
    step: Step, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert slurm_entry("--dry-run", *args, "--", "./solver") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"mpidock: error: {message}")
    assert err.count("\n") == 1


@pytest.mark.parametrize("args", [[], ["--"], ["--dry-run"], ["--dry-run", "--"]])
def test_missing_command(step: Step, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    assert slurm_entry(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mpidock: error: no command to run")
    assert "--" in err.split("hint:")[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port-range", "20000"], "expected LOW-HIGH"),
        (["--port-range", "a-b"], "expected LOW-HIGH"),
        (["--np", "two"], "invalid int value: 'two'"),
        (["--mpi", "lam"], "invalid choice: 'lam'"),
    ],
)
def test_malformed_arguments(
    step: Step, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        slurm_entry("--dry-run", *args, "--", "./solver")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("mpidock: error: ")
    assert err.endswith("(hint: see mpidock slurm-entry --help)\n")
    assert err.count("\n") == 1


def test_bad_mpi_lists_the_valid_ones(step: Step, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        slurm_entry("--mpi", "lam", "--", "./solver")
    err = capsys.readouterr().err
    assert all(name in err for name in ("auto", "openmpi", "mpich"))


def test_outside_a_slurm_step(
    step: Step, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in STEP:
        monkeypatch.delenv(name)
    assert slurm_entry("--dry-run", "--", "./solver") == 2
    err = capsys.readouterr().err
    assert err.startswith("mpidock: error: not inside a Slurm step")
    assert "hint: run it inside an allocation" in err
