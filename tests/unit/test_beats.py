"""Liveness by file: a real Beat thread touching a file, a Watch noticing when it stops."""

from __future__ import annotations

import shutil
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


def test_a_failed_write_is_logged_and_retried_and_the_beat_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "job"
    folder.mkdir()
    path = folder / "heartbeat"
    watch = Watch(path, SILENCE)
    with Beat(path, EVERY) as beat:
        wait_for(path.exists)
        shutil.rmtree(folder)  # every write fails now (ENOENT), as on a stale NFS handle
        time.sleep(EVERY * 4)
        assert beat.thread.is_alive()
        folder.mkdir()
        wait_for(path.exists)
        beating = poll(SILENCE * 2, watch.silent)
    assert not any(beating)
    assert not beat.thread.is_alive()
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if m.startswith(f"cannot write {path}")]) == 1  # not a flood
    assert any(m.startswith(f"writing {path} again") for m in said)


def wait_for(condition: Callable[[], bool], seconds: float = 3) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "it never happened"
        time.sleep(0.01)


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


def test_a_watcher_that_stood_still_gives_the_writer_a_new_silence_period(
    tmp_path: Path,
) -> None:
    # A suspended job: the watcher's own loop stopped (here: slept) longer than the
    # silence while nothing was written; it must not call the writer dead on waking.
    path = tmp_path / "heartbeat"
    path.write_text("0\n")
    watch = Watch(path, silence=SILENCE)
    time.sleep(1.5 * SILENCE)
    assert not watch.silent()
    assert SILENCE <= seconds_until_silent(watch) < 3 * SILENCE
