"""The testbed's size, as the benchmarks that widen it read and set it."""

from __future__ import annotations

import subprocess
import sys


def node_count() -> int:
    """The nodes Slurm knows now."""
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return len(set(out.split()))


def up(count: int) -> None:
    """`mpidock testbed up -N count`: widened, or narrowed back."""
    subprocess.run([sys.executable, "-m", "launcher", "testbed", "up", "-N", str(count)],
                   check=True)  # fmt: skip
