"""bench scale's judging and bench model's predictions, on synthetic curves."""

from __future__ import annotations

from typing import Any

from bench import model, scale


def _curve(ssh_step: float, pmix_step: float, cpu_step: float) -> dict[str, Any]:
    """native-ssh 0.3 + 0.01 n, ssh its native + 1 + ssh_step n, native-pmix 0.2 + 0.005 n,
    pmix its native + 0.3 + pmix_step n; the launcher's CPU 0.25 n + cpu_step n."""
    points = []
    for n in scale.COUNTS:
        native_ssh, native_pmix = 0.3 + 0.01 * n, 0.2 + 0.005 * n
        points.append({
            "nodes": n,
            "native-ssh_end_s": native_ssh, "ssh_end_s": native_ssh + 1 + ssh_step * n,
            "native-pmix_end_s": native_pmix, "pmix_end_s": native_pmix + 0.3 + pmix_step * n,
            "ssh_launcher_cpu_s": 0.25 * n, "pmix_launcher_cpu_s": cpu_step * n,
        })  # fmt: skip
    return {"repeat": 1, "counts": list(scale.COUNTS), "points": points}


def test_the_goals_of_a_flat_pmix_and_a_halved_ssh_are_met() -> None:
    found = scale.summary(_curve(ssh_step=0.1, pmix_step=0.01, cpu_step=0.03))
    assert found["pmix_overhead_3_s"] == 0.33
    assert round(found["pmix_growth_s_per_node"], 3) == 0.01
    assert round(found["ssh_growth_s_per_node"], 3) == 0.1
    assert [g.met for g in scale.goals(found, today_ssh_growth=0.337)] == [True] * 4


def test_missed_goals_are_reported_as_measured() -> None:
    results = _curve(ssh_step=0.3, pmix_step=0.2, cpu_step=0.3)
    results["summary"] = scale.summary(results)
    assert [g.met for g in scale.goals(results["summary"], 0.337)] == [False] * 4
    assert [g.met for g in scale.goals(results["summary"], None)][-1] is None
    text = scale.report(results, 0.337)
    assert "| pmix growth, wall | ≤ 0.05 s/node | 0.200 s/node | **no** |" in text


def test_the_model_extends_each_line_and_counts_the_protocols_load() -> None:
    found = model.predict(_curve(ssh_step=0.1, pmix_step=0.01, cpu_step=0.03))
    assert found["ssh"][1024] == round(0.3 + 0.01 * 1024 + 1 + 0.1 * 1024, 2)
    assert found["pmix"][64] == round(0.2 + 0.005 * 64 + 0.3 + 0.01 * 64, 2)
    # Tree spawn: two levels of 32 reach 1,024 nodes; the first remote step costs 0.11 s.
    assert found["ssh, tree spawn"][1024] == round(found["ssh, tree spawn"][64], 2)
    load = model.filesystem_load(1024)
    assert load["running_ops_s"] == 1023 * (2 * 2 + 2)  # 2 looks a second (2 stats) + 2 checks
    # one listing a look: its open, 5 getdents of 32 KiB over 4 x 1,023 entries, the last
    assert load["start_up_ops_s"] == (1 + 5 + 1) * 20
    assert load["leader_running_ops_s"] == (1 + 5 + 1) * 5
