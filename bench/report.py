"""The report of a benchmark run: goals judged, tables and plots from one results dict.

`write_report(results, out_dir)` writes bench.md and a PNG for each plot whose data is
there, drawn by bench.plots. Every section of results is optional; a missing one is left
out, so a partial run reports what it has.

How goals are judged (decided here, stated again in the report):
- A ratio is container / native at one message size, over the sizes both series have.
- Latency between nodes: the worst ratio over all sizes must be at most 1.02 (the median
  is shown beside it). Bandwidth between nodes: the worst ratio over sizes of 64 KiB and
  up must be at least 0.98; smaller messages measure latency, judged above. Bandwidth
  within a node: the worst ratio at 1 MiB and up, at least 0.90. With no size that large,
  the largest size present stands in (the measured text names the size).
- Launch overhead at 3 nodes, else at the largest node count below 3 (named), else at the
  smallest present; growth is the run's least-squares slope, or computed here if absent.
- Cold images: images.summary's goal flag when present, else every node moved at most the
  paper's archive plus 5% and 1 MB (the rule of bench.images.summary).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.figures import (
    SCOPES,
    UNITS,
    KiB,
    MiB,
    Pair,
    Results,
    Series,
    mb,
    num,
    series,
    size_text,
)  # fmt: skip
from bench.plots import draw_all

MET = {True: "yes", False: "**no**", None: "undecided"}


@dataclass(frozen=True)
class Goal:
    """One goal; met is None when the data present cannot decide it."""

    name: str
    target: str
    measured: str
    met: bool | None


# Formatting


def cell(x: float | None) -> str:
    return "n/a" if x is None else num(x)


def table(header: Sequence[str], rows: Iterable[Sequence[object]], numeric: int = 0) -> str:
    """A Markdown table whose last `numeric` columns are right-aligned."""

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    align = ["---"] * (len(header) - numeric) + ["---:"] * numeric
    return "\n".join([line(header), "|" + "|".join(align) + "|", *map(line, rows)])


# Judging


def ratios(pair: Pair | None) -> Series:
    """container / native at each size both have (a native 0 cannot divide)."""
    native = dict(series(pair, "native"))
    return [(s, v / native[s]) for s, v in series(pair, "container") if native.get(s)]


def from_size(found: Series, least: int) -> Series:
    """The ratios at sizes of at least `least`, or at the largest size if none is."""
    return [p for p in found if p[0] >= least] or found[-1:]


def ratio_goal(name: str, found: Series, limit: float, lower: bool, least: int) -> Goal:
    """The worst ratio judged against limit (lower or higher is better), median beside it."""
    sizes = f"at every size ≥ {size_text(least)}" if least else "at every size"
    target = f"container/native {'≤' if lower else '≥'} {limit:.2f} {sizes}"
    if not found:
        return Goal(name, target, "no size measured both ways", None)
    size, worst = (max if lower else min)(found, key=lambda p: p[1])
    middle = statistics.median(r for _, r in found)
    measured = f"worst {worst:.3f} at {size_text(size)}, median {middle:.3f}"
    return Goal(name, target, measured, worst <= limit if lower else worst >= limit)


def launch_overhead(launch: Results) -> dict[int, float]:
    """Overhead over native per node count, from the run or from its points."""
    if "overhead_s" in launch:
        return {int(n): float(s) for n, s in launch["overhead_s"].items()}
    return {
        p["nodes"]: p["container_end_s"] - p["native_end_s"]
        for p in launch.get("points", [])
        if "container_end_s" in p and "native_end_s" in p
    }


def launch_goals(launch: Results) -> list[Goal]:
    found, overhead = [], launch_overhead(launch)
    if overhead:
        at = max((n for n in overhead if n <= 3), default=min(overhead))
        where = "" if at == 3 else f" (at {at} nodes: no 3-node point)"
        target, measured = "≤ 1.5 s over native at 3 nodes", f"{num(overhead[at])} s{where}"
        found.append(Goal("launch overhead", target, measured, overhead[at] <= 1.5))
    growth = launch.get("growth_s_per_node")
    if growth is None and len(overhead) >= 2:
        growth = statistics.linear_regression(list(overhead), list(overhead.values())).slope
    if growth is not None:
        target, measured = "≤ 0.05 s per node", f"{num(growth)} s per node"
        found.append(Goal("launch overhead growth", target, measured, growth <= 0.05))
    return found


def cold_goal(median: Results, flag: bool | None) -> Goal:
    most = max(f["bytes"] for f in median["cold"].values())
    archive = max((f["bytes"] for f in median.get("paper", {}).values()), default=0)
    measured, met = f"{mb(most)} at most on a node", flag
    if archive:
        measured += f"; one load is {mb(archive)}"
        met = most <= archive * 1.05 + 1e6 if met is None else met
    return Goal("cold image movement", "≤ one image load per node", measured, met)


def image_goals(images: Results) -> list[Goal]:
    found, median = [], images.get("median", {})
    if median.get("warm"):
        warm = median["warm"].values()
        slowest, moved = max(f["seconds"] for f in warm), sum(f["bytes"] for f in warm)
        target, measured = "≤ 0.2 s and 0 bytes per node", f"{num(slowest)} s, {moved} bytes"
        found.append(Goal("warm image phase", target, measured, slowest <= 0.2 and moved == 0))
    if median.get("cold"):
        flag = images.get("summary", {}).get("goal_cold_at_most_one_load_per_node")
        found.append(cold_goal(median, flag))
    return found


# scope, measure, goal, limit, lower is better, judged from this size up
COMM_GOALS = (
    ("inter", "latency", "latency between nodes", 1.02, True, 0),
    ("inter", "bandwidth", "bandwidth between nodes", 0.98, False, 64 * KiB),
    ("intra", "bandwidth", "bandwidth within a node", 0.90, False, MiB),
)


def comm_goals(comm: Results) -> list[Goal]:
    found = []
    for scope, measure, name, limit, lower, least in COMM_GOALS:
        if pair := comm.get(scope, {}).get(measure):
            found.append(ratio_goal(name, from_size(ratios(pair), least), limit, lower, least))
    return found


def hpl_ratio(hpl: Results) -> float | None:
    """container / native GFLOPS when both are there, else the run's own ratio if any."""
    container, native = hpl.get("container_gflops"), hpl.get("native_gflops")
    found: float | None = container / native if container and native else hpl.get("ratio")
    return found


