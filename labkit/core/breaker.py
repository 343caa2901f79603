"""A circuit breaker per worker, at a gateway.

The classic three-state breaker (Nygard, *Release It!*; the shape Hystrix, resilience4j and
Polly share): CLOSED lets everything through and counts consecutive failures; at
``failure_threshold`` it OPENs and refuses the worker for ``open_s``; then it turns HALF_OPEN and
lets at most ``half_open_probes`` attempts through at a time. ``close_after`` successful probes
close it; one failed probe re-opens it for another ``open_s``.

Compared with ``OutlierDetector`` (same surface, so a gateway can use either): ejection is timed
and returns the worker to full traffic at once, with growing ejections for repeat offenders and
a fleet-wide cap; a breaker trickles probes to the worker before it returns and has no cap, so
with every worker failing it blocks them all.

Sans-I/O: OPEN → HALF_OPEN is time-driven, applied lazily by the first call given a ``now`` at
or past ``next_change_at``; the event carries the moment ``open_s`` elapsed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from labkit.core.registry import WorkerId

#: ``listener(worker, event, at)``: event is "open", "half_open" or "closed".
BreakerListener = Callable[[WorkerId, str, float], None]

_INF = math.inf


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failure_threshold: int = 5  # consecutive failures that open it
    open_s: float = 10.0  # how long it stays open before probing
    half_open_probes: int = 1  # attempts allowed in flight while half-open
    close_after: int = 2  # successful probes that close it

    def __post_init__(self) -> None:
        for name in ("failure_threshold", "half_open_probes", "close_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        o = self.open_s
        if isinstance(o, bool) or not isinstance(o, int | float) or not 0 < o < _INF:
            raise ValueError(f"open_s must be a finite number > 0, got {o!r}")


class _Breaker:
    __slots__ = ("failures", "in_flight", "state", "successes")

    def __init__(self) -> None:
        self.state = _CLOSED
        self.failures = 0  # consecutive, while closed
        self.in_flight = 0  # probes dispatched and not yet recorded, while half-open
        self.successes = 0  # successful probes, while half-open


class CircuitBreakers:
    """One breaker per worker, created on its first failure.

    ``record(worker, ok, now)`` after every attempt; ``dispatched(worker, now)`` when an attempt
    is sent (it matters only while half-open, where each dispatch takes a probe slot until its
    outcome is recorded). ``blocked(now)`` is the set a balancer must avoid: OPEN workers, and
    HALF_OPEN ones whose probe slots are all taken.

    *Stragglers.* Outcomes recorded while a breaker is OPEN come from attempts sent before it
    opened and are ignored. So are outcomes recorded while HALF_OPEN with no probe in flight:
    without a probe outstanding, the attempt was sent before the breaker went half-open. With a
    probe in flight, an old straggler cannot be told from the probe's answer (attempts carry no
    token) and is taken for it; that is the price of a surface without per-attempt handles.

    A failed probe re-opens the breaker for ``open_s`` (no growth: unlike outlier ejection, the
    probing itself limits the damage a flapping worker does). A dispatch past the probe limit
    (the caller ignored ``blocked``) is still counted, so slots are freed correctly as outcomes
    come back. Probes still in flight when the breaker closes report as ordinary closed-state
    outcomes.

    ``version`` changes whenever the blocked set does (not on every state change: HALF_OPEN with
    its slots full and OPEN are both just "blocked"). ``next_change_at`` is the earliest moment an
    OPEN breaker turns HALF_OPEN (``inf`` if none). ``on_change(worker, event, at)`` reports
    "open", "half_open" and "closed" with the transition time; ``forget`` is silent. ``opened``
    counts openings, re-openings after a failed probe included.
    """

    __slots__ = (
        "_blocked",
        "_breakers",
        "_open_until",
        "config",
        "next_change_at",
        "on_change",
        "opened",
        "version",
    )

    def __init__(self, config: BreakerConfig | None = None) -> None:
        self.config = config if config is not None else BreakerConfig()
        self.on_change: BreakerListener | None = None
        self.version = 0
        self.next_change_at = _INF
        self.opened = 0
        self._breakers: dict[WorkerId, _Breaker] = {}
        self._open_until: dict[WorkerId, float] = {}
        self._blocked: frozenset[WorkerId] = frozenset()

    # -- events -------------------------------------------------------------------------------
    def record(self, worker: WorkerId, ok: bool, now: float) -> None:
        """One attempt's outcome (``ok`` False: it counts against the worker)."""
        if now >= self.next_change_at:
            self._advance(now)
        b = self._breakers.get(worker)
        if b is None:
            if ok:
                return  # nothing to reset: no failure was ever recorded
            b = self._breakers[worker] = _Breaker()
        state = b.state
        if state is _CLOSED:
            if ok:
                b.failures = 0
            else:
                b.failures += 1
                if b.failures >= self.config.failure_threshold:
                    self._open(worker, b, now)
        elif state is _HALF_OPEN:
            if b.in_flight == 0:
                return  # no probe outstanding: a straggler from before it opened
            b.in_flight -= 1
            if not ok:
                self._open(worker, b, now)
                return
            b.successes += 1
            if b.successes >= self.config.close_after:
                b.state = _CLOSED
                b.failures = b.successes = b.in_flight = 0
                self._sync(worker, False)
                if self.on_change is not None:
                    self.on_change(worker, "closed", now)
            else:
                self._sync(worker, b.in_flight >= self.config.half_open_probes)
        # OPEN: a straggler sent before it opened; ignored

    def dispatched(self, worker: WorkerId, now: float) -> None:
        """An attempt was sent to ``worker``; while half-open it takes a probe slot."""
        if now >= self.next_change_at:
            self._advance(now)
        b = self._breakers.get(worker)
        if b is None or b.state is not _HALF_OPEN:
            return
        b.in_flight += 1
        if b.in_flight == self.config.half_open_probes:
            self._sync(worker, True)

    def cancelled(self, worker: WorkerId, now: float) -> None:
        """An attempt to ``worker`` was abandoned without an outcome (a sibling won, or the
        request ended): while half-open its probe slot is freed, or the breaker would stay
        half-open and blocked for good."""
        if now >= self.next_change_at:
            self._advance(now)
        b = self._breakers.get(worker)
        if b is None or b.state is not _HALF_OPEN or b.in_flight == 0:
            return
        b.in_flight -= 1
        self._sync(worker, b.in_flight >= self.config.half_open_probes)

    def forget(self, worker: WorkerId) -> None:
        """Drop ``worker``'s breaker (it left the fleet); silent to ``on_change``."""
        self._breakers.pop(worker, None)
        if self._open_until.pop(worker, None) is not None:
            self.next_change_at = min(self._open_until.values(), default=_INF)
        self._sync(worker, False)

    # -- queries ------------------------------------------------------------------------------
    def blocked(self, now: float) -> frozenset[WorkerId]:
        """Workers a balancer must not pick at ``now``: OPEN, or HALF_OPEN with no free slot."""
        if now >= self.next_change_at:
            self._advance(now)
        return self._blocked

    def state(self, worker: WorkerId, now: float) -> BreakerState:
        if now >= self.next_change_at:
            self._advance(now)
        b = self._breakers.get(worker)
        return _CLOSED if b is None else b.state

    # -- internals ----------------------------------------------------------------------------
    def _open(self, worker: WorkerId, b: _Breaker, now: float) -> None:
        b.state = _OPEN
        b.failures = b.successes = b.in_flight = 0
        until = now + self.config.open_s
        self._open_until[worker] = until
        if until < self.next_change_at:
            self.next_change_at = until
        self.opened += 1
        self._sync(worker, True)
        if self.on_change is not None:
            self.on_change(worker, "open", now)

    def _advance(self, now: float) -> None:
        """Turn every OPEN breaker whose ``open_s`` has elapsed HALF_OPEN, in time order."""
        due = sorted((until, w) for w, until in self._open_until.items() if until <= now)
        breakers = self._breakers
        for _, worker in due:
            del self._open_until[worker]
            b = breakers[worker]
            b.state = _HALF_OPEN
            b.in_flight = b.successes = 0
        self.next_change_at = min(self._open_until.values(), default=_INF)
        if due:
            # with no probe in flight a half-open breaker is open to one (probes >= 1)
            self._blocked = self._blocked.difference(w for _, w in due)
            self.version += 1
            if self.on_change is not None:
                for until, worker in due:
                    self.on_change(worker, "half_open", until)

    def _sync(self, worker: WorkerId, blocked: bool) -> None:
        """Make ``worker``'s membership of the blocked set ``blocked``; bump version if it moved."""
        if (worker in self._blocked) is blocked:
            return
        if blocked:
            self._blocked = self._blocked | {worker}
        else:
            self._blocked = self._blocked - {worker}
        self.version += 1
