"""#PBS directives of a job script, translated to Slurm options.

Pure: lines in, options out. The common Torque and PBS Pro options are translated;
anything else is an error naming the line, never a request silently lost. Also home to
the small types that launcher.jobscript shares with this module: the directive line, the
translated option and the error.

Decisions:

* ``-v A,B=1`` becomes ``--export=ALL,A,B=1``: the job keeps the submitter's environment
  (Slurm's default, PBS's ``-V``), with B set to 1. Slurm keeps only the last --export,
  so every -v and -V merge into one, at the end of the translations.
* ``-j oe`` adds nothing: Slurm writes both streams to --output unless --error is given.
  ``-j oe`` with ``-e`` is refused, since PBS would ignore the -e and Slurm would not.
* ``-l mem`` is for the whole job in PBS but --mem is per node in Slurm; on several nodes
  the job may use more. A select chunk's ``mem`` is per chunk, which is per node here.
* ``select`` chunks become nodes, as with ``place=scatter``; ``ncpus`` above ``mpiprocs``
  becomes --cpus-per-task so that threads keep their CPUs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from launcher.errors import LauncherError

QUOTE_HINT = "quote values with spaces, e.g. --job-name='my job'"
_PBS_HINT = (
    "supported #PBS options: -l nodes=N[:ppn=M], -l select=N[:ncpus=M][:mpiprocs=K][:mem=X], "
    "-l place=scatter[:excl], -l walltime=[[HH:]MM:]SS, -l mem=N{kb,mb,gb,tb}, -N name, "
    "-q queue, -o path, -e path, -j oe, -v VAR[=value],..., -V, -m {a,b,e,n}, -M address, "
    "-A account, -W depend=TYPE:JOBID[:JOBID]; write anything else as an #SBATCH line"
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_JOB_ID = re.compile(r"([0-9]+)(?:\.[\w.-]+)?")
# Numbers are ASCII digits only: str.isdigit and \d also take "²" or "٣", which Slurm refuses.
_DIGITS = re.compile(r"[0-9]+")
_MAIL = {"a": "FAIL", "b": "BEGIN", "e": "END", "n": "NONE"}
_DEPEND = ("after", "afterok", "afternotok", "afterany")


class JobScriptError(LauncherError):
    """A job script cannot be read: the file, the line number and the line say where.

    Attributes:
        path: the script as the user named it.
        lineno: the line, counted from 1.
        line: the offending line, when there is one.
    """

    def __init__(self, path: str, lineno: int, line: str, problem: str, hint: str = "") -> None:
        self.path = path
        self.lineno = lineno
        self.line = line
        shown = f" in `{line.strip()}`" if line.strip() else ""
        super().__init__(f"{path}:{lineno}: {problem}{shown}", hint=hint)


@dataclass(frozen=True)
class Line:
    """One directive line of a job script, split into words."""

    path: str
    lineno: int
    text: str
    kind: str
    words: tuple[str, ...]

    def error(self, problem: str, hint: str = "") -> JobScriptError:
        return JobScriptError(self.path, self.lineno, self.text, problem, hint)


@dataclass(frozen=True)
class Option:
    """One Slurm option translated from a #PBS line."""

    name: str
    value: str | None
    line: Line

    def argv(self) -> str:
        return self.name if self.value is None else f"{self.name}={self.value}"


def translate(lines: Sequence[Line]) -> list[Option]:
    """The Slurm options that the #PBS lines ask for, in order, with -v and -V merged last.

    Raises:
        JobScriptError: an unsupported or malformed option, naming its line.
    """
    options: list[Option] = []
    seen: dict[str, Line] = {}
    for line in lines:
        for letter, value in _pbs_words(line):
            options += _PBS[letter](value, line)
            seen[letter] = line
    if "j" in seen and "e" in seen:
        later = max(seen["j"], seen["e"], key=lambda ln: ln.lineno)
        raise later.error(
            "-j oe joins stderr into the output, so PBS ignores -e but Slurm would not",
            hint="drop -j oe to keep a separate error file, or drop -e",
        )
    return _merge_exports(options)


