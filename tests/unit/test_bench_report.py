"""The benchmark report from results dicts alone: goals judged, tables written, plots drawn."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.report import Goal, goals, markdown, num, size_text, table, write_report

KiB, MiB = 1024, 1024 * 1024
PNG = b"\x89PNG\r\n\x1a\n"
SIZES = (0, 8, 8 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB)
PLOTS = {"launch", "latency", "bandwidth", "collectives", "images", "hpl"}


def pair(native: Callable[[int], float], factor: Callable[[int], float]) -> dict[str, Any]:
    """Container and native series over SIZES; container = native * factor(size)."""
    return {
        "container": [[s, native(s) * factor(s)] for s in SIZES],
        "native": [[s, native(s)] for s in SIZES],
    }


def latency(size: int) -> float:
    return 1.5 + size / 5000


def bandwidth(size: int) -> float:
    return min(10_000.0, 1 + size / 100)


def image_figures(seconds: float, moved: int, path: str) -> dict[str, Any]:
    """The first node holds the image; the others move `moved` bytes each."""
    first = {"seconds": min(seconds, 0.8), "bytes": 0, "path": "built" if moved else path}
    other = {"seconds": seconds, "bytes": moved, "path": path}
    return {"sim1": first, "sim2": dict(other), "sim3": dict(other)}


FULL: dict[str, Any] = {
    "quick": True,
    "repeat": 2,
    "started": "2026-11-28T01:00:00Z",
    "duration_s": 412.5,
    "nodes": ["sim1", "sim2", "sim3", "sim4"],
    "launch": {
        "points": [
            {"nodes": n, "container_init_s": 1.5 + 0.1 * n, "container_end_s": 2.2 + 0.08 * n,
             "native_init_s": 0.6 + 0.05 * n, "native_end_s": 0.9 + 0.05 * n}
            for n in (1, 2, 3, 4)
        ],
        "overhead_s": {"1": 1.1, "2": 1.2, "3": 1.4, "4": 1.6},
        "growth_s_per_node": 0.17,
    },
    "images": {
        "median": {
            "cold": image_figures(7.2, 641_596_416, "archive"),
            "base present": image_figures(0.95, 0, "built"),
            "warm": image_figures(0.005, 0, "cached"),
            "paper": image_figures(6.1, 641_610_240, "+load"),
        },
        "summary": {"cold_over_paper": 1.189, "base_present_over_paper": 0.168},
    },
    "comm": {
        "inter": {
            "latency": pair(latency, lambda s: 1.05 if s == 8 else 1.01),
            "bandwidth": pair(bandwidth, lambda s: 0.99 if s >= 64 * KiB else 0.5),
            "bcast": pair(latency, lambda s: 1.1),
            "allreduce": pair(latency, lambda s: 1.2),
        },
        "intra": {
            "latency": pair(lambda s: 0.3 + s / 20_000, lambda s: 1.0),
            "bandwidth": pair(bandwidth, lambda s: 0.95 if s >= MiB else 0.5),
            "bcast": pair(latency, lambda s: 1.0),
            "allreduce": pair(latency, lambda s: 1.0),
        },
        "mpi4py": pair(lambda s: 3 + s / 4000, lambda s: 1.02),
    },
    "hpl": {"container_gflops": 12.0, "native_gflops": 12.5, "n": 4000, "nb": 128, "ranks": 2,
            "ratio": 0.96},
    "teardown": {"per_node_s": {"sim1": 0.31, "sim2": 1.2}},
    "self": {"per_node": {"sim1": {"max_rss_mb": 61.2, "cpu_s": 0.9},
                          "sim2": {"max_rss_mb": 58.0, "cpu_s": 0.7}}},
}  # fmt: skip

FULL_MET = {
    "launch overhead": True,
    "launch overhead growth": False,
    "warm image phase": True,
    "cold image movement": True,
    "latency between nodes": False,
    "bandwidth between nodes": True,
    "bandwidth within a node": True,
    "HPL": False,
    "teardown": False,
    "slurm-entry peak memory": True,
}

PARTIAL: dict[str, Any] = {
    "quick": False,
    "launch": {"points": copy.deepcopy(FULL["launch"]["points"])},
    "hpl": {"container_gflops": 12.4, "native_gflops": 12.5},
}


def judged(results: dict[str, Any]) -> dict[str, bool | None]:
    return {g.name: g.met for g in goals(results)}


def goal(results: dict[str, Any], name: str) -> Goal:
    return next(g for g in goals(results) if g.name == name)


def section(text: str, heading: str) -> str:
    """The text under a `## heading` up to the next one."""
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def tables(text: str) -> list[list[str]]:
    blocks = [block.splitlines() for block in text.split("\n\n")]
    return [lines for lines in blocks if lines and lines[0].startswith("|")]


def test_every_goal_of_a_full_run_is_judged_met_or_missed() -> None:
    assert judged(FULL) == FULL_MET


def test_a_full_report_writes_every_plot_as_a_png_and_links_it(tmp_path: Path) -> None:
    written = write_report(FULL, tmp_path / "out")
    assert {p.name for p in written} == {f"{name}.png" for name in PLOTS} | {"bench.md"}
    for path in written:
        assert path.exists()
        if path.suffix == ".png":
            assert path.read_bytes().startswith(PNG)
    text = (tmp_path / "out" / "bench.md").read_text()
    for name in PLOTS:
        assert f"![{name}]({name}.png)" in text


def test_each_goal_has_a_row_and_no_miss_is_hidden() -> None:
    text = markdown(FULL, [])
    for g in goals(FULL):
        met = {True: "yes", False: "**no**"}[FULL_MET[g.name]]
        assert f"| {g.name} | {g.target} | {g.measured} | {met} |" in text
    assert "6 of 10 goals met. Missed: launch overhead growth, latency between nodes, HPL, " in text
    assert "| latency between nodes | container/native ≤ 1.02 at every size | " in text
    assert "worst 1.050 at 8 B, median 1.010 | **no** |" in text


def test_a_partial_run_reports_what_is_there_and_leaves_the_rest_out(tmp_path: Path) -> None:
    written = write_report(PARTIAL, tmp_path)
    assert [p.name for p in written] == ["launch.png", "hpl.png", "bench.md"]
    assert all(p.read_bytes().startswith(PNG) for p in written[:2])
    assert judged(PARTIAL) == {"launch overhead": True, "launch overhead growth": True, "HPL": True}
    text = (tmp_path / "bench.md").read_text()
    assert "- mode: full" in text
    assert "## Launch" in text
    assert "## HPL" in text
    for absent in ("Image movement", "Communication", "Teardown", "Launcher's own cost"):
        assert f"## {absent}" not in text
    for absent in ("latency", "bandwidth", "collectives", "images"):
        assert f"![{absent}]" not in text
        assert not (tmp_path / f"{absent}.png").exists()
    assert "- started" not in text


def test_nothing_measured_is_a_report_without_goals(tmp_path: Path) -> None:
    assert write_report({}, tmp_path) == [tmp_path / "bench.md"]
    assert "No goal could be judged" in (tmp_path / "bench.md").read_text()


def test_launch_without_3_nodes_is_judged_at_the_largest_count_below_and_says_so() -> None:
    results = {"launch": {"overhead_s": {"1": 1.0, "2": 1.6, "4": 1.2}}}
    found = goal(results, "launch overhead")
    assert found == Goal(
        "launch overhead", "≤ 1.5 s over native at 3 nodes", "1.6 s (at 2 nodes: no 3-node point)",
        False,
    )  # fmt: skip


def test_overhead_and_its_growth_come_from_the_points_when_the_run_left_them_out() -> None:
    launch = PARTIAL["launch"]
    assert report.launch_overhead(launch)[3] == pytest.approx(1.39)
    growth = goal(PARTIAL, "launch overhead growth")
    assert (growth.measured, growth.met) == ("0.03 s per node", True)


def test_the_image_summarys_cold_flag_decides_when_present() -> None:
    results = copy.deepcopy(FULL)
    results["images"]["summary"]["goal_cold_at_most_one_load_per_node"] = False
    assert goal(results, "cold image movement").met is False
    del results["images"]["summary"]
    results["images"]["median"]["cold"]["sim2"]["bytes"] = 2 * 641_596_416
    assert goal(results, "cold image movement").met is False


def test_cold_without_the_paper_and_its_flag_is_undecided_not_hidden() -> None:
    results = {"images": {"median": {"cold": FULL["images"]["median"]["cold"]}}}
    cold = goal(results, "cold image movement")
    assert (cold.measured, cold.met) == ("642 MB at most on a node", None)
    assert "| undecided |" in markdown(results, [])
    assert "0 of 1 goals met. Undecided: cold image movement." in markdown(results, [])


def test_bandwidth_with_no_large_size_is_judged_at_the_largest() -> None:
    small = {"container": [[8, 1.0], [4096, 90.0]], "native": [[8, 1.0], [4096, 100.0]]}
    results = {"comm": {"inter": {"bandwidth": small}}}
    found = goal(results, "bandwidth between nodes")
    assert (found.measured, found.met) == ("worst 0.900 at 4 KiB, median 0.900", False)


def test_comm_tables_show_representative_sizes_with_ratios() -> None:
    text = section(markdown(FULL, []), "Communication")
    between = text.split("### Between nodes\n\n", 1)[1].split("\n\n", 1)[0]
    sizes = [line.split(" | ")[2] for line in between.splitlines()[2:] if "| latency |" in line]
    assert sizes == ["0 B", "8 KiB", "64 KiB", "1 MiB"]
    assert "| bandwidth | MB/s | 1 MiB | 9900 | 10000 | 0.990 |" in between
    assert "| allreduce | us | 8 KiB | 3.77 | 3.14 | 1.200 |" in between
    assert "### Within a node" in text
    assert "### mpi4py" in text


def test_hpl_shows_each_repetition_and_the_native_spread_beside_the_judged_ratio() -> None:
    hpl = {"container_gflops": 4.22, "native_gflops": 4.33,
           "runs": {"native": [4.33, 4.43, 4.23], "container": [4.30, 4.22, 4.22]}}  # fmt: skip
    text = "\n".join(report.hpl_lines(hpl, []))
    assert "| 2 | 4.43 | 4.22 | 0.953 |" in text
    assert "spread over 4.6% of their median" in text
    assert report.hpl_run_lines({"runs": {"native": [4.3], "container": [4.2]}}) == []


def test_every_table_is_well_formed() -> None:
    found = tables(markdown(FULL, []))
    assert len(found) == 9  # goals, launch, images, 3 comm and mpi4py, HPL, teardown, self
    for lines in found:
        widths = {line.count(" | ") for line in lines if not line.startswith("|-")}
        assert len(widths) == 1
        assert all(line.startswith("|") and line.endswith("|") for line in lines)
        assert set(lines[1].strip("|").split("|")) <= {"---", "---:"}
        assert lines[1].count("|") == lines[0].count(" | ") + 2


def test_a_table_escapes_pipes_and_right_aligns_numbers() -> None:
    text = table(("node", "what", "seconds"), [("a|b", "x", 1.5)], numeric=1)
    assert text == "| node | what | seconds |\n|---|---|---:|\n| a\\|b | x | 1.5 |"


@pytest.mark.parametrize(
    ("x", "text"),
    [(0, "0"), (1.2, "1.2"), (1.456, "1.46"), (0.00812, "0.00812"), (0.05, "0.05"),
     (412.5, "412"), (12345.6, "12346"), (-0.0213, "-0.0213")],
)  # fmt: skip
def test_figures_have_three_significant_digits(x: float, text: str) -> None:
    assert num(x) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (1, "1 B"), (1000, "1000 B"), (8 * KiB, "8 KiB"), (MiB, "1 MiB"),
     (3 * MiB, "3 MiB"), (MiB + KiB, "1025 KiB")],
)  # fmt: skip
def test_sizes_in_binary_units(size: int, text: str) -> None:
    assert size_text(size) == text
