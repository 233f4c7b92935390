"""The direct launch (--launch pmix): the task's environment to what its rank gets, Slurm's
configuration to the step's PMIx directories, whole plans, and the node's meeting place
(its FIFO really ends a reader when the last task goes, SIGKILL included)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import cli, config
from launcher.devices import DevicePlan
from launcher.direct.node import NodeShare
from launcher.direct.plan import (
    IDLE_SCRIPT,
    DirectPlan,
    PmixDirs,
    build,
    client_dir_candidates,
    conf_value,
    describe,
    local_tasks,
    network_env,
    node_container,
    pmi_share_dir,
    rank_environment,
    require_pmix,
    require_server,
    share_dir,
    tmp_fs,
)
from launcher.direct.pmi import Relay, handshake
from launcher.errors import NodeFailed, UsageError
from launcher.limits import Limits
from launcher.plan import LABEL_PREFIX, ContainerSpec, Options
from launcher.slurm import SlurmEnv
from tests.unit.samples import ALICE, NET, STEP

# Task 3 of `srun --mpi=pmix -N3 --ntasks-per-node=2` on sim[1-3]: local task 1 of sim2.
PMIX = {
    "PMIX_RANK": "3",
    "PMIX_NAMESPACE": "slurm.pmix.42.0",
    "PMIX_SERVER_URI41": "pmix-server.77;tcp4://127.0.0.1:40000",
    "PMIX_SERVER_TMPDIR": "/var/spool/slurmd/pmix.42.0/",
    "PMIX_SECURITY_MODE": "munge,native",
    "PMIX_GDS_MODULE": "ds21,ds12,hash",
    "SLURM_MPI_TYPE": "pmix",
}
TASK = {
    **STEP, **PMIX, "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
    "SLURMD_NODENAME": "sim2", "SLURM_NTASKS": "6", "SLURM_STEP_TASKS_PER_NODE": "2(x3)",
    "PATH": "/usr/bin", "HOME": "/home/alice", "PMI_FD": "7", "OMPI_MCA_pml": "ob1",
}  # fmt: skip
DIRS = PmixDirs(server="/var/spool/slurmd/pmix.42.0", client="/tmp/spmix_appdir_1000_42.0")
OPTS = Options(image="solver:1", command=("./solver", "in.cfg"), env_values=(("OMP", "4"),))
CWD = "/home/alice/case"
SHARE = f"{DIRS.client}/mpidock.sim2"


def task(**changes: str) -> tuple[SlurmEnv, dict[str, str]]:
    environ = {**TASK, **changes}
    return SlurmEnv.from_environ(environ), environ


# --- PMIx present, its directories -----------------------------------------------------------


def test_a_task_without_slurms_pmix_server_is_one_line_saying_what_to_run() -> None:
    without = {k: v for k, v in TASK.items() if not k.startswith("PMIX_")} | {
        "SLURM_MPI_TYPE": "none"
    }
    with pytest.raises(UsageError) as caught:
        require_pmix(without, "sim2")
    said = str(caught.value)
    assert said.startswith("sim2: --launch pmix needs Slurm's PMIx server")
    assert "SLURM_MPI_TYPE=none" in said
    assert "srun --mpi=pmix" in caught.value.hint
    assert "\n" not in said
    require_pmix(TASK, "sim2")  # a step of srun --mpi=pmix passes


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("TmpFS=/scratch/%n\n", "/scratch/%n"),
        ("# TmpFS=/nope\ntmpfs = /local/tmp  # node-local\n", "/local/tmp"),
        ("TmpFS=/a\nSlurmdSpoolDir=/s\nTMPFS=/b\n", "/b"),  # the last one, any case
        ("SlurmdSpoolDir=/s\n", ""),
    ],
)
def test_conf_values_are_read_as_slurm_reads_them(text: str, value: str) -> None:
    assert conf_value(text, "TmpFS") == value


@pytest.mark.parametrize(
    ("environ", "slurm_conf", "mpi_conf", "base"),
    [
        ({}, "", "", "/tmp"),
        ({}, "TmpFS=/var/lib/tb/%n/tmp/\n", "", "/var/lib/tb/sim2/tmp"),
        ({}, "TmpFS=/local\n", "PMIxCliTmpDirBase=/pmix\n", "/pmix"),
        ({"SLURM_PMIX_TMPDIR": "/mine"}, "TmpFS=/local\n", "PMIxCliTmpDirBase=/p\n", "/mine"),
    ],
)
def test_the_client_directory_is_found_where_slurmstepd_makes_it(
    environ: dict[str, str], slurm_conf: str, mpi_conf: str, base: str
) -> None:
    env = {"SLURM_JOB_ID": "42", "SLURM_STEP_ID": "0", **environ}
    assert client_dir_candidates(env, "sim2", 1000, slurm_conf, mpi_conf) == (
        f"{base}/spmix_appdir_1000_42.0",
        f"{base}/spmix_appdir_42.0",
    )


# --- what a rank gets --------------------------------------------------------------------------


def test_a_rank_gets_the_tasks_pmix_pmi_slurm_and_open_mpi_variables_only() -> None:
    env = dict(rank_environment(TASK, (("OMP", "4"),)))
    assert env["PMIX_RANK"] == "3"
    assert env["PMIX_SERVER_TMPDIR"] == "/var/spool/slurmd/pmix.42.0/"
    assert (env["PMI_FD"], env["OMPI_MCA_pml"], env["SLURM_PROCID"]) == ("7", "ob1", "3")
    assert "PATH" not in env
    assert "HOME" not in env
    # The MCA names of PMIx's module choices, for a client library reading only those.
    assert (env["PMIX_MCA_psec"], env["PMIX_MCA_gds"]) == ("munge,native", "ds21,ds12,hash")
    assert "PMIX_MCA_ptl" not in env
    assert env["OMP"] == "4"


def test_an_mca_choice_the_user_made_is_kept() -> None:
    env = dict(rank_environment({**TASK, "PMIX_MCA_psec": "native"}))
    assert env["PMIX_MCA_psec"] == "native"


def test_the_network_keeps_mpi_off_loopback_and_the_docker_bridge() -> None:
    assert network_env(NET) == (
        ("OMPI_MCA_btl_tcp_if_include", "10.213.0.0/24"),
        ("UCX_NET_DEVICES", "eth0"),
    )
    assert network_env(None) == ()


@pytest.mark.parametrize(
    ("counts", "nodeid", "localid", "expected"),
    [("2(x3)", "1", "1", 2), ("3,1", "0", "2", 3), ("3,1", "1", "0", 1)],
)
def test_the_nodes_task_count_comes_from_the_steps_counts(
    counts: str, nodeid: str, localid: str, expected: int
) -> None:
    env, environ = task(
        SLURM_STEP_TASKS_PER_NODE=counts, SLURM_NODEID=nodeid, SLURM_LOCALID=localid
    )
    assert local_tasks(env, environ) == expected


def test_counts_that_do_not_cover_the_task_are_refused() -> None:
    env, environ = task(SLURM_STEP_TASKS_PER_NODE="1(x3)")
    with pytest.raises(UsageError, match="do not cover task 1 of node 1"):
        local_tasks(env, environ)


# --- whole plans ---------------------------------------------------------------------------


def spec_for(env: SlurmEnv, opts: Options = OPTS) -> ContainerSpec:
    return node_container(
        env, opts, ALICE, cwd=CWD, binds=(DIRS.server, DIRS.client), share_dir=SHARE,
        network=NET, devices=DevicePlan(), limits=Limits(cpuset_cpus="2-3", pids_limit=4096),
    )  # fmt: skip


def test_a_joining_tasks_plan() -> None:
    env, environ = task()
    plan = build(env, OPTS, ALICE, environ, cwd=CWD, pmix=DIRS, share=SHARE, container=None)
    assert plan == DirectPlan(
        job_id="42", step_id="0", node="sim2", procid=3, localid=1, local_tasks=2,
        name="mpidock-42.0-direct-sim2", starts=False, container=None,
        command=("./solver", "in.cfg"), rank_env=rank_environment(environ, (("OMP", "4"),)),
        pmix=DIRS, share_dir="/tmp/spmix_appdir_1000_42.0/mpidock.sim2", image="solver:1",
        image_store="/home/alice/.mpidock/images", registry="",
    )  # fmt: skip
    assert plan.fifo == "/tmp/spmix_appdir_1000_42.0/mpidock.sim2/alive"
    assert describe(plan)[1] == "container: mpidock-42.0-direct-sim2"


def test_the_nodes_first_task_plans_the_shared_container() -> None:
    env, environ = task(SLURM_LOCALID="0", SLURM_PROCID="2")
    spec = spec_for(env)
    plan = build(env, OPTS, ALICE, environ, cwd=CWD, pmix=DIRS, share=SHARE, container=spec)
    assert plan.starts
    assert plan.container is spec
    c = plan.container
    assert c.name == plan.name
    assert c.command == ("/bin/sh", "-c", IDLE_SCRIPT, "mpidock-idle", plan.fifo, SHARE)
    assert (c.user, c.network_mode, c.init) == ("1000:1000", "host", True)
    assert c.group_add == (998, 2000)
    # Home (the working directory is under it) and the PMIx directories at their paths.
    assert c.mounts == (
        ("/home/alice", "/home/alice"),
        ("/var/spool/slurmd/pmix.42.0", "/var/spool/slurmd/pmix.42.0"),
        ("/tmp/spmix_appdir_1000_42.0", "/tmp/spmix_appdir_1000_42.0"),
    )
    assert dict(c.labels)[f"{LABEL_PREFIX}.role"] == "direct"
    assert dict(c.labels)[f"{LABEL_PREFIX}.step"] == "0"
    assert dict(c.environment)["OMPI_MCA_btl_tcp_if_include"] == "10.213.0.0/24"
    assert (c.cpuset_cpus, c.pids_limit, c.cap_drop) == ("2-3", 4096, ("ALL",))
    assert "PMIX_RANK" not in dict(c.environment)  # per rank, at its exec


def test_a_joining_task_never_holds_a_container_to_start() -> None:
    env, environ = task()
    plan = build(
        env, OPTS, ALICE, environ, cwd=CWD, pmix=DIRS, share=SHARE, container=spec_for(env)
    )
    assert (plan.starts, plan.container) == (False, None)


def test_a_job_script_or_no_command_is_refused() -> None:
    env, environ = task()
    for opts, said in (
        (Options(image="i", command=("/bin/sh", "job.sh"), script="job.sh"), "--script"),
        (Options(image="i", command=()), "no command"),
    ):
        with pytest.raises(UsageError, match=said):
            build(env, opts, ALICE, environ, cwd=CWD, pmix=DIRS, share=SHARE)


# --- configuration and options ---------------------------------------------------------------


def test_the_launch_mode_comes_from_the_environment_or_the_option() -> None:
    home = "/home/alice"
    none = {"MPIDOCK_SITE_CONFIG": "/nonexistent", "MPIDOCK_USER_CONFIG": "/nonexistent"}
    assert config.load(none, {}, home).launch == "ssh"
    assert config.load({**none, "MPIDOCK_LAUNCH": "pmix"}, {}, home).launch == "pmix"
    cfg = config.load({**none, "MPIDOCK_LAUNCH": "pmix"}, {"launch": "ssh"}, home)
    assert (cfg.launch, cfg.sources["launch"]) == ("ssh", "option --launch")
    with pytest.raises(config.ConfigError, match="env MPIDOCK_LAUNCH") as caught:
        config.load({**none, "MPIDOCK_LAUNCH": "rsh"}, {}, home)
    assert "one of: ssh, pmix" in caught.value.hint


def test_slurm_entry_takes_launch_and_refuses_another_mode(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = cli.parse(["slurm-entry", "--launch", "pmix", "--image", "i", "--", "app"])
    assert args.launch == "pmix"
    with pytest.raises(SystemExit):
        cli.parse(["slurm-entry", "--launch", "rsh", "--image", "i", "--", "app"])
    assert "invalid choice: 'rsh'" in capsys.readouterr().err


# --- the node's meeting place (real files, a real FIFO) -------------------------------------


def share_plan(tmp_path: Path, localid: int, tasks: int = 2) -> DirectPlan:
    env, environ = task(SLURM_LOCALID=str(localid))
    client = tmp_path / "spmix"
    client.mkdir(mode=0o700, exist_ok=True)
    dirs = PmixDirs(server=str(tmp_path), client=str(client))
    plan = build(env, OPTS, ALICE, environ, cwd=CWD, pmix=dirs, share=share_dir(dirs, "sim2"))
    return DirectPlan(**{**plan.__dict__, "local_tasks": tasks})


def idle_reader(plan: DirectPlan) -> subprocess.Popen[bytes]:
    """The container's PID 1 script, run here: it must end when no task holds the FIFO."""
    idle = ["/bin/sh", "-c", IDLE_SCRIPT, "mpidock-idle", plan.fifo, plan.share_dir]
    return subprocess.Popen(idle)