def hpl_goals(hpl: Results) -> list[Goal]:
    container, native, ratio = hpl.get("container_gflops"), hpl.get("native_gflops"), hpl_ratio(hpl)
    target = "≥ 98% of native GFLOPS"
    if ratio is None:
        return [Goal("HPL", target, "no ratio", None)]
    measured = f"{ratio:.2%} of native"
    if container and native:
        measured += f" ({num(container)} vs {num(native)} GFLOPS)"
    return [Goal("HPL", target, measured, ratio >= 0.98)]


def worst_node(
    name: str, target: str, per_node: dict[str, float], unit: str, limit: float
) -> list[Goal]:
    if not per_node:
        return []
    node, value = max(per_node.items(), key=lambda kv: kv[1])
    return [Goal(name, target, f"max {num(value)} {unit} ({node})", value <= limit)]


def teardown_goals(teardown: Results) -> list[Goal]:
    per_node = teardown.get("per_node_s", {})
    return worst_node("teardown", "≤ 1 s per node", per_node, "s", 1.0)


def self_goals(own: Results) -> list[Goal]:
    rss = {n: f["max_rss_mb"] for n, f in own.get("per_node", {}).items() if "max_rss_mb" in f}
    return worst_node("slurm-entry peak memory", "≤ 80 MB per node", rss, "MB", 80.0)


JUDGES: dict[str, Callable[[Results], list[Goal]]] = {
    "launch": launch_goals, "images": image_goals, "comm": comm_goals, "hpl": hpl_goals,
    "teardown": teardown_goals, "self": self_goals,
}  # fmt: skip


def goals(results: Results) -> list[Goal]:
    """Each goal whose section is in results, met, missed or undecided."""
    return [
        g
        for section, judge in JUDGES.items()
        if results.get(section)
        for g in judge(results[section])
    ]


# Markdown


def embed(plots: Sequence[Path], *names: str) -> list[str]:
    """Links to the plots of these names that were drawn, relative to the report."""
    drawn = {p.name for p in plots}
    return [f"![{name}]({name}.png)" for name in names if f"{name}.png" in drawn]


