"""The README's two commands work in a fresh Debian 12 root shell, which has no sudo."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]


def two_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```\n(.+?)\n```", section)


def test_the_two_commands_need_no_sudo_and_exist() -> None:
    commands = two_commands()
    assert commands == ["scripts/demo", "scripts/test"]
    for command in commands:
        assert os.access(ROOT / command, os.X_OK), command


def test_a_non_root_user_is_told_in_one_line_to_be_root() -> None:
    require(os.geteuid() == 0, "switching to another user needs root", "run as root")
    done = subprocess.run(
        ["runuser", "-u", "nobody", "--", "bash", str(ROOT / "scripts" / "install-deps")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().endswith("run it as root (a root shell; sudo where it is installed)")
    assert len(done.stderr.strip().splitlines()) == 1
