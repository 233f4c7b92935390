"""Slurm environments, options and identities to whole launch plans."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

import pytest

from launcher.devices import DevicePlan
from launcher.errors import UsageError
from launcher.mpi import MpiFlavor, Network
from launcher.plan import (
    LABEL_PREFIX,
    Identity,
    LaunchPlan,
    Options,
    UserMount,
    build_plan,
    labels,
    parse_mount,
    role_of,
)
from launcher.slurm import NodeSlots, SlurmEnv
from tests.unit.samples import ALICE, NET, STEP, WORKER

Golden = Callable[[str, str], None]

# Task 0 of `sbatch -N 3` on sim[1-3] holding 4, 4 and 2 CPUs.
OPTS = Options(image="solver:1", command=("./solver", "in.cfg"))
CWD = "/home/alice/case"


def slurm(**changes: str) -> SlurmEnv:
    return SlurmEnv.from_environ({**STEP, **changes})


def plan_for(
    env: SlurmEnv,
    opts: Options = OPTS,
    *,
    ident: Identity = ALICE,
    cwd: str = CWD,
    flavor: MpiFlavor | None = MpiFlavor.OPENMPI,
    network: Network | None = None,
    devices: DevicePlan | None = None,
) -> LaunchPlan:
    return build_plan(
        env, opts, ident, cwd=cwd, image=opts.image, flavor=flavor, network=network,
        devices=devices,
    )  # fmt: skip


def flag(argv: tuple[str, ...], name: str) -> str:
    """The value after the first occurrence of name in argv."""
    return argv[argv.index(name) + 1]


# --- roles and labels -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "role"),
    [
        ({}, "leader"),
        (WORKER, "worker"),
        # A second task on the leader's node only waits.
        ({"SLURM_PROCID": "2", "SLURM_LOCALID": "1"}, "idle"),
    ],
)
def test_role_of(changes: dict[str, str], role: str) -> None:
    assert role_of(slurm(**changes)) == role


def test_labels_name_job_role_node_and_user() -> None:
    assert dict(labels("42", "worker", "sim2", "alice")) == {
        "org.mpidock.job": "42",
        "org.mpidock.role": "worker",
        "org.mpidock.node": "sim2",
        "org.mpidock.user": "alice",
    }


@pytest.mark.parametrize(
    ("changes", "role", "node"), [({}, "leader", "sim1"), (WORKER, "worker", "sim2")]
)
def test_every_container_is_labelled_for_teardown(
    changes: dict[str, str], role: str, node: str
) -> None:
    spec = plan_for(slurm(**changes)).container
    assert spec is not None
    assert dict(spec.labels) == dict(labels("42", role, node, "alice", "0"))
    assert dict(spec.labels)["org.mpidock.step"] == "0"
    assert all(key.startswith(f"{LABEL_PREFIX}.") for key, _ in spec.labels)
    assert spec.name == f"mpidock-42.0-{role}-{node}"


def test_two_steps_of_one_job_share_no_directory_name_or_preferred_port() -> None:
    first, second = plan_for(slurm()), plan_for(slurm(SLURM_STEP_ID="1"))
    assert first.job_dir == "/home/alice/.mpidock/jobs/alice/42.0"
    assert second.job_dir == "/home/alice/.mpidock/jobs/alice/42.1"
    assert first.port != second.port
    assert first.container is not None
    assert second.container is not None
    assert first.container.name != second.container.name
    assert dict(second.container.labels)["org.mpidock.job"] == "42"  # reaping goes by job


def test_outside_a_step_the_job_id_alone_names_things() -> None:
    env = {k: v for k, v in STEP.items() if k != "SLURM_STEP_ID"}
    plan = plan_for(SlurmEnv.from_environ(env))
    assert plan.job_dir == "/home/alice/.mpidock/jobs/alice/42"
    assert plan.container is not None
    assert plan.container.name == "mpidock-42-leader-sim1"
    assert "org.mpidock.step" not in dict(plan.container.labels)


# --- the leader -----------------------------------------------------------------------------


def test_leader_plan_golden(golden: Golden) -> None:
    opts = replace(OPTS, mounts=("/data:/mnt/data",), env_forward=("OMP_NUM_THREADS",))
    plan = plan_for(slurm(), opts, cwd="/scratch/alice/run", network=NET)
    golden("plan.leader.json", json.dumps(plan.to_dict(), indent=2) + "\n")


def test_leader_plan() -> None:
    plan = plan_for(slurm(), network=NET)
    assert (plan.role, plan.job_id, plan.node) == ("leader", "42", "sim1")
    assert plan.nodes == (NodeSlots("sim1", 4), NodeSlots("sim2", 4), NodeSlots("sim3", 2))
    assert plan.workers == ("sim2", "sim3")
    assert plan.job_dir == "/home/alice/.mpidock/jobs/alice/42.0"
    assert plan.flavor == "openmpi"
    assert plan.network == NET
    assert plan.mpirun[0] == "mpirun"
    assert plan.mpirun[-2:] == ("./solver", "in.cfg")
    assert flag(plan.mpirun, "btl_tcp_if_include") == "10.213.0.0/24"


def test_leader_container_runs_mpirun_as_the_user_without_privileges() -> None:
    plan = plan_for(slurm())
    spec = plan.container
    assert spec is not None
    assert spec.command == plan.mpirun
    assert spec.image == "solver:1"
    assert spec.user == "1000:1000"
    assert spec.group_add == (998, 2000)
    assert spec.cap_drop == ("ALL",)
    assert spec.security_opt == ("no-new-privileges",)
    assert spec.network_mode == "host"
    assert spec.init is True
    assert spec.working_dir == CWD
    assert dict(spec.environment) == {"HOME": "/home/alice", "USER": "alice", "LOGNAME": "alice"}


def test_mpirun_uses_the_job_ssh_wrapper() -> None:
    plan = plan_for(slurm())
    assert flag(plan.mpirun, "plm_rsh_agent") == str(plan.job.ssh_wrapper)
    assert str(plan.job.ssh_wrapper).startswith(plan.job_dir + "/")


def test_mpich_leader() -> None:
    plan = plan_for(slurm(), flavor=MpiFlavor.MPICH, network=NET)
    assert plan.flavor == "mpich"
    assert plan.mpirun[0] == "mpiexec"
    assert flag(plan.mpirun, "-launcher-exec") == str(plan.job.ssh_wrapper)
    assert flag(plan.mpirun, "-hosts") == "sim1:4,sim2:4,sim3:2"
    assert flag(plan.mpirun, "-iface") == "eth0"


def test_leader_before_the_mpi_is_known_has_no_argv_yet() -> None:
    plan = plan_for(slurm(), flavor=None)
    assert plan.role == "leader"
    assert plan.mpirun == ()
    assert plan.flavor == ""
    assert plan.container is not None
    assert plan.container.command == ()


def test_user_options_reach_mpirun_before_the_command() -> None:
    opts = replace(OPTS, mpi_args=("--bind-to", "core"), env_forward=("LD_LIBRARY_PATH",))
    argv = plan_for(slurm(), opts).mpirun
    assert argv[-4:] == ("--bind-to", "core", "./solver", "in.cfg")
    assert flag(argv, "-x") == "LD_LIBRARY_PATH"


@pytest.mark.parametrize(
    ("changes", "ppn", "np", "hosts", "workers"),
    [
        ({}, None, None, "sim1:4,sim2:4,sim3:2", ("sim2", "sim3")),
        ({}, 2, None, "sim1:2,sim2:2,sim3:2", ("sim2", "sim3")),
        ({}, 8, None, "sim1:8,sim2:8,sim3:8", ("sim2", "sim3")),
        ({}, None, 6, "sim1:4,sim2:2", ("sim2",)),
        ({}, None, 3, "sim1:3", ()),
        ({}, 1, 2, "sim1:1,sim2:1", ("sim2",)),
        ({"SLURM_CPUS_PER_TASK": "2"}, None, None, "sim1:2,sim2:2,sim3:1", ("sim2", "sim3")),
        (
            {"SLURM_JOB_CPUS_PER_NODE": "2,8,1"},
            None,
            None,
            "sim1:2,sim2:8,sim3:1",
            ("sim2", "sim3"),
        ),
    ],
)
def test_hosts_and_slots_in_mpirun(
    changes: dict[str, str],
    ppn: int | None,
    np: int | None,
    hosts: str,
    workers: tuple[str, ...],
) -> None:
    plan = plan_for(slurm(**changes), replace(OPTS, ppn=ppn, np=np))
    total = sum(int(item.split(":")[1]) for item in hosts.split(","))
    assert flag(plan.mpirun, "--host") == hosts
    assert flag(plan.mpirun, "--np") == str(total)
    assert plan.workers == workers


@pytest.mark.parametrize(
    ("ppn", "np", "match"),
    [
        (0, None, "--ppn must be at least 1"),
        (None, 0, "--np must be at least 1"),
        (None, 11, "exceeds the 10 slots"),
    ],
)
def test_bad_rank_counts(ppn: int | None, np: int | None, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        plan_for(slurm(), replace(OPTS, ppn=ppn, np=np))


# --- workers and idle tasks -----------------------------------------------------------------


def test_worker_runs_sshd_from_the_job_directory() -> None:
    plan = plan_for(slurm(**WORKER))
    assert (plan.role, plan.node) == ("worker", "sim2")
    assert plan.mpirun == ()
    assert plan.container is not None
    assert plan.container.command == (
        "/usr/sbin/sshd", "-D", "-e", "-f", "/home/alice/.mpidock/jobs/alice/42.0/sshd_config.sim2"
    )  # fmt: skip
    assert plan.container.command[-1] == str(plan.job.node_sshd_config("sim2"))
    assert plan.container.user == "1000:1000"
    assert plan.container.cap_drop == ("ALL",)
    assert plan.container.network_mode == "host"


def test_worker_and_leader_agree_on_the_job() -> None:
    leader, worker = plan_for(slurm()), plan_for(slurm(**WORKER))
    same = ("job_id", "nodes", "port", "job_dir", "workers", "image")
    assert [getattr(worker, name) for name in same] == [getattr(leader, name) for name in same]
    assert leader.container is not None
    assert worker.container is not None
    assert leader.container.mounts == worker.container.mounts


def test_idle_task_has_no_container() -> None:
    plan = plan_for(slurm(SLURM_PROCID="2", SLURM_LOCALID="1"))
    assert plan.role == "idle"
    assert plan.container is None
    assert plan.mpirun == ()


# --- mounts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cwd", "job_root", "user_mounts", "mounts"),
    [
        # Job directory and working directory are inside home: one mount covers them.
        (CWD, None, (), [("/home/alice", "/home/alice")]),
        ("/home/alice", None, (), [("/home/alice", "/home/alice")]),
        (
            "/scratch/alice/run",
            "/shared/jobs",
            (),
            [
                ("/home/alice", "/home/alice"),
                ("/shared/jobs", "/shared/jobs"),
                ("/scratch/alice/run", "/scratch/alice/run"),
            ],
        ),
        # A sibling whose name merely starts with the home path is not inside it.
        (
            "/home/alice2/x",
            None,
            (),
            [("/home/alice", "/home/alice"), ("/home/alice2/x", "/home/alice2/x")],
        ),
        (
            CWD,
            None,
            ("/data:/mnt/data", "/opt/tools"),
            [
                ("/home/alice", "/home/alice"),
                ("/data", "/mnt/data"),
                ("/opt/tools", "/opt/tools"),
            ],
        ),
    ],
)
def test_shared_directories_are_mounted_at_their_host_paths(
    cwd: str, job_root: str | None, user_mounts: tuple[str, ...], mounts: list[tuple[str, str]]
) -> None:
    plan = plan_for(slurm(), replace(OPTS, job_root=job_root, mounts=user_mounts), cwd=cwd)
    assert plan.container is not None
    assert list(plan.container.mounts) == mounts
    assert plan.container.working_dir == cwd


def test_job_root_option_moves_the_job_directory() -> None:
    plan = plan_for(slurm(), replace(OPTS, job_root="/shared/jobs"))
    assert plan.job_dir == "/shared/jobs/alice/42.0"
    assert flag(plan.mpirun, "plm_rsh_agent").startswith("/shared/jobs/alice/42.0/")


# --- ports ----------------------------------------------------------------------------------


@pytest.mark.parametrize("job_id", ["42", "123456", "9999999", "123_4", "77+1"])
@pytest.mark.parametrize("port_range", [(20000, 29999), (40000, 40009), (2222, 2222)])
def test_port_is_derived_within_the_range(job_id: str, port_range: tuple[int, int]) -> None:
    plan = plan_for(slurm(SLURM_JOB_ID=job_id), replace(OPTS, port_range=port_range))
    assert port_range[0] <= plan.port <= port_range[1]
    worker = plan_for(slurm(SLURM_JOB_ID=job_id, **WORKER), replace(OPTS, port_range=port_range))
    assert worker.port == plan.port


def test_port_differs_between_jobs() -> None:
    ports = {plan_for(slurm(SLURM_JOB_ID=str(job))).port for job in range(100, 110)}
    assert len(ports) == 10


def test_explicit_port_wins() -> None:
    plan = plan_for(slurm(), replace(OPTS, port=2222))
    assert (plan.port, plan.port_range) == (2222, (2222, 2222))


def test_a_derived_port_may_move_within_the_range() -> None:
    plan = plan_for(slurm(), replace(OPTS, port_range=(40000, 40009)))
    assert plan.port_range == (40000, 40009)


def test_bad_port_range() -> None:
    with pytest.raises(UsageError, match="bad port range 100-200"):
        plan_for(slurm(), replace(OPTS, port_range=(100, 200)))


@pytest.mark.parametrize("port", [-1, 0, 80, 65536])
def test_bad_explicit_port(port: int) -> None:
    with pytest.raises(UsageError, match=f"bad port {port}"):
        plan_for(slurm(), replace(OPTS, port=port))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("/scratch", UserMount("/scratch", "/scratch", False)),
        ("/data/ref:/ref", UserMount("/data/ref", "/ref", False)),
        ("/data/ref:/ref:ro", UserMount("/data/ref", "/ref", True)),
        ("/data/ref:ro", UserMount("/data/ref", "/data/ref", True)),
    ],
)
def test_user_mount_forms(spec: str, expected: UserMount) -> None:
    assert parse_mount(spec) == expected


@pytest.mark.parametrize("spec", ["data", "/a:b", "/a:/b:rx", "/a:/b:ro:x", ""])
def test_bad_user_mount_is_named(spec: str) -> None:
    with pytest.raises(UsageError, match="bad --mount") as info:
        parse_mount(spec)
    assert "SRC[:DST][:ro]" in str(info.value)


def test_read_only_mount_is_marked_in_the_container() -> None:
    plan = plan_for(slurm(), replace(OPTS, mounts=("/data/ref:/ref:ro", "/scratch")))
    assert plan.container is not None
    assert ("/data/ref", "/ref") in plan.container.mounts
    assert plan.container.readonly == ("/ref",)


def test_node_left_without_ranks_by_np_starts_nothing() -> None:
    env = slurm(SLURM_PROCID="2", SLURM_NODEID="2", SLURMD_NODENAME="sim3")
    plan = plan_for(env, replace(OPTS, np=2))
    assert plan.role == "idle"
    assert plan.container is None
    assert "sim3" not in plan.workers


# --- devices --------------------------------------------------------------------------------

# Two NVIDIA GPUs and InfiniBand with the host's UCX settings, as launcher.devices plans them.
GPU_IB = DevicePlan(
    devices=("/dev/infiniband/uverbs0:/dev/infiniband/uverbs0:rwm",),
    gpu_ids=("2", "3"),
    group_add=(2000, 150),
    cap_add=("IPC_LOCK",),
    ulimits=(("memlock", -1, -1),),
    environment=(("CUDA_VISIBLE_DEVICES", "0,1"), ("UCX_TLS", "rc,sm,self")),
    forward=("UCX_TLS",),
    summary="NVIDIA GPUs 2,3 (SLURM_STEP_GPUS) as 0,1; InfiniBand: 1 devices",
)


@pytest.mark.parametrize("changes", [{}, WORKER])
def test_devices_reach_the_container_of_every_role(changes: dict[str, str]) -> None:
    plan = plan_for(slurm(**changes), devices=GPU_IB)
    spec = plan.container
    assert spec is not None
    assert spec.devices == GPU_IB.devices
    assert spec.gpu_ids == ("2", "3")
    assert spec.ulimits == (("memlock", -1, -1),)
    assert spec.cap_add == ("SYS_PTRACE", "IPC_LOCK")
    assert spec.cap_drop == ("ALL",)
    assert spec.security_opt == ("no-new-privileges",)
    # The user's groups first, a device group they already hold only once.
    assert spec.group_add == (998, 2000, 150)
    assert dict(spec.environment) == {
        "HOME": "/home/alice", "USER": "alice", "LOGNAME": "alice",
        "CUDA_VISIBLE_DEVICES": "0,1", "UCX_TLS": "rc,sm,self",
    }  # fmt: skip
    assert plan.devices == GPU_IB.summary
    assert plan.to_dict()["container"]["gpu_ids"] == ("2", "3")


def test_without_devices_nothing_is_passed() -> None:
    plan = plan_for(slurm())
    spec = plan.container
    assert spec is not None
    assert (spec.devices, spec.gpu_ids, spec.ulimits) == ((), (), ())
    assert spec.cap_add == ("SYS_PTRACE",)
    assert plan.devices == ""


def test_fabric_settings_reach_every_rank_through_mpirun() -> None:
    opts = replace(OPTS, env_forward=("OMP_NUM_THREADS", "UCX_TLS"))
    argv = plan_for(slurm(), opts, devices=GPU_IB).mpirun
    forwarded = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-x"]
    assert forwarded == ["OMP_NUM_THREADS", "UCX_TLS"]
    # Hydra passes mpiexec's whole environment; a -genvlist would narrow it to the list.
    mpich = plan_for(slurm(), devices=GPU_IB, flavor=MpiFlavor.MPICH).mpirun
    assert "-genvlist" not in mpich


def test_fabric_settings_reach_a_job_script_mpirun() -> None:
    opts = replace(OPTS, script="/home/alice/job.sh", command=("/bin/sh", "/home/alice/job.sh"))
    spec = plan_for(slurm(), opts, devices=GPU_IB).container
    assert spec is not None
    env = dict(spec.environment)
    assert env["OMPI_MCA_mca_base_env_list"] == "UCX_TLS"
    assert env["UCX_TLS"] == "rc,sm,self"


def test_the_launchers_own_variables_win_over_the_hosts() -> None:
    host = DevicePlan(environment=(("UCX_NET_DEVICES", "mlx5_0:1"),), forward=("UCX_NET_DEVICES",))
    opts = replace(OPTS, script="/home/alice/job.sh", command=("/bin/sh", "/home/alice/job.sh"))
    spec = plan_for(slurm(), opts, flavor=MpiFlavor.MPICH, network=NET, devices=host).container
    assert spec is not None
    names = [name for name, _ in spec.environment]
    assert len(names) == len(set(names))
    assert dict(spec.environment)["UCX_NET_DEVICES"] == "eth0"


def test_forwarded_values_reach_the_leaders_container_only() -> None:
    opts = replace(OPTS, env_forward=("FOO", "HOME"), env_values=(("FOO", "a b"), ("HOME", "/x")))
    leader = plan_for(slurm(), opts)
    assert leader.container is not None
    env = dict(leader.container.environment)
    assert env["FOO"] == "a b"
    assert env["HOME"] == ALICE.home  # the launcher's own value wins
    assert leader.mpirun[leader.mpirun.index("FOO") - 1 :][:2] == ("-x", "FOO")
    worker = plan_for(slurm(**WORKER), opts)
    assert worker.container is not None
    assert "FOO" not in dict(worker.container.environment)
