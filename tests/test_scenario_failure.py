"""Scenario sections about failure: faults, slo, alerts, recovery, detectors and gateway
resilience. Good values resolve to the core's config objects; bad ones fail with one error that
names the key path (and, from a file, the line)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labkit.core.alerts import METRICS, BurnRateRule, Escalation, Silence, ThresholdRule
from labkit.core.breaker import BreakerConfig
from labkit.core.faults import FaultSpec, WorkerSelector, plan_faults, worker_name
from labkit.core.outlier import OutlierConfig
from labkit.core.retry_budget import RetryBudgetConfig
from labkit.core.slo import RecoveryConfig, SloConfig
from labkit.errors import ScenarioError
from labkit.scenario import Scenario, load_scenario, scenario_from_dict

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
WITH_FAULTS = sorted(p for p in SCENARIOS.glob("*.yaml") if "\nfaults:" in p.read_text())

RULE = {"name": "HighP99", "metric": "latency_p99_ms", "op": ">", "threshold": 200}
BURN = {
    "name": "Burn",
    "kind": "burn_rate",
    "long_window_s": 60,
    "short_window_s": 5,
    "factor": 14.4,
}


def base(**extra: Any) -> dict[str, Any]:
    """A minimal valid scenario: 10 workers, 60 s, plus ``extra`` top-level sections."""
    return {
        "name": "t",
        "seed": 1,
        "duration_s": 60,
        "workers": {"count": 10},
        "workload": {"arrival": {"rate_rps": 100}},
        **extra,
    }


def parse(**extra: Any) -> Scenario:
    return scenario_from_dict(base(**extra))


def error(**extra: Any) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse(**extra)
    assert "\n" not in str(info.value)
    return info.value


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return path


# --- shipped scenarios ----------------------------------------------------------------------


def test_several_shipped_scenarios_have_faults() -> None:
    names = {p.stem for p in WITH_FAULTS}
    assert {"failure_crash", "failure_random_crashes", "detector_comparison"} <= names
    assert len(WITH_FAULTS) >= 6


@pytest.mark.parametrize("path", WITH_FAULTS, ids=lambda p: p.name)
def test_shipped_fault_scenarios_resolve_every_failure_section(path: Path) -> None:
    sc = load_scenario(path)
    d = sc.to_dict()
    assert {"faults", "slo", "alerts", "recovery"} <= set(d)
    assert len(d["faults"]) == len(sc.faults) >= 1
    for fault, spec in zip(d["faults"], sc.faults, strict=True):
        assert fault["kind"] == spec.kind
        assert "workers" in fault
    assert d["slo"] == {"latency_ms": sc.slo.latency_ms, "target": sc.slo.target}
    assert set(d["recovery"]) == set(RecoveryConfig.__dataclass_fields__)
    if sc.alerts is None:
        assert d["alerts"] is None
    else:
        assert [r["name"] for r in d["alerts"]["rules"]] == [r.name for r in sc.alerts.rules]


@pytest.mark.parametrize("path", WITH_FAULTS, ids=lambda p: p.name)
def test_resolved_failure_sections_parse_back_to_the_same_config(path: Path) -> None:
    """The echo in summary.json is itself a valid scenario meaning the same thing."""
    sc = load_scenario(path)
    again = scenario_from_dict(sc.to_dict())
    assert again.faults == sc.faults
    assert again.slo == sc.slo
    assert again.alerts == sc.alerts
    assert again.recovery == sc.recovery
    assert again.gateway == sc.gateway
    assert again.registry == sc.registry


def test_shipped_crash_scenario_values() -> None:
    sc = load_scenario(SCENARIOS / "failure_crash.yaml")
    assert sc.faults == (
        FaultSpec("crash", at_s=40.0, workers=WorkerSelector(count=5), restart_after_s=20.0),
    )
    assert sc.gateway.retry_budget == RetryBudgetConfig(ratio=0.2, min_per_s=20.0)
    assert sc.gateway.outlier == OutlierConfig(5, 30.0, 300.0, 0.3)
    assert sc.alerts is not None
    assert sc.alerts.escalations == (Escalation("page", 10.0, "critical"),)


# --- faults: each kind's keys and defaults --------------------------------------------------


def test_no_faults_by_default() -> None:
    sc = parse()
    assert sc.faults == ()
    assert sc.to_dict()["faults"] == []


def test_crash_defaults() -> None:
    sc = parse(faults=[{"kind": "crash", "at_s": 5, "workers": 2}])
    assert sc.faults == (FaultSpec("crash", at_s=5.0, workers=WorkerSelector(count=2)),)
    assert sc.faults[0].connection == "reset"
    assert sc.faults[0].restart_after_s is None
    assert sc.to_dict()["faults"] == [
        {"kind": "crash", "at_s": 5.0, "workers": 2, "restart_after_s": None, "connection": "reset"}
    ]


def test_crash_with_every_key() -> None:
    fault = {
        "kind": "crash",
        "at_s": 5,
        "workers": ["w-1", "w-5"],
        "restart_after_s": 7.5,
        "connection": "hang",
    }
    (spec,) = parse(faults=[fault]).faults
    assert spec == FaultSpec(
        "crash",
        at_s=5.0,
        workers=WorkerSelector(names=("w-1", "w-5")),
        restart_after_s=7.5,
        connection="hang",
    )


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (
            {"kind": "slow", "at_s": 1, "workers": "20%", "factor": 8},
            FaultSpec("slow", at_s=1.0, workers=WorkerSelector(fraction=0.2), factor=8.0),
        ),
        (
            {"kind": "slow", "at_s": 1, "workers": 1, "factor": 1.5, "for_s": 30},
            FaultSpec("slow", at_s=1.0, workers=WorkerSelector(count=1), factor=1.5, for_s=30.0),
        ),
        (
            {"kind": "flaky", "at_s": 0, "workers": ["w-3"], "error_rate": 1},
            FaultSpec("flaky", at_s=0.0, workers=WorkerSelector(names=("w-3",)), error_rate=1.0),
        ),
        (
            {"kind": "partition", "at_s": 30, "workers": "25%", "for_s": 10},
            FaultSpec("partition", at_s=30.0, workers=WorkerSelector(fraction=0.25), for_s=10.0),
        ),
        (
            {"kind": "partition", "at_s": 30, "workers": "all"},
            FaultSpec("partition", at_s=30.0, workers=WorkerSelector()),
        ),
        (
            {"kind": "latency_spike", "at_s": 30, "extra_ms": 50},
            FaultSpec("latency_spike", at_s=30.0, extra_ms=50.0),
        ),
        (
            {"kind": "latency_spike", "at_s": 30, "extra_ms": 5, "for_s": 8, "workers": 3},
            FaultSpec(
                "latency_spike", at_s=30.0, workers=WorkerSelector(count=3), extra_ms=5.0, for_s=8.0
            ),
        ),
        (
            {"kind": "random_crashes", "mtbf_s": 300, "mttr_s": 10},
            FaultSpec("random_crashes", mtbf_s=300.0, mttr_s=10.0),
        ),
        (
            {
                "kind": "random_crashes",
                "mtbf_s": 300,
                "mttr_s": 10,
                "workers": 4,
                "connection": "hang",
            },
            FaultSpec(
                "random_crashes",
                workers=WorkerSelector(count=4),
                mtbf_s=300.0,
                mttr_s=10.0,
                connection="hang",
            ),
        ),
    ],
)
def test_fault_kinds_resolve_to_specs(fault: dict[str, Any], expected: FaultSpec) -> None:
    (spec,) = parse(faults=[fault]).faults
    assert spec == expected


def test_resolved_faults_fill_optional_keys() -> None:
    faults = [
        {"kind": "slow", "at_s": 1, "workers": "20%", "factor": 8},
        {"kind": "latency_spike", "at_s": 1, "extra_ms": 5},
        {"kind": "random_crashes", "mtbf_s": 300, "mttr_s": 10},
    ]
    slow, spike, rnd = parse(faults=faults).to_dict()["faults"]
    assert slow == {"kind": "slow", "at_s": 1.0, "workers": "20%", "for_s": None, "factor": 8.0}
    assert spike["workers"] == "all"
    assert spike["for_s"] is None
    assert rnd == {
        "kind": "random_crashes",
        "workers": "all",
        "mtbf_s": 300.0,
        "mttr_s": 10.0,
        "connection": "reset",
    }


@pytest.mark.parametrize(
    ("fault", "path", "fragment"),
    [
        (
            {"kind": "explode", "at_s": 1},
            "faults.0.kind",
            "choose one of: crash, slow, flaky, partition, latency_spike, random_crashes",
        ),
        ({"at_s": 1, "workers": 1}, "faults.0.kind", "is required"),
        ({"kind": "crash", "workers": 1}, "faults.0.at_s", "is required"),
        ({"kind": "crash", "at_s": -1, "workers": 1}, "faults.0.at_s", "must be >= 0"),
        (
            {"kind": "crash", "at_s": 60, "workers": 1},
            "faults.0.at_s",
            "starts at or after the end of the run (duration_s 60)",
        ),
        (
            {"kind": "slow", "at_s": 75, "workers": 1, "factor": 2},
            "faults.0.at_s",
            "at or after the end",
        ),
        ({"kind": "crash", "at_s": 1}, "faults.0.workers", "is required"),
        ({"kind": "slow", "at_s": 1, "factor": 2}, "faults.0.workers", "is required"),
        ({"kind": "flaky", "at_s": 1, "error_rate": 0.1}, "faults.0.workers", "is required"),
        ({"kind": "partition", "at_s": 1}, "faults.0.workers", "is required"),
        (
            {"kind": "crash", "at_s": 1, "workers": 0},
            "faults.0.workers",
            "must be between 1 and the fleet size (10), got 0",
        ),
        (
            {"kind": "crash", "at_s": 1, "workers": 11},
            "faults.0.workers",
            "must be between 1 and the fleet size (10), got 11",
        ),
        ({"kind": "crash", "at_s": 1, "workers": "120%"}, "faults.0.workers", "'120%'"),
        ({"kind": "crash", "at_s": 1, "workers": "0%"}, "faults.0.workers", "'0%'"),
        ({"kind": "crash", "at_s": 1, "workers": "abc"}, "faults.0.workers", "'abc'"),
        ({"kind": "crash", "at_s": 1, "workers": True}, "faults.0.workers", "got True"),
        ({"kind": "crash", "at_s": 1, "workers": []}, "faults.0.workers", "non-empty list"),
        (
            {"kind": "crash", "at_s": 1, "workers": ["w-1", "w-10"]},
            "faults.0.workers.1",
            "unknown worker 'w-10' (workers are named w-0 .. w-9)",
        ),
        (
            {"kind": "crash", "at_s": 1, "workers": ["worker-1"]},
            "faults.0.workers.0",
            "w-0 .. w-9",
        ),
        (
            {"kind": "crash", "at_s": 1, "workers": ["w-2", "w-4", "w-2"]},
            "faults.0.workers",
            "names a worker twice",
        ),
        (
            {"kind": "crash", "at_s": 1, "workers": 1, "connection": "drop"},
            "faults.0.connection",
            "choose one of: reset, hang",
        ),
        (
            {"kind": "crash", "at_s": 1, "workers": 1, "restart_after_s": 0},
            "faults.0.restart_after_s",
            "must be > 0",
        ),
        ({"kind": "slow", "at_s": 1, "workers": 1}, "faults.0.factor", "is required"),
        ({"kind": "slow", "at_s": 1, "workers": 1, "factor": 1}, "faults.0.factor", "must be > 1"),
        (
            {"kind": "slow", "at_s": 1, "workers": 1, "factor": 0.5},
            "faults.0.factor",
            "must be > 1",
        ),
        (
            {"kind": "slow", "at_s": 1, "workers": 1, "factor": 2, "for_s": 0},
            "faults.0.for_s",
            "must be > 0",
        ),
        (
            {"kind": "flaky", "at_s": 1, "workers": 1, "error_rate": 0},
            "faults.0.error_rate",
            "must be > 0",
        ),
        (
            {"kind": "flaky", "at_s": 1, "workers": 1, "error_rate": 1.5},
            "faults.0.error_rate",
            "must be <= 1",
        ),
        (
            {"kind": "latency_spike", "at_s": 1, "extra_ms": 0},
            "faults.0.extra_ms",
            "must be > 0",
        ),
        (
            {"kind": "crash", "at_s": 1, "workers": 1, "restart_after": 5},
            "faults.0.restart_after",
            "unknown key 'restart_after' (did you mean 'restart_after_s'?",
        ),
        (
            {"kind": "crash", "at_s": 1, "workers": 1, "for_s": 5},
            "faults.0.for_s",
            "unknown key 'for_s'",
        ),
        (
            {"kind": "partition", "at_s": 1, "workers": 1, "factor": 2},
            "faults.0.factor",
            "allowed here: at_s, for_s, kind, workers",
        ),
        (
            {"kind": "random_crashes", "at_s": 1, "mtbf_s": 10, "mttr_s": 1},
            "faults.0.at_s",
            "unknown key 'at_s'",
        ),
        ({"kind": "random_crashes", "mttr_s": 1}, "faults.0.mtbf_s", "is required"),
        (
            {"kind": "random_crashes", "mtbf": 300, "mttr_s": 1},
            "faults.0.mtbf_s",
            "is required (found 'mtbf': a typo?)",
        ),
        ({"kind": "random_crashes", "mtbf_s": 300}, "faults.0.mttr_s", "is required"),
        (
            {"kind": "random_crashes", "mtbf_s": 0, "mttr_s": 1},
            "faults.0.mtbf_s",
            "must be > 0",
        ),
    ],
)
def test_bad_faults_name_the_key(fault: dict[str, Any], path: str, fragment: str) -> None:
    err = error(faults=[fault])
    assert err.path == path
    assert fragment in err.message


def test_fault_errors_name_the_index_of_the_bad_fault() -> None:
    good = {"kind": "partition", "at_s": 1, "workers": 1}
    err = error(faults=[good, good, {"kind": "random_crashes", "mttr_s": 1}])
    assert err.path == "faults.2.mtbf_s"


@pytest.mark.parametrize(
    ("faults", "path", "fragment"),
    [
        ({"kind": "crash"}, "faults", "must be a list of faults"),
        (["crash"], "faults.0", "must be a mapping"),
    ],
)
def test_faults_must_be_a_list_of_mappings(faults: Any, path: str, fragment: str) -> None:
    err = error(faults=faults)
    assert err.path == path
    assert fragment in err.message


def test_parsed_faults_plan_onto_the_named_fleet() -> None:
    sc = parse(
        faults=[
            {"kind": "crash", "at_s": 10, "workers": ["w-9"], "restart_after_s": 5},
            {"kind": "slow", "at_s": 2, "workers": "10%", "factor": 3, "for_s": 4},
        ]
    )
    names = [worker_name(i) for i in range(sc.workers.count)]
    slow, crash = plan_faults(sc.faults, names, sc.duration_s, np.random.default_rng(sc.seed))
    assert (slow.kind, slow.start_s, slow.end_s, len(slow.workers)) == ("slow", 2, 6, 1)
    assert (crash.start_s, crash.end_s, crash.workers) == (10, 15, ("w-9",))


def test_a_percentage_of_the_fleet_selects_exactly_that_many_workers() -> None:
    sc = scenario_from_dict(
        {
            **base(faults=[{"kind": "slow", "at_s": 1, "workers": "7%", "factor": 2}]),
            "workers": {"count": 100},
        }
    )
    names = [worker_name(i) for i in range(100)]
    (slow,) = plan_faults(sc.faults, names, sc.duration_s, np.random.default_rng(0))
    assert len(slow.workers) == 7


# --- slo and recovery -----------------------------------------------------------------------


def test_slo_and_recovery_defaults() -> None:
    sc = parse()
    assert sc.slo == SloConfig()
    assert sc.recovery == RecoveryConfig()
    assert sc.to_dict()["slo"] == {"latency_ms": 500.0, "target": 0.999}
    assert sc.to_dict()["recovery"]["baseline_s"] == 30.0


def test_slo_and_recovery_values() -> None:
    sc = parse(slo={"latency_ms": 200, "target": 0.99}, recovery={"hold_s": 5, "bin_s": 0.5})
    assert sc.slo == SloConfig(latency_ms=200.0, target=0.99)
    assert (sc.recovery.hold_s, sc.recovery.bin_s) == (5.0, 0.5)


@pytest.mark.parametrize(
    ("extra", "path", "fragment"),
    [
        ({"slo": {"target": 1.0}}, "slo.target", "must be below 1"),
        ({"slo": {"target": 1}}, "slo.target", "no error budget"),
        ({"slo": {"target": 0}}, "slo.target", "must be > 0"),
        ({"slo": {"target": 99.9}}, "slo.target", "must be <= 1"),
        ({"slo": {"latency_ms": 0}}, "slo.latency_ms", "must be > 0"),
        ({"slo": {"latency": 200}}, "slo.latency", "did you mean 'latency_ms'?"),
        ({"recovery": {"hold_s": 0}}, "recovery.hold_s", "must be > 0"),
        ({"recovery": {"error_rate_tolerance": 2}}, "recovery.error_rate_tolerance", "<= 1"),
        ({"recovery": {"baseline": 10}}, "recovery.baseline", "did you mean 'baseline_s'?"),
    ],
)
def test_bad_slo_and_recovery(extra: dict[str, Any], path: str, fragment: str) -> None:
    err = error(**extra)
    assert err.path == path
    assert fragment in err.message


# --- alerts ---------------------------------------------------------------------------------


def test_no_alerts_unless_asked() -> None:
    sc = parse()
    assert sc.alerts is None
    assert sc.to_dict()["alerts"] is None
    assert parse(alerts=None).alerts is None


def test_alert_rules_and_defaults() -> None:
    sc = parse(alerts={"rules": [{**RULE, "labels": {"team": "core"}}, BURN]})
    assert sc.alerts is not None
    threshold, burn = sc.alerts.rules
    assert threshold == ThresholdRule(
        "HighP99", "latency_p99_ms", ">", 200.0, 0.0, "warning", (("team", "core"),)
    )
    assert burn == BurnRateRule("Burn", 60.0, 5.0, 14.4, 0.0, "page")
    assert sc.alerts.evaluation_interval_s == 1.0
    assert sc.alerts.group_by == ("name",)
    assert (sc.alerts.silences, sc.alerts.escalations) == ((), ())
    resolved = sc.to_dict()["alerts"]
    assert resolved["rules"][0]["severity"] == "warning"
    assert resolved["rules"][1]["kind"] == "burn_rate"
    assert (resolved["silences"], resolved["escalation"]) == ([], {})


def test_alert_silences_and_escalation() -> None:
    sc = parse(
        alerts={
            "rules": [RULE],
            "silences": [{"matchers": {"name": "HighP99"}, "to_s": 10}],
            "escalation": {"page": {"after_s": 10, "to": "critical"}},
        }
    )
    assert sc.alerts is not None
    assert sc.alerts.silences == (Silence((("name", "HighP99"),), 0.0, 10.0),)
    assert sc.alerts.escalations == (Escalation("page", 10.0, "critical"),)


def _alerts(**overrides: Any) -> dict[str, Any]:
    return {"rules": [RULE], **overrides}


@pytest.mark.parametrize(
    ("alerts", "path", "fragment"),
    [
        ({}, "alerts.rules", "must be a non-empty list of rules"),
        ({"rules": []}, "alerts.rules", "must be a non-empty list of rules"),
        (
            {"rules": [{**RULE, "metric": "p99"}]},
            "alerts.rules.0.metric",
            f"unknown value 'p99' (choose one of: {', '.join(METRICS)})",
        ),
        ({"rules": [{**RULE, "op": "=>"}]}, "alerts.rules.0.op", "choose one of: >, >=, <"),
        ({"rules": [{**RULE, "threshold": "high"}]}, "alerts.rules.0.threshold", "a number"),
        ({"rules": [RULE, BURN, RULE]}, "alerts.rules.2.name", "duplicate rule name 'HighP99'"),
        ({"rules": [{**RULE, "kind": "absence"}]}, "alerts.rules.0.kind", "threshold, burn_rate"),
        (
            {"rules": [{**BURN, "short_window_s": 60}]},
            "alerts.rules.0.short_window_s",
            "must be shorter than long_window_s (60)",
        ),
        (
            {"rules": [{**BURN, "short_window_s": 90}]},
            "alerts.rules.0.short_window_s",
            "shorter than long_window_s",
        ),
        ({"rules": [{**BURN, "factor": 0}]}, "alerts.rules.0.factor", "must be > 0"),
        (
            {"rules": [{**RULE, "for": 2}]},
            "alerts.rules.0.for",
            "unknown key 'for' (did you mean 'for_s'?",
        ),
        (
            {"rules": [{**BURN, "metric": "error_rate"}]},
            "alerts.rules.0.metric",
            "unknown key 'metric'",
        ),
        ({"rules": [{**RULE, "labels": ["a"]}]}, "alerts.rules.0.labels", "mapping"),
        (
            _alerts(silences=[{"matchers": {"name": "HighP99"}, "from_s": 10, "to_s": 10}]),
            "alerts.silences.0.to_s",
            "must be after from_s (10)",
        ),
        (
            _alerts(silences=[{"matchers": {"name": "HighP99"}, "from_s": 10, "to_s": 5}]),
            "alerts.silences.0.to_s",
            "must be after from_s",
        ),
        (_alerts(silences=[{"to_s": 5}]), "alerts.silences.0.matchers", "is required"),
        (_alerts(silences=[{"matchers": {}, "to_s": 5}]), "alerts.silences.0.matchers", "mapping"),
        (_alerts(silences={"to_s": 5}), "alerts.silences", "must be a list of silences"),
        (
            _alerts(escalation=[{"after_s": 10, "to": "critical"}]),
            "alerts.escalation",
            "must map a severity to {after_s, to}",
        ),
        (_alerts(escalation="page"), "alerts.escalation", "must map a severity"),
        (
            _alerts(escalation={"page": {"to": "critical"}}),
            "alerts.escalation.page.after_s",
            "is required",
        ),
        (_alerts(escalation={"page": 10}), "alerts.escalation.page", "must be a mapping"),
        (_alerts(evaluation_interval_s=0), "alerts.evaluation_interval_s", "must be > 0"),
        (_alerts(group_by=[]), "alerts.group_by", "must not be empty"),
        (_alerts(rule=[RULE]), "alerts.rule", "did you mean 'rules'?"),
    ],
)
def test_bad_alerts_name_the_key(alerts: dict[str, Any], path: str, fragment: str) -> None:
    err = error(alerts=alerts)
    assert err.path == path
    assert fragment in err.message


@pytest.mark.parametrize("label", ["name", "severity"])
def test_reserved_rule_label_is_a_scenario_error(label: str) -> None:
    err = error(alerts={"rules": [{**RULE, "labels": {label: "x"}}]})
    assert err.path.startswith("alerts.rules.0")


def test_escalation_to_the_same_severity_is_a_scenario_error() -> None:
    err = error(alerts=_alerts(escalation={"page": {"after_s": 10, "to": "page"}}))
    assert err.path.startswith("alerts.escalation")


# --- registry detector ----------------------------------------------------------------------


def test_timeout_detector_is_the_default_and_has_no_phi() -> None:
    sc = parse()
    assert (sc.registry.detector, sc.registry.phi) == ("timeout", {})
    assert sc.to_dict()["registry"]["detector"] == "timeout"


def test_phi_accrual_defaults() -> None:
    sc = parse(registry={"detector": "phi_accrual"})
    assert sc.registry.detector == "phi_accrual"
    assert sc.registry.phi == {
        "threshold": 8.0,
        "suspect_threshold": 4.0,
        "window": 100,
        "min_std_s": 0.1,
        "acceptable_pause_s": 0.0,
    }
    assert sc.to_dict()["registry"]["phi"]["min_std_ms"] == 100.0


def test_phi_params_resolve_to_seconds_and_suspect_follows_threshold() -> None:
    phi = {"threshold": 10, "min_std_ms": 250, "acceptable_pause_ms": 500, "window": 20}
    sc = parse(registry={"detector": "phi_accrual", "phi": phi})
    assert sc.registry.phi == {
        "threshold": 10.0,
        "suspect_threshold": 5.0,
        "window": 20,
        "min_std_s": 0.25,
        "acceptable_pause_s": 0.5,
    }


def test_phi_params_are_checked_even_for_the_timeout_detector() -> None:
    sc = parse(registry={"phi": {"threshold": 6, "suspect_threshold": 6}})
    assert sc.registry.detector == "timeout"
    assert sc.registry.phi["suspect_threshold"] == 6.0
    assert error(registry={"phi": {"treshold": 6}}).path == "registry.phi.treshold"


def test_detector_override_on_the_shipped_comparison() -> None:
    path = SCENARIOS / "detector_comparison.yaml"
    assert load_scenario(path).registry.detector == "timeout"
    sc = load_scenario(path, ["registry.detector=phi_accrual"])
    assert sc.registry.detector == "phi_accrual"
    assert sc.registry.phi["threshold"] == sc.registry.phi["suspect_threshold"] == 8.0


@pytest.mark.parametrize(
    ("registry", "path", "fragment"),
    [
        (
            {"detector": "phi_accrual", "phi": {"suspect_threshold": 9}},
            "registry.phi.suspect_threshold",
            "must not exceed threshold (8), got 9",
        ),
        (
            {"detector": "phi_accrual", "phi": {"threshold": 4, "suspect_threshold": 5}},
            "registry.phi.suspect_threshold",
            "must not exceed threshold (4)",
        ),
        ({"detector": "gossip"}, "registry.detector", "choose one of: timeout, phi_accrual"),
        ({"detector": "phi_accrual", "phi": {"threshold": 0}}, "registry.phi.threshold", "> 0"),
        ({"detector": "phi_accrual", "phi": {"window": 1}}, "registry.phi.window", ">= 2"),
        ({"detector": "phi_accrual", "phi": 8}, "registry.phi", "must be a mapping"),
    ],
)
def test_bad_detector_settings(registry: dict[str, Any], path: str, fragment: str) -> None:
    err = error(registry=registry)
    assert err.path == path
    assert fragment in err.message


# --- gateway resilience ---------------------------------------------------------------------


def test_resilience_is_off_unless_asked() -> None:
    sc = parse()
    gw = sc.gateway
    assert (gw.attempt_timeout_ms, gw.retry_budget, gw.hedge_after_ms) == (None, None, None)
    assert (gw.outlier, gw.breaker, gw.panic_threshold) == (None, None, 0.5)
    resolved = sc.to_dict()["gateway"]
    assert resolved["retries"]["budget"] is None
    assert resolved["retries"]["attempt_timeout_ms"] is None
    for key in ("hedging", "outlier_detection", "circuit_breaker"):
        assert resolved[key] is None


def test_empty_resilience_sections_mean_enabled_with_defaults() -> None:
    sc = parse(
        gateway={
            "retries": {"budget": {}},
            "outlier_detection": {},
            "circuit_breaker": {},
            "hedging": {"after_ms": 50},
        }
    )
    gw = sc.gateway
    assert gw.retry_budget == RetryBudgetConfig()
    assert gw.outlier == OutlierConfig()
    assert gw.outlier.max_ejection_fraction == 0.1
    assert gw.breaker == BreakerConfig()
    assert (gw.hedge_after_ms, gw.hedge_max_extra) == (50.0, 1)
    resolved = sc.to_dict()["gateway"]
    assert resolved["outlier_detection"] == {
        "consecutive_errors": 5,
        "base_ejection_s": 30.0,
        "max_ejection_s": 300.0,
        "max_ejection_percent": 10.0,
    }
    assert resolved["retries"]["budget"] == {"ratio": 0.2, "min_per_s": 10.0, "window_s": 10.0}
    assert resolved["circuit_breaker"]["close_after"] == 2
    assert resolved["hedging"] == {"after_ms": 50.0, "max_extra": 1}


def test_resilience_values() -> None:
    gw = parse(
        gateway={
            "retries": {"max_attempts": 3, "attempt_timeout_ms": 250, "budget": {"ratio": 0.1}},
            "hedging": {"after_ms": 100, "max_extra": 2},
            "outlier_detection": {"consecutive_errors": 3, "max_ejection_percent": 30},
            "circuit_breaker": {"failure_threshold": 4, "open_s": 5},
            "panic_threshold": 0,
        }
    ).gateway
    assert gw.attempt_timeout_ms == 250.0
    assert gw.retry_budget == RetryBudgetConfig(ratio=0.1)
    assert (gw.hedge_after_ms, gw.hedge_max_extra) == (100.0, 2)
    assert gw.outlier == OutlierConfig(consecutive_errors=3, max_ejection_fraction=0.3)
    assert gw.breaker == BreakerConfig(failure_threshold=4, open_s=5.0)
    assert gw.panic_threshold == 0.0


@pytest.mark.parametrize("value", [0, 0.25, 1])
def test_panic_threshold_accepts_zero_to_one(value: float) -> None:
    assert parse(gateway={"panic_threshold": value}).gateway.panic_threshold == value


@pytest.mark.parametrize(
    ("gateway", "path", "fragment"),
    [
        ({"panic_threshold": -0.1}, "gateway.panic_threshold", "must be >= 0"),
        ({"panic_threshold": 1.5}, "gateway.panic_threshold", "must be <= 1"),
        ({"hedging": {}}, "gateway.hedging.after_ms", "is required"),
        ({"hedging": {"max_extra": 2}}, "gateway.hedging.after_ms", "is required"),
        ({"hedging": {"after_ms": 0}}, "gateway.hedging.after_ms", "must be > 0"),
        ({"hedging": {"after_ms": 5, "max_extra": 0}}, "gateway.hedging.max_extra", ">= 1"),
        ({"hedging": 100}, "gateway.hedging", "must be a mapping"),
        ({"retries": {"attempt_timeout_ms": 0}}, "gateway.retries.attempt_timeout_ms", "> 0"),
        ({"retries": {"budget": {"ratio": -1}}}, "gateway.retries.budget.ratio", ">= 0"),
        ({"retries": {"budget": {"window_s": 0}}}, "gateway.retries.budget.window_s", "> 0"),
        ({"retries": {"budget": {"rate": 1}}}, "gateway.retries.budget.rate", "'ratio'"),
        (
            {"outlier_detection": {"max_ejection_percent": 120}},
            "gateway.outlier_detection.max_ejection_percent",
            "must be <= 100",
        ),
        (
            {"outlier_detection": {"consecutive_error": 3}},
            "gateway.outlier_detection.consecutive_error",
            "did you mean 'consecutive_errors'?",
        ),
        (
            {"circuit_breaker": {"failure_threshold": 0}},
            "gateway.circuit_breaker.failure_threshold",
            ">= 1",
        ),
        ({"circuit_breaker": {"open": 5}}, "gateway.circuit_breaker.open", "'open_s'"),
        ({"outlier_detection": True}, "gateway.outlier_detection", "must be a mapping"),
    ],
)
def test_bad_gateway_resilience(gateway: dict[str, Any], path: str, fragment: str) -> None:
    err = error(gateway=gateway)
    assert err.path == path
    assert fragment in err.message


GOOD_FILE = """\
name: t
duration_s: 60
workers:
  count: 10
