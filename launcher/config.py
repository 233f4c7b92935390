"""Configuration: built-in defaults, site file, user file, MPIDOCK_* environment, options.

Later sources win key by key; a list (mounts) replaces the earlier one, it never appends.
The site file is /etc/mpidock/config.toml (or $MPIDOCK_SITE_CONFIG), the user file
$XDG_CONFIG_HOME/mpidock/config.toml, else ~/.config/mpidock/config.toml (or
$MPIDOCK_USER_CONFIG). A missing file is fine; an unreadable or malformed one is an error.
Both files share one flat layout: launch keys at the top, before any table, then
templates, each a `[templates.NAME]` table (a user's template replaces the site's of
the same name):

    job_root = "/shared/mpidock/jobs"      # per-job keys; must be shared by the nodes
    image_store = "/shared/mpidock/images" # image archives
    port_range = "20000-29999"             # or [20000, 29999]
    mounts = ["/scratch", "/data/ref:/ref:ro"]
    iface = "ib0"
    registry = "registry.example.org:5000"
    image_cleanup = "keep"                 # or "remove"
    ready_timeout = 120                    # seconds
    grace = 10                             # seconds
    containerize_base = "debian:bookworm"  # mpidock containerize's base image
    mpi = "auto"                           # or "openmpi", "mpich", "intel"
    engine = "auto"                        # or "docker", "podman" (rootless)
    podman_root = "/var/tmp/mpidock-podman-{uid}/{node}"  # node-local Podman storage

    [templates.big]
    image = "ghcr.io/example/app:1.0"      # required
    nodes = 3
    cpus_per_node = 2
    gpus = 1
    memory = "16G"
    time = "2:00:00"
    comment = "production runs"

Each key has an environment variable, MPIDOCK_ and the key in capitals (MPIDOCK_MOUNTS
is comma-separated; an empty variable counts as unset), and an option, --key-with-dashes
(--mount for mounts). Errors name the file and line, the variable or the option.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher import config_parsers as parsers
from launcher.config_parsers import key_line as key_line  # public here too
from launcher.engines.base import DEFAULT_PODMAN_ROOT
from launcher.errors import LauncherError, UsageError
from launcher.identity import current_identity
from launcher.mpi import MpiFlavor

SITE_FILE = "/etc/mpidock/config.toml"


class ConfigError(LauncherError):
    """A configuration value is unknown, mistyped or out of range; `where` says whose."""

    def __init__(self, where: str, message: str, hint: str = "") -> None:
        self.where = where
        super().__init__(f"{where}: {message}", hint=hint)


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


@dataclass(frozen=True)
class Config:
    """The effective values; `sources` says where each came from, `files` which were read."""

    job_root: str
    image_store: str
    port_range: tuple[int, int]
    mounts: tuple[str, ...]
    iface: str | None
    registry: str
    image_cleanup: str
    ready_timeout: float
    grace: float
    mpi: str
    containerize_base: str
    sources: dict[str, str]
    templates: dict[str, Template]
    files: tuple[tuple[str, bool], ...]
    engine: str = "auto"
    podman_root: str = DEFAULT_PODMAN_ROOT


@dataclass(frozen=True)
class _Key:
    parse: Callable[[object], Any]
    valid: str


_PATH = parsers.pattern(r"/.*|~(/.*)?", "an absolute path")
MPI_CHOICES = ("auto", *[f.value for f in MpiFlavor])
ENGINE_CHOICES = ("auto", "docker", "podman")
KEYS: dict[str, _Key] = {
    "job_root": _Key(_PATH, "an absolute path shared by the nodes, e.g. /shared/mpidock/jobs"),
    "image_store": _Key(_PATH, "an absolute path shared by the nodes, e.g. /shared/images"),
    "registry": _Key(
        parsers.pattern(r"((?!.*://)\S+)?", "HOST[:PORT]"),
        "HOST[:PORT] of a registry, e.g. registry.example.org:5000",
    ),
    "image_cleanup": _Key(parsers.choice("keep", "remove"), "one of: keep, remove"),
    "port_range": _Key(
        parsers.port_range, "LOW-HIGH with 1024 <= LOW <= HIGH <= 65535, e.g. 20000-29999"
    ),
    "iface": _Key(parsers.pattern(r"\S+", "an interface"), "a network interface name, e.g. ib0"),
    "mpi": _Key(parsers.choice(*MPI_CHOICES), f"one of: {', '.join(MPI_CHOICES)}"),
    "mounts": _Key(parsers.mounts, "SRC[:DST][:ro] with absolute paths, e.g. /data/ref:/ref:ro"),
    "ready_timeout": _Key(parsers.seconds(1), "a number of seconds, 1 or more, e.g. 120"),
    "grace": _Key(parsers.seconds(0), "a number of seconds, 0 or more, e.g. 10"),
    "engine": _Key(parsers.choice(*ENGINE_CHOICES), f"one of: {', '.join(ENGINE_CHOICES)}"),
    "podman_root": _Key(
        parsers.pattern(r"/\S*", "an absolute path"),
        "a node-local absolute path; {uid}, {user} and {node} are filled in",
    ),
    "containerize_base": _Key(
        parsers.pattern(r"\S+", "an image name"), "the base image of mpidock containerize"
    ),
}
TEMPLATE_KEYS: dict[str, _Key] = {
    "image": _Key(
        parsers.pattern(r"\S+", "an image name"), "an image name, e.g. ghcr.io/org/app:1.0"
    ),
    "nodes": _Key(parsers.count(1), "a whole number of nodes, 1 or more"),
    "cpus_per_node": _Key(parsers.count(1), "a whole number of CPUs (ranks) per node, 1 or more"),
    "gpus": _Key(parsers.count(0), "a whole number of GPUs per node, 0 or more"),
    "memory": _Key(
        parsers.pattern(r"[0-9]+[KMGT]?", "a size"), 'a size per node, e.g. "16G" (K, M, G, T)'
    ),
    "time": _Key(
        parsers.pattern(r"([0-9]+-[0-9]+(:[0-9]+){0,2}|[0-9]+(:[0-9]+){0,2})", "a Slurm time"),
        'a Slurm time limit, e.g. "90", "2:00:00" or "1-12:00:00"',
    ),
    "comment": _Key(parsers.string, "a string"),
}
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def env_name(key: str) -> str:
    return f"MPIDOCK_{key.upper()}"


def option_flag(key: str) -> str:
    return "--mount" if key == "mounts" else "--" + key.replace("_", "-")


def _parse(
    keys: Mapping[str, _Key], key: str, raw: object, where: str, name: str, *, prefix: bool
) -> Any:
    """The typed value; an error says where (file:line, variable, option) and what is valid."""
    spec = keys.get(key)
    if spec is None:
        close = difflib.get_close_matches(key, keys, n=1)
        guess = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(where, f"unknown key {key!r}", hint=f"{guess}valid: {', '.join(keys)}")
    try:
        return spec.parse(raw)
    except parsers.Invalid as e:
        what = f"{name}: {e}" if prefix else str(e)
        raise ConfigError(where, what, hint=f"{name} takes {spec.valid}") from e


# --- loading -------------------------------------------------------------------------------


def load(env: Mapping[str, str], given: Mapping[str, object], home: str) -> Config:
    """The effective configuration: defaults < site < user < environment < given options."""
    values: dict[str, Any] = {
        "job_root": os.path.join(home, ".mpidock", "jobs"),
        "image_store": os.path.join(home, ".mpidock", "images"),
        "registry": "", "image_cleanup": "keep", "port_range": (20000, 29999), "iface": None,
        "mpi": "auto", "mounts": (), "ready_timeout": 120.0, "grace": 10.0,
        "engine": "auto", "podman_root": DEFAULT_PODMAN_ROOT,
        "containerize_base": "debian:bookworm",
    }  # fmt: skip
    sources = dict.fromkeys(values, "default")
    templates: dict[str, Template] = {}
    files = []
    for path in (site_path(env), user_path(env, home)):
        read = _read(path)
        files.append((path, read is not None))
        if read is not None:
            layer, where, named = _file_layer(path, *read)
            values, sources, templates = values | layer, sources | where, templates | named
    for layer, where in (_env_layer(env), _option_layer(given)):
        values, sources = values | layer, sources | where
    for key in ("job_root", "image_store"):
        values[key] = _expand(values[key], home)
    return Config(**values, sources=sources, templates=templates, files=tuple(files))


def for_command(args: argparse.Namespace | None = None) -> Config:
    """The configuration a command runs with, resolved one way for every command: site
    file, user file, MPIDOCK_* variables, then the configuration options set in args.

    Home is the passwd entry's, not $HOME: slurm-entry runs under srun, where $HOME may be
    the submit host's or unset, and every command must find the same files and defaults.
    """
    given = given_options(args) if args is not None else {}
    return load(os.environ, given, current_identity().home)


def site_path(env: Mapping[str, str]) -> str:
    return env.get("MPIDOCK_SITE_CONFIG") or SITE_FILE


def user_path(env: Mapping[str, str], home: str) -> str:
    base = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return env.get("MPIDOCK_USER_CONFIG") or os.path.join(base, "mpidock", "config.toml")


def _expand(path: str, home: str) -> str:
    return home.rstrip("/") + path[1:] if path == "~" or path.startswith("~/") else path


def _read(path: str) -> tuple[str, dict[str, Any]] | None:
    """The file's text and its TOML, or None when there is no such file."""
    try:
        text = Path(path).read_bytes().decode()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else f"not UTF-8 ({e.reason})"
        raise ConfigError(path, f"cannot read the configuration: {why}") from e
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, f"invalid TOML: {e}", hint="see https://toml.io") from e


