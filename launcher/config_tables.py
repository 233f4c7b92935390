"""The configuration's tables: `[templates.NAME]` (job defaults) and `[host_mpi.NAME]`
(the site's MPI installations for injection), parsed with file and line in every error,
and looked up by name."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from launcher import config_parsers as parsers
from launcher.config_parsers import ConfigError, Key, parse_key, where_in
from launcher.errors import UsageError
from launcher.hostmpi import CHECKS, HostMpi, valid_abi
from launcher.mpi import MpiFlavor

if TYPE_CHECKING:
    from launcher.config import Config


@dataclass(frozen=True)
class Template:
    """A named set of job defaults the site (or the user) declares."""

    name: str
    image: str
    source: str
    nodes: int | None = None
    cpus_per_node: int | None = None
    gpus: int | None = None
    memory: str | None = None
    time: str | None = None
    comment: str = ""


TEMPLATE_KEYS: dict[str, Key] = {
    "image": Key(
        parsers.pattern(r"\S+", "an image name"), "an image name, e.g. ghcr.io/org/app:1.0"
    ),
    "nodes": Key(parsers.count(1), "a whole number of nodes, 1 or more"),
    "cpus_per_node": Key(parsers.count(1), "a whole number of CPUs (ranks) per node, 1 or more"),
    "gpus": Key(parsers.count(0), "a whole number of GPUs per node, 0 or more"),
    "memory": Key(
        parsers.pattern(r"[0-9]+[KMGT]?", "a size"), 'a size per node, e.g. "16G" (K, M, G, T)'
    ),
    "time": Key(
        parsers.pattern(r"([0-9]+-[0-9]+(:[0-9]+){0,2}|[0-9]+(:[0-9]+){0,2})", "a Slurm time"),
        'a Slurm time limit, e.g. "90", "2:00:00" or "1-12:00:00"',
    ),
    "comment": Key(parsers.string, "a string"),
}
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _abi(value: object) -> str:
    if not valid_abi(parsers.string(value)):
        raise parsers.Invalid(f"expected a soname, got {value!r}")
    return str(value)


def _dirs(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(d, str) for d in value):
        raise parsers.Invalid(f"expected an array of strings, {parsers.got(value)}")
    if bad := [d for d in value if not d.startswith("/")]:
        raise parsers.Invalid(f"expected absolute paths, got {bad[0]!r}")
    return tuple(value)


FAMILIES = tuple(f.value for f in MpiFlavor)
HOST_MPI_KEYS: dict[str, Key] = {
    "path": Key(parsers.pattern(r"/\S*", "an absolute path"), "its prefix, e.g. /opt/mpich"),
    "family": Key(parsers.choice(*FAMILIES), f"one of: {', '.join(FAMILIES)}"),
    "abi": Key(_abi, "its C library's soname: libmpi.so.12, libmpi.so.40 or libmpi_abi.so.1"),
    "version": Key(parsers.pattern(r"[0-9]+(\.[0-9]+)*\S*", "a version"), 'e.g. "5.0.2"'),
    "check": Key(parsers.choice(*CHECKS), f"one of: {', '.join(CHECKS)}"),
    "libs": Key(_dirs, 'absolute directories, e.g. ["/opt/mpich/lib/mpich"]'),
}
_HOST_MPI_REQUIRED = ("path", "family", "abi", "version")


def templates(
    path: str, text: str, raw: object, launch_keys: Collection[str]
) -> dict[str, Template]:
    if not isinstance(raw, dict):
        where = where_in(path, text, ("templates",))
        raise ConfigError(
            where, f"templates: expected tables, {parsers.got(raw)}", hint=_TABLE_HINT
        )
    return {name: _template(path, text, name, table, launch_keys) for name, table in raw.items()}


_TABLE_HINT = 'declare each as [templates.NAME] with image = "..." under it'


def _template(
    path: str, text: str, name: str, table: object, launch_keys: Collection[str]
) -> Template:
    where = where_in(path, text, ("templates", name))
    if not _TEMPLATE_NAME.fullmatch(name) or not isinstance(table, dict):
        raise ConfigError(
            where, f"bad template {name!r}", hint=f"{_TABLE_HINT}; NAME is letters, digits, _ -"
        )
    fields = {}
    for key, raw in table.items():
        at = where_in(path, text, ("templates", name, key))
        if key in launch_keys:
            hint = f"launch keys such as {key} go above the first [table]"
            raise ConfigError(at, f"{key!r} is not a template key", hint=hint)
        fields[key] = parse_key(TEMPLATE_KEYS, key, raw, at, key, prefix=True)
    if "image" not in fields:
        raise ConfigError(where, f"template {name!r} has no image", hint=_TABLE_HINT)
    return Template(name=name, source=where, **fields)


def host_mpis(path: str, text: str, data: dict[str, Any]) -> dict[str, HostMpi]:
    raw = data.get("host_mpi")
    if not isinstance(raw, dict):
        return {}  # absent, or the launch key host_mpi = "NAME"
    tables = {name: table for name, table in raw.items() if name != "default"}
    return {name: _host_mpi(path, text, name, table) for name, table in tables.items()}


_HOST_MPI_HINT = "declare each as [host_mpi.NAME] with path, family, abi and version under it"


def _host_mpi(path: str, text: str, name: str, table: object) -> HostMpi:
    where = where_in(path, text, ("host_mpi", name))
    if not _TEMPLATE_NAME.fullmatch(name) or not isinstance(table, dict):
        hint = f"{_HOST_MPI_HINT}; NAME is letters, digits, _ -"
        raise ConfigError(where, f"bad host MPI {name!r}", hint=hint)
    fields = {}
    for key, raw in table.items():
        at = where_in(path, text, ("host_mpi", name, key))
        fields[key] = parse_key(HOST_MPI_KEYS, key, raw, at, key, prefix=True)
    if missing := [key for key in _HOST_MPI_REQUIRED if key not in fields]:
        raise ConfigError(where, f"host MPI {name!r} has no {', '.join(missing)}", _HOST_MPI_HINT)
    fields["family"] = MpiFlavor(fields["family"])
    return HostMpi(name=name, source=where, **fields)


def host_mpi(config: Config) -> HostMpi | None:
    """The host MPI the launch injects (None: the image's own); an unknown name lists
    the declared ones."""
    if not (name := config.host_mpi):
        return None
    if name in config.host_mpis:
        return config.host_mpis[name]
    names = sorted(config.host_mpis)
    known = f"declared: {', '.join(names)}" if names else "none is declared"
    hint = f"{known} (as [host_mpi.NAME] in {' or '.join(path for path, _ in config.files)})"
    raise UsageError(f"unknown host MPI {name!r} ({config.sources['host_mpi']})", hint=hint)


def template(config: Config, name: str) -> Template:
    """The named template; an unknown name lists the valid ones."""
    if name in config.templates:
        return config.templates[name]
    names = sorted(config.templates)
    hint = f"valid templates: {', '.join(names)}" if names else "no templates are configured"
    raise UsageError(f"unknown template {name!r}", hint=f"{hint} (see mpidock templates)")


def template_defaults(t: Template) -> tuple[list[str], str]:
    """The template as sbatch options, and its image."""
    pairs = [
        ("-N", t.nodes),
        ("--ntasks-per-node", t.cpus_per_node),
        ("--gres", f"gpu:{t.gpus}" if t.gpus else None),
        ("--mem", t.memory),
        ("--time", t.time),
    ]
    options = [part for flag, value in pairs if value is not None for part in (flag, str(value))]
    return options, t.image
