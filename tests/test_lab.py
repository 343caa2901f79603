"""The notebook panels, driven from Python as a user's clicks would drive them: widgets become
overrides, a change marks the plots out of date until the next run, and runs can be pinned
for an A/B view. (The real-browser check is a separate test.)"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import html
from pathlib import Path

import pytest

from labkit.errors import ScenarioError
from labkit.lab import (
    FRESH,
    INVALID,
    STALE,
    BalancingControls,
    BalancingPanel,
    BatchingControls,
    BatchingPanel,
    ConsistencyControls,
    ConsistencyPanel,
    FaultControls,
    FaultPanel,
    LoadControls,
    Panel,
)

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
    # weights only once a slider moved (written back, the loader would renormalise them)
    assert not any(s.startswith("balancer.weights=") for s in sets)
    panel.weights["errors"].value = 0.5
    assert any(s.startswith("balancer.weights={") for s in panel.overrides())


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
    # the A/B table: both runs' headline figures and the setting that differs
    table = panel.comparison.value
    assert "A (pinned) vs B (this run)" in table and "p99_ms" in table
    assert "balancer.strategy=round_robin" in table
    panel.unpin()
    assert panel.comparison.value == ""


def _images(panel: Panel) -> int:
    return sum("image/png" in o["data"] for o in panel.output.outputs)


STATE_SMALL = ("duration_s=4", "warmup_s=1", "workload.arrival.rate_rps=400")


def test_consistency_panel_starts_from_the_scenario_and_names_impossible_quorums() -> None:
    panel = ConsistencyPanel("state_consistency", *STATE_SMALL)
    c: ConsistencyControls = panel.section(ConsistencyControls)
    assert c.registry_model.value == "eventual" and c.state_model.value == "eventual"
    assert (c.n.value, c.r.value, c.w.value) == (3, 0, 0)  # "auto"
    assert c.quorums() == (1, 1)
    assert "stale reads" in c.quorum_note.value
    assert c.watch_delay.disabled and not c.ttl.disabled
    c.state_model.value = "strong"
    assert c.quorums() == (2, 2)  # auto is a majority for strong, as the schema resolves it
    assert "r + w = 4 > n = 3" in html.unescape(c.quorum_note.value)
    assert panel.configured().state.config.r == 2
    # strong with explicit r = w = 1 is impossible: named at once, Run disabled, run() refuses
    c.r.value = 1
    c.w.value = 1
    assert panel.error is not None and "r + w > n" in panel.error
    assert INVALID in panel.status.value and panel.run_button.disabled
    with pytest.raises(ScenarioError, match="r \\+ w > n"):
        panel.run()
    panel._clicked_run()  # the button shows the error instead of raising into the void
    assert INVALID in panel.status.value
    c.w.value = 3
    assert panel.error is None and not panel.run_button.disabled
    # fewer replicas: quorum choices shrink and an out-of-range choice falls back to auto
    c.n.value = 2
    assert [v for _, v in c.r.options] == [0, 1, 2] and c.w.value == 0


def test_consistency_panel_runs_and_draws_the_state_plots() -> None:
    panel = ConsistencyPanel("state_consistency", *STATE_SMALL)
    c: ConsistencyControls = panel.section(ConsistencyControls)
    c.registry_model.value = "watch"
    assert not c.watch_delay.disabled and c.ttl.disabled
    c.watch_delay.value = 40
    sets = panel.overrides()
    assert "registry.consistency=watch" in sets
    assert "registry.watch_delay={dist: exponential, mean_ms: 40.0}" in sets
    results = panel.run()
    assert results.scenario.registry.consistency == "watch"
    assert results.summary["state"]["reads"] > 0
    # percentile bars, t-visibility and state latency
    assert _images(panel) == 3


def test_batching_panel_switches_batching_and_adaptive_mode() -> None:
    panel = BatchingPanel("batching", "duration_s=4", "warmup_s=1")
    b: BatchingControls = panel.section(BatchingControls)
    assert b.enabled.value and b.max_batch.value == 8 and not b.adaptive.value
    assert b.target.disabled
    b.adaptive.value = True
    assert not b.target.disabled and b.max_batch.description == "start limit"
    b.target.value = 25
    sc = panel.configured()
    assert sc.batching is not None and sc.batching.adaptive is not None
    assert sc.batching.adaptive.target_p99_s == pytest.approx(0.025)
    results = panel.run()
    assert results.summary["batching"]["served"]["mean_size"] >= 1
    assert _images(panel) == 3  # percentiles, batch sizes, the adaptive limit
    b.enabled.value = False
    assert "batching=null" in panel.overrides() and b.max_batch.disabled
    assert panel.configured().batching is None
    # a scenario written with adaptive batching: unticking it removes the section's adaptive
    adaptive = BatchingPanel("batching_adaptive", "duration_s=4", "warmup_s=1")
    ab: BatchingControls = adaptive.section(BatchingControls)
    assert ab.adaptive.value and ab.target.value == 30
    ab.adaptive.value = False
    assert "batching.adaptive=null" in adaptive.overrides()
    assert adaptive.configured().batching.adaptive is None


def test_fault_panel_edits_the_schedule_with_the_schemas_keys() -> None:
    panel = FaultPanel("failure_crash", "workload.arrival.rate_rps=300", "workers.count=8")
    f: FaultControls = panel.section(FaultControls)
    assert len(f.rows) == 1
    row = f.rows[0]
    assert row.spec() == {
        "kind": "crash",
        "at_s": 40.0,
        "workers": 5,
        "restart_after_s": 20.0,
        "connection": "reset",
    }
    row.kind.value = "slow"
    assert row.params["factor"].layout.display is None
    assert row.params["restart_after_s"].layout.display == "none"
    assert set(row.spec()) == {"kind", "at_s", "workers", "factor", "for_s"}
    row.kind.value = "random_crashes"
    assert row.at_s.layout.display == "none" and "at_s" not in row.spec()
    row.kind.value = "crash"
    panel.run()
    assert not panel.stale
    added = f.add({"kind": "latency_spike", "at_s": 70, "extra_ms": 50, "for_s": 5})
    assert panel.stale and STALE in panel.status.value
    sc = panel.configured()
    assert [fault.kind for fault in sc.faults] == ["crash", "latency_spike"]
    added.at_s.value = 500  # after the end of the run: named before Run
    assert panel.error is not None and "faults.1.at_s" in panel.error
    f.remove(added)
    assert panel.error is None and len(panel.configured().faults) == 1
    f.detector.value = "phi_accrual"
    assert panel.configured().registry.detector == "phi_accrual"


def test_fault_panel_draws_the_recovery_timeline() -> None:
    panel = FaultPanel(
        "failure_crash",
        "duration_s=30",
        "warmup_s=5",
        "workload.arrival.rate_rps=300",
        "faults=[{kind: crash, at_s: 12, workers: 3, restart_after_s: 6}]",
    )
    results = panel.run()
    assert results.faults is not None and len(results.faults) == 1
    assert _images(panel) == 3  # recovery timeline, percentiles, utilization heatmap
    # every fault removed: the timeline has nothing to show and is left out
    f: FaultControls = panel.section(FaultControls)
    f.remove(f.rows[0])
    panel.run()
    assert _images(panel) == 2


def test_a_general_panel_has_a_group_for_each_section_the_scenario_has() -> None:
    quick = Panel("quickstart", "duration_s=3", "warmup_s=1")
    kinds = [type(s) for s in quick.sections]
    assert kinds == [BalancingControls, LoadControls, ConsistencyControls]
    assert quick.plots[0] == "latency_percentiles"
    crash = Panel("failure_crash", quick=())
    assert FaultControls in [type(s) for s in crash.sections]
    batching = Panel("batching")
    assert BatchingControls in [type(s) for s in batching.sections]
    # the panel's overrides reproduce the scenario as written (up to float rounding)
    for panel in (quick, crash, batching):
        assert _rounded(panel.configured().to_dict()) == _rounded(panel.scenario.to_dict())


def _rounded(value: object) -> object:
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


SCENARIOS = sorted(p.stem for p in (Path(__file__).parents[1] / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_shipped_scenario_is_reproduced_by_its_panel_untouched(name: str) -> None:
    """Widgets left alone give back the scenario exactly: the same resolved settings (so the
    same run as ``labkit run``), not a valid neighbour of it."""
    panel = Panel(name, quick=())
    assert panel.error is None
    assert panel.configured().resolved == panel.scenario.resolved


def test_fault_rows_keep_every_worker_selector_and_left_out_keys() -> None:
    panel = FaultPanel("detector_comparison")
    row = panel.section(FaultControls).rows[0]
    # names as written, and a crash without restart stays one (0 = left out)
    assert row.workers.value == "w-1, w-5, w-9"
    assert row.params["restart_after_s"].value == 0
    assert row.spec() == {
        "kind": "crash",
        "at_s": 30.0,
        "workers": ["w-1", "w-5", "w-9"],
        "connection": "hang",
    }
    for text, written in (("all", "all"), ("25%", "25%"), ("3", 3), ("[w-2]", ["w-2"])):
        row.workers.value = text
        assert row.spec()["workers"] == written and panel.error is None
    row.workers.value = "w-99"
    assert panel.error is not None and "faults.0.workers.0" in panel.error
    row.workers.value = "all"
    row.kind.value = "slow"
    row.params["for_s"].value = 0  # to the end of the run
    assert "for_s" not in row.spec() and panel.configured().faults[0].for_s is None


def test_the_watch_delay_keeps_its_distribution_until_the_slider_moves() -> None:
    panel = Panel("quickstart", "registry.watch_delay={dist: constant, value_ms: 10}")
    c: ConsistencyControls = panel.section(ConsistencyControls)
    assert c.watch_delay.value == 10
    assert not any(s.startswith("registry.watch_delay") for s in panel.overrides())
    assert panel.configured().registry.watch_delay == panel.scenario.registry.watch_delay
    c.watch_delay.value = 40
    assert "registry.watch_delay={dist: exponential, mean_ms: 40.0}" in panel.overrides()


def test_the_ab_table_names_settings_a_had_and_b_left_to_the_scenario() -> None:
    small = ("duration_s=1", "warmup_s=0.2", "workers.count=4", "workload.arrival.rate_rps=100")
    panel = Panel("quickstart", *small, controls=(BatchingControls,), plots=())
    b: BatchingControls = panel.section(BatchingControls)
    b.enabled.value = True  # the scenario has no batching: A turns it on
    panel.run()
    panel.pin()
    b.enabled.value = False  # B turns it off again: no override at all
    panel.run()
    table = html.unescape(panel.comparison.value)
    assert "same settings" not in table
    assert "batching.max_batch as in the scenario (A: 8)" in table
