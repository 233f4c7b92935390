"""Liveness by file: a real Beat thread touching a file, a Watch noticing when it stops."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from launcher.beats import Beat, Watch

EVERY = 0.05
SILENCE = 0.3


def poll(seconds: float, sample: Callable[[], object]) -> list[object]:
    """Samples every 10 ms for `seconds`."""
    samples, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(sample())
        time.sleep(0.01)
    return samples


def seconds_until_silent(watch: Watch) -> float:
    started = time.monotonic()
    while not watch.silent():
        assert time.monotonic() - started < 3, "the watch never fell silent"
        time.sleep(0.01)
    return time.monotonic() - started


def test_beat_touches_the_file_until_the_block_ends(tmp_path: Path) -> None:
    path = tmp_path / "moving.sim2"
    with Beat(path, EVERY) as beat:
        stamps = poll(0.3, lambda: path.exists() and path.stat().st_mtime_ns)
    assert len(set(stamps) - {False}) >= 3
    assert not beat.thread.is_alive()
    stopped = path.stat().st_mtime_ns
    assert set(poll(0.15, lambda: path.stat().st_mtime_ns)) == {stopped}


def test_a_beat_that_cannot_write_ends_quietly(tmp_path: Path) -> None:
    with Beat(tmp_path / "gone" / "moving.sim2", 0.01) as beat:
        beat.thread.join(timeout=1)
        assert not beat.thread.is_alive()


def test_a_watch_is_not_silent_while_a_beat_runs_and_silent_after(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    watch = Watch(path, silence=SILENCE)
    with Beat(path, EVERY):
        assert not any(poll(2 * SILENCE, watch.silent))
    # The last beat came at most EVERY before the block ended.
    assert SILENCE - EVERY <= seconds_until_silent(watch) < 3 * SILENCE


@pytest.mark.parametrize("exists", [False, True])
def test_a_file_that_never_changes_falls_silent(tmp_path: Path, exists: bool) -> None:
    path = tmp_path / "heartbeat"
    if exists:
        path.write_text("0\n")
    watch = Watch(path, silence=SILENCE)
    assert not watch.silent()
    assert SILENCE <= seconds_until_silent(watch) < 3 * SILENCE