def _pbs_words(line: Line) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    words = list(line.words)
    while words:
        word = words.pop(0)
        letter = word[1:2] if word.startswith("-") else ""
        if not letter:
            raise line.error(f"{word!r} is not an option", hint=QUOTE_HINT)
        if letter not in _PBS:
            raise line.error(f"unsupported PBS option {word!r}", hint=_PBS_HINT)
        if letter == "V":
            if word != "-V":
                raise line.error(f"-V takes no value, got {word!r}", hint=_PBS_HINT)
            found.append((letter, None))
        elif len(word) > 2 or words:
            found.append((letter, word[2:] if len(word) > 2 else words.pop(0)))
        else:
            raise line.error(f"PBS option {word} needs a value", hint=_PBS_HINT)
    return found


def _merge_exports(options: Sequence[Option]) -> list[Option]:
    exports = [o for o in options if o.name == "--export"]
    if not exports:
        return list(options)
    items = [item for o in exports if o.value for item in o.value.split(",")]
    merged = Option("--export", ",".join(["ALL", *items]), exports[0].line)
    return [o for o in options if o.name != "--export"] + [merged]


def _resources(value: str | None, line: Line) -> list[Option]:
    options: list[Option] = []
    for item in (value or "").split(","):
        name, eq, spec = item.partition("=")
        if not eq or name not in _RESOURCES:
            raise line.error(f"unsupported PBS resource {item!r}", hint=_PBS_HINT)
        options += _RESOURCES[name](spec, line)
    return options


def _nodes(spec: str, line: Line) -> list[Option]:
    match = re.fullmatch(r"([0-9]+)(?::ppn=([0-9]+))?", spec)
    if not match:
        raise line.error(
            f"unsupported node request nodes={spec}",
            hint="use nodes=N or nodes=N:ppn=M; ask for node names or features with #SBATCH",
        )
    options = [Option("--nodes", str(_positive(match[1], "nodes", line)), line)]
    if match[2] is not None:
        ppn = _positive(match[2], "ppn", line)
        options.append(Option("--ntasks-per-node", str(ppn), line))
    return options


def _select(spec: str, line: Line) -> list[Option]:
    parts = spec.split(":")
    count = _positive(parts.pop(0), "select", line) if _leads_with_count(parts[0]) else 1
    chunk: dict[str, str] = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if "+" in spec or not eq or key not in ("ncpus", "mpiprocs", "mem"):
            raise line.error(
                f"unsupported select chunk {part!r}",
                hint="use one kind of chunk: select=N:ncpus=M:mpiprocs=K[:mem=X]",
            )
        chunk[key] = value
    ncpus = _positive(chunk["ncpus"], "ncpus", line) if "ncpus" in chunk else None
    procs = _positive(chunk["mpiprocs"], "mpiprocs", line) if "mpiprocs" in chunk else None
    options = [Option("--nodes", str(count), line)]
    if procs or ncpus:
        options.append(Option("--ntasks-per-node", str(procs or ncpus), line))
    if ncpus and procs and ncpus > procs:
        options.append(Option("--cpus-per-task", str(_threads(ncpus, procs, line)), line))
    if "mem" in chunk:
        options.append(Option("--mem", _memory(chunk["mem"], line), line))
    return options


def _leads_with_count(part: str) -> bool:
    """select=N:... starts with its count; select=ncpus=M:... has none (one chunk)."""
    return "=" not in part


def _threads(ncpus: int, procs: int, line: Line) -> int:
    if ncpus % procs:
        raise line.error(
            f"ncpus={ncpus} is not a multiple of mpiprocs={procs}",
            hint="Slurm gives every task the same CPUs: make ncpus a multiple of mpiprocs",
        )
    return ncpus // procs


def _place(spec: str, line: Line) -> list[Option]:
    words = set(spec.split(":"))
    if not words <= {"scatter", "excl"}:
        raise line.error(
            f"unsupported placement place={spec}",
            hint="chunks become nodes: use place=scatter or place=scatter:excl",
        )
    return [Option("--exclusive", None, line)] if "excl" in words else []


def _walltime(spec: str, line: Line) -> list[Option]:
    parts = spec.split(":")
    if not 1 <= len(parts) <= 3 or not all(_DIGITS.fullmatch(p) for p in parts):
        raise line.error(f"bad walltime {spec!r}", hint="write it as [[HH:]MM:]SS, e.g. 01:30:00")
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    if not seconds:
        raise line.error("walltime 0 would mean no limit in Slurm", hint="give a positive time")
    minutes, s = divmod(seconds, 60)
    return [Option("--time", f"{minutes // 60:02d}:{minutes % 60:02d}:{s:02d}", line)]


