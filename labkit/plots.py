"""Matplotlib plots of a run's ``Results``, shared by the CLI report and notebooks.

Every function takes a ``Results`` (``latency_percentiles`` and ``latency_cdf`` also take a list
of ``(label, Results)`` pairs for A/B comparisons) and an optional ``ax`` to draw into, and returns
the :class:`~matplotlib.figure.Figure`. Without ``ax`` a fresh ``Figure`` is built with the object
API, never through pyplot's global state, so the functions are safe in threads and on headless
machines, and this module never picks a backend (notebooks keep their inline one). In a notebook a
returned ``Figure`` renders as the cell's value; ``fig.savefig(...)`` writes it to a file.

A run with nothing to show (no completed requests, no workers, ...) gets an explanatory text on
the axes instead of an exception.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, PercentFormatter

if TYPE_CHECKING:
    import pandas as pd

    from labkit.results import Results

__all__ = [
    "PERCENTILES",
    "STATUS_COLORS",
    "fmt_ms",
    "latency_cdf",
    "latency_percentiles",
    "outcomes_over_time",
    "percentiles_over_time",
    "worker_load",
]

#: summary key and axis label of the percentiles drawn by :func:`latency_percentiles`
PERCENTILES: tuple[tuple[str, str], ...] = (
    ("p50", "p50"),
    ("p90", "p90"),
    ("p95", "p95"),
    ("p99", "p99"),
    ("p999", "p99.9"),
)

#: one colour per final status, used wherever outcomes are drawn
STATUS_COLORS: dict[str, str] = {
    "completed": "#2ca02c",
    "failed": "#d62728",
    "rejected": "#ff7f0e",
    "timed_out": "#9467bd",
}

#: above this many workers :func:`worker_load` draws sorted curves instead of one bar per worker
MAX_WORKER_BARS = 200
#: up to this many workers the x axis is labelled with worker names
MAX_WORKER_LABELS = 30
#: a CDF curve is drawn through at most about this many points (plus the exact tail)
CDF_POINTS = 2000


def fmt_ms(value: float | None) -> str:
    """A latency in ms with two or three decimals: ``0.123``, ``4.567``, ``12.35``, ``123.4``."""
    if value is None or not np.isfinite(value):
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 10:
        return f"{value:.2f}"
    if magnitude >= 0.001 or magnitude == 0:
        return f"{value:.3f}"
    return f"{value:.2e}"


# -- helpers -----------------------------------------------------------------------------------


def _figure(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        return fig, fig.add_subplot()
    fig = ax.figure
    # a SubFigure's ``figure`` is the root Figure; a Figure's is itself
    return getattr(fig, "figure", fig), ax


def _empty(ax: Axes, message: str) -> None:
    """Explain on the axes why there is nothing to draw."""
    ax.text(
        0.5,
        0.5,
        message,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=11,
        color="0.35",
        wrap=True,
    )
    ax.set_xticks([])
    ax.set_yticks([])


def _name(results: Results) -> str:
    scenario = results.summary.get("scenario") or {}
    name = scenario.get("name") if isinstance(scenario, Mapping) else None
    return str(name if name is not None else getattr(results.scenario, "name", "run"))


def _runs(results_or_list: Any) -> list[tuple[str, Results]]:
    """Normalise one ``Results``, a mapping or a sequence of ``(label, Results)`` to pairs."""
    if isinstance(results_or_list, Mapping):
        return [(str(label), r) for label, r in results_or_list.items()]
    if isinstance(results_or_list, Sequence) and not isinstance(results_or_list, str):
        runs = []
        for item in results_or_list:
            if isinstance(item, tuple) and len(item) == 2:
                runs.append((str(item[0]), item[1]))
            else:  # a bare Results in a list: label it by scenario name
                runs.append((_name(item), item))
        return runs
    return [(_name(results_or_list), results_or_list)]


def _completed_latencies(results: Results) -> np.ndarray:
    """Latencies (ms) of measured completed requests, sorted."""
    rec = results.records
    if rec is None or rec.empty:
        return np.zeros(0)
    mask = (rec["status"] == "completed").to_numpy() & rec["measured"].to_numpy(dtype=bool)
    values = rec["latency_ms"].to_numpy(dtype=np.float64)[mask]
    return np.sort(values[np.isfinite(values)])


def _warmup_s(results: Results) -> float:
    warmup = getattr(results.scenario, "warmup_s", None)
    if warmup is None:
        warmup = (results.summary.get("scenario") or {}).get("warmup_s", 0.0)
    return float(warmup or 0.0)


def _bin_width(t: np.ndarray) -> float:
    return float(np.median(np.diff(t))) if len(t) > 1 else 1.0


def _shade_warmup(ax: Axes, results: Results) -> bool:
    warmup = _warmup_s(results)
    if warmup > 0:
        ax.axvspan(0, warmup, color="0.5", alpha=0.15, lw=0, label=f"warm-up ({warmup:g} s)")
        return True
    return False


def _plain_log(axis: Any) -> None:
    """Label a log axis with plain numbers (``20``, ``100``) rather than powers of ten."""
    axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False))


def _legend_below(ax: Axes, *others: Axes, ncols: int = 6) -> None:
    """One legend for ``ax`` and its twins, under the axes where it cannot hide data."""
    handles, labels = ax.get_legend_handles_labels()
    for other in others:
        more_handles, more_labels = other.get_legend_handles_labels()
        handles += more_handles
        labels += more_labels
    ax.legend(
        handles,
        labels,
        fontsize=8.5,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncols=min(ncols, max(1, len(labels))),
        frameon=False,
    )


def _downsample_index(n: int, points: int = CDF_POINTS) -> np.ndarray:
    """Indices into a sorted sample of ``n`` that keep the curve's shape, tail included."""
    if n <= 2 * points:
        return np.arange(n)
    body = np.linspace(0, n - 1, points)
    tail = n - np.geomspace(1, n, points)  # dense near the largest values
    return np.unique(np.concatenate([body, tail, [0, n - 1]]).round().astype(np.int64))


