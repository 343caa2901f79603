"""Scenario builders shared by the simulator tests."""

from __future__ import annotations

from typing import Any

from labkit.scenario import Scenario, scenario_from_dict


def idealized(
    *,
    workers: int,
    rate_rps: float,
    mean_ms: float = 10.0,
    strategy: str = "random",
    concurrency: int = 1,
    duration_s: float = 60.0,
    warmup_s: float = 5.0,
    seed: int = 1,
    **extra: Any,
) -> Scenario:
    """Zero network latency and gateway cost, exponential service, Poisson arrivals."""
    data: dict[str, Any] = {
        "name": "textbook",
        "seed": seed,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "workers": {
            "count": workers,
            "concurrency": concurrency,
            "service_time": {"dist": "exponential", "mean_ms": mean_ms},
        },
        "workload": {"arrival": {"process": "poisson", "rate_rps": rate_rps}},
        "gateway": {"overhead_ms": 0, "timeout_ms": 600_000},
        "balancer": {"strategy": strategy},
        "registry": {"consistency": "eventual"},
    }
    for key, value in extra.items():
        node = data
        *parents, leaf = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return scenario_from_dict(data)
