"""Slurm environments to SlurmEnv, slots per node and job ports."""

from __future__ import annotations

import pytest

from launcher.errors import MissingSlurmEnv, UsageError
from launcher.slurm import (
    NodeSlots,
    SlurmEnv,
    expand_nodelist,
    job_over,
    job_port,
    job_state_in,
    parse_counts,
    slots_per_node,
)

# What srun gives the second task of `sbatch -N 3 --ntasks-per-node=1` on sim[1-3].
STEP = {
    "SLURM_JOB_ID": "42",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "1",
    "SLURM_NTASKS": "3",
    "SLURM_JOB_NODELIST": "sim[1-3]",
    "SLURMD_NODENAME": "sim2",
    "SLURM_JOB_CPUS_PER_NODE": "4(x2),2",
    "SLURM_STEP_ID": "0",
}

REQUIRED = [
    "SLURM_JOB_ID",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURM_NTASKS",
    "SLURM_JOB_NODELIST",
    "SLURMD_NODENAME",
    "SLURM_JOB_CPUS_PER_NODE",
]


def env_with(**changes: str | None) -> dict[str, str]:
    """STEP with some variables changed, or removed when given None."""
    env = {**STEP, **{k: v for k, v in changes.items() if v is not None}}
    return {k: v for k, v in env.items() if changes.get(k, "") is not None}


def make_env(cpus: tuple[int, ...], cpus_per_task: int = 1) -> SlurmEnv:
    nodes = tuple(f"sim{i + 1}" for i in range(len(cpus)))
    return SlurmEnv(
        job_id="42",
        procid=0,
        localid=0,
        nodeid=0,
        ntasks=len(cpus),
        nodes=nodes,
        cpus_per_node=cpus,
        cpus_per_task=cpus_per_task,
        node_name="sim1",
    )


@pytest.mark.parametrize(
    ("text", "counts"),
    [
        ("2", (2,)),
        ("4(x2),2", (4, 4, 2)),
        ("1(x3)", (1, 1, 1)),
        ("2(x2),1", (2, 2, 1)),
        (" 16(x1),8 ", (16, 8)),
        ("72(x4)", (72,) * 4),
    ],
)
def test_parse_counts(text: str, counts: tuple[int, ...]) -> None:
    assert parse_counts(text) == counts


@pytest.mark.parametrize("text", ["", "x", "4(x)", "4(2)", "4(x2", "4,,2", "-1", "0", "3(x0)"])
def test_parse_counts_rejects(text: str) -> None:
    with pytest.raises(UsageError, match=r"4\(x2\),2") as info:
        parse_counts(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("text", "nodes"),
    [
        ("sim[1-3]", ("sim1", "sim2", "sim3")),
        ("a1,b[2-3]", ("a1", "b2", "b3")),
        ("node[08-10]", ("node08", "node09", "node10")),
        ("gpu7", ("gpu7",)),
    ],
)
def test_expand_nodelist(text: str, nodes: tuple[str, ...]) -> None:
    assert expand_nodelist(text) == nodes


@pytest.mark.parametrize("text", ["", "sim[1-3", "sim[3-1]", "a b"])
def test_expand_nodelist_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="node list"):
        expand_nodelist(text)


def test_from_environ_reads_a_step() -> None:
    assert SlurmEnv.from_environ(STEP) == SlurmEnv(
        job_id="42",
        procid=1,
        localid=0,
        nodeid=1,
        ntasks=3,
        nodes=("sim1", "sim2", "sim3"),
        cpus_per_node=(4, 4, 2),
        cpus_per_task=1,
        node_name="sim2",
        step_id="0",
    )


