"""The job directory on a shared job root: per-user directories, and nothing in them used
before lstat says it is the user's own, real and private; each worker's port."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from launcher import jobdir, jobfiles, readiness, worker
from launcher.errors import JobDirError, JobDirExists, NodeFailed, WorkerFailed
from launcher.keys import known_hosts_for, ssh_config
from launcher.plan import LaunchPlan, Options, build_plan
from launcher.slurm import SlurmEnv
from tests.unit.samples import ALICE, STEP, WORKER

HOST_PUB = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBHyitaghIqhezZeE1g05zb0s2whCnjxL7u5wo789JeR mpidock-host"
)


@pytest.fixture
def job(tmp_path: Path) -> jobdir.JobDir:
    job = jobdir.make_job_dir(jobdir.job_path(tmp_path, "alice", "42.0"))
    jobdir.write_keys(job, "alice")
    return job


def test_the_job_directory_is_in_a_private_directory_of_the_user(
    tmp_path: Path, job: jobdir.JobDir
) -> None:
    assert job.path == tmp_path / "alice" / "42.0"
    for path in (job.path.parent, job.path):
        assert (path.stat().st_uid, path.stat().st_mode & 0o777) == (os.geteuid(), 0o700)
    jobdir.verify_job_dir(job)
    for path in (job.host_key, job.authorized_keys, job.user_key):
        jobfiles.verify_file(path, private=True)
    with pytest.raises(JobDirExists):
        jobdir.make_job_dir(job.path)


def test_a_user_directory_someone_else_owns_is_refused(tmp_path: Path) -> None:
    (tmp_path / "alice").mkdir(mode=0o700)
    stranger = os.geteuid() + 1
    with pytest.raises(JobDirError, match=f"owned by UID {os.geteuid()}, not {stranger}"):
        jobdir.ensure_user_dir(tmp_path / "alice", uid=stranger)


@pytest.mark.usefixtures("root")
def test_a_real_foreign_user_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    planted = tmp_path / "alice"
    planted.mkdir(mode=0o700)
    os.chown(planted, 1504, 1504)
    with pytest.raises(JobDirError, match="owned by UID 1504") as info:
        jobdir.make_job_dir(planted / "42.0")
    assert "planted" in info.value.hint
    assert list(planted.iterdir()) == []


def test_a_symlinked_user_directory_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "alice").symlink_to(elsewhere)
    with pytest.raises(JobDirError, match="is a symlink, not a directory"):
        jobdir.make_job_dir(tmp_path / "root" / "alice" / "42.0")
    assert list(elsewhere.iterdir()) == []


def test_a_job_directory_open_to_others_is_refused(job: jobdir.JobDir) -> None:
    job.path.chmod(0o770)
    with pytest.raises(JobDirError, match="has mode 0770, not 0700"):
        jobdir.verify_job_dir(job)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "group-writable"])
def test_files_that_are_not_the_users_own_regular_files_are_refused(
    job: jobdir.JobDir, tmp_path: Path, kind: str
) -> None:
    target = job.authorized_keys
    target.unlink()
    if kind == "symlink":
        (tmp_path / "planted").write_text("ssh-ed25519 AAAA attacker\n")
        target.symlink_to(tmp_path / "planted")
    elif kind == "fifo":
        os.mkfifo(target, 0o600)
    else:
        target.write_text("restrict ssh-ed25519 AAAA\n")
        target.chmod(0o620)
    with pytest.raises(JobDirError, match="mpidock does not trust it"):
        jobfiles.verify_file(target, private=True)


def test_a_fifo_report_neither_blocks_nor_is_read(job: jobdir.JobDir) -> None:
    os.mkfifo(job.ready_file("sim2"), 0o600)
    started = time.monotonic()
    with pytest.raises(JobDirError, match="FIFO"):
        jobfiles.read_report(job.ready_file("sim2"))
    assert time.monotonic() - started < 1


def test_reports_are_read_whole_or_not_at_all(job: jobdir.JobDir) -> None:
    assert jobfiles.read_report(job.ready_file("sim2")) is None
    jobfiles.write_file(job.ready_file("sim2"), '{"port": 20001', 0o600)
    assert jobfiles.read_report(job.ready_file("sim2")) is None
    jobfiles.write_file(job.ready_file("sim2"), '{"port": 20001}', 0o600)
    assert jobfiles.read_report(job.ready_file("sim2")) == {"port": 20001}
    (job.path / "planted").write_text('{"port": 1}')
    job.ready_file("sim3").symlink_to(job.path / "planted")
    with pytest.raises(JobDirError, match="cannot read"):
        jobfiles.read_report(job.ready_file("sim3"))


@pytest.mark.parametrize(("mode", "ok"), [(0o1777, True), (0o755, True), (0o777, False)])
def test_a_shared_job_root_needs_the_sticky_bit(tmp_path: Path, mode: int, ok: bool) -> None:
    root = tmp_path / "shared-jobs"
    root.mkdir()
    root.chmod(mode)
    if ok:
        jobdir.check_root(root, "alice", "sim1")
        return
    with pytest.raises(JobDirError, match="chmod 1777"):
        jobdir.check_root(root, "alice", "sim1")


@pytest.mark.usefixtures("root")
def test_a_job_root_another_user_owns_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "shared-jobs"
    root.mkdir(mode=0o1777)
    os.chown(root, 1504, 1504)
    with pytest.raises(JobDirError, match="belongs to UID 1504"):
        jobdir.check_root(root, "alice", "sim1")


def test_removal_outlasts_reports_written_while_it_runs(job: jobdir.JobDir) -> None:
    """A late worker's reports (ENOTEMPTY for the last rmdir) do not stop the removal."""
    stop = threading.Event()

    def late_reports() -> None:
        n, until = 0, time.monotonic() + 0.3  # a burst of reports, as late workers write
        while not stop.is_set() and time.monotonic() < until:
            try:
                fd = os.open(job.path / f"done.late{n}", os.O_CREAT | os.O_WRONLY, 0o600)
            except FileNotFoundError:
                return  # gone: a report never brings the directory back
            os.close(fd)
            n += 1

    writer = threading.Thread(target=late_reports)
    writer.start()
    try:
        time.sleep(0.05)
        jobdir.remove_job_dir(job.path)
    finally:
        stop.set()
        writer.join()
    assert not job.path.exists()


