"""Personalized images without Docker: keys, tags, the Dockerfile and its sh script."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

import pytest

from launcher.images import PERSONALIZE_SH, dockerfile, identity_key, personal_tag
from launcher.plan import Identity
from tests.conftest import require
from tests.unit.samples import ALICE

Golden = Callable[[str, str], None]

BASE = "sha256:" + "0123456789abcdef" * 4
# Quotes, spaces, '$' and a backslash: none of it may be read as Dockerfile or shell syntax.
WEIRD = Identity(
    user="o'brien",
    uid=70001,
    gid=70001,
    group="domain users",
    groups=(("a $b", 3000), ('c"d\\e', 3001)),
    home="/home/o'brien x",
    shell="/bin/sh",
)
# Another value for each field of Identity.
CHANGED = {
    "user": "bob",
    "uid": 1001,
    "gid": 1001,
    "group": "staff",
    "groups": (("docker", 998),),
    "home": "/home/alice2",
    "shell": "/bin/sh",
}
# Docker's reference grammar: repository path component, then tag.
TAG = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def test_identity_key_is_short_hex_and_stable() -> None:
    key = identity_key(ALICE)
    assert re.fullmatch(r"[0-9a-f]{12}", key)
    assert identity_key(replace(ALICE)) == key


def test_changed_covers_every_field() -> None:
    assert set(CHANGED) == {f.name for f in fields(Identity)}


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_identity_key_changes_with_every_field(name: str) -> None:
    assert identity_key(replace(ALICE, **{name: CHANGED[name]})) != identity_key(ALICE)


def test_personal_tag() -> None:
    tag = personal_tag(BASE, ALICE)
    assert tag == f"mpidock-personal:0123456789ab-{identity_key(ALICE)}"
    assert TAG.fullmatch(tag)
    assert TAG.fullmatch(personal_tag(BASE, WEIRD))


def test_personal_tag_is_the_same_on_every_node() -> None:
    # Nodes compute it separately from the same facts; nothing random or local may enter.
    assert personal_tag(BASE, ALICE) == personal_tag(BASE, replace(ALICE))
    assert personal_tag(BASE, ALICE) == personal_tag(BASE.removeprefix("sha256:"), ALICE)


def test_personal_tag_differs_by_base_and_identity() -> None:
    other_base = "sha256:" + "fedcba9876543210" * 4
    tags = {
        personal_tag(BASE, ALICE),
        personal_tag(other_base, ALICE),
        personal_tag(BASE, replace(ALICE, uid=1001)),
        personal_tag(BASE, WEIRD),
    }
    assert len(tags) == 4


@pytest.mark.parametrize(("name", "ident"), [("", ALICE), (".weird", WEIRD)])
def test_dockerfile_golden(name: str, ident: Identity, golden: Golden) -> None:
    golden(f"Dockerfile.personal{name}", dockerfile(BASE, ident))


def instruction(text: str, keyword: str) -> str:
    [line] = [line for line in text.splitlines() if line.startswith(keyword + " ")]
    return line.removeprefix(keyword + " ")


@pytest.mark.parametrize("ident", [ALICE, WEIRD])
def test_dockerfile_passes_values_as_exec_form_arguments(ident: Identity) -> None:
    text = dockerfile(BASE, ident)
    assert len(text.splitlines()) == 7  # the script never spills onto further lines
    run = json.loads(instruction(text, "RUN"))
    assert run[:4] == ["/bin/sh", "-c", PERSONALIZE_SH, "personalize"]
    assert run[4:] == [
        ident.user, str(ident.uid), str(ident.gid), ident.group, ident.home, ident.shell,
        *[f"{name}:{gid}" for name, gid in ident.groups],
    ]  # fmt: skip


def test_dockerfile_builds_as_root_and_runs_as_the_user() -> None:
    text = dockerfile(BASE, ALICE)
    assert text.splitlines()[:2] == [f"FROM {BASE}", "USER 0:0"]
    assert text.splitlines()[-3:] == ["USER 1000:1000", "ENTRYPOINT []", "CMD []"]
    label = instruction(text, "LABEL")
    assert f'org.mpidock.personal.base="{BASE}"' in label
    assert f'org.mpidock.personal.identity="{identity_key(ALICE)}"' in label


# --- the personalization script, run by the local sh ------------------------------------
#
# The script edits /etc directly and takes no root prefix, so it runs here with its /etc/
# paths redirected into a temporary directory; its logic is unchanged.

PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
ubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash
alice:x:1500:1500::/home/old:/bin/sh
"""
# The last line has no newline, as some images ship it.
GROUP = "root:x:0:\nubuntu:x:1000:\nrender:x:998:\nhpc:x:2500:bob\nalice:x:1500:"
SHADOW = "root:*:19000:0:99999:7:::\nalice:$6$old$hash:19000:0:99999:7:::\n"


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name, text, mode in [("passwd", PASSWD, 0o644), ("group", GROUP, 0o644),
                             ("shadow", SHADOW, 0o640)]:  # fmt: skip
        path = root / "etc" / name
        path.write_text(text)
        path.chmod(mode)
    return root


