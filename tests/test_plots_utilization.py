"""The utilization heatmap draws the workers' own load reports: hot workers, silent ones."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from labkit import plots
from labkit.notebook import load
from labkit.sim import simulate

CRASH = (
    "duration_s=30",
    "warmup_s=5",
    "workload.arrival.rate_rps=300",
    "faults=[{kind: crash, at_s: 10, workers: [w-3, w-8], restart_after_s: 10}]",
)


@pytest.fixture(scope="module")
def crash():  # type: ignore[no-untyped-def]
    return simulate(load("failure_crash", *CRASH, quick=()))


def test_every_heartbeat_leaves_a_load_report(crash) -> None:  # type: ignore[no-untyped-def]
    reports = crash.load_reports
    assert list(reports.columns) == ["t_s", "worker", "utilization", "active"]
    assert reports["utilization"].between(0, 1).all() and (reports["active"] >= 0).all()
    interval = crash.scenario.registry.heartbeat_interval_ms / 1000
    healthy = reports[reports["worker"] == "w-0"]
    # one report per interval for a worker that never failed
    assert len(healthy) == pytest.approx(crash.scenario.duration_s / interval, abs=3)
    assert np.diff(healthy["t_s"].to_numpy()) == pytest.approx(interval)
    # a crashed worker is silent while down, then reports again
    dead = reports[reports["worker"] == "w-3"]["t_s"]
    assert not dead.between(10.01, 19.99).any()
    assert (dead > 20).any() and (dead < 10).any()


def test_the_grid_blanks_silent_workers_and_averages_the_rest(crash) -> None:  # type: ignore[no-untyped-def]
    grid = plots.utilization_grid(crash, bin_s=1.0)
    assert grid is not None and grid.workers == 20 and grid.rows[:3] == ["w-0", "w-1", "w-2"]
    row = grid.rows.index("w-3")
    assert np.isnan(grid.values[row, 11:19]).all()
    assert not np.isnan(grid.values[grid.rows.index("w-0")]).any()
    # the grid is the mean of the reports in each bin
    w0 = crash.load_reports[crash.load_reports["worker"] == "w-0"]
    in_bin = w0[(w0["t_s"] >= 12) & (w0["t_s"] < 13)]["utilization"]
    assert grid.values[0, 12] == pytest.approx(in_bin.mean())


def test_slow_workers_show_up_hot() -> None:
    results = simulate(load("failure_slow", "duration_s=50", "warmup_s=5", quick=()))
    fault = results.faults.iloc[0]
    slowed = [str(w) for w in fault["workers"]]
    grid = plots.utilization_grid(results, bin_s=1.0)
    assert grid is not None
    window = slice(int(fault["start_s"]) + 2, int(fault["end_s"]) - 1)
    hot = np.nanmean([grid.values[grid.rows.index(w), window] for w in slowed])
    others = [i for i, name in enumerate(grid.rows) if name not in slowed]
    # p2c sends them less, so the gap is modest; deterministic for the seed
    assert hot > np.nanmean(grid.values[others, window]) + 0.03


def test_large_fleets_are_drawn_in_bands() -> None:
    results = simulate(load("quickstart", "duration_s=4", "warmup_s=1", "workers.count=250"))
    grid = plots.utilization_grid(results, max_rows=50)
    assert grid is not None and grid.workers == 250 and len(grid.rows) == 50
    assert grid.rows[0] == "w-0 … w-4"
    fig = plots.utilization_heatmap(results)
    assert "250 workers in" in fig.axes[0].get_title()


def test_no_reports_says_so_and_saving_writes_them(crash, tmp_path) -> None:  # type: ignore[no-untyped-def]
    paths = crash.write(tmp_path, report=False)
    saved = pd.read_parquet(paths["load_reports"])
    assert len(saved) == len(crash.load_reports)
    crash_without = type(crash)(**{**crash.__dict__, "load_reports": pd.DataFrame()})
    assert plots.utilization_grid(crash_without) is None
    fig = plots.utilization_heatmap(crash_without)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("No load reports" in t for t in texts)
