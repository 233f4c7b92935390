"""Job scripts: #SBATCH, #PBS and #MPIDOCK directives to sbatch and launcher options."""

from __future__ import annotations

import argparse

import pytest

from launcher import entry
from launcher.jobscript import _LAUNCHER_FLAGS, JobScript, JobScriptError, parse, to_sbatch_argv

SLURM_JOB = """\
#!/bin/bash
#SBATCH --job-name=cfd-wing
#SBATCH -N 3 --ntasks-per-node=4
#SBATCH --time=02:00:00   # two hours is plenty
#SBATCH --partition=compute
#MPIDOCK --image lab/cfd:2.1
#MPIDOCK --ppn 2 --mpi-arg=--bind-to=core

# Build the case, then solve it.
./prepare --mesh fine
./solver case.foam
"""

# The classic Torque example, as sites hand it out.
TORQUE_JOB = """\
#!/bin/bash
#PBS -N cfd
#PBS -l nodes=2:ppn=4,walltime=01:00:00
#PBS -l mem=8gb
#PBS -q batch
#PBS -j oe
#PBS -v OMP_NUM_THREADS=1,CASE_DIR
#MPIDOCK --template cfd

cd "$PBS_O_WORKDIR"
mpirun ./solver "$CASE_DIR"
"""

PBS_PRO_JOB = """\
#!/bin/sh
#PBS -N hybrid
#PBS -l select=4:ncpus=16:mpiprocs=4:mem=32gb
#PBS -l place=scatter:excl
#PBS -l walltime=12:00:00
#PBS -A proj042
#PBS -m abe -M ada@example.org
#PBS -o /scratch/ada/hybrid.out -e /scratch/ada/hybrid.err
#PBS -W depend=afterok:1234.pbs01:1235.pbs01
#MPIDOCK --image lab/hybrid:1.0
./hybrid
"""


def test_sbatch_script_with_mpidock_lines() -> None:
    assert parse(SLURM_JOB, "wing.sh") == JobScript(
        sbatch=(
            "--job-name=cfd-wing",
            "-N",
            "3",
            "--ntasks-per-node=4",
            "--time=02:00:00",
            "--partition=compute",
        ),
        launcher=("--image", "lab/cfd:2.1", "--ppn", "2", "--mpi-arg=--bind-to=core"),
        body=SLURM_JOB,
        interpreter="/bin/bash",
        path="wing.sh",
    )


def test_torque_script() -> None:
    script = parse(TORQUE_JOB)
    assert script.sbatch == (
        "--job-name=cfd",
        "--nodes=2",
        "--ntasks-per-node=4",
        "--time=01:00:00",
        "--mem=8G",
        "--partition=batch",
        "--export=ALL,OMP_NUM_THREADS=1,CASE_DIR",
    )
    assert script.launcher == ("--template", "cfd")
    assert script.env_forward == ("OMP_NUM_THREADS", "CASE_DIR")
    assert script.notes == ()
    assert script.body == TORQUE_JOB


def test_pbs_pro_script() -> None:
    assert parse(PBS_PRO_JOB).sbatch == (
        "--job-name=hybrid",
        "--nodes=4",
        "--ntasks-per-node=4",
        "--cpus-per-task=4",
        "--mem=32G",
        "--exclusive",
        "--time=12:00:00",
        "--account=proj042",
        "--mail-type=FAIL,BEGIN,END",
        "--mail-user=ada@example.org",
        "--output=/scratch/ada/hybrid.out",
        "--error=/scratch/ada/hybrid.err",
        "--dependency=afterok:1234:1235",
    )


