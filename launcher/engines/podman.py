"""Rootless Podman: a per-job API service run as the job user, nothing setuid but
newuidmap/newgidmap.

The service speaks Docker's API on a socket in node-local storage, so the launcher drives
it with the same docker-py calls as Docker. Everything it needs lives under one directory
per user and node (`podman_root`): image storage, run state, the runtime directory and
the socket. The last job of the user on the node to end removes the runtime directory
and Podman's pause process (the user namespace keeper that would otherwise stay).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import docker
import requests
from docker.errors import DockerException, NotFound
from docker.models.containers import Container

from launcher import progress
from launcher.engines import podman_fill, podman_reap, podman_spec, podman_store, stopping, storage
from launcher.engines.base import Engine, EngineUnavailable, Settings
from launcher.errors import LauncherError
from launcher.plan import ContainerSpec
from launcher.store import Archive

log = logging.getLogger(__name__)
INSTALL_HINT = "install podman with uidmap, slirp4netns, fuse-overlayfs, runc and catatonit"
READY_TIMEOUT = 60.0
STOP_WAIT = 5.0
CONMON_WAIT = 5.0  # seconds for exiting containers' monitors before the runtime dir goes
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


@dataclasses.dataclass(frozen=True)
class Runtime:
    """The OCI runtime Podman runs containers with, and what it allows rootless."""

    path: str
    # crun keeps the user's supplementary groups (`--group-add keep-groups`) and applies
    # resource limits on a cgroup v2 host; runc on cgroup v1 does neither rootless.
    keeps_groups: bool
    limits: bool


class PodmanEngine(Engine):
    """A rootless Podman API service of this job's user on this node."""

    name = "podman"
    trust = "rootless Podman: the user's own rights"

    def __init__(self, node: str, settings: Settings | None = None) -> None:
        super().__init__(node)
        self.settings = settings or Settings()
        self.runtime: Runtime | None = None
        self.root: Path | None = None
        self.start_seconds = 0.0
        self._service: subprocess.Popen[bytes] | None = None
        self._client: docker.DockerClient | None = None
        self._lock: IO[str] | None = None
        self._socket: Path | None = None
        self._starting = threading.RLock()  # close() may run inside a failed start
        # The user's shared read-only image store, and its entries the service reads.
        self.store: Path | None = None
        self.shared: tuple[Path, ...] = ()

    def client(self) -> docker.DockerClient:
        with self._starting:  # one service, also when another thread asks at once
            return self._started()

    def _started(self) -> docker.DockerClient:
        if self._client is None:
            started = time.monotonic()
            try:
                self._client = self._start()
            except BaseException:
                self.close()
                raise
            self.start_seconds = time.monotonic() - started
            progress.say(
                self.node, "engine", f"rootless podman ready in {self.start_seconds:.1f} s"
            )
            self.on_client(self._client)
        return self._client

    def fit(self, spec: ContainerSpec, client: docker.DockerClient) -> ContainerSpec:
        fitted, notes = self.planned(spec)
        for note in notes:
            log.info("%s: %s", self.node, note)
        return fitted

    def planned(self, spec: ContainerSpec) -> tuple[ContainerSpec, tuple[str, ...]]:
        """See launcher.engines.podman_spec: identity from keep-id, no host groups or
        cgroups, GPUs as device files, limits within the step's."""
        runtime = self.runtime or pick_runtime(self.node)
        return podman_spec.fit_spec(spec, keeps_groups=runtime.keeps_groups, limits=runtime.limits)

    def pauser(self, container: Container) -> Callable[[bool], bool]:
        """Where the runtime has no freezer for rootless containers (runc on cgroup v1),
        the container's processes are stopped and continued with signals instead. Its
        root process is looked up now: the API service is a process of the step, which
        Slurm stops a second after SIGTSTP, so no call to it may be left for then."""
        runtime = self.runtime or pick_runtime(self.node)
        if runtime.limits:
            return super().pauser(container)
        try:
            container.reload()
        except NotFound:
            return lambda paused: False
        root = stopping.Root.of(int(container.attrs.get("State", {}).get("Pid") or 0))
        return root.pause

    def describe(self) -> dict[str, Any]:
        runtime = self.runtime.path if self.runtime else ""
        return {
            "engine": self.name,
            "runtime": runtime,
            "root": str(self.root or ""),
            "service_start_s": round(self.start_seconds, 3),
            "image_store": str(self.store or ""),
        }

    def _start(self) -> docker.DockerClient:
        podman = shutil.which("podman")
        if podman is None:
            raise EngineUnavailable("podman is not installed", node=self.node, hint=INSTALL_HINT)
        user, uid = _user(), os.getuid()
        for kind in ("subuid", "subgid"):
            storage.require_subids(Path(f"/etc/{kind}"), user, uid, self.node)
        self.runtime = pick_runtime(self.node)
        self.root = storage.prepare_root(self.settings.podman_root, uid, user, self.node)
        self._lock = _hold_shared(self.root / "users.lock")
        layout = storage.Layout(self.root)
        layout.make()
        for path in layout.stale():
            with contextlib.suppress(FileNotFoundError):  # another job's start took it
                path.unlink()
        storage.write_private(layout.containers_conf, containers_conf(shutil.which("catatonit")))
        self._open_store(layout, uid, user)
        self._socket = layout.socket(os.getpid())
        self._spawn(podman, layout)
        client = self._wait_ready(layout)
        _revive_on_loss(client, self._revive)
        return client

    def _spawn(self, podman: str, layout: storage.Layout) -> None:
        assert self.runtime is not None
        assert self._socket is not None
        shared = self.shared if self.store is not None else None
        argv = service_argv(podman, self.runtime.path, layout, self._socket, shared)
        with open(layout.log(os.getpid()), "ab") as out:
            self._service = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                env=service_env(os.environ, layout), start_new_session=True,
            )  # fmt: skip

    def _revive(self) -> bool:
        """The service started again on the same socket when it has died; False once the
        engine is closed. Slurm's SIGTERM (scancel, time limit) reaches every process of
        the step, the service too, while the launcher still needs it for KillWait's grace:
        to pass the signal to mpirun and to remove the containers."""
        with self._starting:
            service, podman = self._service, shutil.which("podman")
            if service is None or self.root is None or podman is None:
                return False
            if service.poll() is None and self._socket is not None and self._socket.exists():
                return True  # alive (or revived by another thread meanwhile)
            _stop_group(service)
            layout = storage.Layout(self.root)
            if self._socket is not None:
                with contextlib.suppress(FileNotFoundError):
                    self._socket.unlink()
            progress.say(self.node, "engine", "podman service lost; started again")
            self._spawn(podman, layout)
            self._wait_ready(layout).close()
            return True

    def _open_store(self, layout: storage.Layout, uid: int, user: str) -> None:
        """The user's shared image store checked, its whole entries listed for the service."""
        if not (template := self.settings.podman_image_store):
            return
        try:
            self.store = podman_store.store_path(template, uid, user)
            podman_store.open_store(self.store, uid, create=False)
            self.shared = tuple(e.path for e in podman_store.entries(self.store, uid))
        except LauncherError as e:
            e.node = e.node or self.node
            raise

    def shared_image(self, ref: str) -> bool:
        """ref is in the shared store: read in place, the service restarted to read an
        entry filled since it started (nothing of the job runs yet in the image phase)."""
        if self.store is None:
            return False
        found = podman_store.entries(self.store, os.getuid())
        if (entry := podman_store.find(found, ref)) is None:
            return False
        if entry.path not in self.shared:
            self._remount(tuple(e.path for e in found))
        return True

    def import_image(
        self,
        image: str,
        archive: Callable[[], Archive | None],
        registry_ref: str,
        personal: Callable[[str], tuple[str, str]],
        say: Callable[[str], None],
    ) -> tuple[int, float] | None:
        """The shared store filled with image (and the user's personalized image over it)
        unless it holds it: (bytes filled, seconds); None without a store."""
        self.client()
        if self.store is None or self.root is None or self.runtime is None:
            return None
        started, filled = time.monotonic(), 0
        if podman_store.find(podman_store.entries(self.store, os.getuid()), image) is None:
            env = service_env(os.environ, storage.Layout(self.root))
            cli, run = podman_fill.cli(self.root, self.runtime.path, env, self.node)
            filled = podman_fill.import_into(
                self.store, image, archive, registry_ref, personal, cli, run, say
            )
        self.shared_image(image)
        return filled, time.monotonic() - started

    def _remount(self, shared: tuple[Path, ...]) -> None:
        """The service started again on its socket, reading these store entries (a
        client's open connection is retried through _revive_on_loss)."""
        with self._starting:
            self.shared = shared
            service, podman = self._service, shutil.which("podman")
            if service is None or self.root is None or podman is None:
                return
            _stop_group(service)
            layout = storage.Layout(self.root)
            if self._socket is not None:
                with contextlib.suppress(FileNotFoundError):
                    self._socket.unlink()
            progress.say(self.node, "engine", f"podman reads {len(shared)} shared image(s)")
            self._spawn(podman, layout)
            self._wait_ready(layout).close()

    def _wait_ready(self, layout: storage.Layout) -> docker.DockerClient:
        assert self._service is not None
        assert self._socket is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self._service.poll() is not None:
                said = _last_line(layout.log(os.getpid()))
                raise EngineUnavailable(
                    f"the podman service exited ({self._service.returncode}): {said}",
                    node=self.node,
                    hint=refusal_hint(said),
                )
            if self._socket.exists():  # made a moment before the service listens on it
                with contextlib.suppress(DockerException):
                    return docker.DockerClient(base_url=f"unix://{self._socket}", timeout=60)
            if time.monotonic() > deadline:
                raise EngineUnavailable(
                    f"the podman service did not answer in {READY_TIMEOUT:.0f} s",
                    node=self.node,
                    hint=f"see {layout.log(os.getpid())}",
                )
            time.sleep(0.02)

    def close(self) -> None:
        """The service stopped, its socket and log removed; the runtime directory and the
        pause process too when no other job of this user uses this node's storage."""
        if self._client is not None:
            self._client.close()
            self._client = None
        with self._starting:  # a service revived meanwhile would outlive the job
            service, self._service = self._service, None
        if service is not None:
            _stop_group(service)
            if self.root is not None:
                with contextlib.suppress(FileNotFoundError):
                    storage.Layout(self.root).log(os.getpid()).unlink()
        if self._socket is not None:
            with contextlib.suppress(FileNotFoundError):
                self._socket.unlink()
            self._socket = None
        if self._lock is not None:
            if _last_user(self._lock) and self.root is not None:
                _wait_for_conmons(os.getuid())
                end_user_namespace(storage.Layout(self.root), os.getuid())
            self._lock.close()
            self._lock = None


