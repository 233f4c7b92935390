"""Progress on stderr: one line per node per phase, `mpidock: NODE PHASE: TEXT`, and the
leader's summary at the end. `--quiet` silences it (errors still print); `--verbose` is
the debug log."""

from __future__ import annotations

import sys
from collections.abc import Mapping

QUIET = False  # set once, by slurm-entry's --quiet


def say(node: str, phase: str, text: str) -> None:
    if not QUIET:
        print(f"mpidock: {node} {phase}: {text}", file=sys.stderr, flush=True)


def summary(job_id: str, nodes: int, timings: Mapping[str, float], exit_code: int) -> None:
    parts = ", ".join(f"{phase} {seconds:.2f} s" for phase, seconds in timings.items())
    say(f"job {job_id}", "done", f"{nodes} nodes, exit {exit_code}; leader: {parts}")
