"""The simulator with the data services on: registry views, replicated state, the cache ring and
batching. Each test runs a short scenario whose direction of effect can be argued from the model,
and checks the summary, the tables and the records against that argument."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from labkit.compare import compare, headline, parse_vary
from labkit.errors import ScenarioError
from labkit.scenario import load_scenario, scenario_from_dict
from labkit.sim import simulate
from labkit.sim.driver import FleetSim
from tests.conftest import SCENARIOS


def base(**sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "data",
        "seed": 4,
        "duration_s": 12,
        "warmup_s": 2,
        "workers": {
            "count": 8,
            "concurrency": 2,
            "service_time": {"dist": "exponential", "mean_ms": 4},
        },
        "network": {"latency": {"dist": "constant", "value_ms": 0.2}},
        "workload": {"arrival": {"process": "poisson", "rate_rps": 800}, "keys": {"count": 300}},
        "gateway": {"timeout_ms": 1000},
        "balancer": {"strategy": "p2c"},
    }
    data.update(sections)
    return data


def run(data: dict[str, Any], overrides: list[str] | None = None) -> Any:
    return simulate(scenario_from_dict(data, overrides))


# -- registry consistency -----------------------------------------------------------------------
def frozen_fleet(consistency: str) -> dict[str, Any]:
    return base(
        duration_s=14,
        balancer={"strategy": "round_robin"},
        gateway={
            "timeout_ms": 1000,
            "retries": {"max_attempts": 3, "base_ms": 1, "cap_ms": 5, "attempt_timeout_ms": 100},
        },
        registry={
            "heartbeat_interval_ms": 200,
            "failure_timeout_ms": 600,
            "consistency": consistency,
            "cache_ttl_ms": 2000,
            "lookup_cost_ms": 2,
            "watch_delay": {"dist": "constant", "value_ms": 10},
        },
        faults=[{"kind": "crash", "at_s": 6, "workers": 2, "connection": "hang"}],
    )


@pytest.fixture(scope="module")
def registry_runs() -> dict[str, Any]:
    return {c: run(frozen_fleet(c)) for c in ("eventual", "watch", "strong")}


def test_stale_views_misroute_and_strong_views_pay_per_lookup(registry_runs: dict) -> None:
    reg = {c: r.summary["registry"] for c, r in registry_runs.items()}
    # a 2 s snapshot keeps routing to workers the registry marked down; a 10 ms watch barely does
    assert reg["eventual"]["misroutes"] > 10 * max(1, reg["watch"]["misroutes"])
    assert reg["strong"]["misroutes"] == 0
    assert reg["eventual"]["refreshes"] > 0 and reg["eventual"]["pushed_updates"] == 0
    assert reg["watch"]["pushed_updates"] > 0 and reg["watch"]["refreshes"] == 0
    # misrouted attempts are sent to frozen workers: more of them with the eventual view
    assert reg["eventual"]["sent_to_unreachable"] > reg["watch"]["sent_to_unreachable"]
    # a strong lookup is a 2 ms round trip on every request's way in
    p50 = {c: r.summary["latency_ms"]["p50"] for c, r in registry_runs.items()}
    assert p50["strong"] - p50["watch"] == pytest.approx(2.0, abs=0.6)
    # and the stale view costs in the tail: more retries
    retries = {c: r.summary["resilience"]["retries"] for c, r in registry_runs.items()}
    assert retries["eventual"] > retries["watch"]


# -- state ----------------------------------------------------------------------------------------
def stateful(model: str, **state: Any) -> dict[str, Any]:
    return base(
        workload={"arrival": {"process": "poisson", "rate_rps": 800}, "keys": {"count": 60}},
        balancer={"strategy": "consistent_hash"},
        state={
            "model": model,
            "n": 3,
            "delays": {"write": {"dist": "exponential", "mean_ms": 5}},
            **state,
        },
    )


@pytest.fixture(scope="module")
def state_runs() -> dict[str, Any]:
    return {m: run(stateful(m)) for m in ("eventual", "session", "strong")}


def test_state_models_trade_staleness_for_latency(state_runs: dict) -> None:
    st = {m: r.summary["state"] for m, r in state_runs.items()}
    assert st["eventual"]["stale_fraction"] > 0.005
    assert st["strong"]["stale_fraction"] == 0
    # one writer per agent (consistent hashing): read-your-writes is all the freshness it needs
    assert st["session"]["stale_fraction"] == 0
    assert st["session"]["session_retries"] > 0
    assert st["eventual"]["session_retries"] == 0
    # strong waits for the second of three replicas on every read and write
    assert st["strong"]["read_ms"]["p50"] > st["eventual"]["read_ms"]["p50"]
    assert st["strong"]["write_ms"]["p99"] > st["eventual"]["write_ms"]["p99"]
    # the quorum config is what the summary reports
    assert (st["strong"]["r"], st["strong"]["w"]) == (2, 2)
    assert (st["eventual"]["r"], st["eventual"]["w"]) == (1, 1)
    # state calls hold the request: the requests' latency grows with them
    lat = {m: r.summary["latency_ms"]["p50"] for m, r in state_runs.items()}
    assert lat["strong"] > lat["eventual"]


def test_state_ops_table_matches_summary(state_runs: dict) -> None:
    res = state_runs["eventual"]
    ops = res.state_ops
    sc = res.scenario
    measured = ops[(ops["t_s"] >= sc.warmup_s) & (ops["t_s"] < sc.duration_s)]
    reads = measured[measured["op"] == "read"]
    writes = measured[measured["op"] == "write"]
    st = res.summary["state"]
    assert st["reads"] == len(reads) and st["writes"] == len(writes)
    assert st["stale_reads"] == int((reads["behind"] > 0).sum())
    # every request reads (read_fraction 1) and about half write (write_fraction 0.5)
    completed = res.summary["requests"]["completed"]
    assert len(reads) == pytest.approx(completed, rel=0.05)
    assert len(writes) / len(reads) == pytest.approx(0.5, abs=0.05)
    # the t-visibility curve is monotone-ish: fresher reads long after a commit than right after
    curve = [b for b in st["t_visibility"] if b["reads"] >= 50]
    assert curve[0]["p_consistent"] < curve[-1]["p_consistent"]
    assert sum(b["reads"] for b in st["t_visibility"]) <= len(reads)


def test_rejected_state_writes_fail_the_attempt_and_are_retried() -> None:
    data = stateful("eventual", conflict="reject")
    data["gateway"] = {"timeout_ms": 1000, "retries": {"max_attempts": 3, "base_ms": 1}}
    data["workers"]["concurrency"] = 4
    res = run(data)
    st = res.summary["state"]
    assert st["conflicts"]["rejected"] > 0
    assert st["conflicts"]["merged"] == 0
    details = res.summary["details"]
    # most rejected writes succeed on a retry; any that ran out of attempts end as conflicts
    assert res.summary["resilience"]["retries"] >= st["conflicts"]["rejected"] * 0.5
    assert set(details) <= {"ok", "conflict"}


# -- cache ----------------------------------------------------------------------------------------
def cached(**cache: Any) -> dict[str, Any]:
    return base(
        duration_s=40,
        warmup_s=2,
        workload={
            "arrival": {"process": "poisson", "rate_rps": 800},
            "keys": {"count": 3000, "zipf_s": 0.8},
        },
        gateway={"count": 2, "timeout_ms": 1000},
        cache={
            "nodes": 4,
            "replication": 1,
            "capacity": 5000,
            "ttl_s": 300,
            "node_rtt": {"dist": "constant", "value_ms": 0.5},
            "store_read": {"dist": "constant", "value_ms": 20},
            "node_failures": [{"node": "c-2", "at_s": 20, "duration_s": 10}],
            **cache,
        },
    )


def test_cache_node_failure_dips_the_hit_rate_and_recovers() -> None:
    res = run(cached())
    summary = res.summary["cache"]
    crash, restart = summary["events"]
    assert crash["event"] == "crash" and restart["event"] == "restart"
    assert crash["keys_moved"] == pytest.approx(0.25, abs=0.1)  # ≈ 1/n of the keys
    assert restart["keys_moved"] == pytest.approx(crash["keys_moved"], abs=0.02)
    assert crash["alive_nodes"] == 3 and restart["alive_nodes"] == 4
    assert crash["hit_min_after"] < crash["hit_before"] - 0.05
    assert crash["recovered_after_s"] is not None
    series = res.cache
    hit = 1 - series["store_share"]
    # visible in the time series: the second after the crash misses more than the ones before
    assert hit[20] < hit[15:20].mean() - 0.05
    assert hit[27:30].mean() > hit[20]
    shares = summary["layer_share"]
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["l1"] == 0  # no L1 configured
    # a miss pays the store read: requests are slower while the hit rate is down
    rec = res.records
    during = rec[(rec["arrival_s"] >= 20) & (rec["arrival_s"] < 21)]["latency_ms"].mean()
    before = rec[(rec["arrival_s"] >= 15) & (rec["arrival_s"] < 20)]["latency_ms"].mean()
    assert during > before


def test_cache_replicas_absorb_a_node_failure_and_l1_serves_stale_copies() -> None:
    res = run(cached(replication=2, write_fraction=0.05, l1={"capacity": 300, "ttl_s": 2}))
    summary = res.summary["cache"]
    crash = summary["events"][0]
    # the next node on the ring already holds a copy: no dip in the overall hit rate
    assert crash["hit_min_after"] >= crash["hit_before"] - 0.03
    assert summary["layer_share"]["replica"] > 0
    assert summary["layer_share"]["l1"] > 0.05
    # writes through one gateway leave the other gateway's L1 copy stale until its TTL
    assert summary["l1_counters"]["stale_hits_l1"] > 0
    assert summary["stale_fraction"] > 0
    assert summary["writes"] > 0


def test_pattern_invalidation_and_a_cache_with_every_node_down() -> None:
    res = run(
        cached(
            nodes=2,
            node_failures=[
                {"node": "c-0", "at_s": 10, "duration_s": 5},
                {"node": "c-1", "at_s": 11, "duration_s": 2},
            ],
            invalidations=[{"at_s": 30, "pattern": "k1*"}],
        )
    )
    summary = res.summary["cache"]
    assert summary["unavailable"] > 0  # 11–13 s: no node alive, reads went to the store
    purge = summary["events"][-1]
    assert purge["event"] == "invalidate k1*" and purge["keys_dropped"] > 0
    assert res.summary["requests"]["completed"] == res.summary["requests"]["offered"]


# -- batching -------------------------------------------------------------------------------------
def batched(max_batch: int, rate: float, **extra: Any) -> dict[str, Any]:
    return base(
        workers={
            "count": 4,
            "concurrency": 1,
            "service_time": {"dist": "exponential", "mean_ms": 2},
        },
        workload={"arrival": {"process": "poisson", "rate_rps": rate}, "keys": {"count": 100}},
        batching={"max_batch": max_batch, "max_delay_ms": 2, "batch_cost_ms": 2, **extra},
    )


def test_unbatched_pays_the_batch_cost_per_message() -> None:
    res = run(batched(1, 600))
    b = res.summary["batching"]
    assert set(b["served"]["sizes"]) == {"1"} and set(b["sent"]["sizes"]) == {"1"}
    assert b["flushes"]["delay"] == 0
    # each message costs its ~2 ms of work plus the 2 ms batch cost: ~4 ms × 150/s per worker
    util = res.workers["utilization"].mean()
    assert util == pytest.approx(0.6, abs=0.06)


def test_batching_saves_worker_time_near_saturation() -> None:
    unbatched = run(batched(1, 950))
    batched8 = run(batched(8, 950))
    b = batched8.summary["batching"]
    assert b["served"]["mean_size"] > 1.5
    # window edges: a few sent just before warm-up ends are served just after
    assert b["sent"]["messages"] == pytest.approx(b["served"]["messages"], rel=0.01)
    assert batched8.workers["utilization"].mean() < unbatched.workers["utilization"].mean() - 0.1
    assert batched8.summary["latency_ms"]["p99"] < unbatched.summary["latency_ms"]["p99"] / 2
    # at low load the buffer's wait is pure cost
    low1, low8 = run(batched(1, 100)), run(batched(8, 100))
    assert low8.summary["latency_ms"]["p50"] > low1.summary["latency_ms"]["p50"]


def test_adaptive_batching_moves_the_limit() -> None:
    res = run(
        batched(1, 900, adaptive={"target_p99_ms": 1000, "interval_s": 1, "max_batch": 6}),
    )
    frame = res.batching
    assert not frame.empty
    # p99 always far under the target: one step up per decision until the ceiling
    limits = frame.sort_values("t_s")["limit"].tolist()
    assert limits[:5] == [2, 3, 4, 5, 6]
    assert max(limits) == 6
    assert res.summary["batching"]["adaptive"]["final_limits"] == [6]


def test_batching_with_crashes_and_state_ends_every_request() -> None:
    data = batched(4, 700)
    data["state"] = {"model": "session"}
    data["gateway"] = {"timeout_ms": 500, "retries": {"max_attempts": 2, "base_ms": 1}}
    data["faults"] = [{"kind": "crash", "at_s": 5, "workers": 1, "restart_after_s": 2}]
    sim = FleetSim(scenario_from_dict(data))
    res = sim.run()
    # every request created has exactly one record, and the fleet is idle after the drain
    assert len(res.records) == sim.next_id
    assert sim.outstanding == 0
    for wk in sim.workers:
        assert wk.busy == 0 and not wk.queue and not wk.serving
    for batcher in sim.batchers or []:
        assert all(batcher.pending(w.index) == 0 for w in sim.workers)
    # the crash lost what was in service and queued; the retries carried it elsewhere
    assert res.workers["lost"].sum() > 0
    assert res.summary["resilience"]["retries"] > 0
    assert res.summary["requests"]["completed"] > 0.9 * res.summary["requests"]["offered"]
    assert res.summary["state"]["reads"] > 0


# -- determinism and the shipped scenarios -------------------------------------------------------
def test_data_services_are_deterministic() -> None:
    data = batched(4, 700)
    data["state"] = {"model": "eventual"}
    data["cache"] = {"nodes": 3, "l1": {"capacity": 50}}
    a, b = run(data), run(data)
    assert a.summary["state"] == b.summary["state"]
    assert a.summary["cache"] == b.summary["cache"]
    assert a.summary["batching"] == b.summary["batching"]
    assert np.array_equal(a.records["latency_ms"], b.records["latency_ms"])


@pytest.mark.parametrize(
    "name",
    ["state_consistency", "cache_failure", "batching", "batching_adaptive", "registry_consistency"],
)
def test_shipped_data_scenarios_run(name: str) -> None:
    # their events keep their times: a lower rate, not a shorter run, keeps this quick
    quick = ["workload.arrival.rate_rps=150"]
    if name == "batching_adaptive":
        quick = ["duration_s=8", "warmup_s=1"]
    sc = load_scenario(SCENARIOS / f"{name}.yaml", quick)
    res = simulate(sc)
    assert res.summary["requests"]["completed"] > 0


# -- compare --------------------------------------------------------------------------------------
def test_compare_runs_the_grid_on_one_seed(tmp_path: Any) -> None:
    path = tmp_path / "s.yaml"
    import yaml

    path.write_text(yaml.safe_dump(batched(1, 300)))
    frame = compare(
        path, parse_vary(["batching.max_batch=1,4", "workload.arrival.rate_rps=200,400"])
    )
    assert len(frame) == 4
    assert frame["batching.max_batch"].tolist() == [1, 1, 4, 4]
    assert frame["workload.arrival.rate_rps"].tolist() == [200, 400, 200, 400]
    assert {"throughput_rps", "p99_ms", "batch_mean_size"} <= set(frame.columns)
    assert frame.loc[1, "throughput_rps"] > frame.loc[0, "throughput_rps"]


def test_compare_validates_before_running(tmp_path: Any) -> None:
    path = tmp_path / "s.yaml"
    import yaml

    path.write_text(yaml.safe_dump(batched(1, 300)))
    with pytest.raises(ScenarioError, match="max_batch"):
        compare(path, parse_vary(["batching.max_batch=1,0"]))
    with pytest.raises(ScenarioError, match="--vary"):
        parse_vary(["no-equals"])
    assert parse_vary(["workers.agent_types=[a,b],[c]"]) == {
        "workers.agent_types": ["[a,b]", "[c]"]
    }


def test_headline_without_data_sections() -> None:
    res = run(base(duration_s=4, warmup_s=1))
    row = headline(res.summary)
    assert "state_stale_fraction" not in row and "cache_hit_rate" not in row
    assert row["misroutes"] == 0


def test_queue_limit_counts_requests_not_batches() -> None:
    data = batched(8, 1400, max_delay_ms=5)
    data["workers"]["queue_limit"] = 2
    res = run(data)
    assert res.workers["max_queue"].max() <= 2
    assert res.summary["details"].get("queue_full", 0) > 0


def test_conflict_retries_stay_on_the_agents_home_worker() -> None:
    # with consistent hashing the agent's worker holds its session token: a compare-and-set
    # retry that wandered to another worker would read without it and could be stale
    data = stateful("session", conflict="reject")
    data["gateway"] = {"timeout_ms": 1000, "retries": {"max_attempts": 4, "base_ms": 1}}
    data["workers"]["concurrency"] = 4
    res = run(data)
    st = res.summary["state"]
    assert st["conflicts"]["rejected"] > 0
    assert st["stale_fraction"] == 0
    rec = res.records[res.records["attempts"] > 1]
    assert len(rec) > 0


def test_adaptive_batching_learns_from_attempt_timeouts() -> None:
    # a frozen worker: requests sent to it time out per attempt and retry elsewhere; the
    # controller must see those slow requests and shrink the limit, not grow it
    data = batched(
        5, 400, adaptive={"target_p99_ms": 50, "interval_s": 1, "max_batch": 16, "min_samples": 5}
    )
    data["gateway"] = {
        "timeout_ms": 2000,
        "retries": {"max_attempts": 3, "base_ms": 1, "attempt_timeout_ms": 100},
    }
    data["faults"] = [{"kind": "crash", "at_s": 1, "workers": 1, "connection": "hang"}]
    data["registry"] = {"heartbeat_interval_ms": 10000, "failure_timeout_ms": 30000}
    res = run(data)
    limits = res.batching.sort_values("t_s")["limit"].tolist()
    assert limits[-1] < 5


def test_batch_sizes_cover_the_measured_window_only() -> None:
    res = run(batched(4, 600))
    b = res.summary["batching"]
    offered = res.summary["requests"]["offered"]
    assert b["served"]["messages"] == pytest.approx(offered, rel=0.05)


def test_cache_ttl_null_never_expires() -> None:
    sc = scenario_from_dict(cached(ttl_s=None))
    assert sc.cache is not None and sc.cache.config.ttl_s is None
    assert sc.to_dict()["cache"]["ttl_s"] is None
