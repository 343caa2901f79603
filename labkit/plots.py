"""Matplotlib plots of a run, shared by the CLI report, the live driver and notebooks.

Most functions take a ``Results`` (``latency_percentiles`` and ``latency_cdf`` also take a list
of ``(label, Results)`` pairs for A/B comparisons) and an optional ``ax`` to draw into, and return
the :class:`~matplotlib.figure.Figure`. The failure-recovery plots, :func:`recovery_timeline` and
:func:`health_heatmap`, take the plain DataFrames instead (time series, faults, recovery, alerts,
per-worker health), so the live driver can draw them before a ``Results`` exists. Without ``ax``
a fresh ``Figure`` is built with the object API, never through pyplot's global state, so the
functions are safe in threads and on headless machines, and this module never picks a backend
(notebooks keep their inline one). In a notebook a returned ``Figure`` renders as the cell's
value; ``fig.savefig(...)`` writes it to a file.

A run with nothing to show (no completed requests, no workers, ...) gets an explanatory text on
the axes instead of an exception.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import ListedColormap, to_rgb, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import LogFormatter, PercentFormatter

if TYPE_CHECKING:
    import pandas as pd

    from labkit.results import Results

__all__ = [
    "FAULT_COLORS",
    "HEALTH_STATES",
    "PERCENTILES",
    "SEVERITY_COLORS",
    "STATUS_COLORS",
    "fmt_ms",
    "health_heatmap",
    "latency_cdf",
    "latency_percentiles",
    "outcomes_over_time",
    "percentiles_over_time",
    "recovery_timeline",
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


# -- failure recovery --------------------------------------------------------------------------

#: shading colour of each fault kind; any other kind is drawn grey
FAULT_COLORS: dict[str, str] = {
    "crash": "#d62728",
    "partition": "#9467bd",
    "slow": "#ff7f0e",
    "flaky": "#e377c2",
    "latency_spike": "#17becf",
}
_OTHER_FAULT_COLOR = "#7f7f7f"

#: alert bar colour by severity: whatever wakes someone up is red, tickets amber, the rest grey
SEVERITY_COLORS: dict[str, str] = {
    "page": "#c0392b",
    "critical": "#c0392b",
    "ticket": "#e69f00",
    "warning": "#e69f00",
    "info": "#7f8c8d",
}
_OTHER_SEVERITY_COLOR = "#7f8c8d"
#: keeps a note legible over fault spans and marker lines
_NOTE_BOX = {"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8}

#: ``(state, legend label, colour)`` of a :func:`health_heatmap` cell; a cell's value in the
#: image is the index of its state here. ``routed_to_dead`` (red) is the cell users must notice:
#: the worker was crashed or partitioned while the routing layer still believed it healthy.
HEALTH_STATES: tuple[tuple[str, str, str], ...] = (
    ("healthy", "believed healthy (routable)", "#e5f5e0"),
    (
        "routed_to_dead",
        "believed healthy but crashed/partitioned:\nrouted to a dead worker",
        "#e31a1c",
    ),
    ("suspect", "suspect (registry)", "#fec44f"),
    ("half_open", "half-open (gateway probing)", "#c6dbef"),
    ("ejected", "ejected (gateway)", "#9e9ac8"),
    ("open", "circuit open (gateway)", "#6baed6"),
    ("down", "down (registry)", "#969696"),
)
_STATE = {name: code for code, (name, _, _) in enumerate(HEALTH_STATES)}

#: how far each verdict takes a worker out of rotation; a cell shows the worst of registry and
#: gateways, because either one alone keeps traffic away
_REGISTRY_SEVERITY = {"healthy": 0, "suspect": 1, "down": 5}
_GATEWAY_SEVERITY = {"routable": 0, "half_open": 2, "ejected": 3, "open": 4}
#: the heatmap state of each belief severity (0..5) for a worker that is not dead
_SEVERITY_STATE = np.array(
    [_STATE[s] for s in ("healthy", "suspect", "half_open", "ejected", "open", "down")]
)
#: the truth, coarsened: 0 up, 1 degraded (still answers), 2 dead (requests to it are lost)
_TRUTH_CLASS = {"up": 0, "slow": 1, "flaky": 1, "partitioned": 2, "crashed": 2}
#: when columns are merged, the state that wins a block: being routed to a dead worker first
_STATE_PRIORITY = np.array([0, 6, 1, 2, 3, 4, 5])

#: a fleet larger than this shows only the workers that ever left the healthy/up state
MAX_HEATMAP_WORKERS = 200
#: up to this many heatmap rows are labelled with every worker's name
MAX_HEATMAP_LABELS = 40
#: beyond this many time bins, heatmap columns are merged (worst state wins) so none is dropped
MAX_HEATMAP_COLUMNS = 720
#: the alert strip of :func:`recovery_timeline` has at most this many rows (alert names)
MAX_ALERT_ROWS = 12
#: up to this many faults, each fault label also says when it was detected and recovered
MAX_FAULT_DETAILS = 8
#: fault labels are stacked in at most this many rows above the throughput panel
FAULT_LABEL_ROWS = 3


@dataclass(frozen=True, slots=True)
class _Fault:
    """One fault joined with its recovery row (NaN where unknown)."""

    fault: Any
    kind: str
    start: float
    end: float  # NaN: lasted past the end of the run
    workers: tuple[str, ...]
    detected: float
    recovered: float


def _num(value: Any) -> float:
    """A float, NaN for None/NA/anything not numeric (frames mix NaN, None and pd.NA)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _flag(value: Any) -> bool:
    """A boolean column value where NaN/None/NA mean false (``bool(nan)`` would be true)."""
    try:
        return bool(value) and not (isinstance(value, float) and math.isnan(value))
    except (TypeError, ValueError):
        return False


