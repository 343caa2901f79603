"""Plots of the data services (replicated state, cache, batching) and of run comparisons.

Same conventions as :mod:`labkit.plots`: every function takes plain frames or summary dicts (so
the live driver and notebooks can call it without a ``Results``), draws into ``ax`` when given or
a fresh constrained-layout :class:`~matplotlib.figure.Figure` built with the object API (never
pyplot, never picking a backend), and returns the Figure. Nothing to show (no reads, an empty
comparison, all-NaN columns) gives an explanatory note on the axes, never an exception.

``labkit.plots`` re-exports every public function here, so ``labkit.plots.t_visibility`` works
too. The shared helpers of ``labkit.plots`` are imported inside the functions: ``labkit.plots``
imports this module at its end, and a module-level import back would fail whenever this module
is the one imported first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = [
    "CACHE_LAYER_COLORS",
    "METRIC_LABELS",
    "batch_limit",
    "batch_sizes",
    "cache_hit_rate",
    "comparison_bars",
    "state_latency",
    "t_visibility",
    "tradeoff",
]

#: colour of each cache layer, darkest for the fastest; the store (a miss) is grey
CACHE_LAYER_COLORS: dict[str, str] = {
    "l1": "#1b7837",
    "l2": "#5aae61",
    "replica": "#a6dba0",
    "store": "#d9d9d9",
}
_CACHE_LAYER_LABELS = {
    "l1": "L1 (gateway)",
    "l2": "L2 (cache node)",
    "replica": "replica node",
    "store": "store (miss)",
}
#: read and write colours of the state plots
_READ_COLOR = "C0"
_WRITE_COLOR = "C1"
#: bright enough to read over the dark L1 band
_STALE_COLOR = "#ff9f1c"
_CRASH_COLOR = "#d62728"
_RESTART_COLOR = "#2c7bb6"
_INVALIDATE_COLOR = "#7b3294"
_NOTE_BOX = {"boxstyle": "round,pad=0.25", "fc": "white", "ec": "0.8", "alpha": 0.9}

#: axis label of the metric columns of a comparison frame (``labkit.compare.headline``)
METRIC_LABELS: dict[str, str] = {
    "throughput_rps": "throughput (req/s)",
    "error_rate": "error rate",
    "p50_ms": "p50 latency (ms)",
    "p95_ms": "p95 latency (ms)",
    "p99_ms": "p99 latency (ms)",
    "misroutes": "misroutes",
    "sent_to_unreachable": "sends to unreachable workers",
    "retries": "retries",
    "state_stale_fraction": "stale state reads",
    "state_read_p99_ms": "state read p99 (ms)",
    "state_write_p99_ms": "state write p99 (ms)",
    "state_conflicts": "state write conflicts",
    "state_session_retries": "session re-reads",
    "cache_hit_rate": "cache hit rate",
    "cache_stale_fraction": "stale cache reads",
    "batch_mean_size": "mean batch size (served)",
}
#: metrics that are fractions: drawn and labelled as percentages
_FRACTIONS = {"error_rate", "state_stale_fraction", "cache_hit_rate", "cache_stale_fraction"}
#: a positive range wider than this ratio is drawn on a log axis
_LOG_RATIO = 30.0
#: the offered-load keys of a comparison (as ``labkit.compare.LOAD_KEYS``): a varied one orders
#: the points of a :func:`tradeoff` curve
LOAD_KEYS = ("workload.arrival.rate_rps", "workload.arrival.mean_rps", "workload.arrival.clients")
#: a :func:`tradeoff` point with at least this error rate is drawn hollow
HOLLOW_ERROR_RATE = 0.01
#: up to this many bars (or points) get a value label
_MAX_VALUE_LABELS = 24


# -- helpers -----------------------------------------------------------------------------------


def _figure(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    from labkit.plots import _figure as figure

    return figure(ax, figsize)


def _empty(ax: Axes, message: str) -> None:
    from labkit.plots import _empty as empty

    empty(ax, message)


def _fmt_ms(value: float | None) -> str:
    from labkit.plots import fmt_ms

    return fmt_ms(value)


def _legend_below(
    ax: Axes, *others: Axes, ncols: int = 6, extra: Sequence[tuple[Any, str]] = ()
) -> None:
    """:func:`labkit.plots._legend_below`, plus ``(handle, label)`` proxies for marks that
    have no artist of their own in the legend (one entry per kind of event, not per event)."""
    handles, labels = ax.get_legend_handles_labels()
    for other in others:
        more_handles, more_labels = other.get_legend_handles_labels()
        handles += more_handles
        labels += more_labels
    for handle, label in extra:
        handles.append(handle)
        labels.append(label)
    ax.legend(
        handles,
        labels,
        fontsize=8.5,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncols=min(ncols, max(1, len(labels))),
        frameon=False,
    )


def _plain_log(axis: Any) -> None:
    from labkit.plots import _plain_log as plain_log

    plain_log(axis)


def _float(value: Any) -> float:
    """A float, NaN for None/NA/anything not numeric."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _share(value: float) -> str:
    """A fraction as a percentage with as many decimals as a small value needs."""
    if not math.isfinite(value):
        return "-"
    if value == 0:
        return "0%"
    pct = 100 * value
    if abs(pct) < 0.1:
        return f"{pct:.3f}%"
    if abs(pct) < 1:
        return f"{pct:.2f}%"
    return f"{pct:.1f}%"


