"""Load-balancing strategies.

Every strategy answers one question — which healthy worker of this pool gets this request — and
raises ``NoWorkerAvailable`` when the pool has none. They read two kinds of information:

- *gateway-local* load (``LocalLoad``): requests this gateway has in flight per worker and the
  response times it observed. It is fresh, but each gateway sees only its own traffic.
- *reported* load (``LoadReport`` via the registry view): CPU, active requests, response-time
  EWMA and error rate as of the worker's last heartbeat — or older, under eventual consistency.

Definitions (Envoy's load-balancer docs are the model for stating them precisely):

``round_robin``  cycles through the healthy workers in registry order.
``random``       uniform over healthy workers.
``least_connections``  fewest gateway-local in-flight requests; ties broken by a random scan
                 start. O(n) per pick.
``weighted_response_time``  random pick with probability ∝ 1 / reported response-time EWMA
                 (workers with no report yet get the mean weight). O(n).
``cpu_based``    lowest reported CPU, ties random. Reports age, so under load every request of a
                 heartbeat interval goes to the same worker: the classic herd, kept on purpose.
``adaptive``     lowest score = w_rt·rt/max(rt) + w_cpu·cpu + w_conn·inflight/capacity +
                 w_err·error_rate; rt, cpu and errors come from reports, the connection ratio is
                 this gateway's in-flight count over the worker's reported capacity (its service
                 slots). That term is fresh and unbounded, which is what stops a worker with a
                 stale good report from drawing every request until the next heartbeat. Weights
                 default 0.4/0.3/0.2/0.1 and are normalised to sum 1. ``sample: k`` scores k
                 random workers instead of all.
``p2c``          power of d choices: d distinct random workers, fewest local in-flight wins
                 (Envoy's least_request).
``peak_ewma``    Finagle's: d random workers, cost = peak-EWMA latency × (in-flight + 1); the
                 estimate jumps to a slower sample and decays with τ; a worker with requests in
                 flight but no sample yet is penalised.
``consistent_hash``  agent-key affinity on a ring with ``vnodes`` points per registered worker;
                 unhealthy owners are skipped clockwise. With ``bounded_load: c`` a worker whose
                 in-flight count reaches ceil(c·(total+1)/n) is skipped too (Mirrokni et al.).

Retries pass ``exclude`` (workers already tried); when that leaves nobody, any healthy worker may
be picked again rather than failing a request that could still succeed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Sequence
from typing import ClassVar

from labkit.core.config import DEFAULT_WEIGHTS, BalancerConfig
from labkit.core.hashring import HashRing
from labkit.core.registry import LoadReport, Pool, RegistryView, WorkerId
from labkit.errors import NoWorkerAvailable

STRATEGIES = (
    "round_robin",
    "random",
    "least_connections",
    "weighted_response_time",
    "cpu_based",
    "adaptive",
    "p2c",
    "peak_ewma",
    "consistent_hash",
)


class LocalLoad:
    """What one gateway knows first-hand: its in-flight requests and observed latencies.

    ``track_latency=False`` skips the peak-EWMA latency estimates (``peak_ewma_ms`` then reads
    0): a simulator whose balancer never asks for them saves an ``exp`` per request.
    """

    __slots__ = ("_est_ms", "_stamp", "inflight", "tau_s", "total", "track_latency")

    def __init__(self, tau_s: float = 10.0, *, track_latency: bool = True) -> None:
        self.inflight: dict[WorkerId, int] = {}
        self.total = 0
        self.tau_s = tau_s
        self.track_latency = track_latency
        self._est_ms: dict[WorkerId, float] = {}
        self._stamp: dict[WorkerId, float] = {}

    def dispatched(self, worker_id: WorkerId) -> None:
        self.inflight[worker_id] = self.inflight.get(worker_id, 0) + 1
        self.total += 1

    def finished(self, worker_id: WorkerId, now: float, rtt_ms: float | None) -> None:
        """A request to ``worker_id`` ended; ``rtt_ms`` is None when no reply came back."""
        self.inflight[worker_id] -= 1
        self.total -= 1
        if rtt_ms is None or not self.track_latency:
            return
        est = self._est_ms.get(worker_id)
        if est is None:
            self._est_ms[worker_id] = rtt_ms
        else:
            decay = math.exp(-(now - self._stamp[worker_id]) / self.tau_s)
            current = est * decay  # what peak_ewma_ms reports right now
            if rtt_ms > current:
                self._est_ms[worker_id] = rtt_ms  # peak: jump straight up to a slower sample
            else:
                self._est_ms[worker_id] = current * decay + rtt_ms * (1.0 - decay)
        self._stamp[worker_id] = now

    def peak_ewma_ms(self, worker_id: WorkerId, now: float) -> float:
        est = self._est_ms.get(worker_id)
        if est is None:
            return 0.0
        return est * math.exp(-(now - self._stamp[worker_id]) / self.tau_s)

    def forget(self, worker_id: WorkerId) -> None:
        self._est_ms.pop(worker_id, None)
        self._stamp.pop(worker_id, None)


class Balancer:
    """Base: subclasses implement ``_pick`` over a non-empty candidate sequence."""

    name: ClassVar[str] = "base"

    def __init__(
        self, config: BalancerConfig, local: LocalLoad, view: RegistryView, rng: random.Random
    ) -> None:
        self.config = config
        self.local = local
        self.view = view
        self.rng = rng

    def pick(
        self,
        pool: Pool,
        key: str,
        now: float,
        exclude: Collection[WorkerId] | None = None,
    ) -> WorkerId:
        healthy = pool.healthy
        if not healthy:
            raise NoWorkerAvailable(pool.agent_type)
        if exclude:
            others = tuple(w for w in healthy if w not in exclude)
            if others:
                return self._pick(others, pool, key, now, exclude)
        return self._pick(healthy, pool, key, now, None)

    def _pick(
        self,
        candidates: Sequence[WorkerId],
        pool: Pool,
        key: str,
        now: float,
        exclude: Collection[WorkerId] | None,
    ) -> WorkerId:
        raise NotImplementedError


class RoundRobin(Balancer):
    name = "round_robin"

    def __init__(
        self, config: BalancerConfig, local: LocalLoad, view: RegistryView, rng: random.Random
    ) -> None:
        super().__init__(config, local, view, rng)
        self._next = 0

    def _pick(
        self,
        candidates: Sequence[WorkerId],
        pool: Pool,
        key: str,
        now: float,
        exclude: Collection[WorkerId] | None,
    ) -> WorkerId:
        i = self._next
        self._next = i + 1
        return candidates[i % len(candidates)]


class RandomChoice(Balancer):
    name = "random"

    def _pick(
        self,
        candidates: Sequence[WorkerId],
        pool: Pool,
        key: str,
        now: float,
        exclude: Collection[WorkerId] | None,
    ) -> WorkerId:
        return candidates[int(self.rng.random() * len(candidates))]


class LeastConnections(Balancer):
    name = "least_connections"

    def _pick(
        self,
        candidates: Sequence[WorkerId],
        pool: Pool,
        key: str,
        now: float,
        exclude: Collection[WorkerId] | None,
    ) -> WorkerId:
        inflight = self.local.inflight
        n = len(candidates)
        start = int(self.rng.random() * n)
        best = candidates[start]
        best_load = inflight.get(best, 0)
        if best_load == 0:
            return best
        for i in range(start + 1, start + n):
            w = candidates[i % n]
            load = inflight.get(w, 0)
            if load < best_load:
                best, best_load = w, load
                if load == 0:
                    break
        return best


class WeightedResponseTime(Balancer):
    name = "weighted_response_time"

    def _pick(
        self,
        candidates: Sequence[WorkerId],
        pool: Pool,
        key: str,
        now: float,
        exclude: Collection[WorkerId] | None,
    ) -> WorkerId:
        report = self.view.report
        rts = [report(w).rt_ewma_ms for w in candidates]
        known = [rt for rt in rts if rt > 0]
        fill = sum(known) / len(known) if known else 1.0
        weights = [1.0 / max(rt if rt > 0 else fill, 1e-9) for rt in rts]
        return self.rng.choices(candidates, weights=weights)[0]


class CpuBased(Balancer):
    name = "cpu_based"

    def _pick(
        self,
        candidates: Sequence[WorkerId],
        pool: Pool,
        key: str,
        now: float,
        exclude: Collection[WorkerId] | None,
    ) -> WorkerId:
        report = self.view.report
        n = len(candidates)
        start = int(self.rng.random() * n)
        best = candidates[start]
        best_cpu = report(best).cpu
        for i in range(start + 1, start + n):
            w = candidates[i % n]
            cpu = report(w).cpu
            if cpu < best_cpu:
                best, best_cpu = w, cpu
        return best


class Adaptive(Balancer):
    name = "adaptive"

    def __init__(
        self, config: BalancerConfig, local: LocalLoad, view: RegistryView, rng: random.Random
    ) -> None:
        super().__init__(config, local, view, rng)
        w = normalise_weights(self.config.weights)
        self._w = (w["response_time"], w["cpu"], w["connections"], w["errors"])

    def _pick(
        self,
        candidates: Sequence[WorkerId],
        pool: Pool,
        key: str,
        now: float,
        exclude: Collection[WorkerId] | None,
    ) -> WorkerId:
        k = self.config.sample
        if k is not None and k < len(candidates):
            candidates = self.rng.sample(candidates, k)
        report = self.view.report
        inflight = self.local.inflight
        reports: list[LoadReport] = [report(w) for w in candidates]
        max_rt = max(r.rt_ewma_ms for r in reports) or 1.0
        w_rt, w_cpu, w_conn, w_err = self._w
        n = len(candidates)
        start = int(self.rng.random() * n)
        best_i, best_score = start, math.inf
        for j in range(start, start + n):
            i = j % n
            r = reports[i]
            score = (
                w_rt * r.rt_ewma_ms / max_rt
                + w_cpu * r.cpu
                + w_conn * inflight.get(candidates[i], 0) / r.capacity
                + w_err * r.error_rate
            )
            if score < best_score:
                best_i, best_score = i, score
        return candidates[best_i]


def normalise_weights(weights: dict[str, float]) -> dict[str, float]:
    """Adaptive weights scaled to sum 1 (a missing weight counts as 0)."""
    unknown = set(weights) - set(DEFAULT_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown adaptive weight(s): {', '.join(sorted(unknown))}")
    full = {k: float(weights.get(k, 0.0)) for k in DEFAULT_WEIGHTS}
    if any(v < 0 or not math.isfinite(v) for v in full.values()):
        raise ValueError("adaptive weights must be finite and >= 0")
    total = sum(full.values())
    if total <= 0:
        raise ValueError("adaptive weights must not all be 0")
    return {k: v / total for k, v in full.items()}


def _sample_distinct(rng: random.Random, candidates: Sequence[WorkerId], d: int) -> list[WorkerId]:
    n = len(candidates)
    if d >= n:
        return list(candidates)
    if d == 2:
        i = int(rng.random() * n)
        j = int(rng.random() * (n - 1))
        if j >= i:
            j += 1
        return [candidates[i], candidates[j]]
    return rng.sample(candidates, d)


class PowerOfDChoices(Balancer):
    name = "p2c"

    def pick(
        self,
        pool: Pool,
        key: str,
        now: float,
        exclude: Collection[WorkerId] | None = None,
    ) -> WorkerId:
        """``Balancer.pick`` with the common case (d = 2, nothing excluded) inlined: it runs
        once per request, and the simulator's speed is mostly the number of calls it makes."""
        healthy = pool.healthy
        n = len(healthy)
        if n > 1 and not exclude and self.config.d == 2:
            rnd = self.rng.random
            i = int(rnd() * n)
            j = int(rnd() * (n - 1))
            if j >= i:
                j += 1
            a, b = healthy[i], healthy[j]
            inflight = self.local.inflight
            return b if inflight.get(b, 0) < inflight.get(a, 0) else a
        return Balancer.pick(self, pool, key, now, exclude)

    def _pick(
        self,
        candidates: Sequence[WorkerId],
        pool: Pool,
        key: str,
        now: float,
        exclude: Collection[WorkerId] | None,
    ) -> WorkerId:
        inflight = self.local.inflight
        n = len(candidates)
        if self.config.d == 2 and n > 1:  # the common case, inlined: it runs per request
            rnd = self.rng.random
            i = int(rnd() * n)
            j = int(rnd() * (n - 1))
            if j >= i:
                j += 1
            a, b = candidates[i], candidates[j]
            return b if inflight.get(b, 0) < inflight.get(a, 0) else a
        choice = _sample_distinct(self.rng, candidates, self.config.d)
        best = choice[0]
        best_load = inflight.get(best, 0)
        for w in choice[1:]:
            load = inflight.get(w, 0)
            if load < best_load:
                best, best_load = w, load
        return best


