"""The per-job directory: the job's ssh material and the files its nodes meet through.

It lives at ``job_root/<user>/<job>.<step>``, the same path on every node. The user's
directory is the user's own and private (0700), so on a shared job root nobody else can
create, replace or read anything in it. Every node verifies that with lstat before it
trusts a file there: no symlink, no FIFO, owned by the user, not writable by others.

The leader creates the job directory, then the keys (keys.py writes their text); each
worker writes its own sshd configuration with the port it chose on its node and
announces itself; the leader then writes the client files for those ports, beats and
says stop in the directory, and removes it at the job's end.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import JobDirError, JobDirExists
from launcher.jobfiles import read_trusted, verify_dir, write_file
from launcher.keys import (
    check_host,
    known_hosts_for,
    new_keypair,
    ssh_config,
    ssh_wrapper,
    sshd_config,
)

REMOVE_TRIES = 5  # a late report from a worker can refill a directory being removed
REMOVE_PAUSE = 0.2


@dataclass(frozen=True)
class JobDir:
    """The per-job directory and the names of its files.

    Attributes:
        path: the directory, at the same path on every node.
    """

    path: Path

    @property
    def user_key(self) -> Path:
        """Private user key, read by ssh on the leader."""
        return self.path / "id_ed25519"

    @property
    def user_pub(self) -> Path:
        """Public user key."""
        return self.path / "id_ed25519.pub"

    @property
    def host_key(self) -> Path:
        """Private host key, read by every node's sshd."""
        return self.path / "ssh_host_ed25519_key"

    @property
    def host_pub(self) -> Path:
        """Public host key."""
        return self.path / "ssh_host_ed25519_key.pub"

    @property
    def authorized_keys(self) -> Path:
        """The user key, restricted to running commands; written last of the keys."""
        return self.path / "authorized_keys"

    @property
    def known_hosts(self) -> Path:
        """The host key for every node of the job, at each node's port."""
        return self.path / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        """Client settings."""
        return self.path / "ssh_config"

    @property
    def sshd_config(self) -> Path:
        """Server settings of a job whose nodes share one port (mpidock check)."""
        return self.path / "sshd_config"

    def node_sshd_config(self, node: str) -> Path:
        """Server settings a worker writes for itself, with the port it chose."""
        return self.path / f"sshd_config.{check_host(node)}"

    @property
    def ssh_wrapper(self) -> Path:
        """The ssh MPI runs; named ``ssh`` so MPI treats it as ssh."""
        return self.path / "ssh"

    @property
    def stop_file(self) -> Path:
        """Created by the leader to tell the workers to stop."""
        return self.path / "stop"

    @property
    def hostfile(self) -> Path:
        """The job's nodes and slots in the MPI's syntax, for a job script's own mpirun."""
        return self.path / "hostfile"

    @property
    def heartbeat(self) -> Path:
        """Touched every second by a live leader."""
        return self.path / "heartbeat"

    @property
    def image_file(self) -> Path:
        """Written by the leader: the image name and ID every node runs, and where it is."""
        return self.path / "image.json"

    @property
    def archive_failed(self) -> Path:
        """Written by the leader when it cannot save the image for the workers."""
        return self.path / "archive-failed.json"

    def need_file(self, node: str) -> Path:
        """Written by a worker that needs the image saved into the store."""
        return self.path / f"need.{check_host(node)}"

    def moving_file(self, node: str) -> Path:
        """Touched every few seconds while a node moves image bytes."""
        return self.path / f"moving.{check_host(node)}"

    def arrived_file(self, node: str) -> Path:
        """Created by a worker as soon as it sees the job directory."""
        return self.path / f"arrived.{check_host(node)}"

    def done_file(self, node: str) -> Path:
        """Created by a worker once its part of the job is torn down."""
        return self.path / f"done.{check_host(node)}"

    def ready_file(self, node: str) -> Path:
        """Created by a worker when its sshd is up; holds the port it listens on."""
        return self.path / f"ready.{check_host(node)}"

    def failed_file(self, node: str) -> Path:
        """Created by a worker that could not start; holds the reason."""
        return self.path / f"failed.{check_host(node)}"


def job_path(root: Path | str, user: str, key: str) -> Path:
    """``root/<user>/<key>``: every user's jobs in a directory of their own."""
    return Path(root) / user / key


def create_job_dir(path: Path, *, hosts: Sequence[str], port: int, user: str) -> JobDir:
    """Creates a job directory whose nodes all listen on one port, with every file.

    The directory is 0700 and private keys are 0600 from their creation on. A failure
    part way removes what was created. (A launched job makes its directory with
    make_job_dir and write_keys instead: its workers choose their ports themselves.)

    Args:
        path: the directory to create; it must not exist. Made absolute.
        hosts: the job's nodes.
        port: the port of every node's sshd.
        user: the job user.

    Raises:
        UsageError: a value OpenSSH could not read back exactly.
        JobDirExists: the directory already exists.
        JobDirError: it cannot be created or written.
    """
    job = JobDir(Path(path).absolute())
    _make_parent(job.path)
    _make_dir(job.path)
    try:
        write_keys(job, user)
        write_client_files(job, dict.fromkeys(hosts, port), user)
        write_sshd_config(job, job.sshd_config, port, user)
    except BaseException:
        remove_job_dir(job.path)
        raise
    return job


