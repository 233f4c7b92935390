"""mpidock containerize's pure part: ldd's and dpkg-query's answers read, the Dockerfile
against a golden file, and a tag that follows the image's content and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from launcher.containerize.plan import (
    LIB_DIR,
    TAG_REPO,
    ContainerizeError,
    ImagePlan,
    Library,
    candidates,
    make_plan,
    owner,
    packages_for,
    parse_dpkg_search,
    parse_ldd,
)

# `ldd` of the C ring compiled with Debian 12's mpicc, as printed on the development host.
LDD_RING = """\
\tlinux-vdso.so.1 (0x00007f9c08a47000)
\tlibmpi.so.40 => /lib/x86_64-linux-gnu/libmpi.so.40 (0x00007f9c088f1000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f9c0870f000)
\tlibopen-pal.so.40 => /lib/x86_64-linux-gnu/libopen-pal.so.40 (0x00007f9c0859c000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f9c08a49000)
\tlibhome.so => /home/ann/my libs/libhome.so (0x00007f9c08403000)
"""
# `dpkg-query -S` of those paths, both merged-/usr spellings, stdout and stderr together.
DPKG = """\
libopenmpi3:amd64: /usr/lib/x86_64-linux-gnu/libmpi.so.40
libc6:amd64: /lib/x86_64-linux-gnu/libc.so.6
libopenmpi3:amd64, libopenmpi-dev:amd64: /usr/lib/x86_64-linux-gnu/libopen-pal.so.40
diversion by dash from: /bin/sh
diversion by dash to: /bin/sh.distrib
dash: /bin/sh
dpkg-query: no path found matching pattern /lib/x86_64-linux-gnu/libmpi.so.40
dpkg-query: no path found matching pattern /home/ann/my libs/libhome.so
"""
SUMS = {"bin/ring": "a" * 64, "libs/libhome.so": "b" * 64}


def test_ldd_lines_give_each_library_with_a_file() -> None:
    libs = parse_ldd("ring", LDD_RING)
    assert libs == (
        Library("libmpi.so.40", "/lib/x86_64-linux-gnu/libmpi.so.40"),
        Library("libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"),
        Library("libopen-pal.so.40", "/lib/x86_64-linux-gnu/libopen-pal.so.40"),
        Library("ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2"),
        Library("libhome.so", "/home/ann/my libs/libhome.so"),
    )
    assert all("vdso" not in lib.name for lib in libs)  # the vDSO has no file to install


def test_a_library_ldd_cannot_find_is_one_line_naming_it() -> None:
    text = LDD_RING + "\tlibgone.so.2 => not found\n\tlibalso.so => not found\n"
    with pytest.raises(ContainerizeError) as err:
        parse_ldd("./app", text)
    assert err.value.message == "./app: ldd finds no libgone.so.2, libalso.so"
    assert "\n" not in str(err.value)
    assert "LD_LIBRARY_PATH" in err.value.hint


@pytest.mark.parametrize("text", ["\tnot a dynamic executable\n", "\tstatically linked\n"])
def test_a_static_binary_is_one_line(text: str) -> None:
    with pytest.raises(ContainerizeError) as err:
        parse_ldd("/opt/st", text)
    assert err.value.message == "/opt/st is statically linked: it needs no libraries"
    assert "--image" in err.value.hint


def test_dpkg_answers_drop_the_architecture_diversions_and_unowned_paths() -> None:
    owners = parse_dpkg_search(DPKG)
    assert owners == {
        "/usr/lib/x86_64-linux-gnu/libmpi.so.40": "libopenmpi3",
        "/lib/x86_64-linux-gnu/libc.so.6": "libc6",
        "/usr/lib/x86_64-linux-gnu/libopen-pal.so.40": "libopenmpi3",  # the first of two
        "/bin/sh": "dash",  # not the diversion's "dash" from its "from:" line
        # dpkg-query's own complaint is a line with ": " too; its "path" matches no file
        "no path found matching pattern /lib/x86_64-linux-gnu/libmpi.so.40": "dpkg-query",
        "no path found matching pattern /home/ann/my libs/libhome.so": "dpkg-query",
    }
    assert "/bin/sh.distrib" not in owners


def test_merged_usr_paths_are_looked_up_both_ways_and_unowned_stays_none() -> None:
    owners = parse_dpkg_search(DPKG)
    mpi = "/lib/x86_64-linux-gnu/libmpi.so.40"
    assert owner(owners, candidates(mpi, mpi)) == "libopenmpi3"  # dpkg says /usr/lib
    home = "/home/ann/my libs/libhome.so"
    assert owner(owners, candidates(home, home)) is None
    link = candidates("/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1.2.13")
    assert link == (
        "/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/x86_64-linux-gnu/libz.so.1.2.13", "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
    )  # fmt: skip


def test_packages_add_ssh_and_the_mpis_launcher_each_once() -> None:
    assert packages_for(["libopenmpi3", "libc6", "libopenmpi3"]) == (
        "libc6", "libopenmpi3", "openmpi-bin", "openssh-client", "openssh-server",
    )  # fmt: skip
    assert "mpich" in packages_for(["libmpich12"])


def _plan(**change: Any) -> ImagePlan:
    args: dict[str, Any] = {
        "base": "debian:bookworm",
        "base_id": "sha256:" + "1" * 64,
        "binaries": ["/home/ann/ring"],
        "packages": ["libopenmpi3", "libc6"],
        "unowned": [Library("libhome.so", "/home/ann/my libs/libhome.so")],
        "sums": SUMS,
    }
    return make_plan(**(args | change))


def test_the_dockerfile_is_the_golden_one(golden: Callable[[str, str], None]) -> None:
    golden("Dockerfile.containerize", _plan().dockerfile)


def test_without_unowned_libraries_there_is_no_library_step() -> None:
    text = _plan(unowned=[], sums={"bin/ring": "a" * 64}).dockerfile
    assert LIB_DIR not in text
    assert 'COPY ["bin/ring", "/usr/local/bin/ring"]' in text


def test_same_inputs_give_the_same_tag_and_any_change_another() -> None:
    tag = _plan().tag
    assert tag.startswith(f"{TAG_REPO}:")
    assert len(tag) == len(TAG_REPO) + 17
    assert _plan().tag == tag
    # The packages' order as found does not matter: they are a set.
    assert _plan(packages=["libc6", "libopenmpi3"]).tag == tag
    changed = [
        _plan(sums=SUMS | {"bin/ring": "c" * 64}),  # the binary rebuilt
        _plan(sums=SUMS | {"libs/libhome.so": "c" * 64}),  # the home's library rebuilt
        _plan(packages=["libopenmpi3", "libc6", "libz1"]),
        _plan(base_id="sha256:" + "2" * 64),  # the base re-pulled
        _plan(binaries=["/home/ann/ring2"], sums={"bin/ring2": "a" * 64} | SUMS),
    ]
    tags = {p.tag for p in changed}
    assert len(tags) == len(changed)
    assert tag not in tags
    assert _plan(tag="lab/ring:1").tag == "lab/ring:1"


def test_the_hosts_paths_never_reach_the_dockerfile() -> None:
    weird = '/tmp/it\'s a "dir" $(rm -rf ~)/`x`'
    plan = make_plan(
        "debian:bookworm", "sha256:" + "1" * 64, [f"{weird}/ring"], ["libc6"],
        [Library("libq.so", f"{weird}/libq.so")], {"bin/ring": "a" * 64, "libs/libq.so": "b" * 64},
    )  # fmt: skip
    assert plan.binaries == (("ring", f"{weird}/ring"),)
    assert "tmp" not in plan.dockerfile
    assert "$(" not in plan.dockerfile
    assert "'" not in plan.dockerfile
    assert "`" not in plan.dockerfile


@pytest.mark.parametrize("name", ["my app", "a'b", 'a"b', "a$b", "a\nb"])
def test_a_binary_name_that_is_not_plain_is_one_line(name: str) -> None:
    with pytest.raises(ContainerizeError) as err:
        make_plan("debian:bookworm", "x", [f"/tmp/{name}"], [], [], {})
    assert "is not plain" in str(err.value)
    assert "rename it" in err.value.hint


def test_two_binaries_with_one_name_are_one_line() -> None:
    with pytest.raises(ContainerizeError, match="two binaries named app"):
        make_plan("debian:bookworm", "x", ["/a/app", "/b/app"], [], [], {})
