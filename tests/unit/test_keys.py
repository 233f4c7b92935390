"""Per-job ssh material: golden texts, quoting, the job directory, and real ssh handshakes.

Golden files live in tests/unit/golden; after an intended change of the texts, rewrite them
with MPIDOCK_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest

from launcher.errors import JobDirError, JobDirExists, UsageError
from launcher.jobdir import JobDir, create_job_dir, remove_job_dir
from launcher.keys import (
    KeyPair,
    known_hosts,
    new_keypair,
    ssh_config,
    ssh_wrapper,
    sshd_config,
)
from tests.conftest import require

HOST_PUB = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBHyitaghIqhezZeE1g05zb0s2whCnjxL7u5wo789JeR mpidock-host"
)
Golden = Callable[[str, str], None]
PLAIN_DIR = "/shared/mpidock/jobs/42"
# A single quote, spaces, '#' (a comment in OpenSSH files) and '%' (an OpenSSH token).
WEIRD_DIR = "/shared/it's a #job %u/42"
ODD_USER = "Dr.Who-2"


def tool(name: str) -> str:
    found = shutil.which(name)
    require(found is not None, f"{name} is missing", "apt-get install openssh-client")
    assert found is not None
    return found


@pytest.fixture
def job_path(tmp_path: Path) -> Iterator[Path]:
    """Where a test may create a job directory; removed afterwards, keys and all."""
    path = tmp_path / "jobs" / "42"
    yield path
    remove_job_dir(path)


# --- text builders against golden files ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "where", "user"), [("", PLAIN_DIR, "alice"), (".weird", WEIRD_DIR, ODD_USER)]
)
def test_sshd_config_golden(name: str, where: str, user: str, golden: Golden) -> None:
    text = sshd_config(
        port=21042,
        host_key=f"{where}/ssh_host_ed25519_key",
        authorized_keys=f"{where}/authorized_keys",
        user=user,
    )
    golden(f"sshd_config{name}", text)


@pytest.mark.parametrize(
    ("name", "where", "user"), [("", PLAIN_DIR, "alice"), (".weird", WEIRD_DIR, ODD_USER)]
)
def test_ssh_config_golden(name: str, where: str, user: str, golden: Golden) -> None:
    text = ssh_config(
        hosts=["sim1", "sim2", "sim3"],
        port=21042,
        user=user,
        identity=f"{where}/id_ed25519",
        known_hosts=f"{where}/known_hosts",
    )
    golden(f"ssh_config{name}", text)


def test_known_hosts_golden(golden: Golden) -> None:
    golden("known_hosts", known_hosts(["sim1", "sim2", "sim3"], 21042, HOST_PUB))


def test_known_hosts_on_port_22_names_hosts_plainly(golden: Golden) -> None:
    golden("known_hosts.port22", known_hosts(["sim1", "sim2"], 22, HOST_PUB))


def test_known_hosts_drops_comment_and_duplicates() -> None:
    key = " ".join(HOST_PUB.split()[:2])
    assert known_hosts(["a", "a", "b"], 2222, key + " some long comment") == (
        f"[a]:2222,[b]:2222 {key}\n"
    )


@pytest.mark.parametrize(("name", "where"), [("", PLAIN_DIR), (".weird", WEIRD_DIR)])
def test_ssh_wrapper_golden(name: str, where: str, golden: Golden) -> None:
    golden(f"ssh_wrapper{name}", ssh_wrapper(f"{where}/ssh_config"))


# --- what cannot be written, and what can ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ('/shared/say "hi"/known_hosts', "double quote"),
        ("/shared/two\nlines/known_hosts", "line break"),
        ("/shared/cr\r/known_hosts", "line break"),
        ("/shared/${HOME}/known_hosts", "expand"),
        ("relative/known_hosts", "not absolute"),
        ("", "not absolute"),
    ],
)
def test_ssh_config_rejects_paths(path: str, match: str) -> None:
    with pytest.raises(UsageError, match=match) as info:
        ssh_config(hosts=["sim1"], port=2222, user="alice", identity="/k/id", known_hosts=path)
    assert repr(path) in info.value.message
    assert "choose another" in info.value.hint or "absolute" in info.value.hint


@pytest.mark.parametrize("path", ['/a"b/key', "/a\nb/key"])
def test_sshd_config_rejects_paths(path: str) -> None:
    with pytest.raises(UsageError, match=r"double quote|line break") as info:
        sshd_config(port=2222, host_key=path, authorized_keys="/k/ak", user="alice")
    assert "choose another" in info.value.hint


def test_sshd_host_key_may_hold_a_dollar_brace() -> None:
    # sshd expands nothing in HostKey, so only the client's paths must avoid '${'.
    text = sshd_config(port=2222, host_key="/a/${x}/key", authorized_keys="/k/ak", user="alice")
    assert 'HostKey "/a/${x}/key"\n' in text


@pytest.mark.parametrize("user", ["alice", ODD_USER, "_svc", "j.doe", "u1", "1abc", "A"])
def test_valid_user_names(user: str) -> None:
    assert f"AllowUsers {user}\n" in sshd_config(
        port=2222, host_key="/k/h", authorized_keys="/k/a", user=user
    )


@pytest.mark.parametrize(
    "user", ["", "-x", "a b", "a:b", "r*t", "al@ce", "1000", "é", 'a"b', "a\n"]
)
def test_bad_user_names(user: str) -> None:
    with pytest.raises(UsageError, match="bad user name"):
        sshd_config(port=2222, host_key="/k/h", authorized_keys="/k/a", user=user)
    with pytest.raises(UsageError, match="bad user name"):
        ssh_config(hosts=["h"], port=2222, user=user, identity="/k/i", known_hosts="/k/k")


@pytest.mark.parametrize("hosts", [[], ["*"], ["a,b"], ["-x"], ["a b"], ["sim1", "!sim2"], [""]])
def test_bad_hosts(hosts: list[str]) -> None:
    with pytest.raises(UsageError):
        ssh_config(hosts=hosts, port=2222, user="u", identity="/k/i", known_hosts="/k/k")
    with pytest.raises(UsageError):
        known_hosts(hosts, 2222, HOST_PUB)


def test_hosts_must_be_a_list() -> None:
    with pytest.raises(UsageError, match="list of host names"):
        known_hosts("sim1", 2222, HOST_PUB)


@pytest.mark.parametrize("port", [0, 65536, -22])
def test_bad_ports(port: int) -> None:
    with pytest.raises(UsageError, match="bad port"):
        known_hosts(["sim1"], port, HOST_PUB)
    with pytest.raises(UsageError, match="bad port"):
        sshd_config(port=port, host_key="/k/h", authorized_keys="/k/a", user="u")


@pytest.mark.parametrize(
    "key",
    ["", "ssh-ed25519", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ", "ssh-ed25519 not*base64", "x"],
)
def test_known_hosts_rejects_other_keys(key: str) -> None:
    with pytest.raises(UsageError, match="ed25519 public key"):
        known_hosts(["sim1"], 2222, key)


def test_wrapper_quotes_any_path_for_the_shell() -> None:
    text = ssh_wrapper('/a "b" $c `d`\nx/ssh_config')
    assert text.endswith("""\nexec ssh -F '/a "b" $c `d`\nx/ssh_config' "$@"\n""")


# --- keys ------------------------------------------------------------------------------------


def test_new_keypair_formats() -> None:
    pair = new_keypair("mpidock-user")
    kind, blob, comment = pair.public_openssh.split(" ")
    assert (kind, blob[:4], comment) == ("ssh-ed25519", "AAAA", "mpidock-user")
    assert pair.private_openssh.startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert pair.private_openssh.endswith("-----END OPENSSH PRIVATE KEY-----\n")
    loaded = paramiko.Ed25519Key.from_private_key(io.StringIO(pair.private_openssh))
    assert loaded.get_base64() == blob


def test_keypair_is_plain_data() -> None:
    pair = KeyPair("private", "public")
    with pytest.raises(AttributeError):
        pair.public_openssh = "other"  # type: ignore[misc]


def test_new_keypairs_are_fresh() -> None:
    assert new_keypair("a").public_openssh != new_keypair("a").public_openssh


def test_new_keypair_rejects_a_comment_with_a_line_break() -> None:
    with pytest.raises(UsageError, match="line break"):
        new_keypair("two\nlines")


def test_openssh_reads_the_private_key(tmp_path: Path) -> None:
    keygen = tool("ssh-keygen")
    pair = new_keypair("mpidock-user")
    key = tmp_path / "id_ed25519"
    key.write_text(pair.private_openssh)
    key.chmod(0o600)
    try:
        argv = [keygen, "-y", "-f", str(key)]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    finally:
        key.unlink()
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == pair.public_openssh.split()[:2]


def test_openssh_reads_weird_paths_back_exactly(tmp_path: Path) -> None:
    ssh = tool("ssh")
    where = f"{tmp_path}/it's a #job %h $X \\dir"
    config = tmp_path / "ssh_config"
    config.write_text(
        ssh_config(
            hosts=["sim1", "sim2"],
            port=21042,
            user=ODD_USER,
            identity=f"{where}/id_ed25519",
            known_hosts=f"{where}/known_hosts",
        )
    )
    argv = [ssh, "-G", "-F", str(config), "sim2"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10, env=_clean_env(tmp_path))
    assert out.returncode == 0, out.stderr
    seen = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert seen["user"] == ODD_USER
    assert seen["port"] == "21042"
    assert seen["userknownhostsfile"] == f"{where}/known_hosts"
    assert seen["globalknownhostsfile"] == f"{where}/known_hosts"
    # ssh expands identity tokens only when it loads the key (the real handshake test shows it).
    assert seen["identityfile"] == f"{where}/id_ed25519".replace("%", "%%")
    assert seen["stricthostkeychecking"] == "true"
    assert seen["hostkeyalgorithms"] == "ssh-ed25519"


# --- the job directory -------------------------------------------------------------------------


def test_create_job_dir(job_path: Path) -> None:
    job = create_job_dir(job_path, hosts=["sim1", "sim2"], port=21042, user=ODD_USER)
    assert job == JobDir(job_path)
    assert _mode(job.path) == 0o700
    modes = {path.name: _mode(path) for path in job.path.iterdir()}
    assert modes == {
        "id_ed25519": 0o600,
        "id_ed25519.pub": 0o644,
        "ssh_host_ed25519_key": 0o600,
        "ssh_host_ed25519_key.pub": 0o644,
        "authorized_keys": 0o600,
        "known_hosts": 0o644,
        "ssh_config": 0o644,
        "sshd_config": 0o644,
        "ssh": 0o700,
    }
    user_pub = job.user_pub.read_text().strip()
    host_pub = job.host_pub.read_text().strip()
    assert job.authorized_keys.read_text() == f"restrict {user_pub}\n"
    assert job.known_hosts.read_text() == known_hosts(["sim1", "sim2"], 21042, host_pub)
    assert f"IdentityFile {job.user_key}\n" in job.ssh_config.read_text()
    assert f"HostKey {job.host_key}\n" in job.sshd_config.read_text()
    assert job.ssh_wrapper.read_text() == ssh_wrapper(str(job.ssh_config))


def test_job_dir_keys_are_a_matching_fresh_pair(job_path: Path) -> None:
    job = create_job_dir(job_path, hosts=["sim1"], port=21042, user="alice")
    for private, public in [(job.user_key, job.user_pub), (job.host_key, job.host_pub)]:
        key = paramiko.Ed25519Key.from_private_key_file(str(private))
        assert key.get_base64() == public.read_text().split()[1]
    assert job.user_pub.read_text() != job.host_pub.read_text()


def test_job_dir_is_private_whatever_the_umask(job_path: Path) -> None:
    old = os.umask(0)
    try:
        job = create_job_dir(job_path, hosts=["sim1"], port=21042, user="alice")
    finally:
        os.umask(old)
    assert _mode(job.path) == 0o700
    assert _mode(job.user_key) == 0o600


def test_job_dir_names() -> None:
    job = JobDir(Path("/shared/jobs/42"))
    assert job.ready_file("sim2") == Path("/shared/jobs/42/ready.sim2")
    assert job.failed_file("sim2") == Path("/shared/jobs/42/failed.sim2")
    assert job.stop_file == Path("/shared/jobs/42/stop")
    assert job.ssh_wrapper == Path("/shared/jobs/42/ssh")
    with pytest.raises(UsageError):
        job.ready_file("../../etc/passwd")


def test_existing_job_dir_is_an_error(job_path: Path) -> None:
    job_path.mkdir(parents=True)
    (job_path / "keep").write_text("a previous launch")
    with pytest.raises(JobDirExists, match="already exists") as info:
        create_job_dir(job_path, hosts=["sim1"], port=21042, user="alice")
    assert info.value.path == str(job_path)
    assert "mpidock reap" in info.value.hint
    assert [p.name for p in job_path.iterdir()] == ["keep"]


def test_bad_values_create_nothing(job_path: Path) -> None:
    with pytest.raises(UsageError):
        create_job_dir(job_path, hosts=["sim1"], port=21042, user="bad user")
    assert not job_path.exists()


def test_unwritable_parent_is_a_job_dir_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(JobDirError, match="cannot create job directory"):
        create_job_dir(blocker / "42", hosts=["sim1"], port=21042, user="alice")


def test_remove_job_dir(job_path: Path) -> None:
    job = create_job_dir(job_path, hosts=["sim1"], port=21042, user="alice")
    job.ready_file("sim1").touch()
    remove_job_dir(job.path)
    assert not job_path.exists()
    remove_job_dir(job.path)  # missing is fine


# --- real handshakes: paramiko and OpenSSH clients against a paramiko server ------------------


class FakeSshd(paramiko.ServerInterface):
    """Accepts the job user with a key in the job's authorized_keys; answers "ok" to commands."""

    def __init__(self, user: str, authorized_keys: str) -> None:
        self.user = user
        self.allowed = {tuple(line.split()[1:3]) for line in authorized_keys.splitlines()}
        self.commands: list[bytes] = []
        self.exec_requested = threading.Event()

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        known = (key.get_name(), key.get_base64()) in self.allowed
        return paramiko.AUTH_SUCCESSFUL if known and username == self.user else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.commands.append(command)
        self.exec_requested.set()
        return True


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    sock.settimeout(5)
    yield sock
    sock.close()


