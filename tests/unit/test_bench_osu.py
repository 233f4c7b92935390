"""bench.osu: OSU and mpi4py pingpong output read into curves, and curves compared.

The golden files are real output, captured natively on a development machine (2 cores
shared with a running testbed, Debian 12, Open MPI 4.1.4; root, hence the flag):

    mpicc -O2 -o mpidock-osu launcher/testbed/dockerfiles/src/mpi_osu.c
    mpirun --allow-run-as-root --oversubscribe -np 2 ./mpidock-osu latency    # osu_latency
    mpirun --allow-run-as-root --oversubscribe -np 2 ./mpidock-osu bw         # osu_bw
    mpirun --allow-run-as-root --oversubscribe -np 3 ./mpidock-osu bcast      # osu_bcast
    mpirun --allow-run-as-root --oversubscribe -np 3 ./mpidock-osu allreduce  # osu_allreduce
    mpirun --allow-run-as-root --oversubscribe -np 2 \\
        python3 -m mpi4py.bench pingpong -n 1048576                          # mpi4py_pingpong

(pingpong with mpi4py 4.1.2 from PyPI: Debian 12's python3-mpi4py 3.1.4 has none.) The
inline OMB texts below follow outputs that OMB 7.x itself printed.
"""

from __future__ import annotations

import re

import pytest

from bench.osu import Curve, parse, parse_mpi4py_pingpong, ratio
from tests.unit.conftest import GOLDEN

MIB = 1 << 20


def powers(first: int, last: int) -> list[int]:
    """first, 2 * first, ... up to last."""
    sizes = [first]
    while sizes[-1] < last:
        sizes.append(sizes[-1] * 2)
    return sizes


def golden(name: str) -> str:
    return (GOLDEN / name).read_text()


@pytest.mark.parametrize(
    ("name", "test", "unit", "sizes"),
    [
        ("osu_latency.txt", "latency", "us", [0, *powers(1, MIB)]),
        ("osu_bw.txt", "bandwidth", "MB/s", powers(1, MIB)),
        ("osu_bcast.txt", "bcast", "us", powers(1, MIB)),
        ("osu_allreduce.txt", "allreduce", "us", powers(4, MIB)),
    ],
)
def test_mpidock_osu_output(name: str, test: str, unit: str, sizes: list[int]) -> None:
    curve = parse(golden(name))
    assert (curve.test, curve.unit) == (test, unit)
    assert [size for size, _ in curve.rows] == sizes
    assert all(value > 0 for _, value in curve.rows)


def test_figures_are_read_as_printed() -> None:
    latency = parse(golden("osu_latency.txt")).rows
    bandwidth = parse(golden("osu_bw.txt")).rows
    assert (latency[0], latency[-1]) == ((0, 0.22), (MIB, 58.23))
    assert max(bandwidth, key=lambda row: row[1]) == (524288, 30563.06)


def test_omb_73_datatype_line_below_the_columns() -> None:
    text = (
        "# OSU MPI Latency Test v7.3\n"
        "# Size          Latency (us)\n"
        "# Datatype: MPI_CHAR.\n"
        "1                       0.15\n"
        "2                       0.15\n"
    )
    assert parse(text) == Curve("latency", "us", ((1, 0.15), (2, 0.15)))


def test_omb_75_preamble_datatype_above_and_validation_column() -> None:
    text = (
        "osu_latency: /usr/lib/libnl-3.so.200: no version information available\n"
        "[node1:263038] SET UCX_NET_DEVICES=mlx5_2:1\n"
        "\n"
        "# OSU MPI Latency Test v7.5\n"
        "# Datatype: MPI_CHAR.\n"
        "# Size       Avg Latency(us)        Validation\n"
        "1                       3.00              Pass\n"
        "2                       2.99              Pass\n"
    )
    assert parse(text).rows == ((1, 3.00), (2, 2.99))


def test_device_buffers_and_full_collective_columns() -> None:
    bandwidth = (
        "# OSU MPI-CUDA Bandwidth Test v7.3\n"
        "# Send Buffer on DEVICE (D) and Receive Buffer on DEVICE (D)\n"
        "# Size      Bandwidth (MB/s)\n"
        "268435456           12254.21\n"
    )
    full = (
        "# OSU MPI Allreduce Latency Test v7.3\n"
        "# Size       Avg Latency(us)   Min Latency(us)   Max Latency(us)  Iterations\n"
        "4                       1.50              1.20              1.80        1000\n"
    )
    assert parse(bandwidth) == Curve("bandwidth", "MB/s", ((268435456, 12254.21),))
    assert parse(full).rows == ((4, 1.50),)


