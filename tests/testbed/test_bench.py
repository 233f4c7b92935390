"""The benchmarks' plumbing keeps working: quick mode writes its results (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_bench_images_quick_writes_json_and_table(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "bench", "images", "--quick", "--out", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "images.json").read_text())
    assert set(result["median"]) == {"cold", "base present", "warm", "paper"}
    paths = {s: {f["path"] for f in nodes.values()} for s, nodes in result["median"].items()}
    assert paths["cold"] == {"built", "archive"}
    assert paths["warm"] == {"cached"}
    assert paths["base present"] == {"built"}
    assert result["summary"]["warm_bytes"] == 0
    assert "| paper | sim2 |" in (tmp_path / "images.md").read_text()