def _has_rows(frame: pd.DataFrame | None) -> bool:
    return frame is not None and not frame.empty


def _worker_tuple(value: Any) -> tuple[str, ...]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    try:
        return tuple(str(w) for w in value)
    except TypeError:
        return (str(value),)


def _natural_key(name: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that orders ``w-2`` before ``w-10`` (numbers compare as numbers)."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", name)
        if part
    )


def _fault_color(kind: str) -> str:
    return FAULT_COLORS.get(kind, _OTHER_FAULT_COLOR)


def _darker(color: str, factor: float = 0.65) -> tuple[float, float, float]:
    r, g, b = to_rgb(color)
    return (r * factor, g * factor, b * factor)


def _fault_list(faults: pd.DataFrame | None, recovery: pd.DataFrame | None) -> list[_Fault]:
    """Faults sorted by start, each with its detection and recovery times.

    The faults frame is the source of truth for what was injected; without it the recovery
    frame (which repeats kind, start and end) still gives the spans.
    """
    by_id: dict[Any, dict[str, Any]] = {}
    if _has_rows(recovery) and "fault" in recovery:
        by_id = {row["fault"]: row for row in recovery.to_dict("records")}
    source = faults if _has_rows(faults) else recovery if _has_rows(recovery) else None
    if source is None:
        return []
    out = []
    for i, row in enumerate(source.to_dict("records")):
        fault_id = row.get("fault", i)
        rec = by_id.get(fault_id, {})
        start = _num(row.get("start_s"))
        if not math.isfinite(start):
            continue
        out.append(
            _Fault(
                fault=fault_id,
                kind=str(row.get("kind", "fault")),
                start=start,
                end=_num(row.get("end_s")),
                workers=_worker_tuple(row.get("workers")),
                detected=_num(rec.get("detected_at_s")),
                recovered=_num(rec.get("recovered_at_s")),
            )
        )
    return sorted(out, key=lambda f: f.start)


def _fault_label(fault: _Fault, detail: bool) -> str:
    """``crash w-3``, ``crash ×5`` or ``slow (all)``, plus detection/recovery delays if asked."""
    n = len(fault.workers)
    target = fault.workers[0] if n == 1 else f"×{n}" if n else "(all)"
    label = f"{fault.kind} {target}"
    if detail:
        seen = fault.detected - fault.start
        back = fault.recovered - fault.start
        label += "\n" + (f"detected +{seen:.1f} s" if math.isfinite(seen) else "not detected")
        label += ", " + (f"recovered +{back:.1f} s" if math.isfinite(back) else "not recovered")
    return label


def _recovery_title(faults: list[_Fault], recovery: pd.DataFrame | None) -> str:
    """Headline numbers of the story: how many faults, how many noticed, how many healed."""
    if not faults:
        return "Failure recovery: no faults injected"
    kinds: dict[str, int] = {}
    for f in faults:
        kinds[f.kind] = kinds.get(f.kind, 0) + 1
    mix = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    title = f"Failure recovery: {len(faults)} fault{'s' if len(faults) != 1 else ''} ({mix})"
    if not _has_rows(recovery):
        return title + "\n(no recovery analysis: detection and recovery not marked)"
    detect = np.array([f.detected - f.start for f in faults])
    recover = np.array([f.recovered - f.start for f in faults])
    parts = []
    for verb, delays in (("detected", detect), ("recovered", recover)):
        ok = delays[np.isfinite(delays)]
        text = f"{len(ok)}/{len(faults)} {verb}"
        if len(ok):
            text += f" (median {np.median(ok):.1f} s after the fault began)"
        parts.append(text)
    return title + "\n" + "; ".join(parts)


