"""Helpers shared by the unit tests.

Golden files live in tests/unit/golden; after an intended change of a generated text,
rewrite them with MPIDOCK_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"


def assert_golden(name: str, text: str) -> None:
    """Compares text with golden/NAME, or rewrites that file when MPIDOCK_UPDATE_GOLDEN=1."""
    path = GOLDEN / name
    if os.environ.get("MPIDOCK_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    if not path.exists():
        pytest.fail(f"no golden file {path}; create it with MPIDOCK_UPDATE_GOLDEN=1")
    assert text == path.read_text()


@pytest.fixture
def golden() -> Callable[[str, str], None]:
    """The golden-file comparison, as a fixture so test modules need no imports for it."""
    return assert_golden