def test_the_last_task_to_leave_is_told_so(tmp_path: Path) -> None:
    first, second = NodeShare(share_plan(tmp_path, 0)), NodeShare(share_plan(tmp_path, 1))
    first.join()
    second.join()
    assert first.leave(stopping=False) is False
    assert second.leave(stopping=False) is True
    first.close()
    second.close()


def test_a_task_leaving_before_the_others_joined_is_not_the_last(tmp_path: Path) -> None:
    share = NodeShare(share_plan(tmp_path, 0))
    share.join()
    assert share.leave(stopping=True) is False  # its sibling never came: the FIFO decides
    share.close()


def test_the_idle_pid1_ends_when_the_last_holder_closes(tmp_path: Path) -> None:
    shares = [NodeShare(share_plan(tmp_path, i)) for i in range(2)]
    for share in shares:
        share.join()
    plan = shares[0].plan
    reader = idle_reader(plan)
    try:
        shares[0].close()
        with pytest.raises(subprocess.TimeoutExpired):
            reader.wait(timeout=0.5)  # one task still holds it
        shares[1].close()
        assert reader.wait(timeout=5) == 0
        assert not os.path.exists(plan.share_dir)  # PID 1 took the meeting place with it
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()


def test_the_idle_pid1_ends_when_the_last_holder_is_sigkilled(tmp_path: Path) -> None:
    plan = share_plan(tmp_path, 0, tasks=1)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, plan.fifo, plan.share_dir], stdout=subprocess.PIPE
    )
    reader = None
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"held\n"
        reader = idle_reader(plan)
        with pytest.raises(subprocess.TimeoutExpired):
            reader.wait(timeout=0.5)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert reader.wait(timeout=5) == 0
        assert not os.path.exists(plan.share_dir)  # PID 1 took the meeting place with it
    finally:
        for process in (holder, reader):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


