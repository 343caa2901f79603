"""The simulator under faults: what each fault does to requests, and what notices it.

Each test builds a small fleet where the expected effect can be reasoned out by hand, runs it,
and checks the records, events and recovery figures against that reasoning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from labkit.core.retry_budget import RetryBudgetConfig
from labkit.scenario import load_scenario, scenario_from_dict
from labkit.sim import simulate
from tests.conftest import SCENARIOS

FAILURE_SCENARIOS = sorted(p for p in SCENARIOS.glob("*.yaml") if "faults:" in p.read_text())


def fleet(**sections: Any) -> dict[str, Any]:
    """10 workers at ~50 % load with fast, near-constant service; sections override."""
    data: dict[str, Any] = {
        "name": "faulty",
        "seed": 3,
        "duration_s": 30,
        "warmup_s": 2,
        "workers": {
            "count": 10,
            "concurrency": 2,
            "service_time": {"dist": "exponential", "mean_ms": 10},
        },
        "network": {"latency": {"dist": "constant", "value_ms": 1}},
        "workload": {"arrival": {"process": "poisson", "rate_rps": 1000}},
        "gateway": {"timeout_ms": 1000},
        "balancer": {"strategy": "round_robin"},
        "registry": {
            "heartbeat_interval_ms": 500,
            "failure_timeout_ms": 1500,
            "suspect_timeout_ms": 1000,
            "check_interval_ms": 100,
        },
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def run(data: dict[str, Any]):  # type: ignore[no-untyped-def]
    return simulate(scenario_from_dict(data))


def conserved(results) -> None:  # type: ignore[no-untyped-def]
    req = results.summary["requests"]
    assert req["offered"] == req["completed"] + req["failed"] + req["rejected"] + req["timed_out"]
    assert len(results.records) == results.summary["requests_total"]
    assert results.records["end_s"].ge(results.records["arrival_s"]).all()


@pytest.mark.parametrize("path", FAILURE_SCENARIOS, ids=lambda p: p.stem)
def test_every_failure_scenario_ends_every_request_and_reports_each_fault(path: Path) -> None:
    results = simulate(load_scenario(path))
    conserved(results)
    faults = results.summary["faults"]
    assert len(faults) == len(results.faults) > 0
    for f in faults:
        assert f["start_s"] >= 0
        assert f["time_to_recover_s"] is None or f["time_to_recover_s"] >= 0
    assert results.summary["slo"]["events"] == results.summary["requests"]["offered"]


def test_a_reset_crash_fails_in_flight_work_at_once_and_retries_move_it() -> None:
    no_retry = run(fleet(faults=[{"at_s": 10, "kind": "crash", "workers": ["w-0", "w-1"]}]))
    conserved(no_retry)
    lost = no_retry.records[no_retry.records["detail"] == "worker_lost"]
    assert len(lost) > 0
    # in-flight work fails one hop after the crash (or when sent to the dead worker)
    assert lost["end_s"].min() >= 10.0
    assert set(lost["worker"]) <= {"w-0", "w-1"}
    assert int(no_retry.workers.set_index("worker").loc[["w-0", "w-1"], "lost"].sum()) > 0
    retried = run(
        fleet(
            faults=[{"at_s": 10, "kind": "crash", "workers": ["w-0", "w-1"]}],
            gateway={"timeout_ms": 1000, "retries": {"max_attempts": 3}},
        )
    )
    conserved(retried)
    assert retried.summary["details"].get("worker_lost", 0) < len(lost) / 10
    assert retried.summary["retries"] > 0


def test_a_stale_view_routes_to_a_hung_worker_until_detection_and_ttl() -> None:
    """With connection: hang nothing comes back; the eventual view keeps the dead worker
    routable until the registry marks it (1-1.5 s) and the gateway's snapshot expires (2 s)."""
    data = fleet(
        faults=[{"at_s": 10, "kind": "crash", "workers": ["w-4"], "connection": "hang"}],
        registry={
            "heartbeat_interval_ms": 500,
            "failure_timeout_ms": 1500,
            "suspect_timeout_ms": 1000,
            "check_interval_ms": 100,
            "consistency": "eventual",
            "cache_ttl_ms": 2000,
        },
    )
    results = run(data)
    conserved(results)
    rec = results.records
    to_dead = rec[(rec["worker"] == "w-4") & (rec["arrival_s"] >= 10.0)]
    assert (to_dead["detail"] == "deadline").all() and len(to_dead) > 0
    events = results.events
    suspect = events[(events["worker"] == "w-4") & (events["source"] == "registry")]["t_s"].min()
    assert 10.5 <= suspect <= 11.1  # last beat in [9.5, 10), suspect after 1 s of silence
    # the snapshot may be up to 2 s old when it is read: nothing new goes there after that
    assert to_dead["arrival_s"].max() < suspect + 2.0 + 1e-9
    # and with a strong view the stale window is gone: nothing is sent after detection
    strong = run({**data, "registry": {**data["registry"], "consistency": "strong"}})
    rec = strong.records
    late = rec[(rec["worker"] == "w-4") & (rec["arrival_s"] > suspect + 0.11)]
    assert len(late) == 0