def _file_layer(
    path: str, text: str, data: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str], dict[str, Template]]:
    values, sources, templates = {}, {}, {}
    for key, raw in data.items():
        where = _where(path, text, (key,))
        if key == "templates":
            templates = _templates(path, text, raw)
        else:
            values[key] = _parse(KEYS, key, raw, where, key, prefix=True)
            sources[key] = where
    return values, sources, templates


def _templates(path: str, text: str, raw: object) -> dict[str, Template]:
    if not isinstance(raw, dict):
        where = _where(path, text, ("templates",))
        raise ConfigError(
            where, f"templates: expected tables, {parsers.got(raw)}", hint=_TABLE_HINT
        )
    return {name: _template(path, text, name, table) for name, table in raw.items()}


_TABLE_HINT = 'declare each as [templates.NAME] with image = "..." under it'


def _template(path: str, text: str, name: str, table: object) -> Template:
    where = _where(path, text, ("templates", name))
    if not _TEMPLATE_NAME.fullmatch(name) or not isinstance(table, dict):
        raise ConfigError(
            where, f"bad template {name!r}", hint=f"{_TABLE_HINT}; NAME is letters, digits, _ -"
        )
    fields = {}
    for key, raw in table.items():
        at = _where(path, text, ("templates", name, key))
        if key in KEYS:
            hint = f"launch keys such as {key} go above the first [table]"
            raise ConfigError(at, f"{key!r} is not a template key", hint=hint)
        fields[key] = _parse(TEMPLATE_KEYS, key, raw, at, key, prefix=True)
    if "image" not in fields:
        raise ConfigError(where, f"template {name!r} has no image", hint=_TABLE_HINT)
    return Template(name=name, source=where, **fields)


