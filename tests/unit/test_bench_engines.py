"""bench engines' judging: Podman against Docker as its docstring decides it."""

from __future__ import annotations

from typing import Any

from bench import engines


def _results(podman_latency: float, podman_bw: float, podman_end: float) -> dict[str, Any]:
    sizes = [1, 1024, 65536, 1048576]
    return {
        "quick": True,
        "repeat": 1,
        "launch": {
            "native": {"init_s": 0.5, "end_s": 0.8},
            "docker": {"init_s": 2.0, "end_s": 2.4},
            "podman": {"init_s": podman_end - 0.4, "end_s": podman_end},
        },
        "comm": {
            "latency": {
                "native": [[s, 10.0] for s in sizes],
                "docker": [[s, 10.0] for s in sizes],
                "podman": [[s, podman_latency] for s in sizes],
            },
            "bandwidth": {
                "native": [[s, 100.0] for s in sizes],
                "docker": [[s, 100.0] for s in sizes],
                # small messages far off: judged from 64 KiB up only
                "podman": [[s, podman_bw if s >= 65536 else 1.0] for s in sizes],
            },
        },
    }


def test_goals_met_within_two_percent_and_half_a_second() -> None:
    found = engines.goals(_results(10.1, 99.0, 2.8))
    assert [g.met for g in found] == [True, True, True]
    assert found[2].measured.startswith("+0.40 s")


def test_goals_missed_are_reported_as_measured() -> None:
    found = engines.goals(_results(10.5, 90.0, 15.0))
    assert [g.met for g in found] == [False, False, False]
    assert "worst 1.050" in found[0].measured
    assert "worst 0.900 at 65536 B" in found[1].measured
    text = engines.report(_results(10.5, 90.0, 15.0))
    assert "| launch at 3 nodes | podman - docker ≤ 0.5 s | +12.60 s" in text