def test_restart_re_registers_and_serves_again() -> None:
    results = run(
        fleet(faults=[{"at_s": 8, "kind": "crash", "workers": ["w-2"], "restart_after_s": 5}])
    )
    ev = results.events
    mine = ev[ev["worker"] == "w-2"]
    assert list(mine[mine["source"] == "fault"]["event"]) == ["crash", "restart"]
    registry = mine[mine["source"] == "registry"]
    assert list(registry["event"])[-1] == "healthy"
    assert registry["t_s"].iloc[-1] == pytest.approx(13.0)
    served_after = results.records[
        (results.records["worker"] == "w-2") & (results.records["arrival_s"] > 16)
    ]
    assert (served_after["status"] == "completed").all() and len(served_after) > 100


def test_a_partition_silences_heartbeats_and_drops_replies_until_it_heals() -> None:
    results = run(
        fleet(
            faults=[{"at_s": 10, "kind": "partition", "workers": ["w-5"], "for_s": 5}],
            gateway={"timeout_ms": 1000, "retries": {"max_attempts": 2, "attempt_timeout_ms": 200}},
        )
    )
    conserved(results)
    ev = results.events
    reg = ev[(ev["worker"] == "w-5") & (ev["source"] == "registry")]
    assert list(reg["event"]) == ["suspect", "down", "healthy"]
    assert 15.0 <= reg["t_s"].iloc[-1] <= 15.6  # the first heartbeat after healing
    # attempts into the partition time out and are retried elsewhere
    assert results.summary["retries"] > 0
    assert results.summary["requests"]["timed_out"] < results.summary["retries"]
    health = results.health
    cut = health[(health["worker"] == "w-5") & (health["t_s"] == 12.0)]
    assert cut["actual"].iloc[0] == "partitioned"
    assert cut["registry"].iloc[0] in ("suspect", "down")


def test_slow_workers_take_factor_times_longer_while_it_lasts() -> None:
    base = fleet(
        workers={
            "count": 4,
            "concurrency": 1,
            "service_time": {"dist": "constant", "value_ms": 10},
        },
        network={"latency": None},
        workload={"arrival": {"process": "poisson", "rate_rps": 20}},
    )
    results = run(
        {
            **base,
            "faults": [{"at_s": 10, "kind": "slow", "workers": ["w-1"], "factor": 5, "for_s": 10}],
        }
    )
    rec = results.records
    during = rec[(rec["worker"] == "w-1") & (rec["arrival_s"] > 10.1) & (rec["arrival_s"] < 19.9)]
    after = rec[(rec["worker"] == "w-1") & (rec["arrival_s"] > 20.1)]
    # at 5 requests/s per worker queueing is rare: latency ≈ service time
    assert during["latency_ms"].median() == pytest.approx(50.0, rel=0.02)
    assert after["latency_ms"].median() == pytest.approx(10.0, rel=0.02)


def test_flaky_workers_fail_about_error_rate_of_their_requests() -> None:
    results = run(
        fleet(
            duration_s=60,
            faults=[{"at_s": 5, "kind": "flaky", "workers": ["w-3"], "error_rate": 0.3}],
        )
    )
    rec = results.records
    mine = rec[(rec["worker"] == "w-3") & (rec["arrival_s"] > 5.1)]
    errors = (mine["detail"] == "worker_error").mean()
    n = len(mine)
    assert abs(errors - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n)  # 4 standard errors
    others = rec[(rec["worker"] != "w-3")]
    assert (others["detail"] != "worker_error").all()


