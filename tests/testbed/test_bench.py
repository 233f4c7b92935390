"""The benchmarks' plumbing keeps working: the quick run of every suite writes its JSON,
plots and table. The figures are not asserted on: the machine is shared and noisy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
PLOTS = {"launch.png", "latency.png", "bandwidth.png", "collectives.png", "images.png", "hpl.png"}


def test_quick_bench_writes_results_plots_and_table(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1200, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "bench.json").read_text())
    assert {"launch", "images", "comm", "hpl", "teardown", "self"} <= set(result)

    points = result["launch"]["points"]
    assert [p["nodes"] for p in points] == [1, 2, 3]
    assert all(0 < p["native_init_s"] <= p["native_end_s"] for p in points)
    assert all(0 < p["container_init_s"] <= p["container_end_s"] for p in points)
    assert set(result["teardown"]["per_node_s"]) == {"sim1", "sim2", "sim3"}
    assert all(c["max_rss_mb"] > 0 for c in result["self"]["per_node"].values())

    paths = {s: {f["path"] for f in n.values()} for s, n in result["images"]["median"].items()}
    assert paths == {"cold": {"built", "archive"}, "warm": {"cached"},
                     "base present": {"built"}, "paper": {"build+save", "+load"}}  # fmt: skip

    for where in ("inter", "intra"):
        for test in ("latency", "bandwidth", "bcast", "allreduce"):
            curves = result["comm"][where][test]
            assert curves["container"], (where, test)
            assert curves["native"], (where, test)
            assert [r[0] for r in curves["container"]] == [r[0] for r in curves["native"]]
    assert result["hpl"]["container_gflops"] > 0
    assert result["hpl"]["native_gflops"] > 0

    assert {p.name for p in tmp_path.iterdir()} >= PLOTS
    table = (tmp_path / "bench.md").read_text()
    assert "| launch overhead |" in table
    assert "![launch](launch.png)" in table
