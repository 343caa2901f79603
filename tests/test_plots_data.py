"""Plots of the data services and of comparisons (``labkit.plots_data``): what is drawn, not pixels.

Checks read the drawn artists back (bar heights, step values, line data, axis scales), find the
ones that matter by their ``gid``, and make sure a changed input changes the drawing and that
empty or all-NaN input gives a note instead of an exception. The report tests run tiny scenarios
(a few simulated seconds) through ``labkit.sim.simulate``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle, StepPatch

from labkit import plots, plots_data
from labkit.report import format_summary, write_report
from labkit.results.consistency import visibility_curve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NEW = (
    "t_visibility",
    "state_latency",
    "cache_hit_rate",
    "batch_sizes",
    "batch_limit",
    "tradeoff",
    "comparison_bars",
)


# -- helpers -----------------------------------------------------------------------------------


def _texts(fig: Figure) -> str:
    parts = [fig._suptitle.get_text()] if fig._suptitle is not None else []
    for ax in fig.axes:
        parts.append(ax.get_title())
        parts += [t.get_text() for t in ax.texts]
    return "\n".join(parts)


def _by_gid(ax: Axes, gid: str) -> list[Any]:
    return [a for a in ax.get_children() if a.get_gid() == gid]


def _one(ax: Axes, gid: str) -> Any:
    found = _by_gid(ax, gid)
    assert len(found) == 1, (gid, found)
    return found[0]


def _bars(ax: Axes, gid: str | None = None) -> list[Rectangle]:
    """Bars of ``ax.bar`` (the background patch is not one of ``ax.patches``)."""
    return [
        p for p in ax.patches if isinstance(p, Rectangle) and (gid is None or p.get_gid() == gid)
    ]


def _heights(bars: list[Rectangle]) -> np.ndarray:
    return np.array([b.get_height() for b in sorted(bars, key=lambda b: b.get_x())])


def _is_empty_note(fig: Figure, words: str) -> bool:
    return words in _texts(fig)


# -- synthetic data ----------------------------------------------------------------------------


def _state_ops(seed: int = 0, n_reads: int = 4000, n_writes: int = 2000) -> pd.DataFrame:
    """Reads whose chance of being fresh grows with Δ, as replicas converge; writes with
    outcomes."""
    rng = np.random.default_rng(seed)
    delta = np.concatenate([[np.nan] * 20, rng.exponential(20.0, n_reads - 20)])
    p_fresh = 1 - 0.5 * np.exp(-np.nan_to_num(delta, nan=1e9) / 3.0)
    fresh = rng.random(n_reads) < p_fresh
    behind = np.where(fresh, 0, 1 + (rng.random(n_reads) < 0.1))
    reads = pd.DataFrame(
        {
            "t_s": rng.uniform(0, 10, n_reads),
            "op": "read",
            "latency_ms": rng.lognormal(0, 0.5, n_reads),
            "behind": behind.astype(np.int32),
            "delta_ms": delta,
            "session_retry": rng.random(n_reads) < 0.02,
            "outcome": "",
        }
    )
    writes = pd.DataFrame(
        {
            "t_s": rng.uniform(0, 10, n_writes),
            "op": "write",
            "latency_ms": rng.lognormal(1, 0.5, n_writes),
            "behind": -1,
            "delta_ms": np.nan,
            "session_retry": False,
            "outcome": rng.choice(["ok", "overwritten", "merged"], n_writes, p=[0.9, 0.08, 0.02]),
        }
    )
    ops = pd.concat([reads, writes], ignore_index=True).sort_values("t_s", kind="stable")
    ops["op"] = pd.Categorical(ops["op"], categories=["read", "write"])
    return ops.reset_index(drop=True)


def _cache_series(n: int = 60, dip_at: int = 30) -> pd.DataFrame:
    t = np.arange(n, dtype=float)
    store = np.full(n, 0.1)
    store[dip_at : dip_at + 5] = [0.3, 0.25, 0.2, 0.15, 0.12]
    l1 = np.full(n, 0.4)
    return pd.DataFrame(
        {
            "t_s": t,
            "reads": np.full(n, 1000),
            "writes": np.full(n, 20),
            "l1_share": l1,
            "l2_share": 1 - l1 - store,
            "replica_share": np.zeros(n),
            "store_share": store,
            "stale": np.full(n, 0.05),
        }
    )


CACHE_EVENTS = [
    {
        "t_s": 30.0,
        "node": "c-1",
        "event": "crash",
        "keys_moved": 0.231073,
        "alive_nodes": 3,
        "hit_before": 0.9,
        "hit_min_after": 0.7,
        "recovered_after_s": 6.0,
    },
    {
        "t_s": 45.0,
        "node": "c-1",
        "event": "restart",
        "keys_moved": 0.230453,
        "alive_nodes": 4,
        "hit_before": 0.9,
        "hit_min_after": 0.85,
        "recovered_after_s": None,
    },
    {"t_s": 50.0, "node": "", "event": "invalidate k1*", "keys_dropped": 8731, "l1_dropped": 354},
]


def _dist(sizes: dict[int, int]) -> dict[str, Any]:
    batches = sum(sizes.values())
    messages = sum(s * c for s, c in sizes.items())
    return {
        "batches": batches,
        "messages": messages,
        "mean_size": messages / batches,
        "p50_size": 1,
        "p99_size": max(sizes),
        "max_size": max(sizes),
        "sizes": {str(s): c for s, c in sorted(sizes.items())},
    }


BATCHING = {
    "sent": _dist({1: 600, 2: 300, 3: 80, 4: 20}),
    "served": _dist({1: 500, 2: 350, 3: 100, 4: 40, 6: 10}),
    "flushes": {"size": 120, "delay": 900},
    "adaptive": None,
}


def _batching_frame(gateways: int = 2, n: int = 30) -> pd.DataFrame:
    rows = []
    for gw in range(gateways):
        limit = 8
        for i in range(n):
            p99 = 10.0 + 3 * limit + gw
            rows.append((float(i + 1), gw, limit, p99 if i != 5 else np.nan))
            limit = max(1, limit // 2) if p99 > 30 else limit + 1
    return pd.DataFrame(rows, columns=["t_s", "gateway", "limit", "p99_ms"])


def _comparison() -> pd.DataFrame:
    rows = []
    for batch in (1, 4, 16):
        for rate in (500, 1000, 2000, 4000):
            load = rate / (4000 * (1 + np.log2(batch) / 2))
            rows.append(
                {
                    "batching.max_batch": batch,
                    "workload.arrival.rate_rps": rate,
                    "throughput_rps": rate * min(1.0, 1.2 - 0.1 * load),
                    "error_rate": 0.0 if load < 0.9 else 0.02,
                    "p50_ms": 2.0 + batch * 0.3,
                    "p99_ms": (5.0 + batch) / max(0.02, 1 - load) ** 2,
                }
            )
    return pd.DataFrame(rows)


# -- the module and its re-export --------------------------------------------------------------


def test_every_new_function_is_reexported_by_labkit_plots() -> None:
    for name in NEW:
        assert getattr(plots, name) is getattr(plots_data, name)
        assert name in plots_data.__all__


def test_plots_data_can_be_imported_before_labkit_plots() -> None:
    # labkit.plots imports labkit.plots_data at its end: the reverse order must work too
    code = "import labkit.plots_data as d, labkit.plots as p; assert p.tradeoff is d.tradeoff"
    subprocess.run([sys.executable, "-c", code], check=True, env={"MPLBACKEND": "Agg"})


def test_given_axes_are_drawn_into() -> None:
    fig = Figure()
    axes = fig.subplots(2, 4).ravel()
    ops = _state_ops()
    assert plots.t_visibility(ops, ax=axes[0]) is fig
    assert plots.state_latency(ops, ax=axes[1]) is fig
    assert plots.cache_hit_rate(_cache_series(), CACHE_EVENTS, ax=axes[2]) is fig
    assert plots.batch_sizes(BATCHING, ax=axes[3]) is fig
    assert plots.batch_limit(_batching_frame(), ax=axes[4]) is fig
    assert plots.tradeoff(_comparison(), by="batching.max_batch", ax=axes[5]) is fig
    assert plots.comparison_bars(_comparison(), "batching.max_batch", ax=axes[6]) is fig


# -- t-visibility ------------------------------------------------------------------------------


def test_t_visibility_steps_follow_the_measured_curve() -> None:
    ops = _state_ops()
    curve = visibility_curve(ops)
    fig = plots.t_visibility(ops)
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog"  # the [0, first edge) bin keeps a place on the axis
    assert ax.get_xlim()[0] == 0
    assert ax.get_ylim() == pytest.approx((0, 1.05))
    steps = _one(ax, "measured")
    assert isinstance(steps, StepPatch) and isinstance(_one(ax, "centres"), Line2D)
    values, edges, _ = steps.get_data()
    np.testing.assert_allclose(values, curve["p_consistent"].to_numpy(), equal_nan=True)
    assert edges[0] == 0 and np.all(np.diff(edges) > 0) and np.isfinite(edges[-1])
    # Δ grows → fresher: the synthetic data converge, and so must the drawing
    assert values[0] < 0.75 and values[np.isfinite(values)][-1] > 0.95
    # reads per bin drawn lightly on the twin axis
    twin = fig.axes[1]
    counts, _, _ = _one(twin, "reads").get_data()
    np.testing.assert_array_equal(counts, curve["reads"].to_numpy())
    assert twin.get_ylim()[1] >= 2 * counts.max()
    # the 95% interval contains the estimate
    high, _, low = _one(ax, "interval").get_data()
    ok = np.isfinite(values)
    assert np.all(low[ok] <= values[ok] + 1e-12) and np.all(values[ok] <= high[ok] + 1e-12)
    assert not _by_gid(ax, "theory")


def test_t_visibility_accepts_a_curve_and_draws_the_theory() -> None:
    ops = _state_ops()
    curve = visibility_curve(ops)
    deltas = np.array([0.0, 1.0, 10.0, 100.0])
    probs = np.array([0.5, 0.7, 0.99, 1.0])
    fig = plots.t_visibility(curve, theory=(deltas, probs), title="custom")
    ax = fig.axes[0]
    from_ops = _one(plots.t_visibility(ops).axes[0], "measured").get_data()[0]
    np.testing.assert_allclose(_one(ax, "measured").get_data()[0], from_ops, equal_nan=True)
    theory = _one(ax, "theory")
    assert theory.get_linestyle() == "--" and theory.get_label() == "WARS Monte Carlo"
    np.testing.assert_array_equal(theory.get_xdata(), deltas)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "WARS Monte Carlo" in labels
    assert ax.get_title().startswith("custom")


def test_t_visibility_changes_with_the_data() -> None:
    ops = _state_ops()
    staler = ops.copy()
    staler.loc[(staler["op"] == "read") & (staler["delta_ms"] > 20), "behind"] = 1
    before = _one(plots.t_visibility(ops).axes[0], "measured").get_data()[0]
    after = _one(plots.t_visibility(staler).axes[0], "measured").get_data()[0]
    last = np.flatnonzero(np.isfinite(before))[-1]
    assert after[last] == 0 and before[last] > 0.9


@pytest.mark.parametrize(
    "data",
    [
        None,
        pd.DataFrame(),
        pd.DataFrame(columns=["t_s", "op", "latency_ms", "behind", "delta_ms"]),
        _state_ops()[lambda d: d["op"] == "write"],
        visibility_curve(_state_ops()).assign(reads=0, p_consistent=np.nan),
    ],
    ids=["none", "empty", "no-rows", "writes-only", "all-nan-curve"],
)
def test_t_visibility_without_data_says_so(data: pd.DataFrame | None) -> None:
    fig = plots.t_visibility(data)
    assert "no t-visibility" in _texts(fig)


# -- state latency -----------------------------------------------------------------------------


def test_state_latency_bars_are_the_percentiles() -> None:
    ops = _state_ops()
    fig = plots.state_latency(ops)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    reads = ops.loc[ops["op"] == "read", "latency_ms"]
    writes = ops.loc[ops["op"] == "write", "latency_ms"]
    np.testing.assert_allclose(_heights(_bars(ax, "read")), np.percentile(reads, [50, 95, 99]))
    np.testing.assert_allclose(_heights(_bars(ax, "write")), np.percentile(writes, [50, 95, 99]))
    note = _one(ax, "state-note").get_text()
    read_rows = ops[ops["op"] == "read"]
    stale = (read_rows["behind"] >= 1).mean()
    assert f"stale reads {100 * stale:.1f}%" in note
    n_over = int((ops["outcome"] == "overwritten").sum())
    assert f"{n_over:,} overwritten" in note and "session re-reads" in note


def test_state_latency_with_reads_only_and_without_ops() -> None:
    ops = _state_ops()
    ax = plots.state_latency(ops[ops["op"] == "read"]).axes[0]
    assert len(_bars(ax, "read")) == 3 and not _bars(ax, "write")
    for empty in (None, pd.DataFrame(), ops.iloc[:0]):
        assert "No state reads or writes" in _texts(plots.state_latency(empty))


# -- cache -------------------------------------------------------------------------------------


def test_cache_hit_rate_stacks_layers_and_marks_events() -> None:
    series = _cache_series()
    fig = plots.cache_hit_rate(series, CACHE_EVENTS, warmup_s=5)
    ax = fig.axes[0]
    hit = _one(ax, "hit_rate")
    np.testing.assert_allclose(hit.get_ydata()[:-1], 1 - series["store_share"])
    assert hit.get_ydata()[30] == pytest.approx(0.7)  # the dip
    # l1, l2 and the store; the replica layer never served a read, so it is left out
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "L1 (gateway)" in legend and "store (miss)" in legend
    assert "replica node" not in legend
    assert {"cache node down", "node restart (cold)", "invalidation"} <= set(legend)
    # the node's downtime is shaded from its crash to its restart
    span = _one(ax, "down:c-1")
    assert span.get_x() == pytest.approx(30) and span.get_width() == pytest.approx(15)
    assert _one(ax, "crash:c-1").get_xdata()[0] == 30
    assert _one(ax, "restart:c-1").get_xdata()[0] == 45
    assert _by_gid(ax, "invalidate:2")
    text = _texts(fig)
    assert "23.1% keys moved" in text and "hit 90.0%→70.0%, back in 6 s" in text
    assert "8,731 keys dropped" in text
    assert ax.get_ylim()[1] > 1.0  # head room for the labels above 100 %
    assert max(ax.get_yticks()) == pytest.approx(1.0)


def test_cache_hit_rate_events_as_a_frame_and_a_node_that_stays_down() -> None:
    events = pd.DataFrame([CACHE_EVENTS[0]])
    ax = plots.cache_hit_rate(_cache_series(), events).axes[0]
    span = _one(ax, "down:c-1")
    assert span.get_x() + span.get_width() == pytest.approx(60)  # to the end of the data


def test_cache_hit_rate_changes_with_the_data() -> None:
    a = _one(plots.cache_hit_rate(_cache_series(dip_at=10)).axes[0], "hit_rate").get_ydata()
    b = _one(plots.cache_hit_rate(_cache_series(dip_at=40)).axes[0], "hit_rate").get_ydata()
    assert np.argmin(a) == 10 and np.argmin(b) == 40


def test_cache_hit_rate_without_reads() -> None:
    nan = _cache_series().assign(
        l1_share=np.nan, l2_share=np.nan, replica_share=np.nan, store_share=np.nan
    )
    for series in (None, pd.DataFrame(), _cache_series().iloc[:0], nan):
        assert "No cache reads" in _texts(plots.cache_hit_rate(series, CACHE_EVENTS))


# -- batching ----------------------------------------------------------------------------------


def test_batch_sizes_bars_are_shares_of_batches() -> None:
    fig = plots.batch_sizes(BATCHING)
    ax = fig.axes[0]
    sent, served = _heights(_bars(ax, "sent")), _heights(_bars(ax, "served"))
    assert len(sent) == len(served) == 5  # sizes 1, 2, 3, 4, 6 on one axis
    assert sent.sum() == pytest.approx(1) and served.sum() == pytest.approx(1)
    assert sent[0] == pytest.approx(0.6) and sent[-1] == 0  # nothing sent in batches of 6
    assert served[-1] == pytest.approx(10 / 1000)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3", "4", "6"]
    assert "120 on size" in ax.get_title() and "900 on delay" in ax.get_title()
    assert len(_by_gid(ax, "mean:sent")) == 1


def test_batch_sizes_changes_with_the_data_and_copes_with_nothing() -> None:
    bigger = {**BATCHING, "served": _dist({4: 10, 8: 90})}
    served = _heights(_bars(plots.batch_sizes(bigger).axes[0], "served"))
    assert served.max() == pytest.approx(0.9)
    only_served = {"served": BATCHING["served"]}
    ax = plots.batch_sizes(only_served).axes[0]
    assert not _bars(ax, "sent") and len(_bars(ax, "served")) == 5
    empty = {"sent": _dist({1: 1}) | {"sizes": {}}, "served": None, "flushes": {}}
    for summary in (None, {}, empty):
        assert "No batches" in _texts(plots.batch_sizes(summary))


def test_batch_limit_one_line_per_gateway_with_p99_and_target() -> None:
    frame = _batching_frame()
    fig = plots.batch_limit(frame, target_ms=30, warmup_s=2)
    ax, twin = fig.axes
    for gw in (0, 1):
        line = _one(ax, f"limit:{gw}")
        rows = frame[frame["gateway"] == gw]
        np.testing.assert_array_equal(line.get_ydata(), rows["limit"])
        p99 = _one(twin, f"p99:{gw}").get_ydata()
        assert np.isnan(p99[5]) and p99[0] == pytest.approx(rows["p99_ms"].iloc[0])
    target = _one(twin, "target")
    assert list(target.get_ydata()) == [30, 30]
    assert twin.get_ylim()[1] >= 30
    assert "final limit" in ax.get_title()


def test_batch_limit_many_gateways_and_no_data() -> None:
    ax = plots.batch_limit(_batching_frame(gateways=12)).axes[0]
    assert not any(str(line.get_gid()).startswith("limit:") for line in ax.lines)
    assert any("min–max over 12 gateways" in c.get_label() for c in ax.collections)
    no_p99 = _batching_frame().drop(columns="p99_ms")
    assert plots.batch_limit(no_p99).axes[0].lines
    for frame in (None, pd.DataFrame(), _batching_frame().iloc[:0]):
        assert "No adaptive batching" in _texts(plots.batch_limit(frame))


# -- comparisons -------------------------------------------------------------------------------


def test_tradeoff_one_sorted_curve_per_setting() -> None:
    frame = _comparison().sample(frac=1.0, random_state=3)  # order must not matter
    fig = plots.tradeoff(frame, by="batching.max_batch", label_points="workload.arrival.rate_rps")
    ax = fig.axes[0]
    curves = [line for line in ax.lines if str(line.get_gid()).startswith("curve")]
    assert [c.get_gid() for c in curves] == ["curve:1", "curve:4", "curve:16"]
    for curve in curves:
        x = np.asarray(curve.get_xdata(), dtype=float)
        assert len(x) == 4 and np.all(np.diff(x) >= 0)
    assert ax.get_yscale() == "log"  # p99 spans more than 30x as load rises
    assert ax.get_xscale() == "linear"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["batching.max_batch = 1", "batching.max_batch = 4", "batching.max_batch = 16"]
    assert sorted(t.get_text() for t in ax.texts) == sorted(["500", "1000", "2000", "4000"] * 3)


def test_tradeoff_linear_when_narrow_and_changes_with_the_data() -> None:
    frame = _comparison()
    narrow = frame.assign(p99_ms=10 + frame.index % 3)
    ax = plots.tradeoff(narrow, y="p99_ms", by="batching.max_batch").axes[0]
    assert ax.get_yscale() == "linear"
    single = plots.tradeoff(frame, label_points="batching.max_batch").axes[0]
    curve = _one(single, "curve")
    assert len(curve.get_xdata()) == len(frame) and single.get_legend() is None
    shifted = plots.tradeoff(frame.assign(throughput_rps=frame["throughput_rps"] * 2)).axes[0]
    np.testing.assert_allclose(
        _one(shifted, "curve").get_xdata(), np.asarray(curve.get_xdata()) * 2
    )


def test_tradeoff_follows_the_offered_load_through_a_collapse() -> None:
    frame = _comparison()
    # past saturation batches of 1 collapse: less throughput at more load, many errors
    collapse = (frame["batching.max_batch"] == 1) & (frame["workload.arrival.rate_rps"] == 4000)
    frame.loc[collapse, ["throughput_rps", "error_rate", "p99_ms"]] = [1200.0, 0.6, 1999.0]
    ax = plots.tradeoff(frame.iloc[::-1], by="batching.max_batch").axes[0]
    x = np.asarray(_one(ax, "curve:1").get_xdata(), dtype=float)
    rates = frame.loc[frame["batching.max_batch"] == 1, "throughput_rps"].to_numpy()
    np.testing.assert_allclose(x, rates)  # in order of load: the curve bends back
    assert x[-1] < x[-2]
    hollow = _one(ax, "failing:1")
    assert list(hollow.get_xdata()) == [1200.0] and hollow.get_markerfacecolor() == "white"
    assert not _by_gid(ax, "failing:16") and "hollow" in ax.get_title()
    # without a load column, or when told, the points follow x
    no_load = frame.drop(columns="workload.arrival.rate_rps")
    x = np.asarray(
        _one(plots.tradeoff(no_load, by="batching.max_batch").axes[0], "curve:1").get_xdata()
    )
    assert np.all(np.diff(x) >= 0)
    by_x = plots.tradeoff(frame, by="batching.max_batch", sort_by="throughput_rps").axes[0]
    assert np.all(np.diff(np.asarray(_one(by_x, "curve:1").get_xdata())) >= 0)


def test_tradeoff_without_data() -> None:
    frame = _comparison()
    cases = [None, pd.DataFrame(), frame.drop(columns="p99_ms"), frame.assign(p99_ms=np.nan)]
    for case in cases:
        fig = plots.tradeoff(case, by="batching.max_batch")
        assert "No run" in _texts(fig)
    assert "no column nope" in _texts(plots.tradeoff(frame, by="nope"))


def test_comparison_bars_grouped_by_key() -> None:
    frame = pd.DataFrame(
        {
            "registry.consistency": ["eventual", "watch", "strong"],
            "p50_ms": [10.0, 10.2, 11.3],
            "p99_ms": [259.0, 60.0, 40.0],
        }
    )
    fig = plots.comparison_bars(frame, "registry.consistency")
    (ax,) = fig.axes  # one unit: one panel
    np.testing.assert_allclose(_heights(_bars(ax, "metric:p50_ms")), [10.0, 10.2, 11.3])
    np.testing.assert_allclose(_heights(_bars(ax, "metric:p99_ms")), [259.0, 60.0, 40.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["eventual", "watch", "strong"]
    assert ax.get_yscale() == "linear"  # 10 to 259: under the factor of 30
    assert "259.0" in _texts(fig)


def test_comparison_bars_averages_repeats_splits_units_and_uses_log() -> None:
    frame = _comparison()
    fig = plots.comparison_bars(frame, "batching.max_batch", metrics=("p99_ms", "error_rate"))
    assert len(fig.axes) == 2  # ms and a fraction do not share an axis
    ms_ax, frac_ax = fig.axes
    expected = frame.groupby("batching.max_batch")["p99_ms"].mean().to_numpy()
    np.testing.assert_allclose(_heights(_bars(ms_ax, "metric:p99_ms")), expected)
    assert ms_ax.get_yscale() == "log"
    assert ms_ax.get_xticklabels()[0].get_text() == "1\n(4 runs)"
    assert len(_bars(frac_ax, "metric:error_rate")) == 3
    # drawn into a given axes, everything shares it
    ax = Figure().add_subplot()
    plots.comparison_bars(frame, "batching.max_batch", metrics=("p99_ms", "error_rate"), ax=ax)
    assert len(_bars(ax)) == 6


def test_comparison_bars_without_data() -> None:
    frame = _comparison()
    cases: list[tuple[Any, str, tuple[str, ...]]] = [
        (None, "k", ("p99_ms",)),
        (pd.DataFrame(), "k", ("p99_ms",)),
        (frame, "nope", ("p99_ms",)),
        (frame, "batching.max_batch", ("nope_ms",)),
        (frame.assign(p99_ms=np.nan), "batching.max_batch", ("p99_ms",)),
        (frame.assign(**{"batching.max_batch": np.nan}), "batching.max_batch", ("p99_ms",)),
    ]
    for data, key, metrics in cases:
        fig = plots.comparison_bars(data, key, metrics)
        text = _texts(fig)
        assert "No run" in text or "nothing to show" in text, (key, metrics, text)


# -- report ------------------------------------------------------------------------------------


def _tiny(**sections: Any) -> Any:
    from labkit.scenario import scenario_from_dict
    from labkit.sim import simulate

    spec = {
        "name": "tiny",
        "seed": 1,
        "duration_s": 4,
        "warmup_s": 1,
        "workers": {
            "count": 4,
            "concurrency": 2,
            "service_time": {"dist": "exponential", "mean_ms": 2},
        },
        "workload": {"arrival": {"process": "poisson", "rate_rps": 400}, "keys": {"count": 300}},
        **sections,
    }
    return simulate(scenario_from_dict(spec))


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000, path


def test_report_of_a_cache_run(tmp_path: Path) -> None:
    results = _tiny(
        cache={
            "nodes": 3,
            "replication": 1,
            "capacity": 200,
            "l1": {"capacity": 30, "ttl_s": 1},
            "node_failures": [{"node": "c-1", "at_s": 2, "duration_s": 1}],
        }
    )
    paths = write_report(results, tmp_path)
    _check_png(paths["cache_hit_rate"])
    assert not {"batch_sizes", "batch_limit", "t_visibility", "state_latency"} & set(paths)
    html = paths["report"].read_text(encoding="utf-8")
    assert 'src="cache_hit_rate.png"' in html
    assert html.index("cache_hit_rate.png") < html.index("latency_percentiles.png")
    assert "<caption>Cache</caption>" in html and "<caption>Cache node events</caption>" in html
    text = format_summary(results.summary)
    assert "cache        hit " in text and "cache c-1    crash at 2 s" in text


def test_report_of_an_adaptive_batching_run(tmp_path: Path) -> None:
    results = _tiny(batching={"max_batch": 4, "max_delay_ms": 2, "adaptive": {"target_p99_ms": 5}})
    paths = write_report(results, tmp_path)
    _check_png(paths["batch_sizes"])
    _check_png(paths["batch_limit"])
    html = paths["report"].read_text(encoding="utf-8")
    assert 'src="batch_sizes.png"' in html and 'src="batch_limit.png"' in html
    assert "<caption>Batches</caption>" in html and "adaptive: p99 target" in html
    assert "cache_hit_rate" not in html
    text = format_summary(results.summary)
    assert "batching     served mean" in text and "(target p99 5 ms)" in text


def test_report_of_a_fixed_batching_run_has_no_limit_plot(tmp_path: Path) -> None:
    results = _tiny(batching={"max_batch": 4, "max_delay_ms": 2})
    paths = write_report(results, tmp_path)
    _check_png(paths["batch_sizes"])
    assert "batch_limit" not in paths


def test_report_of_a_state_run_from_synthetic_ops(tmp_path: Path) -> None:
    # the state service's own runs are tested with it; here only the report's side
    results = _tiny()
    ops = _state_ops()
    results.state_ops = ops
    results.summary["state"] = {
        "model": "eventual",
        "n": 3,
        "r": 1,
        "w": 1,
        "conflict": "last_write_wins",
        "reads": 4000,
        "writes": 2000,
        "read_ms": {"mean": 1.1, "p50": 1.0, "p95": 2.2, "p99": 3.1},
        "write_ms": {"mean": 3.0, "p50": 2.7, "p95": 6.0, "p99": 4.2},
        "stale_reads": 492,
        "stale_fraction": 0.123,
        "k_staleness": {"1": 0.123, "2": 0.011, "3": 0.0},
        "max_behind": 2,
        "session_retries": 0,
        "conflicts": {"overwritten": 40, "merged": 0, "rejected": 0},
        "t_visibility": [],
    }
    paths = write_report(results, tmp_path)
    _check_png(paths["t_visibility"])
    _check_png(paths["state_latency"])
    html = paths["report"].read_text(encoding="utf-8")
    assert 'src="t_visibility.png"' in html and "<caption>State service</caption>" in html
    assert "k-staleness k≥2" in html
    text = format_summary(results.summary)
    assert (
        "state        eventual n=3 r=1 w=1  read p99 3.100 ms  write p99 4.200 ms  "
        "stale 12.3% (k≥2 1.1%)  40 overwritten"
    ) in text
