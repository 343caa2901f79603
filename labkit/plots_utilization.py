"""Per-worker utilization over time, as a heatmap: which workers were hot, and when.

The numbers are the workers' own load reports (``Results.load_reports``): each heartbeat carries
the worker's utilization over the last interval, which is what the registry and every
load-aware balancer were told. Drawing exactly that signal (rather than a second measurement)
shows what the routing layer could know; a worker that is down or cut off sends no report, so
its cells are blank (grey) for as long as it is silent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

#: more workers than this are drawn as bands of consecutive workers (their mean)
MAX_ROWS = 120
#: at most this many time bins across the run
MAX_BINS = 150
NO_REPORT = "#bdbdbd"


@dataclass(frozen=True)
class UtilizationGrid:
    """Mean reported utilization, one row per worker (or band of workers), one column per bin;
    NaN where no report arrived in the bin."""

    values: np.ndarray
    rows: list[str]
    bin_s: float
    workers: int


def _natural(name: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def utilization_grid(
    results: Any, bin_s: float | None = None, max_rows: int = MAX_ROWS
) -> UtilizationGrid | None:
    """The heatmap's numbers; ``None`` when the run has no load reports (AutoGen workers)."""
    reports = getattr(results, "load_reports", None)
    if reports is None or reports.empty:
        return None
    sc = results.scenario
    interval = sc.registry.heartbeat_interval_ms / 1000
    end = max(float(sc.duration_s), float(reports["t_s"].max()))
    if bin_s is None:
        bin_s = max(interval, end / MAX_BINS)
    bins = max(1, int(np.ceil(end / bin_s)))
    workers = getattr(results, "workers", None)
    names = (
        list(workers["worker"].astype(str))
        if workers is not None and not workers.empty
        else [str(c) for c in reports["worker"].cat.categories]
    )
    names.sort(key=_natural)
    index = {name: i for i, name in enumerate(names)}
    row = reports["worker"].astype(str).map(index).to_numpy(dtype=np.float64)
    known = ~np.isnan(row)
    rows = row[known].astype(np.int64)
    cols = np.minimum((reports["t_s"].to_numpy()[known] / bin_s).astype(np.int64), bins - 1)
    util = reports["utilization"].to_numpy(dtype=np.float64)[known]
    total = np.zeros((len(names), bins))
    count = np.zeros((len(names), bins))
    np.add.at(total, (rows, cols), util)
    np.add.at(count, (rows, cols), 1.0)
    labels = names
    if len(names) > max_rows:
        size = int(np.ceil(len(names) / max_rows))
        starts = list(range(0, len(names), size))
        total = np.vstack([total[s : s + size].sum(axis=0) for s in starts])
        count = np.vstack([count[s : s + size].sum(axis=0) for s in starts])
        labels = [f"{names[s]} … {names[min(s + size, len(names)) - 1]}" for s in starts]
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(count > 0, total / count, np.nan)
    return UtilizationGrid(values=values, rows=labels, bin_s=bin_s, workers=len(names))


def utilization_heatmap(
    results: Any, ax: Axes | None = None, *, bin_s: float | None = None
) -> Figure:
    """Workers (rows) over time (columns), coloured by reported utilization; faults marked."""
    from labkit.plots import _empty, _figure

    grid = utilization_grid(results, bin_s)
    fig, ax = _figure(ax, (11, 5.5))
    if grid is None:
        ax.set_title("Worker utilization over time")
        _empty(ax, "No load reports in this run (AutoGen workers send none)")
        return fig
    cmap = ListedColormap(colormaps["magma"](np.linspace(0, 1, 256))).with_extremes(bad=NO_REPORT)
    n = len(grid.rows)
    image = ax.imshow(
        np.ma.masked_invalid(grid.values),
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        vmin=0.0,
        vmax=1.0,
        extent=(0.0, grid.bin_s * grid.values.shape[1], n - 0.5, -0.5),
    )
    colorbar = fig.colorbar(image, ax=ax, pad=0.01, fraction=0.04)
    colorbar.set_label("utilization (load reports)")
    ticks = np.arange(n) if n <= 30 else np.unique(np.linspace(0, n - 1, 20).round())
    ax.set_yticks(ticks, [grid.rows[int(i)] for i in ticks], fontsize=7 if n > 20 else 8)
    handles: list[Any] = []
    if np.isnan(grid.values).any():
        handles.append(Patch(color=NO_REPORT, label="no report (down or cut off)"))
    faults = getattr(results, "faults", None)
    if faults is not None and not faults.empty and "start_s" in faults:
        for start in faults["start_s"].dropna().unique():
            ax.axvline(float(start), color="#39c", lw=1.2, ls="--")
        handles.append(ax.plot([], [], color="#39c", lw=1.2, ls="--", label="fault starts")[0])
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.85)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("worker" if grid.workers <= n else "workers (bands, mean)")
    shown = f"{grid.workers:,} workers" + (f" in {n} bands" if grid.workers > n else "")
    ax.set_title(
        f"Worker utilization over time, as the heartbeats reported it: {shown}, "
        f"{grid.bin_s:.3g} s bins",
        fontsize=10,
    )
    return fig
