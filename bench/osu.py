"""Curves from the OSU micro-benchmarks' output and from mpi4py's pingpong benchmark.

`parse` reads what OMB's osu_latency, osu_bw, osu_bcast and osu_allreduce print, and
what the image's `mpidock-osu` prints in their place (launcher/testbed/dockerfiles/src/mpi_osu.c):

    # OSU MPI Latency Test v7.3
    # Size          Latency (us)
    0                       0.22

Other comment lines that OMB adds ("# Datatype: MPI_CHAR.", above or below the column
header) are skipped, and so is anything before the title line (mpirun's and the
fabric's warnings). A row's first number after the size is the figure: columns that
follow it (OMB's -f min/max, validation) are ignored.

`parse_mpi4py_pingpong` reads `python -m mpi4py.bench pingpong` (mpi4py 4.0 or later;
Debian 12's 3.1.4 has no pingpong). `ratio` compares two curves size by size.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from itertools import pairwise

# OMB's title (between "OSU MPI" and the version) -> (test, unit).
TESTS = {
    "Latency Test": ("latency", "us"),
    "Bandwidth Test": ("bandwidth", "MB/s"),
    "Broadcast Latency Test": ("bcast", "us"),
    "Allreduce Latency Test": ("allreduce", "us"),
}
# "-CUDA", "-ROCM", ... when OMB runs on device buffers.
_TITLE = re.compile(r"# OSU MPI(?:-\w+)? (?P<title>.+?)(?: v\S+)?")
_COLUMNS = re.compile(r"# Size\s+(?P<column>\S.*)")
_UNIT = re.compile(r"\((us|MB/s)\)")
_PINGPONG_TITLE = "# MPI PingPong Test"
_PINGPONG_COLUMNS = re.compile(r"# Size \[B\]\s+Bandwidth \[MB/s\](?P<stats> \|.*)?")
# "%10d%18.2f", then with stats " | %.7e ± %.4e %8d".
_PINGPONG_ROW = re.compile(r"\s*(\d+)\s+(\S+)(?:\s+\|\s+(\S+)\s+±\s+\S+\s+\d+)?")


@dataclass(frozen=True)
class Curve:
    """One benchmark's figures by message size.

    Attributes:
        test: "latency", "bandwidth", "bcast", "allreduce" or "pingpong".
        unit: "us" (a latency, lower is better) or "MB/s" (a bandwidth, 1 MB = 1e6 bytes).
        rows: (size in bytes, figure) with sizes strictly increasing.
    """

    test: str
    unit: str
    rows: tuple[tuple[int, float], ...]


def parse(text: str) -> Curve:
    """Reads one OSU benchmark's output.

    Args:
        text: the standard output of one run of a supported test.

    Returns:
        The curve, with its test and unit taken from the title line.

    Raises:
        ValueError: no title line, an unsupported test, a second title, a column header
            whose unit does not fit the test, a row that is not a size and a number,
            sizes out of order, or no rows at all; the message names the line.
    """
    lines = text.splitlines()
    start, test, unit = _find_title(lines)
    rows: list[tuple[int, float]] = []
    columns_seen = False
    for number, line in enumerate(lines[start + 1 :], start + 2):
        if _TITLE.fullmatch(line.strip()):
            raise ValueError(f"line {number}: a second OSU title; expected one test per text")
        if line.startswith("#"):
            columns = _COLUMNS.fullmatch(line.strip())
            if columns:
                _check_unit(number, columns["column"], test, unit)
                columns_seen = True
            continue
        if not line.strip():
            continue
        if not columns_seen:
            raise ValueError(f"line {number}: a row before the '# Size' column header")
        rows.append(_row(number, line.split()))
    return Curve(test, unit, _checked(rows))


def parse_mpi4py_pingpong(text: str) -> Curve:
    """Reads the output of `python -m mpi4py.bench pingpong`.

    With its statistics (the default) the figure is the mean one-way time in
    microseconds, as OSU's latency; with `--no-stats` only the bandwidth is printed, so
    the figure is that, in MB/s.

    Args:
        text: the standard output of one pingpong run, its header included.

    Returns:
        A curve whose test is "pingpong" and whose unit is "us" or "MB/s" as above.

    Raises:
        ValueError: no "# MPI PingPong Test" title, no column header, a malformed row,
            sizes out of order, or no rows; the message names the line.
    """
    lines = text.splitlines()
    titles = [index for index, line in enumerate(lines) if line.strip() == _PINGPONG_TITLE]
    if not titles:
        raise ValueError(f"no '{_PINGPONG_TITLE}' title line (was it run with --no-header?)")
    body = [
        (n, line) for n, line in enumerate(lines[titles[0] + 1 :], titles[0] + 2) if line.strip()
    ]
    columns = _PINGPONG_COLUMNS.fullmatch(body[0][1].strip()) if body else None
    if not columns:
        raise ValueError(
            f"line {titles[0] + 2}: no '# Size [B]  Bandwidth [MB/s]' column header after the title"
        )
    stats = columns["stats"] is not None
    rows = [_pingpong_row(number, line, stats) for number, line in body[1:]]
    return Curve("pingpong", "us" if stats else "MB/s", _checked(rows))


def ratio(container: Curve, native: Curve) -> list[tuple[int, float]]:
    """Container figure over native figure, for each size both curves have.

    Args:
        container: the curve measured inside containers.
        native: the same test and unit measured natively.

    Returns:
        (size, container / native) by increasing size. Above 1 is slower for a latency
        and faster for a bandwidth.

    Raises:
        ValueError: the curves differ in test or unit, or a native figure is 0.
    """
    if (container.test, container.unit) != (native.test, native.unit):
        raise ValueError(
            f"cannot compare {container.test} in {container.unit} "
            f"with {native.test} in {native.unit}"
        )
    base = dict(native.rows)
    result: list[tuple[int, float]] = []
    for size, value in container.rows:
        if size in base:
            if base[size] == 0:
                raise ValueError(f"native {native.test} at {size} bytes is 0: no ratio")
            result.append((size, value / base[size]))
    return result


def _find_title(lines: list[str]) -> tuple[int, str, str]:
    """The title's index, and the test and unit it names."""
    for index, line in enumerate(lines):
        title = _TITLE.fullmatch(line.strip())
        if title:
            if title["title"] not in TESTS:
                supported = ", ".join(sorted(TESTS))
                raise ValueError(
                    f"line {index + 1}: unsupported OSU test {title['title']!r} "
                    f"(supported: {supported})"
                )
            return (index, *TESTS[title["title"]])
    raise ValueError("no OSU title line ('# OSU MPI ... Test v...') found")


