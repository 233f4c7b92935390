"""Configuration parsers: raw values to typed ones, and where a key is written in a TOML file.

Pure: each value parser takes a raw TOML, environment or option value and returns the
typed value or raises Invalid; `parse_key` adds where the value came from (ConfigError).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from launcher.errors import LauncherError, UsageError
from launcher.plan import parse_mount


class Invalid(Exception):
    """A value's fault, raised before its caller adds where the value came from."""


def got(value: object) -> str:
    names = {"str": "string", "int": "integer", "bool": "boolean", "list": "array"}
    kind = names.get(type(value).__name__, type(value).__name__)
    return f"got {kind} {value!r}"


def string(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string, {got(value)}")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Invalid(f"expected a number of seconds, {got(value)}")
    return float(value)


def seconds(least: float) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if (seconds := _number(value)) < least:
            raise Invalid(f"expected {least:g} seconds or more, got {value!r}")
        return seconds

    return parse


def choice(*valid: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value not in valid:
            raise Invalid(f"expected one of {', '.join(valid)}, {got(value)}")
        return str(value)

    return parse


def port_range(value: object) -> tuple[int, int]:
    pair: list[object] = []
    if isinstance(value, str):
        # ASCII digits only: str.isdigit also takes "²", which int() refuses.
        if match := re.fullmatch(r"\s*([0-9]+)\s*-\s*([0-9]+)\s*", value):
            pair = [int(match[1]), int(match[2])]
    elif isinstance(value, list | tuple):
        pair = list(value)
    ints = [p for p in pair if isinstance(p, int) and not isinstance(p, bool)]
    if len(ints) != 2 or len(pair) != 2:
        raise Invalid(f"expected LOW-HIGH or [LOW, HIGH], {got(value)}")
    low, high = ints
    if not 1024 <= low <= high <= 65535:
        raise Invalid(f"bad port range {low}-{high}")
    return low, high


def mounts(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(m, str) for m in value):
        raise Invalid(f"expected an array of strings, {got(value)}")
    for spec in value:
        try:
            parse_mount(spec)
        except UsageError as e:
            raise Invalid(f"bad mount {spec!r}") from e
    return tuple(value)


def count(least: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if type(value) is not int or value < least:
            raise Invalid(f"expected a whole number >= {least}, {got(value)}")
        return value

    return parse


def pattern(regex: str, what: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not re.fullmatch(regex, string(value)):
            raise Invalid(f"expected {what}, got {value!r}")
        return str(value)

    return parse


# --- where a key is written: tomllib gives no line numbers for keys -----------------------

_HEADER = re.compile(r"\s*\[\[?(?P<path>[^\]]+)\]\]?\s*(#.*)?")
_ASSIGN = re.compile(r"\s*(?P<path>(?:[\w\s.-]|\"[^\"]*\"|'[^']*')+?)\s*=")
_PART = re.compile(r"\"([^\"]*)\"|'([^']*)'|([^.\s\"']+)")


def key_line(text: str, keys: Sequence[str]) -> int | None:
    """The 1-based line that defines the dotted key path, else its nearest enclosing table."""
    target = tuple(keys)
    while target:
        if (line := _first_line(text, target)) is not None:
            return line
        target = target[:-1]
    return None


def _first_line(text: str, target: tuple[str, ...]) -> int | None:
    table: tuple[str, ...] = ()
    quote = ""
    for number, line in enumerate(text.splitlines(), 1):
        if quote:  # inside a multi-line string: nothing here is a key
            quote = "" if line.count(quote) % 2 else quote
            continue
        if header := _HEADER.fullmatch(line):
            table = full = _parts(header["path"])
        elif assign := _ASSIGN.match(line):
            full = table + _parts(assign["path"])
            quote = next((q for q in ('"""', "'''") if line.count(q) % 2), "")
        else:
            continue
        if full[: len(target)] == target:
            return number
    return None


def _parts(path: str) -> tuple[str, ...]:
    return tuple(next(g for g in m.groups() if g is not None) for m in _PART.finditer(path))


class ConfigError(LauncherError):
    """A configuration value is unknown, mistyped or out of range; `where` says whose."""

    def __init__(self, where: str, message: str, hint: str = "") -> None:
        self.where = where
        super().__init__(f"{where}: {message}", hint=hint)


@dataclass(frozen=True)
class Key:
    """One configuration key: its parser, and what it takes (for the error's hint)."""

    parse: Callable[[object], Any]
    valid: str


def parse_key(
    keys: Mapping[str, Key], key: str, raw: object, where: str, name: str, *, prefix: bool
) -> Any:
    """The typed value; an error says where (file:line, variable, option) and what is valid."""
    spec = keys.get(key)
    if spec is None:
        close = difflib.get_close_matches(key, keys, n=1)
        guess = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(where, f"unknown key {key!r}", hint=f"{guess}valid: {', '.join(keys)}")
    try:
        return spec.parse(raw)
    except Invalid as e:
        what = f"{name}: {e}" if prefix else str(e)
        raise ConfigError(where, what, hint=f"{name} takes {spec.valid}") from e


def where_in(path: str, text: str, keys: Sequence[str]) -> str:
    line = key_line(text, keys)
    return f"{path}:{line}" if line else path
