"""A retry budget: retries (and hedges) may add at most a fixed fraction to the load.

Per-request retry limits do not stop retry storms: when a worker fails, every request retries
up to its limit, multiplying the load exactly when capacity has dropped. A budget caps retries
across all requests instead. This is Finagle's ``RetryBudget``: within a sliding window of
``window_s``, retries may reach ``ratio`` × requests (Finagle's ``percentCanRetry``) plus a
reserve of ``min_per_s`` × ``window_s`` (its ``minRetriesPerSec`` × ``ttl``) so that a
low-traffic client can still retry at all.

A retry goes ahead iff retries_in_window + 1 ≤ ratio × requests_in_window + min_per_s ×
window_s. Finagle scales the same inequality into an integer token bucket (deposit 1000 per
request, withdraw 1000/percentCanRetry per retry), which differs from ours only in rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_INF = math.inf


@dataclass(frozen=True, slots=True)
class RetryBudgetConfig:
    """Finagle's defaults are 20 % and 10 retries/s over 10 s; ``buckets`` sets the granularity."""

    ratio: float = 0.2
    min_per_s: float = 10.0
    window_s: float = 10.0
    buckets: int = 10

    def __post_init__(self) -> None:
        for name in ("ratio", "min_per_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not 0 <= value < _INF:
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        w = self.window_s
        if isinstance(w, bool) or not isinstance(w, int | float) or not 0 < w < _INF:
            raise ValueError(f"window_s must be a finite number > 0, got {w!r}")
        n = self.buckets
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"buckets must be an integer >= 1, got {n!r}")


class RetryBudget:
    """Finagle-style retry budget over a bucketed sliding window.

    ``on_request(now)`` for every new request (not for its retries); ``try_spend(now)`` before a
    retry or a hedge: True means go ahead (and the retry is charged), False means don't.
    ``requests``, ``spent`` and ``denied`` count over the budget's lifetime.

    *Granularity.* The window is ``buckets`` buckets of ``window_s / buckets`` seconds each,
    aligned on multiples of the bucket width (bucket = ⌊now / bucket_s⌋, in floating point). It
    slides a whole bucket at a time, so a request or a retry counts for between
    ``window_s − bucket_s`` (exclusive) and ``window_s`` (inclusive) after it happened, depending on
    where in its bucket it fell. Counts are integers, so there is no drift, and each call costs
    O(1) amortised (advancing clears at most ``buckets`` buckets, however long the gap). Time that
    goes backwards is treated as the current bucket.

    *What it guarantees.* Over any run, with e₀ the bucket of the first call and e₁ that of the
    last granted retry: spent ≤ ratio × requests + min_per_s × window_s × (⌊(e₁ − e₀)/buckets⌋
    + 1), hence spent ≤ ratio × requests + min_per_s × (elapsed + window_s + bucket_s). Proof:
    walking back from the last retry, pick the window ending at its bucket, then the window
    ending at the last retry before that window, and so on. These windows are disjoint, hold
    every retry, and each held at most ratio × (its requests) + reserve when its last retry was
    granted; their ends lie ≥ ``buckets`` buckets apart. The extra ``bucket_s`` is real: reserve
    spent at the end of one bucket and again ``buckets`` buckets later spans just over
    ``window_s − bucket_s`` seconds.
    """

    __slots__ = (
        "_bucket",
        "_bucket_s",
        "_epoch",
        "_n",
        "_ratio",
        "_req",
        "_req_total",
        "_reserve",
        "_ret",
        "_ret_total",
        "config",
        "denied",
        "requests",
        "spent",
    )

    def __init__(self, config: RetryBudgetConfig | None = None) -> None:
        self.config = cfg = config if config is not None else RetryBudgetConfig()
        self._n = cfg.buckets
        self._bucket_s = cfg.window_s / cfg.buckets
        self._ratio = float(cfg.ratio)
        # the tolerance keeps e.g. 0.29 × 100 = 28.999999999999996 from denying the 29th retry
        self._reserve = cfg.min_per_s * cfg.window_s + 1e-9
        self._req = [0] * cfg.buckets
        self._ret = [0] * cfg.buckets
        self._req_total = 0
        self._ret_total = 0
        self._epoch: int | None = None
        self._bucket = 0
        self.requests = 0
        self.spent = 0
        self.denied = 0

    def on_request(self, now: float) -> None:
        """A new request arrived: it deposits ``ratio`` retries into the budget."""
        self._advance(now)
        self._req[self._bucket] += 1
        self._req_total += 1
        self.requests += 1

    def try_spend(self, now: float) -> bool:
        """May a retry (or hedge) go ahead at ``now``? If so, it is charged to the window."""
        self._advance(now)
        if self._ret_total + 1 <= self._ratio * self._req_total + self._reserve:
            self._ret[self._bucket] += 1
            self._ret_total += 1
            self.spent += 1
            return True
        self.denied += 1
        return False

    def available(self, now: float) -> float:
        """How many retries the window allows beyond those already spent (may be fractional)."""
        self._advance(now)
        return max(0.0, self._ratio * self._req_total + self._reserve - 1e-9 - self._ret_total)

    def window_counts(self, now: float) -> tuple[int, int]:
        """(requests, retries) currently in the window."""
        self._advance(now)
        return (self._req_total, self._ret_total)

    def _advance(self, now: float) -> None:
        epoch = math.floor(now / self._bucket_s)
        current = self._epoch
        if current is not None and epoch <= current:
            return
        n = self._n
        req, ret = self._req, self._ret
        if current is None or epoch - current >= n:
            for i in range(n):
                req[i] = ret[i] = 0
            self._req_total = self._ret_total = 0
        else:
            for e in range(current + 1, epoch + 1):
                i = e % n
                self._req_total -= req[i]
                self._ret_total -= ret[i]
                req[i] = ret[i] = 0
        self._epoch = epoch
        self._bucket = epoch % n