def personalize(root: Path, ident: Identity) -> None:
    sh = shutil.which("sh")
    require(sh is not None, "no sh on this machine", "install a POSIX shell")
    assert sh is not None
    paths = set(re.findall(r"/[a-z]+/[a-z]+", PERSONALIZE_SH))
    assert paths == {"/bin/sh", "/etc/passwd", "/etc/group", "/etc/shadow"}, "new paths?"
    script = PERSONALIZE_SH.replace("/etc/", f"{root}/etc/")
    args = [ident.user, str(ident.uid), str(ident.gid), ident.group, ident.home, ident.shell]
    args += [f"{name}:{gid}" for name, gid in ident.groups]
    subprocess.run([sh, "-c", script, "personalize", *args], check=True, timeout=30)


def lines(root: Path, name: str) -> list[str]:
    return (root / "etc" / name).read_text().splitlines()


def test_personalize_replaces_clashing_entries(etc: Path) -> None:
    personalize(etc, replace(ALICE, shell="/bin/sh"))
    assert lines(etc, "passwd") == [
        "root:x:0:0:root:/root:/bin/bash",
        "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin",
        "alice:x:1000:1000::/home/alice:/bin/sh",
    ]
    assert lines(etc, "group") == [
        "root:x:0:",
        "alice:x:1000:",
        "docker:x:998:alice",
        "hpc:x:2000:alice",
    ]
    assert lines(etc, "shadow") == [
        "root:*:19000:0:99999:7:::",
        "alice:*:19000:0:99999:7:::",
    ]
    # No temporary files left behind.
    assert {p.name for p in (etc / "etc").iterdir()} == {"passwd", "group", "shadow"}


def test_personalize_keeps_files_in_place(etc: Path) -> None:
    before = {n: os.stat(etc / "etc" / n) for n in ("passwd", "group", "shadow")}
    personalize(etc, ALICE)
    for name, old in before.items():
        new = os.stat(etc / "etc" / name)
        assert (new.st_ino, new.st_mode) == (old.st_ino, old.st_mode), name


def test_personalize_falls_back_to_sh_for_a_missing_shell(etc: Path) -> None:
    personalize(etc, replace(ALICE, shell="/no/such/shell"))
    assert lines(etc, "passwd")[-1] == "alice:x:1000:1000::/home/alice:/bin/sh"


def test_personalize_takes_weird_values_literally(etc: Path) -> None:
    personalize(etc, WEIRD)
    assert lines(etc, "passwd")[-1] == "o'brien:x:70001:70001::/home/o'brien x:/bin/sh"
    assert lines(etc, "group")[-3:] == [
        "domain users:x:70001:",
        "a $b:x:3000:o'brien",
        "c\"d\\e:x:3001:o'brien",
    ]


def test_personalize_without_shadow_or_files(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    personalize(tmp_path, replace(ALICE, shell="/bin/sh"))
    assert lines(tmp_path, "passwd") == ["alice:x:1000:1000::/home/alice:/bin/sh"]
    assert lines(tmp_path, "group") == ["alice:x:1000:", "docker:x:998:alice", "hpc:x:2000:alice"]
    assert not (tmp_path / "etc" / "shadow").exists()
