"""Leftovers of jobs that ended without cleaning up, found by label (containers) and by
name (job directories of keys), removed only once Slurm says their job has ended.

Three callers: every slurm-entry as it starts (best effort, never failing the job),
`mpidock reap` by hand, and `mpidock reap --job ID` from a Slurm Epilog, where the job
has ended by definition and Slurm is not asked.

Other users' jobs run on the same nodes, so two rules hold whoever calls:
- An ordinary user only ever touches their own: a container counts as theirs when its user
  label names them AND it runs as their UID (labels are set by whoever starts a container,
  so a label alone proves nothing); a job directory when it is a real directory they own.
  Root (the Epilog) acts for the job's user, SLURM_JOB_UID, or for everyone by hand.
- A job has ended only on Slurm's positive word: its state is a final one, or Slurm no
  longer knows its id. A job squeue merely does not list (PrivateData=jobs, another
  user's) has not ended, and neither has one Slurm could not be asked about.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException
from docker.models.containers import Container

from launcher import containers, jobdir, proc
from launcher.errors import CommandFailed, LauncherError
from launcher.plan import LABEL_PREFIX, LaunchPlan
from launcher.slurm import FINAL_STATES, job_state_in

# What slurmctld answers for an id it no longer holds (MinJobAge after the job ended).
UNKNOWN_JOB = "invalid job id"
# A job directory: <job>[.<step>], the job an array ("123_4") or heterogeneous ("123+1") id.
JOB_DIR = re.compile(r"^(\d+(?:[_+]\d+)?)(?:\.\w+)?$")


@dataclass(frozen=True)
class Leftover:
    """One thing a job left: a container on this node's engine, or a job directory.

    Attributes:
        kind: "container" or "job dir".
        job_id: the Slurm job it belongs to.
        name: the container's name or the directory's path, for people.
        ref: what removal acts on: the container's ID (a name may be taken again by then),
            or the directory's path.
    """

    kind: str  # "container" | "job dir"
    job_id: str
    name: str
    ref: str = ""

    def describe(self) -> str:
        return f"{self.kind} {self.name} of job {self.job_id}"


@dataclass(frozen=True)
class Caller:
    """Whose leftovers may be touched: one user's (uid, name), or everyone's (uid None)."""

    uid: int | None
    user: str = ""

    def owns_container(self, labels: Mapping[str, str], config_user: str) -> bool:
        """Labelled as ours AND running as our UID; ours when acting for everyone."""
        if self.uid is None:
            return True
        uid = config_user.partition(":")[0]
        return labels.get(f"{LABEL_PREFIX}.user") == self.user and uid == str(self.uid)

    def owns_path(self, info: os.stat_result) -> bool:
        return self.uid is None or info.st_uid == self.uid


def caller(env: Mapping[str, str]) -> Caller:
    """The caller's own scope. Root acts for the job's user when Slurm names one (the
    Epilog), else for everyone."""
    euid = os.geteuid()
    if euid != 0:
        return Caller(euid, _user_name(euid))
    job_uid = env.get("SLURM_JOB_UID", "").strip()
    if job_uid.isdigit():
        return Caller(int(job_uid), env.get("SLURM_JOB_USER") or _user_name(int(job_uid)))
    return Caller(None)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def reapable(found: Iterable[Leftover], ended: set[str], spare: str = "") -> list[Leftover]:
    """The leftovers whose job Slurm says has ended, never the caller's own job (`spare`)."""
    return [f for f in found if f.job_id in ended and f.job_id != spare]


def job_ended(state_text: str) -> bool:
    """Whether `scontrol show job` output shows the job in a final state."""
    return job_state_in(state_text) in FINAL_STATES


def ask_slurm(job_ids: Iterable[str]) -> set[str]:
    """The jobs among job_ids that Slurm says have ended; unsure ones are left out."""
    return {job_id for job_id in sorted(set(job_ids)) if _has_ended(job_id)}


def _has_ended(job_id: str) -> bool:
    try:
        done = proc.run(["scontrol", "--oneliner", "show", "job", job_id], timeout=20)
    except CommandFailed as e:
        return UNKNOWN_JOB in e.stderr.lower()
    except LauncherError:
        return False  # no answer is no evidence
    return job_ended(done.stdout)


def node_leftovers(client: docker.DockerClient, owner: Caller | None = None) -> list[Leftover]:
    """Every container carrying our job label on this node's engine that is the owner's
    (default: the caller's own)."""
    owner = owner or caller(os.environ)
    return [
        Leftover("container", c.labels.get(f"{LABEL_PREFIX}.job", ""), c.name or c.id, c.id)
        for c in containers.job_containers(client)
        if owner.owns_container(c.labels, _config_user(c))
    ]


def _config_user(container: Container) -> str:
    return str((container.attrs.get("Config") or {}).get("User") or "")


def job_dir_leftovers(job_root: Path, owner: Caller | None = None) -> list[Leftover]:
    """Job directories under a job root, in its per-user directories (job_root/<user>/
    <job>[.<step>]): the owner's (default: the caller) only, or every user's for root
    acting for everyone; real directories the owner owns, never what a symlink points to."""
    owner = owner or caller(os.environ)
    found = []
    for user_dir in _user_dirs(job_root, owner):
        try:
            entries = list(user_dir.iterdir())
        except OSError:
            continue
        for path in entries:
            match = JOB_DIR.match(path.name)
            if match and _owned_dir(path, owner):
                found.append(Leftover("job dir", match.group(1), str(path), str(path)))
    return found


def _user_dirs(job_root: Path, owner: Caller) -> list[Path]:
    if owner.uid is not None:
        return [job_root / owner.user] if _owned_dir(job_root / owner.user, owner) else []
    try:
        return [d for d in job_root.iterdir() if _owned_dir(d, owner)]
    except OSError:
        return []


def _owned_dir(path: Path, owner: Caller) -> bool:
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and owner.owns_path(info)


def remove(client: docker.DockerClient | None, leftover: Leftover) -> None:
    """Removes one leftover; one already gone is fine.

    Raises:
        LauncherError: Docker or the file system refused.
    """
    if leftover.kind == "job dir":
        jobdir.remove_job_dir(Path(leftover.ref or leftover.name))
        return
    assert client is not None
    try:
        containers.remove_named(client, leftover.ref or leftover.name)
    except DockerException as e:
        raise LauncherError(f"cannot remove {leftover.describe()}: {e}") from e


def remove_all(
    client: docker.DockerClient | None, leftovers: Sequence[Leftover], say: Callable[[str], None]
) -> list[str]:
    """Removes each, saying so; the failures, one line each."""
    failures = []
    for leftover in leftovers:
        try:
            remove(client, leftover)
            say(f"removed {leftover.describe()}")
        except LauncherError as e:
            failures.append(str(e))
    return failures


def at_start(client: docker.DockerClient, plan: LaunchPlan) -> None:
    """Before a job starts on a node: remove what the user's ended jobs left there.

    Slurm is asked only about jobs something was found of, so a clean node costs one
    container list. Never fails the job: problems become one line on stderr.
    """
    owner = caller(os.environ)
    found = node_leftovers(client, owner)
    if plan.role == "leader":
        found += job_dir_leftovers(plan.job.path.parent.parent, owner)
    others = {f.job_id for f in found if f.job_id != plan.job_id}
    if not others:
        return

    def say(line: str) -> None:
        print(f"mpidock: {plan.node}: {line}", file=sys.stderr)

    doomed = reapable(found, ask_slurm(others), spare=plan.job_id)
    for failure in remove_all(client, doomed, say):
        say(failure)
