"""The engine seam: choosing an engine, Podman's checks before anything starts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from launcher import engines
from launcher.engines import podman, storage
from launcher.engines.base import Settings
from launcher.plan import ContainerSpec

SPEC = ContainerSpec(
    name="c", image="i", command=("x",), user="1500:1500", group_add=(27, 44),
    labels=(), mounts=(), working_dir="/", cpuset_cpus="0-1", mem_limit=1 << 30,
    cgroup_parent="/slurm/uid_1500/job_1",
)  # fmt: skip


def test_named_engines_are_chosen_without_starting_anything() -> None:
    assert engines.select("docker", "sim1").name == "docker"
    assert engines.select("podman", "sim1").name == "podman"


def test_auto_takes_docker_when_its_socket_is_usable(tmp_path: Path) -> None:
    sock = tmp_path / "docker.sock"
    sock.touch(mode=0o600)
    assert engines.auto({"DOCKER_HOST": f"unix://{sock}"}, "sim1") == "docker"


def test_auto_without_docker_or_podman_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no podman on it
    with pytest.raises(engines.EngineUnavailable) as caught:
        engines.auto({"DOCKER_HOST": f"unix://{tmp_path}/none.sock"}, "sim2")
    assert caught.value.node == "sim2"
    assert "install podman" in caught.value.hint


def test_podman_missing_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    engine = engines.select("podman", "sim3")
    with pytest.raises(engines.EngineUnavailable, match="podman is not installed"):
        engine.client()
    engine.close()


def test_podman_fit_drops_host_groups_and_slurm_cgroup() -> None:
    fitted = engines.select("podman", "sim1").fit(SPEC, None)  # type: ignore[arg-type]
    assert fitted.group_add == ()
    assert fitted.cgroup_parent == ""
    assert fitted.user == SPEC.user


def test_subuid_ranges_by_name_or_uid() -> None:
    text = "ada:100000:65536\n1501:200000:65536\nbob:300000:10\n"
    assert storage.subid_count(text, "ada", 1500) == 65536
    assert storage.subid_count(text, "eve", 1501) == 65536
    assert storage.subid_count(text, "bob", 1502) == 10


def test_no_subuid_range_names_the_fix(tmp_path: Path) -> None:
    subuid = tmp_path / "subuid"
    subuid.write_text("other:100000:65536\n")
    with pytest.raises(engines.EngineUnavailable) as caught:
        storage.require_subids(subuid, "ada", 1500, "sim2")
    assert "usermod --add-subuids" in caught.value.hint
    assert caught.value.node == "sim2"


def test_storage_root_is_made_private_per_node(tmp_path: Path) -> None:
    root = storage.prepare_root(f"{tmp_path}/p-{{uid}}", os.getuid(), "ada", "sim1")
    assert root == tmp_path / f"p-{os.getuid()}" / "sim1"
    assert root.stat().st_mode & 0o777 == 0o700


def test_storage_root_through_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "sim1").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(engines.EngineUnavailable, match="is a symlink"):
        storage.prepare_root(f"{tmp_path}/p/{{node}}", os.getuid(), "ada", "sim1")


@pytest.mark.usefixtures("root")
def test_storage_root_of_another_user_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / "p" / "sim1"
    planted.mkdir(parents=True)
    os.chown(planted, 1504, 1504)
    with pytest.raises(engines.EngineUnavailable, match="is not a directory of UID 0"):
        storage.prepare_root(f"{tmp_path}/p/{{node}}", 0, "root", "sim1")


def test_storage_on_nfs_is_refused() -> None:
    mountinfo = (
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n40 22 0:50 / /shared rw - nfs4 server:/export rw\n"
    )
    assert storage.fs_type(Path("/shared/x"), mountinfo) == "nfs4"
    assert storage.fs_type(Path("/var/tmp"), mountinfo) == "ext4"


def test_service_argv_and_config_are_rootless_and_keep_the_id(tmp_path: Path) -> None:
    layout = storage.Layout(tmp_path)
    argv = podman.service_argv("podman", "/usr/sbin/runc", layout, tmp_path / "api.sock")
    assert argv[:5] == ["podman", "--runtime", "/usr/sbin/runc", "--cgroup-manager", "cgroupfs"]
    assert argv[-4:] == ["service", "--time", "0", f"unix://{tmp_path}/api.sock"]
    assert 'userns = "keep-id"' in podman.containers_conf("/usr/bin/catatonit")
    env = podman.service_env({"DOCKER_HOST": "x", "PATH": "/bin"}, layout)
    assert env == {
        "PATH": "/bin",
        "XDG_RUNTIME_DIR": str(tmp_path / "xdg"),
        "CONTAINERS_CONF": str(tmp_path / "containers.conf"),
    }


def test_default_storage_is_node_local_and_per_user() -> None:
    assert "{uid}" in Settings().podman_root
    assert storage.expand("/scratch/pod", 1500, "ada", "sim2") == "/scratch/pod/sim2"


def test_a_killed_jobs_socket_and_log_are_found_and_a_live_ones_kept(tmp_path: Path) -> None:
    ended = subprocess.Popen(["true"])
    ended.wait()
    layout = storage.Layout(tmp_path)
    for pid in (ended.pid, os.getpid()):
        layout.socket(pid).touch()
        layout.log(pid).touch()
    (tmp_path / "api-x.sock").touch()  # not ours to judge
    assert layout.stale() == sorted([layout.socket(ended.pid), layout.log(ended.pid)])
