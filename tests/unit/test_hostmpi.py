"""Host MPI injection without Docker or Slurm: the probe's text, the ABI verdict for every
check, the injection's mounts, environment and launch, and `[host_mpi.NAME]` tables."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from textwrap import dedent

import pytest

from launcher import config, entry, injection
from launcher.cli import main
from launcher.config import ConfigError
from launcher.errors import UsageError
from launcher.hostmpi import (
    HostMpi,
    HostMpiRefused,
    ImageMpi,
    Injection,
    launcher_argv,
    parse_probe,
    verdict,
    version_key,
)
from launcher.movement import Wanted
from launcher.mpi import MpiFlavor
from launcher.plan import Options, build_plan
from launcher.slurm import SlurmEnv
from launcher.testbed import hostmpi as testbed_hostmpi
from tests.unit.samples import ALICE, NET, STEP, WORKER

MPICH, OPENMPI, INTEL = MpiFlavor.MPICH, MpiFlavor.OPENMPI, MpiFlavor.INTEL
PREFIX = "/opt/mpidock/host-mpi/mpich5"
MPICH5 = HostMpi(
    name="mpich5", path=PREFIX, family=MPICH, abi="libmpi.so.12", version="5.0.2",
    libs=(f"{PREFIX}/lib/mpich",),
)  # fmt: skip
# What PROBE prints in the testbed's images (ldconfig's lines shortened).
DEBIAN_MPICH = """HYDRA build details:
    Version:                                 4.0.2
    Release Date:                            Thu May 19 15:51:15 CDT 2022
@@mpidock-libraries
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LD_LIBRARY_PATH=
LIB 212
LIB libmpichfort.so.12
LIB libmpichcxx.so.12
LIB libmpich.so.12
LIB libc.so.6
"""
DEBIAN_OPENMPI = """mpirun (Open MPI) 4.1.4

Report bugs to http://www.open-mpi.org/community/help/
@@mpidock-libraries
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LD_LIBRARY_PATH=
LIB libmpi_mpifh.so.40
LIB libmpi_cxx.so.40
LIB libmpi.so.40
"""
WHEEL_MPICH = """HYDRA build details:
    Version:                                 5.0.2
