"""Containers as data plus labels: one place turns a ContainerSpec into docker-py calls."""

from __future__ import annotations

import contextlib
import datetime
import logging
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import docker
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container
from docker.types import DeviceRequest, Mount, Ulimit
from requests import RequestException

from launcher import engines
from launcher.engines.docker import fit_cgroup
from launcher.errors import NodeFailed
from launcher.plan import LABEL_PREFIX, ContainerSpec

log = logging.getLogger(__name__)


def docker_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """docker-py `containers.create` arguments; every field of the spec is used, the
    device fields only when they hold something."""
    return {
        "image": spec.image,
        "command": list(spec.command),
        "name": spec.name,
        "user": spec.user,
        "group_add": [str(g) for g in spec.group_add],
        "labels": dict(spec.labels),
        "mounts": [
            Mount(target=dst, source=src, type="bind", read_only=dst in spec.readonly)
            for src, dst in spec.mounts
        ],
        "working_dir": spec.working_dir,
        "environment": dict(spec.environment),
        "network_mode": spec.network_mode,
        "hostname": spec.hostname or None,
        "cap_drop": list(spec.cap_drop),
        "cap_add": list(spec.cap_add),
        "security_opt": list(spec.security_opt),
        "init": spec.init,
        "shm_size": spec.shm_size,
        "detach": True,
        "stdin_open": False,
        "tty": False,
        **_device_kwargs(spec),
        **_limit_kwargs(spec),
    }


def _device_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if spec.devices:
        kwargs["devices"] = list(spec.devices)
    if spec.gpu_ids:
        # What `docker run --gpus '"device=0,1"'` sends: the NVIDIA runtime exposes exactly
        # these GPUs and sets NVIDIA_VISIBLE_DEVICES itself.
        gpus = DeviceRequest(driver="nvidia", device_ids=list(spec.gpu_ids), capabilities=[["gpu"]])
        kwargs["device_requests"] = [gpus]
    if spec.ulimits:
        kwargs["ulimits"] = [Ulimit(name=n, soft=soft, hard=hard) for n, soft, hard in spec.ulimits]
    return kwargs


def _limit_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """The step's share of the node; a limit of 0 (or no CPUs, no cgroup) is not set."""
    kwargs: dict[str, Any] = {
        "cpuset_cpus": spec.cpuset_cpus,
        "mem_limit": spec.mem_limit,
        "memswap_limit": spec.memswap_limit,
        "pids_limit": spec.pids_limit,
        "cgroup_parent": spec.cgroup_parent,
    }
    return {name: value for name, value in kwargs.items() if value}


def client_for_node(node: str, timeout: float = 60) -> docker.DockerClient:
    """The client of this process's engine (launcher.engines); Docker's by default."""
    return engines.client_for_node(node, timeout)


def start(
    client: docker.DockerClient,
    spec: ContainerSpec,
    node: str,
    before: Callable[[Container], None] | None = None,
) -> Container:
    """Create and start; a start that fails removes what it created. `before` runs between
    the two (to attach to the output before the program can write any)."""
    remove_named(client, spec.name)
    spec = engines.of(client).fit(spec, client)
    try:
        container = client.containers.create(**docker_kwargs(spec))
    except (DockerException, RequestException) as e:
        raise NodeFailed(
            f"cannot create container {spec.name}: {_why(e)}", node=node, hint=_hint(e)
        ) from e
    try:
        if before is not None:
            before(container)
        container.start()
    except (DockerException, RequestException) as e:
        with contextlib.suppress(DockerException, RequestException):
            remove(container)  # the engine may not answer this either; reap's to do then
        raise NodeFailed(
            f"cannot start container {spec.name}: {_why(e)}", node=node, hint=_hint(e)
        ) from e
    return container


# The Docker engine's cgroup rule, where the tests of the spec's fitting find it.
fit_engine = fit_cgroup


def remove(container: Container, *, grace: float = 0) -> None:
    """Stop (SIGTERM, SIGKILL after grace seconds) and remove; a gone container is fine."""
    try:
        if grace > 0:
            container.stop(timeout=int(max(1, grace)))
        container.remove(force=True)
    except NotFound:
        pass
    except APIError as e:
        if e.status_code != 409:  # removal already in progress
            raise


