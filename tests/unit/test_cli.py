"""`mpidock` itself: every failure is one line on stderr with an exit status, never a bare
traceback; an unexpected one says it is internal (the traceback only with -v)."""

from __future__ import annotations

import argparse

import pytest

from launcher.cli import INTERNAL_ERROR, execute, main
from launcher.errors import UsageError


def failing(error: BaseException) -> argparse.Namespace:
    """What parse gives for a command whose run raises error."""

    def run(args: argparse.Namespace) -> int:
        raise error

    return argparse.Namespace(verbose=False, run=run)


def test_an_unexpected_error_is_one_line_saying_it_is_internal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = failing(KeyError("leader"))
    assert execute(args) == INTERNAL_ERROR != 0
    assert capsys.readouterr().err == (
        "mpidock: error: internal error: KeyError: 'leader' "
        "(hint: rerun with -v for the traceback and report it)\n"
    )


def test_a_message_on_several_lines_still_gives_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(failing(ValueError("first\n  second"))) == INTERNAL_ERROR
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "internal error: ValueError: first second (hint:" in err


def test_with_verbose_the_traceback_comes_too(capsys: pytest.CaptureFixture[str]) -> None:
    args = failing(ZeroDivisionError("division by zero"))
    args.verbose = True
    assert execute(args) == INTERNAL_ERROR
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "in run\n    raise error\nZeroDivisionError: division by zero\n" in err
    assert err.endswith("mpidock: error: internal error: ZeroDivisionError: division by zero "
                        "(hint: rerun with -v for the traceback and report it)\n")  # fmt: skip


def test_a_launcher_error_keeps_its_own_line_and_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert execute(failing(UsageError("bad value", hint="give a good one"))) == 2
    assert capsys.readouterr().err == "mpidock: error: bad value (hint: give a good one)\n"
    assert execute(failing(KeyboardInterrupt())) == 130


@pytest.mark.parametrize("value", ["\u00b2-3", "3-\u00b2", "20000", "a-b"])
def test_a_bad_port_range_option_is_one_line(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["slurm-entry", "--port-range", value, "--image", "i", "--", "true"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"mpidock: error: argument --port-range: {value!r}: expected LOW-HIGH, e.g. "
        "20000-29999 (hint: see mpidock slurm-entry --help)\n"
    )