@@mpidock-libraries
PATH=/opt/mpich/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LD_LIBRARY_PATH=/opt/mpich/lib
LIB libmpi_abi.so.1
LIB libmpi.so.12
LIB libmpi.so.12
LIB libmpi.so
"""
NO_LAUNCHER = """sh: 1: mpirun: not found
sh: 1: mpiexec: not found
@@mpidock-libraries
PATH=/usr/bin:/bin
LD_LIBRARY_PATH=/app/lib
LIB libmpi.so.12
"""


# --- the probe -------------------------------------------------------------------------------


def test_probe_of_debian_mpich_names_its_libmpich_libraries_and_the_mpich_abi() -> None:
    image = parse_probe(DEBIAN_MPICH)
    assert image == ImageMpi(
        family=MPICH, version="4.0.2",
        libs=("libmpich.so.12", "libmpichcxx.so.12", "libmpichfort.so.12"),
        path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", ld_library_path="",
    )  # fmt: skip
    assert image.abis == ("libmpi.so.12",)


def test_probe_of_open_mpi_keeps_the_c_library_as_its_abi() -> None:
    image = parse_probe(DEBIAN_OPENMPI)
    assert (image.family, image.version, image.libs) == (OPENMPI, "4.1.4", ("libmpi.so.40",))
    assert image.abis == ("libmpi.so.40",)


def test_probe_of_the_wheel_image_finds_both_abis_once() -> None:
    image = parse_probe(WHEEL_MPICH)
    assert image.libs == ("libmpi.so.12", "libmpi_abi.so.1")
    assert image.abis == ("libmpi.so.12", "libmpi_abi.so.1")
    assert image.ld_library_path == "/opt/mpich/lib"


def test_probe_of_an_image_without_a_launcher_still_finds_its_library() -> None:
    image = parse_probe(NO_LAUNCHER)
    assert (image.family, image.version, image.abis) == (None, "", ("libmpi.so.12",))


@pytest.mark.parametrize(
    ("text", "key"),
    [("5.0.2", (5, 0, 2)), ("4.0", (4, 0)), ("2021.19", (2021, 19)), ("5.0.2a1", (5, 0, 2)),
     ("", None), ("unknown", None)],
)  # fmt: skip
def test_version_key(text: str, key: tuple[int, ...] | None) -> None:
    assert version_key(text) == key


# --- the verdict -----------------------------------------------------------------------------

D402 = parse_probe(DEBIAN_MPICH)
W502 = parse_probe(WHEEL_MPICH)
OMPI = parse_probe(DEBIAN_OPENMPI)
BARE = parse_probe(NO_LAUNCHER)
STD = ImageMpi(OPENMPI, "5.0.11", ("libmpi_abi.so.1",))
IMPI = HostMpi("impi", "/opt/intel/mpi", INTEL, "libmpi.so.12", "2021.19")
OMPI5 = HostMpi("ompi5", "/opt/ompi5", OPENMPI, "libmpi.so.40", "5.0.11")
ABI5 = replace(MPICH5, name="abi5", abi="libmpi_abi.so.1")


@pytest.mark.parametrize(
    ("image", "host", "check", "refused"),
    [
        # major: the soname alone, so MPICH 4 -> 5 and MPICH <-> Intel MPI pass
        (D402, MPICH5, "major", ""),
        (W502, MPICH5, "major", ""),
        (D402, IMPI, "major", ""),
        (BARE, MPICH5, "major", ""),
        (OMPI, OMPI5, "major", ""),
        (STD, ABI5, "major", ""),
        (OMPI, MPICH5, "major", "the ABI differs (libmpi.so.12 is not among libmpi.so.40)"),
        (D402, OMPI5, "major", "the ABI differs (libmpi.so.40 is not among libmpi.so.12)"),
        (D402, ABI5, "major", "the ABI differs"),
        (ImageMpi(MPICH, "4.0.2"), MPICH5, "major", "no shared MPI library found"),
        # full: the same family, the host's version at least the image's
        (D402, MPICH5, "full", ""),
        (W502, MPICH5, "full", ""),
        (W502, replace(MPICH5, version="4.1.2"), "full", "host's version >= 5.0.2"),
        (D402, IMPI, "full", "check full needs the same family"),
        (BARE, MPICH5, "full", "needs the same family"),
        (ImageMpi(MPICH, "", ("libmpi.so.12",)), MPICH5, "full", "which is unknown"),
        (OMPI, MPICH5, "full", "the ABI differs"),
        # strict: the identical version
        (W502, MPICH5, "strict", ""),
        (D402, MPICH5, "strict", "check strict needs the identical version"),
        (ImageMpi(MPICH, "5.0", ("libmpi.so.12",)), MPICH5, "strict", "identical version"),
    ],
)
def test_verdict(image: ImageMpi, host: HostMpi, check: str, refused: str) -> None:
    host = replace(host, check=check)
    if not refused:
        verdict(image, host)
        return
    with pytest.raises(HostMpiRefused) as caught:
        verdict(image, host)
    assert refused in caught.value.message
    assert caught.value.hint.startswith("run without --host-mpi")


def test_refusal_is_one_line_naming_both_sides_and_the_fix() -> None:
    with pytest.raises(HostMpiRefused) as caught:
        verdict(OMPI, MPICH5)
    said = str(caught.value)
    assert "\n" not in said
    assert said == (
        "--host-mpi mpich5: refused: the image's MPI is openmpi 4.1.4 (libmpi.so.40), "
        "host MPI mpich5 (mpich 5.0.2, libmpi.so.12) (check major): the ABI differs "
        "(libmpi.so.12 is not among libmpi.so.40) (hint: run without --host-mpi (the "
        "image's own MPI), or name a host MPI of ABI libmpi.so.40)"
    )


# --- the injection ---------------------------------------------------------------------------

SHIM = "/home/alice/.mpidock/jobs/alice/42.0/host-mpi"


def test_injection_into_debian_mpich_links_its_names_and_puts_the_host_first() -> None:
    inject = Injection(MPICH5, D402)
    assert inject.aliases() == (
        ("libmpich.so.12", f"{PREFIX}/lib/libmpi.so.12"),
        ("libmpichcxx.so.12", f"{PREFIX}/lib/libmpicxx.so.12"),
        ("libmpichfort.so.12", f"{PREFIX}/lib/libmpifort.so.12"),
    )
    assert inject.environment(SHIM) == (
        ("PATH", f"{PREFIX}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        ("LD_LIBRARY_PATH", f"{SHIM}:{PREFIX}/lib:{PREFIX}/lib/mpich"),
    )
    assert inject.describe() == "host MPI mpich5 (mpich 5.0.2) injected into image's mpich 4.0.2"
    assert inject.record()["image"] == {"family": "mpich", "version": "4.0.2",
                                        "libs": list(D402.libs)}  # fmt: skip


def test_injection_keeps_the_images_own_paths_after_the_hosts() -> None:
    inject = Injection(MPICH5, W502)
    assert inject.aliases() == ()
    assert dict(inject.environment(SHIM)) == {
        "PATH": f"{PREFIX}/bin:/opt/mpich/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
        ":/sbin:/bin",
        "LD_LIBRARY_PATH": f"{PREFIX}/lib:{PREFIX}/lib/mpich:/opt/mpich/lib",
    }


def test_injection_before_the_probe_says_the_check_is_to_come() -> None:
    inject = Injection(replace(MPICH5, check="strict"))
    assert inject.describe() == (
        "host MPI mpich5 (mpich 5.0.2) to be injected (check strict of the image's MPI at launch)"
    )
    assert dict(inject.environment(SHIM))["LD_LIBRARY_PATH"] == f"{PREFIX}/lib:{PREFIX}/lib/mpich"


@pytest.mark.parametrize(
    ("host", "head"),
    [
        (MPICH5, [f"{PREFIX}/bin/mpiexec"]),
        (IMPI, ["/opt/intel/mpi/bin/mpiexec"]),
        (OMPI5, ["/opt/ompi5/bin/mpirun", "--prefix", "/opt/ompi5"]),
    ],
)
def test_launcher_argv_runs_the_hosts_own_launcher(host: HostMpi, head: list[str]) -> None:
    assert launcher_argv(["mpiexec", "-n", "2", "./app"], host) == [*head, "-n", "2", "./app"]
    assert launcher_argv([], host) == []


# --- the plan --------------------------------------------------------------------------------

OPTS = Options(image="vendor/app:1", command=("./app",), host_mpi=MPICH5)


def test_leader_plan_binds_the_host_mpi_read_only_and_launches_with_it() -> None:
    plan = build_plan(
        SlurmEnv.from_environ(STEP), OPTS, ALICE, cwd="/home/alice/case", image=OPTS.image,
        flavor=MPICH, network=NET, mpi_version="5.0.2", injection=Injection(MPICH5, D402),
    )  # fmt: skip
    spec = plan.container
    assert spec is not None
    assert (PREFIX, PREFIX) in spec.mounts
    assert (f"{PREFIX}/lib/mpich",) * 2 in spec.mounts
    assert {PREFIX, f"{PREFIX}/lib/mpich"} <= set(spec.readonly)
    shim = f"{plan.job_dir}/host-mpi"
    env = dict(spec.environment)
    assert env["LD_LIBRARY_PATH"] == f"{shim}:{PREFIX}/lib:{PREFIX}/lib/mpich"
    assert env["PATH"].startswith(f"{PREFIX}/bin:")
    argv = list(plan.mpirun)
    assert argv[:3] == [f"{PREFIX}/bin/mpiexec", "-launcher", "ssh"]
    genv = [argv[i + 1 : i + 3] for i, word in enumerate(argv) if word == "-genv"]
    assert ["LD_LIBRARY_PATH", env["LD_LIBRARY_PATH"]] in genv
    assert ["PATH", env["PATH"]] in genv
    assert plan.injection == Injection(MPICH5, D402)


def test_worker_plan_binds_the_host_mpi_and_keeps_the_images_environment() -> None:
    plan = build_plan(
        SlurmEnv.from_environ({**STEP, **WORKER}), OPTS, ALICE, cwd="/home/alice/case",
        image=OPTS.image, flavor=None, network=None,
    )  # fmt: skip
    spec = plan.container
    assert spec is not None
    assert plan.role == "worker"
    assert (PREFIX, PREFIX) in spec.mounts
    assert PREFIX in spec.readonly
    assert "LD_LIBRARY_PATH" not in dict(spec.environment)
    assert "PATH" not in dict(spec.environment)


def test_plan_without_a_host_mpi_binds_nothing_of_it() -> None:
    plan = build_plan(
        SlurmEnv.from_environ(STEP), replace(OPTS, host_mpi=None), ALICE, cwd="/home/alice/case",
        image=OPTS.image, flavor=MPICH, network=NET,
    )  # fmt: skip
    assert plan.injection is None
    assert plan.mpirun[0] == "mpiexec"
    assert plan.container is not None
    assert PREFIX not in plan.container.readonly


# --- configuration ---------------------------------------------------------------------------

SITE = """
    [host_mpi.mpich5]
    path = "/opt/mpidock/host-mpi/mpich5"
    family = "mpich"
    abi = "libmpi.so.12"
    version = "5.0.2"
    libs = ["/opt/mpidock/host-mpi/mpich5/lib/mpich"]

    [host_mpi.impi]
    path = "/opt/intel/mpi"
    family = "intel"
    abi = "libmpi.so.12"
    version = "2021.19"
    check = "full"
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    site, user = tmp_path / "site.toml", tmp_path / "user.toml"
    return {"MPIDOCK_SITE_CONFIG": str(site), "MPIDOCK_USER_CONFIG": str(user)}


