"""The benchmarks' plumbing keeps working: the quick run of every suite writes its JSON,
plots and table. The figures are not asserted on: the machine is shared and noisy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def bench(tmp_path: Path, *words: str, timeout: float = 1200) -> None:
    """`python -m bench WORDS --out tmp_path` from the checkout; its output on failure."""
    argv = [sys.executable, "-m", "bench", *words, "--out", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


PLOTS = {"launch.png", "latency.png", "bandwidth.png", "collectives.png", "images.png", "hpl.png"}


def test_quick_bench_writes_results_plots_and_table(tmp_path: Path) -> None:
    bench(tmp_path, "--quick")
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


def test_quick_engines_bench_writes_results_and_judges_its_goals(tmp_path: Path) -> None:
    bench(tmp_path, "engines", "--quick", "--repeat", "1")
    result = json.loads((tmp_path / "engines.json").read_text())
    assert set(result["launch"]) == {"native", "docker", "podman"}
    assert all(0 < r["init_s"] <= r["end_s"] for r in result["launch"].values())
    for test in ("latency", "bandwidth"):
        curves = result["comm"][test]
        assert [r[0] for r in curves["podman"]] == [r[0] for r in curves["docker"]], test
    table = (tmp_path / "engines.md").read_text()
    assert "| latency between nodes | podman/docker ≤ 1.02 at every size |" in table
    assert "| launch at 3 nodes |" in table


def test_quick_families_bench_writes_results_and_judges_each_family(tmp_path: Path) -> None:
    chosen = ["mpich5", "mpich-host5"]
    bench(tmp_path, "families", "--quick", "--repeat", "1", "--families", *chosen, timeout=600)
    result = json.loads((tmp_path / "families.json").read_text())
    rows = {r["family"]: r for r in result["families"]}
    assert list(rows) == chosen
    assert rows["mpich-host5"]["options"][:2] == ["--host-mpi", "mpich5"]
    for name, row in rows.items():
        assert row["native"] == "mpich5", name
        assert row["failed"] == [], name
        for test in ("latency", "bandwidth"):
            sides = row[test]
            assert sides["container"], (name, test)
            assert [r[0] for r in sides["container"]] == [r[0] for r in sides["native"]]
    table = (tmp_path / "families.md").read_text()
    assert "| mpich5 | latency between nodes | container/native ≤ 1.02 at every size |" in table
    assert "| mpich-host5 | bandwidth between nodes | container/native ≥ 0.98 at" in table


def test_quick_direct_bench_writes_results_and_judges_the_pmix_mode(tmp_path: Path) -> None:
    bench(tmp_path, "direct", "--quick", "--repeat", "1")
    result = json.loads((tmp_path / "direct.json").read_text())
    for scope, tests in (("inter", ("latency", "bandwidth")), ("intra", ("bandwidth",))):
        for test in tests:
            curves = result["comm"][scope][test]
            sizes = [r[0] for r in curves["native"]]
            assert sizes, (scope, test)
            assert [r[0] for r in curves["pmix"]] == sizes == [r[0] for r in curves["ssh"]]
    assert all(g > 0 for g in result["hpl"]["gflops"].values())
    assert set(result["hpl"]["gflops"]) == {"native", "ssh", "pmix"}
    table = (tmp_path / "direct.md").read_text()
    assert "| latency between nodes | pmix/native ≤ 1.02 at every size |" in table
    assert "| HPL | ≥ 98% of native GFLOPS |" in table


def test_load_bench_counts_job_directory_calls_and_api_requests(tmp_path: Path) -> None:
    bench(tmp_path, "load", "--nodes", "1", "3")
    result = json.loads((tmp_path / "load.json").read_text())
    points = {(p["mode"], p["nodes"]): p for p in result["points"]}
    assert set(points) == {("ssh", 1), ("ssh", 3), ("pmix", 1), ("pmix", 3)}
    for (mode, n), point in points.items():
        assert set(point["per_node"]) == {f"sim{i}" for i in range(1, n + 1)}, (mode, n)
        assert point["api_calls_per_node"] > 0, (mode, n)  # every node starts a container
        assert point["shared_ops_per_node"] >= point["fs_ops_per_node"], (mode, n)
    assert points[("ssh", 3)]["fs_ops_per_node"] > 0  # the job directory's protocol
    assert "| mode | nodes | job s |" in (tmp_path / "load.md").read_text()
