"""Job scripts for `mpidock submit job.sh`: their directives read as sbatch and qsub read them.

Pure: text in, data out (`load` alone reads the file, for parse). Three kinds of
directive are read, all from the script's leading comment block only. sbatch and qsub
stop at the first line that is neither blank nor a comment, and so do we for all three
kinds; a directive further down is not read (a note says so). A directive starts in
column 1 with its exact, case-sensitive prefix, so ``# SBATCH`` is an ordinary comment
and an indented ``#SBATCH`` is noted and not read, as in sbatch. Words are split like a
shell's and an unquoted ``#`` starts a comment, as in sbatch's own reader.

* ``#SBATCH``: Slurm options, kept verbatim in order.
* ``#PBS``: the common Torque and PBS Pro options, translated to Slurm options by
  launcher.pbs. Anything else is an error naming the line, never a request silently lost.
* ``#MPIDOCK``: launcher options (``--image``, ``--template``, ``--ppn``, ...). The script
  body is the command, so ``--`` or a positional word is an error.

Decisions:

* Precedence: an #SBATCH option beats a #PBS translation to the same Slurm option (``-N``
  and ``--nodes`` are one option; ``--mem``, ``--mem-per-cpu`` and ``--mem-per-gpu`` count
  as one because Slurm refuses them together). The translation is left out and a note
  says so. Repeated options keep their order, so the last one wins, as in sbatch.
* ``env_forward`` lists the variables that #PBS -v names (see launcher.pbs), so that the
  launcher passes them on into the containers; it is empty when an #SBATCH --export
  overrides the -v.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import UsageError
from launcher.pbs import QUOTE_HINT, Line, Option, translate
from launcher.pbs import JobScriptError as JobScriptError  # public here too

SBATCH, PBS, MPIDOCK = "#SBATCH", "#PBS", "#MPIDOCK"
_PREFIXES = (SBATCH, PBS, MPIDOCK)

# Options that take no separate value (flags, or values only after '='); any other option
# takes the next word, as getopt and argparse do. A word left over is a positional.
_SBATCH_FLAGS = frozenset({
    "--contiguous", "--exclusive", "--get-user-env", "--help", "--hold", "--ignore-pbs",
    "--nice", "--no-kill", "--no-requeue", "--overcommit", "--oversubscribe", "--parsable",
    "--propagate", "--quiet", "--reboot", "--requeue", "--spread-job", "--test-only",
    "--usage", "--use-min-nodes", "--verbose", "--version", "--wait",
    "-H", "-O", "-Q", "-V", "-W", "-h", "-k", "-s", "-v",
})  # fmt: skip
_LAUNCHER_FLAGS = frozenset(
    {"--auto-image", "--dry-run", "--json", "--no-prepare", "--wait", "--quiet", "-h", "--help"}
)
# Words that start an MPI program on a job script's line (--auto-image looks after them).
MPI_LAUNCHERS = frozenset({"mpirun", "mpiexec", "mpiexec.hydra", "orterun", "srun"})
_SHELL_OPERATORS = frozenset(";&|<>()")

_SHORT = {
    "-A": "--account", "-c": "--cpus-per-task", "-d": "--dependency", "-e": "--error",
    "-J": "--job-name", "-N": "--nodes", "-n": "--ntasks", "-o": "--output",
    "-p": "--partition", "-t": "--time",
}  # fmt: skip
_SAME = {"--mem-per-cpu": "--mem", "--mem-per-gpu": "--mem"}


@dataclass(frozen=True)
class JobScript:
    """What a job script asks for.

    Attributes:
        sbatch: sbatch options: the #SBATCH ones verbatim, then the #PBS translations.
        launcher: launcher options from the #MPIDOCK lines, e.g. ``("--image", "lab/cfd:2.1")``.
        body: the script text, unchanged, for the interpreter in the leader's container.
        interpreter: the shebang after ``#!``; "/bin/sh" without one (sbatch would refuse).
        env_forward: variables named by #PBS -v, for the launcher to pass into the containers.
        notes: directives not read or overridden, one sentence each, for the user to see.
        path: the script as the user named it.
    """

    sbatch: tuple[str, ...]
    launcher: tuple[str, ...]
    body: str
    interpreter: str = "/bin/sh"
    env_forward: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    path: str = "job.sh"

    @property
    def interpreter_argv(self) -> list[str]:
        """The interpreter as the kernel runs it: its path and at most one argument."""
        return self.interpreter.split(None, 1)


def parse(text: str, path: str = "job.sh") -> JobScript:
    """Reads a job script's directives.

    Args:
        text: the whole script.
        path: its name, for messages.

    Raises:
        JobScriptError: DOS line breaks, an unmatched quote, an unsupported #PBS option,
            or a positional word or ``--`` in an #SBATCH or #MPIDOCK line.
    """
    if "\r\n" in text:
        lineno = text[: text.index("\r\n")].count("\n") + 1
        raise JobScriptError(path, lineno, "", "DOS line breaks (\\r\\n)", hint="run dos2unix")
    lines, notes = _directives(text.split("\n"), path)
    sbatch = _words(lines, SBATCH)
    sbatch_names = _option_names(sbatch, _SBATCH_FLAGS, "sbatch would take it for the script")
    launcher = _words(lines, MPIDOCK)
    _option_names(launcher, _LAUNCHER_FLAGS, "the script body is the command")
    translated = _prefer_sbatch(sbatch_names, translate([ln for ln in lines if ln.kind == PBS]))
    notes += translated.notes
    return JobScript(
        sbatch=tuple(word for word, _ in sbatch) + tuple(o.argv() for o in translated.kept),
        launcher=tuple(word for word, _ in launcher),
        body=text,
        interpreter=_interpreter(text, path),
        env_forward=_exported_names(translated.kept),
        notes=tuple(notes),
        path=path,
    )


def load(path: Path) -> JobScript:
    """Reads and parses the job script at path, named in messages as given.

    Raises:
        UsageError: the file cannot be read.
        JobScriptError: it is not UTF-8 (naming the line), or parse refuses it.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UsageError(
            f"cannot read job script {path}: {e.strerror}",
            hint="give the path of a readable file",
        ) from e
    try:
        text = data.decode()
    except UnicodeDecodeError as e:
        lineno = data[: e.start].count(b"\n") + 1
        raise JobScriptError(
            str(path), lineno, "", f"not UTF-8 text (byte 0x{data[e.start]:02x})",
            hint=f"convert it, e.g. iconv -f latin1 -t utf-8 {shlex.quote(str(path))}",
        ) from e  # fmt: skip
    return parse(text, str(path))