def write(path: str, text: str) -> None:
    Path(path).write_text(dedent(text).lstrip("\n"))


def test_site_tables_declare_host_mpis_and_none_is_chosen_by_default(env: dict[str, str]) -> None:
    write(env["MPIDOCK_SITE_CONFIG"], SITE)
    cfg = config.load(env, {}, "/home/ada")
    assert cfg.host_mpis == {
        "mpich5": replace(MPICH5, source=f"{env['MPIDOCK_SITE_CONFIG']}:1"),
        "impi": replace(IMPI, check="full", source=f"{env['MPIDOCK_SITE_CONFIG']}:8"),
    }
    assert (cfg.host_mpi, config.host_mpi(cfg)) == ("", None)


@pytest.mark.parametrize(
    ("user", "given", "chosen", "source"),
    [
        ('host_mpi = "impi"\n', {}, "impi", "user.toml:1"),
        ('[host_mpi]\ndefault = "impi"\n', {}, "impi", "user.toml:2"),
        ('host_mpi = "impi"\n', {"host_mpi": "mpich5"}, "mpich5", "option --host-mpi"),
    ],
)
def test_the_host_mpi_is_chosen_by_key_table_default_or_option(
    env: dict[str, str], user: str, given: dict[str, object], chosen: str, source: str
) -> None:
    write(env["MPIDOCK_SITE_CONFIG"], SITE)
    write(env["MPIDOCK_USER_CONFIG"], user)
    cfg = config.load(env, given, "/home/ada")
    found = config.host_mpi(cfg)
    assert found is not None
    assert found.name == chosen
    assert cfg.sources["host_mpi"].endswith(source)
    assert config.option_fields(cfg)["host_mpi"] == found