def _add_legend(legend: dict[str, Artist], label: str, handle: Artist) -> None:
    legend.setdefault(label, handle)


def _shade_faults(ax: Axes, faults: list[_Fault], x_end: float, legend: dict[str, Artist]) -> None:
    """Fault spans (a NaN end runs to the end of the data) and detection/recovery markers.

    With many faults the markers get thinner and paler so the data stays readable.
    """
    lw, alpha = (0.8, 0.6) if len(faults) > MAX_FAULT_DETAILS else (1.2, 0.9)
    for f in faults:
        color = _fault_color(f.kind)
        end = f.end if math.isfinite(f.end) else x_end
        end = min(end, x_end)
        if end > f.start:
            span = ax.axvspan(f.start, end, color=color, alpha=0.16, lw=0, zorder=0)
            span.set_gid(f"fault:{f.fault}")
        _add_legend(legend, f"fault: {f.kind}", Patch(color=color, alpha=0.35, lw=0))
        dark = _darker(color)
        for x, style, gid in ((f.detected, "--", "detected"), (f.recovered, "-", "recovered")):
            if math.isfinite(x):
                line = ax.axvline(x, color=dark, ls=style, lw=lw, alpha=alpha, zorder=1.5)
                line.set_gid(f"{gid}:{f.fault}")
    if any(math.isfinite(f.detected) for f in faults):
        _add_legend(legend, "fault detected", Line2D([], [], color="0.25", ls="--", lw=1.2))
    if any(math.isfinite(f.recovered) for f in faults):
        _add_legend(
            legend, "recovered (back to baseline)", Line2D([], [], color="0.25", ls="-", lw=1.2)
        )


def _shade_warmup_s(ax: Axes, warmup_s: float, legend: dict[str, Artist]) -> None:
    if warmup_s > 0:
        ax.axvspan(0, warmup_s, color="0.5", alpha=0.15, lw=0, zorder=0)
        _add_legend(legend, f"warm-up ({warmup_s:g} s)", Patch(color="0.5", alpha=0.15, lw=0))


def _pack_top_labels(
    ax: Axes,
    items: Iterable[tuple[float, str, Any, str]],
    *,
    x0: float,
    x_end: float,
    rows: int,
    lines: int,
    fontsize: float,
    char_width: float,
    alpha: float,
) -> int:
    """Annotate ``(x, text, colour, gid)`` items at the top of ``ax`` in up to ``rows`` rows.

    The things labelled (faults, cache-node outages) often overlap or follow each other closely,
    and their labels are wider than the gap between them: drawn at the same height they would
    print over each other and none could be read. So each label, in order of ``x``, goes into
    the first row (counted down from the top of the axes) whose previous label ends before it
    starts, and a label that fits in no row is left out rather than drawn over another; the
    callers' legends and markers still show every event. A label near the right edge is pulled
    left so it stays inside the axes (never past ``x0``). Widths are estimated from the longest
    line at ``char_width`` × ``fontsize`` points per character, converted to data units with the
    axes' current width, so call this after the figure has its size and ``x0``–``x_end`` range.
    ``lines`` is the tallest label's line count and sets the row pitch.

    Returns how many rows were used, so the caller can leave head room for them.
    """
    width_pt = max(ax.get_window_extent().width * 72 / ax.figure.dpi, 100.0)
    data_per_pt = (x_end - x0) / width_pt
    row_pt = lines * fontsize * 1.25 + 3
    ends = [-math.inf] * rows
    used = 0
    for x, text, color, gid in sorted(items, key=lambda item: item[0]):
        chars = max(len(line) for line in text.split("\n"))
        width = (chars * char_width * fontsize + 6) * data_per_pt
        left = max(min(x, x_end - width), x0)
        row = next((r for r, end in enumerate(ends) if end < left), None)
        if row is None:
            continue
        ends[row] = left + width
        used = max(used, row + 1)
        ax.annotate(
            text,
            xy=(left, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -2 - row * row_pt),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=fontsize,
            color=color,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": alpha},
            annotation_clip=False,
            gid=gid,
        )
    return used


def _label_faults(ax: Axes, faults: list[_Fault], x0: float, x_end: float, detail: bool) -> int:
    """Label faults above the data in up to ``FAULT_LABEL_ROWS`` rows without overlaps.

    Returns how many label rows were used, so the caller can make head room for them. Labels
    that fit in no row are left out: the legend and title still count every fault by kind.
    """
    items = [
        (f.start, _fault_label(f, detail), _darker(_fault_color(f.kind), 0.55), f"label:{f.fault}")
        for f in faults
        if f.start < x_end
    ]
    return _pack_top_labels(
        ax,
        items,
        x0=x0,
        x_end=x_end,
        rows=FAULT_LABEL_ROWS,
        lines=2 if detail else 1,
        fontsize=7.5,
        char_width=0.6,
        alpha=0.75,
    )