@pytest.mark.parametrize(
    ("directive", "slurm"),
    [
        ("-l nodes=3", ["--nodes=3"]),
        ("-l nodes=2:ppn=8", ["--nodes=2", "--ntasks-per-node=8"]),
        ("-lnodes=1:ppn=2", ["--nodes=1", "--ntasks-per-node=2"]),
        ("-l select=2:ncpus=8:mpiprocs=8", ["--nodes=2", "--ntasks-per-node=8"]),
        ("-l select=2:ncpus=8", ["--nodes=2", "--ntasks-per-node=8"]),
        ("-l select=ncpus=4:mpiprocs=2", ["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=2"]),
        ("-l select=3", ["--nodes=3"]),
        ("-l select=2:ncpus=2:mpiprocs=4", ["--nodes=2", "--ntasks-per-node=4"]),
        ("-l place=scatter", []),
        ("-l walltime=01:00:00", ["--time=01:00:00"]),
        ("-l walltime=1:0:0", ["--time=01:00:00"]),
        ("-l walltime=90:00", ["--time=01:30:00"]),
        ("-l walltime=3600", ["--time=01:00:00"]),
        ("-l walltime=72:00:00", ["--time=72:00:00"]),
        ("-l mem=512mb", ["--mem=512M"]),
        ("-l mem=2GB", ["--mem=2G"]),
        ("-l mem=100kb", ["--mem=100K"]),
        ("-l mem=1tb", ["--mem=1T"]),
        ("-l nodes=2,walltime=10:00,mem=4gb", ["--nodes=2", "--time=00:10:00", "--mem=4G"]),
        ("-N 'my run'", ["--job-name=my run"]),
        ("-q debug", ["--partition=debug"]),
        ("-o logs/out.txt", ["--output=logs/out.txt"]),
        ("-e /tmp/err.txt", ["--error=/tmp/err.txt"]),
        ("-j oe", []),
        ("-v A,B=1", ["--export=ALL,A,B=1"]),
        ("-V", ["--export=ALL"]),
        ("-m n", ["--mail-type=NONE"]),
        ("-m ea", ["--mail-type=END,FAIL"]),
        ("-M ada@example.org", ["--mail-user=ada@example.org"]),
        ("-A chem", ["--account=chem"]),
        ("-W depend=afterok:123", ["--dependency=afterok:123"]),
        ("-W depend=afterany:1:2,afternotok:3", ["--dependency=afterany:1:2,afternotok:3"]),
    ],
)
def test_pbs_translation(directive: str, slurm: list[str]) -> None:
    assert list(parse(f"#!/bin/sh\n#PBS {directive}\n./app\n").sbatch) == slurm


def test_every_pbs_variable_list_merges_into_one_export() -> None:
    script = parse("#PBS -v A\n#PBS -N x\n#PBS -V -v B=2,C\nrun\n")
    assert script.sbatch == ("--job-name=x", "--export=ALL,A,B=2,C")
    assert script.env_forward == ("A", "B", "C")


def test_directives_after_the_first_command_are_not_read() -> None:
    text = (
        "#!/bin/bash\n\n# setup\n   # an indented comment keeps the block going\n"
        "#SBATCH -N 2\n\n"
        "module load mpi\n#SBATCH -N 9\n#PBS -l nodes=9\n#MPIDOCK --ppn 9\n./app\n"
    )
    script = parse(text, "late.sh")
    assert script.sbatch == ("-N", "2")
    assert script.launcher == ()
    assert script.notes == (
        "late.sh:8: #SBATCH after the first command (line 7) is not read: #SBATCH -N 9",
        "late.sh:9: #PBS after the first command (line 7) is not read: #PBS -l nodes=9",
        "late.sh:10: #MPIDOCK after the first command (line 7) is not read: #MPIDOCK --ppn 9",
    )


@pytest.mark.parametrize(
    "line", ["# SBATCH -N 4", "#sbatch -N 4", "##SBATCH -N 4", "# PBS -l nodes=4", "# MPIDOCK -x"]
)
def test_commented_out_directives_are_plain_comments(line: str) -> None:
    script = parse(f"#!/bin/sh\n{line}\n#SBATCH -N 1\n./app\n")
    assert (script.sbatch, script.launcher, script.notes) == (("-N", "1"), (), ())


def test_indented_directive_is_noted_not_read() -> None:
    script = parse("#!/bin/sh\n  #SBATCH -N 4\n#SBATCH -N 1\n./app\n")
    assert script.sbatch == ("-N", "1")
    assert script.notes == ("job.sh:2: an indented #SBATCH line is not read: #SBATCH -N 4",)


def test_quoting_and_trailing_comments() -> None:
    text = (
        "#!/bin/bash\n"
        "#SBATCH --chdir=\"/scratch/wing 'A'\" --comment='a # b; $(rm -rf ~)'  # quoted hash\n"
        '#SBATCH --output="out dir/%j.log"\n'
        "#PBS -N 'cfd \"v2\"' -v 'GREETING=hello world'\n"
        "#MPIDOCK --mount '/data/my runs:/runs' --mpi-arg \"--map-by ppr:1:node\"\n"
        "./app\n"
    )
    script = parse(text)
    assert script.sbatch == (
        "--chdir=/scratch/wing 'A'",
        "--comment=a # b; $(rm -rf ~)",
        "--output=out dir/%j.log",
        '--job-name=cfd "v2"',
        "--export=ALL,GREETING=hello world",
    )
    assert script.launcher == ("--mount", "/data/my runs:/runs", "--mpi-arg", "--map-by ppr:1:node")
    assert script.env_forward == ("GREETING",)
    assert script.notes == ()


