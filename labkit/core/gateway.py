"""Gateway admission and routing decisions: auth, rate limit, deadlines, retries, worker choice.

A driver asks, in order: ``admit`` (may the request in?), ``route`` (which worker?), and after
each attempt ends, ``after_attempt`` (finish with this detail, or retry after how long?). The
answers never depend on how the driver moves bytes, so the simulator and the live gateway share
them.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass

from labkit.core.balancing import Balancer, LocalLoad
from labkit.core.outcomes import RETRYABLE, Detail
from labkit.core.registry import RegistryView, WorkerId
from labkit.errors import NoWorkerAvailable


class UnknownAgentType(NoWorkerAvailable):
    """No worker ever registered this agent type (as opposed to: all of them are down)."""

    def __init__(self, agent_type: str) -> None:
        super().__init__(agent_type, reason="no worker has registered")


class TokenBucket:
    """Classic token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now

    def allow(self, now: float, cost: float = 1.0) -> bool:
        tokens = self._tokens + (now - self._last) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self._last = now
        if tokens >= cost:
            self._tokens = tokens - cost
            return True
        self._tokens = tokens
        return False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Up to ``max_attempts`` attempts in all; full-jitter exponential backoff between them.

    AWS's full jitter: sleep U(0, min(cap, base·2^(n-1))) before attempt n+1, which spreads
    retries of a synchronized failure instead of re-synchronising them.
    """

    max_attempts: int = 1
    base_s: float = 0.005
    cap_s: float = 0.2

    def backoff(self, attempts_made: int, rng: random.Random) -> float:
        # past 64 doublings any base exceeds any cap (and 2**n would overflow a float later)
        if attempts_made > 64:
            ceiling = self.cap_s
        else:
            ceiling = min(self.cap_s, self.base_s * (2 ** (attempts_made - 1)))
        return rng.random() * ceiling


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    overhead_s: float = 0.0
    timeout_s: float = 2.0
    retry: RetryPolicy = RetryPolicy()
    rate_limit_rps: float | None = None
    rate_limit_burst: float = 1.0
    api_keys: frozenset[str] | None = None  # None: no auth


class GatewayPolicy:
    """One gateway's decisions. Holds its own rate limiter, local load and balancer."""

    def __init__(
        self,
        name: str,
        config: GatewayConfig,
        view: RegistryView,
        balancer: Balancer,
        local: LocalLoad,
        rng: random.Random,
    ) -> None:
        self.name = name
        self.config = config
        self.view = view
        self.balancer = balancer
        self.local = local
        self.rng = rng
        self.bucket = (
            TokenBucket(config.rate_limit_rps, config.rate_limit_burst)
            if config.rate_limit_rps
            else None
        )
        self.retries = 0

    def admit(self, now: float, api_key: str | None = None) -> Detail | None:
        """None if the request may enter; otherwise the detail it is turned away with."""
        keys = self.config.api_keys
        if keys is not None and api_key not in keys:
            return Detail.UNAUTHORIZED
        if self.bucket is not None and not self.bucket.allow(now):
            return Detail.RATE_LIMITED
        return None

    def deadline(self, now: float) -> float:
        return now + self.config.timeout_s

    def route(
        self,
        agent_type: str,
        key: str,
        now: float,
        exclude: Collection[WorkerId] | None = None,
    ) -> WorkerId:
        """The worker for this attempt; raises ``NoWorkerAvailable``/``UnknownAgentType``."""
        pool = self.view.pool(agent_type, now)
        if pool is None:
            raise UnknownAgentType(agent_type)
        return self.balancer.pick(pool, key, now, exclude)

    def after_attempt(
        self, detail: Detail, attempts_made: int, now: float, deadline: float
    ) -> float | None:
        """Seconds to wait before retrying on another worker, or None to finish with ``detail``.

        A retry is worth it only for failures that say nothing about the request itself, while
        attempts remain, and if the backoff still ends before the deadline.
        """
        if detail not in RETRYABLE or attempts_made >= self.config.retry.max_attempts:
            return None
        delay = self.config.retry.backoff(attempts_made, self.rng)
        if now + delay >= deadline:
            return None
        self.retries += 1
        return delay