def _has_columns(frame: Any, columns: Iterable[str]) -> bool:
    return frame is not None and hasattr(frame, "columns") and set(columns) <= set(frame.columns)


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column as float64 (non-numbers become NaN)."""
    import pandas as pd

    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)


def _sort_key(value: Any) -> tuple[int, float, str]:
    """Numbers first, in numeric order (2 before 16), then everything else as text."""
    number = _float(value)
    if math.isfinite(number) and not isinstance(value, bool | str):
        return (0, number, "")
    return (1, 0.0, str(value))


def _value_text(value: Any) -> str:
    """A varied key's value as it was given: ``8``, ``0.5``, ``eventual``."""
    number = _float(value)
    if isinstance(value, bool | str) or not math.isfinite(number):
        return str(value)
    return f"{number:g}"


def _metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _metric_unit(metric: str) -> str:
    """What a metric is measured in; only metrics of one unit may share an axis."""
    if metric.endswith("_ms"):
        return "ms"
    if metric in _FRACTIONS or metric.endswith(("_fraction", "_rate")):
        return "fraction"
    if metric.endswith("_rps"):
        return "rps"
    return metric  # counts and sizes: each its own


def _metric_value(metric: str, value: float) -> str:
    if not math.isfinite(value):
        return "-"
    unit = _metric_unit(metric)
    if unit == "ms":
        return _fmt_ms(value)
    if unit == "fraction":
        return _share(value)
    if float(value).is_integer() and abs(value) >= 1:
        return f"{value:,.0f}"
    return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.1f}"


def _wide(values: np.ndarray) -> bool:
    """Positive values spanning more than ``_LOG_RATIO``: a log axis shows them all."""
    finite = values[np.isfinite(values)]
    return (
        bool(len(finite)) and bool((finite > 0).all()) and finite.max() / finite.min() > _LOG_RATIO
    )


def _head_room(ax: Axes, rows: int, lines: int, fontsize: float = 7.5) -> float:
    """Fraction of the axes height ``rows`` rows of ``lines``-line labels take."""
    if not rows:
        return 0.0
    height_pt = max(ax.get_window_extent().height * 72 / ax.figure.dpi, 60.0)
    return min(0.5, (rows * (lines * fontsize * 1.25 + 3) + 6) / height_pt)


# -- state -------------------------------------------------------------------------------------


def _wilson(successes: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, ...]:
    """95 % Wilson score interval of a binomial proportion (NaN where n is 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        p = successes / n
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def _visibility_frame(ops_or_curve: pd.DataFrame | None) -> pd.DataFrame | None:
    """A ``visibility_curve`` frame from either a curve or ``Results.state_ops``."""
    curve_columns = ("delta_lo_ms", "delta_hi_ms", "reads", "p_consistent")
    if _has_columns(ops_or_curve, curve_columns):
        return ops_or_curve
    if _has_columns(ops_or_curve, ("op", "behind", "delta_ms")):
        from labkit.results.consistency import visibility_curve

        return visibility_curve(ops_or_curve)
    return None


def t_visibility(
    ops_or_curve: pd.DataFrame | None,
    *,
    theory: tuple[Sequence[float], Sequence[float]] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """PBS t-visibility: P(a read sees the newest committed write) by how long after the commit
    it began (Δ, ms).

    Each Δ bin is a horizontal step at its measured probability with a shaded 95 % (Wilson)
    interval, so a bin of three reads does not look as certain as one of three thousand; the
    number of reads per bin is drawn as light grey stairs on the right axis. Read it left to
    right: a curve that reaches 100 % within a few ms means replicas converge quickly and
    stale reads only hit agents that read right after a write; a curve that stays below 100 %
    (``write_fanout: quorum`` without anti-entropy) means staleness is not about timing. The
    x axis is symlog: the first bin, [0, first edge), is linear so Δ = 0 has a place, the rest
    logarithmic; the open last bin (Δ ≥ last edge) is drawn one octave wide.

    ``ops_or_curve`` is ``Results.state_ops`` (reads are binned with
    :func:`labkit.results.consistency.visibility_curve`) or such a curve. ``theory``,
    ``(deltas_ms, probabilities)`` e.g. from :func:`labkit.theory.wars_t_visibility`, is drawn
    as a dashed line: where the measured steps sit below it, something the WARS model leaves
    out (several writes in flight, session re-reads, queueing) makes reads staler.
    """
    fig, ax = _figure(ax, (9, 4.5))
    heading = title or "t-visibility: P(read sees the newest committed write) vs Δ since it"
    curve = _visibility_frame(ops_or_curve)
    if curve is None or curve.empty:
        ax.set_title(heading)
        _empty(ax, "No state reads: no t-visibility to show")
        return fig
    lo = _column(curve, "delta_lo_ms")
    hi = _column(curve, "delta_hi_ms")
    reads = np.nan_to_num(_column(curve, "reads"), nan=0.0)
    p = _column(curve, "p_consistent")
    has = (reads > 0) & np.isfinite(p) & np.isfinite(lo)
    if not has.any():
        ax.set_title(heading)
        _empty(ax, "No state read followed a committed write:\nno t-visibility to show")
        return fig
    order = np.argsort(lo, kind="stable")
    lo, hi, reads, p, has = lo[order], hi[order], reads[order], p[order], has[order]
    finite_lo = np.where(np.isfinite(lo), lo, 0.0)
    # the open last bin (hi = inf or missing) is drawn one octave wide
    hi = np.where(np.isfinite(hi), hi, np.maximum(finite_lo * 2, finite_lo + 1))
    edges = np.append(finite_lo, hi[-1])
    positive = edges[edges > 0]
    linthresh = float(positive.min()) if len(positive) else 1.0

    twin = ax.twinx()
    ax.set_zorder(twin.get_zorder() + 1)  # the probabilities over the counts
    ax.patch.set_visible(False)
    counts = twin.stairs(reads, edges, fill=True, color="0.88", lw=0, label="reads per bin")
    counts.set_gid("reads")
    twin.set_ylim(0, max(1.0, float(reads.max())) * 3.0)  # counts stay in the lower third
    twin.set_ylabel("reads per Δ bin", color="0.5")
    twin.tick_params(axis="y", colors="0.5", labelsize=8)
    twin.yaxis.set_major_locator(MaxNLocator(4, integer=True))

    shown = np.where(has, p, np.nan)
    low, high = _wilson(np.where(has, p * reads, np.nan), np.where(has, reads, np.nan))
    band = ax.stairs(high, edges, baseline=low, fill=True, color=_READ_COLOR, alpha=0.18, lw=0)
    band.set_gid("interval")
    band.set_label("95% interval")
    steps = ax.stairs(shown, edges, color=_READ_COLOR, lw=2.0, baseline=None)
    steps.set_gid("measured")
    steps.set_label("measured (per Δ bin)")
    centre = np.where(finite_lo > 0, np.sqrt(finite_lo * hi), (finite_lo + hi) / 2)
    ax.plot(centre[has], shown[has], "o", color=_READ_COLOR, ms=4, zorder=3, gid="centres")

    if theory is not None:
        deltas = np.asarray(theory[0], dtype=np.float64)
        probs = np.asarray(theory[1], dtype=np.float64)
        keep = np.isfinite(deltas) & np.isfinite(probs) & (deltas >= 0)
        if keep.any():
            sort = np.argsort(deltas[keep])
            ax.plot(
                deltas[keep][sort],
                probs[keep][sort],
                "--",
                color="k",
                lw=1.3,
                label="WARS Monte Carlo",
                gid="theory",
            )
            edges = np.append(edges, deltas[keep].max())
    ax.axhline(1.0, color="0.6", lw=0.6, ls=":")

    ax.set_xscale("symlog", linthresh=linthresh, linscale=0.6)
    ax.set_xlim(0, float(np.nanmax(edges)))
    bin_edges = np.unique(np.append(finite_lo, hi[-1]))
    if len(bin_edges) <= 16:
        ax.set_xticks(bin_edges)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.tick_params(axis="x", labelsize=8)
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("P(read is fresh)")
    ax.set_xlabel("Δ: time from the newest commit to the read's start (ms; 0 bin linear)")
    ax.grid(axis="y", alpha=0.3)
    total = int(reads.sum())
    fresh = float(np.nansum(np.where(has, p * reads, 0.0)))
    ax.set_title(
        f"{heading}\n{total:,} reads after a commit, {_share(fresh / total)} fresh",
        fontsize=11,
    )
    _legend_below(ax, twin, ncols=4)
    return fig


def _state_ops(
    ops: pd.DataFrame | None,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Read and write latencies (finite, sorted) and the read and write rows of ``ops``."""
    import pandas as pd

    if not _has_columns(ops, ("op", "latency_ms")) or ops is None or ops.empty:
        empty = pd.DataFrame()
        return np.zeros(0), np.zeros(0), empty, empty
    op = ops["op"].astype(str)
    reads = ops[op == "read"]
    writes = ops[op == "write"]

    def lat(rows: pd.DataFrame) -> np.ndarray:
        values = _column(rows, "latency_ms")
        return np.sort(values[np.isfinite(values)])

    return lat(reads), lat(writes), reads, writes