def run_lines(results: Results) -> list[str]:
    lines = []
    if "started" in results:
        lines.append(f"- started: {results['started']}")
    if "duration_s" in results:
        seconds = results["duration_s"]
        lines.append(f"- took: {num(seconds)} s ({num(seconds / 60, 2)} min)")
    if "quick" in results:
        lines.append(f"- mode: {'quick' if results['quick'] else 'full'}")
    if "repeat" in results:
        lines.append(f"- repetitions: {results['repeat']} (figures are medians)")
    if results.get("nodes"):
        lines.append(f"- nodes: {', '.join(results['nodes'])}")
    return lines


def goal_lines(found: list[Goal]) -> list[str]:
    if not found:
        return ["## Goals", "No goal could be judged: no section of the run is present."]
    met = sum(g.met is True for g in found)
    missed = [g.name for g in found if g.met is False]
    undecided = [g.name for g in found if g.met is None]
    tally = f"{met} of {len(found)} goals met."
    tally += f" Missed: {', '.join(missed)}." if missed else ""
    tally += f" Undecided: {', '.join(undecided)}." if undecided else ""
    rows = [(g.name, g.target, g.measured, MET[g.met]) for g in found]
    note = (
        "A ratio is container / native at one message size; the worst size judged decides "
        "and the median is shown beside it. With no size as large as a target names, the "
        "largest size present is judged."
    )
    return ["## Goals", tally, table(("goal", "target", "measured", "met"), rows), note]


def launch_lines(launch: Results, plots: Sequence[Path]) -> list[str]:
    points = {p["nodes"]: p for p in launch.get("points", [])}
    overhead = launch_overhead(launch)
    keys = ("container_init_s", "container_end_s", "native_init_s", "native_end_s")
    rows = [
        (n, *(cell(points.get(n, {}).get(k)) for k in keys), cell(overhead.get(n)))
        for n in sorted(points.keys() | overhead.keys())
    ]
    header = ("nodes", *(k.replace("_", " ") for k in keys), "overhead s")
    lines = ["## Launch", table(header, rows, numeric=6)]
    if "growth_s_per_node" in launch:
        growth = num(launch["growth_s_per_node"])
        lines.append(f"Overhead grows by {growth} s per node (least squares).")
    if "growth_from_2_s_per_node" in launch:
        step, later = launch["first_remote_step_s"], launch["growth_from_2_s_per_node"]
        lines.append(
            f"Of that, the step from 1 to 2 nodes (the first remote node: its sshd, the "
            f"handshake, mpirun's ssh) is {num(step)} s; from 2 nodes on it grows by "
            f"{num(later)} s per node. The testbed's nodes share 2 cores, so each added "
            "node's launcher work also slows the others."
        )
    return lines + embed(plots, "launch")


def image_lines(images: Results, plots: Sequence[Path]) -> list[str]:
    rows = [
        (scenario, node, f.get("path", ""), num(f["bytes"] / 1e6), num(f["seconds"]))
        for scenario, nodes in images.get("median", {}).items()
        for node, f in sorted(nodes.items())
    ]
    header = ("scenario", "node", "path", "MB moved", "seconds")
    lines = ["## Image movement", table(header, rows, numeric=2) if rows else ""]
    if "payload_mb" in images:
        lines.insert(1, f"Each image carries a layer of {images['payload_mb']} MB of random bytes.")
    summary = images.get("summary", {})
    against = [
        f"{k.replace('_', ' ')} {num(v)}" for k, v in summary.items() if k.endswith("_over_paper")
    ]
    if against:
        lines.append(f"Slowest node against the paper's way: {'; '.join(against)}.")
    return lines + embed(plots, "images")


def representative(sizes: list[float]) -> list[float]:
    """0 or 1 B, 8 KiB, 64 KiB and 1 MiB, those present; else the smallest and largest."""
    picked = [s for s in sizes if (s <= 1 and s == sizes[0]) or s in (8 * KiB, 64 * KiB, MiB)]
    return picked or sorted({sizes[0], sizes[-1]}) if sizes else []


def pair_rows(measure: str, pair: Pair) -> list[tuple[str, ...]]:
    container, native = dict(series(pair, "container")), dict(series(pair, "native"))
    rows: list[tuple[str, ...]] = []
    for size in representative(sorted(container.keys() | native.keys())):
        c, n = container.get(size), native.get(size)
        ratio = f"{c / n:.3f}" if c is not None and n else "n/a"
        rows.append((measure, UNITS.get(measure, ""), size_text(size), cell(c), cell(n), ratio))
    return rows


