"""The report's plots, drawn with matplotlib from one results dict.

`draw_all(results, out_dir)` writes a PNG for each plot whose data is there and returns
their paths; a plot whose data is absent is not drawn. Figures are drawn by Agg on their
own canvas, with no display and no pyplot state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from bench.figures import SCOPES, Pair, Results, mb, num, series, size_text

COLORS = {"container": "C0", "native": "C1"}  # the same on every plot
Panel = tuple[str, list[tuple[str, str, Pair | None]]]  # title, [(label prefix, style, pair)]


# Shared axis helpers


def new_figure(panels: int = 1, width: float = 6.4) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width * panels, 4.4), layout="constrained")
    FigureCanvasAgg(fig)  # PNGs drawn by Agg, with no display and no pyplot state
    return fig, list(fig.subplots(1, panels, squeeze=False)[0])


def sizes_axis(ax: Axes, log_y: bool) -> None:
    """Message sizes on a log x axis, labelled in B, KiB and MiB."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(LogLocator(base=8))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: size_text(x)))
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")


def draw_line(
    ax: Axes, points: Sequence[tuple[float, float]], style: str, color: str, marker: str, label: str
) -> None:
    """One series of (x, y) points, if there are any."""
    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, style, color=color, marker=marker, label=label)


def draw_pair(ax: Axes, pair: Pair, prefix: str = "", style: str = "-") -> None:
    """Container and native in one axes; sizes and values of 0 cannot go on a log axis."""
    for who, color in COLORS.items():
        points = [(s, v) for s, v in series(pair, who) if s > 0 and v > 0]
        draw_line(ax, points, style, color, ".", f"{prefix}{who}")


def panels_plot(panels: list[Panel], title: str, ylabel: str, log_y: bool) -> Figure | None:
    panels = [(t, [line for line in lines if line[2]]) for t, lines in panels]
    panels = [(t, lines) for t, lines in panels if lines]
    if not panels:
        return None
    fig, axes = new_figure(len(panels), width=5.2)
    for ax, (name, lines) in zip(axes, panels, strict=True):
        for prefix, style, pair in lines:
            draw_pair(ax, pair or {}, prefix, style)
        sizes_axis(ax, log_y)
        ax.set(title=name, xlabel="message size", ylabel=ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.suptitle(title)
    return fig


def pick(results: Results, scope: str, measure: str) -> Pair | None:
    found: Pair | None = results.get("comm", {}).get(scope, {}).get(measure)
    return found


def scope_panels(results: Results, measure: str) -> list[Panel]:
    """A panel per scope, each with the container and native series of one measure."""
    return [(title, [("", "-", pick(results, scope, measure))]) for scope, title in SCOPES.items()]


# One function per PNG: each returns None when its data is absent


def latency_plot(results: Results) -> Figure | None:
    panels = scope_panels(results, "latency")
    panels.append(("mpi4py", [("", "-", results.get("comm", {}).get("mpi4py"))]))
    return panels_plot(panels, "Latency: container vs native", "latency (us)", log_y=True)


def bandwidth_plot(results: Results) -> Figure | None:
    panels = scope_panels(results, "bandwidth")
    return panels_plot(panels, "Bandwidth: container vs native", "bandwidth (MB/s)", False)


def collectives_plot(results: Results) -> Figure | None:
    styles = {"inter": "-", "intra": "--"}
    panels: list[Panel] = [
        (measure, [(f"{SCOPES[s]}, ", styles[s], pick(results, s, measure)) for s in SCOPES])
        for measure in ("bcast", "allreduce")
    ]
    return panels_plot(panels, "Collectives: container vs native", "time (us)", log_y=True)


def launch_plot(results: Results) -> Figure | None:
    points = sorted(results.get("launch", {}).get("points", []), key=lambda p: p["nodes"])
    if not points:
        return None
    fig, (ax,) = new_figure()
    for who, color in COLORS.items():
        for phase, style in (("init", "--"), ("end", "-")):
            key = f"{who}_{phase}_s"
            found = [(p["nodes"], p[key]) for p in points if key in p]
            draw_line(ax, found, style, color, "o", f"{who} {phase}")
    ax.set(
        xlabel="nodes",
        ylabel="seconds",
        title="Launch: container vs native",
        xticks=[p["nodes"] for p in points],
    )
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def images_plot(results: Results) -> Figure | None:
    median = results.get("images", {}).get("median", {})
    nodes = sorted({node for figures in median.values() for node in figures})
    if not nodes:
        return None
    scenarios, fig, (ax,) = list(median), *new_figure(width=8.0)
    width = 0.8 / len(nodes)
    for i, node in enumerate(nodes):
        shift = (i - (len(nodes) - 1) / 2) * width
        found = [(k + shift, median[s][node]) for k, s in enumerate(scenarios) if node in median[s]]
        bars = ax.bar([x for x, _ in found], [f["seconds"] for _, f in found], width, label=node)
        ax.bar_label(bars, [mb(f["bytes"]) for _, f in found], fontsize=7)
    ax.set_xticks(range(len(scenarios)), scenarios)
    ax.margins(y=0.12)  # room for the labels above the bars
    ax.set(ylabel="seconds per node (median)", title="Image phase per node, labelled with MB moved")
    ax.legend(title="node")
    return fig


def hpl_plot(results: Results) -> Figure | None:
    hpl = results.get("hpl", {})
    if not hpl.get("container_gflops") or not hpl.get("native_gflops"):
        return None
    fig, (ax,) = new_figure(width=4.8)
    values = [hpl["container_gflops"], hpl["native_gflops"]]
    bars = ax.bar(list(COLORS), values, color=list(COLORS.values()))
    ax.bar_label(bars, [num(v) for v in values])
    size = f", N={hpl['n']}" if "n" in hpl else ""
    ax.set(ylabel="GFLOPS", title=f"HPL{size}: container at {values[0] / values[1]:.1%} of native")
    return fig


PLOTS: dict[str, Callable[[Results], Figure | None]] = {
    "launch": launch_plot, "latency": latency_plot, "bandwidth": bandwidth_plot,
    "collectives": collectives_plot, "images": images_plot, "hpl": hpl_plot,
}  # fmt: skip


def draw_all(results: Results, out_dir: Path) -> list[Path]:
    """Writes out_dir/<name>.png for each plot whose data is there; returns their paths."""
    written = []
    for name, plot in PLOTS.items():
        fig = plot(results)
        if fig is not None:
            path = out_dir / f"{name}.png"
            fig.savefig(path, dpi=110)
            written.append(path)
    return written
