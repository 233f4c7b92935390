"""What Slurm tells a step: who we are, which nodes we have and how many ranks each can run.

Everything here is pure: the environment comes in as a mapping, so tests pass plain dicts.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import hostlist

from launcher.errors import MissingSlurmEnv, UsageError

_T = TypeVar("_T")

_COUNT = re.compile(r"(\d+)(?:\(x(\d+)\))?")

# Slurm's job states after which nothing of the job runs any more. Every other state is a
# job still going, whether its name is common (RUNNING, COMPLETING) or brief (SIGNALING
# while the time limit's signals go out, STAGE_OUT, REQUEUED, RESIZING).
FINAL_STATES = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
    "OUT_OF_MEMORY", "PREEMPTED", "SPECIAL_EXIT", "TIMEOUT",
})  # fmt: skip


_JOB_STATE = re.compile(r"\bJobState=(\S+)")


def job_state_in(text: str) -> str:
    """The JobState that `scontrol show job` output gives; UNKNOWN where it gives none
    (an id slurmctld no longer holds)."""
    match = _JOB_STATE.search(text)
    return match.group(1) if match else "UNKNOWN"


def job_over(state: str) -> bool:
    """Whether a job whose JobState reads `state` has ended; UNKNOWN, the state of an id
    slurmctld no longer holds (MinJobAge after its end), counts as ended."""
    return state in FINAL_STATES or state == "UNKNOWN"


# Each required fact, under its current name first and its older aliases after.
_REQUIRED: tuple[tuple[str, ...], ...] = (
    ("SLURM_JOB_ID", "SLURM_JOBID"),
    ("SLURM_PROCID",),
    ("SLURM_LOCALID",),
    ("SLURM_NODEID",),
    ("SLURM_NTASKS", "SLURM_NPROCS"),
    ("SLURM_JOB_NODELIST", "SLURM_NODELIST"),
    ("SLURMD_NODENAME",),
    ("SLURM_JOB_CPUS_PER_NODE", "SLURM_TASKS_PER_NODE"),
)


def parse_counts(text: str) -> tuple[int, ...]:
    """Expands Slurm's compressed per-node counts.

    Args:
        text: a value such as ``SLURM_JOB_CPUS_PER_NODE``, e.g. ``"4(x2),2"``.

    Returns:
        One count per node, e.g. ``(4, 4, 2)``.

    Raises:
        UsageError: the text is not a comma-separated list of ``N`` or ``N(xR)`` items
            with positive N and R.
    """
    counts: list[int] = []
    for item in text.strip().split(","):
        match = _COUNT.fullmatch(item.strip())
        if not match or int(match[1]) < 1 or (match[2] is not None and int(match[2]) < 1):
            raise UsageError(
                f"cannot parse Slurm counts {text!r}: expected a comma-separated list of "
                "positive counts, each optionally repeated, like '4(x2),2'"
            )
        counts.extend([int(match[1])] * int(match[2] or 1))
    return tuple(counts)


def expand_nodelist(text: str) -> tuple[str, ...]:
    """Expands a Slurm host list such as ``"sim[1-3]"`` or ``"a1,b[2-3]"``.

    Raises:
        UsageError: the list is malformed, empty, or yields a name with white space.
    """
    try:
        nodes = tuple(hostlist.expand_hostlist(text.strip()))
    except hostlist.BadHostlist as e:
        raise UsageError(
            f"cannot expand Slurm node list {text!r}: {e}; expected a list like 'sim[1-3],gpu7'"
        ) from e
    if not nodes or any(not node or re.search(r"\s", node) for node in nodes):
        raise UsageError(
            f"cannot expand Slurm node list {text!r}: expected a list like 'sim[1-3],gpu7'"
        )
    return nodes


@dataclass(frozen=True, kw_only=True)
class SlurmEnv:
    """The facts one task of a Slurm step needs, read once from its environment.

    Attributes:
        job_id: SLURM_JOB_ID.
        procid: the task's global rank in the step; 0 is the leader.
        localid: the task's rank on its node; only 0 acts on a node.
        nodeid: the node's index in the step.
        ntasks: tasks in the step.
        nodes: the job's nodes, expanded, in Slurm's order.
        cpus_per_node: CPUs the job holds on each node of ``nodes``.
        cpus_per_task: SLURM_CPUS_PER_TASK, 1 when unset.
        node_name: this node, from SLURMD_NODENAME.
        step_id: SLURM_STEP_ID, when set.
    """

    job_id: str
    procid: int
    localid: int
    nodeid: int
    ntasks: int
    nodes: tuple[str, ...]
    cpus_per_node: tuple[int, ...]
    cpus_per_task: int = 1
    node_name: str
    step_id: str | None = None

    @property
    def is_leader(self) -> bool:
        """Whether this task runs mpirun and tells the workers when to stop."""
        return self.procid == 0

    @property
    def job_key(self) -> str:
        """``<job>.<step>`` (the job id alone outside a step): what keeps concurrent steps
        of one job apart in directories, ports and container names."""
        return f"{self.job_id}.{self.step_id}" if self.step_id else self.job_id

    @property
    def acts(self) -> bool:
        """Whether this task does the node's work (others on the same node only wait)."""
        return self.localid == 0

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> SlurmEnv:
        """Reads and cross-checks the step's variables.

        CPU counts come from SLURM_JOB_CPUS_PER_NODE. Without it, SLURM_TASKS_PER_NODE
        is used, scaled by SLURM_CPUS_PER_TASK so that the default slots stay one per task.

        Args:
            env: usually ``os.environ``.

        Raises:
            MissingSlurmEnv: some variables are missing (all are named at once, and all
                of them when none is set: not inside a Slurm step) or they contradict
                each other.
        """
        values = {names[0]: _lookup(env, names) for names in _REQUIRED}
        missing = [name for name, value in values.items() if value is None]
        if missing:
            raise _missing(missing)
        found = {name: value for name, value in values.items() if value is not None}
        slurm_env = _build(env, found)
        _check(slurm_env)
        return slurm_env