def test_a_latency_spike_adds_extra_ms_on_both_hops() -> None:
    results = run(
        fleet(
            workers={
                "count": 10,
                "concurrency": 4,
                "service_time": {"dist": "constant", "value_ms": 5},
            },
            faults=[{"at_s": 10, "kind": "latency_spike", "extra_ms": 40, "for_s": 5}],
        )
    )
    rec = results.records
    before = rec[(rec["arrival_s"] > 5) & (rec["arrival_s"] < 9.9)]["latency_ms"].median()
    during = rec[(rec["arrival_s"] > 10.1) & (rec["arrival_s"] < 14.9)]["latency_ms"].median()
    assert during - before == pytest.approx(80.0, abs=1.0)
    assert results.faults["workers"].iloc[0] == ()


def test_hedging_rescues_requests_from_a_hung_worker() -> None:
    faults = [{"at_s": 5, "kind": "crash", "workers": ["w-0", "w-1"], "connection": "hang"}]
    plain = run(fleet(faults=faults))
    hedged = run(fleet(faults=faults, gateway={"timeout_ms": 1000, "hedging": {"after_ms": 50}}))
    conserved(hedged)
    assert plain.summary["requests"]["timed_out"] > 50
    # a hedge may land on the other hung worker (one extra copy only), hence not zero
    assert hedged.summary["requests"]["timed_out"] < plain.summary["requests"]["timed_out"] / 10
    assert hedged.summary["resilience"]["hedges"] > 0
    assert hedged.summary["resilience"]["retries"] == 0


def test_retry_budget_bounds_retries_of_a_flaky_fleet() -> None:
    budget = {"ratio": 0.05, "min_per_s": 1, "window_s": 5}
    results = run(
        fleet(
            faults=[{"at_s": 2, "kind": "flaky", "workers": "50%", "error_rate": 0.5}],
            gateway={"timeout_ms": 1000, "retries": {"max_attempts": 5, "budget": budget}},
        )
    )
    conserved(results)
    requests = results.summary["requests_total"]
    retries = results.summary["resilience"]["retries"]
    cfg = RetryBudgetConfig(**budget)
    bucket = cfg.window_s / cfg.buckets
    elapsed = results.summary["sim"]["end_s"]
    assert retries <= cfg.ratio * requests + cfg.min_per_s * (elapsed + cfg.window_s + bucket)
    assert results.summary["resilience"]["retry_budget_denied"] > 0


def test_outlier_ejection_and_breakers_take_a_flaky_worker_out() -> None:
    results = run(
        fleet(
            faults=[{"at_s": 5, "kind": "flaky", "workers": ["w-6"], "error_rate": 0.9}],
            gateway={
                "timeout_ms": 1000,
                "retries": {"max_attempts": 2},
                "outlier_detection": {"consecutive_errors": 3, "base_ejection_s": 5},
                "circuit_breaker": {"failure_threshold": 3, "open_s": 2},
            },
        )
    )
    ev = results.events
    mine = ev[ev["worker"] == "w-6"]
    assert "ejected" in set(mine["event"]) and "open" in set(mine["event"])
    first = mine[mine["event"].isin(["ejected", "open"])]["t_s"].min()
    assert 5.0 < first < 5.5
    f = results.summary["faults"][0]
    assert f["detected_by"] in ("outlier", "breaker")
    # while blocked, w-6 gets only the odd half-open probe or post-expiry trial
    rec = results.records
    share = (rec[rec["arrival_s"] > 6]["worker"] == "w-6").mean()
    assert share < 0.05


def test_panic_mode_routes_over_every_member_when_most_are_down() -> None:
    faults = [{"at_s": 5, "kind": "crash", "workers": 6}]
    panic = run(fleet(faults=faults))
    calm = run(fleet(faults=faults, gateway={"timeout_ms": 1000, "panic_threshold": 0}))
    assert panic.summary["resilience"]["panic_routes"] > 0
    assert "enter" in set(panic.events[panic.events["source"] == "panic"]["event"])
    assert calm.summary["resilience"]["panic_routes"] == 0
    # in panic, requests keep going to dead workers and fail; without it, survivors take all
    late = lambda r: r.records[r.records["arrival_s"] > 8]  # noqa: E731
    assert (late(panic)["detail"] == "worker_lost").sum() > 100
    assert (late(calm)["detail"] == "worker_lost").sum() == 0


