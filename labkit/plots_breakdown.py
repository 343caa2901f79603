"""Where a live request's time went, hop by hop: the gateway, the worker, and the four hops.

The simulator's latency is made of what the scenario says (service, queueing, network draws);
a live run's has parts nobody configured: each process's gRPC stack and event loop, and the
wait for a CPU on a shared machine. The live load generator asks the gateway and the labkit
workers to stamp every RPC (``labkit.live.trace``), so each completed request in
``Results.timing`` carries its segments; this draws their percentiles side by side, which
answers "is it the gateway?" at a glance (usually: no, it is the hops).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from labkit.live.trace import ADDED_COLUMNS, SEGMENTS, SEND_LAG_COLUMN

QUANTILES = (0.5, 0.95, 0.99)
SEND_LAG = "send_lag"
#: what each segment is, for the plot's labels
LABELS = {
    SEND_LAG: "load generator (late send)",
    "to_gateway": "caller → gateway",
    "gateway": "gateway",
    "to_worker": "gateway → worker",
    "worker": "worker (queue + service)",
    "from_worker": "worker → gateway",
    "gateway_reply": "gateway (reply)",
    "to_caller": "gateway → caller",
}
COLORS = ("#9ecae1", "#3182bd", "#08519c")


def _share(share: float) -> str:
    return "<1%" if share < 0.005 else f"{share:.0%}"


def has_breakdown(results: Any) -> bool:
    """Whether the run carries per-hop timings (a live run with labkit workers)."""
    timing = getattr(results, "timing", None)
    return (
        timing is not None
        and not timing.empty
        and set(ADDED_COLUMNS) <= set(timing.columns)
        and bool(timing[list(ADDED_COLUMNS)].notna().any().any())
    )


def latency_breakdown(results: Any) -> pd.DataFrame:
    """One row per segment in path order — first, when the run has it, how late the load
    generator sent the request (a live latency counts from the scheduled arrival) — with
    p50 / p95 / p99 / mean (ms), the segment's mean as a share of the mean latency, and how many
    requests had it; empty without per-hop timings."""
    columns = ["segment", "p50", "p95", "p99", "mean", "share", "samples"]
    if not has_breakdown(results):
        return pd.DataFrame(columns=columns)
    timing = results.timing
    names = ([SEND_LAG] if SEND_LAG_COLUMN in timing.columns else []) + list(SEGMENTS)
    rows = []
    for name in names:
        column = {"worker": "worker_ms", SEND_LAG: SEND_LAG_COLUMN}.get(name, f"{name}_ms")
        values = timing[column].to_numpy(float)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            rows.append([name, np.nan, np.nan, np.nan, np.nan, np.nan, 0])
            continue
        p50, p95, p99 = np.quantile(values, QUANTILES)
        rows.append([name, p50, p95, p99, float(values.mean()), np.nan, len(values)])
    frame = pd.DataFrame(rows, columns=columns)
    frame["share"] = frame["mean"] / float(timing["latency_ms"].mean())
    return frame


def latency_breakdown_plot(results: Any, ax: Axes | None = None) -> Figure:
    """Grouped horizontal bars (log scale): each segment's p50, p95 and p99."""
    if ax is None:
        fig = Figure(figsize=(8.0, 4.2), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
        fig = getattr(fig, "figure", fig)
    table = latency_breakdown(results)
    name = getattr(getattr(results, "scenario", None), "name", "run")
    ax.set_title(f"{name}: where the latency went (live, per-RPC stamps)")
    if table.empty:
        ax.text(
            0.5,
            0.5,
            "no per-hop timings (a simulated run, or AutoGen workers)",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="0.35",
        )
        ax.set_xticks([])
        ax.set_yticks([])
        return fig
    y = np.arange(len(table))[::-1]
    height = 0.26
    floor = 1e-3  # a log axis cannot show 0; sub-microsecond segments sit at its edge
    for i, (q, color) in enumerate(zip(("p50", "p95", "p99"), COLORS, strict=True)):
        values = np.maximum(table[q].to_numpy(float), floor)
        ax.barh(y + (1 - i) * height, values, height=height, color=color, label=q)
    labels = [
        f"{LABELS[seg]}\n{_share(share)} of the mean latency" if np.isfinite(share) else LABELS[seg]
        for seg, share in zip(table["segment"], table["share"], strict=True)
    ]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("ms (log scale)")
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig
