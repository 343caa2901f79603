"""Metrics over the most recent stretch of a run, read straight from the record log.

The alert manager is fed from here in both drivers: every evaluation reads the records that
ended since the previous one (records are appended as requests end, so that is a tail slice of
the columns), which costs time proportional to the traffic of one interval, never the whole run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from labkit.core.gateway import GatewayPolicy
from labkit.core.outcomes import Detail
from labkit.core.registry import Health, Registry
from labkit.core.slo import SloConfig
from labkit.results.records import FIELDS, RecordLog

_TIMEOUTS = (int(Detail.DEADLINE), int(Detail.ATTEMPT_TIMEOUT))


def window_metrics(
    log: RecordLog, read_from: int, now: float, interval_s: float, slo: SloConfig
) -> tuple[dict[str, float], int, int, int]:
    """Metrics of the requests that ended since record ``read_from``.

    Returns ``(values, events, bad_events, next_read_from)``: latency percentiles and mean of the
    completed ones (NaN when none completed), their error rate, rates per second over
    ``interval_s``, and the SLO burn rate; ``bad_events`` counts requests that failed or were
    slower than the SLO's latency.
    """
    end = len(log)
    n = end - read_from
    values: dict[str, float] = {}
    if n <= 0:
        nan = math.nan
        values.update(
            latency_p50_ms=nan,
            latency_p99_ms=nan,
            latency_mean_ms=nan,
            error_rate=0.0,
            throughput_rps=0.0,
            offered_rps=0.0,
            timeouts_rps=0.0,
            burn_rate=0.0,
        )
        return values, 0, 0, end
    table = log.table(read_from, end)
    detail = table[:, FIELDS.index("detail")].astype(np.int8)
    latency = (table[:, FIELDS.index("end")] - table[:, FIELDS.index("arrival")]) * 1000.0
    ok = detail == int(Detail.OK)
    done = latency[ok]
    completed = int(ok.sum())
    bad = n - completed + int((done > slo.latency_ms).sum())
    if completed:
        p50, p99 = np.percentile(done, [50, 99])
        values.update(latency_p50_ms=float(p50), latency_p99_ms=float(p99))
        values["latency_mean_ms"] = float(done.mean())
    else:
        values.update(latency_p50_ms=math.nan, latency_p99_ms=math.nan, latency_mean_ms=math.nan)
    values.update(
        error_rate=(n - completed) / n,
        throughput_rps=completed / interval_s,
        offered_rps=n / interval_s,
        timeouts_rps=float(np.isin(detail, _TIMEOUTS).sum()) / interval_s,
        burn_rate=slo.burn_rate(bad, n),
    )
    return values, n, bad, end


def fleet_metrics(
    registry: Registry, gateways: Sequence[GatewayPolicy], now: float, in_flight: int
) -> dict[str, float]:
    """The fleet-state metrics alert rules may use, beside the request metrics above."""
    counts = registry.health_counts()
    blocked: set[str] = set()
    for g in gateways:
        blocked |= g.blocked(now)
    return {
        "workers_down": counts[Health.DOWN],
        "workers_suspect": counts[Health.SUSPECT],
        "workers_unhealthy": counts[Health.DOWN] + counts[Health.SUSPECT],
        "workers_ejected": len(blocked),
        "in_flight": in_flight,
    }
