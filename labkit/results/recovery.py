"""Per-fault recovery metrics: when each injected fault was noticed, hurt, and stopped hurting.

``recovery_table`` turns a run's tables (``records``, ``faults``, ``events``, ``alerts``) into one
row per fault instance; ``recovery_summary`` makes those rows JSON-ready for ``summary.json``
(``"faults": [...]``); ``slo_summary`` is the run's error-budget account.

Time bins are those of ``timeseries`` in :mod:`labkit.results.summary`: bin ``i`` covers
``[i·bin_s, (i+1)·bin_s)`` (``bin_s`` from :class:`~labkit.core.slo.RecoveryConfig`), requests are
binned by *end* time for outcomes and latency and by *arrival* time for "offered", the bins run up
to ``max(duration_s, last end)`` and the last bin also takes anything past that. The per-bin
series is built from *every* record, as ``timeseries.csv`` is, so the table and the plot agree;
the counts over an incident use *measured* requests only, as ``summary.json`` does. Percentiles
are exact sample quantiles (numpy's linear interpolation).

Columns of ``recovery_table`` (one row per fault, in the order of the ``faults`` table):

Identity
    ``fault`` (int id), ``kind``, ``origin`` (``schedule`` | ``random``), ``workers`` (the
    worker names, comma-joined; ``""`` for a fleet-wide fault), ``start_s``, ``end_s`` (NaN: the
    fault outlasted the run, e.g. a crash without restart).

Baseline — what "normal" looked like just before the fault
    ``baseline_p99_ms``, ``baseline_mean_ms``: p99 and mean latency of measured *completed*
    requests that *ended* in ``[max(start − baseline_s, warmup_s), start)``;
    ``baseline_error_rate``: the share of the measured requests ending in that window that did not
    complete; ``baseline_completed``: how many completed requests the baseline rests on. When the
    window holds fewer than 50 completed requests (``MIN_BASELINE_COMPLETED``) the baseline is
    taken over *all* measured requests ending in ``[warmup_s, start)`` instead (a short run, or a
    fault soon after warm-up); when there are none at all the three figures are NaN and the
    tolerances below fall back to their absolute parts alone.
    ``p99_limit_ms`` = ``baseline_p99 · (1 + p99_tolerance) + p99_slack_ms`` and
    ``error_rate_limit`` = ``baseline_error_rate + error_rate_tolerance`` (a NaN baseline counts as
    0 here): a bin *breaches* when its error rate is above ``error_rate_limit`` or its p99 (over
    completed requests) is above ``p99_limit_ms``. A bin in which no request ended is within
    tolerance only if no request arrived in it either; requests arriving with none finishing means
    the service is stalled, which is the worst kind of impact.

Detection — who noticed, and how fast
    A *worker signal* is a registry ``suspect``/``down``, an outlier ``ejected`` or a breaker
    ``open`` event (any gateway) naming one of the fault's workers; an *alert signal* is any alert
    (``fired_at``) regardless of its name, group or flags (a silenced alert still detected the
    problem, it just told nobody). ``detect_registry_s``, ``detect_outlier_s``,
    ``detect_breaker_s``, ``detect_alert_s``: time from ``start_s`` to the first signal of that
    source at or after ``start_s`` (NaN: that source never noticed). ``detected_at_s`` is the
    earliest worker signal; for a fleet-wide fault, or when no worker signal came, the earliest
    alert. ``time_to_detect_s`` = ``detected_at_s − start_s``; ``detected_by`` names the source
    (``registry``, ``outlier``, ``breaker``, or ``alert:<name>``; ties go in that order; None if
    nothing noticed).
    Signals are attributed to a fault while it is *open* — until the later of ``end_s`` and
    ``recovered_at_s`` (forever when either is unknown) — and for ``ATTRIBUTION_GRACE_S`` (60 s)
    after that, because detectors lag (heartbeat timeouts, alert ``for:`` clauses); the grace is
    cut short by the start of the next fault that could raise the same signal (for worker signals,
    a later fault sharing a worker or a fleet-wide one; for alerts, any later fault). Without the
    bound, a fault nobody noticed would be credited with the next fault's detection.

Impact and recovery
    ``impact_at_s``: the start of the first bin, from the bin holding ``start_s`` on, that
    breaches (so it may be up to one bin before ``start_s``); NaN if none did, i.e. the fault had
    no visible impact. The search stops at the bin holding ``end_s`` + the longest request
    latency in the run (requests that arrived while the fault was active have all ended by then;
    later breaches belong to something else); it runs to the end of the data when ``end_s`` is
    NaN. ``recovered_at_s``: the start of the first run of ``ceil(hold_s / bin_s)`` consecutive
    within-tolerance bins after the impact bin (the run must fit in the data); when there was no
    impact it is ``start_s``; NaN if the service never recovered before the data ended.
    ``time_to_recover_s`` = ``recovered_at_s − start_s`` (0 without impact, NaN if never).
    ``recovered_after_end_s`` = ``recovered_at_s − end_s`` when both are known: negative means the
    service was back within tolerance while the fault was still in force (it was mitigated, e.g.
    by ejecting the worker); for a fault without impact it is ``start_s − end_s``.

The incident — what the fault cost
    The incident window is ``[start_s, recovered_at_s)`` (to the end of the data if never
    recovered; empty for a fault without impact). Over the *measured* requests *arriving* in it:
    ``requests``, ``completed``, ``failed``, ``rejected``, ``timed_out`` (final statuses, so
    ``requests`` is their sum), ``retried`` (sum of ``attempts − 1``), ``p99_ms_incident`` (p99
    latency of the completed ones; NaN if none), ``extra_latency_ms_mean`` (their mean latency
    minus ``baseline_mean_ms``; NaN without completions or baseline), ``extra_latency_s_total``
    (sum over the completed of ``max(0, latency − baseline_mean_ms)``, in seconds: the waiting
    the fault added; NaN without a baseline), ``bad_events`` (requests that did not complete or
    completed slower than ``slo.latency_ms``) and ``error_budget_burned`` = ``bad_events /
    ((1 − slo.target) × measured requests of the whole run)``: the fraction of the whole run's
    error budget this incident spent (above 1 means the incident alone broke the SLO). The last
    two are NaN when no SLO is given (``bad_events`` is then a float column, otherwise int).

``recovery_summary`` gives the same keys and values per fault, with floats rounded to 6 places
and NaN as null.

Overlap
    ``overlaps``: comma-joined ids of the other faults whose *open* span ``[start_s, later of
    end_s and recovered_at_s]`` (unbounded when either is unknown) overlaps this fault's; their
    figures mix, so read them together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from labkit.core.outcomes import Final
from labkit.core.slo import RecoveryConfig, SloConfig

__all__ = [
    "ATTRIBUTION_GRACE_S",
    "COLUMNS",
    "MIN_BASELINE_COMPLETED",
    "recovery_summary",
    "recovery_table",
    "slo_summary",
]

#: Fewer completed requests than this in the baseline window and the baseline widens to all
#: measured pre-fault traffic: a p99 of a handful of values is mostly noise.
MIN_BASELINE_COMPLETED = 50

#: How long after a fault is over (ended and recovered) a detector's signal is still credited to
#: it; heartbeat timeouts and alert ``for:`` clauses make detectors lag by tens of seconds.
ATTRIBUTION_GRACE_S = 60.0

_WORKER_SOURCES = ("registry", "outlier", "breaker")
_DETECTING_EVENTS = {"registry": ("suspect", "down"), "outlier": ("ejected",), "breaker": ("open",)}

#: The columns of ``recovery_table`` and their dtypes (see the module docstring for meanings).
COLUMNS: dict[str, str] = {
    "fault": "int64",
    "kind": "object",
    "origin": "object",
    "workers": "object",
    "start_s": "float64",
    "end_s": "float64",
    "baseline_p99_ms": "float64",
    "baseline_error_rate": "float64",
    "baseline_mean_ms": "float64",
    "baseline_completed": "int64",
    "p99_limit_ms": "float64",
    "error_rate_limit": "float64",
    "detected_at_s": "float64",
    "time_to_detect_s": "float64",
    "detected_by": "object",
    "detect_registry_s": "float64",
    "detect_outlier_s": "float64",
    "detect_breaker_s": "float64",
    "detect_alert_s": "float64",
    "impact_at_s": "float64",
    "recovered_at_s": "float64",
    "time_to_recover_s": "float64",
    "recovered_after_end_s": "float64",
    "requests": "int64",
    "completed": "int64",
    "failed": "int64",
    "rejected": "int64",
    "timed_out": "int64",
    "retried": "int64",
    "extra_latency_ms_mean": "float64",
    "extra_latency_s_total": "float64",
    "p99_ms_incident": "float64",
    "bad_events": "float64",  # int64 when an SLO is given
    "error_budget_burned": "float64",
    "overlaps": "object",
}


# --------------------------------------------------------------------------------------------
# column helpers


def _status_codes(status: pd.Series) -> np.ndarray:
    """``Final`` codes of a status column, whatever its category order; -1 for anything else."""
    labels = {f.label: int(f) for f in Final}
    if isinstance(status.dtype, pd.CategoricalDtype):
        lut = np.array([labels.get(str(c), -1) for c in status.cat.categories] + [-1], np.int8)
        return lut[status.cat.codes.to_numpy()]  # code -1 (missing) picks the trailing -1
    return status.map(labels).fillna(-1).to_numpy(np.int8)


def _worker_tuple(value: Any) -> tuple[str, ...]:
    """A fault's workers as a tuple of names (tuples, lists, arrays or comma-joined strings)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ()
    if isinstance(value, str):
        return tuple(w for w in (s.strip() for s in value.split(",")) if w)
    return tuple(str(w) for w in value)


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