_HOLD = """
import os, sys, time
os.makedirs(sys.argv[2], mode=0o700, exist_ok=True)
if not os.path.exists(sys.argv[1]):
    os.mkfifo(sys.argv[1], 0o600)
fd = os.open(sys.argv[1], os.O_RDWR | os.O_NONBLOCK)
print("held", flush=True)
time.sleep(60)
"""


def test_a_meeting_place_open_to_others_is_refused(tmp_path: Path) -> None:
    plan = share_plan(tmp_path, 0)
    os.mkdir(plan.share_dir, 0o700)
    os.chmod(plan.share_dir, 0o777)
    with pytest.raises(NodeFailed, match="cannot join the node's container"):
        NodeShare(plan).join()


# --- pmi2: Slurm's PMI server through the task's relay ---------------------------------------

PMI2 = {"SLURM_MPI_TYPE": "pmi2", "PMI_FD": "11", "PMI_JOBID": "42.0", "PMI_RANK": "3"}


def test_a_pmi2_task_needs_slurms_pmi_fd() -> None:
    plain = {k: v for k, v in TASK.items() if not k.startswith(("PMIX_", "PMI_"))}
    with pytest.raises(UsageError, match=r"--launch pmi2 needs Slurm's PMI-2 server") as caught:
        require_server("pmi2", {**plain, "SLURM_MPI_TYPE": "none"}, "sim2")
    assert "srun --mpi=pmi2" in caught.value.hint
    require_server("pmi2", {**plain, **PMI2}, "sim2")