@pytest.mark.parametrize(
    ("first_line", "interpreter", "argv"),
    [
        ("#!/bin/bash", "/bin/bash", ["/bin/bash"]),
        ("#! /bin/bash -l", "/bin/bash -l", ["/bin/bash", "-l"]),
        ("#!/usr/bin/env python3", "/usr/bin/env python3", ["/usr/bin/env", "python3"]),
        ("#!/usr/bin/env -S bash -eu", "/usr/bin/env -S bash -eu", ["/usr/bin/env", "-S bash -eu"]),
        ("#SBATCH -N 1", "/bin/sh", ["/bin/sh"]),
        ("", "/bin/sh", ["/bin/sh"]),
    ],
)
def test_shebang_interpreter(first_line: str, interpreter: str, argv: list[str]) -> None:
    script = parse(f"{first_line}\n#!/bin/zsh\n./app\n")
    assert script.interpreter == interpreter
    assert script.interpreter_argv == argv


def test_sbatch_beats_pbs_for_the_same_option() -> None:
    text = (
        "#!/bin/sh\n"
        "#PBS -l nodes=2:ppn=4,mem=8gb\n"
        "#PBS -q batch -v A\n"
        "#SBATCH -N 3 --mem-per-cpu=2G\n"
        "#SBATCH --partition compute --export=NONE\n"
        "./app\n"
    )
    script = parse(text, "both.sh")
    assert script.sbatch == (
        "-N",
        "3",
        "--mem-per-cpu=2G",
        "--partition",
        "compute",
        "--export=NONE",
        "--ntasks-per-node=4",
    )
    assert script.env_forward == ()
    assert script.notes == (
        "both.sh:2: --nodes=2 from `#PBS -l nodes=2:ppn=4,mem=8gb` is overridden by "
        "#SBATCH --nodes",
        "both.sh:2: --mem=8G from `#PBS -l nodes=2:ppn=4,mem=8gb` is overridden by #SBATCH --mem",
        "both.sh:3: --partition=batch from `#PBS -q batch -v A` is overridden by "
        "#SBATCH --partition",
        "both.sh:3: --export=ALL,A from `#PBS -q batch -v A` is overridden by #SBATCH --export",
    )


def test_repeated_options_keep_their_order_so_the_last_wins() -> None:
    text = "#SBATCH --time=10\n#SBATCH -t 20\n#PBS -l walltime=1:00\n#PBS -l walltime=2:00\nrun\n"
    # sbatch applies options in order; the PBS translations are overridden by #SBATCH -t.
    script = parse(text)
    assert script.sbatch == ("--time=10", "-t", "20")
    assert len(script.notes) == 2


def test_repeated_pbs_options_last_wins() -> None:
    script = parse("#PBS -q short\n#PBS -q long\nrun\n")
    assert script.sbatch == ("--partition=short", "--partition=long")


