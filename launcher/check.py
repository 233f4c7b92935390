"""`mpidock check IMAGE`: will this image run under mpidock? For vendors certifying one.

On this host's engine: a shell, OpenSSH's server and client, mpirun with its family and
version, the MPI's ABI (the sonames of its libmpi), how its MPI can be launched directly
(pmix, pmi2 or neither: launcher.direct.support), a user added by personalization, then a
real 2-rank run in two containers on a private network, rank 1 reached over the per-job
ssh exactly as on a cluster; inside a Slurm allocation, a 2-rank direct launch through
srun as well. A table of results; exit 0 only if every check passes (a row shown "-" is
information only). Everything it creates is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shlex
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import docker
from docker.errors import DockerException, ImageNotFound
from docker.models.containers import Container
from requests.exceptions import RequestException

from launcher import containers, devices, engine_command, images, jobdir
from launcher.cache import columns
from launcher.direct import proof, support
from launcher.errors import DockerUnavailable, LauncherError
from launcher.identity import current_identity
from launcher.mpi import MpiFlavor, MpiLaunch, detect_mpi, mpirun_argv
from launcher.plan import ContainerSpec, Identity
from launcher.slurm import NodeSlots

PORT = 2222  # inside the check's private network: no clash with the host's ports
RUN_TIMEOUT = 120.0
# The MPI's shared libraries: those the loader knows, and those in the lib directory
# beside mpirun's real path (an MPI under /opt need not be in the loader's cache).
ABI_PROBE = [
    "/bin/sh", "-c",
    "{ ldconfig -p 2>/dev/null; m=$(command -v mpirun || command -v mpiexec) "
    '&& ls "$(dirname "$(readlink -f "$m")")/../lib" 2>/dev/null; } '
    "| grep -oE 'libmpi(ch)?(_abi)?[.]so[.][0-9]+' | sort -u",
]  # fmt: skip
ABIS = {
    "libmpi.so.12": "MPICH ABI",
    "libmpich.so.12": "MPICH ABI",
    "libmpi.so.40": "Open MPI ABI",
    "libmpi_abi.so.1": "MPI-5 standard ABI",
}
# Root cannot be the job user (sshd refuses it); root's checks run as this one.
STAND_IN = Identity(user="mpidock-check", uid=4242, gid=4242, group="mpidock-check",
                    groups=(), home="/tmp", shell="/bin/sh")  # fmt: skip


@dataclass(frozen=True)
class Result:
    check: str
    ok: bool
    detail: str
    tried: bool = True  # False: information only, shown "-" and not counted


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="check that an image can run under mpidock (for vendors)")
    p.add_argument("image", help="the image to check, present on this host's engine")
    engine_command.add_option(p)
    p.add_argument(
        "--timeout", type=_timeout, default=RUN_TIMEOUT, metavar="SECONDS",
        help=f"how long each probe and the 2-rank run may take ({RUN_TIMEOUT:g})",
    )  # fmt: skip
    p.set_defaults(run=run)


def _timeout(text: str) -> float:
    if not re.fullmatch(r"[0-9]+(\.[0-9]*)?", text) or float(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return float(text)


def run(args: argparse.Namespace) -> int:
    node = socket.gethostname()
    with engine_command.select(args) as engine:
        try:
            results = check(engine.client(), args.image, node, args.timeout, engine.name)
        except (DockerException, RequestException) as e:
            # The engine itself failed or stopped answering (a probe's own hang is a FAIL row).
            raise DockerUnavailable(
                f"the {engine.name} engine failed during the check: {_one_line(e)}", node=node,
                hint="is the engine healthy (docker info, podman info)? Rerun the check then",
            ) from e  # fmt: skip
    print(table(results))
    return 0 if all(r.ok for r in results) else 1


def table(results: list[Result]) -> str:
    lines = [("CHECK", "RESULT", "DETAIL")]
    lines += [(r.check, _shown_result(r), r.detail) for r in results]
    counted = [r for r in results if r.tried]
    passed = sum(r.ok for r in counted)
    return columns(lines) + f"\n{passed} of {len(counted)} checks passed"


def _shown_result(result: Result) -> str:
    if not result.tried:
        return "-"
    return "pass" if result.ok else "FAIL"


def check(
    client: docker.DockerClient,
    image: str,
    node: str,
    timeout: float = RUN_TIMEOUT,
    engine: str = "",
    environ: Mapping[str, str] | None = None,
) -> list[Result]:
    """Every check in turn, then the direct launch's proof (inside an allocation);
    timeout bounds each probe and each 2-rank run."""
    try:
        client.images.get(image)
    except ImageNotFound:
        return [Result("image", False, f"{image} is not on this host's engine (docker pull?)")]
    results, direct = _checks(client, image, node, timeout)
    environ = os.environ if environ is None else environ
    return [*results, direct_proof(direct, image, engine, timeout, environ)]


def _checks(
    client: docker.DockerClient, image: str, node: str, timeout: float
) -> tuple[list[Result], support.Support]:
    results = [Result("image", True, image), _devices()]
    results.append(probe(client, image, "shell", ["/bin/sh", "-c", "echo /bin/sh"], timeout))
    results.append(probe(client, image, "sshd", ["/bin/sh", "-c", "ls /usr/sbin/sshd"], timeout))
    results.append(probe(client, image, "ssh client", ["/bin/sh", "-c", "ssh -V"], timeout))
    flavor, found = mpi_of(client, image, timeout)
    direct, said = direct_of(client, image, timeout)
    results += [found, abi_of(client, image, timeout), said]
    ident = _identity()
    try:
        tag, _ = images.ensure_personal(client, image, ident, node)
    except LauncherError as e:
        return [*results, Result("add a user", False, e.message)], direct
    try:
        results.append(user_added(client, tag, ident, timeout))
        if flavor is None or not all(r.ok for r in results):
            failed = Result("2 ranks, 2 containers", False, "not tried: see above")
            return [*results, failed], direct
        results.append(two_ranks(client, tag, ident, flavor, node, timeout))
    finally:
        images.remove_personal(client, tag)
    return results, direct


def probe(
    client: docker.DockerClient, image: str, name: str, argv: list[str], timeout: float
) -> Result:
    """argv in a throwaway container of image: its first output line, or why it failed."""
    code, out = run_once(client, image, argv, timeout)
    return Result(name, code == 0, _first(out) or f"exit {code}, no output")


def run_once(
    client: docker.DockerClient, image: str, argv: list[str], timeout: float, user: str = ""
) -> tuple[int, str]:
    """Exit code and output (stdout and stderr) of argv in a throwaway container; -1 and
    why when it failed or was still running after timeout seconds (then it is killed)."""
    container = client.containers.create(
        image, argv, network_mode="none", entrypoint=[], user=user or None,
        cap_drop=["ALL"], security_opt=["no-new-privileges"], labels={"org.mpidock.check": "probe"},
    )  # fmt: skip
    try:
        container.start()
        code = int(container.wait(timeout=timeout).get("StatusCode", -1))
        return code, container.logs(stdout=True, stderr=True).decode(errors="replace")
    except RequestException:  # docker-py's wait gives up with ReadTimeout or ConnectionError
        return -1, f"`{_shown(argv)}` still running after {timeout:g} s"
    except DockerException as e:
        return -1, str(e)
    finally:
        containers.remove(container)


def mpi_of(
    client: docker.DockerClient, image: str, timeout: float
) -> tuple[MpiFlavor | None, Result]:
    code, text = run_once(client, image, images.MPI_VERSION, timeout)
    if code == -1:  # it hung, or the engine refused: run_once says which
        return None, Result("mpirun", False, _first(text))
    if code != 0:
        return None, Result("mpirun", False, f"no mpirun or mpiexec on the PATH: {_first(text)}")
    try:
        found = detect_mpi(text)
    except LauncherError as e:
        return None, Result("mpirun", False, e.message)
    detail = str(found) if found.version else f"{found.flavor.value}: {_first(text)}"
    return found.flavor, Result("mpirun", True, detail)


def abi_of(client: docker.DockerClient, image: str, timeout: float) -> Result:
    """The ABIs the image's MPI libraries offer, by soname (what an injected MPI or a
    binary built elsewhere must match)."""
    code, text = run_once(client, image, ABI_PROBE, timeout)
    if code == -1:
        return Result("MPI ABI", False, _first(text))
    sonames = [name for name in text.split() if name.startswith("libmpi")]
    if not sonames:
        return Result("MPI ABI", False, "no libmpi.so.* known to the loader or beside mpirun")
    known = [f"{name} ({ABIS[name]})" for name in sonames if name in ABIS]
    other = [name for name in sonames if name not in ABIS]
    return Result("MPI ABI", True, ", ".join([*known, *other]))


def direct_of(
    client: docker.DockerClient, image: str, timeout: float
) -> tuple[support.Support, Result]:
    """How the image's MPI can be launched directly, and the evidence (information only:
    an image without it still runs with --launch ssh)."""
    code, text = run_once(client, image, support.PROBE, timeout)
    if code != 0:
        found = support.Support("neither", f"the probe failed: {_first(text)}")
        return found, Result("direct launch", False, found.detail)
    found = support.parse(text)
    return found, Result("direct launch", True, found.detail, tried=False)


def direct_proof(
    found: support.Support, image: str, engine: str, timeout: float, environ: Mapping[str, str]
) -> Result:
    """Inside a Slurm allocation, 2 ranks on one node through srun --mpi=MODE and
    slurm-entry --launch MODE; elsewhere, a note that the proof needs one."""
    ok, detail = proof.prove(found, image, engine, timeout, environ)
    return Result("direct, 2 ranks", ok is not False, detail, tried=ok is not None)


def user_added(client: docker.DockerClient, tag: str, ident: Identity, timeout: float) -> Result:
    """The personalized image knows the user: `id` as that UID names it."""
    code, text = run_once(client, tag, ["id"], timeout, user=f"{ident.uid}:{ident.gid}")
    ok = code == 0 and f"uid={ident.uid}({ident.user})" in text
    return Result("add a user", ok, _first(text))


def two_ranks(
    client: docker.DockerClient,
    tag: str,
    ident: Identity,
    flavor: MpiFlavor,
    node: str,
    timeout: float,
) -> Result:
    """mpirun in one container, rank 1 in another reached through the job's sshd."""
    name = f"mpidock-check-{secrets.token_hex(4)}"
    with _job_dir(ident) as job, _network(client, name) as network:
        base = ContainerSpec(
            name=f"{name}-worker", image=tag, user=f"{ident.uid}:{ident.gid}", group_add=(),
            command=("/usr/sbin/sshd", "-D", "-e", "-f", str(job.sshd_config)),
            labels=(("org.mpidock.check", name),), mounts=((str(job.path.parent),) * 2,),
            working_dir="/tmp", environment=(("HOME", "/tmp"),), network_mode=network,
        )  # fmt: skip
        try:
            worker = containers.start(client, replace(base, hostname="check-worker"), node)
        except LauncherError as e:
            return Result("2 ranks, 2 containers", False, e.message)
        try:
            if not _listening(worker):
                return Result("2 ranks, 2 containers", False, f"sshd: {containers.tail(worker)}")
            argv = mpirun_argv(MpiLaunch(
                flavor=flavor, ssh_agent=str(job.ssh_wrapper), network=None,
                hosts=(NodeSlots("check-leader", 1), NodeSlots("check-worker", 1)),
                command=("hostname",),
            ))  # fmt: skip
            spec = replace(
                base, name=f"{name}-leader", command=tuple(argv), hostname="check-leader"
            )
            try:
                leader = containers.start(client, spec, node)
            except LauncherError as e:
                return Result("2 ranks, 2 containers", False, e.message)
            try:
                return _outcome(leader, timeout)
            finally:
                containers.remove(leader)
        finally:
            containers.remove(worker)


