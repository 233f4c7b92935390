"""Every command resolves its settings one way: `mpidock images`, `images prune` and `reap`
take image_store and job_root from the configuration files, as slurm-entry does."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import docker
import pytest

from tests.conftest import MPIDOCK


@pytest.fixture
def site(tmp_path: Path, client: docker.DockerClient) -> dict[str, str]:
    """The environment of a command whose site file names a store and a job root in tmp;
    no user file and no MPIDOCK_* variable of the caller's."""
    (tmp_path / "store").mkdir()
    (tmp_path / "jobs").mkdir()
    path = tmp_path / "site.toml"
    path.write_text(f'image_store = "{tmp_path}/store"\njob_root = "{tmp_path}/jobs"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPIDOCK_")}
    return env | {"MPIDOCK_SITE_CONFIG": str(path), "MPIDOCK_USER_CONFIG": str(tmp_path / "no")}


def mpidock(*words: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MPIDOCK, *words], env=env, capture_output=True, text=True, timeout=120)


def test_images_and_prune_use_the_image_store_of_the_site_file(
    site: dict[str, str], tmp_path: Path
) -> None:
    listed = mpidock("images", "--json", env=site)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["store"] == f"{tmp_path}/store"
    dead = tmp_path / "store" / f".{'0' * 64}.tar.1234.partial"  # a dead writer's, 2 days old
    dead.write_bytes(b"x" * 100)
    os.utime(dead, (time.time() - 2 * 86400,) * 2)
    pruned = mpidock("images", "prune", "--older-than", "1d", "--dry-run", env=site)
    assert pruned.returncode == 0, pruned.stderr
    assert "would remove" in pruned.stdout
    assert dead.name in pruned.stdout
    assert dead.exists()


def test_reap_uses_the_job_root_of_the_site_file(site: dict[str, str], tmp_path: Path) -> None:
    left = tmp_path / "jobs" / "root" / "4242424"  # job_root/<user>/<job>
    left.mkdir(parents=True)
    done = mpidock("reap", "--job", "4242424", "--dry-run", env=site)
    assert done.returncode == 0, done.stderr
    assert f"would remove job dir {left} of job 4242424" in done.stdout
    assert left.exists()