# --- ports: each worker's own, announced in its ready report ---------------------------------


def worker_plan(tmp_path: Path, port_range: tuple[int, int], port: int | None = None) -> LaunchPlan:
    opts = Options(image="solver:1", command=("./solver",), job_root=str(tmp_path))
    opts = replace(opts, port_range=port_range, port=port)
    env = SlurmEnv.from_environ({**STEP, **WORKER})
    return build_plan(env, opts, ALICE, cwd="/tmp", image="solver:1", flavor=None, network=None)


@pytest.fixture
def held() -> Iterator[int]:
    """A port something else listens on, as a squatter would."""
    with socket.socket() as squatter:
        squatter.bind(("0.0.0.0", 0))
        squatter.listen()
        yield squatter.getsockname()[1]


def test_a_worker_takes_the_preferred_port_when_free(tmp_path: Path, held: int) -> None:
    plan = replace(worker_plan(tmp_path, (held, held + 20)), port=held + 1)
    assert worker.free_port(plan) == held + 1


def test_a_taken_port_moves_the_worker_to_the_next_free_one(tmp_path: Path, held: int) -> None:
    plan = replace(worker_plan(tmp_path, (held - 5, held + 20)), port=held)
    chosen = worker.free_port(plan)
    assert held < chosen <= held + 20
    assert worker.free_port(plan, tried={chosen}) != chosen


def test_a_taken_pinned_port_fails_by_name(tmp_path: Path, held: int) -> None:
    plan = worker_plan(tmp_path, (20000, 29999), port=held)
    with pytest.raises(NodeFailed, match=f"port {held} is already in use") as info:
        worker.free_port(plan)
    assert "leave out --port" in info.value.hint


def test_the_leader_reads_each_workers_port() -> None:
    assert readiness.port_of("sim2", {"port": 20417}) == 20417
    for bad in ({}, {"port": "20417"}, {"port": 80}, {"port": True}):
        with pytest.raises(NodeFailed, match="no valid port"):
            readiness.port_of("sim2", bad)


def test_failures_are_found_from_one_listing_and_read_as_trusted(job: jobdir.JobDir) -> None:
    nodes = ("sim2", "sim3")
    readiness.raise_failures(job, nodes)  # nothing reported yet
    jobfiles.write_file(job.failed_file("sim3"), '{"error": "no sshd", "hint": "h"}', 0o600)
    assert readiness.listing(job) >= {"failed.sim3", "authorized_keys"}
    with pytest.raises(WorkerFailed, match="worker failed: no sshd") as failed:
        readiness.raise_failures(job, nodes)
    assert failed.value.node == "sim3"
    # a listing taken before the report came shows none yet; the next look's does
    readiness.raise_failures(job, nodes, frozenset())
    job.failed_file("sim2").symlink_to(job.path / "planted")  # listed, still lstat-checked
    with pytest.raises(JobDirError):
        readiness.raise_failures(job, ("sim2",))


def test_a_job_directory_gone_lists_as_empty(tmp_path: Path) -> None:
    gone = jobdir.JobDir(tmp_path / "gone")
    assert readiness.listing(gone) == frozenset()
    readiness.raise_failures(gone, ("sim2",))


def test_client_files_name_each_nodes_own_port() -> None:
    ports = {"sim1": 20042, "sim2": 20042, "sim3": 20043}
    assert known_hosts_for(ports, HOST_PUB) == (
        f"[sim1]:20042,[sim2]:20042 {' '.join(HOST_PUB.split()[:2])}\n"
        f"[sim3]:20043 {' '.join(HOST_PUB.split()[:2])}\n"
    )
    text = ssh_config(
        hosts=list(ports),
        port=20042,
        ports=ports,
        user="alice",
        identity="/k/i",
        known_hosts="/k/k",
    )
    # ssh keeps the first value it reads: sim3's own block comes before the shared one.
    assert text.index("Host sim3\n    Port 20043\n") < text.index("Host sim1 sim2 sim3\n")
    assert text.count("Port ") == 2