@pytest.mark.parametrize(
    ("changes", "field", "value"),
    [
        ({"SLURM_JOB_ID": None, "SLURM_JOBID": "7"}, "job_id", "7"),
        ({"SLURM_NTASKS": None, "SLURM_NPROCS": "3"}, "ntasks", 3),
        (
            {"SLURM_JOB_NODELIST": None, "SLURM_NODELIST": "sim[1-3]"},
            "nodes",
            ("sim1", "sim2", "sim3"),
        ),
        ({"SLURM_STEP_ID": None}, "step_id", None),
        ({"SLURM_CPUS_PER_TASK": "2"}, "cpus_per_task", 2),
        ({"SLURM_JOB_CPUS_PER_NODE": "2(x2),1"}, "cpus_per_node", (2, 2, 1)),
        # Without CPU counts, tasks per node times CPUs per task.
        (
            {"SLURM_JOB_CPUS_PER_NODE": None, "SLURM_TASKS_PER_NODE": "2(x2),1"},
            "cpus_per_node",
            (2, 2, 1),
        ),
        (
            {
                "SLURM_JOB_CPUS_PER_NODE": None,
                "SLURM_TASKS_PER_NODE": "1(x3)",
                "SLURM_CPUS_PER_TASK": "4",
            },
            "cpus_per_node",
            (4, 4, 4),
        ),
    ],
)
def test_from_environ_variants(changes: dict[str, str | None], field: str, value: object) -> None:
    assert getattr(SlurmEnv.from_environ(env_with(**changes)), field) == value


@pytest.mark.parametrize(
    ("procid", "localid", "leader", "acts"),
    [("0", "0", True, True), ("1", "0", False, True), ("2", "1", False, False)],
)
def test_roles(procid: str, localid: str, leader: bool, acts: bool) -> None:
    env = SlurmEnv.from_environ(env_with(SLURM_PROCID=procid, SLURM_LOCALID=localid))
    assert (env.is_leader, env.acts) == (leader, acts)


def test_outside_slurm_lists_every_variable() -> None:
    with pytest.raises(MissingSlurmEnv, match="not inside a Slurm step") as info:
        SlurmEnv.from_environ({"HOME": "/home/alice", "PATH": "/usr/bin"})
    assert info.value.names == REQUIRED
    assert all(name in str(info.value) for name in REQUIRED)
    assert "sbatch" in info.value.hint


def test_missing_some_lists_them_all_at_once() -> None:
    env = env_with(SLURM_LOCALID=None, SLURMD_NODENAME=None, SLURM_JOB_CPUS_PER_NODE=None)
    with pytest.raises(MissingSlurmEnv) as info:
        SlurmEnv.from_environ(env)
    assert info.value.names == ["SLURM_LOCALID", "SLURMD_NODENAME", "SLURM_JOB_CPUS_PER_NODE"]
    assert str(info.value).startswith(
        "missing Slurm variables: SLURM_LOCALID, SLURMD_NODENAME, "
        "SLURM_JOB_CPUS_PER_NODE (or SLURM_TASKS_PER_NODE)"
    )


def test_empty_value_counts_as_missing() -> None:
    with pytest.raises(MissingSlurmEnv) as info:
        SlurmEnv.from_environ(env_with(SLURM_PROCID=""))
    assert info.value.names == ["SLURM_PROCID"]


@pytest.mark.parametrize(
    ("changes", "name", "detail"),
    [
        ({"SLURM_JOB_CPUS_PER_NODE": "4(x2)"}, "SLURM_JOB_CPUS_PER_NODE", "name 2 nodes"),
        ({"SLURM_JOB_CPUS_PER_NODE": "4(x4)"}, "SLURM_JOB_CPUS_PER_NODE", "name 4 nodes"),
        ({"SLURM_JOB_CPUS_PER_NODE": "four"}, "SLURM_JOB_CPUS_PER_NODE", "four"),
        ({"SLURMD_NODENAME": "login1"}, "SLURMD_NODENAME", "'login1' is not in"),
        ({"SLURM_PROCID": "3"}, "SLURM_PROCID", "SLURM_PROCID=3 is not below SLURM_NTASKS=3"),
        ({"SLURM_PROCID": "one"}, "SLURM_PROCID", "not an integer"),
        ({"SLURM_NTASKS": "0"}, "SLURM_NTASKS", "not an integer >= 1"),
        ({"SLURM_LOCALID": "-1"}, "SLURM_LOCALID", "not an integer >= 0"),
        ({"SLURM_NODEID": "3"}, "SLURM_NODEID", "has 3 nodes"),
        ({"SLURM_CPUS_PER_TASK": "0"}, "SLURM_CPUS_PER_TASK", "not an integer >= 1"),
        ({"SLURM_JOB_NODELIST": "sim[1-"}, "SLURM_JOB_NODELIST", "sim\\[1-"),
    ],
)
def test_inconsistent_environments(changes: dict[str, str], name: str, detail: str) -> None:
    with pytest.raises(MissingSlurmEnv, match=detail) as info:
        SlurmEnv.from_environ(env_with(**changes))
    assert info.value.names == [name]