def state_latency(
    ops: pd.DataFrame | None, ax: Axes | None = None, *, title: str | None = None
) -> Figure:
    """What each consistency level costs and buys: read and write latency p50/p95/p99 side by
    side (log y), with what the reads got for it written in the corner.

    Compare runs by reading the bar heights (a strong quorum pays the slower of r and w
    replicas, session pays an extra primary round trip on the reads it retries) against the
    annotation: the stale fraction (reads that missed a committed write), k-staleness (missed
    the last k ≥ 2 or ≥ 3 committed writes: the value is not just late but several updates
    behind), session re-reads, and the writes' conflict outcomes (``overwritten`` is a lost
    update). ``ops`` is ``Results.state_ops``.
    """
    fig, ax = _figure(ax, (8, 4.5))
    ax.set_title(title or "State service: read and write latency, staleness, conflicts")
    read_lat, write_lat, reads, writes = _state_ops(ops)
    if not len(read_lat) and not len(write_lat):
        _empty(ax, "No state reads or writes: nothing to show")
        return fig
    quantiles = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0))
    x = np.arange(len(quantiles))
    series = [
        (f"reads (n={len(read_lat):,})", read_lat, _READ_COLOR, "read"),
        (f"writes (n={len(write_lat):,})", write_lat, _WRITE_COLOR, "write"),
    ]
    series = [s for s in series if len(s[1])]
    width = 0.8 / len(series)
    values_all = []
    for i, (label, lat, color, gid) in enumerate(series):
        values = np.percentile(lat, [q for _, q in quantiles])
        values_all.append(values)
        drawn = np.where(values > 0, values, np.nan)
        bars = ax.bar(
            x + (i - (len(series) - 1) / 2) * width,
            np.nan_to_num(drawn, nan=0.0),
            width * 0.95,
            color=color,
            label=label,
            gid=gid,
        )
        ax.bar_label(bars, labels=[_fmt_ms(v) for v in values], padding=2, fontsize=8)
    values = np.concatenate(values_all)
    finite = values[np.isfinite(values) & (values > 0)]
    if len(finite):
        ax.set_yscale("log")
        ax.set_ylim(finite.min() / 2, finite.max() * 12)  # room for the note above the bars
        _plain_log(ax.yaxis)
    ax.set_xticks(x, [name for name, _ in quantiles])
    ax.set_ylabel("latency (ms)")
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.legend(fontsize=9, loc="upper right")

    notes = []
    if len(reads) and "behind" in reads:
        behind = _column(reads, "behind")
        behind = behind[np.isfinite(behind)]
        if len(behind):
            notes.append(
                f"stale reads {_share(float((behind >= 1).mean()))}"
                f"   k≥2 {_share(float((behind >= 2).mean()))}"
                f"   k≥3 {_share(float((behind >= 3).mean()))}"
            )
    if len(reads) and "session_retry" in reads:
        retries = int(np.nansum(_column(reads, "session_retry")))
        if retries:
            notes.append(f"session re-reads {retries:,} ({_share(retries / len(reads))})")
    if len(writes) and "outcome" in writes:
        outcome = writes["outcome"].astype(str).value_counts()
        parts = [f"{int(outcome.get(k, 0)):,} {k}" for k in ("overwritten", "merged", "rejected")]
        notes.append("write conflicts: " + ", ".join(parts))
    if notes:
        ax.text(
            0.01,
            0.97,
            "\n".join(notes),
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=8.5,
            bbox=_NOTE_BOX,
            gid="state-note",
        )
    return fig


