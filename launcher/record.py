"""Per-phase timings and the JSON run record of each job."""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from launcher import progress


class Timings:
    """Seconds spent in each named phase, in the order they ran; with a node, each phase
    that ends says so on stderr (the image phase says more, itself)."""

    def __init__(self, node: str = "") -> None:
        self.phases: dict[str, float] = {}
        self.node = node

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = round(time.monotonic() - start, 4)
            if self.node and name != "image":
                progress.say(self.node, name, f"{self.phases[name]:.2f} s")


def own_cost() -> dict[str, float]:
    """This process's peak resident memory (MB) and CPU seconds so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "max_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
    }


def runs_dir(home: str) -> Path:
    return Path(os.environ.get("MPIDOCK_RUNS_DIR") or Path(home) / ".mpidock" / "runs")


def file_name(job_id: str, step_id: str | None) -> str:
    """``<job>.json``; a later step of the job (a second srun) gets ``<job>.<step>.json``."""
    later = step_id not in (None, "", "0")
    return f"{job_id}.{step_id}.json" if later else f"{job_id}.json"


def write_json(path: Path, data: dict[str, Any], *, make_parents: bool = True) -> None:
    """Write atomically: readers on other nodes never see half a file.

    Without make_parents a missing directory raises FileNotFoundError: reports into a
    job directory must never bring back one the leader has removed.
    """
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    partial.replace(path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in the file; None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def human_size(n: int) -> str:
    """Decimal units, as `docker images` prints them."""
    value, unit = float(n), "B"
    for bigger in ("kB", "MB", "GB", "TB"):
        if value < 999.95:
            break
        value, unit = value / 1000, bigger
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