@dataclass(frozen=True)
class NodeSlots:
    """How many ranks MPI may place on one node."""

    node: str
    slots: int


def slots_per_node(
    env: SlurmEnv, *, ppn: int | None = None, np: int | None = None
) -> tuple[NodeSlots, ...]:
    """Decides how many ranks each node of the allocation runs.

    Args:
        env: the step's facts.
        ppn: ranks on every node, overriding what Slurm allocated.
        np: total ranks; nodes are filled in order up to their slots and nodes left
            without ranks at the end are dropped.

    Raises:
        UsageError: ``ppn`` or ``np`` is below 1, or ``np`` exceeds the slots.
    """
    _check_positive("--ppn", ppn)
    _check_positive("--np", np)
    if ppn is not None:
        slots = [ppn] * len(env.nodes)
    else:
        slots = [max(1, cpus // env.cpus_per_task) for cpus in env.cpus_per_node]
    if np is not None:
        slots = _fill(slots, np)
    return tuple(NodeSlots(node, n) for node, n in zip(env.nodes, slots, strict=True) if n > 0)


def job_port(job_id: str, low: int, high: int, step_id: str | None = None) -> int:
    """The step's preferred sshd port in ``[low, high]``, the same on every node.

    Array (``"123_4"``) and heterogeneous (``"123+1"``) ids hash their suffix so that
    tasks of one array get different ports; a step's number is added, so that steps of
    one job prefer different ports. It is only where each node starts looking: a node
    where it is taken takes the next free one.

    Raises:
        UsageError: the range is not within 1024..65535 or the id does not start with a digit.
    """
    if not 1024 <= low <= high <= 65535:
        raise UsageError(
            f"bad port range {low}-{high}: expected 1024 <= low <= high <= 65535",
            hint="pick unprivileged ports that no service on the nodes uses",
        )
    match = re.fullmatch(r"(\d+)(.*)", job_id, re.DOTALL)
    if not match:
        raise UsageError(f"bad Slurm job id {job_id!r}: expected digits, like '123' or '123_4'")
    suffix = match[2].encode()
    number = int(match[1]) + (zlib.crc32(suffix) if suffix else 0)
    number += int(step_id) if step_id and step_id.isdigit() else 0
    return low + number % (high - low + 1)


def _check_positive(option: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UsageError(f"{option} must be at least 1, got {value}")


def _fill(slots: Sequence[int], np: int) -> list[int]:
    total = sum(slots)
    if np > total:
        raise UsageError(
            f"--np {np} exceeds the {total} slots of the allocation; "
            "use --ppn or ask Slurm for more CPUs"
        )
    filled: list[int] = []
    for available in slots:
        filled.append(min(available, np - sum(filled)))
    return filled


def _lookup(env: Mapping[str, str], names: Sequence[str]) -> str | None:
    return next((env[name] for name in names if env.get(name, "").strip()), None)


def _missing(names: Sequence[str]) -> MissingSlurmEnv:
    if len(names) == len(_REQUIRED):
        detail = f"not inside a Slurm step: none of its variables is set ({', '.join(names)})"
        return MissingSlurmEnv(names, detail=detail)
    shown = [
        f"{group[0]} (or {', '.join(group[1:])})" if len(group) > 1 else group[0]
        for group in _REQUIRED
        if group[0] in names
    ]
    return MissingSlurmEnv(names, detail=f"missing Slurm variables: {', '.join(shown)}")


def _build(env: Mapping[str, str], found: Mapping[str, str]) -> SlurmEnv:
    cpus_per_task = _integer(
        "SLURM_CPUS_PER_TASK", _lookup(env, ("SLURM_CPUS_PER_TASK",)) or "1", 1
    )
    return SlurmEnv(
        job_id=found["SLURM_JOB_ID"].strip(),
        procid=_integer("SLURM_PROCID", found["SLURM_PROCID"], 0),
        localid=_integer("SLURM_LOCALID", found["SLURM_LOCALID"], 0),
        nodeid=_integer("SLURM_NODEID", found["SLURM_NODEID"], 0),
        ntasks=_integer("SLURM_NTASKS", found["SLURM_NTASKS"], 1),
        nodes=_slurm_value(expand_nodelist, "SLURM_JOB_NODELIST", found["SLURM_JOB_NODELIST"]),
        cpus_per_node=_cpus(env, found["SLURM_JOB_CPUS_PER_NODE"], cpus_per_task),
        cpus_per_task=cpus_per_task,
        node_name=found["SLURMD_NODENAME"].strip(),
        step_id=_step(_lookup(env, ("SLURM_STEP_ID", "SLURM_STEPID"))),
    )


def _step(text: str | None) -> str | None:
    # Part of file and container names: digits (a step) or a word (batch, extern) only.
    if text is None:
        return None
    if not re.fullmatch(r"[A-Za-z0-9_]+", text.strip()):
        raise MissingSlurmEnv(
            ["SLURM_STEP_ID"], detail=f"SLURM_STEP_ID={text!r} is not a step number"
        )
    return text.strip()


def _cpus(env: Mapping[str, str], text: str, cpus_per_task: int) -> tuple[int, ...]:
    if env.get("SLURM_JOB_CPUS_PER_NODE", "").strip():
        return _slurm_value(parse_counts, "SLURM_JOB_CPUS_PER_NODE", text)
    tasks = _slurm_value(parse_counts, "SLURM_TASKS_PER_NODE", text)
    return tuple(n * cpus_per_task for n in tasks)


def _integer(name: str, text: str, minimum: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise MissingSlurmEnv(
            [name], detail=f"{name}={text!r} is not an integer >= {minimum}"
        ) from None
    return value


def _slurm_value(parse: Callable[[str], _T], name: str, text: str) -> _T:
    try:
        return parse(text)
    except UsageError as e:
        raise MissingSlurmEnv([name], detail=f"{name}: {e.message}") from e


def _check(env: SlurmEnv) -> None:
    problems = {
        "SLURM_JOB_CPUS_PER_NODE": (
            len(env.cpus_per_node) != len(env.nodes),
            f"the CPU counts name {len(env.cpus_per_node)} nodes "
            f"but the node list has {len(env.nodes)}: {', '.join(env.nodes)}",
        ),
        "SLURMD_NODENAME": (
            env.node_name not in env.nodes,
            f"this node {env.node_name!r} is not in the job's node list {', '.join(env.nodes)}",
        ),
        "SLURM_NODEID": (
            env.nodeid >= len(env.nodes),
            f"SLURM_NODEID={env.nodeid} but the job has {len(env.nodes)} nodes",
        ),
        "SLURM_PROCID": (
            env.procid >= env.ntasks,
            f"SLURM_PROCID={env.procid} is not below SLURM_NTASKS={env.ntasks}",
        ),
    }
    for name, (bad, detail) in problems.items():
        if bad:
            raise MissingSlurmEnv([name], detail=f"inconsistent Slurm variables: {detail}")