workload:
  arrival: {rate_rps: 100}
"""


RESILIENT = """\
name: t
duration_s: 60
workers: {count: 10}
workload:
  arrival: {rate_rps: 100}
gateway:
  retries: {max_attempts: 2, budget: {ratio: 0.1}}
  hedging: {after_ms: 100}
  outlier_detection: {consecutive_errors: 3}
  circuit_breaker: {open_s: 5}
"""


@pytest.mark.parametrize(
    ("override", "attribute", "resolved"),
    [
        ("gateway.outlier_detection=null", "outlier", ("outlier_detection",)),
        ("gateway.circuit_breaker=null", "breaker", ("circuit_breaker",)),
        ("gateway.hedging=null", "hedge_after_ms", ("hedging",)),
        ("gateway.retries.budget=null", "retry_budget", ("retries", "budget")),
    ],
)
def test_null_override_turns_a_resilience_section_off(
    tmp_path: Path, override: str, attribute: str, resolved: tuple[str, ...]
) -> None:
    path = write(tmp_path, RESILIENT)
    assert getattr(load_scenario(path).gateway, attribute) is not None
    sc = load_scenario(path, [override])
    assert getattr(sc.gateway, attribute) is None
    node: Any = sc.to_dict()["gateway"]
    for key in resolved:
        node = node[key]
    assert node is None


def test_empty_mapping_override_turns_outlier_detection_on_with_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_FILE)
    assert load_scenario(path).gateway.outlier is None
    sc = load_scenario(path, ["gateway.outlier_detection={}"])
    assert sc.gateway.outlier == OutlierConfig()


# --- errors from a file carry the line of the bad key ---------------------------------------


@pytest.mark.parametrize(
    ("tail", "path", "line", "fragment"),
    [
        (
            """\
            faults:
              - kind: crash
                at_s: 5
                workers: 0
            """,
            "faults.0.workers",
            10,
            "fleet size (10)",
        ),
        (
            """\
            faults:
              - {kind: partition, at_s: 1, workers: 1}
              - kind: slow
                at_s: 5
                workers: ["w-1"]
                factr: 8
            """,
            "faults.1.factor",
            9,
            "found 'factr'",
        ),
        (
            """\
            alerts:
              rules:
                - name: A
                  metric: p99
                  op: ">"
                  threshold: 1
            """,
            "alerts.rules.0.metric",
            10,
            "unknown value 'p99'",
        ),
        (
            """\
            gateway:
              timeout_ms: 2000
              outlier_detection:
                consecutive_errors: 3
                max_ejection_pct: 30
            """,
            "gateway.outlier_detection.max_ejection_pct",
            11,
            "did you mean 'max_ejection_percent'?",
        ),
    ],
)
def test_file_errors_carry_the_line_of_the_bad_key(
    tmp_path: Path, tail: str, path: str, line: int, fragment: str
) -> None:
    file = write(tmp_path, GOOD_FILE + textwrap.dedent(tail))
    with pytest.raises(ScenarioError) as info:
        load_scenario(file)
    err = info.value
    assert (err.path, err.line) == (path, line)
    assert fragment in err.message
    assert str(err).startswith(f"{file}:{line}: {path}: ")
