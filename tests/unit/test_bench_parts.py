"""The benchmarks' pure parts: timings read from job output, fits, medians, hpcc's input."""

from __future__ import annotations

import pytest

from bench import comm, hpl, launch

OUTPUT = """\
T0 100.000000
mpidock: sim1 image: cached, 0 B, 0.01 s
rank 0 of 2 on sim1 uid 1501 gid 1501
rank 0 init 100.500000
rank 1 of 2 on sim2 uid 1501 gid 1501
rank 1 init 100.750000
T1 101.250000
"""


def test_times_run_from_the_first_mark_to_the_last_rank_and_the_end() -> None:
    assert launch.times(OUTPUT, 2) == {"init_s": 0.75, "end_s": 1.25}


def test_a_missing_stamp_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="3 init stamps"):
        launch.times(OUTPUT, 3)


def test_the_batch_script_marks_around_the_quoted_command() -> None:
    wrap = launch.timed_wrap(["mpirun", "a b", "--stamp"])
    assert wrap == 'echo "T0 $(date +%s.%N)"; mpirun \'a b\' --stamp; echo "T1 $(date +%s.%N)"'


@pytest.mark.parametrize(
    ("points", "expected"),
    [([(1, 1.0), (2, 1.5), (3, 2.0)], 0.5), ([(1, 1.0)], 0.0), ([(2, 3.0), (4, 3.0)], 0.0)],
)
def test_slope(points: list[tuple[int, float]], expected: float) -> None:
    assert launch.slope(points) == pytest.approx(expected)


def test_summary_of_samples_takes_medians_and_splits_off_the_first_remote_step() -> None:
    def sample(init: float, end: float, **more: object) -> dict[str, object]:
        return {"init_s": init, "end_s": end, **more}

    cost = {"sim1": {"max_rss_mb": 40.0, "cpu_s": 0.2}}
    samples = {
        ("native", 1): [sample(0.2, 0.3), sample(0.4, 0.5)],
        ("native", 2): [sample(0.3, 0.4)],
        ("container", 1): [sample(0.5, 0.8)],
        ("container", 2): [sample(1.0, 1.4, teardown={"sim1": 0.1}, self=cost)],
    }
    summary = launch.summarize(samples, 2)  # type: ignore[arg-type]
    assert summary["points"][0] == {
        "nodes": 1, "container_init_s": 0.5, "container_end_s": 0.8,
        "native_init_s": 0.3, "native_end_s": 0.4,
    }  # fmt: skip
    assert summary["overhead_s"] == {"1": 0.4, "2": 1.0}
    assert summary["growth_s_per_node"] == pytest.approx(0.6)
    assert summary["first_remote_step_s"] == pytest.approx(0.6)
    assert summary["teardown"] == {"sim1": 0.1}
    assert summary["self"] == {"sim1": {"max_rss_mb": 40.0, "cpu_s": 0.2}}


def test_median_curve_per_size() -> None:
    runs = [[[1, 10.0], [2, 20.0]], [[1, 30.0], [2, 10.0]], [[1, 20.0], [2, 40.0]]]
    assert comm.median_curve(runs) == [[1, 20.0], [2, 20.0]]


def test_hpccinf_has_hpl_dat_then_the_separator_on_line_32() -> None:
    lines = hpl.hpccinf(4000, nb=64, p=1, q=2).splitlines()
    assert len(lines) == 36
    assert lines[5].split()[0] == "4000"
    assert lines[7].split()[0] == "64"
    assert (lines[10].split()[0], lines[11].split()[0]) == ("1", "2")
    assert lines[31].startswith("##### This line (no. 32) is ignored")


def test_gflops_from_hpccs_summary() -> None:
    assert hpl.gflops("HPL_N=2000\nHPL_Tflops=0.00441\nStarDGEMM_Gflops=3\n") == 4.41
    with pytest.raises(RuntimeError, match="HPL_Tflops"):
        hpl.gflops("HPL did not run\n")
