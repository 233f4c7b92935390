"""Running host commands: argv lists only, always with a deadline."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from launcher.errors import CommandFailed, LauncherError

log = logging.getLogger(__name__)


def run(
    argv: Sequence[str],
    *,
    timeout: float = 120.0,
    check: bool = True,
    input_bytes: bytes | None = None,
    env: Mapping[str, str] | None = None,
    hint: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run argv to completion and capture its output as text.

    Raises:
        CommandFailed: the command exited non-zero (when check) or could not be started.
        LauncherError: the command outlived its deadline; it has been killed.
    """
    log.debug("run: %s", shlex.join(argv))
    try:
        done = subprocess.run(
            list(argv),
            input=input_bytes.decode() if input_bytes is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL if input_bytes is None else None,
        )
    except FileNotFoundError as e:
        raise CommandFailed(argv, 127, f"{argv[0]}: not found", hint=hint) from e
    except subprocess.TimeoutExpired as e:
        raise LauncherError(f"{shlex.join(argv)} did not finish within {timeout:.0f} s") from e
    if check and done.returncode != 0:
        raise CommandFailed(argv, done.returncode, done.stderr or done.stdout, hint=hint)
    return done


def succeeds(argv: Sequence[str], *, timeout: float = 30.0) -> bool:
    """True when argv exits 0 within the deadline; never raises."""
    try:
        return run(argv, timeout=timeout, check=False).returncode == 0
    except LauncherError:
        return False


def alive(pid: int) -> bool:
    """True while process pid exists and is not a zombie (ended, not yet reaped); a
    process of another user counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
