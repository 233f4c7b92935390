"""The engines a testbed test runs under: Docker as `mpiuser`, rootless Podman as
`mpinodocker` (no docker group). A test taking the `engine` fixture runs once per engine."""

from __future__ import annotations

import contextlib
import pwd
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from launcher.engines.podman_store import DRIVER
from launcher.engines.storage import Layout
from launcher.testbed.jobs import USER, Job, as_user, home_of, launch
from launcher.testbed.layout import REGISTRY
from tests.testbed.conftest import NODES, assert_nothing_left, job_dirs_of

PODMAN_USER = "mpinodocker"
PODMAN_HOME = home_of(PODMAN_USER)
PODMAN_ROOT = Path("/var/tmp") / f"mpidock-podman-{pwd.getpwnam(PODMAN_USER).pw_uid}"


@contextlib.contextmanager
def podman_registry_config() -> Iterator[None]:
    """The user's configuration names the site registry (the podman user's image path);
    removed afterwards. mpinodocker is the testbed's own user: a file a killed run left
    is overwritten."""
    path = PODMAN_HOME / ".config" / "mpidock" / "config.toml"
    as_user(["mkdir", "-p", str(path.parent)], user=PODMAN_USER)
    as_user(["sh", "-c", f"echo 'registry = \"{REGISTRY}\"' > {path}"], user=PODMAN_USER)
    try:
        yield
    finally:
        path.unlink()


def user_processes(uid: int) -> list[str]:
    """podman, conmon and catatonit processes of the user still alive (zombies aside)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/status"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        name, state = fields.get("Name", "").strip(), fields.get("State", "").strip()
        mine = fields.get("Uid", "").split()[:1] == [str(uid)] and not state.startswith("Z")
        if mine and name in ("podman", "conmon", "catatonit"):
            found.append(f"{stat.parent.name} {name}")
    return found


def podman_ps(node_name: str) -> str:
    """The containers in the node's storage, asked when no job of the user runs there.

    Podman keeps the runtime directory it first ran with in its database (ROOT/xdg), so
    this check's pause process is recorded there: killed, and the directory removed.
    """
    root = PODMAN_ROOT / node_name
    layout, runtime = Layout(root), f"XDG_RUNTIME_DIR={root}/xdg-check"
    done = as_user(
        ["sh", "-c", f'mkdir -m 700 -p {root}/xdg-check && env {runtime} podman '
         f'--runtime /usr/sbin/runc --cgroup-manager cgroupfs --root {layout.storage} '
         f'--runroot {layout.runroot} --storage-driver {DRIVER} '
         f'ps -a --format "{{{{.Names}}}}"; '
         f'for d in xdg-check xdg; do p=$(cat {root}/$d/libpod/tmp/pause.pid 2>/dev/null) '
         f'&& kill -9 $p; rm -rf {root}/$d; done'],
        user=PODMAN_USER,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def assert_nothing_left_podman(job: Job) -> None:
    """No job directory, no podman/conmon/catatonit process of the user, no runtime
    directory and no container in any node's storage."""
    uid = pwd.getpwnam(PODMAN_USER).pw_uid
    assert job_dirs_of(job) == []
    assert user_processes(uid) == []
    for node in NODES:
        assert not (PODMAN_ROOT / node.name / "xdg").exists(), node.name
        assert podman_ps(node.name) == "", node.name
    assert user_processes(uid) == []  # nor the checks' own


@dataclass(frozen=True)
class EngineCase:
    """One engine: the user who runs it and how a test launches and checks under it."""

    name: str
    user: str
    # CapEff of a rank: Docker's non-root user under no-new-privileges holds none; rootless
    # Podman gives the capabilities it adds (SYS_PTRACE, bit 19) to a non-root user too,
    # inside the container's user namespace only.
    rank_capabilities: str = "0" * 16

    @property
    def home(self) -> Path:
        return home_of(self.user)

    def launch(
        self, options: Sequence[str], entry: Sequence[str], command: str, timeout: float = 300
    ) -> Job:
        """`srun mpidock slurm-entry --engine NAME ENTRY -- COMMAND` as this engine's user."""
        return launch(options, ["--engine", self.name, *entry], command, timeout, self.user)

    def assert_nothing_left(self, job: Job) -> None:
        if self is PODMAN:
            assert_nothing_left_podman(job)
        else:
            assert_nothing_left(job)


NONE = "0000000000000000"
DOCKER = EngineCase("docker", USER)
PODMAN = EngineCase("podman", PODMAN_USER, rank_capabilities=f"{1 << 19:016x}")


@pytest.fixture(params=[DOCKER, PODMAN], ids=lambda e: e.name)
def engine(request: pytest.FixtureRequest) -> Iterator[EngineCase]:
    """Each engine in turn; Podman's user names the site registry (its image path)."""
    chosen: EngineCase = request.param
    if chosen is PODMAN:
        with podman_registry_config():
            yield chosen
    else:
        yield chosen
