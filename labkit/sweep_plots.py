"""The standard sweep plots and the sweep report, shared by ``labkit sweep`` and notebooks.

Same conventions as :mod:`labkit.plots`: functions take a sweep table (the tidy frame
:func:`labkit.sweep.sweep` returns, or its :func:`~labkit.sweep.aggregate`), draw into ``ax``
when given or a fresh constrained-layout :class:`~matplotlib.figure.Figure` built with the object
API (never pyplot, never picking a backend, so Agg and notebooks both work), and return the
Figure. Nothing to show gives an explanatory note on the axes, never an exception.

- :func:`sweep_curves`: a metric against the load key (or another numeric key), one line per
  value of the next grid key with its confidence band; a third key makes one panel per value.
- :func:`sweep_heatmap`: a metric over two grid keys, one cell per grid point; a third key makes
  one panel per value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from labkit.compare import LOAD_KEYS
from labkit.plots_data import (
    HOLLOW_ERROR_RATE,
    _empty,
    _figure,
    _group_values,
    _metric_label,
    _metric_unit,
    _metric_value,
    _plain_log,
    _value_text,
    _wide,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["summary_table", "sweep_curves", "sweep_heatmap", "write_sweep_report"]

#: panels per row when a third key splits a plot
_PANEL_COLUMNS = 3
#: how far apart the lines' points sit around a category (x units: categories are 1 apart)
_DODGE = 0.12
#: heatmaps annotate their cells up to this many cells per panel
_MAX_CELL_LABELS = 120


# -- data --------------------------------------------------------------------------------------


def _summary(frame: pd.DataFrame, confidence: float) -> tuple[pd.DataFrame, list[str]]:
    """The per-point summary (aggregating a tidy table) and its grid keys."""
    from labkit.sweep import aggregate, grid_keys

    if "repeat" in frame.columns:
        summary = aggregate(frame, confidence=confidence)
        return summary, list(summary.attrs["grid"])
    keys = frame.attrs.get("grid")
    if keys is None:
        columns = list(frame.columns)
        keys = columns[: columns.index("runs")] if "runs" in columns else grid_keys(frame)
    return frame, [k for k in keys if k in frame.columns]


def _numeric(frame: pd.DataFrame, key: str) -> bool:
    import pandas as pd

    values = frame[key]
    return pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(
        values.dtype
    )


def _pick_x(frame: pd.DataFrame, keys: Sequence[str], x: str | None) -> str | None:
    """The x axis of a curve: the offered-load key if one is swept, else the first numeric
    swept key, else the first key."""
    if x is not None:
        return x
    varied = [k for k in keys if frame[k].nunique(dropna=False) > 1] or list(keys)
    for key in LOAD_KEYS:
        if key in varied:
            return key
    for key in varied:
        if _numeric(frame, key):
            return key
    return varied[0] if varied else None


def _label(keys: Sequence[str], values: Sequence[Any]) -> str:
    return ", ".join(f"{_short(k)}={_value_text(v)}" for k, v in zip(keys, values, strict=True))


def _short(key: str) -> str:
    """``balancer.strategy`` → ``strategy``: legends name the leaf, titles the full path."""
    return key.rsplit(".", 1)[-1]


def _combos(frame: pd.DataFrame, keys: Sequence[str]) -> list[tuple[Any, ...]]:
    """Every combination of ``keys`` present, each key's values in :func:`_group_values`
    order."""
    if not keys:
        return [()]
    orders = [_group_values(frame, k) for k in keys]
    present = {tuple(r) for r in frame[list(keys)].itertuples(index=False, name=None)}
    out: list[tuple[Any, ...]] = [()]
    for values in orders:
        out = [(*head, v) for head in out for v in values]
    return [c for c in out if c in present]


def _select(frame: pd.DataFrame, keys: Sequence[str], values: Sequence[Any]) -> pd.DataFrame:
    mask = np.ones(len(frame), dtype=bool)
    for key, value in zip(keys, values, strict=True):
        mask &= (frame[key] == value).to_numpy()
    return frame[mask]


def _panels(n: int, ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    if ax is not None or n <= 1:
        fig, one = _figure(ax, size)
        return fig, [one]
    cols = min(n, _PANEL_COLUMNS)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(size[0] * cols * 0.75, size[1] * rows * 0.85), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel().tolist()
    for extra in axes[n:]:
        extra.set_visible(False)
    return fig, axes[:n]


def _ci_text(confidence: float) -> str:
    return f"{100 * confidence:g} % CI"


# -- curves ------------------------------------------------------------------------------------


def sweep_curves(
    frame: pd.DataFrame | None,
    metric: str = "p99_ms",
    *,
    x: str | None = None,
    by: str | None = None,
    ax: Axes | None = None,
    confidence: float = 0.95,
) -> Figure:
    """``metric`` (mean over repeats, shaded ``confidence`` interval) against ``x``, one line
    per value of ``by``: the standard "p99 vs load per strategy" plot of a sweep.

    ``x`` defaults to the swept offered-load key (``workload.arrival.rate_rps``, ...), else the
    first numeric swept key; ``by`` to the next swept key. Further keys split the plot into one
    panel per combination (or, when drawing into one ``ax``, into more lines). Points whose
    mean error rate is 1 % or more are hollow: their latency covers only the requests that
    completed. A latency axis switches to log when its values span more than a factor of 30.
    """
    title = f"{_metric_label(metric)} by sweep point"
    mean, ci = f"{metric}_mean", f"{metric}_ci"
    summary, keys = _summary(frame, confidence) if frame is not None and len(frame) else (None, [])
    if summary is None or mean not in summary:
        fig, axis = _figure(ax, (8, 5))
        axis.set_title(title)
        _empty(axis, "No sweep runs to plot" if summary is None else f"No metric {metric!r}")
        return fig
    x = _pick_x(summary, keys, x)
    others = [k for k in keys if k != x]
    if by is None and others:
        by = others[0]
    rest = [k for k in others if k != by]
    # split into panels by the remaining keys, unless drawing into the caller's axes
    facet_keys = rest if ax is None else []
    line_keys = ([by] if by else []) + ([] if ax is None else rest)
    facets = _combos(summary, facet_keys)
    fig, axes = _panels(len(facets), ax, (8, 5))
    numeric_x = x is not None and _numeric(summary, x)
    x_values = _group_values(summary, x) if x is not None else [None]
    finite = summary[mean].to_numpy(dtype=np.float64)
    log_y = _metric_unit(metric) == "ms" and _wide(finite)
    hollow_any = False
    for panel, facet in zip(axes, facets, strict=True):
        part = _select(summary, facet_keys, facet)
        lines = _combos(part, line_keys)
        for i, line in enumerate(lines):
            rows = _select(part, line_keys, line)
            if x is not None:
                order = {v: j for j, v in enumerate(x_values)}
                rows = rows.assign(_order=rows[x].map(order)).sort_values("_order")
                xs = (
                    rows[x].to_numpy(dtype=np.float64)
                    if numeric_x
                    else rows["_order"].to_numpy(dtype=np.float64)
                )
            else:
                xs = np.zeros(len(rows))
            if not numeric_x:  # side by side around each category, not on top of each other
                xs = xs + _DODGE * (i - (len(lines) - 1) / 2)
            ys = rows[mean].to_numpy(dtype=np.float64)
            half = rows[ci].to_numpy(dtype=np.float64) if ci in rows else np.full(len(rows), np.nan)
            color = f"C{i % 10}"
            label = _label(line_keys, line) if line_keys else None
            band = np.isfinite(half) & np.isfinite(ys)
            # every metric here is >= 0: a band below zero would only hide the data, and a log
            # axis cannot draw it at all
            low = np.maximum(ys - np.where(band, half, 0.0), 0.0)
            if log_y:
                low = np.where(low > 0, low, ys / 10)
            high = ys + np.where(band, half, 0.0)
            if not numeric_x:
                # categories have no "between": an interval per point, no line through them
                panel.errorbar(
                    xs, ys, yerr=[ys - low, high - ys], fmt="none", ecolor=color, capsize=4
                )
                panel.plot([], [], "o", color=color, label=label)
            else:
                panel.plot(xs, ys, "-", color=color, lw=1.8, label=label)
            if numeric_x and band.any():
                panel.fill_between(
                    xs,
                    low,
                    high,
                    color=color,
                    alpha=0.18,
                    lw=0,
                )
            err = (
                rows["error_rate_mean"].to_numpy(dtype=np.float64)
                if "error_rate_mean" in rows
                else np.zeros(len(rows))
            )
            hollow = err >= HOLLOW_ERROR_RATE
            hollow_any |= bool(hollow.any())
            panel.plot(xs[~hollow], ys[~hollow], "o", color=color, ms=5)
            panel.plot(xs[hollow], ys[hollow], "o", mfc="white", mec=color, mew=1.5, ms=6)
        if x is not None and not numeric_x:
            panel.set_xticks(range(len(x_values)), [_value_text(v) for v in x_values])
            panel.set_xlim(-0.5, len(x_values) - 0.5)
        elif x is None:  # nothing swept: one point, the scenario as it is
            panel.set_xticks([0], ["the scenario as given"])
            panel.set_xlim(-1, 1)
        panel.set_xlabel(x or "")
        if log_y:
            panel.set_yscale("log")
            _plain_log(panel.yaxis)
        elif _metric_unit(metric) == "fraction":
            panel.yaxis.set_major_formatter(PercentFormatter(1.0))
        if facet_keys:
            panel.set_title(_label(facet_keys, facet), fontsize=10)
        panel.grid(alpha=0.3)
    axes[0].set_ylabel(_metric_label(metric))
    repeats = int(summary["runs"].max()) if "runs" in summary else 1
    heading = f"{_metric_label(metric)}" + (f" vs {x}" if x else "")
    if by:
        heading += f", by {by}"
    heading += f"\nmean of {repeats} repeat{'s' if repeats != 1 else ''}"
    if repeats > 1:
        heading += f", {'band' if numeric_x else 'bars'}: {_ci_text(confidence)}"
    handles, labels = axes[0].get_legend_handles_labels()
    if hollow_any:
        handles.append(Line2D([], [], ls="", marker="o", mfc="white", mec="0.3", mew=1.5))
        labels.append(f"error rate ≥ {HOLLOW_ERROR_RATE:.0%}")
    if handles:
        axes[0].legend(handles, labels, fontsize=8.5, frameon=False)
    if facet_keys and len(axes) > 1:
        fig.suptitle(heading, fontsize=11)
    else:
        axes[0].set_title(heading, fontsize=11)
    return fig


# -- heatmaps ----------------------------------------------------------------------------------


def _text_color(rgba: Sequence[float]) -> str:
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def sweep_heatmap(
    frame: pd.DataFrame | None,
    metric: str = "p99_ms",
    *,
    x: str | None = None,
    y: str | None = None,
    ax: Axes | None = None,
    confidence: float = 0.95,
) -> Figure:
    """``metric`` (mean over repeats) as a colour per grid point over two keys.

    ``x`` defaults to the swept load key (else the last key), ``y`` to another swept key; a
    one-key sweep gives a single row. Further keys make one panel per combination (all panels
    share one colour scale). Light is low, dark red is high; latency uses a log colour scale
    when it spans more than a factor of 30. Cells show the mean; grey cells had no successful
    run.
    """
    import matplotlib

    title = f"{_metric_label(metric)} over the grid"
    mean = f"{metric}_mean"
    summary, keys = _summary(frame, confidence) if frame is not None and len(frame) else (None, [])
    if summary is None or mean not in summary or not keys:
        fig, axis = _figure(ax, (7, 4.5))
        axis.set_title(title)
        _empty(
            axis,
            "No sweep runs to plot"
            if summary is None
            else f"No metric {metric!r}"
            if mean not in summary
            else "A heatmap needs a swept key",
        )
        return fig
    if x is None:
        loads = [k for k in LOAD_KEYS if k in keys and k != y]
        x = loads[0] if loads else [k for k in keys if k != y][-1]
    if y is None:
        others = [k for k in keys if k != x]
        y = others[0] if others else None
    facet_keys = [k for k in keys if k not in (x, y)]
    if ax is not None and facet_keys:
        fig, axis = _figure(ax, (7, 4.5))
        axis.set_title(title)
        _empty(axis, f"{len(keys)} swept keys: draw without ax= for one panel per {facet_keys[0]}")
        return fig
    facets = _combos(summary, facet_keys)
    fig, axes = _panels(len(facets), ax, (7, 4.5) if y else (7, 2.4))
    xs = _group_values(summary, x)
    ys = _group_values(summary, y) if y else [None]
    values = summary[mean].to_numpy(dtype=np.float64)
    finite = values[np.isfinite(values)]
    if _metric_unit(metric) == "ms" and _wide(finite):
        norm: Normalize = LogNorm(vmin=finite.min(), vmax=finite.max())
    else:
        lo = 0.0 if _metric_unit(metric) == "fraction" or not len(finite) else finite.min()
        hi = finite.max() if len(finite) else 1.0
        norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)
    cmap = matplotlib.colormaps["YlOrRd"].with_extremes(bad="0.85")
    image = None
    for panel, facet in zip(axes, facets, strict=True):
        part = _select(summary, facet_keys, facet)
        grid = np.full((len(ys), len(xs)), np.nan)
        for _, row in part.iterrows():
            i = ys.index(row[y]) if y else 0
            grid[i, xs.index(row[x])] = row[mean]
        # the first value of y on top: rows read in the order the grid listed them
        image = panel.imshow(grid, cmap=cmap, norm=norm, aspect="auto", origin="upper")
        if grid.size <= _MAX_CELL_LABELS:
            for (i, j), value in np.ndenumerate(grid):
                text = _metric_value(metric, value) if np.isfinite(value) else "no run"
                color = _text_color(cmap(norm(value))) if np.isfinite(value) else "0.3"
                panel.text(j, i, text, ha="center", va="center", fontsize=9, color=color)
        panel.set_xticks(range(len(xs)), [_value_text(v) for v in xs])
        panel.set_yticks(range(len(ys)), [_value_text(v) for v in ys] if y else [""])
        panel.set_xlabel(x)
        if facet_keys:
            panel.set_title(_label(facet_keys, facet), fontsize=10)
    axes[0].set_ylabel(y or "")
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.9)
        bar.set_label(_metric_label(metric))
        if _metric_unit(metric) == "fraction":
            bar.ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    heading = f"{_metric_label(metric)}, mean over repeats"
    if facet_keys and len(axes) > 1:
        fig.suptitle(heading, fontsize=11)
    else:
        axes[0].set_title(heading, fontsize=11)
    return fig


# -- report ------------------------------------------------------------------------------------

#: (file stem, caption, draw) of the report's figures; heatmaps need two swept keys
_CURVES = (
    ("curve_p99_ms", "p99 latency vs load", "p99_ms"),
    ("curve_error_rate", "Error rate vs load", "error_rate"),
)
_HEATMAPS = (
    ("heatmap_p99_ms", "p99 latency over the grid", "p99_ms"),
    ("heatmap_error_rate", "Error rate over the grid", "error_rate"),
)
#: the summary table's metric columns, and their short headings
_TABLE_METRICS = ("throughput_rps", "error_rate", "p50_ms", "p99_ms")
_TABLE_LABELS = {
    "throughput_rps": "throughput rps",
    "error_rate": "error rate",
    "p50_ms": "p50 ms",
    "p95_ms": "p95 ms",
    "p99_ms": "p99 ms",
}


def _cell(metric: str, mean: Any, ci: Any) -> str:
    if mean is None:
        return "-"
    value = _metric_value(metric, float(mean))
    if ci is not None and math.isfinite(float(ci)) and math.isfinite(float(mean)):
        value += " ± " + _metric_value(metric, float(ci))
    return value


def summary_table(
    frame: pd.DataFrame,
    metrics: Sequence[str] = _TABLE_METRICS,
    *,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per grid point, ``ok/runs`` and each metric as text ``mean ± CI half-width``: what
    ``labkit sweep`` prints and ``report.html`` shows (the numbers: :func:`aggregate`)."""
    import pandas as pd

    summary, keys = _summary(frame, confidence)
    rows = []
    for _, row in summary.iterrows():
        cells: dict[str, Any] = {k: _value_text(row[k]) for k in keys}
        cells["ok/runs"] = f"{int(row['ok'])}/{int(row['runs'])}"
        for metric in metrics:
            cells[_TABLE_LABELS.get(metric, metric)] = _cell(
                metric, row.get(f"{metric}_mean"), row.get(f"{metric}_ci")
            )
        rows.append(cells)
    return pd.DataFrame(rows)