def _head_room(ax: Axes, rows: int, detail: bool) -> float:
    """Fraction of the top panel's height taken by ``rows`` rows of fault labels."""
    if not rows:
        return 0.0
    height_pt = max(ax.get_window_extent().height * 72 / ax.figure.dpi, 60.0)
    row_pt = (2 if detail else 1) * 7.5 * 1.25 + 3
    return min(0.6, (rows * row_pt + 4) / height_pt)


def _alert_names(alerts: pd.DataFrame | None) -> list[str]:
    """Alert names in order of first firing (the order incidents unfolded)."""
    if not _has_rows(alerts) or "name" not in alerts or "fired_at" not in alerts:
        return []
    fired = alerts.assign(_fired=alerts["fired_at"].map(_num)).dropna(subset=["_fired"])
    first = fired.groupby(fired["name"].astype(str), sort=False)["_fired"].min()
    return list(first.sort_values(kind="stable").index)


def _severity_color(severity: Any) -> str:
    return SEVERITY_COLORS.get(str(severity).lower(), _OTHER_SEVERITY_COLOR)


def _draw_alerts(
    ax: Axes,
    alerts: pd.DataFrame | None,
    x_end: float,
    legend: dict[str, Artist],
) -> None:
    """One row per alert name, a bar from firing to resolution coloured by severity.

    Silenced alerts are hatched and pale (they fired but told nobody), escalations get a star,
    alerts still firing at the end of the run an arrow head.
    """
    ax.set_ylabel("alerts", fontsize=9)
    names = _alert_names(alerts)
    if not names:
        message = "No alert data" if alerts is None else "No alerts fired"
        ax.text(
            0.5,
            0.5,
            message,
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="0.35",
            bbox=_NOTE_BOX,
        )
        ax.set_yticks([])
        ax.set_ylim(0, 1)
        return
    assert alerts is not None
    shown = names[:MAX_ALERT_ROWS]
    row_of = {name: i for i, name in enumerate(shown)}
    for alert in alerts.to_dict("records"):
        name = str(alert.get("name"))
        start = _num(alert.get("fired_at"))
        if name not in row_of or not math.isfinite(start):
            continue
        y = row_of[name]
        end = _num(alert.get("resolved_at"))
        still_firing = not math.isfinite(end)
        end = x_end if still_firing else end
        color = _severity_color(alert.get("severity"))
        severity = str(alert.get("severity"))
        silenced = _flag(alert.get("silenced"))
        (bar,) = ax.barh(
            y,
            max(end - start, 1e-3 * x_end),
            left=start,
            height=0.62,
            facecolor=to_rgba(color, 0.28 if silenced else 0.9),
            edgecolor=color,
            hatch="////" if silenced else None,
            lw=0.8,
            zorder=2,
        )
        bar.set_gid(f"alert:{name}")
        _add_legend(legend, f"alert: {severity}", Patch(facecolor=color, edgecolor=color))
        if silenced:
            _add_legend(
                legend,
                "alert silenced",
                Patch(facecolor=to_rgba("0.5", 0.28), edgecolor="0.4", hatch="////"),
            )
        if still_firing:
            ax.plot(end, y, ">", color=color, ms=7, clip_on=False, zorder=3, gid=f"firing:{name}")
            _add_legend(
                legend, "still firing at end", Line2D([], [], ls="", marker=">", color="0.3")
            )
        if _flag(alert.get("escalated")):
            at = _num(alert.get("escalated_at"))
            ax.plot(
                at if math.isfinite(at) else start,
                y,
                "*",
                color="k",
                ms=9,
                zorder=4,
                gid=f"escalated:{name}",
            )
            _add_legend(legend, "escalated", Line2D([], [], ls="", marker="*", color="k", ms=9))
    ax.set_yticks(range(len(shown)), [n if len(n) <= 28 else n[:27] + "…" for n in shown])
    ax.tick_params(axis="y", labelsize=8)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    if len(names) > len(shown):
        ax.text(
            1.0,
            0.0,
            f"+{len(names) - len(shown)} more alert names not shown",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=7.5,
            color="0.35",
        )


def _error_rate(ts: pd.DataFrame) -> np.ndarray:
    """The error-rate column as a fraction, or (failed+rejected+timed_out)/ended without it."""
    if "error_rate" in ts:
        err = ts["error_rate"].to_numpy(dtype=np.float64)
        # a fraction never exceeds 1: larger values can only be percents
        return err / 100.0 if np.nanmax(err, initial=0.0) > 1.0 + 1e-9 else err
    bad = np.zeros(len(ts))
    for col in ("failed", "rejected", "timed_out"):
        if col in ts:
            bad += ts[col].to_numpy(dtype=np.float64)
    ended = bad + (ts["completed"].to_numpy(dtype=np.float64) if "completed" in ts else 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ended > 0, bad / ended, np.nan)


