"""The run record of a direct launch: one per step, written by the task of SLURM_PROCID 0
once its rank has ended (there is no leader that sees every node).

It holds what that task knows: the mode, the engine, the image, the step's nodes, its own
rank's exit status, and its node's image and container start seconds (it is that node's
first task). The other nodes' tasks write nothing: a record of theirs would cost the
shared filesystem a file per node per step.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from launcher.direct.plan import DirectPlan
from launcher.errors import LauncherError
from launcher.record import file_name, own_cost, runs_dir, write_json

INTERNAL_ERROR = 70  # cli.main's status for an unexpected exception (EX_SOFTWARE)
INTERRUPTED = 130


def build(
    plan: DirectPlan,
    *,
    nodes: Sequence[str],
    engine: dict[str, Any],
    started: float,
    ended: float,
    timings: dict[str, float],
    code: int | None,
    error: BaseException | None,
) -> dict[str, Any]:
    """The record as plain data (the shape `mpidock runs` reads: nodes, leader, exit_code)."""
    return {
        "job_id": plan.job_id, "step_id": plan.step_id, "launch": plan.mode,
        "started": started, "ended": ended, "image": plan.image, "engine": engine,
        "nodes": [{"node": node} for node in nodes],
        "leader": {"node": plan.node, "timings": timings, "self": own_cost()},
        "container_start_s": (
            {plan.node: timings["container"]} if "container" in timings else {}
        ),
        "rank": plan.procid, "exit_code": exit_code(code, error),
        "error": None if error is None else _error(error, plan.node),
    }  # fmt: skip


def exit_code(code: int | None, error: BaseException | None) -> int:
    """The task's status, as cli.main turns each outcome into one."""
    if error is None:
        return code if code is not None else INTERNAL_ERROR
    if isinstance(error, LauncherError):
        return error.exit_code
    return INTERRUPTED if isinstance(error, KeyboardInterrupt) else INTERNAL_ERROR


def _error(error: BaseException, node: str) -> dict[str, Any]:
    if isinstance(error, LauncherError):
        return {"message": error.message, "node": error.node or node, "kind": type(error).__name__}
    message = " ".join(f"{type(error).__name__}: {error}".split())
    return {"message": message, "node": node, "kind": "internal error"}


def write(home: str, record: dict[str, Any]) -> None:
    """Under the user's runs directory; a failure is said, never raised: the rank's
    outcome stands."""
    path = runs_dir(home) / file_name(record["job_id"], record["step_id"])
    try:
        write_json(path, record)
    except OSError as e:
        print(f"mpidock: cannot write the run record {path}: {e}", file=sys.stderr)