def comm_lines(comm: Results, plots: Sequence[Path]) -> list[str]:
    header = ("measure", "unit", "size", "container", "native", "container/native")
    lines = ["## Communication", "Latency, bcast and allreduce: lower is better."]
    for scope, title in SCOPES.items():
        found = comm.get(scope, {})
        rows = [
            r for measure in UNITS if measure in found for r in pair_rows(measure, found[measure])
        ]
        if rows:
            lines += [f"### {title.capitalize()}", table(header, rows, numeric=3)]
    if comm.get("mpi4py"):
        lines += ["### mpi4py", table(header, pair_rows("latency", comm["mpi4py"]), numeric=3)]
    return lines + embed(plots, "latency", "bandwidth", "collectives")


def hpl_lines(hpl: Results, plots: Sequence[Path]) -> list[str]:
    container, native, ratio = hpl.get("container_gflops"), hpl.get("native_gflops"), hpl_ratio(hpl)
    shown = "n/a" if ratio is None else f"{ratio:.3f}"
    row = (cell(container), cell(native), shown, *(hpl.get(k, "n/a") for k in ("n", "nb", "ranks")))
    header = ("container GFLOPS", "native GFLOPS", "container/native", "N", "NB", "ranks")
    return ["## HPL", table(header, [row], numeric=6), *hpl_run_lines(hpl), *embed(plots, "hpl")]


def hpl_run_lines(hpl: Results) -> list[str]:
    """Each repetition's pair (native first, then container), shown beside the judged
    ratio of medians so a reader can tell a difference from the runs' own spread."""
    runs = hpl.get("runs", {})
    pairs = list(zip(runs.get("native", []), runs.get("container", []), strict=False))
    if len(pairs) < 2:
        return []
    rows = [(str(i), cell(n), cell(c), f"{c / n:.3f}") for i, (n, c) in enumerate(pairs, 1)]
    natives = [n for n, _ in pairs]
    spread = (max(natives) - min(natives)) / statistics.median(natives)
    text = (
        "The judged figure is the ratio of the medians. Per repetition (native, then "
        f"container): the native runs alone spread over {spread:.1%} of their median."
    )
    header = ("repetition", "native GFLOPS", "container GFLOPS", "container/native")
    return [text, table(header, rows, numeric=4)]


def teardown_lines(teardown: Results, plots: Sequence[Path]) -> list[str]:
    rows = [(node, num(s)) for node, s in sorted(teardown.get("per_node_s", {}).items())]
    text = "Seconds from the end of mpirun until the node's last container is gone."
    return ["## Teardown", text, table(("node", "teardown s"), rows, numeric=1)]


def self_lines(own: Results, plots: Sequence[Path]) -> list[str]:
    rows = [
        (node, cell(f.get("max_rss_mb")), cell(f.get("cpu_s")))
        for node, f in sorted(own.get("per_node", {}).items())
    ]
    text = "The slurm-entry process on each node: its peak resident memory and CPU time."
    header = ("node", "peak RSS MB", "CPU s")
    return ["## Launcher's own cost", text, table(header, rows, numeric=2)]


SECTIONS: dict[str, Callable[[Results, Sequence[Path]], list[str]]] = {
    "launch": launch_lines, "images": image_lines, "comm": comm_lines, "hpl": hpl_lines,
    "teardown": teardown_lines, "self": self_lines,
}  # fmt: skip


def markdown(results: Results, plots: Sequence[Path]) -> str:
    """The report: the run, its goals, then a table (and plots) per section present."""
    blocks = ["# mpidock benchmarks", "\n".join(run_lines(results))]
    blocks += goal_lines(goals(results))
    for section, write in SECTIONS.items():
        if results.get(section):
            blocks += write(results[section], plots)
    return "\n\n".join(b for b in blocks if b) + "\n"


def write_report(results: Results, out_dir: Path) -> list[Path]:
    """Writes out_dir/bench.md and the PNGs; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = draw_all(results, out_dir)
    report = out_dir / "bench.md"
    report.write_text(markdown(results, plots))
    return [*plots, report]


def publish(out: Path, name: str, results: Results, text: str) -> None:
    """out/NAME.json (every figure) and out/NAME.md (the report), and the report printed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{name}.md").write_text(text)
    print(text)