def _legend_rank(label: str) -> int:
    if label.startswith("fault:"):
        return 1
    if label in ("fault detected", "recovered (back to baseline)"):
        return 2
    if label.startswith(("alert", "escalated", "still firing")):
        return 3
    return 4 if label.startswith("warm-up") else 0


def recovery_timeline(
    timeseries: pd.DataFrame | None,
    faults: pd.DataFrame | None,
    *,
    recovery: pd.DataFrame | None = None,
    alerts: pd.DataFrame | None = None,
    warmup_s: float = 0.0,
    title: str | None = None,
    axes: Sequence[Axes] | None = None,
) -> Figure:
    """The story of each failure: when it broke, when it was noticed, when it was fine again.

    Four panels share the time axis: throughput (completed/s, offered as a thin line), error
    rate (0–100 %), p50/p99 latency (log) and a strip of alerts from firing to resolution. Every
    panel shades each fault's interval in its kind's colour (a fault still active at the end
    runs to the end of the data) and marks when it was detected (dashed) and when the service
    was back to its baseline (solid), so detection lag and recovery time read straight off the
    x axis. The legend has one entry per fault kind, not per fault, so 30 random crashes stay
    legible; the title counts faults, detections and recoveries.

    ``timeseries`` has one row per bin (``t_s``, ``offered``, ``completed``, ``throughput_rps``,
    ``error_rate`` as a fraction, ``p50_ms``, ``p99_ms``, ...); ``faults`` one row per injected
    fault (``fault``, ``kind``, ``start_s``, ``end_s``, ``workers``); ``recovery`` (optional)
    adds ``detected_at_s`` and ``recovered_at_s`` per fault; ``alerts`` (optional) has ``name``,
    ``severity``, ``fired_at``, ``resolved_at``, ``silenced``, ``escalated``, ``escalated_at``.
    ``axes`` are four axes to draw into (throughput, error rate, latency, alerts), e.g. from
    ``fig.subplots(4, 1, sharex=True)``.
    """
    fault_list = _fault_list(faults, recovery)
    n_alert_rows = min(len(_alert_names(alerts)), MAX_ALERT_ROWS)
    alert_height = max(0.8, 0.32 * n_alert_rows + 0.3)
    if axes is None:
        fig = Figure(figsize=(12, 8.4 + 0.25 * n_alert_rows), layout="constrained")
        panels = list(fig.subplots(4, 1, sharex=True, height_ratios=[3.0, 2.0, 3.0, alert_height]))
        container: Any = fig
    else:
        panels = list(axes)
        if len(panels) != 4:
            raise ValueError(
                "recovery_timeline draws into four axes (throughput, error rate, latency, "
                f"alerts), got {len(panels)}"
            )
        container = panels[0].figure  # a Figure or a SubFigure
        fig = getattr(container, "figure", container)
    ax_tp, ax_err, ax_lat, ax_alerts = panels
    heading = title if title is not None else _recovery_title(fault_list, recovery)
    if axes is None:
        fig.suptitle(heading, fontsize=12)
    else:
        ax_tp.set_title(heading, fontsize=11)

    if timeseries is None or timeseries.empty or "t_s" not in timeseries:
        _empty(ax_tp, "Empty time series: nothing to show")
        for ax in (ax_err, ax_lat, ax_alerts):
            ax.set_axis_off()
        return fig

    ts = timeseries
    t = ts["t_s"].to_numpy(dtype=np.float64)
    dt = _bin_width(t)
    edges = np.append(t, t[-1] + dt)
    x0, x_end = min(0.0, float(t[0])), float(edges[-1])
    legend: dict[str, Artist] = {}

    def steps(values: np.ndarray) -> np.ndarray:
        return np.append(values, values[-1])

    # (a) throughput, with offered load as a thin line so shed or lost traffic shows as a gap
    if "throughput_rps" in ts:
        throughput = ts["throughput_rps"].to_numpy(dtype=np.float64)
    elif "completed" in ts:
        throughput = ts["completed"].to_numpy(dtype=np.float64) / dt
    else:
        throughput = np.full(len(t), np.nan)
    green = STATUS_COLORS["completed"]
    ax_tp.fill_between(
        edges,
        steps(np.nan_to_num(throughput)),
        step="post",
        color=green,
        alpha=0.15,
        lw=0,
        zorder=1,
    )
    ax_tp.step(edges, steps(throughput), where="post", color=green, lw=1.3, zorder=2)
    _add_legend(legend, "completed / s", Patch(facecolor=to_rgba(green, 0.25), edgecolor=green))
    top = float(np.nanmax(throughput, initial=0.0))
    if "offered" in ts:
        offered = ts["offered"].to_numpy(dtype=np.float64) / dt
        ax_tp.step(edges, steps(offered), where="post", color="k", lw=0.8, zorder=3)
        _add_legend(legend, "offered / s", Line2D([], [], color="k", lw=0.8))
        top = max(top, float(np.nanmax(offered, initial=0.0)))
    ax_tp.set_ylabel("requests / s")
    ax_tp.grid(axis="y", alpha=0.3)

    # (b) error rate, always on the full 0–100 % scale so runs compare at a glance
    err = _error_rate(ts)
    red = STATUS_COLORS["failed"]
    ax_err.fill_between(
        edges, steps(np.nan_to_num(err)), step="post", color=red, alpha=0.3, lw=0, zorder=1
    )
    ax_err.step(edges, steps(err), where="post", color=red, lw=1.2, zorder=2)
    _add_legend(legend, "error rate", Patch(facecolor=to_rgba(red, 0.45), edgecolor=red))
    ax_err.set_ylim(0, 1.0)
    ax_err.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax_err.set_ylabel("error rate")
    ax_err.grid(axis="y", alpha=0.3)
    if np.isfinite(err).any() and np.nanmax(err) > 0:
        peak = int(np.nanargmax(err))
        ax_err.text(
            0.995,
            0.95,
            f"peak {err[peak]:.1%} at {t[peak]:g} s",
            transform=ax_err.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            color="0.3",
            bbox=_NOTE_BOX,
        )

    # (c) latency: p50 is the typical request, p99 what the unlucky ones saw
    has_latency = False
    for col, label, color, width in (("p50_ms", "p50", "C0", 1.3), ("p99_ms", "p99", "0.15", 1.3)):
        if col not in ts:
            continue
        y = ts[col].to_numpy(dtype=np.float64)
        y = np.where(y > 0, y, np.nan)  # log axis; NaN bins had no completions
        if np.isfinite(y).any():
            has_latency = True
            ax_lat.step(edges, steps(y), where="post", color=color, lw=width, zorder=2)
            _add_legend(legend, f"{label} latency", Line2D([], [], color=color, lw=width))
    if has_latency:
        ax_lat.set_yscale("log")
        _plain_log(ax_lat.yaxis)
        ax_lat.grid(which="major", alpha=0.3)
    else:
        ax_lat.set_yticks([])
        ax_lat.text(
            0.5,
            0.5,
            "No completed requests: no latency to show",
            transform=ax_lat.transAxes,
            ha="center",
            va="center",
            color="0.35",
        )
    ax_lat.set_ylabel("latency (ms)")

    # (d) alerts, then faults, markers and warm-up on every panel
    _draw_alerts(ax_alerts, alerts, x_end, legend)
    for ax in panels:
        _shade_warmup_s(ax, float(warmup_s or 0.0), legend)
        _shade_faults(ax, fault_list, x_end, legend)
        ax.set_xlim(x0, x_end)
    ax_alerts.set_xlabel("time (s)")

    detail = _has_rows(recovery) and len(fault_list) <= MAX_FAULT_DETAILS
    if fault_list:
        rows = _label_faults(ax_tp, fault_list, x0, x_end, detail)
    else:
        ax_tp.annotate(
            "no faults injected",
            xy=(0.0, 1.0),
            xycoords="axes fraction",
            xytext=(4, -2),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=8,
            color="0.35",
        )
        rows = 1
    room = _head_room(ax_tp, rows, detail)
    ax_tp.set_ylim(0, max(1.0, top * 1.05) / (1.0 - room))

    # legend order: the data, then what broke, then how it was noticed and handled
    order = sorted(legend, key=_legend_rank)
    container.legend(
        [legend[label] for label in order],
        order,
        loc="outside lower center",
        ncols=min(6, len(order)),
        fontsize=8.5,
        frameon=False,
    )
    return fig


