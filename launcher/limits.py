"""The step's share of the node, for its containers: CPUs, memory and processes.

Containers are started by the node's engine, outside the step's processes, so nothing Slurm
does to the step (CPU binding, a memory cgroup) reaches them by itself. Facts first: `probe`
reads this process's CPU affinity and, where Slurm's task/cgroup put the step in a job
cgroup, that cgroup and its memory limit; the only I/O here. Then the pure `plan_limits`
decides, with the step's environment, what every container of this node gets. launcher.plan
copies the result into each ContainerSpec and launcher.containers turns it into docker-py
arguments.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
# Slurm's memory figures (--mem, --mem-per-cpu) are in MiB ("M").
SLURM_MEM_UNIT = MIB
# A cgroup v1 memory limit at or above this is "no limit" (the kernel's is near 2**63).
NO_LIMIT = 1 << 62
# Processes and threads per container: enough for MPI ranks with their progress and
# OpenMP threads, few enough that a runaway fork stops there, not at the node's limit.
PIDS_PER_CPU = 512
PIDS_MIN = 4096
# Where the cgroup hierarchies are mounted.
CGROUP_ROOT = "sys/fs/cgroup"
_JOB_CGROUP = re.compile(r"^job_(\d+)$")


@dataclass(frozen=True)
class StepFacts:
    """What this node says of the step's share of it.

    Attributes:
        affinity: the CPUs this process may run on (Slurm's binding of this task).
        job_cgroup: Slurm's cgroup of the job (task/cgroup), as a path from the hierarchy's
            root, e.g. "/slurm/uid_1501/job_42"; empty when the step is in none.
        cgroup_memory: the smallest memory limit, in bytes, from this process's cgroup up
            to the job's; 0 when there is none.
    """

    affinity: tuple[int, ...]
    job_cgroup: str = ""
    cgroup_memory: int = 0


@dataclass(frozen=True)
class Limits:
    """What every container of this step on this node gets; the empty plan limits nothing.

    Attributes:
        cpuset_cpus: the CPUs, as docker's "0-3,8" list.
        mem_limit: bytes of memory; 0 for no limit.
        memswap_limit: memory plus swap in bytes: the same as mem_limit, since Slurm's
            memory is RAM; 0 for no limit.
        pids_limit: processes and threads; 0 for no limit.
        cgroup_parent: Slurm's job cgroup, to start the containers in; empty for the
            engine's own.
        summary: one line for people: what was set and from where.
    """

    cpuset_cpus: str = ""
    mem_limit: int = 0
    memswap_limit: int = 0
    pids_limit: int = 0
    cgroup_parent: str = ""
    summary: str = ""


def probe(job_id: str, root: Path = Path("/")) -> StepFacts:
    """This process's CPU affinity and, under task/cgroup, its job cgroup and memory limit.

    Args:
        job_id: the Slurm job (SLURM_JOB_ID), whose cgroup is named job_<id>.
        root: the file system root; tests pass a tree of plain files.
    """
    affinity = tuple(sorted(os.sched_getaffinity(0)))
    try:
        lines = (root / "proc/self/cgroup").read_text()
    except OSError:
        return StepFacts(affinity)
    hierarchy, own = memory_cgroup(lines)
    job = job_cgroup(own, job_id)
    if not job:
        return StepFacts(affinity)
    base = root / CGROUP_ROOT / hierarchy
    limits = [_read_limit(base / p.lstrip("/")) for p in _up_to(own, job)]
    found = [limit for limit in limits if limit]
    return StepFacts(affinity, job, min(found, default=0))


def memory_cgroup(proc_self_cgroup: str) -> tuple[str, str]:
    """(hierarchy directory under /sys/fs/cgroup, path) of the memory controller's cgroup:
    cgroup v1's "memory" line, else the v2 unified line ("0::"); ("", "") with neither."""
    unified = ("", "")
    for line in proc_self_cgroup.splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if "memory" in controllers.split(","):
            return "memory", path
        if number == "0" and not controllers:
            unified = ("", path)
    return unified


def job_cgroup(path: str, job_id: str) -> str:
    """The leading part of path that ends in Slurm's job_<job_id>; "" when there is none."""
    parts = path.strip("/").split("/")
    for i, part in enumerate(parts):
        match = _JOB_CGROUP.match(part)
        if match and match.group(1) == job_id:
            return "/" + "/".join(parts[: i + 1])
    return ""


def _up_to(own: str, job: str) -> list[str]:
    """own, its parent, ... up to and including job."""
    paths = [own.rstrip("/")]
    while paths[-1] != job and paths[-1].count("/") > job.count("/"):
        paths.append(paths[-1].rsplit("/", 1)[0])
    return paths


def _read_limit(directory: Path) -> int:
    for name in ("memory.limit_in_bytes", "memory.max"):  # cgroup v1, v2
        try:
            text = (directory / name).read_text().strip()
        except OSError:
            continue
        return int(text) if text.isdigit() and int(text) < NO_LIMIT else 0
    return 0


def plan_limits(facts: StepFacts, env: Mapping[str, str]) -> Limits:
    """Decides the containers' limits from the node's facts and the step's environment
    (usually os.environ of slurm-entry on that node).

    CPUs: every CPU Slurm bound a task of this step to on this node (SLURM_CPU_BIND_LIST
    holds each local task's mask: the acting task alone may hold fewer), else this task's
    affinity. Memory: the job cgroup's limit, else SLURM_MEM_PER_NODE, else
    SLURM_MEM_PER_CPU times the job's CPUs here. Processes: PIDS_PER_CPU per CPU.
    """
    cpus = step_cpus(env, facts.affinity)
    memory, source = job_memory(facts, env, len(cpus))
    pids = max(PIDS_MIN, PIDS_PER_CPU * len(cpus))
    said = [f"CPUs {cpu_list(cpus)}", f"pids {pids}"]
    if memory:
        said.insert(1, f"memory {memory // MIB} MiB ({source})")
    if facts.job_cgroup:
        said.append(f"in Slurm's cgroup {facts.job_cgroup}")
    return Limits(
        cpuset_cpus=cpu_list(cpus),
        mem_limit=memory,
        memswap_limit=memory,
        pids_limit=pids,
        cgroup_parent=facts.job_cgroup,
        summary="; ".join(said),
    )


def step_cpus(env: Mapping[str, str], affinity: tuple[int, ...]) -> tuple[int, ...]:
    """The CPUs of this step on this node: the union of Slurm's task masks, or affinity."""
    kind = env.get("SLURM_CPU_BIND_TYPE", "").rstrip(":")
    listed = env.get("SLURM_CPU_BIND_LIST", "")
    try:
        if kind == "mask_cpu" and listed:
            return tuple(sorted({cpu for mask in listed.split(",") for cpu in _mask(mask)}))
        if kind == "map_cpu" and listed:
            return tuple(sorted({int(cpu) for cpu in listed.split(",")}))
    except ValueError:
        pass  # a form we do not read: the task's own binding is still true
    return affinity


def _mask(text: str) -> Iterable[int]:
    bits = int(text, 16)
    return (cpu for cpu in range(bits.bit_length()) if bits >> cpu & 1)


def job_memory(facts: StepFacts, env: Mapping[str, str], cpus: int) -> tuple[int, str]:
    """(bytes, where from) of the job's memory on this node; (0, "") when unlimited."""
    if facts.cgroup_memory:
        return facts.cgroup_memory, "Slurm's cgroup"
    per_node = _number(env.get("SLURM_MEM_PER_NODE"))
    if per_node:
        return per_node * SLURM_MEM_UNIT, "SLURM_MEM_PER_NODE"
    per_cpu = _number(env.get("SLURM_MEM_PER_CPU"))
    here = _number(env.get("SLURM_CPUS_ON_NODE")) or cpus
    if per_cpu:
        return per_cpu * here * SLURM_MEM_UNIT, f"SLURM_MEM_PER_CPU x {here} CPUs"
    return 0, ""


def _number(text: str | None) -> int:
    # A memory of 0 means "all of the node" to Slurm: no figure to enforce.
    return int(text) if text and text.strip().isdigit() else 0


def cpu_list(cpus: Iterable[int]) -> str:
    """docker's and the kernel's list form: (0, 1, 2, 5) -> "0-2,5"."""
    ranges: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)