# -- cache -------------------------------------------------------------------------------------


def _event_rows(events: Any) -> list[dict[str, Any]]:
    """Cache node events as dicts, from a summary list or a DataFrame."""
    if events is None:
        return []
    if hasattr(events, "to_dict"):
        return [dict(row) for row in events.to_dict("records")]
    return [dict(row) for row in events if isinstance(row, Mapping)]


def _cache_event_label(row: Mapping[str, Any]) -> str:
    event = str(row.get("event", ""))
    node = str(row.get("node") or "")
    moved = _float(row.get("keys_moved"))
    if event in ("crash", "restart"):
        head = f"{node} {'down' if event == 'crash' else 'back'}"
        if math.isfinite(moved):
            head += f": {_share(moved)} keys moved"
        before, low = _float(row.get("hit_before")), _float(row.get("hit_min_after"))
        if math.isfinite(before) and math.isfinite(low):
            back = _float(row.get("recovered_after_s"))
            tail = f", back in {back:g} s" if math.isfinite(back) else ""
            head += f"\nhit {_share(before)}→{_share(low)}{tail}"
        return head
    dropped = _float(row.get("keys_dropped"))
    if math.isfinite(dropped):
        return f"{event}\n{dropped:,.0f} keys dropped"
    return event


def cache_hit_rate(
    cache_series: pd.DataFrame | None,
    events: Any = None,
    ax: Axes | None = None,
    warmup_s: float = 0,
) -> Figure:
    """Where reads were served, second by second: L1, L2, a replica node or the store (a miss),
    stacked to 100 %, with the hit rate (everything but the store) as a black line.

    Read the black line's dips: when a cache node crashes its keys move to other nodes, which
    do not have them yet, so the hit rate drops and refills over a few seconds; when the node
    comes back empty the keys move back and it dips again. The red shading spans each node's
    downtime, blue lines mark restarts, purple dashed lines invalidations; each is labelled
    with the share of keys that moved (or the keys dropped) and, when known, the hit rate
    before and at the bottom of the dip and how long it took to come back. The orange line
    is the share of reads that returned a stale value (an L1 copy older than a write-through
    from another gateway, a value past its update). ``cache_series`` is ``Results.cache``;
    ``events`` is ``summary["cache"]["events"]`` (a list of dicts or a DataFrame).
    """
    fig, ax = _figure(ax, (10, 4.8))
    heading = "Cache: share of reads served by each layer"
    layers = [name for name in CACHE_LAYER_COLORS if _has_columns(cache_series, [f"{name}_share"])]
    if not _has_columns(cache_series, ("t_s",)) or cache_series is None or cache_series.empty:
        ax.set_title(heading)
        _empty(ax, "No cache reads: nothing to show")
        return fig
    t = _column(cache_series, "t_s")
    shares = {name: _column(cache_series, f"{name}_share") for name in layers}
    if not layers or not any(np.isfinite(s).any() for s in shares.values()):
        ax.set_title(heading)
        _empty(ax, "No cache reads: nothing to show")
        return fig
    # a layer that never served a read (replica with replication 1) only clutters the legend
    layers = [n for n in layers if n == "store" or np.nanmax(shares[n], initial=0.0) > 0]
    dt = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    edges = np.append(t, t[-1] + dt)
    x0, x_end = min(0.0, float(t[0])), float(edges[-1])

    def steps(values: np.ndarray) -> np.ndarray:
        return np.append(values, values[-1])

    ax.stackplot(
        edges,
        *[steps(np.nan_to_num(shares[name], nan=0.0)) for name in layers],
        labels=[_CACHE_LAYER_LABELS[name] for name in layers],
        colors=[CACHE_LAYER_COLORS[name] for name in layers],
        step="post",
        lw=0,
        zorder=1,
    )
    if "store" in shares:
        hit = 1.0 - shares["store"]
    else:
        hit = np.nansum([shares[name] for name in layers], axis=0)
        hit[~np.isfinite(shares[layers[0]])] = np.nan
    (hit_line,) = ax.step(
        edges, steps(hit), where="post", color="k", lw=1.4, label="hit rate", zorder=3
    )
    hit_line.set_gid("hit_rate")
    if _has_columns(cache_series, ("stale",)):
        stale = _column(cache_series, "stale")
        if np.isfinite(stale).any():
            ax.step(
                edges,
                steps(stale),
                where="post",
                color=_STALE_COLOR,
                lw=1.2,
                label="stale reads",
                zorder=3,
                gid="stale",
            )

    if warmup_s and warmup_s > 0:
        ax.axvspan(
            x0, warmup_s, color="0.5", alpha=0.15, lw=0, zorder=2, label=f"warm-up ({warmup_s:g} s)"
        )

    rows = _event_rows(events)
    labels: list[tuple[float, str, str, str]] = []
    crash_handle = restart_handle = invalidate_handle = False
    for i, row in enumerate(sorted(rows, key=lambda r: _float(r.get("t_s")))):
        at = _float(row.get("t_s"))
        if not math.isfinite(at):
            continue
        event = str(row.get("event", ""))
        node = str(row.get("node") or "")
        if event == "crash":
            back = [
                _float(r.get("t_s"))
                for r in rows
                if r.get("event") == "restart"
                and str(r.get("node") or "") == node
                and _float(r.get("t_s")) >= at
            ]
            end = min(back) if back else x_end
            ax.axvspan(at, end, color=_CRASH_COLOR, alpha=0.1, lw=0, zorder=2, gid=f"down:{node}")
            ax.axvline(at, color=_CRASH_COLOR, lw=1.2, zorder=2.5, gid=f"crash:{node}")
            color, crash_handle = _CRASH_COLOR, True
        elif event == "restart":
            ax.axvline(at, color=_RESTART_COLOR, lw=1.2, zorder=2.5, gid=f"restart:{node}")
            color, restart_handle = _RESTART_COLOR, True
        else:
            ax.axvline(
                at, color=_INVALIDATE_COLOR, lw=1.2, ls="--", zorder=2.5, gid=f"invalidate:{i}"
            )
            color, invalidate_handle = _INVALIDATE_COLOR, True
        labels.append((at, _cache_event_label(row), color, f"label:{i}"))
    extra: list[tuple[Any, str]] = []
    if crash_handle:
        extra.append((Patch(color=_CRASH_COLOR, alpha=0.25, lw=0), "cache node down"))
    if restart_handle:
        extra.append((Line2D([], [], color=_RESTART_COLOR, lw=1.2), "node restart (cold)"))
    if invalidate_handle:
        extra.append((Line2D([], [], color=_INVALIDATE_COLOR, ls="--"), "invalidation"))

    ax.set_xlim(x0, x_end)
    lines = max((text.count("\n") + 1 for _, text, _, _ in labels), default=1)
    used = 0
    if x_end > x0:  # an empty or reversed time range has no room for labels
        from labkit.plots import _pack_top_labels

        used = _pack_top_labels(
            ax,
            labels,
            x0=x0,
            x_end=x_end,
            rows=3,
            lines=lines,
            fontsize=7.5,
            char_width=0.58,
            alpha=0.85,
        )
    room = _head_room(ax, used, lines)
    ax.set_ylim(0, 1.0 / (1.0 - room))
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("share of cache reads")
    ax.set_xlabel("time (s)")
    ax.grid(axis="y", alpha=0.3)
    measured = t >= warmup_s
    reads = _column(cache_series, "reads") if "reads" in cache_series else np.ones(len(t))
    weights = np.where(measured & np.isfinite(hit), np.nan_to_num(reads), 0.0)
    if weights.sum() > 0:
        overall = float(np.nansum(np.nan_to_num(hit) * weights) / weights.sum())
        heading += f"; hit rate {_share(overall)} after warm-up"
    ax.set_title(heading, fontsize=11)
    _legend_below(ax, ncols=5, extra=extra)
    return fig


