"""Gateway admission and routing decisions: auth, rate limit, deadlines, retries, worker choice.

A driver asks, in order: ``admit`` (may the request in?), ``route`` (which worker?), and after
each attempt ends, ``attempt_ended`` (tell passive health checks) then ``after_attempt`` (finish
with this detail, or retry after how long?); ``hedge_allowed`` decides whether a slow attempt may
be doubled. The answers never depend on how the driver moves bytes, so the simulator and the live
gateway share them.

Which workers a gateway routes to, in order:

1. the registry view's healthy workers for the agent type (the registry's verdict, as stale as
   the view);
2. minus the workers its own passive checks block: ejected by outlier detection, or behind an
   open (or fully probed half-open) circuit breaker;
3. **panic**: when what is left is fewer than ``panic_threshold`` of the type's registered
   members, the gateway stops trusting health altogether and balances over *every* member, as
   Envoy's panic mode does. The reasoning: when most of a fleet looks unhealthy the checks are
   more likely wrong (or the survivors would be crushed by the whole load) than the fleet dead.
   The price is visible in the lab: in panic, requests go to workers that really are dead, and
   fail or time out there. ``panic_threshold: 0`` turns panic off; then an empty set fails fast
   with ``no_worker``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence

from labkit.core.balancing import Balancer, LocalLoad
from labkit.core.breaker import CircuitBreakers
from labkit.core.config import GatewayConfig
from labkit.core.config import RetryPolicy as RetryPolicy  # re-exported: it was defined here
from labkit.core.outcomes import FAILURE_SIGNALS, RETRYABLE, Detail
from labkit.core.outlier import OutlierDetector
from labkit.core.registry import Pool, Registry, RegistryView, StrongView, WorkerId
from labkit.core.retry_budget import RetryBudget
from labkit.errors import NoWorkerAvailable

#: how a gateway's passive checks treat a worker, least to most blocked (the codes of
#: ``GatewayPolicy.passive_states``)
GATEWAY_STATES = ("routable", "half_open", "ejected", "open")

#: ``on_event(worker, source, event, now)``: outlier/breaker transitions and panic changes
#: (panic events name the agent type in place of a worker)
GatewayListener = Callable[[str, str, str, float], None]


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
        self.hedges = 0
        self.budget_denied = 0
        self.panic_routes = 0
        #: routes to a worker the view thought healthy and the registry already knew was not
        self.misroutes = 0
        # a strong view *is* the registry: it cannot misroute, so it skips the check
        self._authority: Registry | None = (
            None if isinstance(view, StrongView) else getattr(view, "registry", None)
        )
        self.on_event: GatewayListener | None = None
        self.budget = RetryBudget(config.retry_budget) if config.retry_budget else None
        self.outlier = OutlierDetector(config.outlier) if config.outlier else None
        self.breakers = CircuitBreakers(config.breaker) if config.breaker else None
        if self.outlier is not None:
            self.outlier.on_change = self._relay("outlier")
        if self.breakers is not None:
            self.breakers.on_change = self._relay("breaker")
        self.guards: tuple[OutlierDetector | CircuitBreakers, ...] = tuple(
            g for g in (self.outlier, self.breakers) if g is not None
        )
        self._panic = config.panic_threshold
        self._in_panic: set[str] = set()
        # agent type -> (pool it was derived from, guard versions, routable pool, in panic)
        self._routable: dict[str, tuple[Pool, tuple[int, ...], Pool, bool]] = {}
        self._calm: dict[str, Pool] = {}  # pools known not to be in panic (no guards)
        self._last_calm: Pool | None = None  # the latest of them: one comparison per request

    def _relay(self, source: str) -> Callable[[WorkerId, str, float], None]:
        def relay(worker: WorkerId, event: str, now: float) -> None:
            if self.on_event is not None:
                self.on_event(worker, source, event, now)

        return relay

    def admit(self, now: float, api_key: str | None = None) -> Detail | None:
        """None if the request may enter; otherwise the detail it is turned away with."""
        keys = self.config.api_keys
        if keys is not None and api_key not in keys:
            return Detail.UNAUTHORIZED
        if self.bucket is not None and not self.bucket.allow(now):
            return Detail.RATE_LIMITED
        return None

    def request_started(self, now: float) -> None:
        """Count an admitted request towards the retry budget (drivers call it only if
        ``budget`` is set)."""
        if self.budget is not None:
            self.budget.on_request(now)

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
        seen = pool
        if self.guards or (
            self._panic > 0
            and pool is not self._last_calm
            and self._calm.get(pool.agent_type) is not pool
        ):
            pool = self._routable_pool(pool, now)
        worker = self.balancer.pick(pool, key, now, exclude)
        authority = self._authority
        if (
            authority is not None
            and authority.version != seen.version  # the cheap test first: usually equal
            and worker in seen.healthy_set
            and not authority.routable(worker)
        ):
            self.misroutes += 1
        return worker

    def _routable_pool(self, pool: Pool, now: float) -> Pool:
        """The pool minus blocked workers, or every member in panic (see module docstring).

        Rebuilt only when the view's pool or a guard's blocked set changed, so the hot path is
        a dict lookup and a comparison.
        """
        blocked: frozenset[WorkerId] = frozenset()
        versions: tuple[int, ...] = ()
        for guard in self.guards:
            b = guard.blocked(now)
            if b:
                blocked = blocked | b if blocked else b
            versions += (guard.version,)
        cached = self._routable.get(pool.agent_type)
        if cached is not None and cached[0] is pool and cached[1] == versions:
            if cached[3]:
                self.panic_routes += 1
            return cached[2]
        healthy = pool.healthy
        if blocked:
            healthy = tuple(w for w in healthy if w not in blocked)
        members = pool.members
        agent_type = pool.agent_type
        panic = self._panic > 0 and bool(members) and len(healthy) < self._panic * len(members)
        if panic:
            routable = Pool(agent_type, members, members, frozenset(members), pool.version)
            self.panic_routes += 1
        elif healthy is pool.healthy:
            routable = pool
        else:
            routable = Pool(agent_type, members, healthy, frozenset(healthy), pool.version)
        if panic != (agent_type in self._in_panic):
            if panic:
                self._in_panic.add(agent_type)
            else:
                self._in_panic.discard(agent_type)
            if self.on_event is not None:
                self.on_event(agent_type, "panic", "enter" if panic else "exit", now)
        self._routable[agent_type] = (pool, versions, routable, panic)
        if not self.guards:
            # without guards only the pool itself can change the verdict: skip the check until
            # the view hands out a different pool
            if panic:
                self._calm.pop(agent_type, None)
                if self._last_calm is not None and self._last_calm.agent_type == agent_type:
                    self._last_calm = None
            else:
                self._calm[agent_type] = pool
                self._last_calm = pool
        return routable

    def dispatched(self, worker: WorkerId, now: float) -> None:
        """An attempt left for ``worker`` (a half-open breaker counts its probes)."""
        for guard in self.guards:
            guard.dispatched(worker, now)

    def attempt_ended(self, worker: WorkerId, detail: Detail, now: float) -> None:
        """Feed one attempt's outcome to the passive health checks."""
        if self.guards:
            ok = detail not in FAILURE_SIGNALS
            for guard in self.guards:
                guard.record(worker, ok, now)

    def attempt_cancelled(self, worker: WorkerId, now: float) -> None:
        """An attempt was abandoned with no outcome (a hedge sibling won, or its request
        ended): nothing to learn about the worker, but a half-open probe slot comes back."""
        for guard in self.guards:
            guard.cancelled(worker, now)

    def blocked(self, now: float) -> frozenset[WorkerId]:
        """Workers this gateway's passive checks keep out of rotation now."""
        out: frozenset[WorkerId] = frozenset()
        for guard in self.guards:
            out |= guard.blocked(now)
        return out

    def passive_states(self, workers: Sequence[WorkerId], now: float) -> list[int]:
        """Per worker, how this gateway's passive checks treat it: an index into
        ``GATEWAY_STATES`` (an open breaker outranks an ejection, which outranks half-open)."""
        out = [0] * len(workers)
        if self.outlier is not None:
            ejected = self.outlier.blocked(now)
            if ejected:
                for i, w in enumerate(workers):
                    if w in ejected:
                        out[i] = 2
        if self.breakers is not None:
            state = self.breakers.state
            for i, w in enumerate(workers):
                st = state(w, now)
                if st == "open":
                    out[i] = 3
                elif st == "half_open" and out[i] < 1:
                    out[i] = 1
        return out

    def hedge_allowed(self, now: float) -> bool:
        """May a hedge (a second copy of a slow attempt) go out? It spends retry budget."""
        if self.budget is not None and not self.budget.try_spend(now):
            self.budget_denied += 1
            return False
        self.hedges += 1
        return True

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
        if self.budget is not None and not self.budget.try_spend(now):
            self.budget_denied += 1
            return None
        self.retries += 1
        return delay


def resilience_counts(gateways: Sequence[GatewayPolicy]) -> dict[str, int]:
    """What the gateways' failure handling did, summed over gateways (``summary.resilience``)."""
    return {
        "retries": sum(g.retries for g in gateways),
        "hedges": sum(g.hedges for g in gateways),
        "retry_budget_denied": sum(g.budget_denied for g in gateways),
        "panic_routes": sum(g.panic_routes for g in gateways),
        "misroutes": sum(g.misroutes for g in gateways),
        "ejections": sum(g.outlier.ejections for g in gateways if g.outlier is not None),
        "breaker_opens": sum(g.breakers.opened for g in gateways if g.breakers is not None),
    }
