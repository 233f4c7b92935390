"""bench families: which native run each family is held to, the commands, and the goals
judged per family as its docstring decides (bench.md's container/native rules)."""

from __future__ import annotations

from typing import Any

from bench import families

SIZES = [0, 1024, 65536, 1048576]


def _row(
    name: str, latency: float, bandwidth: float, failed: tuple[str, ...] = ()
) -> dict[str, Any]:
    pairing = families.FAMILIES[name]
    nat = families.NATIVES[pairing.native]
    curves = {} if failed else {
        "latency": {
            "native": [[s, 10.0] for s in SIZES],
            "container": [[s, latency] for s in SIZES],
        },
        "bandwidth": {
            "native": [[s, 100.0] for s in SIZES],
            # small messages far off: judged from 64 KiB up only
            "container": [[s, bandwidth if s >= 65536 else 1.0] for s in SIZES],
        },
    }  # fmt: skip
    return {
        "family": name, "about": pairing.family.about, "image": pairing.family.image,
        "options": pairing.options(), "program": pairing.program, "native": nat.name,
        "native_about": nat.about, "stand_in": pairing.stand_in,
        "native_argv": families.native_argv(nat, [str(nat.binary)]),
        **curves, "failed": list(failed),
    }  # fmt: skip


def _results(*rows: dict[str, Any]) -> dict[str, Any]:
    return {
        "quick": True, "repeat": 1, "started": "2026-12-02T02:00:00+00:00",
        "duration_s": 60.0, "nodes": "sim1,sim2",
        "iterations": ["--iterations", "50", "--warmup", "5"], "families": list(rows),
    }  # fmt: skip


def test_each_family_is_held_to_its_own_mpi_and_intel_to_a_stated_stand_in() -> None:
    held = {name: p.native for name, p in families.FAMILIES.items()}
    assert held == {
        "openmpi": "openmpi", "openmpi5": "openmpi5", "mpich5": "mpich5",
        "mpich-host5": "mpich5", "intelmpi": "mpich5-ofi",
    }  # fmt: skip
    stated = [name for name, p in families.FAMILIES.items() if p.stand_in]
    assert stated == ["intelmpi"]


def test_native_commands_use_each_mpis_own_launcher_on_the_testbed_network() -> None:
    mpich = families.native_argv(families.NATIVES["mpich5"], ["osu", "latency"])
    assert mpich == [
        "/opt/mpidock/host-mpi/mpich5/bin/mpiexec", "-launcher", "slurm", "-n", "2",
        "-ppn", "1", "-iface", "eth0", "-genv", "UCX_NET_DEVICES", "eth0",
        "-genv", "UCX_TLS", "self,tcp", "osu", "latency",
    ]  # fmt: skip
    ofi = families.native_argv(families.NATIVES["mpich5-ofi"], ["osu"])
    assert ofi[9:-1] == ["-genv", "MPIR_CVAR_CH4_NETMOD", "ofi", "-genv", "FI_PROVIDER", "tcp",
                         "-genv", "FI_TCP_IFACE", "eth0"]  # fmt: skip
    ompi5 = families.native_argv(families.NATIVES["openmpi5"], ["osu"])
    assert ompi5[:3] == [
        "/opt/mpidock/host-mpi/openmpi5/bin/mpirun", "--prefix", "/opt/mpidock/host-mpi/openmpi5",
    ]  # fmt: skip
    assert ompi5[-4:-1] == ["--prtemca", "oob_tcp_if_include", "10.213.0.0/24"]


def test_the_injected_image_runs_an_osu_built_against_its_own_mpich() -> None:
    script = families.wrap("container/mpich-host5", "bandwidth", quick=True)
    assert script == (
        "srun mpidock slurm-entry --image mpidock/mpich --host-mpi mpich5 "
        "--mount /srv/mpidock/bench/bin/mpich:ro --quiet -- "
        "/srv/mpidock/bench/bin/mpich/mpidock-osu bw --iterations 50 --warmup 5"
    )


def test_a_native_shared_by_families_runs_once_per_repetition() -> None:
    chosen = [families.FAMILIES[n] for n in ("mpich5", "mpich-host5", "intelmpi")]
    assert families.modes(chosen) == [
        "native/mpich5", "container/mpich5", "container/mpich-host5",
        "native/mpich5-ofi", "container/intelmpi",
    ]  # fmt: skip


def test_goals_met_within_two_percent() -> None:
    found = families.family_goals(_row("mpich5", 10.1, 99.0))
    assert [g.met for g in found] == [True, True]
    assert found[0].target == "container/native ≤ 1.02 at every size"
    assert found[1].target == "container/native ≥ 0.98 at every size ≥ 64 KiB"


def test_misses_are_reported_as_measured_and_failures_undecided() -> None:
    results = _results(
        _row("openmpi5", 10.5, 90.0),
        _row("intelmpi", 10.0, 100.0, failed=("repetition 1: container/intelmpi latency: "
                                               "job 7 FAILED 1:0: boom",)),
    )  # fmt: skip
    missed = families.family_goals(results["families"][0])
    assert [g.met for g in missed] == [False, False]
    assert "worst 1.050" in missed[0].measured
    assert "worst 0.900 at 64 KiB" in missed[1].measured
    undecided = families.family_goals(results["families"][1])
    assert [g.met for g in undecided] == [None, None]
    assert "not measured: repetition 1: container/intelmpi latency" in undecided[0].measured

    text = families.report(results)
    assert "0 of 4 goals met. Missed: openmpi5 latency between nodes" in text
    assert "Undecided: intelmpi latency between nodes, intelmpi bandwidth between nodes." in text
    assert "| openmpi5 | latency between nodes | container/native ≤ 1.02 at every size |" in text
    assert "(stand-in: no Intel MPI on the host: MPICH 5, the same MPICH ABI and fabric" in text
    assert "intelmpi: Intel MPI's TCP path runs at the testbed's 4 ms scheduler tick" in text
    assert "| openmpi5 | bandwidth | MB/s | 64 KiB | 90 | 100 | 0.900 |" in text
    assert "- intelmpi: repetition 1: container/intelmpi latency: job 7 FAILED 1:0: boom" in text


def test_report_names_the_injection_beside_the_image(tmp_path: Any) -> None:
    text = families.write(_results(_row("mpich-host5", 10.0, 100.0)), tmp_path)
    assert "`mpidock/mpich` --host-mpi mpich5 --mount /srv/mpidock/bench/bin/mpich:ro" in text
    assert (tmp_path / "families.md").read_text() == text
    assert '"family": "mpich-host5"' in (tmp_path / "families.json").read_text()