def _where(path: str, text: str, keys: Sequence[str]) -> str:
    line = key_line(text, keys)
    return f"{path}:{line}" if line else path


def _env_layer(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    values, sources = {}, {}
    for key in KEYS:
        name = env_name(key)
        if not (text := env.get(name, "")):
            continue
        raw: object = text
        if key == "mounts":
            raw = [part.strip() for part in text.split(",") if part.strip()]
        elif key in ("ready_timeout", "grace"):
            raw = _float_or_text(text)
        values[key] = _parse(KEYS, key, raw, f"env {name}", name, prefix=False)
        sources[key] = f"env {name}"
    return values, sources


def _float_or_text(text: str) -> object:
    try:
        return float(text)
    except ValueError:
        return text


def _option_layer(given: Mapping[str, object]) -> tuple[dict[str, Any], dict[str, str]]:
    values, sources = {}, {}
    for key, raw in given.items():
        if raw is None:
            continue
        flag = option_flag(key)
        values[key] = _parse(KEYS, key, raw, f"option {flag}", flag, prefix=False)
        sources[key] = f"option {flag}"
    return values, sources


def given_options(args: argparse.Namespace) -> dict[str, object]:
    """The configuration keys set on the command line: those neither None nor empty lists."""
    return {key: value for key in KEYS if (value := getattr(args, key, None)) not in (None, [])}


def option_fields(config: Config) -> dict[str, Any]:
    """The configuration as keyword arguments of launcher.plan.Options."""
    return {
        "job_root": config.job_root, "image_store": config.image_store,
        "registry": config.registry, "keep_image": config.image_cleanup == "keep",
        "port_range": config.port_range, "iface": config.iface, "mpi": config.mpi,
        "mounts": config.mounts, "ready_timeout": config.ready_timeout, "grace": config.grace,
        "engine": config.engine, "podman_root": config.podman_root,
    }  # fmt: skip


# --- templates -----------------------------------------------------------------------------


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
