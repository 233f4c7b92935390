"""The direct launch mode (`--launch pmix`): every Slurm task is one rank, wired up by
Slurm's own PMIx server; no sshd, no mpirun, no job directory or keys.

    srun --mpi=pmix -N3 --ntasks-per-node=2 mpidock slurm-entry --launch pmix \\
        --image IMG -- ./app

One container per node, shared by the step's tasks there (so shared memory and single
copy work between its ranks): the node's first task starts it, every task runs its rank
in it by the engine's exec (launcher.direct.rank), and the container goes when the
node's last task ends (launcher.direct.node says how, on every path). entry.run hands a
launch here when the mode is pmix; nothing else asks which mode runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import docker

from launcher import (
    containers,
    devices,
    engines,
    images,
    limits,
    movement,
    network,
    progress,
    suspend,
)
from launcher.direct import node, pmi, rank, record
from launcher.direct.plan import (
    MODES,
    DirectPlan,
    PmixDirs,
    build,
    client_dir_candidates,
    describe,
    node_container,
    pmi_share_dir,
    require_server,
    share_dir,
    tmp_fs,
)
from launcher.errors import LauncherError, NodeFailed
from launcher.plan import ContainerSpec, Identity, Options
from launcher.record import Timings
from launcher.signals import Inbox
from launcher.slurm import SlurmEnv
from launcher.store import ImageStore

__all__ = ["MODES", "run"]
SLURM_CONF = "/etc/slurm/slurm.conf"


def run(
    opts: Options,
    ident: Identity,
    *,
    mode: str = "pmix",
    dry_run: bool = False,
    as_json: bool = False,
    quiet: bool = False,
) -> int:
    """This task's rank, in the node's container; its exit status."""
    environ = os.environ
    env = SlurmEnv.from_environ(environ)
    require_server(mode, environ, env.node_name)
    slurm_conf, mpi_conf = _confs(environ)
    pmix: PmixDirs | None = None
    if mode == "pmix":
        pmix = pmix_dirs(environ, env.node_name, ident.uid, slurm_conf, mpi_conf)
        share = share_dir(pmix, env.node_name)
        binds: tuple[str, ...] = (pmix.server, pmix.client)
    else:
        share = pmi_share_dir(tmp_fs(env.node_name, slurm_conf), ident.uid, env)
        binds = (str(Path(share).parent),)
    cwd = os.getcwd()
    spec = _node_container(env, opts, ident, cwd, binds, share) if env.localid == 0 else None
    plan = build(
        env, opts, ident, environ, cwd=cwd, pmix=pmix, share=share, container=spec, mode=mode
    )
    if dry_run:
        print(json.dumps(plan.to_dict(), indent=2) if as_json else "\n".join(describe(plan)))
        return 0
    progress.QUIET = quiet
    inbox = Inbox().install()
    settings = engines.Settings(
        podman_root=plan.podman_root or engines.Settings.podman_root,
        podman_image_store=plan.podman_image_store,
    )
    # Under rootless Podman each task has its own API service; they share the node's
    # storage, so the container the first task's service starts is every task's.
    with engines.select(plan.engine, plan.node, settings):
        return _run(plan, ident, inbox, env.nodes)


def _confs(environ: Mapping[str, str]) -> tuple[str, str]:
    """This node's slurm.conf and mpi.conf texts ("" for a missing one)."""
    conf = Path(environ.get("SLURM_CONF") or SLURM_CONF)
    return _read(conf), _read(conf.parent / "mpi.conf")


def pmix_dirs(
    environ: Mapping[str, str], node_name: str, uid: int, slurm_conf: str, mpi_conf: str
) -> PmixDirs:
    """The step's PMIx server and client directories on this node.

    Raises:
        NodeFailed: Slurm made no client directory where its configuration says.
    """
    candidates = client_dir_candidates(environ, node_name, uid, slurm_conf, mpi_conf)
    client = next((path for path in candidates if os.path.isdir(path)), None)
    if client is None:
        raise NodeFailed(
            f"no PMIx client directory of the step at {candidates[0]}",
            node=node_name,
            hint="Slurm's mpi/pmix makes it in TmpFS or mpi.conf's PMIxCliTmpDirBase; "
            "set SLURM_PMIX_TMPDIR if this node's differs",
        )
    return PmixDirs(server=environ["PMIX_SERVER_TMPDIR"].rstrip("/"), client=client)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""  # Slurm's own defaults then hold