# -- plots -------------------------------------------------------------------------------------


def latency_percentiles(results_or_list: Any, ax: Axes | None = None) -> Figure:
    """Bars of the p50/p90/p95/p99/p99.9 latency (ms, log scale), annotated with their values.

    ``results_or_list`` is one ``Results`` or a list of ``(label, Results)`` (or a mapping
    label → ``Results``); several runs give grouped bars, one colour per run.
    """
    runs = _runs(results_or_list)
    fig, ax = _figure(ax, (8, 4.5))
    ax.set_title("Latency percentiles (completed requests, after warm-up)")
    values = np.array(
        [
            [_positive(r.summary.get("latency_ms", {}).get(key)) for key, _ in PERCENTILES]
            for _, r in runs
        ],
        dtype=np.float64,
    ).reshape(len(runs), len(PERCENTILES))
    if not runs or not np.isfinite(values).any():
        _empty(ax, "No completed requests after warm-up:\nno latency percentiles to show")
        return fig
    x = np.arange(len(PERCENTILES))
    width = 0.8 / len(runs)
    for i, (label, r) in enumerate(runs):
        offset = (i - (len(runs) - 1) / 2) * width
        n = r.summary.get("requests", {}).get("completed")
        bars = ax.bar(
            x + offset,
            np.nan_to_num(values[i], nan=0.0),
            width * 0.95,
            label=f"{label} (n={n:,})" if isinstance(n, int) else label,
            color=f"C{i}",
        )
        ax.bar_label(
            bars,
            labels=[fmt_ms(v) if np.isfinite(v) else "" for v in values[i]],
            padding=2,
            fontsize=8 if len(runs) < 3 else 7,
            rotation=0 if len(runs) < 3 else 90,
        )
    ax.set_yscale("log")
    finite = values[np.isfinite(values)]
    ax.set_ylim(finite.min() / 2, finite.max() * (4 if len(runs) < 3 else 10))
    _plain_log(ax.yaxis)
    ax.set_xticks(x, [label for _, label in PERCENTILES])
    ax.set_ylabel("latency (ms)")
    ax.grid(axis="y", which="major", alpha=0.3)
    if len(runs) > 1:
        ax.legend(fontsize=9)
    return fig


def _positive(value: Any) -> float:
    # zero latency cannot be drawn on a log scale; it is left out rather than crashing
    return float(value) if value is not None and value > 0 else np.nan