def _job_memory(spec: str, line: Line) -> list[Option]:
    return [Option("--mem", _memory(spec, line), line)]


def _memory(spec: str, line: Line) -> str:
    match = re.fullmatch(r"([0-9]+)([kmgt])b", spec, re.IGNORECASE)
    if not match or not int(match[1]):
        raise line.error(
            f"bad memory size {spec!r}", hint="give a positive size in kb, mb, gb or tb, e.g. 8gb"
        )
    return f"{match[1]}{match[2].upper()}"


def _positive(text: str, what: str, line: Line) -> int:
    if not _DIGITS.fullmatch(text) or int(text) < 1:
        raise line.error(f"{what} must be a positive integer, got {text!r}", hint=_PBS_HINT)
    return int(text)


def _renamed(slurm: str) -> Callable[[str | None, Line], list[Option]]:
    def translate(value: str | None, line: Line) -> list[Option]:
        return [Option(slurm, value, line)]

    return translate


def _queue(value: str | None, line: Line) -> list[Option]:
    if "@" in (value or ""):
        raise line.error(f"queue {value!r} names a PBS server", hint="give the partition only")
    return [Option("--partition", value, line)]


def _stream(slurm: str) -> Callable[[str | None, Line], list[Option]]:
    def translate(value: str | None, line: Line) -> list[Option]:
        if re.match(r"[\w.-]+:", value or ""):
            raise line.error(
                f"{value!r} names a host; Slurm writes output where the job runs",
                hint="give a path on the shared file system",
            )
        return [Option(slurm, value, line)]

    return translate


def _join(value: str | None, line: Line) -> list[Option]:
    if value != "oe":
        raise line.error(
            f"unsupported -j {value}",
            hint="-j oe is what Slurm does by default; for separate files give -o and -e",
        )
    return []


def _variables(value: str | None, line: Line) -> list[Option]:
    for item in (value or "").split(","):
        if not _NAME.fullmatch(item.partition("=")[0]):
            raise line.error(
                f"-v {item!r} is not VAR or VAR=value",
                hint="list variables as -v A,B=1 (values cannot hold commas)",
            )
    return [Option("--export", value, line)]


def _all_variables(value: str | None, line: Line) -> list[Option]:
    return [Option("--export", None, line)]


def _mail(value: str | None, line: Line) -> list[Option]:
    letters = value or ""
    if not letters or set(letters) - set(_MAIL) or ("n" in letters and set(letters) != {"n"}):
        raise line.error(
            f"unsupported mail events -m {letters}",
            hint="use the letters a (abort), b (begin), e (end), or n alone (none)",
        )
    types = dict.fromkeys(_MAIL[letter] for letter in letters)
    return [Option("--mail-type", ",".join(types), line)]


def _attribute(value: str | None, line: Line) -> list[Option]:
    name, eq, spec = (value or "").partition("=")
    if name != "depend" or not eq:
        raise line.error(f"unsupported -W attribute {value!r}", hint=_PBS_HINT)
    return [Option("--dependency", ",".join(_dependency(i, line) for i in spec.split(",")), line)]


def _dependency(item: str, line: Line) -> str:
    kind, *ids = item.split(":")
    numbers = [match[1] for i in ids if (match := _JOB_ID.fullmatch(i))]
    if kind not in _DEPEND or not ids or len(numbers) != len(ids):
        raise line.error(
            f"unsupported dependency {item!r}",
            hint=f"use TYPE:JOBID[:JOBID...] with TYPE one of {', '.join(_DEPEND)}",
        )
    return ":".join([kind, *numbers])


_RESOURCES: dict[str, Callable[[str, Line], list[Option]]] = {
    "nodes": _nodes,
    "select": _select,
    "place": _place,
    "walltime": _walltime,
    "mem": _job_memory,
}

_PBS: dict[str, Callable[[str | None, Line], list[Option]]] = {
    "l": _resources,
    "N": _renamed("--job-name"),
    "q": _queue,
    "o": _stream("--output"),
    "e": _stream("--error"),
    "j": _join,
    "v": _variables,
    "V": _all_variables,
    "m": _mail,
    "M": _renamed("--mail-user"),
    "A": _renamed("--account"),
    "W": _attribute,
}