def remove_named(client: docker.DockerClient, name: str) -> None:
    with contextlib.suppress(NotFound):
        remove(client.containers.get(name))


def job_containers(client: docker.DockerClient, job_id: str | None = None) -> list[Container]:
    """Containers carrying our labels, of one job or of every job."""
    label = f"{LABEL_PREFIX}.job" + (f"={job_id}" if job_id else "")
    return list(client.containers.list(all=True, filters={"label": label}))


def of_step(client: docker.DockerClient, job_id: str, node: str, step: str = "") -> list[Container]:
    """The running or paused containers of one step of a job on this node."""
    marks = [f"{LABEL_PREFIX}.job={job_id}", f"{LABEL_PREFIX}.node={node}"]
    found = client.containers.list(all=True, filters={"label": marks})
    step_label = f"{LABEL_PREFIX}.step"
    return [c for c in found if c.labels.get(step_label, "") == step]


ENDED_AS = {"stopped": "exited"}  # Podman: processes ended, its cleanup not yet run


def exit_info(container: Container) -> tuple[str, int]:
    """(status, exit code) as the engine reports them now; ('gone', -1) when removed.

    A container whose processes ended is "exited" whatever the engine: Podman says
    "stopped" until its cleanup has run, Docker has no such state.
    """
    try:
        container.reload()
    except NotFound:
        return "gone", -1
    state = container.attrs.get("State", {})
    status = str(state.get("Status", "unknown"))
    return ENDED_AS.get(status, status), int(state.get("ExitCode", -1))


def out_of_memory(container: Container) -> bool:
    """Whether the kernel killed a process of the container for memory, as far as Docker
    said at the last reload (exit_info): State.OOMKilled, set when the container ends,
    else an "oom" event of the running container (a rank killed while sshd lives on).

    The events are asked for up to the last whole second: an `until` in the future makes
    the engine hold the answer open until then (up to 2 s a call), which delayed every
    check of a running container; an event of this second is seen by the next check.
    """
    state = container.attrs.get("State") or {}
    if state.get("OOMKilled"):
        return True
    if state.get("Status") != "running":
        return False
    try:
        events = container.client.api.events(
            since=_epoch(state.get("StartedAt", "")),
            until=int(time.time()),
            filters={"container": container.id, "event": "oom"},
            decode=True,
        )
        return any(True for _ in events)
    except DockerException:
        return False


def oom_reason(container: Container) -> str:
    """ "; out of memory (limit N MiB)" when the kernel killed for memory, else ""."""
    if not out_of_memory(container):
        return ""
    limit = int((container.attrs.get("HostConfig") or {}).get("Memory") or 0)
    return f"; out of memory (limit {limit // (1024 * 1024)} MiB)" if limit else "; out of memory"


def _epoch(started_at: str) -> int:
    # Docker's "2024-05-01T10:00:00.123456789Z": whole seconds are enough for a lower bound.
    try:
        when = datetime.datetime.strptime(started_at[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return 0
    return int(when.replace(tzinfo=datetime.UTC).timestamp())


def tail(container: Container, lines: int = 5) -> str:
    try:
        return str(container.logs(tail=lines).decode(errors="replace").strip())
    except DockerException:
        return ""


def _hint(e: Exception) -> str:
    if isinstance(e, RequestException):  # no answer in time (a runtime stuck in its init)
        return "the node's container engine did not answer; see its log, and mpidock reap"
    return ""


def _why(e: Exception) -> str:
    text = getattr(e, "explanation", None) or str(e)
    return str(text).strip().splitlines()[0][:300]


def copy_output(output: Iterable[tuple[bytes | None, bytes | None]]) -> None:
    """A container's (or an exec's) stdout and stderr to ours as bytes arrive, until the
    stream ends; an engine or pipe error ends the copy, never the caller."""
    try:
        for chunk_out, chunk_err in output:
            if chunk_out:
                sys.stdout.buffer.write(chunk_out)
                sys.stdout.buffer.flush()
            if chunk_err:
                sys.stderr.buffer.write(chunk_err)
                sys.stderr.buffer.flush()
    except (DockerException, OSError) as e:
        log.debug("output stream ended: %s", e)
