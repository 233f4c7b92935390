"""`mpidock check`'s proof of a direct launch: inside a Slurm allocation, 2 ranks on one
node through `srun --mpi=MODE mpidock slurm-entry --launch MODE`, running the image's MPI
hello. Outside one, or with nothing to prove, it is a note, never a failure.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from launcher.direct.support import Support, proof_argv, proof_passed
from launcher.record import read_json

STOP_WAIT = 30.0  # seconds srun has to end its step after SIGTERM


def prove(
    found: Support, image: str, engine: str, timeout: float, environ: Mapping[str, str]
) -> tuple[bool | None, str]:
    """Passed (True), failed (False) or not tried (None), and the detail to show."""
    if found.mode == "neither":
        return None, "not tried: no direct launch for this image"
    if not found.hello:
        return None, "not tried: no MPI hello in the image (mpi-hello, or python3 with mpi4py)"
    if not environ.get("SLURM_JOB_ID"):
        return None, "not tried: needs a Slurm allocation (salloc -N 1, then mpidock check IMAGE)"
    program = sys.argv[0] if Path(sys.argv[0]).name == "mpidock" else "mpidock"
    argv = proof_argv(found, image, engine, program)
    # The step's run record goes to a directory of the check's own, removed with it.
    with tempfile.TemporaryDirectory(prefix="mpidock-check-runs-") as runs:
        code, out = step(argv, timeout, {**environ, "MPIDOCK_RUNS_DIR": runs})
        started = container_start(Path(runs))
    if proof_passed(code, out):
        return True, f"ranks 0 and 1 ran through srun --mpi={found.mode}{started}"
    return False, f"srun --mpi={found.mode}: exit {code}: {said(out)}"


def container_start(runs: Path) -> str:
    """What the step's run record says of its container's start ("" without one)."""
    for path in runs.glob("*.json"):
        seconds = (read_json(path) or {}).get("container_start_s") or {}
        if isinstance(seconds, dict) and seconds:
            return f" (container started in {max(seconds.values()):.2f} s)"
    return ""


def step(argv: list[str], timeout: float, environ: Mapping[str, str]) -> tuple[int, str]:
    """Exit code and output of a Slurm step; after timeout seconds srun is asked to end
    it (SIGTERM, which srun passes to the tasks), then killed; -1 and why then."""
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", env=dict(environ),
        )  # fmt: skip
    except OSError as e:
        return -1, f"cannot run {argv[0]}: {e.strerror or e}"
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.communicate(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        return -1, f"`{shlex.join(argv)}` still running after {timeout:g} s"
    return proc.returncode, out


def said(output: str) -> str:
    """The step's first error line, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no output"])[0 if errors else -1]