def _html_table(caption: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    parts = [f"<table><caption>{escape(caption)}</caption><tr>"]
    parts += [f"<th>{escape(h)}</th>" for h in header]
    parts.append("</tr>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>")
    parts.append("</table>")
    return "".join(parts)


def write_sweep_report(
    frame: pd.DataFrame, out_dir: str | Path, *, confidence: float = 0.95
) -> dict[str, Path]:
    """Save the sweep plots as PNG and a ``report.html`` (summary table with confidence
    intervals, failed runs, plots) into ``out_dir``; returns stem → path, plus ``"report"``."""
    from labkit.report import _CSS, DPI, _close, _use_agg_unless_chosen

    _use_agg_unless_chosen()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary, keys = _summary(frame, confidence)
    plots: list[tuple[str, str, Figure]] = []
    for stem, caption, metric in _CURVES:
        plots.append((stem, caption, sweep_curves(summary, metric, confidence=confidence)))
    if len(keys) >= 2:
        for stem, caption, metric in _HEATMAPS:
            plots.append((stem, caption, sweep_heatmap(summary, metric, confidence=confidence)))
    paths: dict[str, Path] = {}
    figures = []
    for stem, caption, fig in plots:
        try:
            path = out / f"{stem}.png"
            fig.savefig(path, dpi=DPI)
            paths[stem] = path
        finally:
            _close(fig)
        figures.append(
            f"<figure><figcaption>{escape(caption)}</figcaption>"
            f'<img src="{escape(path.name, quote=True)}" alt="{escape(caption, quote=True)}">'
            "</figure>"
        )
    meta: Mapping[str, Any] = frame.attrs.get("sweep") or {}
    name = str(meta.get("scenario", "sweep"))
    table = summary_table(summary, confidence=confidence)
    tables = [
        _html_table(
            f"Mean ± {_ci_text(confidence)} half-width over repeats",
            list(table.columns),
            table.itertuples(index=False, name=None),
        )
    ]
    if "status" in frame:
        failed = frame[frame["status"] == "failed"]
        if len(failed):
            tables.append(
                _html_table(
                    f"Failed runs ({len(failed)})",
                    [*keys, "repeat", "seed", "error"],
                    [
                        [*(_value_text(r[k]) for k in keys), r["repeat"], r["seed"], r["error"]]
                        for _, r in failed.iterrows()
                    ],
                )
            )
    facts = []
    if meta:
        facts.append(
            f"{meta.get('runs', len(frame))} runs: {meta.get('repeats')} repeats per grid point "
            f"from base seed {meta.get('base_seed')}"
            + (
                " (common random numbers: repeat r has the same seed at every point)"
                if meta.get("common_random_numbers")
                else " (an independent seed per run)"
            )
            + f", on {meta.get('scheduler')} in {float(meta.get('wall_s') or 0):.1f} s."
        )
        if meta.get("overrides"):
            facts.append("Overrides: " + " ".join(f"--set {o}" for o in meta["overrides"]))
    report = out / "report.html"
    report.write_text(
        f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(name)} sweep</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{escape(name)} sweep</h1>
{"".join(f'<p class="sub">{escape(f)}</p>' for f in facts)}
<div class="tables">
{"".join(tables)}
</div>
{"".join(figures)}
</body>
</html>
""",
        encoding="utf-8",
    )
    paths["report"] = report
    return paths
