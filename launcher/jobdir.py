"""The per-job directory: the job's ssh material and the files its nodes meet through.

It lives under the shared job root at the same path on every node. The leader creates it
with fresh keys and every ssh file (keys.py writes their text); workers announce
themselves in it, the leader beats and says stop in it, and it goes at the job's end.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import JobDirError, JobDirExists
from launcher.keys import check_host, known_hosts, new_keypair, ssh_config, ssh_wrapper, sshd_config


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
        """The user key, restricted to running commands."""
        return self.path / "authorized_keys"

    @property
    def known_hosts(self) -> Path:
        """The host key for every node of the job."""
        return self.path / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        """Client settings."""
        return self.path / "ssh_config"

    @property
    def sshd_config(self) -> Path:
        """Server settings."""
        return self.path / "sshd_config"

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
        """Created by a worker when its sshd is up."""
        return self.path / f"ready.{check_host(node)}"

    def failed_file(self, node: str) -> Path:
        """Created by a worker that could not start; holds the reason."""
        return self.path / f"failed.{check_host(node)}"


def create_job_dir(path: Path, *, hosts: Sequence[str], port: int, user: str) -> JobDir:
    """Creates the job directory with fresh keys and every ssh file the job needs.

    The directory is 0700 and private keys are 0600 from their creation on. A failure
    part way removes what was created.

    Args:
        path: the directory to create; it must not exist. Made absolute.
        hosts: the job's nodes.
        port: the job's sshd port.
        user: the job user.

    Raises:
        UsageError: a value OpenSSH could not read back exactly.
        JobDirExists: the directory already exists.
        JobDirError: it cannot be created or written.
    """
    job = JobDir(Path(path).absolute())
    files = _job_files(job, hosts=hosts, port=port, user=user)
    _make_dir(job.path)
    try:
        for target, text, mode in files:
            _write(target, text, mode)
    except OSError as e:
        remove_job_dir(job.path)
        raise JobDirError(f"cannot write job directory {job.path}: {e}") from e
    except BaseException:
        remove_job_dir(job.path)
        raise
    return job


def check_root(root: Path, user: str, node: str) -> None:
    """The job root, or the nearest of its parents that exists, must be writable.

    Every node checks this as it starts, so an unwritable shared directory fails the
    whole job at once rather than leaving workers waiting for a directory never made.

    Raises:
        JobDirError: it is not a directory, or the user cannot create entries in it.
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


def remove_job_dir(path: Path) -> None:
    """Removes a job directory and everything in it; a missing one is fine.

    Raises:
        JobDirError: it exists but cannot be removed.
    """
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise JobDirError(f"cannot remove job directory {path}: {e}") from e


def _job_files(
    job: JobDir, *, hosts: Sequence[str], port: int, user: str
) -> list[tuple[Path, str, int]]:
    user_key, host_key = new_keypair("mpidock-user"), new_keypair("mpidock-host")
    client = ssh_config(
        hosts=hosts,
        port=port,
        user=user,
        identity=str(job.user_key),
        known_hosts=str(job.known_hosts),
    )
    server = sshd_config(
        port=port, host_key=str(job.host_key), authorized_keys=str(job.authorized_keys), user=user
    )
    return [
        (job.user_key, user_key.private_openssh, 0o600),
        (job.user_pub, user_key.public_openssh + "\n", 0o644),
        (job.host_key, host_key.private_openssh, 0o600),
        (job.host_pub, host_key.public_openssh + "\n", 0o644),
        # restrict: no forwarding, no pty; running commands, all MPI needs, stays allowed.
        (job.authorized_keys, f"restrict {user_key.public_openssh}\n", 0o600),
        (job.known_hosts, known_hosts(hosts, port, host_key.public_openssh), 0o644),
        (job.ssh_config, client, 0o644),
        (job.sshd_config, server, 0o644),
        (job.ssh_wrapper, ssh_wrapper(str(job.ssh_config)), 0o700),
    ]


def _make_dir(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise JobDirError(f"cannot create job directory {path}: {e}") from e
    try:
        path.mkdir(mode=0o700)
    except FileExistsError as e:
        raise JobDirExists(path) from e
    except OSError as e:
        raise JobDirError(f"cannot create job directory {path}: {e}") from e
    path.chmod(0o700)  # mkdir's mode is filtered by the umask


def _write(target: Path, text: str, mode: int) -> None:
    # Created 0600 and set to its final mode before any secret is written.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), mode)
        f.write(text)
