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
    launch = "ssh"                         # or "pmix", "pmi2": a rank per srun task
    podman_root = "/var/tmp/mpidock-podman-{uid}/{node}"  # node-local Podman storage
    podman_image_store = "/shared/mpidock/podman-store/{user}"  # rootless, read in place
    host_mpi = "mpich5"                    # inject this [host_mpi.NAME]; "" for none
                                           # (in a file with such tables: [host_mpi]
                                           # default = "mpich5", as TOML wants)

    [templates.big]
    image = "ghcr.io/example/app:1.0"      # required
    nodes = 3
    cpus_per_node = 2
    gpus = 1
    memory = "16G"
    time = "2:00:00"
    comment = "production runs"

    [host_mpi.mpich5]                      # launcher.hostmpi: an MPI on every node
    path = "/opt/mpich-5.0.2"              # required: its prefix (bin/, lib/)
    family = "mpich"                       # required: mpich, openmpi or intel
    abi = "libmpi.so.12"                   # required: its C library's soname
    version = "5.0.2"                      # required
    check = "major"                        # or "full", "strict" (see launcher.hostmpi)
    libs = ["/opt/mpich-5.0.2/lib/mpich"]  # further directories its libraries need

Host MPIs merge as templates do: a user's replaces the site's of the same name.
Each key has an environment variable, MPIDOCK_ and the key in capitals (MPIDOCK_MOUNTS
is comma-separated; an empty variable counts as unset), and an option, --key-with-dashes
(--mount for mounts). Errors name the file and line, the variable or the option.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher import config_parsers as parsers
from launcher import config_tables as tables
from launcher.config_parsers import ConfigError as ConfigError  # public here too
from launcher.config_parsers import Key, parse_key, where_in
from launcher.config_parsers import key_line as key_line
from launcher.config_tables import FAMILIES as FAMILIES
from launcher.config_tables import HOST_MPI_KEYS as HOST_MPI_KEYS
from launcher.config_tables import TEMPLATE_KEYS as TEMPLATE_KEYS
from launcher.config_tables import Template as Template
from launcher.config_tables import host_mpi as host_mpi
from launcher.config_tables import template as template
from launcher.config_tables import template_defaults as template_defaults
from launcher.engines.base import DEFAULT_PODMAN_ROOT
from launcher.hostmpi import HostMpi
from launcher.identity import current_identity
from launcher.mpi import MpiFlavor

SITE_FILE = "/etc/mpidock/config.toml"


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
    launch: str = "ssh"
    podman_root: str = DEFAULT_PODMAN_ROOT
    podman_image_store: str = ""
    host_mpi: str = ""
    host_mpis: dict[str, HostMpi] = field(default_factory=dict)


_PATH = parsers.pattern(r"/.*|~(/.*)?", "an absolute path")
MPI_CHOICES = ("auto", *[f.value for f in MpiFlavor])
ENGINE_CHOICES = ("auto", "docker", "podman")
LAUNCH_CHOICES = ("ssh", "pmix", "pmi2")  # launcher.direct.MODES
KEYS: dict[str, Key] = {
    "job_root": Key(_PATH, "an absolute path shared by the nodes, e.g. /shared/mpidock/jobs"),
    "image_store": Key(_PATH, "an absolute path shared by the nodes, e.g. /shared/images"),
    "registry": Key(
        parsers.pattern(r"((?!.*://)\S+)?", "HOST[:PORT]"),
        "HOST[:PORT] of a registry, e.g. registry.example.org:5000",
    ),
    "image_cleanup": Key(parsers.choice("keep", "remove"), "one of: keep, remove"),
    "port_range": Key(
        parsers.port_range, "LOW-HIGH with 1024 <= LOW <= HIGH <= 65535, e.g. 20000-29999"
    ),
    "iface": Key(parsers.pattern(r"\S+", "an interface"), "a network interface name, e.g. ib0"),
    "mpi": Key(parsers.choice(*MPI_CHOICES), f"one of: {', '.join(MPI_CHOICES)}"),
    "mounts": Key(parsers.mounts, "SRC[:DST][:ro] with absolute paths, e.g. /data/ref:/ref:ro"),
    "ready_timeout": Key(parsers.seconds(1), "a number of seconds, 1 or more, e.g. 120"),
    "grace": Key(parsers.seconds(0), "a number of seconds, 0 or more, e.g. 10"),
    "engine": Key(parsers.choice(*ENGINE_CHOICES), f"one of: {', '.join(ENGINE_CHOICES)}"),
    "launch": Key(parsers.choice(*LAUNCH_CHOICES), f"one of: {', '.join(LAUNCH_CHOICES)}"),
    "podman_root": Key(
        parsers.pattern(r"/\S*", "an absolute path"),
        "a node-local absolute path; {uid}, {user} and {node} are filled in",
    ),
    "podman_image_store": Key(
        parsers.pattern(r"(/[^\s,=]*)?", "an absolute path without ',' or '='"),
        'a shared absolute path, or "" for none; {user} and {uid} are filled in',
    ),
    "containerize_base": Key(
        parsers.pattern(r"\S+", "an image name"), "the base image of mpidock containerize"
    ),
    "host_mpi": Key(
        parsers.pattern(r"([A-Za-z0-9][A-Za-z0-9_-]*)?", "a host MPI's name"),
        'the NAME of a [host_mpi.NAME] table, or "" for the image\'s own MPI',
    ),
}