def test_the_environment_chooses_too_and_a_users_table_replaces_the_sites(
    env: dict[str, str],
) -> None:
    write(env["MPIDOCK_SITE_CONFIG"], SITE)
    write(env["MPIDOCK_USER_CONFIG"], SITE.replace("5.0.2", "5.0.3"))
    cfg = config.load(env | {"MPIDOCK_HOST_MPI": "mpich5"}, {}, "/home/ada")
    found = config.host_mpi(cfg)
    assert found is not None
    assert found.version == "5.0.3"
    assert found.source == f"{env['MPIDOCK_USER_CONFIG']}:1"


def test_an_unknown_host_mpi_lists_the_declared_ones(env: dict[str, str]) -> None:
    write(env["MPIDOCK_SITE_CONFIG"], SITE)
    cfg = config.load(env, {"host_mpi": "mpich6"}, "/home/ada")
    with pytest.raises(UsageError) as caught:
        config.host_mpi(cfg)
    assert str(caught.value).startswith(
        "unknown host MPI 'mpich6' (option --host-mpi) (hint: declared: impi, mpich5"
    )


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('[host_mpi.x]\npath = "/p"\nfamily = "lam"\nabi = "libmpi.so.1"\nversion = "1"\n',
         ":3: family: expected one of openmpi, mpich, intel, got string 'lam'"),
        ('[host_mpi.x]\npath = "p"\n', ":2: path: expected an absolute path, got 'p'"),
        ('[host_mpi.x]\npath = "/p"\nfamily = "mpich"\nabi = "mpi"\nversion = "1"\n',
         ":4: abi: expected a soname, got 'mpi'"),
        ('[host_mpi.x]\npath = "/p"\nfamily = "mpich"\nabi = "libmpi.so.12"\nversion = "1"\n'
         'check = "minor"\n', ":6: check: expected one of major, full, strict"),
        ('[host_mpi.x]\npath = "/p"\nlibs = ["rel"]\n', ":3: libs: expected absolute paths"),
        ('[host_mpi.x]\npath = "/p"\npaht = "/q"\n', ":3: unknown key 'paht'"),
        ('[host_mpi.x]\npath = "/p"\nfamily = "mpich"\n', ":1: host MPI 'x' has no abi, version"),
        ('[host_mpi."a b"]\npath = "/p"\n', ":1: bad host MPI 'a b'"),
    ],
)  # fmt: skip
def test_a_bad_table_is_one_error_with_file_and_line(
    env: dict[str, str], text: str, said: str
) -> None:
    write(env["MPIDOCK_SITE_CONFIG"], text)
    with pytest.raises(ConfigError) as caught:
        config.load(env, {}, "/home/ada")
    assert str(caught.value).startswith(env["MPIDOCK_SITE_CONFIG"] + said), str(caught.value)
    assert "\n" not in str(caught.value)


