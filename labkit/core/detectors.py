"""Failure detectors: heartbeat arrival times in, a health verdict out.

Two detectors implement the registry's ``FailureDetector`` protocol:

``timeout``      ``TimeoutDetector`` (in ``labkit.core.registry``): suspect after a fixed silence,
                 down after a longer one. Simple, but the thresholds must be tuned to the heartbeat
                 interval and the network's jitter by hand.
``phi_accrual``  ``PhiAccrualDetector``: the accrual detector of Hayashibara et al. (2004). It
                 learns the distribution of inter-arrival times and reports a suspicion level
                 φ = −log10(1 − F(Δt)) for the current silence Δt instead of a yes/no, so one
                 threshold adapts to whatever period and jitter the heartbeats actually have.

``make_detector(kind, **params)`` builds either by name (for scenario files); ``DETECTORS`` lists
the names.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from labkit.core.registry import FailureDetector, Health, TimeoutDetector, WorkerId

#: intervals always learned before suspected-failure intervals start being left out
LEARN_FIRST = 5

DETECTORS = ("timeout", "phi_accrual")

PHI_MODELS = ("normal", "exponential")

_LN10 = math.log(10.0)
_LOG10_E = 1.0 / _LN10
# Akka's logistic approximation of the standard normal CDF: F(y) ≈ 1 / (1 + exp(−y(a + b·y²))).
_A = 1.5976
_B = 0.070566


def _phi_normal(y: float) -> float:
    """−log10(1 − F(y)) under Akka's logistic approximation, computed without overflow.

    With z = y(a + b·y²), 1 − F = 1 / (1 + e^z), so φ = log10(1 + e^z) = softplus(z) / ln 10.
    Akka evaluates the same quantity as −log10(e/(1+e)) with e = e^−z, which overflows for very
    negative y and takes log10(0) for very large y; softplus is stable on both sides, is > 0 and
    grows monotonically with y (dz/dy = a + 3b·y² > 0).
    """
    z = y * (_A + _B * y * y)
    if z > 0.0:
        return (z + math.log1p(math.exp(-z))) / _LN10
    return math.log1p(math.exp(z)) / _LN10


class _History:
    """One worker's last heartbeat and a bounded window of inter-arrival intervals.

    Mean and standard deviation come from a running sum and sum of squares, so a heartbeat costs
    O(1). The sums drift by rounding as values enter and leave; they are recomputed exactly from
    the window every ``maxlen`` additions, which keeps the drift bounded at O(1) amortised cost.
    The (clamped) statistics are cached here because ``health`` is asked far more often than a
    heartbeat arrives.
    """

    __slots__ = (
        "intervals",
        "last",
        "maxlen",
        "mean",
        "seed",
        "since_resum",
        "std",
        "total",
        "total_sq",
    )

    def __init__(self, now: float, maxlen: int, mean: float, std: float) -> None:
        self.seed = (mean - std, mean + std)  # Akka's two bootstrap intervals
        self.last = now
        self.maxlen = maxlen
        self.intervals: deque[float] = deque()
        self.total = 0.0
        self.total_sq = 0.0
        self.since_resum = 0
        self.mean = mean  # bootstrap values until the first real interval
        self.std = std

    def add(self, interval: float, min_std: float) -> None:
        intervals = self.intervals
        if len(intervals) == self.maxlen:
            old = intervals.popleft()
            self.total -= old
            self.total_sq -= old * old
        intervals.append(interval)
        self.total += interval
        self.total_sq += interval * interval
        self.since_resum += 1
        if self.since_resum >= self.maxlen:
            self.total = math.fsum(intervals)
            self.total_sq = math.fsum(x * x for x in intervals)
            self.since_resum = 0
        n = len(intervals)
        total, total_sq = self.total, self.total_sq
        if n < LEARN_FIRST:
            # Akka seeds the history with mean ± std of the bootstrap estimate; we keep the
            # seeds only while few real intervals are known, so one odd early interval (a
            # registration just before the first periodic beat) cannot set a hair trigger
            lo, hi = self.seed
            total += lo + hi
            total_sq += lo * lo + hi * hi
            n += 2
        mean = total / n
        var = total_sq / n - mean * mean  # population variance, as Akka's HeartbeatHistory
        std = math.sqrt(var) if var > 0.0 else 0.0
        self.mean = mean
        self.std = std if std > min_std else min_std


class PhiAccrualDetector:
    """The φ accrual failure detector (Hayashibara et al. 2004), as Akka and Cassandra use it.

    φ(Δt) = −log10(1 − F(Δt)), where Δt is the silence since the last heartbeat and F the CDF of
    inter-arrival times learned from the last ``window`` intervals. φ = 1 means a heartbeat this
    late happens one time in 10, φ = 8 one time in 10⁸. ``φ ≥ threshold`` → DOWN,
    ``φ ≥ suspect_threshold`` (default threshold/2) → SUSPECT.

    ``model="normal"`` (Akka): F is normal with the window's mean and population standard
    deviation, the latter clamped to at least ``min_std_s`` (perfectly periodic heartbeats would
    otherwise make the slightest delay fatal). F is Akka's logistic approximation
    F(y) ≈ 1/(1 + e^(−y(1.5976 + 0.070566y²))) with y = (Δt − mean − acceptable_pause_s)/std,
    not the exact normal CDF: this keeps thresholds tuned on Akka meaningful here. Its upper tail
    is thinner than the normal's, so a given φ is reached a little earlier (φ = 8 at y ≈ 5.22,
    against 5.61 for the exact normal).

    ``model="exponential"`` (Cassandra): F(t) = 1 − e^(−t/mean), so φ = t/mean · log10(e) with
    t = max(0, Δt − acceptable_pause_s). The standard deviation is not used. Cassandra has no such
    pause; we shift Δt by it so that the pause means the same thing in both models (Akka's
    "mean + pause" is the same shift).

    Bootstrap: until a worker's first real interval is known, mean = ``first_interval_s`` and
    std = first_interval_s/4 (Akka's seed). Unlike Akka, the seed is not kept in the window once
    real intervals exist: it only stands in for them, so a window of exactly periodic 1 s
    heartbeats has std 0 (clamped to ``min_std_s``) rather than being skewed by the seed for the
    next ``window`` heartbeats.

    As in Akka, a heartbeat that arrives when φ ≥ threshold (the worker was considered down)
    does not add its interval to the window: the silence that ends a failure or a partition is not
    a sample of the normal period and would inflate mean and std for ``window`` heartbeats. The
    first real interval is always recorded (a wrong ``first_interval_s`` must not lock the
    detector out of ever learning), but the rule means a worker whose period grows abruptly far
    beyond the learned one keeps being declared down between its heartbeats, as it would in Akka.

    A heartbeat at or before the last one (a duplicate, e.g. the registration beat and the first
    heartbeat at the same instant) carries no interval and is ignored. A worker never heard of is
    HEALTHY with φ = 0, like ``TimeoutDetector``: its silence counts from now. ``forget`` drops the
    history, so a restarted worker that re-registers starts afresh from the bootstrap estimate.
    """

    __slots__ = (
        "_bootstrap_std",
        "_exponential",
        "_history",
        "acceptable_pause_s",
        "first_interval_s",
        "min_std_s",
        "model",
        "suspect_threshold",
        "threshold",
        "window",
    )

    def __init__(
        self,
        *,
        threshold: float = 8.0,
        suspect_threshold: float | None = None,
        window: int = 100,
        min_std_s: float = 0.1,
        acceptable_pause_s: float = 0.0,
        first_interval_s: float = 1.0,
        model: str = "normal",
    ) -> None:
        _positive("threshold", threshold)
        if suspect_threshold is None:
            suspect_threshold = threshold / 2
        _positive("suspect_threshold", suspect_threshold)
        if suspect_threshold > threshold:
            raise ValueError(
                f"suspect_threshold must be <= threshold ({threshold:g}), got {suspect_threshold!r}"
            )
        if (
            isinstance(window, bool)
            or not isinstance(window, int | float)
            or not float(window).is_integer()
            or window < 1
        ):
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        _positive("min_std_s", min_std_s)
        _non_negative("acceptable_pause_s", acceptable_pause_s)
        _positive("first_interval_s", first_interval_s)
        if model not in PHI_MODELS:
            raise ValueError(f"model must be one of {', '.join(PHI_MODELS)}, got {model!r}")
        self.threshold = float(threshold)
        self.suspect_threshold = float(suspect_threshold)
        self.window = int(window)
        self.min_std_s = float(min_std_s)
        self.acceptable_pause_s = float(acceptable_pause_s)
        self.first_interval_s = float(first_interval_s)
        self.model = model
        self._exponential = model == "exponential"
        self._bootstrap_std = max(self.first_interval_s / 4, self.min_std_s)
        self._history: dict[WorkerId, _History] = {}

    # -- FailureDetector ----------------------------------------------------------------------
    def heartbeat(self, worker_id: WorkerId, now: float) -> None:
        h = self._history.get(worker_id)
        if h is None:
            self._history[worker_id] = _History(
                now, self.window, self.first_interval_s, self._bootstrap_std
            )
            return
        interval = now - h.last
        if interval <= 0.0:
            return
        # Akka leaves out an interval that ends a suspected failure, so a long pause does not
        # skew the statistics. Only once a few intervals are known, though: otherwise one
        # short first interval (a registration just before the first periodic beat) makes
        # every normal interval look like a failure, and none would ever be learned.
        if len(h.intervals) < LEARN_FIRST or self._phi(h, now) < self.threshold:
            h.add(interval, self.min_std_s)
        h.last = now

    def health(self, worker_id: WorkerId, now: float) -> Health:
        h = self._history.get(worker_id)
        if h is None:
            return Health.HEALTHY
        phi = self._phi(h, now)
        if phi >= self.threshold:
            return Health.DOWN
        if phi >= self.suspect_threshold:
            return Health.SUSPECT
        return Health.HEALTHY

    def forget(self, worker_id: WorkerId) -> None:
        self._history.pop(worker_id, None)

    # -- introspection ------------------------------------------------------------------------
    def phi(self, worker_id: WorkerId, now: float) -> float:
        """The suspicion level of ``worker_id`` at ``now`` (0 for a worker never heard of)."""
        h = self._history.get(worker_id)
        return 0.0 if h is None else self._phi(h, now)

    def stats(self, worker_id: WorkerId) -> tuple[float, float, int]:
        """(mean, clamped std, number of real intervals) the detector currently uses."""
        h = self._history.get(worker_id)
        if h is None:
            return (self.first_interval_s, self._bootstrap_std, 0)
        return (h.mean, h.std, len(h.intervals))

    def _phi(self, h: _History, now: float) -> float:
        dt = now - h.last - self.acceptable_pause_s
        if self._exponential:
            return dt / h.mean * _LOG10_E if dt > 0.0 else 0.0
        return _phi_normal((dt - h.mean) / h.std)


def _non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def make_detector(kind: str, **params: Any) -> FailureDetector:
    """A failure detector by name: ``"timeout"`` (suspect_after_s, down_after_s) or
    ``"phi_accrual"`` (the keyword arguments of ``PhiAccrualDetector``).

    Unknown kinds and bad or missing parameters raise ``ValueError`` naming the problem.
    """
    factory: Any
    if kind == "timeout":
        # TimeoutDetector is a dataclass whose private state is also an init field: name the
        # public parameters explicitly so it cannot be passed in.
        unknown = sorted(set(params) - {"suspect_after_s", "down_after_s"})
        if unknown:
            raise ValueError(f"timeout detector: unknown parameter(s) {', '.join(unknown)}")
        factory = TimeoutDetector
    elif kind == "phi_accrual":
        factory = PhiAccrualDetector
    else:
        raise ValueError(f"unknown detector {kind!r}; known: {', '.join(DETECTORS)}")
    try:
        detector: FailureDetector = factory(**params)
    except TypeError as exc:  # a missing or unexpected keyword
        raise ValueError(f"{kind} detector: {exc}") from exc
    return detector
