"""`mpidock config` and `mpidock templates`: the effective configuration and the job templates.

Neither needs Docker or Slurm: they read the configuration files and the environment.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from launcher import config
from launcher.config import Config, Template


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help="print the effective configuration and where each came from")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(run=run)
    t = sub.add_parser("templates", help="list the job templates the configuration declares")
    t.add_argument("--json", action="store_true", help="print them as JSON")
    t.set_defaults(run=run_templates)


def run(args: argparse.Namespace) -> int:
    cfg = config.for_command()
    print(json.dumps(config_json(cfg), indent=2) if args.json else config_table(cfg))
    return 0


def run_templates(args: argparse.Namespace) -> int:
    cfg = config.for_command()
    print(json.dumps(templates_json(cfg), indent=2) if args.json else templates_table(cfg))
    return 0


def config_table(cfg: Config) -> str:
    """The files consulted, then one aligned row per key: name, value, source."""
    files = [f"{kind} file: {path} ({'read' if read else 'not found'})"
             for kind, (path, read) in zip(("site", "user"), cfg.files, strict=True)]  # fmt: skip
    rows = [("KEY", "VALUE", "SOURCE")]
    rows += [(key, _show(getattr(cfg, key)), cfg.sources[key]) for key in config.KEYS]
    return "\n".join([*files, "", *_aligned(rows)])


def config_json(cfg: Config) -> dict[str, Any]:
    return {
        "files": [{"path": path, "read": read} for path, read in cfg.files],
        "keys": {k: {"value": getattr(cfg, k), "source": cfg.sources[k]} for k in config.KEYS},
    }


def templates_table(cfg: Config) -> str:
    """One aligned row per template, by name: name, image, resources, comment."""
    if not cfg.templates:
        paths = " or ".join(path for path, _ in cfg.files)
        return f"no templates: declare them as [templates.NAME] in {paths}"
    rows = [("NAME", "IMAGE", "RESOURCES", "COMMENT")]
    for name in sorted(cfg.templates):
        t = cfg.templates[name]
        rows.append((name, t.image, resources(t), t.comment))
    return "\n".join(_aligned(rows))


def templates_json(cfg: Config) -> list[dict[str, Any]]:
    return [asdict(cfg.templates[name]) for name in sorted(cfg.templates)]


def resources(t: Template) -> str:
    """e.g. "3 nodes x 2 CPUs, 1 GPU, 16G, 2:00:00"; "-" when the template sets none."""
    shape = " x ".join(
        _count(n, unit) for n, unit in ((t.nodes, "node"), (t.cpus_per_node, "CPU")) if n
    )
    if t.cpus_per_node and not t.nodes:
        shape += " per node"
    parts = [shape, _count(t.gpus, "GPU") if t.gpus else "", t.memory or "", t.time or ""]
    return ", ".join(p for p in parts if p) or "-"


def _count(n: int | None, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


def _show(value: object) -> str:
    if value is None or value in ("", ()):
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return "-".join(map(str, value))  # the port range
    return ", ".join(value) if isinstance(value, tuple) else str(value)


def _aligned(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
