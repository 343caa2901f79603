"""Results of the data services: state operations, cache layers over time, batch sizes.

Figures are computed over the measured window (after warm-up, before the end of arrivals), like
the request latencies, so a summary compares like with like. The raw per-operation logs come
from the policy core (``StateStore``) or the driver (cache accesses, batch controller history),
so the live driver can hand over the same logs and get the same tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from labkit.core.cache import LAYERS
from labkit.core.state import StateStore
from labkit.scenario import Scenario

#: t-visibility bins: read start minus the commit of the newest committed write, in ms
VISIBILITY_EDGES_MS = (0.0, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3)
STATE_COLUMNS = [
    "t_s",
    "op",
    "latency_ms",
    "behind",
    "delta_ms",
    "session_retry",
    "outcome",
]
CACHE_SERIES_COLUMNS = ["t_s", "reads", "writes", *[f"{layer}_share" for layer in LAYERS], "stale"]
#: how long before a cache node event its "before" hit rate is taken, and how long after it
#: the dip is looked for
DIP_BEFORE_S = 5.0
DIP_AFTER_S = 10.0


@dataclass
class DataResults:
    summary: dict[str, Any] = field(default_factory=dict)
    state_ops: pd.DataFrame = field(default_factory=pd.DataFrame)
    cache: pd.DataFrame = field(default_factory=pd.DataFrame)
    batching: pd.DataFrame = field(default_factory=pd.DataFrame)


def consistency_results(
    scenario: Scenario,
    *,
    state: StateStore | None,
    cache: dict[str, Any] | None,
    batching: dict[str, Any] | None,
) -> DataResults:
    out = DataResults()
    lo, hi = scenario.warmup_s, scenario.duration_s
    out.summary["state"] = None
    out.summary["cache"] = None
    out.summary["batching"] = None
    if state is not None:
        out.state_ops = state_frame(state)
        out.summary["state"] = state_summary(state, out.state_ops, lo, hi)
    if cache is not None:
        out.cache = cache_series(cache, scenario.duration_s)
        out.summary["cache"] = cache_summary(cache, out.cache, lo, hi)
    if batching is not None:
        out.batching = pd.DataFrame(
            batching["history"], columns=["t_s", "gateway", "limit", "p99_s"]
        ).assign(p99_ms=lambda d: d["p99_s"] * 1000)
        out.batching = out.batching.drop(columns="p99_s")
        summary = dict(batching["summary"])
        if not out.batching.empty:
            measured = out.batching[(out.batching["t_s"] > lo) & (out.batching["t_s"] <= hi)]
            limits = measured["limit"] if not measured.empty else out.batching["limit"]
            summary["adaptive"] = {
                "mean_limit": round(float(limits.mean()), 3),
                "final_limits": [int(v) for v in out.batching.groupby("gateway")["limit"].last()],
                "decisions": len(out.batching),
            }
        else:
            summary["adaptive"] = None
        out.summary["batching"] = summary
    return out


# -- state ------------------------------------------------------------------------------------
def state_frame(store: StateStore) -> pd.DataFrame:
    n_r, n_w = len(store.reads_t), len(store.writes_t)
    frame = pd.DataFrame(
        {
            "t_s": np.concatenate([store.reads_t, store.writes_t]).astype(float),
            "op": pd.Categorical(["read"] * n_r + ["write"] * n_w, categories=["read", "write"]),
            "latency_ms": np.concatenate([store.reads_latency_ms, store.writes_latency_ms]).astype(
                float
            ),
            "behind": np.concatenate(
                [np.asarray(store.reads_behind, dtype=np.int32), np.full(n_w, -1, np.int32)]
            ),
            "delta_ms": np.concatenate(
                [np.asarray(store.reads_delta_ms, dtype=float), np.full(n_w, np.nan)]
            ),
            "session_retry": np.concatenate(
                [np.asarray(store.reads_session_retry, dtype=bool), np.zeros(n_w, bool)]
            ),
            "outcome": pd.Categorical(
                [""] * n_r + list(store.writes_outcome),
                categories=["", "ok", "overwritten", "merged", "rejected"],
            ),
        },
        columns=STATE_COLUMNS,
    )
    return frame.sort_values("t_s", kind="stable").reset_index(drop=True)


def _pcts(values: pd.Series) -> dict[str, float | None]:
    if values.empty:
        return {"mean": None, "p50": None, "p95": None, "p99": None}
    q = values.quantile([0.5, 0.95, 0.99]).to_numpy()
    return {
        "mean": round(float(values.mean()), 4),
        "p50": round(float(q[0]), 4),
        "p95": round(float(q[1]), 4),
        "p99": round(float(q[2]), 4),
    }


def visibility_curve(
    ops: pd.DataFrame, edges_ms: tuple[float, ...] = VISIBILITY_EDGES_MS
) -> pd.DataFrame:
    """P(a read sees the newest committed write) by how long after its commit the read began.

    This is PBS's t-visibility measured on the workload: every read counts once, in the bin of
    its own Δ. Reads before any write committed have no Δ and are left out.
    """
    reads = ops[(ops["op"] == "read") & ops["delta_ms"].notna()]
    bins = [*edges_ms, math.inf]
    cut = pd.cut(reads["delta_ms"], bins=bins, right=False, labels=False)
    grouped = (reads["behind"] == 0).groupby(cut)
    fresh = grouped.mean()
    count = grouped.size()
    rows = []
    for i in range(len(bins) - 1):
        n = int(count.get(i, 0))
        rows.append(
            {
                "delta_lo_ms": bins[i],
                "delta_hi_ms": bins[i + 1],
                "reads": n,
                "p_consistent": float(fresh.get(i, np.nan)) if n else np.nan,
            }
        )
    return pd.DataFrame(rows)


def state_summary(store: StateStore, ops: pd.DataFrame, lo: float, hi: float) -> dict[str, Any]:
    config = store.config
    m = ops[(ops["t_s"] >= lo) & (ops["t_s"] < hi)]
    reads = m[m["op"] == "read"]
    writes = m[m["op"] == "write"]
    n_reads = len(reads)
    behind = reads["behind"]
    outcomes = writes["outcome"].value_counts()
    curve = visibility_curve(m)
    return {
        "model": config.model,
        "n": config.n,
        "r": config.r,
        "w": config.w,
        "conflict": config.conflict,
        "reads": n_reads,
        "writes": len(writes),
        "read_ms": _pcts(reads["latency_ms"]),
        "write_ms": _pcts(writes["latency_ms"]),
        "stale_reads": int((behind > 0).sum()),
        "stale_fraction": round(float((behind > 0).mean()), 6) if n_reads else None,
        "k_staleness": {
            str(k): round(float((behind >= k).mean()), 6) if n_reads else None for k in (1, 2, 3)
        },
        "max_behind": int(behind.max()) if n_reads else None,
        "session_retries": int(reads["session_retry"].sum()),
        "conflicts": {k: int(outcomes.get(k, 0)) for k in ("overwritten", "merged", "rejected")},
        "t_visibility": [
            {
                "delta_lo_ms": r.delta_lo_ms,
                "delta_hi_ms": None if math.isinf(r.delta_hi_ms) else r.delta_hi_ms,
                "reads": int(r.reads),
                "p_consistent": None if np.isnan(r.p_consistent) else round(r.p_consistent, 6),
            }
            for r in curve.itertuples()
        ],
    }


# -- cache ------------------------------------------------------------------------------------
def cache_series(log: dict[str, Any], duration_s: float) -> pd.DataFrame:
    """Per second: cache reads, writes, the share of reads each layer served, stale share."""
    t = np.asarray(log["t"], dtype=float)
    layer = np.asarray(log["layer"], dtype=np.int16)
    stale = np.asarray(log["stale"], dtype=bool)
    seconds = max(1, math.ceil(duration_s))
    sec = np.minimum(t.astype(np.int64), seconds - 1) if len(t) else np.zeros(0, np.int64)
    is_read = layer >= 0
    reads = np.bincount(sec[is_read], minlength=seconds)[:seconds]
    writes = np.bincount(sec[~is_read], minlength=seconds)[:seconds]
    data: dict[str, Any] = {
        "t_s": np.arange(seconds, dtype=float),
        "reads": reads,
        "writes": writes,
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        for code, name in enumerate(LAYERS):
            hits = np.bincount(sec[layer == code], minlength=seconds)[:seconds]
            data[f"{name}_share"] = np.where(reads > 0, hits / np.maximum(reads, 1), np.nan)
        stale_n = np.bincount(sec[is_read & stale], minlength=seconds)[:seconds]
        data["stale"] = np.where(reads > 0, stale_n / np.maximum(reads, 1), np.nan)
    return pd.DataFrame(data, columns=CACHE_SERIES_COLUMNS)


def _hit_rate(series: pd.DataFrame) -> pd.Series:
    return 1.0 - series["store_share"]


def cache_summary(
    log: dict[str, Any], series: pd.DataFrame, lo: float, hi: float
) -> dict[str, Any]:
    t = np.asarray(log["t"], dtype=float)
    layer = np.asarray(log["layer"], dtype=np.int16)
    stale = np.asarray(log["stale"], dtype=bool)
    window = (t >= lo) & (t < hi)
    reads = window & (layer >= 0)
    n = int(reads.sum())
    shares = {
        name: round(float((layer[reads] == code).mean()), 6) if n else None
        for code, name in enumerate(LAYERS)
    }
    hit = round(1.0 - shares["store"], 6) if n and shares["store"] is not None else None
    events = []
    hit_rate = _hit_rate(series)
    for ev in log["events"]:
        row = dict(ev)
        if ev["event"] in ("crash", "restart"):
            row.update(_dip(series, hit_rate, ev["t_s"]))
        events.append(row)
    return {
        "reads": n,
        "writes": int((window & (layer < 0)).sum()),
        "hit_rate": hit,
        "layer_share": shares,
        "stale_fraction": round(float(stale[reads].mean()), 6) if n else None,
        "unavailable": log["unavailable"],
        "counters": log["counters"],
        "l1_counters": log["l1_counters"],
        "events": events,
    }


def _dip(series: pd.DataFrame, hit_rate: pd.Series, at: float) -> dict[str, Any]:
    """Hit rate before a node event, the lowest second after it, and when it came back."""
    t = series["t_s"]
    before = hit_rate[(t >= at - DIP_BEFORE_S) & (t < math.floor(at))].dropna()
    after = hit_rate[(t >= math.floor(at)) & (t < at + DIP_AFTER_S)].dropna()
    if before.empty or after.empty:
        return {"hit_before": None, "hit_min_after": None, "recovered_after_s": None}
    base = float(before.mean())
    low = float(after.min())
    low_at = float(t[after.idxmin()])
    # recovered: the first second after the low whose hit rate is back within 2 points
    later = hit_rate[(t > low_at)].dropna()
    back = later[later >= base - 0.02]
    recovered = float(t[back.index[0]]) - at if not back.empty else None
    return {
        "hit_before": round(base, 4),
        "hit_min_after": round(low, 4),
        "recovered_after_s": round(recovered, 3) if recovered is not None else None,
    }