@pytest.mark.parametrize(
    ("cpus", "cpus_per_task", "ppn", "np", "slots"),
    [
        ((4, 4, 2), 1, None, None, (4, 4, 2)),
        ((2, 2, 1), 1, None, None, (2, 2, 1)),
        ((4, 4, 2), 2, None, None, (2, 2, 1)),
        ((4, 1), 2, None, None, (2, 1)),  # at least one slot per node
        ((4, 4, 2), 1, 1, None, (1, 1, 1)),
        ((4, 4, 2), 1, 8, None, (8, 8, 8)),
        ((4, 4, 2), 1, None, 10, (4, 4, 2)),
        ((4, 4, 2), 1, None, 5, (4, 1)),
        ((4, 4, 2), 1, None, 4, (4,)),
        ((4, 4, 2), 1, None, 1, (1,)),
        ((4, 4, 2), 1, 2, 5, (2, 2, 1)),
    ],
)
def test_slots_per_node(
    cpus: tuple[int, ...],
    cpus_per_task: int,
    ppn: int | None,
    np: int | None,
    slots: tuple[int, ...],
) -> None:
    env = make_env(cpus, cpus_per_task)
    expected = tuple(NodeSlots(f"sim{i + 1}", n) for i, n in enumerate(slots))
    assert slots_per_node(env, ppn=ppn, np=np) == expected


def test_np_beyond_the_allocation() -> None:
    with pytest.raises(UsageError) as info:
        slots_per_node(make_env((4, 4, 2)), np=11)
    assert str(info.value) == (
        "--np 11 exceeds the 10 slots of the allocation; use --ppn or ask Slurm for more CPUs"
    )


@pytest.mark.parametrize(
    ("ppn", "np", "option"), [(0, None, "--ppn"), (None, 0, "--np"), (-2, 3, "--ppn")]
)
def test_slots_reject_non_positive(ppn: int | None, np: int | None, option: str) -> None:
    with pytest.raises(UsageError, match=f"{option} must be at least 1"):
        slots_per_node(make_env((4, 4)), ppn=ppn, np=np)


@pytest.mark.parametrize(
    ("job_id", "low", "high", "port"),
    [
        ("123", 20000, 29999, 20123),
        ("10000", 20000, 29999, 20000),
        ("10001", 20000, 29999, 20001),
        ("7", 2222, 2222, 2222),
    ],
)
def test_job_port(job_id: str, low: int, high: int, port: int) -> None:
    assert job_port(job_id, low, high) == port


def test_job_port_of_array_and_het_jobs() -> None:
    ports = {
        job_port(job_id, 20000, 29999) for job_id in ["123", "123_1", "123_2", "123_3", "123+1"]
    }
    assert len(ports) == 5
    assert all(20000 <= port <= 29999 for port in ports)
    assert job_port("123_4", 20000, 29999) == job_port("123_4", 20000, 29999)


@pytest.mark.parametrize(("low", "high"), [(1023, 2000), (3000, 2000), (60000, 65536), (-1, 5)])
def test_job_port_rejects_ranges(low: int, high: int) -> None:
    with pytest.raises(UsageError, match="1024 <= low <= high <= 65535"):
        job_port("1", low, high)


@pytest.mark.parametrize("job_id", ["", "abc", "_1"])
def test_job_port_rejects_ids(job_id: str) -> None:
    with pytest.raises(UsageError, match="job id"):
        job_port(job_id, 20000, 29999)


@pytest.mark.parametrize(
    ("state", "over"),
    [
        ("RUNNING", False),
        ("COMPLETING", False),
        ("SIGNALING", False),  # the time limit's signals going out; TIMEOUT comes next
        ("STAGE_OUT", False),
        ("SUSPENDED", False),
        ("REQUEUED", False),
        ("TIMEOUT", True),
        ("OUT_OF_MEMORY", True),
        ("CANCELLED", True),
        ("UNKNOWN", True),  # slurmctld no longer holds the id
    ],
)
def test_job_over(state: str, over: bool) -> None:
    assert job_over(state) is over


def test_job_state_in_scontrol_output() -> None:
    shown = "JobId=7 JobName=wrap\n   JobState=SIGNALING Reason=None Dependency=(null)\n"
    assert job_state_in(shown) == "SIGNALING"
    assert job_state_in("slurm_load_jobs error: Invalid job id specified") == "UNKNOWN"
