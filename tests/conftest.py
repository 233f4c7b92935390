"""The fixture every tier but the pure one stands on: the testbed, brought up once.

`mpidock testbed up` starts (or repairs) the host Docker engine with the example images
and the 3-node cluster. It needs root: outside CI a non-root run skips the docker and
testbed tiers; in CI a skip would hide them, so it fails instead (see require).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

MPIDOCK = [sys.executable, "-m", "launcher"]
NODE_COUNT = 3
TIERS = {"docker": ("docker",), "testbed": ("testbed", "slow")}


def run(argv: Sequence[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """argv as the caller (root) on the host, output captured, never raising on failure."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)


def require(present: bool, what: str, fix: str) -> None:
    """Skips a test whose prerequisite is missing, outside CI only: in CI it fails.

    CI installs every prerequisite, so a skip there would hide an untested tier.
    """
    if present:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} in CI; {fix}")
    pytest.skip(f"{what} ({fix})")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each tier's tests carry its markers, so `-m "not testbed"` selects by tier."""
    here = Path(__file__).parent
    for item in items:
        tier = Path(item.path).relative_to(here).parts[0]
        for marker in TIERS.get(tier, ()):
            item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(scope="session")
def testbed() -> None:
    """The running testbed and host engine, brought up (or repaired) once per session."""
    require(os.geteuid() == 0, "the docker and testbed tiers need root", "run scripts/test as root")
    done = run([*MPIDOCK, "testbed", "up", "-N", str(NODE_COUNT)], timeout=1800)
    assert done.returncode == 0, f"testbed up failed:\n{done.stderr}"


@pytest.fixture
def root() -> None:
    """The test makes files or directories of another user: it needs root (fails in CI
    without it, skips elsewhere)."""
    require(os.geteuid() == 0, "giving files to another user needs root", "run as root")
