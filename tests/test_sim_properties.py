"""Invariants of the simulator over many small random scenarios."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labkit.core.balancing import STRATEGIES
from labkit.scenario import scenario_from_dict
from labkit.sim import simulate


@st.composite
def small_scenarios(draw):  # type: ignore[no-untyped-def]
    workers = draw(st.integers(1, 12))
    data = {
        "name": "prop",
        "seed": draw(st.integers(0, 10_000)),
        "duration_s": draw(st.sampled_from([1.0, 2.0, 3.0])),
        "warmup_s": 0.5,
        "workers": {
            "count": workers,
            "agent_types": draw(st.sampled_from([["a"], ["a", "b"]])),
            "concurrency": draw(st.integers(1, 4)),
            "queue_limit": draw(st.one_of(st.none(), st.integers(0, 20))),
            "service_time": draw(
                st.sampled_from(
                    [
                        {"dist": "exponential", "mean_ms": 20},
                        {"dist": "lognormal", "median_ms": 15, "p99_ms": 200},
                        {"dist": "constant", "value_ms": 5},
                        {"dist": "pareto", "alpha": 1.5, "scale_ms": 5},
                    ]
                )
            ),
            "speed": {"dist": "uniform", "low": 0.5, "high": 1.5},
        },
        "network": {
            "latency": draw(st.sampled_from([None, {"dist": "exponential", "mean_ms": 1}]))
        },
        "workload": {
            "arrival": draw(
                st.sampled_from(
                    [
                        {"process": "poisson", "rate_rps": 300},
                        {"process": "mmpp", "rates_rps": [900, 50], "mean_durations_s": [0.3, 0.5]},
                        {
                            "process": "closed",
                            "clients": 20,
                            "think_time": {"dist": "exponential", "mean_ms": 10},
                        },
                        # zero think time against instant rejections must not spin in place
                        {"process": "closed", "clients": 5, "think_time": 0},
                        {"process": "ramp", "from_rps": 10, "to_rps": 600},
                        {"process": "diurnal", "mean_rps": 300, "amplitude": 0.8, "period_s": 1},
                    ]
                )
            ),
            "keys": {"count": 50, "zipf_s": 1.1},
            "publish_fraction": draw(st.sampled_from([0.0, 0.3])),
            "unauthorized_fraction": draw(st.sampled_from([0.0, 0.1])),
        },
        "gateway": {
            "count": draw(st.integers(1, 3)),
            "overhead_ms": draw(st.sampled_from([0, 0.2])),
            "timeout_ms": draw(st.sampled_from([50, 200, 2000])),
            "retries": {"max_attempts": draw(st.integers(1, 4)), "base_ms": 2, "cap_ms": 20},
            "rate_limit": draw(st.sampled_from([None, {"rate_rps": 200, "burst": 10}])),
            "api_keys": draw(st.sampled_from([None, ["secret"]])),
        },
        "balancer": {
            "strategy": draw(st.sampled_from(STRATEGIES)),
            "bounded_load": draw(st.sampled_from([None, 1.25])),
        },
        "registry": {
            "consistency": draw(st.sampled_from(["strong", "eventual"])),
            "heartbeat_interval_ms": 100,
        },
    }
    return scenario_from_dict(data)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(small_scenarios())
def test_every_request_ends_exactly_once(scenario) -> None:  # type: ignore[no-untyped-def]
    results = simulate(scenario)
    s = results.summary
    req = s["requests"]
    assert req["offered"] == req["completed"] + req["failed"] + req["rejected"] + req["timed_out"]
    assert sum(s["details"].values()) == req["offered"]
    records = results.records
    assert records["request"].is_unique
    # nobody waits past the deadline, and nothing ends before it started
    latency = records["latency_ms"]
    assert (latency >= 0).all()
    assert (latency <= scenario.gateway.timeout_ms + 1e-6).all()
    # arrivals stop at duration_s; the run drains after
    assert (records["arrival_s"] < scenario.duration_s).all()
    if scenario.gateway.api_keys is None:
        assert s["details"].get("unauthorized", 0) == 0


def test_closed_loop_with_zero_think_time_and_a_tiny_rate_limit_terminates() -> None:
    scenario = scenario_from_dict(
        {
            "name": "spin",
            "duration_s": 2,
            "workers": {"count": 2},
            "workload": {
                "arrival": {"process": "closed", "clients": 10, "think_time": 0},
            },
            "gateway": {"rate_limit": {"rate_rps": 5, "burst": 1}},
        }
    )
    s = simulate(scenario).summary
    assert s["details"]["rate_limited"] > 0
    assert s["requests"]["completed"] > 0