def test_a_pmi2_rank_gets_no_pmi_fd_and_meets_in_the_nodes_tmpfs() -> None:
    plain = {k: v for k, v in TASK.items() if not k.startswith("PMIX_")}
    env, environ = SlurmEnv.from_environ({**plain, **PMI2}), {**plain, **PMI2}
    tmp = tmp_fs("sim2", "TmpFS=/var/lib/tb/%n/tmp\n")
    assert (tmp, tmp_fs("sim2", "")) == ("/var/lib/tb/sim2/tmp", "/tmp")
    share = pmi_share_dir(tmp, ALICE.uid, env)
    assert share == "/var/lib/tb/sim2/tmp/mpidock-1000/42.0.sim2"
    plan = build(env, OPTS, ALICE, environ, cwd=CWD, pmix=None, share=share, mode="pmi2")
    names = dict(plan.rank_env)
    assert "PMI_FD" not in names
    assert (names["PMI_RANK"], names["PMI_JOBID"]) == ("3", "42.0")
    assert (plan.mode, plan.pmix, plan.fifo) == ("pmi2", None, f"{share}/alive")


def test_the_relay_answers_the_port_handshake_then_passes_bytes_both_ways() -> None:
    slurm_end, task_end = socket.socketpair()
    relay = Relay(task_end.detach(), rank=3, size=6, node="sim2").start()
    try:
        assert dict(relay.environment()) == {"PMI_PORT": f"127.0.0.1:{relay.port}", "PMI_ID": "3"}
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as rank:
            rank.sendall(b"cmd=initack pmiid=3\n")
            expected = handshake(3, 6)
            assert _read(rank, len(expected)) == expected
            assert expected == b"cmd=initack\ncmd=set size=6\ncmd=set rank=3\ncmd=set debug=0\n"
            rank.sendall(b"cmd=init pmi_version=1 pmi_subversion=1\n")
            slurm_end.settimeout(5)
            said = b"cmd=init pmi_version=1 pmi_subversion=1\n"
            assert _read(slurm_end, len(said)) == said
            slurm_end.sendall(b"cmd=response_to_init rc=0\n")
            assert _read(rank, 26) == b"cmd=response_to_init rc=0\n"
    finally:
        relay.close()
        slurm_end.close()


def _read(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(5)
    got = b""
    while len(got) < size and (chunk := sock.recv(size - len(got))):
        got += chunk
    return got
