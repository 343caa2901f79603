"""The notebook panels, driven from Python as a user's clicks would drive them: widgets become
overrides, a change marks the plots out of date until the next run, and runs can be pinned
for an A/B view. (The real-browser check is a separate test.)"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest

from labkit.lab import FRESH, STALE, BalancingPanel

SMALL = ("duration_s=5", "warmup_s=1", "workers.count=12", "workload.arrival.rate_rps=450")


@pytest.fixture
def panel() -> BalancingPanel:
    return BalancingPanel("heterogeneous_fleet", *SMALL)


def test_widgets_start_from_the_scenario(panel: BalancingPanel) -> None:
    sc = panel.scenario
    assert panel.strategy.value == sc.balancer.strategy
    assert panel.workers.value == 12
    assert panel.rate.value == pytest.approx(450)
    assert "not run yet" in panel.status.value


def test_weights_are_shown_normalised_and_only_matter_for_adaptive(panel: BalancingPanel) -> None:
    panel.strategy.value = "adaptive"
    panel.weights["response_time"].value = 1.0
    panel.weights["cpu"].value = 1.0
    panel.weights["connections"].value = 0.0
    panel.weights["errors"].value = 0.0
    used = panel.normalised_weights()
    assert sum(used.values()) == pytest.approx(1.0)
    assert used["response_time"] == pytest.approx(0.5) and used["cpu"] == pytest.approx(0.5)
    assert "response_time 0.50" in panel.weights_used.value
    assert not panel.weights["cpu"].disabled
    panel.strategy.value = "p2c"
    assert panel.weights["cpu"].disabled
    assert "only adaptive uses them" in panel.weights_used.value


def test_overrides_are_what_labkit_run_would_take(panel: BalancingPanel) -> None:
    panel.strategy.value = "adaptive"
    panel.workers.value = 8
    panel.rate.value = 300
    sets = panel.overrides()
    assert "balancer.strategy=adaptive" in sets
    assert "workers.count=8" in sets
    assert "workload.arrival.rate_rps=300" in sets
    assert any(s.startswith("balancer.weights={") for s in sets)


def test_a_change_after_a_run_marks_the_plots_out_of_date(panel: BalancingPanel) -> None:
    first = panel.run()
    assert FRESH in panel.status.value and not panel.stale
    assert panel.progress.value == 1.0
    # percentile bars and the per-worker plot, as PNGs
    assert len(panel.output.outputs) == 2
    assert all("image/png" in o["data"] for o in panel.output.outputs)
    panel.workers.value = 6
    assert panel.stale and STALE in panel.status.value
    second = panel.run()
    assert FRESH in panel.status.value
    assert second.scenario.workers.count == 6 and first.scenario.workers.count == 12


def test_slider_moves_change_the_results(panel: BalancingPanel) -> None:
    panel.strategy.value = "round_robin"
    slow = panel.run().summary["latency_ms"]["mean"]
    panel.strategy.value = "p2c"
    fast = panel.run().summary["latency_ms"]["mean"]
    # a fleet whose speeds differ 4x: round robin overloads the slow workers
    assert fast < slow / 2


def test_pinning_shows_a_and_b_side_by_side(panel: BalancingPanel) -> None:
    panel.run()
    panel.pin()
    assert panel.pinned is panel.results
    panel.strategy.value = "round_robin"
    panel.run()
    assert panel.pinned is not panel.results
    assert len(panel.output.outputs) == 2
