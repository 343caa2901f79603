"""Passive outlier ejection at a gateway, after Envoy's consecutive-errors detector.

The registry learns about a worker from its heartbeats; a gateway learns from every attempt it
sends. A worker that still heartbeats but fails every request (a gray failure) stays HEALTHY in
the registry forever, and only the gateway's own outcomes can take it out of rotation. This
module does that the way Envoy's outlier detection does (``consecutive_5xx``): enough errors in a
row eject the worker from this gateway's balancing set for a while, longer each time it is
ejected again, and never more than a fraction of the fleet at once, so that a fleet-wide problem
(or a bug in the detector) cannot eject everything.

Like everything in ``labkit.core`` it is sans-I/O: callers pass ``now`` in, and time-driven
changes (an ejection expiring) are applied lazily by the next call that is given a ``now`` past
``next_change_at``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from labkit.core.registry import WorkerId

#: ``listener(worker, event, at)``: event is "ejected" or "returned"; ``at`` is when it happened.
OutlierListener = Callable[[WorkerId, str, float], None]

_INF = math.inf


@dataclass(frozen=True, slots=True)
class OutlierConfig:
    """Envoy's defaults: 5 consecutive errors, 30 s base ejection, 300 s at most, 10 % of hosts.

    ``max_ejection_s`` caps one ejection's length as in Envoy (min(base × k, max)); it may be set
    below ``base_ejection_s``, in which case every ejection lasts ``max_ejection_s``.
    """

    consecutive_errors: int = 5
    base_ejection_s: float = 30.0
    max_ejection_s: float = 300.0
    max_ejection_fraction: float = 0.1

    def __post_init__(self) -> None:
        n = self.consecutive_errors
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"consecutive_errors must be an integer >= 1, got {n!r}")
        for name in ("base_ejection_s", "max_ejection_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not 0 < value < _INF:
                raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        f = self.max_ejection_fraction
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0 <= f <= 1:
            raise ValueError(f"max_ejection_fraction must be in [0, 1], got {f!r}")


class _Host:
    """What the detector remembers about one worker."""

    __slots__ = ("consecutive", "multiplier", "returned_at")

    def __init__(self) -> None:
        self.consecutive = 0  # failures in a row since the last success or return
        self.multiplier = 0  # Envoy's eject_time_backoff, as it stood at ``returned_at``
        self.returned_at = -_INF  # when its last ejection expired


class OutlierDetector:
    """Consecutive-error ejection with Envoy's backoff, decay and ejection cap.

    ``record(worker, ok, now)`` is told every attempt's outcome. ``consecutive_errors`` failures
    in a row eject the worker for min(``base_ejection_s`` × k, ``max_ejection_s``), where k is
    the number of times it has been ejected, this one included, less the decay below. A success
    resets the count; so does an ejection and a return (Envoy resets the counters on unejection so
    that a few new errors cannot re-eject a host whose count was close to the trigger).

    *Stragglers.* Outcomes recorded for a worker while it is ejected (attempts sent before it was
    ejected) are ignored: they neither extend nor end the ejection, nor count after its return.

    *Decay.* For each full ``base_ejection_s`` a worker spends in service after returning, k drops
    by one (computed lazily at its next ejection). Envoy decrements the multiplier once per
    detection ``interval`` (10 s by default) that the host spends healthy; there is no interval
    sweep here, so the base ejection time stands in for it. As in Envoy, k stops growing once
    base × k ≥ max + base, so a host at the cap needs more than one clean period to come off it.

    *Cap.* An ejection goes ahead if no worker is ejected, or if (ejected + 1) ≤
    ``max_ejection_fraction`` × fleet, where fleet = max(``hosts``, workers seen so far). So 20
    hosts at 10 % allow 2 ejections, and any fleet allows 1: the brief's "Envoy ejects at least
    one host regardless". (Envoy's docs long said so; recent Envoy versions reportedly make that
    opt-in via ``always_eject_one_host``.) A fraction of 0 therefore still allows one ejection; to
    disable ejection, do not build a detector. When the cap refuses, ``refused_by_cap`` counts it
    and the worker stays in with its count still running, so each further consecutive failure
    tries again and it is ejected at the first failure after room frees up. Envoy instead resets
    the counter after a refused ejection, needing another full run of errors.

    *Fleet size.* ``hosts`` is settable; the caller keeps it at the size of the fleet the fraction
    refers to. Workers the detector has been told about count too, so an unset ``hosts`` (0)
    still gives a sensible cap once outcomes arrive.

    *Cheap on the hot path.* ``blocked(now)`` returns a cached frozenset; the set and ``version``
    change only on an ejection, a return, or ``forget``. ``next_change_at`` is the earliest
    ejection expiry (``inf`` if none), so a caller can tell whether anything can change before a
    given time. ``dispatched`` is a no-op, kept for a common surface with ``CircuitBreakers``.

    ``on_change(worker, event, at)``: "ejected" at the failure's time, "returned" at the expiry
    time (not the later moment the expiry was noticed), in time order. ``forget`` is silent.
    """

    __slots__ = (
        "_blocked",
        "_ejected",
        "_hosts",
        "config",
        "ejections",
        "hosts",
        "next_change_at",
        "on_change",
        "refused_by_cap",
        "version",
    )

    def __init__(self, config: OutlierConfig | None = None, hosts: int = 0) -> None:
        if isinstance(hosts, bool) or not isinstance(hosts, int) or hosts < 0:
            raise ValueError(f"hosts must be an integer >= 0, got {hosts!r}")
        self.config = config if config is not None else OutlierConfig()
        self.hosts = hosts
        self.on_change: OutlierListener | None = None
        self.version = 0
        self.next_change_at = _INF
        self.ejections = 0
        self.refused_by_cap = 0
        self._hosts: dict[WorkerId, _Host] = {}
        self._ejected: dict[WorkerId, float] = {}  # worker -> ejection expiry
        self._blocked: frozenset[WorkerId] = frozenset()

    # -- outcomes -----------------------------------------------------------------------------
    def record(self, worker: WorkerId, ok: bool, now: float) -> None:
        """One attempt's outcome (``ok`` False: it counts against the worker)."""
        if now >= self.next_change_at:
            self._expire(now)
        host = self._hosts.get(worker)
        if host is None:
            host = self._hosts[worker] = _Host()
        elif worker in self._ejected:
            return  # a straggler: sent before the ejection
        if ok:
            host.consecutive = 0
            return
        host.consecutive += 1
        if host.consecutive >= self.config.consecutive_errors:
            self._eject(worker, host, now)

    def dispatched(self, worker: WorkerId, now: float) -> None:
        """No-op: ejection needs no in-flight accounting (kept for a common surface)."""

    def cancelled(self, worker: WorkerId, now: float) -> None:
        """No-op: an abandoned attempt says nothing about its worker."""

    # -- queries ------------------------------------------------------------------------------
    def blocked(self, now: float) -> frozenset[WorkerId]:
        """The workers ejected at ``now`` (expired ejections are returned first)."""
        if now >= self.next_change_at:
            self._expire(now)
        return self._blocked

    def is_ejected(self, worker: WorkerId, now: float) -> bool:
        if now >= self.next_change_at:
            self._expire(now)
        return worker in self._ejected

    def ejected_until(self, worker: WorkerId) -> float | None:
        """When ``worker``'s current ejection expires (None if it is not ejected).

        Does not apply expiries: compare with ``now`` yourself, or call ``blocked`` first.
        """
        return self._ejected.get(worker)

    def forget(self, worker: WorkerId) -> None:
        """Drop everything known about ``worker`` (it left the fleet); silent to ``on_change``."""
        self._hosts.pop(worker, None)
        if self._ejected.pop(worker, None) is not None:
            self._blocked = frozenset(self._ejected)
            self.next_change_at = min(self._ejected.values(), default=_INF)
            self.version += 1

    # -- internals ----------------------------------------------------------------------------
    def _eject(self, worker: WorkerId, host: _Host, now: float) -> None:
        cfg = self.config
        active = len(self._ejected)
        if active:
            fleet = max(self.hosts, len(self._hosts))
            # the tolerance keeps e.g. 0.57 × 100 = 56.99999999999999 from refusing the 57th
            if active + 1 > cfg.max_ejection_fraction * fleet + 1e-9:
                self.refused_by_cap += 1
                return
        base = cfg.base_ejection_s
        k = host.multiplier
        if k:
            clean = now - host.returned_at
            if clean >= base:
                k = max(0, k - math.floor(clean / base))
        if k * base < cfg.max_ejection_s + base:
            k += 1
        host.multiplier = k
        host.consecutive = 0
        until = now + min(base * k, cfg.max_ejection_s)
        self._ejected[worker] = until
        self._blocked = frozenset(self._ejected)
        if until < self.next_change_at:
            self.next_change_at = until
        self.ejections += 1
        self.version += 1
        if self.on_change is not None:
            self.on_change(worker, "ejected", now)

    def _expire(self, now: float) -> None:
        expired = sorted((until, w) for w, until in self._ejected.items() if until <= now)
        hosts = self._hosts
        for until, worker in expired:
            del self._ejected[worker]
            host = hosts[worker]
            host.returned_at = until
            host.consecutive = 0
        self.next_change_at = min(self._ejected.values(), default=_INF)
        if expired:
            self._blocked = frozenset(self._ejected)
            self.version += 1
            if self.on_change is not None:
                for until, worker in expired:
                    self.on_change(worker, "returned", until)
