"""Per-job ssh material: keys, known_hosts, and the ssh and sshd configuration text.

Every job gets a fresh ed25519 user key and host key. known_hosts is written from the
host key itself, so there is no ssh-keyscan and no window in which a wrong key could be
learned, and the client checks host keys strictly. The user's own ~/.ssh is never read
or written: every file lives in the job directory.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from launcher.errors import JobDirError, JobDirExists, UsageError

# Not all digits (tools read those as UIDs); no leading '-' (read as an option).
_USER = re.compile(r"(?![0-9]+$)[A-Za-z0-9_.][A-Za-z0-9_.-]*")
# Also keeps ssh_config Host patterns literal: no '*', '?', '!' or ','.
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# Arguments OpenSSH reads back unchanged without quotes.
_PLAIN = re.compile(r"[A-Za-z0-9_./:@+-]+")
_KEY_TYPE = "ssh-ed25519"


@dataclass(frozen=True)
class KeyPair:
    """An ed25519 key pair in OpenSSH formats.

    Attributes:
        private_openssh: the private key, OpenSSH format, not encrypted.
        public_openssh: ``ssh-ed25519 AAAA... comment``.
    """

    private_openssh: str
    public_openssh: str


def new_keypair(comment: str) -> KeyPair:
    """Generates a fresh ed25519 key pair.

    Raises:
        UsageError: the comment has a line break or other control character.
    """
    _check_text(comment, "key comment")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    tail = f" {comment}" if comment else ""
    return KeyPair(private.decode("ascii"), public.decode("ascii") + tail)


def sshd_config(*, port: int, host_key: str, authorized_keys: str, user: str) -> str:
    """Configures an sshd that runs as the job user, not root, on the host's network.

    Args:
        port: the job's port.
        host_key: absolute path of the job's private host key.
        authorized_keys: absolute path of the job's authorized_keys.
        user: the only user allowed to log in.

    Raises:
        UsageError: a value OpenSSH could not read back exactly.
    """
    lines = [
        ("Port", str(_check_port(port))),
        ("HostKey", _path_arg(host_key, "host key path")),
        ("AuthorizedKeysFile", _path_arg(authorized_keys, "authorized_keys path", percent=True)),
        ("AllowUsers", _check_user(user)),
        ("PidFile", "none"),
        ("UsePAM", "no"),
        ("StrictModes", "no"),
        ("PasswordAuthentication", "no"),
        ("KbdInteractiveAuthentication", "no"),
        ("PubkeyAuthentication", "yes"),
        ("PermitRootLogin", "no"),
        ("X11Forwarding", "no"),
        ("AllowTcpForwarding", "no"),
        ("AllowAgentForwarding", "no"),
        ("PermitTunnel", "no"),
        ("PrintMotd", "no"),
        ("PermitUserEnvironment", "no"),
        ("ClientAliveInterval", "5"),
        ("ClientAliveCountMax", "3"),
        ("LogLevel", "ERROR"),
    ]
    header = "# sshd for one mpidock job; runs as the job user, not root.\n"
    return header + "".join(f"{key} {value}\n" for key, value in lines)


def ssh_config(
    *, hosts: Sequence[str], port: int, user: str, identity: str, known_hosts: str
) -> str:
    """Configures the ssh client MPI uses to reach the job's sshd on every node.

    Args:
        hosts: the job's nodes; the settings apply to these names only.
        port: the job's port.
        user: the job user.
        identity: absolute path of the job's private user key.
        known_hosts: absolute path of the job's known_hosts.

    Raises:
        UsageError: a value OpenSSH could not read back exactly.
    """
    known = _path_arg(known_hosts, "known_hosts path", percent=True, dollar=True)
    lines = [
        ("Port", str(_check_port(port))),
        ("User", _check_user(user)),
        ("IdentityFile", _path_arg(identity, "identity path", percent=True, dollar=True)),
        ("IdentitiesOnly", "yes"),
        ("UserKnownHostsFile", known),
        # Read as is, without the expansions above.
        ("GlobalKnownHostsFile", _path_arg(known_hosts, "known_hosts path")),
        ("StrictHostKeyChecking", "yes"),
        ("HostKeyAlgorithms", _KEY_TYPE),
        ("CheckHostIP", "no"),
        ("UpdateHostKeys", "no"),
        ("PasswordAuthentication", "no"),
        ("KbdInteractiveAuthentication", "no"),
        ("BatchMode", "yes"),
        ("ConnectTimeout", "10"),
        ("ServerAliveInterval", "5"),
        ("ServerAliveCountMax", "3"),
        ("LogLevel", "ERROR"),
    ]
    header = "# ssh client settings for one mpidock job.\n"
    block = f"Host {' '.join(_check_hosts(hosts))}\n"
    return header + block + "".join(f"    {key} {value}\n" for key, value in lines)


def known_hosts(hosts: Sequence[str], port: int, host_public_key: str) -> str:
    """Writes the one known_hosts line that vouches for the job's host key on every node.

    Raises:
        UsageError: a bad host name or port, or a key that is not an ed25519 public key.
    """
    _check_port(port)
    names = [host if port == 22 else f"[{host}]:{port}" for host in _check_hosts(hosts)]
    return f"{','.join(names)} {_bare_key(host_public_key)}\n"


def ssh_wrapper(ssh_config_path: str) -> str:
    """Writes the ssh that MPI runs (plm_rsh_agent, -launcher-exec) with the job's config."""
    return (
        "#!/bin/sh\n"
        "# ssh with this mpidock job's settings only; MPI starts its remote daemons with it.\n"
        f'exec ssh -F {shlex.quote(ssh_config_path)} "$@"\n'
    )


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
        return self.path / f"need.{_check_host(node)}"

    def moving_file(self, node: str) -> Path:
        """Touched every few seconds while a node moves image bytes."""
        return self.path / f"moving.{_check_host(node)}"

    def arrived_file(self, node: str) -> Path:
        """Created by a worker as soon as it sees the job directory."""
        return self.path / f"arrived.{_check_host(node)}"

    def done_file(self, node: str) -> Path:
        """Created by a worker once its part of the job is torn down."""
        return self.path / f"done.{_check_host(node)}"

    def ready_file(self, node: str) -> Path:
        """Created by a worker when its sshd is up."""
        return self.path / f"ready.{_check_host(node)}"

    def failed_file(self, node: str) -> Path:
        """Created by a worker that could not start; holds the reason."""
        return self.path / f"failed.{_check_host(node)}"


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