def test_failure_runs_are_deterministic() -> None:
    path = SCENARIOS / "failure_random_crashes.yaml"
    a = simulate(load_scenario(path, ["duration_s=40"]))
    b = simulate(load_scenario(path, ["duration_s=40"]))
    pd.testing.assert_frame_equal(a.records, b.records)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.faults, b.faults)
    assert a.summary["faults"] == b.summary["faults"]


def test_alerts_fire_on_the_crash_and_resolve_after_restart() -> None:
    results = simulate(load_scenario(SCENARIOS / "failure_crash.yaml"))
    alerts = results.alerts
    down = alerts[alerts["name"] == "WorkerDown"]
    assert len(down) == 1
    assert 40.0 < down["fired_at"].iloc[0] <= 43.0
    assert 60.0 <= down["resolved_at"].iloc[0] <= 61.0
    counts = results.summary["alerts"]
    assert counts["fired"] == len(alerts)
    assert counts["by_rule"]["WorkerDown"] == 1


# -- regressions found in review ------------------------------------------------------------------


def test_a_cancelled_half_open_probe_frees_its_slot() -> None:
    """A probe abandoned because its hedge sibling won used to hold the only probe slot for
    good, keeping the worker out of rotation for the rest of the run."""
    results = run(
        fleet(
            workers={
                "count": 4,
                "concurrency": 4,
                "service_time": {"dist": "exponential", "mean_ms": 10},
            },
            workload={"arrival": {"process": "poisson", "rate_rps": 200}},
            gateway={
                "timeout_ms": 1000,
                "panic_threshold": 0,
                "hedging": {"after_ms": 5},
                "circuit_breaker": {"failure_threshold": 3, "open_s": 0.5, "close_after": 2},
            },
            faults=[
                {"at_s": 2, "kind": "flaky", "workers": ["w-0"], "error_rate": 1.0, "for_s": 2}
            ],
        )
    )
    ev = results.events
    breaker = ev[(ev["worker"] == "w-0") & (ev["source"] == "breaker")]
    assert breaker["event"].iloc[-1] == "closed"
    rec = results.records
    assert (rec[rec["arrival_s"] > 6]["worker"] == "w-0").mean() > 0.15


def test_max_extra_hedges_send_that_many_copies() -> None:
    data = fleet(
        workers={
            "count": 6,
            "concurrency": 8,
            "service_time": {"dist": "constant", "value_ms": 100},
        },
        workload={"arrival": {"process": "poisson", "rate_rps": 20}},
    )
    for extra in (1, 3):
        data["gateway"] = {"timeout_ms": 1000, "hedging": {"after_ms": 10, "max_extra": extra}}
        results = run(data)
        assert results.records["attempts"].max() == 1 + extra
        assert results.summary["resilience"]["hedges"] == extra * len(results.records)


def test_a_worker_restarted_inside_a_partition_registers_when_it_heals() -> None:
    results = run(
        fleet(
            faults=[
                {"at_s": 3, "kind": "partition", "workers": ["w-0"], "for_s": 8},
                {"at_s": 5, "kind": "crash", "workers": ["w-0"], "restart_after_s": 1},
            ]
        )
    )
    ev = results.events
    reg = ev[(ev["worker"] == "w-0") & (ev["source"] == "registry")]
    healthy = reg[reg["event"] == "healthy"]["t_s"]
    assert healthy.min() >= 11.0  # not at the restart (6 s), which the registry cannot hear
    rec = results.records
    sent = rec[(rec["worker"] == "w-0") & rec["arrival_s"].between(6, 11)]
    assert len(sent) == 0


def test_heartbeats_never_report_negative_cpu_after_a_crash() -> None:
    data = fleet(
        workers={
            "count": 2,
            "concurrency": 1,
            "service_time": {"dist": "constant", "value_ms": 400},
        },
        workload={"arrival": {"process": "poisson", "rate_rps": 4}},
        faults=[{"at_s": 1.2, "kind": "crash", "workers": ["w-0"], "restart_after_s": 0.1}],
    )
    from labkit.sim.driver import FleetSim

    sim = FleetSim(scenario_from_dict(data))
    sim.run()
    # every load report the registry heard, as the driver keeps them for the heatmap (read
    # here rather than by patching ``Registry.heartbeat``: a compiled Registry cannot be)
    seen = sim.report_cpu
    assert seen and min(seen) >= 0.0