LATENCY = "# OSU MPI Latency Test v7.3\n# Size          Latency (us)\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no OSU title line"),
        ("1   0.2\n", "no OSU title line"),
        (
            "# OSU MPI Bi-Directional Bandwidth Test v7.3\n",
            "line 1: unsupported OSU test 'Bi-Directional Bandwidth Test'",
        ),
        ("# OSU MPI Latency Test v7.3\n0   0.2\n", "line 2: a row before the '# Size'"),
        (
            "# OSU MPI Latency Test v7.3\n# Size      Bandwidth (MB/s)\n",
            "line 2: column header 'Bandwidth (MB/s)' is not in us",
        ),
        (LATENCY + "0   abc\n", "line 3: expected a size and a number, got '0 abc'"),
        (LATENCY + "0\n", "line 3: expected a size and a number, got '0'"),
        (LATENCY + "0   0.2\n---------------\n", "line 4: expected a size and a number"),
        (LATENCY + "0   nan\n", "line 3: figure 'nan' is not a finite number"),
        (LATENCY + "0   -1.0\n", "line 3: figure '-1.0' is not a finite number"),
        (LATENCY + "-1  1.0\n", "line 3: negative size -1"),
        (LATENCY + "2   0.2\n1   0.2\n", "size 1 after 2: sizes must increase"),
        (LATENCY + "1   0.2\n1   0.2\n", "size 1 after 1: sizes must increase"),
        (LATENCY + "0   0.2\n" + LATENCY, "line 4: a second OSU title"),
        (LATENCY, "no rows after the header"),
    ],
)
def test_malformed_osu_output(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        parse(text)


def test_mpi4py_pingpong_with_stats_is_mean_one_way_time() -> None:
    curve = parse_mpi4py_pingpong(golden("mpi4py_pingpong.txt"))
    assert (curve.test, curve.unit) == ("pingpong", "us")
    assert [size for size, _ in curve.rows] == powers(1, MIB)
    means = dict(curve.rows)
    assert means[1] == pytest.approx(0.50284695)
    assert means[MIB] == pytest.approx(30.947278)


def test_mpi4py_pingpong_without_stats_is_bandwidth() -> None:
    text = (
        "# MPI PingPong Test\n"
        "# Size [B]  Bandwidth [MB/s]\n"
        "         1              2.04\n"
        "         2              4.08\n"
    )
    assert parse_mpi4py_pingpong(text) == Curve("pingpong", "MB/s", ((1, 2.04), (2, 4.08)))


PINGPONG = (
    "# MPI PingPong Test\n# Size [B]  Bandwidth [MB/s] | Time Mean [s] ± StdDev [s]  Samples\n"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # mpi4py 3.1.4 has no pingpong; its ringtest prints this instead.
        ("time for 1 loops = 2.1e-05 seconds (2 processes, 1 bytes)\n", "no '# MPI PingPong"),
        ("# MPI PingPong Test\n", "line 2: no '# Size [B]  Bandwidth"),
        (PINGPONG + "         1              1.99\n", "line 3: expected 'SIZE BANDWIDTH | MEAN"),
        (PINGPONG + "         1              nan | nan ± 0.0000e+00        0\n", "line 3: figure"),
        (PINGPONG, "no rows after the header"),
    ],
)
def test_malformed_pingpong_output(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        parse_mpi4py_pingpong(text)


def test_ratio_for_sizes_in_both_curves() -> None:
    container = Curve("latency", "us", ((0, 0.5), (1, 0.6), (4, 3.0)))
    native = Curve("latency", "us", ((0, 0.25), (2, 0.3), (4, 1.0)))
    assert ratio(container, native) == [(0, 2.0), (4, 3.0)]


def test_ratio_of_a_curve_with_itself_is_one() -> None:
    curve = parse(golden("osu_bw.txt"))
    assert ratio(curve, curve) == [(size, 1.0) for size, _ in curve.rows]


def test_ratio_refuses_different_tests_and_a_zero_native_figure() -> None:
    latency = Curve("latency", "us", ((1, 0.5),))
    with pytest.raises(ValueError, match="cannot compare latency in us with bandwidth in MB/s"):
        ratio(latency, Curve("bandwidth", "MB/s", ((1, 2.0),)))
    with pytest.raises(ValueError, match="native latency at 1 bytes is 0"):
        ratio(latency, Curve("latency", "us", ((1, 0.0),)))