# --------------------------------------------------------------------------------------------
# per-bin series


class _Bins:
    """The per-bin figures every fault is judged against (computed once per run)."""

    def __init__(
        self, records: pd.DataFrame, codes: np.ndarray, duration_s: float, bin_s: float
    ) -> None:
        arrival = records["arrival_s"].to_numpy(np.float64)
        end = records["end_s"].to_numpy(np.float64)
        latency = records["latency_ms"].to_numpy(np.float64)
        horizon = max(duration_s, float(end.max()) if len(end) else 0.0)
        n = int(np.ceil(horizon / bin_s)) or 1
        self.n = n
        self.bin_s = bin_s
        self.offered = np.bincount(_bin_of(arrival, bin_s, n), minlength=n)
        end_bin = _bin_of(end, bin_s, n)
        self.ended = np.bincount(end_bin[codes >= 0], minlength=n)
        ok = codes == Final.COMPLETED
        completed = np.bincount(end_bin[ok], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.error_rate = np.where(
                self.ended > 0, (self.ended - completed) / np.maximum(self.ended, 1), 0.0
            )
        self.p99 = _grouped_quantile(latency[ok], end_bin[ok], completed, 0.99)
        # the longest any request took: anything that arrived while a fault was active has ended
        # within this of the fault's end
        self.max_latency_s = float(latency.max()) / 1000.0 if len(latency) else 0.0

    def bin_of(self, t: float) -> int:
        return int(min(max(t // self.bin_s, 0), self.n - 1))

    def breach(self, p99_limit: float, error_limit: float) -> np.ndarray:
        """True for bins out of tolerance; NaN p99 (no completions) never breaches on latency."""
        stalled = (self.ended == 0) & (self.offered > 0)
        with np.errstate(invalid="ignore"):
            slow = self.p99 > p99_limit
        return stalled | slow | (self.error_rate > error_limit)


def _bin_of(t: np.ndarray, bin_s: float, n: int) -> np.ndarray:
    return np.clip((t // bin_s).astype(np.int64), 0, n - 1)


def _grouped_quantile(
    values: np.ndarray, groups: np.ndarray, counts: np.ndarray, q: float
) -> np.ndarray:
    """The ``q`` quantile of ``values`` within each group ``0..len(counts)-1`` (NaN if empty),
    with numpy's linear interpolation, by one sort instead of a Python loop over groups."""
    out = np.full(len(counts), np.nan)
    if not len(values):
        return out
    # sort by value, then stably by group: faster than lexsort, and a radix sort when the group
    # ids fit in 16 bits
    by_value = np.argsort(values)
    small = np.uint16 if len(counts) <= np.iinfo(np.uint16).max else np.int64
    ordered = values[by_value[np.argsort(groups[by_value].astype(small), kind="stable")]]
    starts = np.cumsum(counts) - counts
    has = counts > 0
    pos = q * (counts[has] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, counts[has] - 1)
    frac = pos - lo
    a = ordered[starts[has] + lo]
    b = ordered[starts[has] + hi]
    out[has] = a + (b - a) * frac
    return out


# --------------------------------------------------------------------------------------------
# the table


def recovery_table(
    records: pd.DataFrame,
    faults: pd.DataFrame,
    events: pd.DataFrame | None,
    alerts: pd.DataFrame | None = None,
    *,
    slo: SloConfig | None,
    config: RecoveryConfig = RecoveryConfig(),  # noqa: B008 - frozen, so a shared default is safe
    warmup_s: float,
    duration_s: float,
) -> pd.DataFrame:
    """One row per fault: baseline, detection, impact, recovery and the incident's cost.

    Every column is defined in the module docstring. Work is vectorised over requests (one sort
    per run, then ``searchsorted`` and prefix sums per fault), so a million records and dozens of
    faults take well under a second.
    """
    if faults is None or faults.empty:
        return _empty_table()
    records = records.reset_index(drop=True)
    codes_all = _status_codes(records["status"])
    bins = _Bins(records, codes_all, duration_s, config.bin_s)
    hold_bins = max(1, math.ceil(config.hold_s / config.bin_s - 1e-9))

    if "measured" in records:
        measured = records["measured"].to_numpy(bool)
    else:
        measured = records["arrival_s"].to_numpy(np.float64) >= warmup_s
    m_arrival = records["arrival_s"].to_numpy(np.float64)[measured]
    m_end = records["end_s"].to_numpy(np.float64)[measured]
    m_latency = records["latency_ms"].to_numpy(np.float64)[measured]
    m_codes = codes_all[measured]
    m_attempts = records["attempts"].to_numpy(np.int64)[measured]
    n_measured = len(m_arrival)

    # measured requests by end time, for baselines
    by_end = np.argsort(m_end, kind="stable")
    e_end = m_end[by_end]
    e_lat = m_latency[by_end]
    e_ok = m_codes[by_end] == Final.COMPLETED
    e_ok_cum = np.concatenate(([0], np.cumsum(e_ok)))

    # measured requests by arrival time, for incidents (prefix sums make counts O(1) per fault)
    by_arr = np.argsort(m_arrival, kind="stable")
    a_arr = m_arrival[by_arr]
    a_lat = m_latency[by_arr]
    a_codes = m_codes[by_arr]
    a_ok = a_codes == Final.COMPLETED
    status_cum = {f: np.concatenate(([0], np.cumsum(a_codes == f))) for f in Final}
    retried_cum = np.concatenate(([0], np.cumsum(np.maximum(m_attempts[by_arr], 1) - 1)))
    if slo is not None:
        bad = ~a_ok | (a_lat > slo.latency_ms)
        bad_cum = np.concatenate(([0], np.cumsum(bad)))
        budget_events = slo.allowance * n_measured

    fault_ids = faults["fault"].to_numpy(np.int64)
    starts = pd.to_numeric(faults["start_s"], errors="coerce").to_numpy(np.float64)
    ends = pd.to_numeric(faults["end_s"], errors="coerce").to_numpy(np.float64)
    worker_sets = [_worker_tuple(w) for w in faults["workers"]]

    rows: list[dict[str, Any]] = []
    for i in range(len(faults)):
        start, end = float(starts[i]), float(ends[i])
        row: dict[str, Any] = {
            "fault": int(fault_ids[i]),
            "kind": str(faults["kind"].iat[i]),
            "origin": str(faults["origin"].iat[i]) if "origin" in faults else "",
            "workers": ",".join(worker_sets[i]),
            "start_s": start,
            "end_s": end,
        }

        # baseline
        lo = max(start - config.baseline_s, warmup_s)
        i0 = int(np.searchsorted(e_end, lo, "left"))
        i1 = int(np.searchsorted(e_end, start, "left"))
        i0 = min(i0, i1)  # a fault during warm-up has no baseline at all
        if e_ok_cum[i1] - e_ok_cum[i0] < MIN_BASELINE_COMPLETED:
            i0 = min(int(np.searchsorted(e_end, warmup_s, "left")), i1)
        base_ok = e_lat[i0:i1][e_ok[i0:i1]]
        n_base = i1 - i0
        base_p99 = _percentile(base_ok, 99)
        base_mean = float(base_ok.mean()) if len(base_ok) else math.nan
        base_err = (n_base - len(base_ok)) / n_base if n_base else math.nan
        p99_ref = 0.0 if math.isnan(base_p99) else base_p99
        p99_limit = p99_ref * (1 + config.p99_tolerance) + config.p99_slack_ms
        err_limit = (0.0 if math.isnan(base_err) else base_err) + config.error_rate_tolerance
        row.update(
            baseline_p99_ms=base_p99,
            baseline_error_rate=base_err,
            baseline_mean_ms=base_mean,
            baseline_completed=len(base_ok),
            p99_limit_ms=p99_limit,
            error_rate_limit=err_limit,
        )

        # impact and recovery
        impact_at = recovered_at = math.nan
        first = bins.bin_of(start)
        last = bins.n - 1 if math.isnan(end) else bins.bin_of(end + bins.max_latency_s)
        breach = bins.breach(p99_limit, err_limit)
        in_data = start < bins.n * bins.bin_s
        hits = np.flatnonzero(breach[first : last + 1]) if in_data else np.zeros(0, np.int64)
        if len(hits):
            impact_bin = first + int(hits[0])
            impact_at = impact_bin * bins.bin_s
            recovered = _first_clean_run(~breach[impact_bin + 1 :], hold_bins)
            if recovered is not None:
                recovered_at = (impact_bin + 1 + recovered) * bins.bin_s
        else:
            recovered_at = start
        row.update(
            impact_at_s=impact_at,
            recovered_at_s=recovered_at,
            time_to_recover_s=recovered_at - start,
            recovered_after_end_s=recovered_at - end,
        )

        # the incident's cost
        stop = math.inf if math.isnan(recovered_at) else recovered_at
        j0 = int(np.searchsorted(a_arr, start, "left"))
        j1 = int(np.searchsorted(a_arr, stop, "left")) if stop > start else j0
        done = a_lat[j0:j1][a_ok[j0:j1]]
        counts = {f.label: int(status_cum[f][j1] - status_cum[f][j0]) for f in Final}
        row.update(
            requests=j1 - j0,
            **counts,
            retried=int(retried_cum[j1] - retried_cum[j0]),
            extra_latency_ms_mean=float(done.mean()) - base_mean if len(done) else math.nan,
            extra_latency_s_total=(
                float(np.maximum(done - base_mean, 0.0).sum()) / 1000.0
                if not math.isnan(base_mean)
                else math.nan
            ),
            p99_ms_incident=_percentile(done, 99),
        )
        if slo is not None:
            n_bad = int(bad_cum[j1] - bad_cum[j0])
            row["bad_events"] = n_bad
            row["error_budget_burned"] = n_bad / budget_events if budget_events > 0 else math.nan
        else:
            row["bad_events"] = row["error_budget_burned"] = math.nan
        rows.append(row)

    open_end = _open_ends(starts, ends, [r["recovered_at_s"] for r in rows])
    _attach_detection(rows, starts, open_end, worker_sets, events, alerts)
    _attach_overlaps(rows, starts, open_end)
    return _typed(pd.DataFrame(rows), counted_bad=slo is not None)


def _first_clean_run(ok: np.ndarray, length: int) -> int | None:
    """Index of the first run of ``length`` consecutive True values in ``ok``, or None."""
    if len(ok) < length:
        return None
    # windowed sums of ok via a prefix sum: a window is clean when it sums to its length
    cum = np.concatenate(([0], np.cumsum(ok, dtype=np.int64)))
    clean = np.flatnonzero(cum[length:] - cum[:-length] == length)
    return int(clean[0]) if len(clean) else None


def _open_ends(starts: np.ndarray, ends: np.ndarray, recovered: Iterable[float]) -> np.ndarray:
    """When each fault stops being open: the later of its end and its recovery, inf if unknown."""
    rec = np.asarray(list(recovered), dtype=np.float64)
    end = np.where(np.isnan(ends), np.inf, ends)
    rec = np.where(np.isnan(rec), np.inf, rec)
    return np.maximum(np.maximum(end, rec), starts)


def _attribution_close(open_end: float, next_start: float) -> float:
    """Signals count until ``open_end`` plus a grace that the next relevant fault cuts short."""
    return max(open_end, min(open_end + ATTRIBUTION_GRACE_S, next_start))


def _attach_detection(
    rows: list[dict[str, Any]],
    starts: np.ndarray,
    open_end: np.ndarray,
    worker_sets: list[tuple[str, ...]],
    events: pd.DataFrame | None,
    alerts: pd.DataFrame | None,
) -> None:
    """Fill the detection columns of ``rows`` in place (see the module docstring)."""
    # per source, per worker: the sorted times of its detecting events
    signals: dict[str, dict[str, np.ndarray]] = {s: {} for s in _WORKER_SOURCES}
    if events is not None and not events.empty:
        source = events["source"].astype(str).to_numpy()
        event = events["event"].astype(str).to_numpy()
        for src, names in _DETECTING_EVENTS.items():
            hit = events[(source == src) & np.isin(event, names)]
            for worker, times in hit.groupby(hit["worker"].astype(str), observed=True)["t_s"]:
                signals[src][str(worker)] = np.sort(times.to_numpy(np.float64))

    alert_t = np.zeros(0)
    alert_name = np.zeros(0, dtype=object)
    if alerts is not None and not alerts.empty:
        fired = pd.to_numeric(alerts["fired_at"], errors="coerce").to_numpy(np.float64)
        keep = ~np.isnan(fired)
        order = np.argsort(fired[keep], kind="stable")
        alert_t = fired[keep][order]
        alert_name = alerts["name"].astype(str).to_numpy(object)[keep][order]

    # by worker, the starts of the faults touching it; fleet-wide faults touch every worker
    fleet_starts = np.sort(starts[[not w for w in worker_sets]])
    worker_starts: dict[str, list[float]] = {}
    for s, ws in zip(starts, worker_sets, strict=True):
        for w in ws:
            worker_starts.setdefault(w, []).append(float(s))
    sorted_starts = np.sort(starts)

    for i, row in enumerate(rows):
        start = float(starts[i])
        ws = worker_sets[i]
        later = [_next_after(fleet_starts, start)]
        later += [_next_after(np.sort(worker_starts[w]), start) for w in ws]
        close_worker = _attribution_close(float(open_end[i]), min(later))
        close_alert = _attribution_close(float(open_end[i]), _next_after(sorted_starts, start))

        firsts: dict[str, float] = {}
        for src in _WORKER_SOURCES:
            best = math.inf
            for w in ws:
                times = signals[src].get(w)
                if times is None:
                    continue
                k = int(np.searchsorted(times, start, "left"))
                if k < len(times) and times[k] < close_worker:
                    best = min(best, float(times[k]))
            firsts[src] = best
        k = int(np.searchsorted(alert_t, start, "left"))
        alert_at = float(alert_t[k]) if k < len(alert_t) and alert_t[k] < close_alert else math.inf

        detected_at, detected_by = math.inf, None
        for src in _WORKER_SOURCES:  # strict < keeps the earlier source on ties
            if firsts[src] < detected_at:
                detected_at, detected_by = firsts[src], src
        if detected_by is None and alert_at < math.inf:
            detected_at, detected_by = alert_at, f"alert:{alert_name[k]}"

        def since(t: float, start: float = start) -> float:
            return t - start if t < math.inf else math.nan

        row.update(
            detected_at_s=detected_at if detected_at < math.inf else math.nan,
            time_to_detect_s=since(detected_at),
            detected_by=detected_by,
            detect_registry_s=since(firsts["registry"]),
            detect_outlier_s=since(firsts["outlier"]),
            detect_breaker_s=since(firsts["breaker"]),
            detect_alert_s=since(alert_at),
        )


def _next_after(sorted_times: np.ndarray, t: float) -> float:
    """The first time strictly after ``t`` (inf if none)."""
    k = int(np.searchsorted(sorted_times, t, "right"))
    return float(sorted_times[k]) if k < len(sorted_times) else math.inf


def _attach_overlaps(rows: list[dict[str, Any]], starts: np.ndarray, open_end: np.ndarray) -> None:
    """Fill ``overlaps``: faults whose open spans ``[start, open_end]`` intersect."""
    s_a, s_b = starts[:, None], starts[None, :]
    e_a, e_b = open_end[:, None], open_end[None, :]
    overlap = ((s_a < e_b) & (s_b < e_a)) | (s_a == s_b)
    np.fill_diagonal(overlap, False)
    for i, row in enumerate(rows):
        row["overlaps"] = ",".join(str(rows[j]["fault"]) for j in np.flatnonzero(overlap[i]))


def _typed(table: pd.DataFrame, *, counted_bad: bool) -> pd.DataFrame:
    """Columns in ``COLUMNS`` order and dtype; ``bad_events`` is an int column given an SLO."""
    dtypes = {c: t for c, t in COLUMNS.items() if t != "object"}
    if counted_bad:
        dtypes["bad_events"] = "int64"
    return table[list(COLUMNS)].astype(dtypes)


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in COLUMNS.items()})


# --------------------------------------------------------------------------------------------
# JSON-ready views


def _json_value(value: Any) -> Any:
    """Plain Python for ``json.dumps``: numpy scalars unwrapped, NaN/inf and pandas NA → None."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


def recovery_summary(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The table as ``summary.json``'s ``"faults"`` list: one dict per fault, same keys and
    meanings as the columns, floats rounded to 6 places and NaN written as null."""
    return [
        {str(k): _json_value(v) for k, v in record.items()}
        for record in table.to_dict(orient="records")
    ]


def slo_summary(
    records: pd.DataFrame, slo: SloConfig, *, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    """The run's error-budget account over measured requests (JSON-ready).

    ``events`` are measured requests; ``good`` those that completed within ``slo.latency_ms``;
    ``bad`` the rest. ``allowance`` is the budget in events, ``(1 − target) × events``;
    ``budget_consumed`` = ``bad / allowance`` (above 1: the SLO was missed); ``burn_rate`` = bad
    fraction ÷ allowed bad fraction. Over one whole run the two are the same number — they differ
    once windows do (alerts watch burn rates over minutes, budgets are spent over the run) — and
    both are reported so each reader finds the figure they speak in. No traffic burns nothing (0).
    """
    if "measured" in records:
        measured = records["measured"].to_numpy(bool)
    else:
        measured = records["arrival_s"].to_numpy(np.float64) >= warmup_s
    codes = _status_codes(records["status"])[measured]
    latency = records["latency_ms"].to_numpy(np.float64)[measured]
    events = int(measured.sum())
    good = int(((codes == Final.COMPLETED) & (latency <= slo.latency_ms)).sum())
    bad = events - good
    allowance = slo.allowance * events
    return {
        "latency_ms": _json_value(slo.latency_ms),
        "target": _json_value(slo.target),
        "window_s": _json_value(float(duration_s - warmup_s)),
        "events": events,
        "good": good,
        "bad": bad,
        "good_fraction": _json_value(good / events) if events else None,
        "allowance": _json_value(allowance),
        "budget_consumed": _json_value(bad / allowance) if allowance > 0 else 0.0,
        "burn_rate": _json_value(slo.burn_rate(bad, events)),
        "met": bad <= allowance,
    }