def _wait_for_conmons(uid: int, seconds: float = CONMON_WAIT) -> None:
    """Until the user's exiting containers' monitors are gone, at most `seconds`: each runs
    its exit command (`podman container cleanup`) as it goes, which would make the runtime
    directory again after it was removed."""
    deadline = time.monotonic() + seconds
    while podman_reap.conmon_running(uid) and time.monotonic() < deadline:
        time.sleep(0.1)


def _revive_on_loss(client: docker.DockerClient, revive: Callable[[], bool]) -> None:
    """Every API request of the client tried once more after a lost connection, once
    revive() has the service answering again on the same socket."""
    send = client.api.request

    def request(*args: Any, **kwargs: Any) -> Any:
        try:
            return send(*args, **kwargs)
        except requests.exceptions.ConnectionError:
            if not revive():
                raise
            return send(*args, **kwargs)

    client.api.request = request


def pick_runtime(node: str) -> Runtime:
    """crun on a cgroup v2 host (groups and limits kept); runc otherwise, since crun
    refuses rootless containers on a cgroup v1 or hybrid host."""
    unified = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    if unified and (crun := _find("crun")):
        return Runtime(crun, keeps_groups=True, limits=True)
    if runc := _find("runc"):
        return Runtime(runc, keeps_groups=False, limits=unified)
    raise EngineUnavailable(
        "no OCI runtime for rootless Podman: runc is not installed"
        + ("" if unified else " (crun refuses rootless on this cgroup v1 host)"),
        node=node,
        hint="install runc",
    )


