"""The policy core's configurations: frozen dataclasses, deliberately in a module of their own.

They are re-exported by ``labkit.core.balancing`` and ``labkit.core.gateway``, where they
belong. They live here so that the optional compiled build (``labkit._compiled``) leaves them
interpreted: a frozen dataclass compiled with mypyc cannot be unpickled (its ``__setattr__``
refuses the fields), and ``labkit sweep`` pickles scenarios to its Dask workers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from labkit.core.breaker import BreakerConfig
from labkit.core.outlier import OutlierConfig
from labkit.core.retry_budget import RetryBudgetConfig

DEFAULT_WEIGHTS = {"response_time": 0.4, "cpu": 0.3, "connections": 0.2, "errors": 0.1}


@dataclass(frozen=True, slots=True)
class BalancerConfig:
    strategy: str = "round_robin"
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    d: int = 2
    sample: int | None = None  # adaptive: score this many random workers (None = all)
    vnodes: int = 100  # consistent_hash
    bounded_load: float | None = None  # consistent_hash: c > 1, None = unbounded
    ewma_tau_s: float = 10.0  # peak_ewma decay


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
    attempt_timeout_s: float | None = None  # None: an attempt may take the whole deadline
    retry_budget: RetryBudgetConfig | None = None  # None: retries limited by attempts only
    hedge_after_s: float | None = None  # None: no hedged requests
    hedge_max_extra: int = 1
    outlier: OutlierConfig | None = None
    breaker: BreakerConfig | None = None
    panic_threshold: float = 0.5
