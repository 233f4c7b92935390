"""`mpidock slurm-entry`: one task of the srun step. Facts, then a plan, then its execution."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launcher import (
    config,
    containers,
    devices,
    direct,
    distribution,
    engines,
    images,
    injection,
    jobdir,
    jobscript,
    leader,
    limits,
    movement,
    network,
    progress,
    reap,
    suspend,
    worker,
)
from launcher.errors import LauncherError, UsageError, WorkerFailed
from launcher.identity import current_identity
from launcher.movement import Wanted
from launcher.mpi import (
    MpiFlavor,
    MpiFound,
    Network,
    detect_mpi,
    display,
    forwarded_values,
    hostfile_text,
)
from launcher.plan import LaunchPlan, Options, build_plan
from launcher.record import Timings, own_cost, runs_dir, write_json
from launcher.signals import Inbox
from launcher.slurm import SlurmEnv
from launcher.store import ImageStore

INTERNAL_ERROR = 70  # cli.main's status for an unexpected exception (EX_SOFTWARE)
INTERRUPTED = 130


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("slurm-entry", help="run on every node by srun inside an allocation")
    add_launch_options(p)
    p.set_defaults(run=run)


def add_launch_options(p: argparse.ArgumentParser, *, submit: bool = False) -> None:
    """The launcher's options; `mpidock submit` takes them too, but leaves -x to sbatch
    (--exclude there) and takes the image from a template when none is given."""
    p.add_argument("--image", required=not submit, help="the Docker image to run in")
    p.add_argument("--np", type=int, help="total ranks (default: the allocation's CPUs)")
    p.add_argument("--ppn", type=int, help="ranks per node (overrides Slurm's counts)")
    p.add_argument("--port", type=int, help="the job's sshd port (default from the job id)")
    p.add_argument("--port-range", type=_range, metavar="LOW-HIGH", help="default 20000-29999")
    p.add_argument("--iface", help="network interface for MPI (default: the route to peers)")
    p.add_argument("--mpi", choices=["auto", *[f.value for f in MpiFlavor]], help="default auto")
    p.add_argument(
        "--mpi-arg",
        action="append",
        default=[],
        dest="mpi_args",
        help="an extra mpirun argument (repeatable)",
    )
    p.add_argument(
        *(["--env"] if submit else ["-x", "--env"]),
        action="append",
        default=[],
        dest="env_forward",
        help="forward this environment variable to every rank (repeatable)",
    )
    p.add_argument(
        "--mount",
        action="append",
        default=[],
        dest="mounts",
        help="bind SRC[:DST] into every container (repeatable)",
    )
    p.add_argument("--job-root", help="shared directory for per-job keys (default ~/.mpidock/jobs)")
    p.add_argument(
        "--image-store",
        help="shared directory for image archives (default ~/.mpidock/images)",
    )
    p.add_argument("--registry", help="a site registry HOST[:PORT] nodes may pull the image from")
    p.add_argument(
        "--image-cleanup",
        choices=["keep", "remove"],
        help="keep the personalized image for the next job (default) or remove it at the end",
    )
    p.add_argument("--ready-timeout", type=float, help="seconds to wait for workers (120)")
    p.add_argument("--grace", type=float, help="seconds between SIGTERM and SIGKILL (10)")
    p.add_argument("--quiet", action="store_true", help="no progress lines, errors only")
    p.add_argument(
        "--engine",
        choices=engines.CHOICES,
        help="docker, podman (rootless, the user's own rights) or auto (default)",
    )
    p.add_argument("--podman-root", help="node-local Podman storage ({uid}, {user}, {node})")
    p.add_argument(
        "--host-mpi",
        metavar="NAME",
        help="inject the site's MPI [host_mpi.NAME] (site or user configuration) in place of "
        "the image's, when the ABI check passes",
    )
    p.add_argument(
        "--launch",
        choices=direct.MODES,
        help="ssh (default: sshd containers, mpirun in the first node's), pmix or pmi2 "
        "(every task one rank, through srun --mpi=pmix or --mpi=pmi2; no sshd)",
    )
    if submit:
        return
    p.add_argument(
        "--script",
        metavar="FILE",
        help="run this job script in the leader's container instead of a command; "
        "its plain mpirun reaches every node",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and start nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")


def options(args: argparse.Namespace, home: str) -> Options:
    """The command line over the configuration (site file, user file, MPIDOCK_* variables)."""
    command = tuple(args.command[1:] if args.command[:1] == ["--"] else args.command)
    if args.script and command:
        raise UsageError("both --script and a command", hint="give one: the script runs mpirun")
    if args.script:
        command = _script_command(args.script)
    if not command:
        raise UsageError("no command to run", hint="put the program after --: -- ./app args")
    cfg = config.load(os.environ, config.given_options(args), home)
    return Options(
        image=args.image, command=command, np=args.np, ppn=args.ppn, port=args.port,
        mpi_args=tuple(args.mpi_args), env_forward=tuple(args.env_forward),
        env_values=forwarded_values(args.env_forward, os.environ),
        script=command[-1] if args.script else "", **config.option_fields(cfg),
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    ident = current_identity()
    opts = options(args, ident.home)
    if (mode := config.for_command(args).launch) != "ssh":  # the one place it is asked
        if opts.host_mpi:  # its bind and environment are the ssh launch's plan alone
            raise UsageError(
                f"--host-mpi {opts.host_mpi.name} works with --launch ssh only",
                hint=f"leave out --launch {mode}, or --host-mpi to run the image's own MPI",
            )
        return direct.run(
            opts, ident, mode=mode, dry_run=args.dry_run, as_json=args.json, quiet=args.quiet
        )
    env = SlurmEnv.from_environ(os.environ)
    # A launching leader chooses the network once its job directory exists, so that a
    # failure there (a node name that does not resolve) reaches the workers at once.
    net = _network(env, opts) if args.dry_run else None
    flavor = MpiFlavor(opts.mpi) if opts.mpi != "auto" else None
    # An injected MPI is launched as its own family, whatever the image's.
    flavor = opts.host_mpi.family if opts.host_mpi else flavor
    # This node's own devices and environment: every node plans its own containers.
    node_devices = devices.plan_devices(
        devices.probe(Path("/")), os.environ, groups=(ident.gid, *ident.supplementary_gids)
    )
    plan = build_plan(
        env,
        opts,
        ident,
        cwd=os.getcwd(),
        image=opts.image,
        flavor=flavor or (MpiFlavor.OPENMPI if args.dry_run else None),
        network=net,
        devices=node_devices,
        limits=_node_limits(env),
    )
    if args.dry_run:
        return _print_plan(plan, as_json=args.json, assumed=flavor is None)
    if plan.role == "idle":
        return 0
    progress.QUIET = args.quiet
    jobdir.check_root(plan.job.path.parent.parent, ident.user, plan.node)
    inbox = Inbox().install()
    # Slurm's suspend stops this process; the Freezer pauses the node's containers too.
    with _engine(plan), suspend.Freezer(inbox, plan.job_id, plan.node, plan.step_id):
        if plan.role == "worker":
            return worker.run_worker(plan, inbox)
        return _lead(env, opts, plan, inbox, flavor, node_devices)


def _network(env: SlurmEnv, opts: Options) -> Network | None:
    """The leader's choice of interface for MPI; None on other nodes."""
    if not (env.is_leader and env.acts):
        return None
    return network.choose([n for n in env.nodes if n != env.node_name], opts.iface)