def _check_text(value: str, what: str) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise UsageError(
            f"{what} {value!r} has a line break or control character",
            hint=f"choose another {what} without one",
        )


def _check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise UsageError(f"bad port {port}: expected 1..65535")
    return port


def _check_user(user: str) -> str:
    if not _USER.fullmatch(user):
        raise UsageError(
            f"bad user name {user!r}",
            hint="user names are letters, digits, '.', '_' and '-', not starting with '-'",
        )
    return user


def _check_host(host: str) -> str:
    if not _HOST.fullmatch(host):
        raise UsageError(
            f"bad host name {host!r}",
            hint="host names are letters, digits, '.', '_' and '-', not starting with '-' or '.'",
        )
    return host


def _check_hosts(hosts: Sequence[str]) -> list[str]:
    if isinstance(hosts, str) or not hosts:
        raise UsageError(f"expected a list of host names, got {hosts!r}")
    return list(dict.fromkeys(_check_host(host) for host in hosts))


def _path_arg(value: str, what: str, *, percent: bool = False, dollar: bool = False) -> str:
    """Renders a path so OpenSSH reads it back exactly.

    OpenSSH splits arguments like a shell: double quotes group, and inside them a
    backslash escapes a backslash or a quote. Some keywords then expand ``%x`` tokens
    (``%%`` is a literal ``%``) and ``${VAR}`` (which cannot be escaped).
    """
    if '"' in value:
        raise UsageError(
            f"{what} {value!r} has a double quote, which OpenSSH configuration cannot hold",
            hint="choose another path without one",
        )
    _check_text(value, what)
    if not value.startswith("/"):
        raise UsageError(f"{what} {value!r} is not absolute", hint="use an absolute path")
    if dollar and "${" in value:
        raise UsageError(
            f"{what} {value!r} has '${{', which OpenSSH would expand as a variable",
            hint="choose another path without one",
        )
    if percent:
        value = value.replace("%", "%%")
    if _PLAIN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\") + '"'


def _bare_key(public_openssh: str) -> str:
    parts = public_openssh.split()
    try:
        valid = len(parts) >= 2 and parts[0] == _KEY_TYPE
        valid = valid and bool(base64.b64decode(parts[1], validate=True))
    except binascii.Error:
        valid = False
    if not valid:
        raise UsageError(
            f"not an ed25519 public key: {public_openssh[:40]!r}",
            hint="expected 'ssh-ed25519 AAAA... [comment]'",
        )
    return f"{parts[0]} {parts[1]}"
