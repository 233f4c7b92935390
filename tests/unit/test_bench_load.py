"""bench load's count of a strace: job-directory calls by kind, engine API requests."""

from __future__ import annotations

from pathlib import Path

from bench.load import command, count
from bench.model import measured_load

J = "/h/.mpidock/jobs/u/1.0"
TRACE = f"""11344 openat(AT_FDCWD</tmp>, "{J}/a.tmp", O_WRONLY|O_CREAT, 0666) = 3<{J}/a.tmp>
11344 newfstatat(3<{J}/a.tmp>, "", {{st_mode=S_IFREG|0644, ...}}, AT_EMPTY_PATH) = 0
11344 rename("{J}/a.tmp", "{J}/a") = 0
11344 newfstatat(AT_FDCWD</tmp>, "{J}/stop", 0x7fff38382920, 0) = -1 ENOENT (No such file)
11350 statx(AT_FDCWD, "{J}/beat", AT_STATX_SYNC_AS_STAT, STATX_ALL, <unfinished ...>
11350 <... statx resumed>{{stx_mask=STATX_BASIC_STATS, ...}}) = 0
11344 getdents64(3<{J}>, 0x27c187a0 /* 3 entries */, 32768) = 72
11344 unlink("{J}/a") = 0
11344 newfstatat(AT_FDCWD</tmp>, "/usr/lib/python3/dist-packages/docker", 0x7ff, 0) = 0
11344 openat(AT_FDCWD</h/work>, "/lib/x86_64-linux-gnu/libc.so.6", O_RDONLY) = 3</usr/lib/libc>
11344 sendto(3<UNIX-STREAM:[8009027->8010003]>, "GET /version HTTP/1.1\\r\\n"..., 148, 0) = 148
11344 sendto(5<UNIX-STREAM:[8009044]>, "POST /v1.41/containers/create?name=m"..., 196, 0) = 196
11344 sendto(5<UNIX-STREAM:[8009044]>, "{{\\"Image\\": \\"mpidock/openmpi\\""..., 900, 0) = 900
[pid 11351] sendto(6<UNIX-STREAM:[8009050]>, "DELETE /v1.41/containers/abc?force"..., 120, 0) = 120
"""


def test_job_directory_calls_are_counted_by_kind_and_requests_once_each() -> None:
    assert count(TRACE.splitlines(), shared="/h/") == {
        "stat": 3, "open": 1, "rename": 1, "listdir": 1, "other": 1, "shared": 7, "api": 3,
    }  # fmt: skip


def test_the_traced_command_passes_the_launch_through_unquoted_arguments() -> None:
    argv = command("pmix", None)
    assert argv[:2] == ["srun", "--mpi=pmix"]
    assert argv[argv.index("--launch") + 1] == "pmix"
    traced = command("ssh", Path("/h/traces"))
    assert traced[:3] == ["srun", "sh", "-c"]
    assert traced[4:7] == ["/h/traces", "mpidock", "slurm-entry"]
    assert '"$@"' in traced[3]


def test_the_model_extrapolates_the_measured_load_of_the_whole_job() -> None:
    def point(mode: str, n: int, job_dir: float, shared: float) -> dict[str, object]:
        return {"mode": mode, "nodes": n, "fs_ops_per_node_per_s": job_dir,
                "shared_ops_per_node_per_s": shared}  # fmt: skip

    points = [point("ssh", n, 40.0, 45.0) for n in (1, 3, 8)]
    points += [point("pmix", n, 0.0, 2.0) for n in (1, 3, 8)]
    found = measured_load({"counts": [1, 3, 8], "points": points})
    assert found["ssh, job dir"] == {16: 640, 64: 2560, 256: 10240, 1024: 40960}
    assert found["ssh, shared"][1024] == 45 * 1024
    assert found["pmix, job dir"][1024] == 0
    assert found["pmix, shared"][64] == 128
