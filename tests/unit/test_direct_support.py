"""How `mpidock check` reads an image's direct launch support from its probe, the proof's
step, and the direct launch's run record. The probe texts are those the example images
printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.direct import proof, record
from launcher.direct.plan import DirectPlan
from launcher.direct.support import Support, parse, proof_argv, proof_passed
from launcher.errors import NodeFailed
from launcher.record import file_name

OPENMPI4 = """\
lib /lib/x86_64-linux-gnu/libmpi.so.40
                MCA pmix: ext3x (MCA v2.1.0, API v2.0.0, Component v4.1.4)
                MCA pmix: isolated (MCA v2.1.0, API v2.0.0, Component v4.1.4)
                MCA pmix: flux (MCA v2.1.0, API v2.0.0, Component v4.1.4)
hello mpi-hello
hello python3 -m mpi4py.bench helloworld
"""
OPENMPI5 = """\
lib /opt/openmpi/lib/libmpi.so.40
links /opt/openmpi/lib/libmpi.so.40 libpmix.so.2
links /opt/openmpi/lib/libmpi.so.40 libpmix.so.2
lib /opt/openmpi/bin/../lib/libmpi.so.40
links /opt/openmpi/bin/../lib/libmpi.so.40 libpmix.so.2
hello mpi-hello
"""
MPICH4 = """\
lib /lib/x86_64-linux-gnu/libmpich.so.12
client /lib/x86_64-linux-gnu/libmpich.so.12 pmi1
hello mpi-hello
"""
MPICH5 = """\
lib /opt/mpich/lib/libmpi_abi.so.1
client /opt/mpich/lib/libmpi_abi.so.1 pmi1
client /opt/mpich/lib/libmpi_abi.so.1 pmi2
lib /opt/mpich/lib/libmpi.so.12
client /opt/mpich/lib/libmpi.so.12 pmi1
client /opt/mpich/lib/libmpi.so.12 pmi2
hello mpi-hello
"""
INTEL = """\
lib /opt/intelmpi/lib/libmpi_abi.so.1
client /opt/intelmpi/lib/libmpi_abi.so.1 pmi1
lib /opt/intelmpi/lib/libmpi.so.12
client /opt/intelmpi/lib/libmpi.so.12 pmi1
hello mpi-hello
"""


@pytest.mark.parametrize(
    ("text", "mode", "evidence"),
    [
        (OPENMPI4, "pmix", "Open MPI's pmix component ext3x"),
        (OPENMPI5, "pmix", "libmpi.so.40 links libpmix.so.2"),
        (MPICH4, "pmi2", "libmpich.so.12 has a PMI-1 client (simple PMI)"),
        (MPICH5, "pmi2", "libmpi.so.12 has a PMI-1 client (simple PMI) and a PMI-2 client"),
        (INTEL, "pmi2", "libmpi.so.12 has a PMI-1 client (simple PMI)"),
        ("", "neither", "no PMIx or PMI client (no libmpi.so.* found): use --launch ssh"),
    ],
)
def test_the_example_images_probes(text: str, mode: str, evidence: str) -> None:
    found = parse(text)
    assert (found.mode, found.evidence) == (mode, evidence)
    assert found.detail == f"{mode}: {evidence}"
    assert found.hello == (("mpi-hello",) if text else ())


def test_an_open_mpi_with_only_singleton_and_flux_components_has_neither() -> None:
    text = "lib /usr/lib/libmpi.so.40\n MCA pmix: isolated (...)\n MCA pmix: flux (...)\n"
    assert parse(text) == Support(
        "neither", "no PMIx or PMI client in libmpi.so.40: use --launch ssh"
    )


def test_slurms_pmi_libraries_and_open_mpis_s2_mean_pmi2() -> None:
    linked = "lib /usr/lib/libmpi.so.12\nlinks /usr/lib/libmpi.so.12 libpmi2.so.0\n"
    assert parse(linked).detail == "pmi2: libmpi.so.12 links libpmi2.so.0"
    s2 = "lib /usr/lib/libmpi.so.40\n MCA pmix: s2 (MCA v2.1.0)\n MCA pmix: isolated\n"
    assert parse(s2).detail == "pmi2: Open MPI's pmix component s2"


def test_pmix_wins_and_pmi_keywords_in_an_open_mpi_library_do_not_count() -> None:
    both = OPENMPI5 + "client /opt/openmpi/lib/libmpi.so.40 pmi1\n"
    assert parse(both).mode == "pmix"
    assert parse("lib /x/libmpi.so.40\nclient /x/libmpi.so.40 pmi1\n").mode == "neither"


def test_the_first_hello_is_taken_as_argv() -> None:
    text = "hello python3 -m mpi4py.bench helloworld\nhello mpi-hello\n"
    assert parse(text).hello == ("python3", "-m", "mpi4py.bench", "helloworld")


def test_the_proofs_step() -> None:
    found = parse(MPICH4)
    assert proof_argv(found, "mpidock/mpich", "docker", "/usr/bin/mpidock") == [
        "srun", "--mpi=pmi2", "-n", "2", "-N", "1", "--overcommit",
        "/usr/bin/mpidock", "slurm-entry", "--launch", "pmi2", "--engine", "docker",
        "--image", "mpidock/mpich", "--", "mpi-hello",
    ]  # fmt: skip
    assert proof_argv(parse(OPENMPI4), "a b")[7:] == [
        "mpidock", "slurm-entry", "--launch", "pmix", "--image", "a b", "--", "mpi-hello",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("code", "output", "passed"),
    [
        (0, "rank 0 of 2 on sim1 uid 1501 gid 1501\nrank 1 of 2 on sim1 uid 1501 gid 1501\n", True),
        (0, "Hello, World! I am process 1 of 2.\nHello ... process 0 of 2.\n", True),
        (0, "rank 0 of 1 on sim1\nrank 0 of 1 on sim1\n", False),  # two singletons
        (1, "rank 0 of 2\nrank 1 of 2\n", False),
    ],
)
def test_the_proof_needs_both_ranks_in_one_world(code: int, output: str, passed: bool) -> None:
    assert proof_passed(code, output) is passed


PLAN = DirectPlan(
    job_id="42", step_id="0", node="sim1", procid=0, localid=0, local_tasks=2,
    name="mpidock-42.0-direct-sim1", starts=True, container=None, command=("./app",),
    rank_env=(), pmix=None, share_dir="/tmp/x", image="mpidock/openmpi", image_store="",
    registry="",
)  # fmt: skip


def test_the_record_of_a_direct_step() -> None:
    data = record.build(
        PLAN, nodes=("sim1", "sim2"), engine={"engine": "docker"}, started=1.0, ended=2.5,
        timings={"image": 0.4, "container": 0.2}, code=3, error=None,
    )  # fmt: skip
    assert data["launch"] == "pmix"
    assert data["nodes"] == [{"node": "sim1"}, {"node": "sim2"}]
    assert data["container_start_s"] == {"sim1": 0.2}
    assert (data["exit_code"], data["error"], data["rank"]) == (3, None, 0)
    assert data["leader"]["node"] == "sim1"
    assert set(data) == {
        "job_id", "step_id", "launch", "started", "ended", "image", "engine", "nodes",
        "leader", "container_start_s", "rank", "exit_code", "error",
    }  # fmt: skip


def test_a_failed_step_records_the_error_and_its_status() -> None:
    failed = record.build(
        PLAN, nodes=("sim1",), engine={}, started=1.0, ended=2.0, timings={},
        code=None, error=NodeFailed("container gone", node="sim1"),
    )  # fmt: skip
    assert failed["container_start_s"] == {}
    assert failed["error"] == {"message": "container gone", "node": "sim1", "kind": "NodeFailed"}
    assert failed["exit_code"] == NodeFailed.exit_code
    assert record.exit_code(None, KeyboardInterrupt()) == record.INTERRUPTED
    assert record.exit_code(None, None) == record.INTERNAL_ERROR


def test_the_record_goes_to_the_runs_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MPIDOCK_RUNS_DIR", str(tmp_path / "runs"))
    record.write("/nonexistent", {"job_id": "42", "step_id": "3", "exit_code": 0})
    assert json.loads((tmp_path / "runs" / "42.3.json").read_text())["exit_code"] == 0
    assert [file_name("42", s) for s in ("0", "", None, "1")] == [
        "42.json", "42.json", "42.json", "42.1.json",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("found", "environ", "why"),
    [
        (parse(""), {"SLURM_JOB_ID": "7"}, "not tried: no direct launch for this image"),
        (Support("pmix", "x"), {"SLURM_JOB_ID": "7"}, "not tried: no MPI hello in the image"),
        (parse(OPENMPI4), {}, "not tried: needs a Slurm allocation (salloc -N 1"),
    ],
)
def test_a_proof_not_tried_is_a_note(found: Support, environ: dict[str, str], why: str) -> None:
    ok, detail = proof.prove(found, "mpidock/openmpi", "", 10, environ)
    assert ok is None
    assert detail.startswith(why)


def test_a_step_that_outlives_its_timeout_is_ended() -> None:
    code, out = proof.step(["sleep", "30"], 0.3, {"PATH": "/usr/bin:/bin"})
    assert (code, out) == (-1, "`sleep 30` still running after 0.3 s")
    code, out = proof.step(["sh", "-c", "echo rank 0 of 2; exit 3"], 10, {"PATH": "/bin"})
    assert (code, out) == (3, "rank 0 of 2\n")
    assert proof.step(["/nonexistent/srun"], 1, {})[0] == -1


def test_a_failed_steps_detail_is_its_first_error_else_its_last_line() -> None:
    out = "rank 0 of 2\nmpidock: error: sim1: no PMIx\nsrun: error: task 0: Exited\n"
    assert proof.said(out) == "mpidock: error: sim1: no PMIx"
    assert proof.said("one\ntwo\n\n") == "two"
    assert proof.said("") == "no output"


def test_the_container_start_comes_from_the_steps_record(tmp_path: Path) -> None:
    assert proof.container_start(tmp_path) == ""
    (tmp_path / "7.json").write_text(json.dumps({"container_start_s": {"sim1": 0.123}}))
    assert proof.container_start(tmp_path) == " (container started in 0.12 s)"
