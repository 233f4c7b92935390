"""`mpidock submit --auto-image`: the programs a job script's launcher lines run, and the
one-line answers when there is none or the image is named as well."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launcher.errors import UsageError
from launcher.jobscript import launched_programs, parse
from launcher.submit import _launcher_words, auto_programs, own_parser, prepare_submission

# What the submit host would find: two paths to executables and two commands on PATH.
PROGRAMS = {"./ring", "/opt/cfd/bin/solver", "hostname", "node", "my prog"}


def found(body: str) -> tuple[str, ...]:
    return launched_programs(body, PROGRAMS.__contains__)


@pytest.mark.parametrize(
    ("line", "program"),
    [
        ("mpirun ./ring", "./ring"),
        ("mpirun -np 6 --map-by node ./ring --ring", "./ring"),  # `node` is --map-by's value
        ("mpiexec -n 2 -x OMP_NUM_THREADS /opt/cfd/bin/solver in.cfg", "/opt/cfd/bin/solver"),
        ("srun --mpi=pmix hostname", "hostname"),
        ("mpirun --oversubscribe hostname", "hostname"),  # a flag, not an option's value
        ("/usr/bin/mpirun -np 2 ./ring", "./ring"),
        ("time mpiexec.hydra ./ring > out.txt", "./ring"),
        ("orterun 'my prog' arg", "my prog"),
        ("  exec mpirun -np 3 ./ring 2>&1 | tee log", "./ring"),
        ("mpirun -np 2 \\\n    ./ring", "./ring"),  # a continued line
    ],
)
def test_the_program_after_the_launcher_and_its_options(line: str, program: str) -> None:
    assert found(f"#!/bin/sh\n#SBATCH -N 3\n{line}\n") == (program,)


@pytest.mark.parametrize(
    "body",
    [
        "#!/bin/sh\n./ring\n",  # no launcher
        "#!/bin/sh\n# mpirun ./ring\n",  # a comment
        "#!/bin/sh\nmpirun ./absent\n",  # nothing the host can run
        "#!/bin/sh\nmpirun -np 2 > out ./ring\n",  # an operator ends the search
        "#!/bin/sh\nmpirun './ring\n",  # an open quote
        "#!/bin/sh\necho mpirunner ./ring\n",  # a launcher is a whole word
    ],
)
def test_no_program(body: str) -> None:
    assert found(body) == ()


def test_every_launcher_line_counts_each_program_once_in_order() -> None:
    body = (
        "#!/bin/bash\nmpirun -np 2 /opt/cfd/bin/solver a\nsrun hostname && mpirun ./ring\n"
        "mpirun ./ring b\n"
    )
    assert found(body) == ("/opt/cfd/bin/solver", "hostname", "./ring")


def test_the_host_decides_what_is_a_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = tmp_path / "app"
    app.write_text("#!/bin/sh\n")
    app.chmod(0o755)
    (tmp_path / "data").write_text("")  # a file, not executable
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/usr/bin{os.pathsep}/bin")
    script = parse("#!/bin/sh\nmpirun --hostfile ./data ./app\nmpirun -np 2 sh -c true\n")
    assert auto_programs(script, []) == ("./app", "sh")
    assert auto_programs(None, ["app", "x"]) == ("app",)  # `-- CMD`: its first word
    assert auto_programs(None, ["./absent"]) == ()


def test_auto_image_is_submits_own_option(tmp_path: Path) -> None:
    words = ["--auto-image", "--ppn", "2"]
    assert _launcher_words(words, own_parser()) == ["--ppn", "2"]
    job = tmp_path / "job.sh"
    job.write_text("#!/bin/sh\n#MPIDOCK --auto-image --image lab/cfd\nmpirun ./ring\n")
    with pytest.raises(UsageError, match="names the image twice"):
        prepare_submission([str(job)])  # the #MPIDOCK line is read: a flag, not a value


@pytest.mark.parametrize("named", [["--image", "lab/cfd"], ["--template", "cfd"]])
def test_auto_image_and_a_named_image_is_one_line(tmp_path: Path, named: list[str]) -> None:
    job = tmp_path / "job.sh"
    job.write_text("#!/bin/sh\nmpirun ./ring\n")
    with pytest.raises(UsageError) as err:
        prepare_submission(["--auto-image", *named, str(job)])
    assert err.value.message == "--auto-image with --image or --template names the image twice"


def test_no_program_found_is_one_line(tmp_path: Path) -> None:
    job = tmp_path / "job.sh"
    job.write_text("#!/bin/sh\n#SBATCH -N 3\necho hello\n")
    with pytest.raises(UsageError) as err:
        prepare_submission(["--auto-image", str(job)])
    assert (
        err.value.message
        == f"--auto-image found no program in {job}'s mpirun, mpiexec or srun lines"
    )
    assert "--image" in err.value.hint
