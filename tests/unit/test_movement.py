"""Image movement without Docker: registry names, measurements, progress lines, handoffs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from launcher import movement
from launcher.movement import Meter, Moved, Wanted, registry_ref

MB = 1_000_000


@pytest.mark.parametrize(
    ("registry", "image", "ref"),
    [
        ("reg.site:5000", "cfd", "reg.site:5000/cfd"),
        ("reg.site:5000", "cfd:2.1", "reg.site:5000/cfd:2.1"),
        ("reg.site:5000", "lab/cfd:2.1", "reg.site:5000/lab/cfd:2.1"),
        ("reg.site:5000", "ghcr.io/lab/cfd:2.1", "ghcr.io/lab/cfd:2.1"),
        ("reg.site:5000", "other:5000/cfd", "other:5000/cfd"),
        ("reg.site:5000", "localhost/cfd", "localhost/cfd"),
        ("reg.site:5000", "localhost:5000/cfd:2.1", "localhost:5000/cfd:2.1"),
        ("reg.site:5000/", "lab/cfd", "reg.site:5000/lab/cfd"),
        ("reg.site/mirror/", "cfd", "reg.site/mirror/cfd"),
    ],
)
def test_registry_ref(registry: str, image: str, ref: str) -> None:
    assert registry_ref(registry, image) == ref


@pytest.mark.parametrize(
    ("moved", "seconds", "mb_per_s"),
    [
        (Moved("present"), 0.0, 0.0),
        (Moved("archive", 0, 2.0), 2.0, 0.0),
        (Moved("archive", 5, 0.0), 0.0, 0.0),
        (Moved("archive", 10 * MB, 3.0), 3.0, 3.3),
        (Moved("registry", 2_500_000, 0.12345), 0.123, 20.3),
    ],
)
def test_moved_to_dict(moved: Moved, seconds: float, mb_per_s: float) -> None:
    expected = {"path": moved.path, "bytes": moved.bytes, "seconds": seconds, "mb_per_s": mb_per_s}
    assert moved.to_dict() == expected


class Clock:
    """Stands in for the time module in launcher.movement; the test sets `now`."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def chunks_at(clock: Clock, times: list[float], size: int) -> Iterator[bytes]:
    for i, t in enumerate(times):
        clock.now = t
        yield bytes([i]) * size


@pytest.mark.parametrize(
    ("times", "lines"),
    [
        ([0.5, 1.0, 4.9], []),
        ([float(t) for t in range(1, 11)],
         ["loading a.tar: 10.0 MB of 20.0 MB (50%, 2 MB/s)",
          "loading a.tar: 20.0 MB of 20.0 MB (100%, 2 MB/s)"]),
        ([5.0, 7.0, 9.9, 40.0],
         ["loading a.tar: 2.0 MB of 20.0 MB (10%, 0 MB/s)",
          "loading a.tar: 8.0 MB of 20.0 MB (40%, 0 MB/s)"]),
    ],
)  # fmt: skip
def test_meter_counts_bytes_and_reports_every_few_seconds(
    monkeypatch: pytest.MonkeyPatch, times: list[float], lines: list[str]
) -> None:
    clock, said = Clock(), []
    monkeypatch.setattr(movement, "time", clock)
    meter = Meter(20 * MB, "loading a.tar", said.append)
    passed = list(meter.count(chunks_at(clock, times, 2 * MB)))
    assert passed == list(chunks_at(Clock(), times, 2 * MB))
    assert meter.done == 2 * MB * len(times)
    assert said == lines


@pytest.mark.parametrize(
    ("total", "done", "seconds", "line"),
    [
        (0, 0, 0.0, "x: 0 B of 0 B (100%, 0 MB/s)"),
        (3 * MB, 1 * MB, 0.0, "x: 1.0 MB of 3.0 MB (33%, 0 MB/s)"),
        (3 * MB, 3 * MB, 0.01, "x: 3.0 MB of 3.0 MB (100%, 300 MB/s)"),
    ],
)
def test_meter_line(total: int, done: int, seconds: float, line: str) -> None:
    meter = Meter(total, "x", print)
    meter.done = done
    assert meter.line(seconds) == line


@pytest.mark.parametrize("registry", ["", "reg.site:5000"])
def test_wanted_round_trips_through_json(registry: str) -> None:
    wanted = Wanted("lab/cfd:2.1", "sha256:" + "a" * 64, "/shared/mpidock/images", registry)
    assert Wanted(**json.loads(json.dumps(wanted.to_dict()))) == wanted