def latency_cdf(results_or_list: Any, ax: Axes | None = None, *, tail: bool = False) -> Figure:
    """Empirical CDF of measured completed latencies on a log x-axis.

    With ``tail=True`` the complementary CDF ``P(latency ≥ x)`` is drawn on a log y-axis instead,
    which spreads out the tail (p99, p99.9, ...). Takes one ``Results`` or ``(label, Results)``
    pairs. Zero latencies cannot be placed on a log axis and are left out.
    """
    runs = _runs(results_or_list)
    fig, ax = _figure(ax, (8, 4.5))
    ax.set_title(
        "Latency tail, P(latency ≥ x)"
        if tail
        else "Latency CDF (completed requests, after warm-up)"
    )
    drawn = 0
    for i, (label, r) in enumerate(runs):
        lat = _completed_latencies(r)
        n = len(lat)
        lat = lat[lat > 0]
        if not len(lat):
            continue
        idx = _downsample_index(len(lat))
        skipped = n - len(lat)  # zeros sit at the bottom of the distribution
        # tail: P(X >= x_i), never 0 so log-safe; otherwise P(X <= x_i)
        y = (n - skipped - idx) / n if tail else (skipped + idx + 1) / n
        ax.plot(lat[idx], y, color=f"C{i}", lw=1.6, label=f"{label} (n={n:,})")
        drawn += 1
    if not drawn:
        _empty(ax, "No completed requests after warm-up:\nno latency distribution to show")
        return fig
    ax.set_xscale("log")
    _plain_log(ax.xaxis)
    ax.set_xlabel("latency (ms)")
    if tail:
        ax.set_yscale("log")
        ax.set_ylabel("fraction of requests ≥ x")
        for q in (0.1, 0.01, 0.001):
            ax.axhline(q, color="0.6", lw=0.6, ls=":")
    else:
        ax.set_ylim(0, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_ylabel("fraction of requests ≤ x")
        for q in (0.5, 0.9, 0.99):
            ax.axhline(q, color="0.6", lw=0.6, ls=":")
    ax.grid(which="major", alpha=0.3)
    ax.legend(fontsize=9, loc="lower right" if not tail else "lower left")
    return fig


def percentiles_over_time(results: Results, ax: Axes | None = None) -> Figure:
    """p50/p90/p99 latency per second (log y), throughput on a twin axis, warm-up shaded."""
    fig, ax = _figure(ax, (10, 4.5))
    ax.set_title("Latency percentiles and throughput over time")
    ts = results.timeseries
    if ts is None or ts.empty:
        _empty(ax, "Empty time series: nothing to show")
        return fig
    t = ts["t_s"].to_numpy(dtype=np.float64)
    dt = _bin_width(t)
    centre = t + dt / 2
    twin = ax.twinx()
    # throughput behind the latency lines: the twin axes is drawn first
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    edges = np.append(t, t[-1] + dt)
    throughput = ts["throughput_rps"].to_numpy(dtype=np.float64)
    twin.fill_between(edges, np.append(throughput, throughput[-1]), step="post", color="0.88", lw=0)
    twin.set_ylabel("throughput (completed / s)", color="0.4")
    twin.tick_params(axis="y", colors="0.4")
    twin.set_ylim(0, max(1.0, float(np.nanmax(throughput, initial=0.0)) * 1.05))
    twin.plot([], [], color="0.88", lw=6, label="throughput")  # legend proxy
    _shade_warmup(ax, results)
    has_latency = False
    for col, label, style in (
        ("p50_ms", "p50", "-"),
        ("p90_ms", "p90", "--"),
        ("p99_ms", "p99", "-"),
    ):
        if col not in ts:
            continue
        y = ts[col].to_numpy(dtype=np.float64)
        y = np.where(y > 0, y, np.nan)
        if np.isfinite(y).any():
            has_latency = True
            ax.plot(centre, y, style, lw=1.4, marker="." if len(t) <= 60 else None, label=label)
    ax.set_xlim(0, t[-1] + dt)
    ax.set_xlabel("time (s)")
    if has_latency:
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
        ax.set_ylabel("latency (ms)")
        ax.grid(which="major", alpha=0.3)
    else:
        ax.set_yticks([])
        ax.text(
            0.5,
            0.5,
            "No completed requests: no latency to show",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="0.35",
        )
    _legend_below(ax, twin)
    return fig


def worker_load(results: Results, ax: Axes | None = None) -> Figure:
    """Per-worker utilization sorted high to low, with each worker's share of served requests.

    Up to 200 workers get one bar each (utilization) and a marker for their served share, in the
    same order. Beyond that, bars would be unreadable, so both are drawn as sorted curves over the
    worker rank (each sorted on its own), which stays legible for 10,000 workers.
    """
    fig, ax = _figure(ax, (10, 4.5))
    workers = results.workers
    if workers is None or workers.empty or "utilization" not in workers:
        ax.set_title("Worker load")
        _empty(ax, "No per-worker data")
        return fig
    n = len(workers)
    util = workers["utilization"].to_numpy(dtype=np.float64)
    util = np.nan_to_num(util, nan=0.0)
    served = workers["served"].to_numpy(dtype=np.float64) if "served" in workers else np.zeros(n)
    total = served.sum()
    share = served / total if total > 0 else np.zeros(n)
    names = _worker_names(workers)
    imbalance = served.max() / served.mean() if served.mean() > 0 else float("nan")
    title = f"Worker load: {n:,} workers, utilization mean {util.mean():.1%}, max {util.max():.1%}"
    if np.isfinite(imbalance):
        title += f", served max/mean {imbalance:.2f}"
    ax.set_title(title, fontsize=11)
    twin = ax.twinx()
    rank = np.arange(n)
    if n <= MAX_WORKER_BARS:
        order = np.argsort(-util, kind="stable")
        ax.bar(rank, util[order], width=0.8, color="C0", alpha=0.8, label="utilization")
        twin.plot(
            rank,
            share[order],
            "o" if n <= 60 else ".",
            color="C1",
            ms=5 if n <= 60 else 3,
            label="share of served",
        )
        if n <= MAX_WORKER_LABELS:
            ax.set_xticks(
                rank, names[order], rotation=45 if n > 8 else 0, ha="right" if n > 8 else "center"
            )
            ax.set_xlabel("worker (sorted by utilization)")
        else:
            ax.set_xlabel("workers, sorted by utilization")
        ax.set_xlim(-0.6, n - 0.4)
    else:
        util_sorted = np.sort(util)[::-1]
        share_sorted = np.sort(share)[::-1]
        ax.fill_between(rank, util_sorted, color="C0", alpha=0.35, lw=0)
        ax.plot(rank, util_sorted, color="C0", lw=1.2, label="utilization (sorted)")
        twin.plot(rank, share_sorted, color="C1", lw=1.2, label="share of served (sorted)")
        ax.set_xlim(0, n - 1)
        ax.set_xlabel("worker rank (each curve sorted high to low)")
    ax.axhline(util.mean(), color="C0", ls=":", lw=1, label=f"mean utilization {util.mean():.1%}")
    if n:
        twin.axhline(1 / n, color="C1", ls=":", lw=1, label=f"even share {1 / n:.2%}")
    ax.set_ylim(0, max(1.0, util.max() * 1.05))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("utilization")
    twin.set_ylim(0, max(share.max(), 1 / n) * 1.15 if n else 1)
    twin.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    twin.set_ylabel("share of served requests", color="C1")
    twin.tick_params(axis="y", colors="C1")
    ax.grid(axis="y", alpha=0.3)
    _legend_below(ax, twin, ncols=4)
    return fig


def _worker_names(workers: pd.DataFrame) -> np.ndarray:
    if "worker" in workers:
        return workers["worker"].astype(str).to_numpy()
    return workers.index.astype(str).to_numpy()


def outcomes_over_time(results: Results, ax: Axes | None = None) -> Figure:
    """Requests ending per second, stacked by final status, with the offered rate as a line."""
    fig, ax = _figure(ax, (10, 4.5))
    ax.set_title("Outcomes over time (by the second each request ended)")
    ts = results.timeseries
    statuses = [s for s in STATUS_COLORS if ts is not None and s in ts]
    if ts is None or ts.empty or not statuses:
        _empty(ax, "Empty time series: nothing to show")
        return fig
    t = ts["t_s"].to_numpy(dtype=np.float64)
    dt = _bin_width(t)
    counts = [ts[s].to_numpy(dtype=np.float64) / dt for s in statuses]
    if not any(c.sum() > 0 for c in counts):
        _empty(ax, "No requests ended during the run")
        return fig
    # step plots need one more edge than bins
    edges = np.append(t, t[-1] + dt)
    ax.stackplot(
        edges,
        *[np.append(c, c[-1]) for c in counts],
        labels=statuses,
        colors=[STATUS_COLORS[s] for s in statuses],
        step="post",
        alpha=0.85,
        lw=0,
    )
    if "offered" in ts:
        offered = ts["offered"].to_numpy(dtype=np.float64) / dt
        ax.step(
            edges, np.append(offered, offered[-1]), where="post", color="k", lw=1, label="offered"
        )
    _shade_warmup(ax, results)
    ax.set_xlim(0, edges[-1])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("requests / s")
    ax.grid(axis="y", alpha=0.3)
    _legend_below(ax)
    return fig