class PeakEwma(Balancer):
    name = "peak_ewma"
    #: cost of a worker with requests in flight but no latency sample yet (Finagle's penalty)
    PENALTY_MS: ClassVar[float] = 1e6

    def _cost(self, w: WorkerId, now: float) -> float:
        pending = self.local.inflight.get(w, 0)
        est = self.local.peak_ewma_ms(w, now)
        if est == 0.0 and pending:
            return self.PENALTY_MS + pending
        return est * (pending + 1)

    def _pick(
        self,
        candidates: Sequence[WorkerId],
        pool: Pool,
        key: str,
        now: float,
        exclude: Collection[WorkerId] | None,
    ) -> WorkerId:
        choice = _sample_distinct(self.rng, candidates, self.config.d)
        return min(choice, key=lambda w: self._cost(w, now))


class ConsistentHash(Balancer):
    name = "consistent_hash"

    def __init__(
        self, config: BalancerConfig, local: LocalLoad, view: RegistryView, rng: random.Random
    ) -> None:
        super().__init__(config, local, view, rng)
        self._rings: dict[str, tuple[tuple[WorkerId, ...], HashRing]] = {}

    def ring(self, pool: Pool) -> HashRing:
        cached = self._rings.get(pool.agent_type)
        if cached is None or cached[0] != pool.members:
            cached = (pool.members, HashRing(pool.members, self.config.vnodes))
            self._rings[pool.agent_type] = cached
        return cached[1]

    def _pick(
        self,
        candidates: Sequence[WorkerId],
        pool: Pool,
        key: str,
        now: float,
        exclude: Collection[WorkerId] | None,
    ) -> WorkerId:
        ring = self.ring(pool)
        healthy = pool.healthy_set
        c = self.config.bounded_load
        cap = math.inf
        if c is not None:
            cap = float(math.ceil(c * (self.local.total + 1) / len(candidates)))
        inflight = self.local.inflight
        fallback: WorkerId | None = None
        for w in ring.walk(key):
            if w not in healthy or (exclude and w in exclude):
                continue
            if inflight.get(w, 0) < cap:
                return w  # type: ignore[return-value]
            if fallback is None:
                fallback = w  # type: ignore[assignment]
        if fallback is not None:
            return fallback
        return candidates[0]


_CLASSES: dict[str, Callable[..., Balancer]] = {
    cls.name: cls
    for cls in (
        RoundRobin,
        RandomChoice,
        LeastConnections,
        WeightedResponseTime,
        CpuBased,
        Adaptive,
        PowerOfDChoices,
        PeakEwma,
        ConsistentHash,
    )
}
assert tuple(_CLASSES) == STRATEGIES


def make_balancer(
    config: BalancerConfig, local: LocalLoad, view: RegistryView, rng: random.Random
) -> Balancer:
    try:
        cls = _CLASSES[config.strategy]
    except KeyError:
        raise ValueError(
            f"unknown strategy {config.strategy!r} (known: {', '.join(STRATEGIES)})"
        ) from None
    return cls(config, local, view, rng)