# -- batching ----------------------------------------------------------------------------------


def _distribution(dist: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(sizes, counts)`` of a batch-size distribution dict, sizes ascending."""
    if not isinstance(dist, Mapping):
        return np.zeros(0), np.zeros(0)
    raw = dist.get("sizes") or {}
    pairs = sorted(
        (int(_float(size)), _float(count))
        for size, count in raw.items()
        if math.isfinite(_float(size)) and math.isfinite(_float(count)) and _float(count) > 0
    )
    if not pairs:
        return np.zeros(0), np.zeros(0)
    sizes, counts = zip(*pairs, strict=True)
    return np.asarray(sizes, dtype=np.float64), np.asarray(counts, dtype=np.float64)


def batch_sizes(batching_summary: Mapping[str, Any] | None, ax: Axes | None = None) -> Figure:
    """How big the batches really were: the share of batches of each size, as the gateways sent
    them and as the workers served them, side by side.

    Read the mass, not the limit: a max_batch of 8 whose batches are mostly of size 1 or 2
    saves little of the per-batch cost, because the delay flush fires first (the flush counts
    in the title say which limit bound: ``size`` means batches filled up, ``delay`` that
    max_delay_ms ran out). Served batches can be larger than sent ones when a worker coalesces
    batches waiting in its queue. Dashed lines mark the mean sizes. ``batching_summary`` is
    ``summary["batching"]``.
    """
    fig, ax = _figure(ax, (8, 4.5))
    heading = "Batch sizes"
    summary = batching_summary if isinstance(batching_summary, Mapping) else {}
    series = []
    for key, label, color in (
        ("sent", "sent by gateways", "C0"),
        ("served", "served by workers", "C1"),
    ):
        sizes, counts = _distribution(summary.get(key))
        if len(sizes):
            series.append((key, label, color, sizes, counts))
    if not series:
        ax.set_title(heading)
        _empty(ax, "No batches: nothing to show")
        return fig
    all_sizes = np.unique(np.concatenate([s[3] for s in series]))
    index = {size: i for i, size in enumerate(all_sizes)}
    x = np.arange(len(all_sizes))
    width = 0.8 / len(series)
    top = 0.0
    for i, (key, label, color, sizes, counts) in enumerate(series):
        share = np.zeros(len(all_sizes))
        share[[index[s] for s in sizes]] = counts / counts.sum()
        mean = float((sizes * counts).sum() / counts.sum())
        top = max(top, float(share.max()))
        bars = ax.bar(
            x + (i - (len(series) - 1) / 2) * width,
            share,
            width * 0.95,
            color=color,
            label=f"{label} ({counts.sum():,.0f} batches, mean {mean:.2f})",
            gid=key,
        )
        if len(all_sizes) <= 12:
            ax.bar_label(
                bars, labels=[_share(v) if v > 0 else "" for v in share], padding=1, fontsize=7
            )
        # the mean as a position on the categorical axis, between its neighbouring sizes
        pos = float(np.interp(mean, all_sizes, x))
        ax.axvline(pos, color=color, ls="--", lw=1, gid=f"mean:{key}")
    step = max(1, math.ceil(len(all_sizes) / 30))
    ax.set_xticks(x[::step], [f"{s:g}" for s in all_sizes[::step]])
    ax.set_xlim(-0.6, len(all_sizes) - 0.4)
    ax.set_ylim(0, min(1.0, top * 1.2 + 0.05))  # room for the labels and the legend
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("share of batches")
    ax.set_xlabel("batch size (messages)")
    ax.grid(axis="y", alpha=0.3)
    served = summary.get("served") if isinstance(summary.get("served"), Mapping) else None
    if served and served.get("mean_size") is not None:
        heading += f": served mean {_float(served['mean_size']):.2f}, p99 {served.get('p99_size')}"
    flushes = summary.get("flushes")
    if isinstance(flushes, Mapping) and flushes:
        heading += "; flushes " + ", ".join(
            f"{_float(n):,.0f} on {reason}" for reason, n in flushes.items()
        )
    ax.set_title(heading, fontsize=11)
    ax.legend(fontsize=8.5, loc="upper right")
    return fig


#: beyond this many gateways :func:`batch_limit` draws the mean limit and a min–max band
MAX_GATEWAY_LINES = 8


def batch_limit(
    batching_frame: pd.DataFrame | None,
    ax: Axes | None = None,
    *,
    target_ms: float | None = None,
    warmup_s: float = 0,
) -> Figure:
    """Adaptive batching at work: each gateway's batch limit over time (steps, left axis) and
    the p99 it reacted to (thin lines, right axis), with the p99 target as a dashed line.

    AIMD adds one to the limit while the p99 stays under the target and halves it when the p99
    goes over, so a healthy controller saws around the largest limit the latency budget
    allows. A limit pinned at its minimum with the p99 still above the target means the target
    is out of reach even unbatched (the service or the load, not batching, sets the p99); a
    limit climbing to its maximum means the target never binds. ``batching_frame`` is
    ``Results.batching`` (``t_s``, ``gateway``, ``limit``, ``p99_ms``).
    """
    fig, ax = _figure(ax, (10, 4.5))
    heading = "Adaptive batching: batch limit per gateway and the p99 it reacts to"
    if not _has_columns(batching_frame, ("t_s", "limit")) or batching_frame is None:
        ax.set_title(heading)
        _empty(ax, "No adaptive batching decisions: nothing to show")
        return fig
    frame = batching_frame.assign(
        _t=_column(batching_frame, "t_s"), _limit=_column(batching_frame, "limit")
    )
    frame = frame[np.isfinite(frame["_t"]) & np.isfinite(frame["_limit"])]
    if frame.empty:
        ax.set_title(heading)
        _empty(ax, "No adaptive batching decisions: nothing to show")
        return fig
    if "gateway" not in frame:
        frame = frame.assign(gateway=0)
    frame = frame.sort_values("_t", kind="stable")
    gateways = sorted(frame["gateway"].unique(), key=_sort_key)
    twin = ax.twinx()
    has_p99 = "p99_ms" in frame and np.isfinite(_column(frame, "p99_ms")).any()
    p99_max = 0.0
    if len(gateways) <= MAX_GATEWAY_LINES:
        for i, gw in enumerate(gateways):
            rows = frame[frame["gateway"] == gw]
            color = f"C{i}"
            ax.step(
                rows["_t"],
                rows["_limit"],
                where="post",
                color=color,
                lw=1.8,
                label=f"limit, gateway {_value_text(gw)}",
                gid=f"limit:{gw}",
            )
            if has_p99:
                p99 = _column(rows, "p99_ms")
                p99_max = max(p99_max, float(np.nanmax(p99, initial=0.0)))
                twin.plot(
                    rows["_t"],
                    p99,
                    color=color,
                    lw=0.9,
                    alpha=0.7,
                    ls=(0, (1, 1)),
                    marker=".",
                    ms=3,
                    label=f"p99, gateway {_value_text(gw)}",
                    gid=f"p99:{gw}",
                )
    else:
        per_t = frame.groupby("_t")["_limit"]
        times = per_t.mean().index.to_numpy(dtype=np.float64)
        ax.fill_between(
            times,
            per_t.min().to_numpy(),
            per_t.max().to_numpy(),
            step="post",
            color="C0",
            alpha=0.2,
            lw=0,
            label=f"limit, min–max over {len(gateways)} gateways",
        )
        ax.step(
            times, per_t.mean().to_numpy(), where="post", color="C0", lw=1.8, label="mean limit"
        )
        if has_p99:
            p99 = frame.assign(_p99=_column(frame, "p99_ms")).groupby("_t")["_p99"].max()
            p99_max = float(np.nanmax(p99.to_numpy(), initial=0.0))
            twin.plot(
                p99.index, p99.to_numpy(), color="0.3", lw=0.9, ls=":", label="worst gateway p99"
            )
    target = _float(target_ms)
    if math.isfinite(target):
        twin.axhline(target, color="k", ls="--", lw=1.2, label=f"p99 target {target:g} ms")
        twin.lines[-1].set_gid("target")
        p99_max = max(p99_max, target)
    if warmup_s and warmup_s > 0:
        ax.axvspan(0, warmup_s, color="0.5", alpha=0.15, lw=0, label=f"warm-up ({warmup_s:g} s)")
    ax.set_xlim(min(0.0, float(frame["_t"].min())), float(frame["_t"].max()))
    ax.set_ylim(0, max(1.0, float(frame["_limit"].max())) * 1.15 + 0.5)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("batch limit (messages)")
    ax.set_xlabel("time (s)")
    ax.grid(axis="y", alpha=0.3)
    if p99_max > 0:
        twin.set_ylim(0, p99_max * 1.15)
        twin.set_ylabel("p99 latency (ms)", color="0.35")
        twin.tick_params(axis="y", colors="0.35")
    else:
        twin.set_yticks([])
    last = frame.groupby("gateway")["_limit"].last()
    heading += f"\nfinal limit {_value_text(float(last.mean()))}"
    heading += f" (mean over gateways), mean {frame['_limit'].mean():.2f} over the run"
    ax.set_title(heading, fontsize=11)
    _legend_below(ax, twin, ncols=4)
    return fig


# -- comparisons -------------------------------------------------------------------------------


def _group_values(frame: pd.DataFrame, key: str) -> list[Any]:
    """A key's values: numbers in numeric order (2 before 16); names in the order the runs
    came, which is the order they were listed in ``--vary`` (eventual, watch, strong)."""
    values = [v for v in frame[key].unique() if not (isinstance(v, float) and math.isnan(v))]
    if all(_sort_key(v)[0] == 0 for v in values):
        return sorted(values, key=_sort_key)
    return values


def _load_key(frame: pd.DataFrame) -> str | None:
    """The varied offered-load column of a comparison, if any (see ``labkit.compare``)."""
    for key in LOAD_KEYS:
        if key in frame and frame[key].nunique(dropna=True) > 1:
            return key
    return None


def tradeoff(
    frame: pd.DataFrame | None,
    *,
    x: str = "throughput_rps",
    y: str = "p99_ms",
    by: str | None = None,
    ax: Axes | None = None,
    label_points: str | None = None,
    sort_by: str | None = None,
) -> Figure:
    """One curve per setting of ``by`` through the runs of a comparison, e.g. p99 against
    throughput for each ``batching.max_batch``: the throughput-vs-latency trade-off.

    With the offered load also varied a curve is the setting's latency as load rises; the
    curve further right at a given height sustains more load at that latency, and where curves
    cross the better setting changes. Points are joined in order of x, except when the frame
    varies an offered load (``workload.arrival.rate_rps``, ...): then in order of that load, so
    a setting that collapses past saturation (throughput falling as load rises) bends back to
    the left instead of zig-zagging; ``sort_by`` names the column explicitly. Runs with an error
    rate of 1 % or more are drawn hollow: their latency is that of the requests that still
    completed. An axis switches to log when its values span more than a factor of 30 (a
    saturating run's p99 shoots up by orders of magnitude). ``label_points`` names a column
    whose value is written at each point (e.g. the offered rate, or the varied key itself when
    ``by`` is None). ``frame`` is what :func:`labkit.compare.compare` returns: one row per run,
    varied keys as dotted columns.
    """
    fig, ax = _figure(ax, (8, 5))
    heading = f"{_metric_label(y)} vs {_metric_label(x)}"
    if by:
        heading += f", by {by}"
    needed = [x, y, *(c for c in (by, label_points, sort_by) if c)]
    if frame is None or frame.empty or not _has_columns(frame, needed):
        missing = [c for c in needed if frame is None or c not in frame]
        ax.set_title(heading)
        _empty(ax, "No runs to compare" + (f" (no column {', '.join(missing)})" if missing else ""))
        return fig
    data = frame.assign(_x=_column(frame, x), _y=_column(frame, y))
    data = data[np.isfinite(data["_x"]) & np.isfinite(data["_y"])]
    if data.empty:
        ax.set_title(heading)
        _empty(ax, f"No run has both {x} and {y}: nothing to show")
        return fig
    order = sort_by or _load_key(data)
    data = data.assign(_order=_column(data, order) if order else data["_x"])
    failing = (
        _column(data, "error_rate") >= HOLLOW_ERROR_RATE
        if "error_rate" in data
        else np.zeros(len(data), dtype=bool)
    )
    data = data.assign(_failing=failing)
    groups = _group_values(data, by) if by else [None]
    markers = "osD^vP*Xh"
    n_points = 0
    for i, value in enumerate(groups):
        rows = data if value is None else data[data[by] == value]
        rows = rows.sort_values(["_order", "_x"], kind="stable")
        if rows.empty:
            continue
        label = None if value is None else f"{by} = {_value_text(value)}"
        color = "C0" if value is None else f"C{i % 10}"
        marker = markers[i % len(markers)]
        ax.plot(
            rows["_x"],
            rows["_y"],
            marker=marker,
            color=color,
            lw=1.5,
            ms=6,
            label=label,
            gid=f"curve:{_value_text(value)}" if value is not None else "curve",
        )
        bad = rows[rows["_failing"]]
        if not bad.empty:
            ax.plot(
                bad["_x"],
                bad["_y"],
                ls="",
                marker=marker,
                ms=6,
                mfc="white",
                mec=color,
                mew=1.5,
                zorder=3,
                gid=f"failing:{_value_text(value)}" if value is not None else "failing",
            )
        n_points += len(rows)
        if label_points:
            for px, py, text in zip(rows["_x"], rows["_y"], rows[label_points], strict=True):
                ax.annotate(
                    _value_text(text),
                    (px, py),
                    xytext=(4, 4),
                    textcoords="offset points",
                    fontsize=7.5,
                    color=color,
                )
    xs, ys = data["_x"].to_numpy(), data["_y"].to_numpy()
    for values, set_scale, axis in ((xs, ax.set_xscale, ax.xaxis), (ys, ax.set_yscale, ax.yaxis)):
        if _wide(values):
            set_scale("log")
            _plain_log(axis)
    if _metric_unit(y) == "fraction":
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    if _metric_unit(x) == "fraction":
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel(_metric_label(x))
    ax.set_ylabel(_metric_label(y))
    ax.grid(which="major", alpha=0.3)
    title = f"{heading} ({n_points} runs)"
    if data["_failing"].any():
        title += f"\nhollow: error rate ≥ {HOLLOW_ERROR_RATE:.0%}, latency of completed requests"
    ax.set_title(title, fontsize=11)
    if by:
        ax.legend(fontsize=8.5)
    return fig


def comparison_bars(
    frame: pd.DataFrame | None,
    key: str,
    metrics: Sequence[str] = ("p50_ms", "p99_ms"),
    ax: Axes | None = None,
) -> Figure:
    """A few headline metrics side by side for each value of one varied key, e.g. p50 and p99
    for ``registry.consistency`` = eventual / watch / strong, each bar labelled with its value.

    Read across a group for the trade-off a setting makes (strong: higher p50, from the lookup
    on every request; eventual: higher p99, from the misroutes), down a colour for one
    metric's trend. Runs sharing a value of ``key`` (other keys varied too) are averaged and the
    tick label says how many. Metrics of different units (ms, fractions, counts) cannot share
    an axis: without ``ax`` each unit gets its own panel; a log axis is used when the values
    span more than a factor of 30. ``frame`` is what :func:`labkit.compare.compare` returns.
    """
    metrics = list(metrics)
    present = [m for m in metrics if frame is not None and m in frame]
    units: dict[str, list[str]] = {}
    for metric in present:
        units.setdefault(_metric_unit(metric), []).append(metric)
    if ax is None:
        panels = max(1, len(units))
        groups = frame[key].nunique() if frame is not None and key in frame else 1
        width = max(6.5, 2.0 + 0.35 * len(present) * max(1, groups))
        fig = Figure(
            figsize=(min(16.0, width * (1 + 0.6 * (panels - 1))), 4.8), layout="constrained"
        )
        axes = list(np.atleast_1d(fig.subplots(1, panels)))
    else:
        fig, ax = _figure(ax, (8, 4.5))
        axes = [ax]
    heading = f"Comparison by {key}"
    if frame is None or frame.empty or key not in frame or not present:
        axes[0].set_title(heading)
        missing = [c for c in [key, *metrics] if frame is None or c not in frame]
        _empty(
            axes[0],
            "No runs to compare" + (f" (no column {', '.join(missing)})" if missing else ""),
        )
        for other in axes[1:]:
            other.set_axis_off()
        return fig
    values = _group_values(frame, key)
    if not values:
        axes[0].set_title(heading)
        _empty(axes[0], f"No run has a value for {key}")
        for other in axes[1:]:
            other.set_axis_off()
        return fig
    numeric = frame.assign(**{m: _column(frame, m) for m in present})
    grouped = numeric.groupby(frame[key].map(_value_text), sort=False)
    means = grouped[present].mean()
    runs = grouped.size()
    names = [_value_text(v) for v in values]
    table = means.reindex(names)
    # one panel per unit when the function made the figure; a given axes gets them all
    assignments = list(units.values()) if ax is None else [present]
    all_nan = not np.isfinite(table.to_numpy(dtype=np.float64)).any()
    if all_nan:
        axes[0].set_title(heading)
        _empty(axes[0], "Every compared metric is missing (NaN): nothing to show")
        for other in axes[1:]:
            other.set_axis_off()
        return fig
    x = np.arange(len(names))
    color_of = {m: f"C{i % 10}" for i, m in enumerate(present)}
    for panel, panel_metrics in zip(axes, assignments, strict=True):
        width = 0.8 / len(panel_metrics)
        heights = table[panel_metrics].to_numpy(dtype=np.float64)
        log = _wide(heights.ravel()) and _metric_unit(panel_metrics[0]) != "fraction"
        for i, metric in enumerate(panel_metrics):
            column = table[metric].to_numpy(dtype=np.float64)
            drawn = np.where(np.isfinite(column) & ((column > 0) | (not log)), column, 0.0)
            bars = panel.bar(
                x + (i - (len(panel_metrics) - 1) / 2) * width,
                drawn,
                width * 0.95,
                color=color_of[metric],
                label=_metric_label(metric),
                gid=f"metric:{metric}",
            )
            if len(names) * len(panel_metrics) <= _MAX_VALUE_LABELS:
                panel.bar_label(
                    bars,
                    labels=[_metric_value(metric, v) for v in column],
                    padding=2,
                    fontsize=7.5,
                )
        finite = heights[np.isfinite(heights)]
        if log:
            panel.set_yscale("log")
            positive = finite[finite > 0]
            panel.set_ylim(positive.min() / 2, positive.max() * 4)
            _plain_log(panel.yaxis)
        elif len(finite):
            top = float(finite.max())
            panel.set_ylim(min(0.0, float(finite.min()) * 1.15), top * 1.15 if top > 0 else 1.0)
        tick_labels = [
            f"{name}\n({int(runs.get(name, 0))} runs)" if runs.get(name, 0) > 1 else name
            for name in names
        ]
        panel.set_xticks(x, tick_labels)
        panel.set_xlabel(key)
        unit = _metric_unit(panel_metrics[0])
        if unit == "fraction":
            panel.yaxis.set_major_formatter(PercentFormatter(1.0))
        if len(panel_metrics) == 1:
            panel.set_ylabel(_metric_label(panel_metrics[0]))
        else:
            panel.set_ylabel("ms" if unit == "ms" else unit)
        panel.grid(axis="y", which="major", alpha=0.3)
        panel.legend(fontsize=8.5)
    if len(axes) > 1:
        fig.suptitle(heading, fontsize=12)
    else:
        axes[0].set_title(heading, fontsize=11)
    return fig