def make_job_dir(path: Path) -> JobDir:
    """Creates the empty job directory, 0700, in the user's verified directory.

    Raises:
        JobDirExists: the directory already exists.
        JobDirError: the user's directory is not the user's own, or nothing can be made.
    """
    job = JobDir(Path(path).absolute())
    ensure_user_dir(job.path.parent)
    _make_dir(job.path)
    return job


def write_keys(job: JobDir, user: str) -> None:
    """Fresh user and host keys, authorized_keys (last: workers wait for it) and the ssh
    wrapper.

    Raises:
        UsageError: a value OpenSSH could not read back exactly.
        JobDirError: a file cannot be written.
    """
    user_key, host_key = new_keypair("mpidock-user"), new_keypair("mpidock-host")
    files = [
        (job.user_key, user_key.private_openssh, 0o600),
        (job.user_pub, user_key.public_openssh + "\n", 0o644),
        (job.host_key, host_key.private_openssh, 0o600),
        (job.host_pub, host_key.public_openssh + "\n", 0o644),
        (job.ssh_wrapper, ssh_wrapper(str(job.ssh_config)), 0o700),
        # restrict: no forwarding, no pty; running commands, all MPI needs, stays allowed.
        (job.authorized_keys, f"restrict {user_key.public_openssh}\n", 0o600),
    ]
    for target, text, mode in files:
        write_file(target, text, mode)


def write_client_files(job: JobDir, ports: Mapping[str, int], user: str) -> None:
    """known_hosts and ssh_config for the port each node's sshd listens on.

    Raises:
        UsageError: a bad host name or port.
        JobDirError: a file cannot be written or the host key read.
    """
    host_pub = read_trusted(job.host_pub).strip()
    client = ssh_config(
        hosts=list(ports),
        port=next(iter(ports.values())),
        ports=ports,
        user=user,
        identity=str(job.user_key),
        known_hosts=str(job.known_hosts),
    )
    write_file(job.known_hosts, known_hosts_for(ports, host_pub), 0o644)
    write_file(job.ssh_config, client, 0o644)


def write_sshd_config(job: JobDir, target: Path, port: int, user: str) -> None:
    """An sshd configuration for the job's keys and this port (a retry replaces it).

    Raises:
        UsageError: a value OpenSSH could not read back exactly.
        JobDirError: it cannot be written.
    """
    text = sshd_config(
        port=port, host_key=str(job.host_key), authorized_keys=str(job.authorized_keys), user=user
    )
    write_file(target, text, 0o644)


def ensure_user_dir(path: Path, uid: int | None = None) -> None:
    """Makes the user's directory of job directories (0700) if missing, then verifies it.

    Raises:
        JobDirError: it cannot be made, or it is not the user's own private directory.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise JobDirError(
            f"cannot create {path}: {e.strerror}",
            hint="choose a shared directory you can write with --job-root",
        ) from e
    verify_dir(path, uid)


def verify_job_dir(job: JobDir, uid: int | None = None) -> None:
    """The user's directory and the job directory are the user's own and private.

    Raises:
        JobDirError: either is a symlink, not a directory, someone else's, or open to others.
    """
    verify_dir(job.path.parent, uid)
    verify_dir(job.path, uid)


def check_root(root: Path, user: str, node: str) -> None:
    """The job root, or the nearest of its parents that exists, must be writable, and
    an existing job root must not let others remove or replace what users keep in it.

    Every node checks this as it starts, so an unusable shared directory fails the
    whole job at once rather than leaving workers waiting for a directory never made.

    Raises:
        JobDirError: it is not a directory, the user cannot create entries in it, or
            others may write it without the sticky bit, or it belongs to another user.
    """
    probe = root.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise JobDirError(
            f"{probe} is not a directory {user} can write; job directories go in {root}",
            node=node,
            hint="choose a shared directory you can write with --job-root",
        )
    if probe == root.absolute():
        _check_shared_root(probe, node)


def remove_job_dir(path: Path) -> None:
    """Removes a job directory and everything in it; a missing one is fine.

    A worker's report written while the directory goes (ENOTEMPTY) is a reason to try
    again, a few times.

    Raises:
        JobDirError: it exists but cannot be removed.
    """
    for attempt in range(REMOVE_TRIES):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            retry = e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY)
            if not retry or attempt == REMOVE_TRIES - 1:
                raise JobDirError(f"cannot remove job directory {path}: {e}") from e
            time.sleep(REMOVE_PAUSE)


def _check_shared_root(root: Path, node: str) -> None:
    info = root.stat()  # the site may point the job root at a symlink: its target counts
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid not in (0, os.geteuid()):
        raise JobDirError(
            f"job root {root} belongs to UID {info.st_uid}, who could replace any job's files",
            node=node,
            hint="use a job root owned by root (mode 1777) or by yourself",
        )
    if mode & 0o022 and not mode & stat.S_ISVTX:
        raise JobDirError(
            f"job root {root} has mode {mode:04o}: others may rename or replace what is in it",
            node=node,
            hint="a shared job root needs the sticky bit: chmod 1777",
        )


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise JobDirError(f"cannot create job directory {path}: {e}") from e


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700)
    except FileExistsError as e:
        raise JobDirExists(path) from e
    except OSError as e:
        raise JobDirError(f"cannot create job directory {path}: {e}") from e
    path.chmod(0o700)  # mkdir's mode is filtered by the umask
