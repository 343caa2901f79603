"""Calibration: fitting the simulator's service time and per-hop latency from a live run's
timing table, and comparing runs side by side."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from labkit.live.calibrate import QUANTILES, calibrated, fit, side_by_side
from labkit.scenario import scenario_from_dict
from labkit.sim import simulate


def scenario() -> Any:
    return scenario_from_dict(
        {
            "name": "cal",
            "seed": 1,
            "duration_s": 3,
            "warmup_s": 0.5,
            "workers": {"count": 2, "service_time": {"dist": "exponential", "mean_ms": 5}},
            "workload": {"arrival": {"process": "poisson", "rate_rps": 100}},
            "gateway": {"overhead_ms": 0.3},
        }
    )


class FakeLive:
    """What ``fit`` reads from a live ``Results``: its timing and per-worker tables."""

    def __init__(self, timing: pd.DataFrame, speeds: dict[str, float]) -> None:
        self.timing = timing
        self.workers = pd.DataFrame({"worker": list(speeds), "speed": list(speeds.values())})


def test_fit_recovers_service_time_and_per_hop_overhead() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    service_base = rng.exponential(8.0, n)  # ms of work at speed 1
    worker = rng.choice(["w-0", "w-1"], n)
    speed = np.where(worker == "w-1", 2.0, 1.0)
    service = service_base / speed  # what each worker measured
    queue = rng.exponential(1.0, n)
    hops = rng.exponential(0.5, n) + rng.exponential(0.5, n)
    timing = pd.DataFrame(
        {
            "arrival_s": np.arange(n) / 1000,
            "latency_ms": service + queue + hops,
            "worker_ms": service + queue,
            "service_ms": service,
            "worker": worker,
        }
    )
    fitted = fit(FakeLive(timing, {"w-0": 1.0, "w-1": 2.0}))  # type: ignore[arg-type]
    # speeds divided back out: the service time is the speed-1 distribution again
    assert fitted["service_mean_ms"] == pytest.approx(8.0, rel=0.03)
    assert fitted["hop_mean_ms"] == pytest.approx(0.5, rel=0.03)
    values = fitted["service_time"]["values"]
    assert len(values) == QUANTILES and values == sorted(values)
    assert np.median(values) == pytest.approx(8.0 * np.log(2), rel=0.05)


def test_calibrated_scenario_uses_the_fit_and_simulates() -> None:
    sc = scenario()
    fitted = {
        "service_time": {"dist": "empirical", "values": [4.0, 5.0, 6.0]},
        "network_latency": {"dist": "empirical", "values": [1.0, 1.0, 1.0]},
    }
    tuned = calibrated(sc, fitted)
    assert tuned.name == "cal_calibrated"
    assert tuned.workers.service_time.mean == pytest.approx(5.0)
    assert tuned.network.latency is not None and tuned.network.latency.mean == pytest.approx(1.0)
    assert tuned.gateway.overhead_ms == 0
    base, cal = simulate(sc), simulate(tuned)
    # two 1 ms hops and ~5 ms of work: the calibrated prediction sits above the bare model
    assert cal.summary["latency_ms"]["p50"] > base.summary["latency_ms"]["p50"] + 1.5
    table = side_by_side({"live": cal, "sim": base})
    assert table.loc["live", "p50_ms_vs_live"] == 1.0
    assert table.loc["sim", "p50_ms_vs_live"] < 1.0


def test_fit_refuses_a_run_without_timing() -> None:
    with pytest.raises(ValueError, match="no timing"):
        fit(FakeLive(pd.DataFrame(), {}))  # type: ignore[arg-type]