def launched_programs(body: str, is_program: Callable[[str], bool]) -> tuple[str, ...]:
    """The programs a script's launcher lines run, each once, in the script's order.

    The rule (for ``mpidock submit --auto-image``): on each line, after a word named
    mpirun, mpiexec, mpiexec.hydra, orterun or srun (a path to one counts), the program is
    the first later word that does not start with ``-`` and that ``is_program`` accepts (a
    path to an executable file, or a command found on PATH), where a word right after an
    option without ``=`` is taken for that option's value (``--map-by node``: not the
    program ``node``) unless no other word is a program (``--oversubscribe hostname``).
    A shell operator (``; & | < > ( )``) ends the search; comments and lines shlex cannot
    split (an open quote) are not read; a backslash continues a line.

    Args:
        body: the script's text.
        is_program: whether a word names a program, as the submit host sees it.
    """
    found: list[str] = []
    for line in body.replace("\\\n", " ").split("\n"):
        words = _shell_words(line)
        for i, word in enumerate(words):
            if word.rsplit("/", 1)[-1] in MPI_LAUNCHERS:
                found += [p for p in [_program_after(words[i + 1 :], is_program)] if p]
    return tuple(dict.fromkeys(found))


def _shell_words(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:
        return []


def _program_after(words: Sequence[str], is_program: Callable[[str], bool]) -> str:
    plain: list[str] = []
    values: list[str] = []
    before = ""
    for word in words:
        if set(word) <= _SHELL_OPERATORS:
            break
        if not word.startswith("-"):
            after_option = before.startswith("-") and "=" not in before
            (values if after_option else plain).append(word)
        before = word
    return next((w for w in [*plain, *values] if is_program(w)), "")


def to_sbatch_argv(script: JobScript, extra: Sequence[str]) -> list[str]:
    """The sbatch options: the script's, then the command line's, which win by coming last."""
    return [*script.sbatch, *extra]


def _interpreter(text: str, path: str) -> str:
    first = text.split("\n", 1)[0]
    if not first.startswith("#!"):
        return "/bin/sh"
    if not first[2:].strip():
        raise JobScriptError(
            path, 1, first, "the shebang names no interpreter", hint="write e.g. #!/bin/bash"
        )
    return first[2:].strip()


def _directives(lines: Sequence[str], path: str) -> tuple[list[Line], list[str]]:
    found: list[Line] = []
    notes: list[str] = []
    command_at = 0
    for lineno, text in enumerate(lines, start=1):
        if not command_at and (kind := _kind(text)):
            found.append(_read(path, lineno, text, kind))
        elif not command_at and _is_command(text):
            command_at = lineno
        elif kind := _kind(text.lstrip()):
            what = f"{kind} after the first command (line {command_at})"
            what = what if command_at else f"an indented {kind} line"
            notes.append(f"{path}:{lineno}: {what} is not read: {text.strip()}")
    return found, notes


def _kind(text: str) -> str:
    return next((prefix for prefix in _PREFIXES if text.startswith(prefix)), "")


def _is_command(text: str) -> bool:
    stripped = text.strip()
    return bool(stripped) and not stripped.startswith("#")


def _read(path: str, lineno: int, text: str, kind: str) -> Line:
    try:
        words = shlex.split(text[len(kind) :], comments=True)
    except ValueError as e:
        raise JobScriptError(
            path, lineno, text, f"cannot split {kind} line: {e}", hint="close or escape the quote"
        ) from e
    return Line(path, lineno, text, kind, tuple(words))


def _words(lines: Sequence[Line], kind: str) -> list[tuple[str, Line]]:
    return [(word, line) for line in lines if line.kind == kind for word in line.words]


def _option_names(words: Sequence[tuple[str, Line]], flags: frozenset[str], why: str) -> list[str]:
    """Names of the options, getopt-style across lines; a positional or ``--`` is an error."""
    names: list[str] = []
    i = 0
    while i < len(words):
        word, line = words[i]
        if word == "--" or not word.startswith("-") or word == "-":
            raise line.error(f"{word!r} is not an option ({why})", hint=_positional_hint(line))
        name, eq, _ = word.partition("=") if word.startswith("--") else (word[:2], "", "")
        names.append(name)
        takes_next = not eq and name not in flags and (word.startswith("--") or len(word) == 2)
        i += 2 if takes_next else 1
    return names


def _positional_hint(line: Line) -> str:
    if line.kind == MPIDOCK:
        return "put the program in the script body; quote values with spaces"
    return QUOTE_HINT


@dataclass(frozen=True)
class _Translated:
    kept: list[Option]
    notes: list[str]


def _prefer_sbatch(sbatch_names: Sequence[str], options: Sequence[Option]) -> _Translated:
    given = {_key(name) for name in sbatch_names}
    kept = [o for o in options if _key(o.name) not in given]
    notes = [
        f"{o.line.path}:{o.line.lineno}: {o.argv()} from `{o.line.text.strip()}` is "
        f"overridden by #SBATCH {_key(o.name)}"
        for o in options
        if _key(o.name) in given
    ]
    return _Translated(kept, notes)


def _key(name: str) -> str:
    long = _SHORT.get(name, name)
    return _SAME.get(long, long)


def _exported_names(options: Sequence[Option]) -> tuple[str, ...]:
    value = next((o.value for o in options if o.name == "--export" and o.value), "ALL")
    return tuple(item.partition("=")[0] for item in value.split(",")[1:])
