"""From records to the per-second time series and ``summary.json``.

Definitions (the same for both drivers):
- *measured* requests are those that arrived at a gateway at or after ``warmup_s``;
- ``requests`` counts measured requests by final status, so offered = completed + failed +
  rejected + timed_out; ``details`` splits them further (rate_limited, no_worker, ...);
- ``latency_ms`` covers measured *completed* requests, gateway arrival to reply, and its
  percentiles are exact sample quantiles (numpy's linear interpolation over every value);
- ``throughput_rps`` is measured completions per second of the measured window
  (``duration_s - warmup_s``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from labkit.core.outcomes import Detail, Final
from labkit.stats import exact_percentiles

PERCENTILE_KEYS = ("mean", "p50", "p90", "p95", "p99", "p999", "max")


def _latency(values: np.ndarray) -> dict[str, float | None]:
    stats = exact_percentiles(values)
    return {k: (None if np.isnan(stats[k]) else round(float(stats[k]), 6)) for k in PERCENTILE_KEYS}


def timeseries(records: pd.DataFrame, duration_s: float, bin_s: float = 1.0) -> pd.DataFrame:
    """Per-second series: offered by arrival second; outcomes and latency by end second."""
    horizon = max(duration_s, float(records["end_s"].max()) if len(records) else 0.0)
    n_bins = int(np.ceil(horizon / bin_s)) or 1
    edges = np.arange(n_bins + 1) * bin_s
    t = edges[:-1]
    offered = np.bincount(
        np.minimum((records["arrival_s"].to_numpy() // bin_s).astype(np.int64), n_bins - 1),
        minlength=n_bins,
    )
    end_bin = np.minimum((records["end_s"].to_numpy() // bin_s).astype(np.int64), n_bins - 1)
    status = records["status"].cat.codes.to_numpy()
    out: dict[str, Any] = {"t_s": t, "offered": offered}
    for final in Final:
        out[final.label] = np.bincount(end_bin[status == final], minlength=n_bins)
    ended = sum(out[f.label] for f in Final)
    out["throughput_rps"] = out["completed"] / bin_s
    with np.errstate(invalid="ignore", divide="ignore"):
        out["error_rate"] = np.where(ended > 0, (ended - out["completed"]) / ended, 0.0)
    ok = status == Final.COMPLETED
    lat = records["latency_ms"].to_numpy()[ok]
    bins_ok = end_bin[ok]
    frame = pd.DataFrame(out)
    if len(lat):
        grouped = pd.Series(lat).groupby(bins_ok)
        for q, name in ((0.5, "p50_ms"), (0.9, "p90_ms"), (0.99, "p99_ms")):
            frame[name] = grouped.quantile(q).reindex(range(n_bins)).to_numpy()
        frame["mean_ms"] = grouped.mean().reindex(range(n_bins)).to_numpy()
    else:
        for name in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
            frame[name] = np.nan
    return frame


def summarize(
    records: pd.DataFrame,
    *,
    duration_s: float,
    warmup_s: float,
    workers: pd.DataFrame,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # one pass over numpy columns (no filtered copies of the frame): the same counts, and the
    # same latencies in the same order, as pandas filters and group-bys would give
    measured = records["measured"].to_numpy()
    status = records["status"].cat.codes.to_numpy()[measured]
    detail = records["detail"].cat.codes.to_numpy()[measured]
    kind = records["kind"].cat.codes.to_numpy()[measured]
    latency = records["latency_ms"].to_numpy()[measured]
    ok = status == Final.COMPLETED
    n_measured = int(measured.sum())
    n_completed = int(ok.sum())
    by_status = np.bincount(status, minlength=len(Final))
    by_detail = np.bincount(detail, minlength=len(Detail))
    window = duration_s - warmup_s
    requests = {"offered": n_measured}
    requests.update({f.label: int(by_status[i]) for i, f in enumerate(Final)})
    kinds = records["kind"].cat.categories
    summary: dict[str, Any] = {
        "requests": requests,
        "details": {d.label: int(by_detail[i]) for i, d in enumerate(Detail) if by_detail[i]},
        "requests_total": len(records),
        "throughput_rps": round(n_completed / window, 6),
        "offered_rps": round(n_measured / window, 6),
        "error_rate": round(1 - n_completed / n_measured, 6) if n_measured else 0.0,
        "latency_ms": _latency(latency[ok]),
        "latency_ms_by_kind": {
            kinds[code]: _latency(latency[ok & (kind == code)])
            for code in range(len(kinds))
            if (ok & (kind == code)).any()
        },
        "retries": int((np.maximum(records["attempts"].to_numpy()[measured], 1) - 1).sum()),
        "per_worker": _per_worker(workers),
    }
    if extra:
        summary.update(extra)
    return summary


def _per_worker(workers: pd.DataFrame) -> dict[str, Any]:
    if workers.empty:
        return {}
    util = workers["utilization"]
    served = workers["served"]
    return {
        "count": len(workers),
        "utilization": {
            "mean": round(float(util.mean()), 6),
            "min": round(float(util.min()), 6),
            "max": round(float(util.max()), 6),
        },
        "served": {"min": int(served.min()), "max": int(served.max())},
        # max/mean served: 1.0 is perfect balance
        "imbalance": round(float(served.max() / served.mean()), 6) if served.mean() > 0 else None,
        "rejected_queue_full": int(workers["rejected"].sum()),
    }