def _lead(
    env: SlurmEnv,
    opts: Options,
    plan: LaunchPlan,
    inbox: Inbox,
    flavor: MpiFlavor | None,
    node_devices: devices.DevicePlan,
) -> int:
    started = time.time()
    run = leader.LeaderRun(timings=Timings(plan.node))
    error: BaseException | None = None
    client, tag = None, ""
    try:
        # The job directory first: from then on every failure reaches the workers at once.
        leader.create_job(plan, run)
        net = _network(env, opts)
        with leader.heartbeat(plan):
            client = containers.client_for_node(plan.node)
            reap.at_start(client, plan)
            # Archive requests can only come before the workers are ready: serve until then.
            with distribution.ArchiveServer(plan, client, run.archive) as server:
                with run.timings.phase("image"):
                    check = injection.Check(client, plan, opts.host_mpi) if opts.host_mpi else None
                    tag, wanted, run.image = distribution.lead_image(plan, client, server, check)
                    run.image_id = wanted.image_id
                    # --mpi names the family only: its version stays unknown.
                    found = MpiFound(flavor) if flavor else None
                    if host := opts.host_mpi:  # the injected MPI runs, as its own family
                        found = MpiFound(host.family, host.version)
                    found = found or detect_mpi(_mpi_version(client, plan, tag, wanted))
                    flavor = found.flavor
                plan = build_plan(
                    env,
                    opts,
                    plan.identity,
                    cwd=os.getcwd(),
                    image=opts.image,
                    flavor=flavor,
                    network=net,
                    devices=node_devices,
                    limits=_node_limits(env),
                    mpi_version=found.version,
                    injection=check.injection if check else None,
                )
                plan.job.hostfile.write_text(hostfile_text(flavor, plan.nodes))
                injection.write_links(plan)
                leader.wait_workers(plan, run, inbox)
            run.exit_code = leader.run_mpirun(plan, client, run, inbox, tag)
    except BaseException as e:
        if isinstance(e, LauncherError):
            e.node = e.node or plan.node
        error = e
        raise
    finally:
        _teardown(plan, run, inbox.stop.is_set(), client, "" if plan.keep_image else tag)
        _write_record(plan, run, started, error)
        progress.summary(plan.job_id, len(plan.nodes), run.timings.phases, _exit(run, error))
    return run.exit_code


