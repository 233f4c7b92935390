"""Can an image's MPI be launched directly, and how? What `mpidock check` reports.

A probe in the image prints what its MPI libraries link and carry; `parse` turns that into
one of the modes: "pmix" (the library links libpmix, or Open MPI has a PMIx component),
"pmi2" (an MPICH-ABI library with a PMI client that Slurm's mpi/pmi2 answers: MPICH's
simple PMI-1 client or a PMI-2 one; or Open MPI's s1/s2 components), else "neither".
`proof_argv` is the 2-rank step that proves it inside a Slurm allocation. Pure.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

# Per line: `lib PATH` for each MPI library (the loader's and those beside mpirun),
# `links PATH LIB` for a PMI library it needs, `client PATH pmi1|pmi2` for the PMI wire
# protocol's keywords it carries, `MCA pmix: NAME ...` from ompi_info, and `hello ARGV`
# for each MPI hello program the image has.
PROBE_SCRIPT = r"""
m=$(command -v mpirun || command -v mpiexec)
{ ldconfig -p 2>/dev/null | grep -oE '/[^ ]*/libmpi(ch)?(_abi)?[.]so[.][0-9]+$'
  [ -n "$m" ] && ls -d "$(dirname "$(readlink -f "$m")")"/../lib/libmpi*.so.[0-9]* 2>/dev/null
} | grep -E '/libmpi(ch)?(_abi)?[.]so[.][0-9]+$' | while read -r l; do
  echo "lib $l"
  ldd "$l" 2>/dev/null | grep -oE 'lib(pmix|pmi2?)[.]so[.0-9]*' | sed "s|^|links $l |"
  grep -qF 'pmi_version' "$l" && echo "client $l pmi1"
  grep -qF 'fullinit' "$l" && echo "client $l pmi2"
done
command -v ompi_info >/dev/null && ompi_info 2>/dev/null | grep -E 'MCA pmix:'
command -v mpi-hello >/dev/null && echo 'hello mpi-hello'
python3 -c 'import mpi4py' 2>/dev/null && echo 'hello python3 -m mpi4py.bench helloworld'
true
"""
PROBE = ["/bin/sh", "-c", PROBE_SCRIPT]
MPICH_ABI = ("libmpi.so.12", "libmpich.so.12", "libmpi_abi.so.1")
# Open MPI's components that are no PMIx client of Slurm's: singletons, Flux, Cray.
NOT_PMIX = ("isolated", "flux", "cray", "s1", "s2")
CLIENTS = {"pmi1": "a PMI-1 client (simple PMI)", "pmi2": "a PMI-2 client"}


@dataclass(frozen=True)
class Support:
    """How the image's MPI can be launched directly.

    Attributes:
        mode: "pmix", "pmi2" or "neither" (the --launch value, or none).
        evidence: what was found that says so (or what was looked for).
        hello: an MPI hello program in the image, as argv, for the proof; () if none.
    """

    mode: str
    evidence: str
    hello: tuple[str, ...] = ()

    @property
    def detail(self) -> str:
        return f"{self.mode}: {self.evidence}"


def parse(text: str) -> Support:
    """The probe's output to the mode it allows; PMIx wins over PMI-2 where both are."""
    libs: dict[str, str] = {}  # path -> soname, the first path of each soname
    links: list[tuple[str, str]] = []
    clients: dict[str, list[str]] = {}
    components: list[str] = []
    hello: tuple[str, ...] = ()
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "lib":
            name = PurePosixPath(words[1]).name
            if name not in libs.values():
                libs[words[1]] = name
        elif len(words) == 3 and words[0] == "links":
            links.append((words[1], words[2]))
        elif len(words) == 3 and words[0] == "client" and words[2] in CLIENTS:
            clients.setdefault(words[1], []).append(words[2])
        elif words[:2] == ["MCA", "pmix:"] and len(words) > 2:
            components.append(words[2])
        elif words[:1] == ["hello"] and len(words) > 1 and not hello:
            hello = tuple(shlex.split(line)[1:])
    return _verdict(libs, links, clients, components, hello)


def _verdict(
    libs: dict[str, str],
    links: list[tuple[str, str]],
    clients: dict[str, list[str]],
    components: list[str],
    hello: tuple[str, ...],
) -> Support:
    if pmix := [f"{libs[p]} links {lib}" for p, lib in links if p in libs and "pmix" in lib]:
        return Support("pmix", ", ".join(dict.fromkeys(pmix)), hello)
    if own := [c for c in components if c not in NOT_PMIX]:
        return Support("pmix", f"Open MPI's pmix component {', '.join(own)}", hello)
    if pmi := [f"{libs[p]} links {lib}" for p, lib in links if p in libs and "pmix" not in lib]:
        return Support("pmi2", ", ".join(dict.fromkeys(pmi)), hello)
    found = sorted(
        (MPICH_ABI.index(name), name, sorted(set(clients[path])))
        for path, name in libs.items()
        if name in MPICH_ABI and path in clients
    )
    if found:
        _, name, kinds = found[0]
        return Support("pmi2", f"{name} has {' and '.join(CLIENTS[k] for k in kinds)}", hello)
    if slurm := [c for c in components if c in ("s1", "s2")]:  # Slurm's PMI-1/PMI-2
        return Support("pmi2", f"Open MPI's pmix component {', '.join(slurm)}", hello)
    looked = f"in {', '.join(libs.values())}" if libs else "(no libmpi.so.* found)"
    return Support("neither", f"no PMIx or PMI client {looked}: use --launch ssh", hello)


def proof_argv(
    support: Support, image: str, engine: str = "", program: str = "mpidock"
) -> list[str]:
    """The 2-rank step on one node that proves the direct launch, run inside the
    allocation (--overcommit: an allocation of one CPU still takes it)."""
    mode = support.mode
    engine_args = ["--engine", engine] if engine else []
    return [
        "srun", f"--mpi={mode}", "-n", "2", "-N", "1", "--overcommit",
        program, "slurm-entry", "--launch", mode, *engine_args, "--image", image,
        "--", *support.hello,
    ]  # fmt: skip


def proof_passed(code: int, output: str) -> bool:
    """Both ranks said who they are in a world of 2 (mpi-hello's and mpi4py's wording
    both carry "R of 2"), and the step succeeded."""
    return code == 0 and "0 of 2" in output and "1 of 2" in output
