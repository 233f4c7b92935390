"""`mpidock submit`: prepare the image on this host, then sbatch a job whose one step is
`srun mpidock slurm-entry ...`; with --wait, follow the job and exit with its status.

    mpidock submit [sbatch options] (--image IMG | --template NAME) [launcher options] -- CMD
    mpidock submit [sbatch options] [launcher options] job.sh
    mpidock submit [sbatch options] --auto-image [launcher options] job.sh

Arguments are sorted token by token: the launcher's own options (those of slurm-entry)
go to slurm-entry, everything else to sbatch, in the order given. A job script's
#SBATCH and #PBS lines become sbatch options and its #MPIDOCK lines launcher options;
the command line wins over both, a template's defaults lose to everything.
--auto-image runs `mpidock containerize` here on the programs the script's mpirun, mpiexec
or srun lines run (see jobscript.launched_programs) and submits with that image.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from launcher import cache, config, containers, entry, images, jobscript, movement, proc
from launcher.containerize import command as containerize_command
from launcher.errors import DockerUnavailable, UsageError
from launcher.identity import current_identity
from launcher.slurm import job_over, job_state_in
from launcher.store import ImageStore

POLL = 1.0
# --wait-timeout ran out: the job goes on. timeout(1)'s status, so scripts can tell it apart.
WAIT_EXPIRED = 124


@dataclass(frozen=True)
class WaitLimit:
    """--wait-timeout: how long --wait follows the job, in seconds and as the user wrote it."""

    seconds: float
    text: str


@dataclass(frozen=True)
class Submission:
    """What submit will do, as data: printed by --dry-run."""

    sbatch: tuple[str, ...]
    ours: tuple[str, ...]  # submit's and the launcher's options, as given
    image: str
    wrap: str


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "submit",
        help="prepare the image here and sbatch a container job",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    p.add_argument("words", nargs=argparse.REMAINDER)
    p.set_defaults(run=run)


def own_parser() -> argparse.ArgumentParser:
    """submit's own options and the launcher's, without the command."""
    p = argparse.ArgumentParser(prog="mpidock submit", add_help=False, exit_on_error=False)
    p.add_argument("--template", help="a site template: image and default resources")
    p.add_argument("--wait", action="store_true", help="follow the job; exit with its status")
    p.add_argument(
        "--wait-timeout", metavar="DUR",
        help=f"with --wait: stop following after DUR (45s, 30m, 12h, 7d); the job keeps "
        f"running and the exit status is {WAIT_EXPIRED}",
    )  # fmt: skip
    p.add_argument(
        "--dry-run", action="store_true", help="print the sbatch command; submit nothing"
    )
    p.add_argument("--no-prepare", action="store_true", help="leave the image to the nodes")
    p.add_argument(
        "--auto-image", action="store_true",
        help="containerize the programs the script's mpirun/mpiexec/srun lines run, here, "
        "and run the job in that image",
    )  # fmt: skip
    entry.add_launch_options(p, submit=True)
    return p


def split(words: list[str], parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """(ours, sbatch's): a word is ours when it is one of our options (or its value)."""
    ours, theirs = [], []
    actions = parser._option_string_actions  # argparse has no public table of options
    i = 0
    while i < len(words):
        word = words[i]
        name = word.split("=", 1)[0]
        action = actions.get(name) if word.startswith("--") or word in actions else None
        if action is None:
            theirs.append(word)
        elif "=" in word or action.nargs == 0:
            ours.append(word)
        else:
            ours += words[i : i + 2]
            i += 1
        i += 1
    return ours, theirs


SUBMIT_ONLY = {
    "--template", "--wait", "--wait-timeout", "--dry-run", "--no-prepare", "--auto-image",
}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    words = list(args.words)
    if words[:1] in (["-h"], ["--help"]):
        print(__doc__)
        own_parser().print_help()
        return 0
    plan = prepare_submission(words)
    parsed = _parse(own_parser(), list(plan.ours))
    limit = wait_limit(parsed)  # a bad one is refused before anything is submitted
    if parsed.dry_run:
        print(shlex.join(["sbatch", *plan.sbatch, "--wrap", plan.wrap]))
        return 0
    if not parsed.no_prepare:
        prepare_image(plan.image, parsed)
    job_id = sbatch(plan)
    print(f"mpidock: submitted job {job_id}", file=sys.stderr, flush=True)
    print(job_id, flush=True)  # a pipe reader learns it now, not at the job's end
    return follow(job_id, limit) if parsed.wait else 0


def wait_limit(parsed: argparse.Namespace) -> WaitLimit | None:
    """--wait-timeout as a WaitLimit; None without one."""
    text = parsed.wait_timeout
    if text is None:
        return None
    if not parsed.wait:
        raise UsageError("--wait-timeout without --wait", hint="add --wait, or drop the timeout")
    seconds = cache.parse_duration(text)
    if not seconds:
        raise UsageError(
            f"--wait-timeout {text} would stop following at once",
            hint="give a positive duration: 45s, 30m, 12h, 7d or 2w",
        )
    return WaitLimit(seconds, text.strip())


def prepare_submission(words: list[str]) -> Submission:
    """Words to the sbatch options, the launcher options and the batch script's one line."""
    head, command = _at_separator(words)
    parser = own_parser()
    ours, theirs = split(head, parser)
    script = None
    if not command:
        if not theirs or not Path(theirs[-1]).is_file():
            raise UsageError(
                "nothing to run: no command after -- and no job script",
                hint="mpidock submit -N 3 --image IMG -- ./app args, or mpidock submit job.sh",
            )
        path = Path(theirs.pop()).absolute()
        script = jobscript.load(path)
        for note in script.notes:
            print(f"mpidock: {note}", file=sys.stderr)
        ours = [*script.launcher, *ours]
        ours += [w for name in script.env_forward for w in ("--env", name)]
    parsed = _parse(parser, ours)
    cfg = config.for_command(parsed)  # its templates, and the launch mode for srun
    srun = srun_words(cfg.launch, script)  # a refusal before any image is made
    defaults: list[str] = []
    image = parsed.image or ""
    if parsed.auto_image:
        image = _auto_image(parsed, script, command)
    if parsed.template:
        defaults, template_image = config.template_defaults(config.template(cfg, parsed.template))
        image = image or template_image
    if not image:
        raise UsageError("no image to run", hint="give --image IMG or --template NAME")
    launcher = _launcher_words(ours, parser)
    if not parsed.image:
        launcher = ["--image", image, *launcher]
    tail = ["--script", str(path)] if script else ["--", *command]
    wrap = shlex.join([*srun, "mpidock", "slurm-entry", *launcher, *tail])
    sbatch_words = [*defaults, *(script.sbatch if script else ()), *theirs]
    return Submission(tuple(sbatch_words), tuple(ours), image, wrap)


def srun_words(mode: str, script: jobscript.JobScript | None) -> list[str]:
    """srun, with Slurm's PMI plugin when the launch is direct (--launch pmix|pmi2 from the
    options, an #MPIDOCK line or the configuration): every task is then a rank."""
    if mode == "ssh":
        return ["srun"]
    if script is not None:
        raise UsageError(
            f"--launch {mode} runs a command as every task, not a job script's mpirun",
            hint=f"mpidock submit --launch {mode} --image IMG -- ./app, or --launch ssh "
            "for the script",
        )
    return ["srun", f"--mpi={mode}"]


def is_program(word: str) -> bool:
    """A path (from the working directory) to an executable file, or a command on PATH."""
    if "/" in word:
        return os.path.isfile(word) and os.access(word, os.X_OK)
    return shutil.which(word) is not None


def auto_programs(
    script: jobscript.JobScript | None,
    command: list[str],
    is_program: Callable[[str], bool] = is_program,
) -> tuple[str, ...]:
    """--auto-image's programs: those the script's launcher lines run (see
    jobscript.launched_programs), or the command's first word."""
    if script is not None:
        return jobscript.launched_programs(script.body, is_program)
    return tuple(command[:1]) if command and is_program(command[0]) else ()


def _auto_image(
    parsed: argparse.Namespace, script: jobscript.JobScript | None, command: list[str]
) -> str:
    """The image containerize makes here for the job's programs (planned only on --dry-run)."""
    if parsed.image or parsed.template:
        raise UsageError(
            "--auto-image with --image or --template names the image twice",
            hint="drop --auto-image, or the other",
        )
    found = list(auto_programs(script, command))
    if not found:
        where = f"{script.path}'s mpirun, mpiexec or srun lines" if script else command[0]
        raise UsageError(
            f"--auto-image found no program in {where}",
            hint="run a path or a command on PATH, e.g. `mpirun ./app`, or give --image IMG",
        )
    if parsed.dry_run:
        return containerize_command.planned_tag(found, base=None)
    return containerize_command.image_for(found, base=None)


def prepare_image(image: str, parsed: argparse.Namespace) -> None:
    """On this host, when it has Docker and the image: personalize it for the user (so a
    broken image fails here, not on the nodes) and archive it into the store once."""
    node = socket.gethostname()
    try:
        client = containers.client_for_node(node, timeout=600)
    except DockerUnavailable:
        print("mpidock: no Docker engine here: the nodes get the image", file=sys.stderr)
        return
    try:
        image_id = movement.local_id(client, image, node)
        if image_id is None:
            print(f"mpidock: {image} is not here: the nodes get it", file=sys.stderr)
            return
        ident = current_identity()
        cfg = config.for_command(parsed)
        images.ensure_personal(client, image_id, ident, node, image)
        store = ImageStore(cfg.image_store)
        if store.find(image_id) is None:
            wanted = movement.Wanted(image, image_id, str(store.root), cfg.registry)
            movement.save(client, store, wanted, node, movement.stderr_say(node))
    finally:
        client.close()


def sbatch(plan: Submission) -> str:
    done = proc.run(
        ["sbatch", "--parsable", *plan.sbatch, "--wrap", plan.wrap],
        timeout=60,
        hint="the sbatch options are Slurm's: see sbatch --help",
    )
    return done.stdout.strip().split(";")[0]


def _expired(job_id: str, limit: WaitLimit) -> int:
    print(
        f"mpidock: stopped following job {job_id} after {limit.text} (--wait-timeout); "
        f"it keeps running (scancel {job_id} stops it)",
        file=sys.stderr,
    )
    return WAIT_EXPIRED


def job_state(job_id: str) -> tuple[str, int]:
    out = proc.run(["scontrol", "show", "job", job_id], timeout=30).stdout
    code = re.search(r"\bExitCode=(\d+):(\d+)", out)
    exit_code = int(code.group(1)) if code else 0
    if code and not exit_code and int(code.group(2)):
        exit_code = 128 + int(code.group(2))
    return job_state_in(out), exit_code


def follow(
    job_id: str,
    limit: WaitLimit | None = None,
    ask: Callable[[str], tuple[str, int]] = job_state,
) -> int:
    """Waits for the job's end; its exit status (1 for an end without one, e.g. TIMEOUT).

    An interrupt, or the limit running out (WAIT_EXPIRED), stops the following only, as
    with sbatch --wait: the job is Slurm's. `ask` gives the job's state and exit code.
    """
    deadline = time.monotonic() + (limit.seconds if limit else math.inf)
    try:
        while not job_over((found := ask(job_id))[0]):
            if limit is not None and time.monotonic() >= deadline:
                return _expired(job_id, limit)
            time.sleep(POLL)
    except KeyboardInterrupt:
        print(
            f"mpidock: stopped following job {job_id}; it keeps running "
            f"(scancel {job_id} stops it)",
            file=sys.stderr,
        )
        return 130
    state, code = found
    print(f"mpidock: job {job_id} {state}, exit code {code}", file=sys.stderr)
    if state == "COMPLETED":
        return 0
    return code or 1


def _at_separator(words: list[str]) -> tuple[list[str], list[str]]:
    if "--" in words:
        i = words.index("--")
        return words[:i], words[i + 1 :]
    return words, []


def _parse(parser: argparse.ArgumentParser, words: list[str]) -> argparse.Namespace:
    try:
        return parser.parse_args(words)
    except argparse.ArgumentError as e:
        raise UsageError(str(e), hint="see mpidock submit --help") from e


def _launcher_words(ours: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """Our words minus submit's own options: what slurm-entry gets."""
    kept, skip = [], False
    for word in ours:
        if skip:
            skip = False
            continue
        name = word.split("=", 1)[0]
        if name in SUBMIT_ONLY:
            action = parser._option_string_actions[name]
            skip = "=" not in word and action.nargs != 0
            continue
        kept.append(word)
    return kept
