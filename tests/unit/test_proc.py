"""launcher.proc.alive: a process is alive until it ends; a zombie (ended, not yet reaped) is
not."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from launcher import proc


def test_a_running_process_is_alive_and_an_ended_one_is_not_even_before_it_is_reaped() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert proc.alive(child.pid)
        child.kill()
        # Not reaped yet: the kernel keeps it as a zombie until we wait for it.
        deadline = time.monotonic() + 10
        while proc.alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not proc.alive(child.pid)
        assert Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    finally:
        child.kill()
        child.wait()
    assert not proc.alive(child.pid)


def test_this_process_is_alive() -> None:
    assert proc.alive(os.getpid())