def _teardown(
    plan: LaunchPlan, run: leader.LeaderRun, stopping: bool, client: Any, tag: str
) -> None:
    """Every step of the end runs whatever the others did. A failure is noted in the
    record and said, never raised: teardown cannot change how the job ended."""
    steps: list[tuple[str, Callable[[], None]]] = [
        ("job directory", lambda: leader.end_job(plan, run, stopping=stopping))
    ]
    if client is not None and tag:
        steps.append(("personalized image", lambda: images.remove_personal(client, tag)))
    for what, step in steps:
        try:
            step()
        except Exception as e:
            run.problems.append(f"{what}: {type(e).__name__}: {e}")
            print(f"mpidock: {plan.node}: teardown of the {what} failed: {e}", file=sys.stderr)


def _engine(plan: LaunchPlan) -> engines.Engine:
    """This step's engine on this node, entered so that every client of the step is its."""
    settings = engines.Settings(
        podman_root=plan.podman_root or engines.Settings.podman_root,
        podman_image_store=plan.podman_image_store,
    )
    return engines.select(plan.engine, plan.node, settings)


def _engine_facts() -> dict[str, Any]:
    engine = engines.current()
    return engine.describe() if engine else {"engine": "docker"}


def _node_limits(env: SlurmEnv) -> limits.Limits:
    """This step's share of this node (its CPUs, the job's memory) for its containers."""
    return limits.plan_limits(limits.probe(env.job_id), os.environ)


def _script_command(path: str) -> tuple[str, ...]:
    """The job script run by its own interpreter (its #! line; /bin/sh without one)."""
    script = Path(path).absolute()
    return (*jobscript.load(script).interpreter_argv, str(script))


def _mpi_version(client: Any, plan: LaunchPlan, tag: str, wanted: Wanted) -> str:
    """`mpirun --version` of the image, asked once per image ID and noted in the store."""
    store = ImageStore(plan.image_store, warn=movement.stderr_say(plan.node))
    if (text := store.recall(wanted.image_id, "mpi")) is None:
        text = images.mpi_version_text(client, tag, plan.node)
        store.note(wanted.image_id, "mpi", text)
    return text


