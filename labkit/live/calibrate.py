"""Fit the simulator to a live run, then check the fit by simulating it.

A live request's latency splits, by the worker's own account carried in its reply, into the
worker's time (queue + service) and everything else: two network hops, the gateway, the load
generator's and the event loops' scheduling. Calibration turns the measured service times into
``workers.service_time`` (empirical, as quantiles, with each worker's speed divided back out) and
the rest, halved, into a per-hop ``network.latency``; the gateway's ``overhead_ms`` becomes 0
since the hops now carry it. The simulator's prediction of the calibrated scenario is then
compared with the live run percentile by percentile.

The per-hop split is an approximation: the simulator draws the two hops independently, while
live overhead is one sum; the tails of the sum are therefore a little lighter in simulation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from labkit.results import Results
from labkit.scenario import Scenario, scenario_from_dict

#: quantiles kept of each fitted distribution (an empirical distribution of this many values)
QUANTILES = 200


def _quantiles(values: np.ndarray) -> list[float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        raise ValueError("no samples to fit")
    probs = (np.arange(QUANTILES) + 0.5) / QUANTILES
    return [round(float(v), 4) for v in np.quantile(np.clip(values, 0, None), probs)]


def fit(live: Results) -> dict[str, Any]:
    """The fitted distributions (scenario specs) from a live run's timing table."""
    timing = live.timing
    if timing.empty:
        raise ValueError("the live run has no timing (were the workers labkit workers?)")
    speeds = dict(zip(live.workers["worker"], live.workers["speed"], strict=False))
    speed = timing["worker"].map(speeds).fillna(1.0).to_numpy(dtype=float)
    service = timing["service_ms"].to_numpy(dtype=float) * speed
    hop = (timing["latency_ms"] - timing["worker_ms"]).to_numpy(dtype=float) / 2
    return {
        "service_time": {"dist": "empirical", "values": _quantiles(service)},
        "network_latency": {"dist": "empirical", "values": _quantiles(hop)},
        "samples": len(timing),
        "service_mean_ms": round(float(np.nanmean(service)), 4),
        "hop_mean_ms": round(float(np.nanmean(hop)), 4),
    }


def calibrated(scenario: Scenario, fitted: dict[str, Any]) -> Scenario:
    """``scenario`` with the fitted service time and network latency, no gateway overhead."""
    data = dict(scenario.to_dict())
    data["name"] = f"{scenario.name}_calibrated"
    data["workers"] = {**data["workers"], "service_time": fitted["service_time"]}
    data["network"] = {**(data.get("network") or {}), "latency": fitted["network_latency"]}
    data["gateway"] = {**data["gateway"], "overhead_ms": 0}
    return scenario_from_dict(data)


def side_by_side(runs: dict[str, Results]) -> pd.DataFrame:
    """Throughput and latency percentiles of several runs of one scenario, one row each."""
    rows = []
    for name, res in runs.items():
        lat = res.summary["latency_ms"]
        rows.append(
            {
                "run": name,
                "throughput_rps": res.summary["throughput_rps"],
                "error_rate": res.summary["error_rate"],
                "p50_ms": lat["p50"],
                "p95_ms": lat["p95"],
                "p99_ms": lat["p99"],
            }
        )
    frame = pd.DataFrame(rows).set_index("run")
    if "live" in frame.index:
        for col in ("p50_ms", "p95_ms", "p99_ms"):
            frame[f"{col}_vs_live"] = frame[col] / frame.loc["live", col]
    return frame