def _lookup(column: pd.Series, table: Mapping[str, int], default: int) -> np.ndarray:
    """Map a (categorical or string) column through ``table`` once per category, not per row."""
    cat = column.astype("category")
    values = np.array(
        [table.get(str(c), default) for c in cat.cat.categories] + [default], dtype=np.int64
    )
    return values[cat.cat.codes.to_numpy()]  # code -1 (missing) picks the trailing default


def _merge_columns(state: np.ndarray, truth: np.ndarray, factor: int) -> tuple[np.ndarray, ...]:
    """Merge every ``factor`` columns into one; the most alarming state and truth win."""
    rows, cols = state.shape
    pad = (-cols) % factor
    state = np.pad(state, ((0, 0), (0, pad)), constant_values=-1)
    truth = np.pad(truth, ((0, 0), (0, pad)), constant_values=0)
    blocks = state.reshape(rows, -1, factor)
    priority = np.where(blocks >= 0, _STATE_PRIORITY[np.maximum(blocks, 0)], -1)
    pick = np.take_along_axis(blocks, priority.argmax(axis=2)[..., None], axis=2)[..., 0]
    return pick, truth.reshape(rows, -1, factor).max(axis=2)


def _truth_segments(truth: np.ndarray, cls: int, t0: float, dt: float) -> list[np.ndarray]:
    """Horizontal segments through each row where the truth is ``cls``, one per run of bins."""
    mask = np.pad(truth == cls, ((0, 0), (1, 1))).astype(np.int8)
    step = np.diff(mask, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)  # row-major order pairs each start with its end
    return [
        np.array([[t0 + s * dt, r], [t0 + e * dt, r]], dtype=np.float64)
        for r, s, e in zip(rows, starts, ends, strict=True)
    ]