@contextlib.contextmanager
def serving(listener: socket.socket, host_key: str, sshd: FakeSshd) -> Iterator[None]:
    """Serves one connection in a thread; waits for it, boundedly, on the way out."""
    thread = threading.Thread(target=_serve_one, args=(listener, host_key, sshd), daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout=10)
        assert not thread.is_alive(), "the test ssh server did not finish"


def _serve_one(listener: socket.socket, host_key: str, sshd: FakeSshd) -> None:
    try:
        sock, _ = listener.accept()
    except OSError:
        return
    transport = paramiko.Transport(sock)
    try:
        transport.add_server_key(paramiko.Ed25519Key.from_private_key(io.StringIO(host_key)))
        transport.start_server(server=sshd)
        channel = transport.accept(timeout=5)
        if channel is not None and sshd.exec_requested.wait(5):
            channel.sendall(b"ok\n")
            channel.send_exit_status(0)
            channel.close()
            deadline = time.monotonic() + 5
            while transport.is_active() and time.monotonic() < deadline:
                time.sleep(0.01)
    except (paramiko.SSHException, EOFError, OSError):
        pass  # the negative tests' clients hang up during the handshake
    finally:
        transport.close()


def paramiko_client(job: JobDir, known_hosts_text: str | None = None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    known = job.path / "paramiko_known_hosts"
    known.write_text(known_hosts_text or job.known_hosts.read_text())
    client.get_host_keys().load(str(known))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def connect(client: paramiko.SSHClient, port: int, key_file: Path) -> None:
    client.connect(
        "127.0.0.1",
        port=port,
        username=ODD_USER,
        pkey=paramiko.Ed25519Key.from_private_key_file(str(key_file)),
        look_for_keys=False,
        allow_agent=False,
        timeout=5,
        banner_timeout=5,
        auth_timeout=5,
        channel_timeout=5,
    )


def make_job(job_path: Path, listener: socket.socket) -> tuple[JobDir, int]:
    port = listener.getsockname()[1]
    return create_job_dir(job_path, hosts=["127.0.0.1"], port=port, user=ODD_USER), port


def test_paramiko_client_trusts_the_job_host_key(job_path: Path, listener: socket.socket) -> None:
    job, port = make_job(job_path, listener)
    sshd = FakeSshd(ODD_USER, job.authorized_keys.read_text())
    client = paramiko_client(job)
    with serving(listener, job.host_key.read_text(), sshd), contextlib.closing(client):
        connect(client, port, job.user_key)
        _, stdout, _ = client.exec_command("orted --version", timeout=5)
        assert stdout.read() == b"ok\n"
        assert stdout.channel.recv_exit_status() == 0
    assert sshd.commands == [b"orted --version"]


def test_paramiko_client_refuses_another_host_key(job_path: Path, listener: socket.socket) -> None:
    job, port = make_job(job_path, listener)
    sshd = FakeSshd(ODD_USER, job.authorized_keys.read_text())
    impostor = new_keypair("impostor").private_openssh
    client = paramiko_client(job)
    with (
        serving(listener, impostor, sshd),
        contextlib.closing(client),
        pytest.raises(paramiko.BadHostKeyException),
    ):
        connect(client, port, job.user_key)
    assert sshd.commands == []


def test_paramiko_client_refuses_an_unknown_host(job_path: Path, listener: socket.socket) -> None:
    job, port = make_job(job_path, listener)
    sshd = FakeSshd(ODD_USER, job.authorized_keys.read_text())
    other_port = known_hosts(["127.0.0.1"], port + 1, job.host_pub.read_text())
    client = paramiko_client(job, other_port)
    with (
        serving(listener, job.host_key.read_text(), sshd),
        contextlib.closing(client),
        pytest.raises(paramiko.SSHException, match="not found in known_hosts"),
    ):
        connect(client, port, job.user_key)


def test_server_refuses_a_key_of_another_job(job_path: Path, listener: socket.socket) -> None:
    job, port = make_job(job_path, listener)
    sshd = FakeSshd(ODD_USER, job.authorized_keys.read_text())
    stranger = job.path / "stranger"
    stranger.write_text(new_keypair("stranger").private_openssh)
    client = paramiko_client(job)
    with (
        serving(listener, job.host_key.read_text(), sshd),
        contextlib.closing(client),
        pytest.raises(paramiko.AuthenticationException),
    ):
        connect(client, port, stranger)


def test_openssh_through_the_wrapper_in_a_weird_dir(
    tmp_path: Path, listener: socket.socket
) -> None:
    tool("ssh")
    weird = tmp_path / "it's a #job %h dir" / "42"
    try:
        job, _ = make_job(weird, listener)
        sshd = FakeSshd(ODD_USER, job.authorized_keys.read_text())
        with serving(listener, job.host_key.read_text(), sshd):
            out = _run_wrapper(job, tmp_path)
        assert (out.returncode, out.stdout) == (0, "ok\n"), out.stderr
        assert sshd.commands == [b"hostname"]
        assert not (tmp_path / "home" / ".ssh").exists()
    finally:
        remove_job_dir(weird)


def test_openssh_refuses_another_host_key(tmp_path: Path, listener: socket.socket) -> None:
    tool("ssh")
    weird = tmp_path / "it's a #job %h dir" / "42"
    try:
        job, _ = make_job(weird, listener)
        sshd = FakeSshd(ODD_USER, job.authorized_keys.read_text())
        with serving(listener, new_keypair("impostor").private_openssh, sshd):
            out = _run_wrapper(job, tmp_path)
        assert out.returncode == 255
        assert "Host key verification failed" in out.stderr
        assert sshd.commands == []
    finally:
        remove_job_dir(weird)


def _run_wrapper(job: JobDir, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    argv = [str(job.ssh_wrapper), "127.0.0.1", "hostname"]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
        env=_clean_env(tmp_path),
    )


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """A HOME of our own shows the user's ~/.ssh is neither read nor written."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)
