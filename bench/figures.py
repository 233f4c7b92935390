"""What the report's tables and plots share: the shapes of the results and how figures
and message sizes are written."""

from __future__ import annotations

import math
from typing import Any

Results = dict[str, Any]
Pair = dict[str, list[list[float]]]  # "container"/"native" -> [[size in bytes, value], ...]
Series = list[tuple[float, float]]  # (size in bytes, value), sorted by size
KiB, MiB = 1024, 1024 * 1024
SCOPES = {"inter": "between nodes", "intra": "within a node"}
UNITS = {"latency": "us", "bandwidth": "MB/s", "bcast": "us", "allreduce": "us"}


def num(x: float, digits: int = 3) -> str:
    """x to `digits` significant figures, no exponent, no trailing zeros: 1234, 1.2, 0.0123."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    places = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    text = f"{x:.{places}f}"
    return text.rstrip("0").rstrip(".") if places else text


def size_text(size: float) -> str:
    """A message size in binary units when it is a whole number of them: 8 B, 64 KiB."""
    n = int(size)
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def mb(n: float) -> str:
    """Bytes moved in decimal MB, as bench.images reports them."""
    return f"{num(n / 1e6)} MB"


def series(pair: Pair | None, who: str) -> Series:
    return sorted((float(s), float(v)) for s, v in (pair or {}).get(who, []))
