"""The live latency breakdown: its table from ``Results.timing`` and its plot."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from labkit.live.trace import ADDED_COLUMNS, SEGMENTS
from labkit.plots_breakdown import has_breakdown, latency_breakdown, latency_breakdown_plot
from labkit.report import draw_plot, plot_applies


def _live(n: int = 400, worker_stamps: bool = True) -> SimpleNamespace:
    rng = np.random.default_rng(3)
    data = {
        "arrival_s": np.arange(n) / 100,
        "worker_ms": rng.exponential(2.0, n),
        "service_ms": rng.exponential(1.0, n),
        "worker": ["w-0"] * n,
    }
    for i, col in enumerate(ADDED_COLUMNS):
        data[col] = rng.exponential(0.1 * (i + 1), n)
    if not worker_stamps:
        data["to_worker_ms"] = np.nan
        data["from_worker_ms"] = np.nan
    timing = pd.DataFrame(data)
    timing["latency_ms"] = timing[[*ADDED_COLUMNS, "worker_ms"]].sum(axis=1, skipna=True)
    return SimpleNamespace(timing=timing, scenario=SimpleNamespace(name="live_small"), summary={})


def test_the_table_has_every_segment_in_path_order_and_shares_of_the_mean() -> None:
    live = _live()
    table = latency_breakdown(live)
    assert list(table["segment"]) == list(SEGMENTS)
    assert (table["p50"] <= table["p95"]).all() and (table["p95"] <= table["p99"]).all()
    assert table["share"].sum() == pytest.approx(1.0)
    worker = table.set_index("segment").loc["worker"]
    assert worker["mean"] == pytest.approx(live.timing["worker_ms"].mean())
    assert (table["samples"] == 400).all()


def test_a_late_send_comes_first_and_shares_are_of_the_mean_latency() -> None:
    live = _live()
    live.timing["send_lag_ms"] = 0.5
    live.timing["latency_ms"] += 0.5
    table = latency_breakdown(live)
    assert list(table["segment"]) == ["send_lag", *SEGMENTS]
    assert table["share"].sum() == pytest.approx(1.0)
    lag = table.set_index("segment").loc["send_lag"]
    assert lag["p50"] == pytest.approx(0.5)
    assert lag["share"] == pytest.approx(0.5 / live.timing["latency_ms"].mean())
    labels = [t.get_text() for t in draw_plot("latency_breakdown", live).axes[0].get_yticklabels()]
    assert any(label.startswith("load generator") for label in labels)


def test_unstamped_worker_hops_are_left_out_not_zero() -> None:
    table = latency_breakdown(_live(worker_stamps=False)).set_index("segment")
    assert table.loc["to_worker", "samples"] == 0 and np.isnan(table.loc["to_worker", "p50"])
    assert table.loc["gateway", "samples"] == 400


def test_a_run_without_per_hop_timings_has_no_breakdown() -> None:
    sim = SimpleNamespace(timing=pd.DataFrame(), scenario=SimpleNamespace(name="s"), summary={})
    assert not has_breakdown(sim) and latency_breakdown(sim).empty
    assert not plot_applies("latency_breakdown", sim)  # type: ignore[arg-type]
    old = _live().timing.drop(columns=list(ADDED_COLUMNS))  # a live run from before tracing
    assert not has_breakdown(SimpleNamespace(timing=old))
    fig = latency_breakdown_plot(sim)
    assert "no per-hop timings" in fig.axes[0].texts[0].get_text()


def test_the_report_draws_it_for_a_traced_live_run() -> None:
    live = _live()
    assert plot_applies("latency_breakdown", live)  # type: ignore[arg-type]
    fig = draw_plot("latency_breakdown", live)  # type: ignore[arg-type]
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert len(ax.patches) == 3 * len(SEGMENTS)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    top = labels[int(np.argmax(ax.get_yticks()))]  # the path reads top to bottom
    assert top.startswith("caller → gateway") and "of the mean" in top