def _find(program: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    return shutil.which(program, path=path)


def service_argv(
    podman: str,
    runtime: str,
    layout: storage.Layout,
    socket: Path,
    shared: tuple[Path, ...] | None = None,
) -> list[str]:
    """The per-job API service (pure). The node's storage is overlay, as the shared
    image store's is (an additional store must use the node's driver): a container
    starts in 0.1-0.2 s, where vfs, Podman's default without fuse-overlayfs, copied the
    whole image first (3-8 s per container on the testbed). `shared`: the store's
    entries, read in place."""
    where = [
        "--root", str(layout.storage), "--runroot", str(layout.runroot),
        "--storage-driver", podman_store.DRIVER,
    ]  # fmt: skip
    if shared:
        where += ["--storage-opt", f"{podman_store.DRIVER}.imagestore={','.join(map(str, shared))}"]
    return [
        podman, "--runtime", runtime, "--cgroup-manager", "cgroupfs", *where,
        "system", "service", "--time", "0", f"unix://{socket}",
    ]  # fmt: skip


def service_env(env: dict[str, str] | os._Environ[str], layout: storage.Layout) -> dict[str, str]:
    """The caller's environment with the node-local runtime directory and our settings;
    a Slurm step's XDG_RUNTIME_DIR (often missing, or on another node) is not used."""
    return {
        **{k: v for k, v in env.items() if k not in ("DOCKER_HOST", "CONTAINER_HOST")},
        "XDG_RUNTIME_DIR": str(layout.runtime_dir),
        "CONTAINERS_CONF": str(layout.containers_conf),
    }


def containers_conf(catatonit: str | None) -> str:
    """Every container of the service runs with the user's own UID/GID (keep-id); the
    compat API takes no keep-id per container. The init is catatonit where installed."""
    lines = ["# Written by mpidock for its per-job Podman service.", "[containers]"]
    lines.append('userns = "keep-id"')
    if catatonit:
        lines.append(f'init_path = "{catatonit}"')
    return "\n".join(lines) + "\n"


def refusal_hint(said: str) -> str:
    if "newuidmap" in said or "subuid" in said or "subgid" in said:
        return "the user needs subuid/subgid ranges: usermod --add-subuids/--add-subgids"
    if "cgroup" in said:
        return "crun refuses rootless on cgroup v1: install runc"
    return INSTALL_HINT


def end_user_namespace(layout: storage.Layout, uid: int) -> None:
    """Podman's pause process of this runtime directory killed, the directory removed."""
    pid = _read_pid(layout.runtime_dir / "libpod" / "tmp" / "pause.pid")
    if pid and _is_ours(pid, uid, "catatonit"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(layout.runtime_dir, ignore_errors=True)


def _read_pid(path: Path) -> int:
    try:
        text = path.read_text().strip()
    except OSError:
        return 0
    return int(text) if text.isascii() and text.isdigit() else 0


def _is_ours(pid: int, uid: int, comm: str) -> bool:
    try:
        return (
            os.stat(f"/proc/{pid}").st_uid == uid
            and Path(f"/proc/{pid}/comm").read_text().strip() == comm
        )
    except OSError:
        return False


def _stop_group(service: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the service's process group (Podman re-executes itself inside the user
    namespace: the child does not end with its parent), SIGKILL after a wait."""
    for sig, wait in ((signal.SIGTERM, STOP_WAIT), (signal.SIGKILL, STOP_WAIT)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_alive(service.pid):
            service.poll()
            time.sleep(0.02)
        if not _group_alive(service.pid):
            break
    service.poll()


def _group_alive(pgid: int) -> bool:
    """A live (not zombie) process is left in the group: zombies reparented to an init
    that does not reap them would otherwise count."""
    for entry in stopping.PROC.glob("[0-9]*"):
        fields = stopping.stat_fields(entry.name)
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _hold_shared(path: Path) -> IO[str]:
    lock = storage.open_lock(path)
    fcntl.flock(lock, fcntl.LOCK_SH)
    return lock


def _last_user(lock: IO[str]) -> bool:
    """True, holding it exclusively, when no other job of the user holds the lock."""
    fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:300] if lines else "(no output)"