def _node_container(
    env: SlurmEnv, opts: Options, ident: Identity, cwd: str, binds: tuple[str, ...], share: str
) -> ContainerSpec:
    """The node's container as the first task plans it: this node's network, devices and
    the step's share of the node (every local task's CPUs)."""
    peers = [n for n in env.nodes if n != env.node_name]
    groups = (ident.gid, *ident.supplementary_gids)
    return node_container(
        env, opts, ident, cwd=cwd, binds=binds, share_dir=share,
        network=network.choose(peers, opts.iface),
        devices=devices.plan_devices(devices.probe(Path("/")), os.environ, groups=groups),
        limits=limits.plan_limits(limits.probe(env.job_id), os.environ),
    )  # fmt: skip


def _run(plan: DirectPlan, ident: Identity, inbox: Inbox, nodes: Sequence[str] = ()) -> int:
    share = node.NodeShare(plan)
    share.join()
    client: docker.DockerClient | None = None
    started, timings = time.time(), Timings()
    code: int | None = None
    error: BaseException | None = None
    try:
        client = containers.client_for_node(plan.node)
        with contextlib.ExitStack() as stack:
            if plan.starts:
                # One freezer per node: the node's first task pauses the container.
                stack.enter_context(suspend.Freezer(inbox, plan.job_id, plan.node, plan.step_id))
                _start(client, plan, ident, share, timings)
            else:
                node.wait_started(client, plan, inbox)
            code = _rank(client, plan, inbox)
    except BaseException as e:
        if isinstance(e, LauncherError):
            e.node = e.node or plan.node
        error = e
        raise
    finally:
        _leave(share, client, plan, inbox)
        if plan.procid == 0:  # one record per step, by the task that knows the most
            _record(plan, ident, nodes, started, timings, code, error)
    assert code is not None  # the rank ended: nothing was raised
    return code


def _rank(client: docker.DockerClient, plan: DirectPlan, inbox: Inbox) -> int:
    """The rank; under pmi2 reaching Slurm through this task's relay."""
    if plan.mode != "pmi2":
        return rank.run(client, plan, inbox)
    size = int(os.environ.get("PMI_SIZE", "0"))
    relay = pmi.Relay(int(os.environ["PMI_FD"]), plan.procid, size, plan.node).start()
    try:
        return rank.run(client, plan, inbox, relay.environment())
    finally:
        relay.close()


def _record(
    plan: DirectPlan,
    ident: Identity,
    nodes: Sequence[str],
    started: float,
    timings: Timings,
    code: int | None,
    error: BaseException | None,
) -> None:
    engine = engines.current()
    facts = engine.describe() if engine else {"engine": plan.engine}
    data = record.build(
        plan, nodes=nodes or (plan.node,), engine=facts, started=started, ended=time.time(),
        timings=timings.phases, code=code, error=error,
    )  # fmt: skip
    record.write(ident.home, data)


def _start(
    client: docker.DockerClient,
    plan: DirectPlan,
    ident: Identity,
    share: node.NodeShare,
    timings: Timings,
) -> None:
    """The image onto this node and personalized, then the node's container (each
    timed for the run record); a failure is left for the node's other tasks to say."""
    try:
        with timings.phase("image"):
            tag = _image(client, plan, ident)
        with timings.phase("container"):
            node.start(client, plan, tag)
        node.announce(plan, tag)
    except LauncherError as e:
        share.fail(e.message)
        raise


def _image(client: docker.DockerClient, plan: DirectPlan, ident: Identity) -> str:
    """This node's own image phase: present, the store's archive or the registry, then
    personalized (each node resolves the name itself: there is no leader to ask)."""
    say = movement.stderr_say(plan.node)
    store = ImageStore(plan.image_store, warn=say)
    # An engine reading images in place from a shared store fills it once, for every
    # node (concurrent fills of one image wait for each other).
    ref = movement.registry_ref(plan.registry, plan.image) if plan.registry else ""
    engines.of(client).import_image(
        plan.image, lambda: store.find_by_name(plan.image), ref, images.personal_of(ident), say
    )
    wanted, _ = movement.resolve(client, plan.image, store, plan.registry, plan.node, say)
    tag, _how = images.ensure_personal(client, wanted.image_id, ident, plan.node, plan.image)
    return tag


def _leave(
    share: node.NodeShare, client: docker.DockerClient | None, plan: DirectPlan, inbox: Inbox
) -> None:
    """This task's part of the end: the last one removes the container; then its FIFO
    end goes, which ends the container anyway once no task holds one."""
    try:
        if share.leave(stopping=inbox.stop.is_set()):
            if client is not None:
                node.remove(client, plan)
            if plan.pmix is None:  # slurmstepd removes only its own PMIx directories
                share.remove()
    except (OSError, LauncherError, docker.errors.DockerException) as e:
        print(f"mpidock: {plan.node}: removing the node's container: {e}", file=sys.stderr)
    finally:
        share.close()