def _check_unit(number: int, column: str, test: str, unit: str) -> None:
    """Fails unless the column header's first figure is in the test's unit."""
    found = _UNIT.search(column)
    if not found or found[1] != unit:
        raise ValueError(
            f"line {number}: column header {column!r} is not in {unit}, as {test} should be"
        )


def _row(number: int, fields: list[str]) -> tuple[int, float]:
    """(size, figure) from a row's fields."""
    try:
        size, value = int(fields[0]), float(fields[1])
    except (IndexError, ValueError):
        raise ValueError(
            f"line {number}: expected a size and a number, got {' '.join(fields)!r}"
        ) from None
    if size < 0:
        raise ValueError(f"line {number}: negative size {size}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"line {number}: figure {fields[1]!r} is not a finite number >= 0")
    return size, value


def _pingpong_row(number: int, line: str, stats: bool) -> tuple[int, float]:
    """(size, microseconds or MB/s) from one pingpong row."""
    row = _PINGPONG_ROW.fullmatch(line)
    if not row or (stats and row[3] is None):
        shape = "SIZE BANDWIDTH | MEAN ± STDDEV SAMPLES" if stats else "SIZE BANDWIDTH"
        raise ValueError(f"line {number}: expected {shape!r}, got {line.strip()!r}")
    size, value = _row(number, [row[1], row[3] if stats else row[2]])
    return size, value * 1e6 if stats else value


def _checked(rows: list[tuple[int, float]]) -> tuple[tuple[int, float], ...]:
    """The rows, once they are known to be some and in increasing size."""
    if not rows:
        raise ValueError("no rows after the header: did the benchmark fail?")
    for (before, _), (size, _) in pairwise(rows):
        if size <= before:
            raise ValueError(f"size {size} after {before}: sizes must increase (one run per text)")
    return tuple(rows)