@pytest.mark.parametrize(
    ("text", "lineno", "words"),
    [
        ("#!/bin/sh\n#PBS -S /bin/bash\n", 2, "unsupported PBS option '-S'"),
        ("#PBS -l nodes=2\n#PBS -l ncpus=4\n", 2, "unsupported PBS resource 'ncpus=4'"),
        ("#PBS -l procs=8\n", 1, "unsupported PBS resource 'procs=8'"),
        ("#PBS -l nodes=node01:ppn=4\n", 1, "unsupported node request"),
        ("#PBS -l nodes=2:ppn=4:gpus=1\n", 1, "unsupported node request"),
        ("#PBS -l nodes=0\n", 1, "nodes must be a positive integer"),
        ("#PBS -l nodes=\u0663\n", 1, "unsupported node request"),  # an Arabic-Indic 3
        ("#PBS -l nodes=2:ppn=\u00b2\n", 1, "unsupported node request"),
        ("#PBS -l select=\u00b2\n", 1, "select must be a positive integer, got '\u00b2'"),
        ("#PBS -l select=x\n", 1, "select must be a positive integer, got 'x'"),
        ("#PBS -l select=2:ncpus=\u00b2\n", 1, "ncpus must be a positive integer"),
        ("#PBS -l walltime=\u00b2\n", 1, "bad walltime '\u00b2'"),
        ("#PBS -l walltime=1:\u00b2:00\n", 1, "bad walltime"),
        ("#PBS -l mem=\u00b2gb\n", 1, "bad memory size"),
        ("#PBS -W depend=afterok:\u00b2\n", 1, "unsupported dependency"),
        ("#PBS -l select=2:ncpus=4+1:ncpus=8\n", 1, "unsupported select chunk"),
        ("#PBS -l select=2:ngpus=1\n", 1, "unsupported select chunk 'ngpus=1'"),
        ("#PBS -l select=2:ncpus=6:mpiprocs=4\n", 1, "ncpus=6 is not a multiple of mpiprocs=4"),
        ("#PBS -l place=pack\n", 1, "unsupported placement"),
        ("#PBS -l walltime=1h\n", 1, "bad walltime '1h'"),
        ("#PBS -l walltime=1:2:3:4\n", 1, "bad walltime"),
        ("#PBS -l walltime=0\n", 1, "walltime 0"),
        ("#PBS -l mem=8000\n", 1, "bad memory size '8000'"),
        ("#PBS -l mem=8w\n", 1, "bad memory size"),
        ("#PBS -j eo\n", 1, "unsupported -j eo"),
        ("#PBS -j oe\n#PBS -e err.txt\n", 2, "-j oe joins stderr"),
        ("#PBS -e err.txt\n\n#PBS -j oe\n", 3, "-j oe joins stderr"),
        ("#PBS -m abx\n", 1, "unsupported mail events -m abx"),
        ("#PBS -m an\n", 1, "unsupported mail events"),
        ("#PBS -W group_list=chem\n", 1, "unsupported -W attribute"),
        ("#PBS -W depend=before:12\n", 1, "unsupported dependency 'before:12'"),
        ("#PBS -W depend=afterok:12[]\n", 1, "unsupported dependency"),
        ("#PBS -q short@pbs01\n", 1, "names a PBS server"),
        ("#PBS -o login1:/home/ada/out\n", 1, "names a host"),
        ("#PBS -v 1A\n", 1, "-v '1A' is not VAR or VAR=value"),
        ("#PBS -v A=1,2\n", 1, "-v '2' is not VAR"),
        ("#PBS -N\n", 1, "PBS option -N needs a value"),
        ("#PBS -Vx\n", 1, "-V takes no value"),
        ("#PBS cfd\n", 1, "'cfd' is not an option"),
        ("#PBS -N cfd run\n", 1, "'run' is not an option"),
        ("#!/bin/sh\n#SBATCH --job-name='wing\n", 2, "cannot split #SBATCH line"),
        ("#SBATCH -N 2 4\n", 1, "'4' is not an option (sbatch would take it"),
        ("#SBATCH --exclusive\n#SBATCH cfd\n", 2, "'cfd' is not an option"),
        ("#SBATCH -- -N 2\n", 1, "'--' is not an option"),
        ("#MPIDOCK --image lab/cfd -- ./solver\n", 1, "'--' is not an option (the script body"),
        ("#MPIDOCK --dry-run ./solver\n", 1, "'./solver' is not an option"),
        ("#MPIDOCK lab/cfd\n", 1, "'lab/cfd' is not an option"),
        ('#MPIDOCK --image "lab/cfd\n', 1, "cannot split #MPIDOCK line"),
        ("#!\n./app\n", 1, "the shebang names no interpreter"),
        ("#!/bin/sh\n#SBATCH -N 1\r\n./app\r\n", 2, "DOS line breaks"),
    ],
)
def test_errors_name_file_and_line(text: str, lineno: int, words: str) -> None:
    with pytest.raises(JobScriptError) as info:
        parse(text + "./app\n", "jobs/my 'run'.sh")
    error = info.value
    assert (error.path, error.lineno) == ("jobs/my 'run'.sh", lineno)
    assert str(error).startswith(f"jobs/my 'run'.sh:{lineno}: ")
    assert words in error.message
    assert error.hint


def test_pbs_error_lists_what_is_supported() -> None:
    with pytest.raises(JobScriptError, match=r"in `#PBS -l ncpus=4`") as info:
        parse("#PBS -l ncpus=4\n./app\n")
    for supported in ["nodes=N[:ppn=M]", "select=", "walltime", "-N name", "-W depend", "#SBATCH"]:
        assert supported in info.value.hint


def test_valued_options_take_the_next_word_even_on_the_next_line() -> None:
    # sbatch hands getopt the words of all #SBATCH lines at once.
    script = parse("#SBATCH --comment\n#SBATCH 'a b' -x sim3 --exclusive\n#MPIDOCK -x HOME\nrun\n")
    assert script.sbatch == ("--comment", "a b", "-x", "sim3", "--exclusive")
    assert script.launcher == ("-x", "HOME")


def test_to_sbatch_argv_puts_the_command_line_last() -> None:
    script = parse(TORQUE_JOB)
    argv = to_sbatch_argv(script, ["--partition=debug", "-N", "1"])
    assert argv == [*script.sbatch, "--partition=debug", "-N", "1"]
    assert argv.index("--partition=debug") > argv.index("--partition=batch")


def test_launcher_flags_cover_the_launch_options() -> None:
    """The #MPIDOCK reader must know every launch option that takes no value."""
    parser = argparse.ArgumentParser()
    entry.add_launch_options(parser)
    flags = {s for a in parser._actions if a.nargs == 0 for s in a.option_strings}
    assert flags <= _LAUNCHER_FLAGS


def test_script_without_directives() -> None:
    text = "#!/bin/sh\nexec ./app\n"
    assert parse(text) == JobScript(sbatch=(), launcher=(), body=text, interpreter="/bin/sh")