def test_slurm_entry_takes_host_mpi(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    write(env["MPIDOCK_SITE_CONFIG"], SITE)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MPIDOCK_HOST_MPI", raising=False)
    parser = argparse.ArgumentParser()
    entry.add_launch_options(parser)
    args = parser.parse_args(["--image", "i", "--host-mpi", "mpich5", "--", "./app"])
    assert entry.options(args, "/home/ada").host_mpi == replace(
        MPICH5, source=f"{env['MPIDOCK_SITE_CONFIG']}:1"
    )


def test_the_testbeds_site_file_declares_its_host_mpis(env: dict[str, str]) -> None:
    versions = {"mpich5": "5.0.2", "openmpi5": "5.0.11"}
    Path(env["MPIDOCK_SITE_CONFIG"]).write_text(testbed_hostmpi.site_text(versions))
    cfg = config.load(env | {"MPIDOCK_HOST_MPI": "mpich5"}, {}, "/home/ada")
    assert config.host_mpi(cfg) == replace(MPICH5, source=f"{env['MPIDOCK_SITE_CONFIG']}:3")
    ompi = "/opt/mpidock/host-mpi/openmpi5"
    assert cfg.host_mpis["openmpi5"] == HostMpi(
        name="openmpi5", path=ompi, family=OPENMPI, abi="libmpi.so.40", version="5.0.11",
        libs=(f"{ompi}/lib/openmpi",), source=f"{env['MPIDOCK_SITE_CONFIG']}:11",
    )  # fmt: skip


def test_a_host_mpi_missing_on_the_leaders_node_is_refused_before_the_probe(
    tmp_path: Path,
) -> None:
    host = replace(MPICH5, path=str(tmp_path / "none"), source="site.toml:1")
    plan = build_plan(
        SlurmEnv.from_environ(STEP), replace(OPTS, host_mpi=host), ALICE, cwd="/home/alice",
        image=OPTS.image, flavor=MPICH, network=NET,
    )  # fmt: skip
    wanted = Wanted(image="vendor/app:1", image_id="sha256:" + "0" * 64, store=str(tmp_path))
    with pytest.raises(HostMpiRefused) as caught:
        injection.Check(None, plan, host)(wanted)  # no engine: the probe never runs
    assert str(caught.value) == (
        f"sim1: --host-mpi mpich5: {tmp_path}/none/bin/mpiexec is not on sim1 (hint: install it "
        f"at {tmp_path}/none on every node, or fix site.toml:1)"
    )


def test_host_mpi_with_the_pmix_launch_is_one_line(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write(env["MPIDOCK_SITE_CONFIG"], SITE)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("MPIDOCK_HOST_MPI", "MPIDOCK_LAUNCH"):
        monkeypatch.delenv(name, raising=False)
    argv = ["slurm-entry", "--launch", "pmix", "--host-mpi", "mpich5", "--image", "i", "--", "x"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "mpidock: error: --host-mpi mpich5 works with --launch ssh only (hint: leave out "
        "--launch pmix, or --host-mpi to run the image's own MPI)\n"
    )