def health_heatmap(
    health: pd.DataFrame | None,
    faults: pd.DataFrame | None = None,
    *,
    ax: Axes | None = None,
    max_workers: int = MAX_HEATMAP_WORKERS,
) -> Figure:
    """Workers × time, coloured by what the routing layer believed, with the truth drawn over it.

    A cell's colour is the worst verdict of the registry and the gateways (healthy, suspect,
    half-open, ejected, circuit open, down); a black line through a row marks when the worker
    really was crashed/partitioned (solid) or slow/flaky (dashed). Where the line runs over
    green the failure had not been noticed yet: those cells are red when the worker was dead but
    still believed healthy, i.e. requests were routed to a dead worker. The gap between a line's
    start and the colour change is the detection lag; grey or blue after the line ends is the
    time taken to readmit a healed worker.

    ``health`` is long format: one row per worker per bin with ``t_s``, ``worker``, ``actual``
    (up/slow/flaky/partitioned/crashed), ``registry`` (healthy/suspect/down) and ``gateway``
    (routable/half_open/ejected/open, worst over gateways). Rows are in worker-number order
    (``w-2`` before ``w-10``). Fleets above ``max_workers`` show only the workers that ever
    left the healthy/up state (the most affected ``max_workers`` if there are more). Columns
    beyond ``MAX_HEATMAP_COLUMNS`` bins are merged, the most alarming state winning, so a short
    red stretch is never lost to image resampling. ``faults`` adds a ▼ at each fault's start.
    """
    required = {"t_s", "worker", "actual", "registry"}
    if health is None or health.empty or not required <= set(health.columns):
        fig, ax = _figure(ax, (10, 4))
        ax.set_title("Worker health")
        _empty(ax, "No worker health samples: nothing to show")
        return fig

    t = health["t_s"].to_numpy(dtype=np.float64)
    workers = health["worker"].astype("category")
    keep = np.isfinite(t) & (workers.cat.codes.to_numpy() >= 0)
    times = np.unique(t[keep])
    dt = _bin_width(times)
    t0 = float(times[0]) if len(times) else 0.0
    names = [str(c) for c in workers.cat.categories]
    order = sorted(range(len(names)), key=lambda i: _natural_key(names[i]))
    row_of_category = np.empty(len(names), dtype=np.int64)
    row_of_category[order] = np.arange(len(names))
    names = [names[i] for i in order]
    n_total = len(names)
    if not keep.any():
        fig, ax = _figure(ax, (10, 4))
        ax.set_title("Worker health")
        _empty(ax, "No worker health samples: nothing to show")
        return fig

    rows = row_of_category[workers.cat.codes.to_numpy()[keep]]
    cols = np.rint((t[keep] - t0) / dt).astype(np.int64)
    n_cols = int(cols.max()) + 1
    severity = _lookup(health["registry"], _REGISTRY_SEVERITY, 0)
    if "gateway" in health:
        severity = np.maximum(severity, _lookup(health["gateway"], _GATEWAY_SEVERITY, 0))
    truth = _lookup(health["actual"], _TRUTH_CLASS, 0)
    state = _SEVERITY_STATE[severity]
    state[(severity == 0) & (truth == 2)] = _STATE["routed_to_dead"]
    state_grid = np.full((n_total, n_cols), -1, dtype=np.int8)
    truth_grid = np.zeros((n_total, n_cols), dtype=np.int8)
    state_grid[rows, cols] = state[keep]
    truth_grid[rows, cols] = truth[keep]

    off = (state_grid > 0) | (truth_grid > 0)
    affected = off.any(axis=1)
    dead_routed_s = float((state_grid == _STATE["routed_to_dead"]).sum()) * dt
    notes = []
    shown = np.arange(n_total)
    if n_total > max_workers:
        shown = np.flatnonzero(affected)
        if not len(shown):
            fig, ax = _figure(ax, (10, 4))
            ax.set_title(f"Worker health: {n_total:,} workers")
            _empty(ax, f"All {n_total:,} workers stayed healthy and up for the whole run")
            return fig
        n_affected = len(shown)
        if n_affected > max_workers:
            worst = np.argsort(-off[shown].sum(axis=1), kind="stable")[:max_workers]
            shown = np.sort(shown[worst])
            notes.append(f"the {max_workers:,} most affected of {n_affected:,} shown")
        notes.append(f"{n_total - n_affected:,} workers always healthy and up not shown")
    elif not affected.any():
        notes.append("every worker stayed healthy and up")

    state_grid, truth_grid = state_grid[shown], truth_grid[shown]
    col_dt = dt
    if n_cols > MAX_HEATMAP_COLUMNS:
        factor = math.ceil(n_cols / MAX_HEATMAP_COLUMNS)
        state_grid, truth_grid = _merge_columns(state_grid, truth_grid, factor)
        col_dt = dt * factor
        notes.append(f"each column {col_dt:g} s, most alarming state shown")
    n_rows = len(shown)
    x_end = t0 + n_cols * dt

    fig, ax = _figure(ax, (12, float(np.clip(2.6 + 0.07 * n_rows, 3.8, 9.0))))
    # white: no sample for that worker in that bin
    cmap = ListedColormap([color for _, _, color in HEALTH_STATES]).with_extremes(bad="white")
    ax.imshow(
        np.ma.masked_less(state_grid, 0),
        cmap=cmap,
        vmin=-0.5,
        vmax=len(HEALTH_STATES) - 0.5,
        aspect="auto",
        interpolation="nearest",
        extent=(t0, t0 + state_grid.shape[1] * col_dt, n_rows - 0.5, -0.5),
    )
    ax.set_xlim(t0, x_end)

    # the truth, as lines whose width follows the row height
    height_pt = ax.get_window_extent().height * 72 / fig.dpi
    lw = float(np.clip(0.3 * height_pt / max(n_rows, 1), 0.3, 2.0))
    handles: dict[str, Artist] = {}
    present = set(np.unique(state_grid[state_grid >= 0]).tolist())
    for code, (_, label, color) in enumerate(HEALTH_STATES):
        if code in present or code == _STATE["healthy"]:
            handles[label] = Patch(facecolor=color, edgecolor="0.6", lw=0.5)
    for cls, style, label in (
        (2, "-", "truth: crashed/partitioned"),
        (1, (0, (3, 2)), "truth: slow/flaky"),
    ):
        segments = _truth_segments(truth_grid, cls, t0, col_dt)
        if segments:
            lines = LineCollection(segments, colors="k", linewidths=lw, linestyles=style)
            lines.set_gid(f"truth:{cls}")
            ax.add_collection(lines, autolim=False)
            handles[label] = Line2D([], [], color="k", lw=1.2, ls=style)

    for f in _fault_list(faults, None):
        if t0 <= f.start <= x_end:
            ax.plot(
                f.start,
                1.0,
                "v",
                color=_fault_color(f.kind),
                ms=8,
                mec="k",
                mew=0.5,
                transform=ax.get_xaxis_transform(),
                clip_on=False,
                gid=f"fault:{f.fault}",
            )
            handles.setdefault(
                f"fault start: {f.kind}",
                Line2D([], [], ls="", marker="v", color=_fault_color(f.kind), mec="k", mew=0.5),
            )

    if n_rows <= MAX_HEATMAP_LABELS:
        ticks = np.arange(n_rows)
    else:
        ticks = np.unique(np.linspace(0, n_rows - 1, 20).round().astype(np.int64))
    ax.set_yticks(ticks, [names[shown[i]] for i in ticks], fontsize=7 if n_rows > 20 else 8)
    ax.set_ylabel("worker")
    ax.set_xlabel("time (s)")
    title = f"Worker health as the routing layer saw it: {n_rows:,} of {n_total:,} workers"
    summary = (
        f"{dead_routed_s:g} worker-seconds routed to a dead worker"
        if dead_routed_s
        else "no worker was believed healthy while dead"
    )
    ax.set_title(title + "\n" + "; ".join([summary, *notes]), fontsize=10)
    ax.legend(
        list(handles.values()),
        list(handles),
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        frameon=False,
    )
    return fig


from labkit.plots_data import (  # noqa: E402,F401
    batch_limit,
    batch_sizes,
    cache_hit_rate,
    comparison_bars,
    state_latency,
    t_visibility,
    tradeoff,
)
from labkit.plots_topology import topology, topology_graph  # noqa: E402,F401
from labkit.plots_utilization import utilization_grid, utilization_heatmap  # noqa: E402,F401
