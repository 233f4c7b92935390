"""Per-job ssh material: keys, known_hosts, and the ssh and sshd configuration text.

Every job gets a fresh ed25519 user key and host key. known_hosts is written from the
host key itself, so there is no ssh-keyscan and no window in which a wrong key could be
learned, and the client checks host keys strictly. The user's own ~/.ssh is never read
or written: every file lives in the job directory.
"""

from __future__ import annotations

import base64
import binascii
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from launcher.errors import UsageError

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
    *,
    hosts: Sequence[str],
    port: int,
    user: str,
    identity: str,
    known_hosts: str,
    ports: Mapping[str, int] | None = None,
) -> str:
    """Configures the ssh client MPI uses to reach the job's sshd on every node.

    Args:
        hosts: the job's nodes; the settings apply to these names only.
        port: the job's port.
        user: the job user.
        identity: absolute path of the job's private user key.
        known_hosts: absolute path of the job's known_hosts.
        ports: a node's own port where it differs from port (ssh takes the first value
            it reads for a keyword, so these blocks come first).

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
    own = [
        f"Host {check_host(host)}\n    Port {_check_port(p)}\n"
        for host, p in (ports or {}).items()
        if p != port
    ]
    block = f"Host {' '.join(_check_hosts(hosts))}\n"
    return header + "".join(own) + block + "".join(f"    {key} {value}\n" for key, value in lines)


def known_hosts(hosts: Sequence[str], port: int, host_public_key: str) -> str:
    """Writes the one known_hosts line that vouches for the job's host key on every node.

    Raises:
        UsageError: a bad host name or port, or a key that is not an ed25519 public key.
    """
    _check_port(port)
    names = [host if port == 22 else f"[{host}]:{port}" for host in _check_hosts(hosts)]
    return f"{','.join(names)} {_bare_key(host_public_key)}\n"


def known_hosts_for(ports: Mapping[str, int], host_public_key: str) -> str:
    """known_hosts lines vouching for the job's host key on each node at its own port.

    Raises:
        UsageError: a bad host name or port, or a key that is not an ed25519 public key.
    """
    by_port: dict[int, list[str]] = {}
    for host, port in ports.items():
        by_port.setdefault(port, []).append(host)
    return "".join(known_hosts(hosts, port, host_public_key) for port, hosts in by_port.items())


def ssh_wrapper(ssh_config_path: str) -> str:
    """Writes the ssh that MPI runs (plm_rsh_agent, -launcher-exec) with the job's config."""
    return (
        "#!/bin/sh\n"
        "# ssh with this mpidock job's settings only; MPI starts its remote daemons with it.\n"
        f'exec ssh -F {shlex.quote(ssh_config_path)} "$@"\n'
    )


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


def check_host(host: str) -> str:
    """host, if ssh_config, known_hosts and file names can hold it as it is."""
    if not _HOST.fullmatch(host):
        raise UsageError(
            f"bad host name {host!r}",
            hint="host names are letters, digits, '.', '_' and '-', not starting with '-' or '.'",
        )
    return host


def _check_hosts(hosts: Sequence[str]) -> list[str]:
    if isinstance(hosts, str) or not hosts:
        raise UsageError(f"expected a list of host names, got {hosts!r}")
    return list(dict.fromkeys(check_host(host) for host in hosts))


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
