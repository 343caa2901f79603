"""Per-fault recovery metrics on hand-built runs whose figures can be worked out on paper.

The standard run: 100 requests/s, one every 10 ms from t = 0 (request k arrives at k/100 s) for
120 s, warm-up 10 s (so 11,000 measured requests), every request completing in 5 ms. Latencies
are stored exactly (not as end − arrival) so thresholds compare without rounding noise; every
request ends inside its arrival second, so bins hold exactly 100 requests each.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from labkit.core.outcomes import Final
from labkit.core.slo import RecoveryConfig, SloConfig
from labkit.results.recovery import (
    COLUMNS,
    _Bins,
    _status_codes,
    recovery_summary,
    recovery_table,
    slo_summary,
)
from labkit.results.summary import timeseries

DURATION = 120.0
WARMUP = 10.0
RATE = 100
SLO = SloConfig(latency_ms=7.0, target=0.99)

COMPLETED, FAILED, REJECTED, TIMED_OUT = (int(f) for f in Final)
DETAIL_OF = {COMPLETED: "ok", FAILED: "worker_error", REJECTED: "queue_full", TIMED_OUT: "deadline"}


class Run:
    """Columns of a synthetic run, editable by request index before ``frame()``."""

    def __init__(self, duration: float = DURATION, rate: int = RATE, latency_ms: float = 5.0):
        n = int(duration * rate)
        self.arrival = np.arange(n) / rate
        self.latency = np.full(n, latency_ms)
        self.status = np.full(n, COMPLETED, dtype=np.int8)
        self.attempts = np.ones(n, dtype=np.int16)

    def k(self, t: float) -> int:
        """Index of the first request arriving at or after ``t``."""
        return int(np.searchsorted(self.arrival, t - 1e-9))

    def frame(self, warmup: float = WARMUP) -> pd.DataFrame:
        n = len(self.arrival)
        details = [DETAIL_OF[int(s)] for s in self.status]
        return pd.DataFrame(
            {
                "request": np.arange(n),
                "gateway": np.zeros(n, dtype=np.int16),
                "kind": pd.Categorical(["rpc"] * n, categories=["rpc", "publish"]),
                "agent_type": pd.Categorical(["a"] * n),
                "key": np.zeros(n, dtype=np.int64),
                "worker": pd.Categorical(["w-0"] * n, categories=["w-0", "w-1", ""]),
                "arrival_s": self.arrival,
                "end_s": self.arrival + self.latency / 1000.0,
                "latency_ms": self.latency,
                "status": pd.Categorical.from_codes(self.status, [f.label for f in Final]),
                "detail": pd.Categorical(details),
                "attempts": self.attempts,
                "fanout": np.ones(n, dtype=np.int64),
                "measured": self.arrival >= warmup,
            }
        )


def incident_run() -> Run:
    """From 60 s to 70 s: of every 4 requests one fails (after 3 attempts), one times out, and
    two complete slowly in 8 ms (over the 7 ms SLO). Each second: error rate 0.5."""
    run = Run()
    k0, k1 = run.k(60), run.k(70)
    block = np.arange(k0, k1)
    run.status[block[block % 4 == 0]] = FAILED
    run.attempts[block[block % 4 == 0]] = 3
    run.status[block[block % 4 == 2]] = TIMED_OUT
    run.latency[block[block % 2 == 0]] = 1.0
    run.latency[block[block % 2 == 1]] = 8.0
    return run


def fault_frame(*faults: dict) -> pd.DataFrame:
    rows = []
    for i, f in enumerate(faults):
        rows.append(
            {
                "fault": f.get("fault", i),
                "kind": f.get("kind", "flaky"),
                "origin": f.get("origin", "schedule"),
                "start_s": float(f["start"]),
                "end_s": math.nan if f.get("end") is None else float(f["end"]),
                "workers": tuple(f.get("workers", ("w-1",))),
                "params": f.get("params", {}),
            }
        )
    return pd.DataFrame(
        rows, columns=["fault", "kind", "origin", "start_s", "end_s", "workers", "params"]
    )


def event_frame(*events: tuple[float, str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"t_s": t, "worker": w, "source": s, "event": e, "gateway": ""} for t, w, s, e in events],
        columns=["t_s", "worker", "source", "event", "gateway"],
    )


def alert_frame(*alerts: tuple[str, float, float]) -> pd.DataFrame:
    cols = ["name", "severity", "group", "fired_at", "resolved_at", "value", "escalated"]
    cols += ["silenced", "duplicate", "notified"]
    return pd.DataFrame(
        [
            {"name": n, "severity": "page", "group": "", "fired_at": f, "resolved_at": r}
            | {"value": 1.0, "escalated": False, "silenced": False}
            | {"duplicate": False, "notified": True}
            for n, f, r in alerts
        ],
        columns=cols,
    )


def table(records, faults, events=None, alerts=None, *, slo=SLO, **config) -> pd.DataFrame:
    return recovery_table(
        records,
        faults,
        events if events is not None else event_frame(),
        alerts,
        slo=slo,
        config=RecoveryConfig(**config),
        warmup_s=WARMUP,
        duration_s=DURATION,
    )


# --------------------------------------------------------------------------------------------


def test_baseline_impact_recovery_and_cost_by_hand() -> None:
    t = table(incident_run().frame(), fault_frame({"start": 60, "end": 70}))
    assert list(t.columns) == list(COLUMNS)
    row = t.iloc[0]
    # baseline: requests ending in [30, 60) = k 3000..5999, all completed in 5 ms
    assert row.baseline_completed == 3000
    assert row.baseline_p99_ms == 5.0 and row.baseline_mean_ms == 5.0
    assert row.baseline_error_rate == 0.0
    assert row.p99_limit_ms == pytest.approx(5.0 * 1.25 + 5.0)
    assert row.error_rate_limit == pytest.approx(0.01)
    # bins 60..69 have error rate 0.5; 70, 71, 72 are clean
    assert row.impact_at_s == 60.0
    assert row.recovered_at_s == 70.0
    assert row.time_to_recover_s == 10.0
    assert row.recovered_after_end_s == 0.0
    # incident [60, 70): 1000 requests: 250 failed (2 retries each), 250 timed out, 500 in 8 ms
    assert (row.requests, row.completed, row.failed, row.timed_out, row.rejected) == (
        1000,
        500,
        250,
        250,
        0,
    )
    assert row.retried == 500
    assert row.extra_latency_ms_mean == pytest.approx(3.0)
    assert row.extra_latency_s_total == pytest.approx(500 * 3.0 / 1000)
    assert row.p99_ms_incident == pytest.approx(8.0)
    # every request in the incident was bad (failed, timed out, or 8 ms > 7 ms)
    assert row.bad_events == 1000
    assert row.error_budget_burned == pytest.approx(1000 / (0.01 * 11_000))
    assert (row.fault, row.kind, row.origin, row.workers) == (0, "flaky", "schedule", "w-1")
    assert row.overlaps == ""


def test_recovery_needs_hold_consecutive_clean_bins() -> None:
    run = incident_run()
    run.status[run.k(71) : run.k(71) + 10] = FAILED  # 10 % errors in second 71
    records = run.frame()
    row = table(records, fault_frame({"start": 60, "end": 70})).iloc[0]
    assert row.recovered_at_s == 72.0  # 70 clean, 71 breaches, 72-74 clean
    assert row.time_to_recover_s == 12.0
    assert row.requests == 1200 and row.failed == 250 + 10
    row = table(records, fault_frame({"start": 60, "end": 70}), hold_s=1.0).iloc[0]
    assert row.recovered_at_s == 70.0


def test_slow_latency_alone_is_an_impact() -> None:
    run = Run()
    run.latency[run.k(60) : run.k(65)] = 12.0  # 12 ms > 11.25 ms limit, no errors
    row = table(run.frame(), fault_frame({"start": 60, "end": 65, "kind": "slow"})).iloc[0]
    assert (row.impact_at_s, row.recovered_at_s) == (60.0, 65.0)
    assert row.failed == 0 and row.completed == 500
    assert row.extra_latency_ms_mean == pytest.approx(7.0)
    assert row.bad_events == 500


def test_stalled_bin_counts_as_impact_and_an_idle_bin_does_not() -> None:
    run = Run()
    # requests arriving in [60, 62) all end at 62.5: seconds 60 and 61 are offered but end nothing
    k0, k1 = run.k(60), run.k(62)
    run.latency[k0:k1] = (62.5 - run.arrival[k0:k1]) * 1000.0
    row = table(run.frame(), fault_frame({"start": 60, "end": 62})).iloc[0]
    assert row.impact_at_s == 60.0
    # second 62 has 300 completions, p99 way over the limit; 63.. are clean
    assert row.recovered_at_s == 63.0

    idle = Run()
    keep = (idle.arrival < 60) | (idle.arrival >= 62)  # nobody offered anything in [60, 62)
    frame = idle.frame()[keep].reset_index(drop=True)
    row = table(frame, fault_frame({"start": 60, "end": 62})).iloc[0]
    assert math.isnan(row.impact_at_s)
    assert row.time_to_recover_s == 0.0


def test_detection_from_events() -> None:
    events = event_frame(
        (59.0, "w-1", "registry", "suspect"),  # before the fault: not a detection of it
        (60.0, "w-1", "fault", "crash"),
        (60.1, "w-1", "registry", "healthy"),  # not a detecting event
        (60.5, "w-2", "outlier", "ejected"),  # another worker
        (61.2, "w-1", "outlier", "ejected"),
        (62.0, "w-1", "breaker", "open"),
        (62.5, "w-1", "breaker", "half_open"),
        (63.0, "w-1", "registry", "down"),
    )
    alerts = alert_frame(("HighErrorRate", 61.0, 75.0))
    faults = fault_frame({"start": 60, "end": 70, "kind": "crash"})
    row = table(incident_run().frame(), faults, events, alerts).iloc[0]
    assert row.detected_at_s == pytest.approx(61.2)
    assert row.time_to_detect_s == pytest.approx(1.2)
    assert row.detected_by == "outlier"  # worker signals beat the (earlier) alert
    assert row.detect_registry_s == pytest.approx(3.0)
    assert row.detect_outlier_s == pytest.approx(1.2)
    assert row.detect_breaker_s == pytest.approx(2.0)
    assert row.detect_alert_s == pytest.approx(1.0)

    row = table(incident_run().frame(), faults, events).iloc[0]  # no alerts table at all
    assert math.isnan(row.detect_alert_s) and row.detected_by == "outlier"


def test_fleet_wide_fault_is_detected_by_an_alert() -> None:
    events = event_frame((61.0, "w-1", "registry", "down"))  # not about a fleet-wide fault
    alerts = alert_frame(
        ("Old", 50.0, 55.0), ("HighP99", 64.0, math.nan), ("BudgetBurn", 66.0, 80.0)
    )
    faults = fault_frame({"start": 60, "end": 70, "kind": "latency_spike", "workers": ()})
    row = table(incident_run().frame(), faults, events, alerts).iloc[0]
    assert row.workers == ""
    assert row.detected_at_s == 64.0 and row.time_to_detect_s == 4.0
    assert row.detected_by == "alert:HighP99"
    assert row.detect_alert_s == 4.0
    assert math.isnan(row.detect_registry_s)


def test_worker_fault_without_worker_signals_falls_back_to_alerts() -> None:
    alerts = alert_frame(("HighErrorRate", 62.5, 71.0))
    row = table(incident_run().frame(), fault_frame({"start": 60, "end": 70}), None, alerts)
    assert row.iloc[0].detected_by == "alert:HighErrorRate"
    assert row.iloc[0].time_to_detect_s == 2.5


def test_undetected_fault() -> None:
    row = table(incident_run().frame(), fault_frame({"start": 60, "end": 70})).iloc[0]
    assert row.detected_by is None
    assert math.isnan(row.detected_at_s) and math.isnan(row.time_to_detect_s)


def test_signals_are_attributed_to_the_right_fault() -> None:
    records = Run().frame()  # no impact anywhere
    faults = fault_frame(
        {"start": 20, "end": 22, "workers": ("w-1",)},
        {"start": 40, "end": 45, "workers": ("w-1",)},
        {"start": 20, "end": 25, "workers": ("w-3",)},
    )
    events = event_frame(
        (41.0, "w-1", "registry", "down"),  # after fault 1 started on the same worker
        (200.0, "w-3", "outlier", "ejected"),  # long after fault 2 ended (grace 60 s)
    )
    t = table(records, faults, events)
    assert math.isnan(t.iloc[0].detect_registry_s)
    assert t.iloc[1].detect_registry_s == 1.0 and t.iloc[1].detected_by == "registry"
    assert math.isnan(t.iloc[2].detect_outlier_s)
    # a lagging detector within the grace still counts
    t = table(records, faults, event_frame((50.0, "w-3", "registry", "suspect")))
    assert t.iloc[2].time_to_detect_s == 30.0


def test_fault_without_impact_recovers_immediately() -> None:
    row = table(incident_run().frame(), fault_frame({"start": 100, "end": 105})).iloc[0]
    assert math.isnan(row.impact_at_s)
    assert row.recovered_at_s == 100.0 and row.time_to_recover_s == 0.0
    assert row.recovered_after_end_s == -5.0
    assert row.requests == 0 and row.bad_events == 0 and row.error_budget_burned == 0.0
    assert row.extra_latency_s_total == 0.0 and math.isnan(row.extra_latency_ms_mean)


def test_a_later_incident_is_not_an_earlier_faults_impact() -> None:
    run = Run()
    run.status[run.k(100) : run.k(105)] = FAILED
    row = table(run.frame(), fault_frame({"start": 60, "end": 62})).iloc[0]
    assert math.isnan(row.impact_at_s) and row.time_to_recover_s == 0.0


def test_never_recovered() -> None:
    run = Run()
    run.status[run.k(60) :] = FAILED  # a crash nobody repaired
    faults = fault_frame({"start": 60, "end": None, "kind": "crash"})
    row = table(run.frame(), faults).iloc[0]
    assert row.impact_at_s == 60.0
    assert math.isnan(row.recovered_at_s) and math.isnan(row.time_to_recover_s)
    assert math.isnan(row.end_s) and math.isnan(row.recovered_after_end_s)
    # the incident runs to the end of the data: arrivals 60.00 .. 119.99
    assert row.requests == 6000 and row.failed == 6000 and row.completed == 0
    assert row.error_budget_burned == pytest.approx(6000 / (0.01 * 11_000))
    assert math.isnan(row.p99_ms_incident)


def test_short_baseline_window_widens_to_all_pre_fault_data() -> None:
    run = incident_run()
    run.latency[run.k(59.7) : run.k(60)] = 9.0  # the last 30 requests before the fault
    row = table(run.frame(), fault_frame({"start": 60, "end": 70}), baseline_s=0.3).iloc[0]
    # [59.7, 60) holds 30 < 50 completions, so the baseline is every measured request before 60
    assert row.baseline_completed == 5000
    assert row.baseline_mean_ms == pytest.approx((4970 * 5.0 + 30 * 9.0) / 5000)
    assert row.baseline_p99_ms == pytest.approx(float(np.percentile([5.0] * 4970 + [9.0] * 30, 99)))


def test_no_pre_fault_data_uses_absolute_tolerances() -> None:
    row = table(incident_run().frame(), fault_frame({"start": WARMUP, "end": 15})).iloc[0]
    assert row.baseline_completed == 0
    assert math.isnan(row.baseline_p99_ms) and math.isnan(row.baseline_mean_ms)
    assert math.isnan(row.baseline_error_rate)
    assert row.p99_limit_ms == 5.0 and row.error_rate_limit == pytest.approx(0.01)
    assert math.isnan(row.impact_at_s)  # 5 ms is not above the 5 ms slack
    assert math.isnan(row.extra_latency_s_total)
    # a fault during warm-up: no measured data before it either
    row = table(incident_run().frame(), fault_frame({"start": 5, "end": 8})).iloc[0]
    assert row.baseline_completed == 0 and math.isnan(row.baseline_error_rate)
    assert math.isnan(row.impact_at_s) and row.requests == 0


def test_overlaps() -> None:
    faults = fault_frame(
        {"start": 60, "end": 70, "workers": ("w-1",)},
        {"start": 65, "end": 66, "workers": (), "kind": "latency_spike"},
        {"start": 100, "end": 105, "workers": ("w-2",)},
    )
    t = table(incident_run().frame(), faults)
    assert list(t.overlaps) == ["1", "0", ""]
    # fault 1 landed in fault 0's incident: impact at once, recovered with it
    assert (t.iloc[1].impact_at_s, t.iloc[1].recovered_at_s) == (65.0, 70.0)


def test_no_slo_leaves_budget_columns_nan() -> None:
    row = table(incident_run().frame(), fault_frame({"start": 60, "end": 70}), slo=None).iloc[0]
    assert math.isnan(row.bad_events) and math.isnan(row.error_budget_burned)
    assert row.failed == 250


def test_empty_faults_give_an_empty_table_with_the_columns() -> None:
    empty = fault_frame()
    t = table(incident_run().frame(), empty)
    assert t.empty and list(t.columns) == list(COLUMNS)
    assert recovery_summary(t) == []


def test_recovery_summary_is_json_ready() -> None:
    faults = fault_frame(
        {"start": 60, "end": 70},
        {"start": 80, "end": None, "kind": "crash", "workers": ("w-1", "w-2")},
    )
    alerts = alert_frame(("HighErrorRate", 61.0, 75.0))
    summary = recovery_summary(table(incident_run().frame(), faults, None, alerts))
    text = json.dumps(summary, allow_nan=False)  # no NaN, no numpy scalars
    back = json.loads(text)
    assert [f["fault"] for f in back] == [0, 1]
    assert set(back[0]) == set(COLUMNS)
    assert back[0]["time_to_recover_s"] == 10.0 and back[0]["failed"] == 250
    assert back[0]["detected_by"] == "alert:HighErrorRate"
    assert back[1]["end_s"] is None and back[1]["workers"] == "w-1,w-2"
    assert back[1]["impact_at_s"] is None and back[1]["detected_by"] is None
    assert type(summary[0]["requests"]) is int and type(summary[0]["start_s"]) is float


def test_slo_summary_by_hand() -> None:
    s = slo_summary(incident_run().frame(), SLO, warmup_s=WARMUP, duration_s=DURATION)
    json.dumps(s, allow_nan=False)
    assert s["events"] == 11_000
    assert s["bad"] == 1000 and s["good"] == 10_000
    assert s["allowance"] == pytest.approx(110.0)
    assert s["budget_consumed"] == pytest.approx(1000 / 110, abs=1e-6)
    assert s["burn_rate"] == pytest.approx(1000 / 110, abs=1e-6)
    assert s["met"] is False
    clean = slo_summary(Run().frame(), SLO, warmup_s=WARMUP, duration_s=DURATION)
    assert clean["bad"] == 0 and clean["budget_consumed"] == 0.0 and clean["met"] is True
    none = slo_summary(Run().frame().iloc[:0], SLO, warmup_s=WARMUP, duration_s=DURATION)
    assert none["events"] == 0 and none["burn_rate"] == 0.0


def test_bins_match_the_timeseries() -> None:
    rng = np.random.default_rng(7)
    n = 20_000
    run = Run(duration=100, rate=200)
    run.latency = rng.exponential(40.0, n)
    run.status = rng.choice([COMPLETED, FAILED, TIMED_OUT], n, p=[0.9, 0.07, 0.03]).astype(np.int8)
    records = run.frame()
    records["latency_ms"] = (records["end_s"] - records["arrival_s"]) * 1000.0
    series = timeseries(records, 100.0)
    bins = _Bins(records, _status_codes(records["status"]), 100.0, 1.0)
    assert bins.n == len(series)
    np.testing.assert_array_equal(bins.offered, series["offered"])
    np.testing.assert_allclose(bins.error_rate, series["error_rate"])
    np.testing.assert_allclose(bins.p99, series["p99_ms"], rtol=1e-12)


def test_status_codes_ignore_category_order() -> None:
    status = pd.Series(
        pd.Categorical(["failed", "completed", "timed_out"], ["timed_out", "failed", "completed"])
    )
    assert list(_status_codes(status)) == [FAILED, COMPLETED, TIMED_OUT]
    assert list(_status_codes(pd.Series(["rejected", "completed"]))) == [REJECTED, COMPLETED]


def test_many_records_and_dozens_of_faults() -> None:
    """A stress shape (speed is measured by benchmarks, never asserted here)."""
    rng = np.random.default_rng(1)
    n = 200_000
    run = Run(duration=1000, rate=200)
    run.latency = rng.exponential(20.0, n)
    run.status = rng.choice([COMPLETED, FAILED, REJECTED], n, p=[0.98, 0.01, 0.01]).astype(np.int8)
    run.attempts = rng.integers(1, 3, n).astype(np.int16)
    records = run.frame()
    workers = [f"w-{i}" for i in range(20)]
    faults = fault_frame(
        *(
            {
                "start": float(s),
                "end": None if i % 7 == 0 else float(s + 20),
                "workers": () if i % 5 == 0 else (workers[i % 20],),
            }
            for i, s in enumerate(np.linspace(50, 950, 40))
        )
    )
    m = 20_000
    events = pd.DataFrame(
        {
            "t_s": np.sort(rng.uniform(0, 1000, m)),
            "worker": rng.choice(workers, m),
            "source": rng.choice(["registry", "outlier", "breaker"], m),
            "event": rng.choice(["down", "ejected", "open", "healthy"], m),
            "gateway": "",
        }
    )
    alerts = alert_frame(
        *((f"A{i}", float(t), float(t) + 5) for i, t in enumerate(range(0, 1000, 37)))
    )
    t = recovery_table(records, faults, events, alerts, slo=SLO, warmup_s=WARMUP, duration_s=1000.0)
    assert len(t) == 40
    assert t["fault"].tolist() == list(range(40))
    assert (t["requests"] >= 0).all()