def env_name(key: str) -> str:
    return f"MPIDOCK_{key.upper()}"


def option_flag(key: str) -> str:
    return "--mount" if key == "mounts" else "--" + key.replace("_", "-")


# --- loading -------------------------------------------------------------------------------


def load(env: Mapping[str, str], given: Mapping[str, object], home: str) -> Config:
    """The effective configuration: defaults < site < user < environment < given options."""
    values: dict[str, Any] = {
        "job_root": os.path.join(home, ".mpidock", "jobs"),
        "image_store": os.path.join(home, ".mpidock", "images"),
        "registry": "", "image_cleanup": "keep", "port_range": (20000, 29999), "iface": None,
        "mpi": "auto", "mounts": (), "ready_timeout": 120.0, "grace": 10.0,
        "engine": "auto", "podman_root": DEFAULT_PODMAN_ROOT, "podman_image_store": "",
        "containerize_base": "debian:bookworm", "host_mpi": "", "launch": "ssh",
    }  # fmt: skip
    sources = dict.fromkeys(values, "default")
    templates: dict[str, Template] = {}
    host_mpis: dict[str, HostMpi] = {}
    files = []
    for path in (site_path(env), user_path(env, home)):
        read = _read(path)
        files.append((path, read is not None))
        if read is not None:
            layer, where, named = _file_layer(path, *read)
            values, sources, templates = values | layer, sources | where, templates | named
            host_mpis |= tables.host_mpis(path, *read)
    for layer, where in (_env_layer(env), _option_layer(given)):
        values, sources = values | layer, sources | where
    for key in ("job_root", "image_store"):
        values[key] = _expand(values[key], home)
    return Config(
        **values, sources=sources, templates=templates, files=tuple(files), host_mpis=host_mpis
    )


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
        where = where_in(path, text, (key,))
        if key == "templates":
            templates = tables.templates(path, text, raw, KEYS)
        elif key == "host_mpi" and isinstance(raw, dict):
            # [host_mpi.NAME] tables (_host_mpis); beside them TOML takes the launch key
            # only as [host_mpi] default = "NAME".
            if "default" in raw:
                where = where_in(path, text, ("host_mpi", "default"))
                values[key] = parse_key(KEYS, key, raw["default"], where, key, prefix=True)
                sources[key] = where
        else:
            values[key] = parse_key(KEYS, key, raw, where, key, prefix=True)
            sources[key] = where
    return values, sources, templates


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
        values[key] = parse_key(KEYS, key, raw, f"env {name}", name, prefix=False)
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
        values[key] = parse_key(KEYS, key, raw, f"option {flag}", flag, prefix=False)
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
        "podman_image_store": config.podman_image_store,
        "host_mpi": host_mpi(config),
    }  # fmt: skip