def _write_record(
    plan: LaunchPlan, run: leader.LeaderRun, started: float, error: BaseException | None
) -> None:
    record = {
        "job_id": plan.job_id, "started": started, "ended": time.time(),
        "image": plan.image, "image_id": run.image_id, "mpi": plan.flavor,
        "mpi_version": plan.mpi_version, "engine": _engine_facts(),
        "host_mpi": plan.injection.record() if plan.injection else None,
        "nodes": [{"node": h.node, "slots": h.slots} for h in plan.nodes],
        "leader": {"node": plan.node, "image": run.image, "archive": run.archive,
                   "timings": run.timings.phases, "self": own_cost()},
        "workers": run.nodes, "mpirun_argv": list(plan.mpirun),
        "exit_code": _exit(run, error),
        "mpirun_exit_code": run.exit_code,
        "error": None if error is None else _error(error, plan.node),
        "teardown_problems": run.problems,
    }  # fmt: skip
    path = runs_dir(plan.identity.home) / record_name(plan)
    try:
        write_json(path, record)
    except OSError as e:  # said, not raised: the job's own outcome stands
        print(f"mpidock: {plan.node}: cannot write the run record {path}: {e}", file=sys.stderr)


def record_name(plan: LaunchPlan) -> str:
    """``<job>.json``; a later step of the job (a second srun) gets ``<job>.<step>.json``."""
    later = plan.step_id not in ("", "0")
    return f"{plan.job_id}.{plan.step_id}.json" if later else f"{plan.job_id}.json"


def _exit(run: leader.LeaderRun, error: BaseException | None) -> int:
    """The status `mpidock` exits with, as cli.main turns each outcome into one."""
    if error is None:
        return run.exit_code if run.exit_code is not None else INTERNAL_ERROR
    if isinstance(error, LauncherError):
        return error.exit_code
    return INTERRUPTED if isinstance(error, KeyboardInterrupt) else INTERNAL_ERROR


def _error(error: BaseException, node: str) -> dict[str, Any]:
    if not isinstance(error, LauncherError):  # a defect of mpidock, or an interrupt
        message = " ".join(f"{type(error).__name__}: {error}".split())
        return {"message": message, "node": node, "kind": "internal error"}
    entry: dict[str, Any] = {"message": str(error), "node": error.node}
    entry["kind"] = type(error).__name__
    if isinstance(error, WorkerFailed):
        entry["reported_at"] = error.at
    return entry


def _print_plan(plan: LaunchPlan, *, as_json: bool, assumed: bool) -> int:
    plan, notes = _as_engine_starts(plan)
    data = plan.to_dict()
    data["engine_notes"] = list(notes)
    if assumed:
        data["flavor"] = "auto (detected at launch; the argv shown assumes openmpi)"
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"role: {plan.role} on {plan.node} (job {plan.job_id})")
    print("nodes: " + ", ".join(f"{h.node}:{h.slots}" for h in plan.nodes))
    print(f"port: {plan.port}  job dir: {plan.job_dir}")
    if plan.devices:
        print(f"devices: {plan.devices}")
    print(f"engine: {_engine_said(plan)}")
    for note in notes:
        print(f"engine: {note}")
    if plan.injection:
        print(f"mpi: {plan.injection.describe()}")
    if plan.container:
        print(f"container: {json.dumps(data['container'])}")
    if plan.mpirun:
        print(f"mpirun: {display(plan.mpirun)}")
    return 0


def _as_engine_starts(plan: LaunchPlan) -> tuple[LaunchPlan, tuple[str, ...]]:
    """The plan with its container as the node's engine will start it, and the engine's
    notes on what changed; unchanged when no engine is found here."""
    if plan.container is None:
        return plan, ()
    try:
        engine = engines.select(plan.engine, plan.node)
    except engines.EngineUnavailable:
        return plan, ()
    container, notes = engine.planned(plan.container)
    return dataclasses.replace(plan, container=container), notes


def _engine_said(plan: LaunchPlan) -> str:
    if plan.engine != "auto":
        return plan.engine
    try:
        return f"auto ({engines.auto(os.environ, plan.node)} on this node)"
    except engines.EngineUnavailable as e:
        return f"auto ({e.message})"


def _range(text: str) -> tuple[int, int]:
    # ASCII digits only: str.isdigit also takes "²", which int() refuses.
    if not (match := re.fullmatch(r"([0-9]+)-([0-9]+)", text)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected LOW-HIGH, e.g. 20000-29999")
    return int(match[1]), int(match[2])