def _outcome(leader: Container, timeout: float) -> Result:
    try:
        code = leader.wait(timeout=timeout).get("StatusCode", -1)
    except RequestException:  # the wait's deadline passed
        return Result("2 ranks, 2 containers", False, f"mpirun still running after {timeout:g} s")
    out = leader.logs().decode(errors="replace")
    hosts = sorted(set(out.split()) & {"check-leader", "check-worker"})
    ok = code == 0 and hosts == ["check-leader", "check-worker"]
    detail = (
        "ranks ran on check-leader and check-worker" if ok else f"exit {code}: {_first(out[-500:])}"
    )
    return Result("2 ranks, 2 containers", ok, detail)


def _listening(worker: Container) -> bool:
    """sshd listens on PORT (read from /proc: the image need not have ss or netstat)."""
    wanted = f":{PORT:04X} "
    for _ in range(100):
        status, _code = containers.exit_info(worker)
        if status != "running":
            return False
        table = worker.exec_run(["cat", "/proc/net/tcp", "/proc/net/tcp6"]).output.decode()
        if any(wanted in line and " 0A " in line for line in table.splitlines()):
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def _job_dir(ident: Identity) -> Iterator[jobdir.JobDir]:
    root = Path(tempfile.mkdtemp(prefix="mpidock-check-"))
    try:
        job = jobdir.create_job_dir(
            root / "job", hosts=["check-worker"], port=PORT, user=ident.user
        )
        for path in [root, *root.rglob("*")]:
            shutil.chown(path, ident.uid, ident.gid)
        yield job
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _network(client: docker.DockerClient, name: str) -> Iterator[str]:
    network = client.networks.create(name, driver="bridge", labels={"org.mpidock.check": name})
    try:
        yield name
    finally:
        network.remove()


def _devices() -> Result:
    """What containers on this host would get of its GPUs and fabrics (information only)."""
    found = devices.plan_devices(devices.probe(Path("/")), os.environ, groups=os.getgroups())
    return Result("devices", True, found.summary)


def _identity() -> Identity:
    ident = current_identity()
    return STAND_IN if ident.uid == 0 else ident


def _shown(argv: list[str]) -> str:
    """The command as the user would type it: a probe's `sh -c` words unwrapped."""
    return argv[2] if argv[:2] == ["/bin/sh", "-c"] and len(argv) == 3 else shlex.join(argv)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _first(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")
