"""The step's share of the node (CPUs, memory, pids) to what every container gets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launcher.limits import (
    MIB,
    PIDS_MIN,
    Limits,
    StepFacts,
    cpu_list,
    job_cgroup,
    job_memory,
    memory_cgroup,
    plan_limits,
    probe,
    step_cpus,
)
from launcher.plan import LaunchPlan, Options, build_plan
from launcher.slurm import SlurmEnv
from tests.unit.samples import ALICE, STEP, WORKER

TWO = (0, 1)
OPTS = Options(image="solver:1", command=("./solver", "in.cfg"))


def plan_with(env: dict[str, str], limits: Limits | None) -> LaunchPlan:
    return build_plan(
        SlurmEnv.from_environ({**STEP, **env}), OPTS, ALICE, cwd="/home/alice",
        image="solver:1", flavor=None, network=None, limits=limits,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("cpus", "text"),
    [((0,), "0"), ((0, 1), "0-1"), ((0, 1, 2, 5), "0-2,5"), ((7, 3, 4), "3-4,7"), ((), "")],
)
def test_cpu_list(cpus: tuple[int, ...], text: str) -> None:
    assert cpu_list(cpus) == text


@pytest.mark.parametrize(
    ("env", "cpus"),
    [
        # What task/affinity gave a -n1 -c1 step on the testbed: one CPU.
        ({"SLURM_CPU_BIND_TYPE": "mask_cpu:", "SLURM_CPU_BIND_LIST": "0x1"}, (0,)),
        # Two tasks on the node, each bound to one CPU: the acting one gets both for its
        # container, where the node's ranks run.
        ({"SLURM_CPU_BIND_TYPE": "mask_cpu:", "SLURM_CPU_BIND_LIST": "0x1,0x2"}, (0, 1)),
        ({"SLURM_CPU_BIND_TYPE": "mask_cpu:", "SLURM_CPU_BIND_LIST": "0x30"}, (4, 5)),
        ({"SLURM_CPU_BIND_TYPE": "map_cpu:", "SLURM_CPU_BIND_LIST": "6,2"}, (2, 6)),
        # No binding, or one we do not read: the task's own affinity.
        ({}, TWO),
        ({"SLURM_CPU_BIND_TYPE": "mask_cpu:", "SLURM_CPU_BIND_LIST": "zz"}, TWO),
        ({"SLURM_CPU_BIND_TYPE": "rank_ldom", "SLURM_CPU_BIND_LIST": "0x1"}, TWO),
    ],
)
def test_step_cpus(env: dict[str, str], cpus: tuple[int, ...]) -> None:
    assert step_cpus(env, TWO) == cpus


@pytest.mark.parametrize(
    ("facts", "env", "memory"),
    [
        (StepFacts(TWO, "/slurm/uid_1/job_42", 200 * MIB), {"SLURM_MEM_PER_NODE": "300"}, 200),
        (StepFacts(TWO), {"SLURM_MEM_PER_NODE": "300"}, 300),
        (StepFacts(TWO), {"SLURM_MEM_PER_CPU": "200", "SLURM_CPUS_ON_NODE": "2"}, 400),
        (StepFacts(TWO), {"SLURM_MEM_PER_CPU": "200"}, 200),  # this step's one CPU
        (StepFacts(TWO), {"SLURM_MEM_PER_NODE": "0"}, 0),  # all of the node: no figure
        (StepFacts(TWO), {}, 0),
    ],
)
def test_job_memory(facts: StepFacts, env: dict[str, str], memory: int) -> None:
    assert job_memory(facts, env, 1)[0] == memory * MIB


def test_a_one_cpu_step_with_mem_300m() -> None:
    env = {
        "SLURM_CPU_BIND_TYPE": "mask_cpu:",
        "SLURM_CPU_BIND_LIST": "0x2",
        "SLURM_MEM_PER_NODE": "300",
    }
    assert plan_limits(StepFacts(TWO), env) == Limits(
        cpuset_cpus="1",
        mem_limit=300 * MIB,
        memswap_limit=300 * MIB,
        pids_limit=PIDS_MIN,
        summary="CPUs 1; memory 300 MiB (SLURM_MEM_PER_NODE); pids 4096",
    )


def test_slurms_job_cgroup_is_the_parent() -> None:
    facts = StepFacts((0, 1, 2, 3), "/slurm/uid_1501/job_42", 1024 * MIB)
    limits = plan_limits(facts, {})
    assert limits.cgroup_parent == "/slurm/uid_1501/job_42"
    assert limits.mem_limit == limits.memswap_limit == 1024 * MIB
    assert limits.summary == (
        "CPUs 0-3; memory 1024 MiB (Slurm's cgroup); pids 4096; "
        "in Slurm's cgroup /slurm/uid_1501/job_42"
    )


# --- probe: the only I/O ------------------------------------------------------------------------

V1 = """\
12:pids:/slurm/uid_1501/job_42/step_0/task_0
4:memory:/slurm/uid_1501/job_42/step_0/task_0
3:cpuset:/slurm/uid_1501/job_42/step_0
0::/
"""


def test_the_memory_cgroup_v1_and_v2() -> None:
    assert memory_cgroup(V1) == ("memory", "/slurm/uid_1501/job_42/step_0/task_0")
    v2 = "0::/system.slice/slurmstepd.scope/job_42/step_0/user/task_0\n"
    assert memory_cgroup(v2) == ("", "/system.slice/slurmstepd.scope/job_42/step_0/user/task_0")
    assert memory_cgroup("4:memory:/process_api/7d99\n0::/\n") == ("memory", "/process_api/7d99")


@pytest.mark.parametrize(
    ("path", "job"),
    [
        ("/slurm/uid_1501/job_42/step_0/task_0", "/slurm/uid_1501/job_42"),
        ("/system.slice/slurmstepd.scope/job_42/step_0", "/system.slice/slurmstepd.scope/job_42"),
        ("/slurm/uid_1501/job_420/step_0", ""),  # another job
        ("/docker/abc", ""),
        ("/", ""),
    ],
)
def test_the_jobs_cgroup(path: str, job: str) -> None:
    assert job_cgroup(path, "42") == job


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_probe_reads_the_smallest_limit_up_to_the_jobs_cgroup(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", V1)
    memory = "sys/fs/cgroup/memory/slurm/uid_1501"
    write(tmp_path, f"{memory}/memory.limit_in_bytes", "1000000\n")  # above the job: not Slurm's
    write(tmp_path, f"{memory}/job_42/memory.limit_in_bytes", f"{300 * MIB}\n")
    write(tmp_path, f"{memory}/job_42/step_0/memory.limit_in_bytes", "9223372036854771712\n")
    write(tmp_path, f"{memory}/job_42/step_0/task_0/memory.limit_in_bytes", "9223372036854771712\n")
    facts = probe("42", tmp_path)
    assert facts == StepFacts(
        tuple(sorted(os.sched_getaffinity(0))), "/slurm/uid_1501/job_42", 300 * MIB
    )


def test_probe_of_cgroup_v2_max(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "0::/system.slice/slurmstepd.scope/job_7/step_0\n")
    job = "sys/fs/cgroup/system.slice/slurmstepd.scope/job_7"
    write(tmp_path, f"{job}/memory.max", f"{512 * MIB}\n")
    write(tmp_path, f"{job}/step_0/memory.max", "max\n")
    assert probe("7", tmp_path).cgroup_memory == 512 * MIB


@pytest.mark.parametrize("cgroup", ["4:memory:/process_api/7d99\n0::/\n", None])
def test_probe_outside_a_job_cgroup_is_the_affinity_alone(
    tmp_path: Path, cgroup: str | None
) -> None:
    if cgroup is not None:
        write(tmp_path, "proc/self/cgroup", cgroup)
    assert probe("42", tmp_path) == StepFacts(tuple(sorted(os.sched_getaffinity(0))))


# --- into the plan ------------------------------------------------------------------------------


def test_every_container_of_the_plan_gets_the_limits() -> None:
    limits = plan_limits(StepFacts(TWO, "/slurm/uid_1000/job_42", 300 * MIB), {})
    for role_env in ({}, WORKER):
        plan = plan_with(role_env, limits)
        assert plan.container is not None
        spec = plan.container
        assert (spec.cpuset_cpus, spec.mem_limit, spec.memswap_limit) == (
            "0-1",
            300 * MIB,
            300 * MIB,
        )
        assert (spec.pids_limit, spec.cgroup_parent) == (PIDS_MIN, "/slurm/uid_1000/job_42")
        assert plan.limits == limits.summary
        assert plan.to_dict()["container"]["mem_limit"] == 300 * MIB  # shown by --dry-run


def test_without_limits_nothing_is_limited() -> None:
    plan = plan_with({}, None)
    assert plan.container is not None
    assert (plan.container.cpuset_cpus, plan.container.mem_limit, plan.limits) == ("", 0, "")
