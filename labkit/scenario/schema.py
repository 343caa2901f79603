"""The scenario: one experiment described once, read by the CLI, notebooks, sweeps and live mode.

Every key is documented here with its default. A section left out means "off" (no retries, no
rate limit, no network delay) or the default stated below. Unknown keys are errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.core.alerts import AlertConfig
from labkit.core.balancing import DEFAULT_WEIGHTS, STRATEGIES, BalancerConfig, normalise_weights
from labkit.core.batching import BatchingConfig
from labkit.core.breaker import BreakerConfig
from labkit.core.detectors import DETECTORS
from labkit.core.faults import FaultSpec
from labkit.core.gateway import GatewayConfig, RetryPolicy
from labkit.core.outlier import OutlierConfig
from labkit.core.retry_budget import RetryBudgetConfig
from labkit.core.slo import RecoveryConfig, SloConfig
from labkit.distributions import Distribution, parse_distribution
from labkit.errors import ScenarioError
from labkit.scenario.consistency import (
    CacheSpec,
    StateSpec,
    parse_batching,
    parse_cache,
    parse_state,
)
from labkit.scenario.failure import parse_alerts, parse_faults, parse_recovery, parse_slo
from labkit.scenario.section import Section

ARRIVAL_PROCESSES = ("poisson", "mmpp", "ramp", "diurnal", "closed")
CONSISTENCY_MODELS = ("strong", "eventual", "watch")
DEFAULT_TOPIC = "events"


@dataclass(frozen=True)
class WorkersConfig:
    count: int = 10
    agent_types: tuple[str, ...] = ("agent",)
    concurrency: int = 1  # requests served at once per worker
    queue_limit: int | None = None  # waiting requests beyond the served ones; None = unbounded
    service_time: Distribution = field(
        default_factory=lambda: parse_distribution({"dist": "exponential", "mean_ms": 10})
    )
    speed: Distribution = field(
        default_factory=lambda: parse_distribution({"dist": "constant", "value": 1}, unit="")
    )


@dataclass(frozen=True)
class NetworkConfig:
    #: one-way gateway <-> worker delay, drawn per hop; None = zero
    latency: Distribution | None = None


@dataclass(frozen=True)
class ArrivalConfig:
    process: str = "poisson"
    rate_rps: float = 100.0  # poisson
    rates_rps: tuple[float, ...] = ()  # mmpp: rate in each state
    mean_durations_s: tuple[float, ...] = ()  # mmpp: mean stay in each state (exponential)
    from_rps: float = 0.0  # ramp: linear from..to over the run
    to_rps: float = 0.0
    mean_rps: float = 0.0  # diurnal: mean·(1 + amplitude·sin(2πt/period))
    amplitude: float = 0.0
    period_s: float = 0.0
    clients: int = 0  # closed loop: clients that each wait for a reply, think, send again
    think_time: Distribution | None = None

    @property
    def peak_rps(self) -> float:
        """Highest instantaneous rate (for thinning and sizing); 0 for a closed loop."""
        if self.process == "poisson":
            return self.rate_rps
        if self.process == "mmpp":
            return max(self.rates_rps)
        if self.process == "ramp":
            return max(self.from_rps, self.to_rps)
        if self.process == "diurnal":
            return self.mean_rps * (1 + self.amplitude)
        return 0.0


@dataclass(frozen=True)
class KeysConfig:
    count: int = 1000
    zipf_s: float = 0.0  # 0 = uniform over keys


@dataclass(frozen=True)
class WorkloadConfig:
    arrival: ArrivalConfig = field(default_factory=ArrivalConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    publish_fraction: float = 0.0
    #: topic types publishes go to (uniformly); default: every type some subscription names
    topics: tuple[str, ...] = ()
    #: share of RPCs per target agent type; default uniform over workers.agent_types
    target_types: dict[str, float] | None = None
    #: fraction of requests sent without a valid API key (exercises gateway auth)
    unauthorized_fraction: float = 0.0


@dataclass(frozen=True)
class SubscriptionConfig:
    kind: str  # "type" or "prefix"
    topic: str  # topic_type or topic_type_prefix
    agent_type: str


@dataclass(frozen=True)
class GatewaySpec:
    count: int = 1
    overhead_ms: float = 0.0
    timeout_ms: float = 30_000.0
    max_attempts: int = 1  # retries.max_attempts (1 = no retries)
    retry_base_ms: float = 5.0
    retry_cap_ms: float = 200.0
    rate_limit_rps: float | None = None  # per gateway
    rate_limit_burst: float = 1.0
    api_keys: tuple[str, ...] | None = None
    #: per-attempt timeout (Envoy's per_try_timeout); None = an attempt may use the whole deadline
    attempt_timeout_ms: float | None = None
    retry_budget: RetryBudgetConfig | None = None
    hedge_after_ms: float | None = None  # None = no hedged requests
    hedge_max_extra: int = 1
    outlier: OutlierConfig | None = None
    breaker: BreakerConfig | None = None
    panic_threshold: float = 0.5

    def core_config(self) -> GatewayConfig:
        """The policy core's gateway config (what both drivers enforce), in seconds."""
        return GatewayConfig(
            overhead_s=self.overhead_ms / 1000,
            timeout_s=self.timeout_ms / 1000,
            retry=RetryPolicy(
                self.max_attempts, self.retry_base_ms / 1000, self.retry_cap_ms / 1000
            ),
            rate_limit_rps=self.rate_limit_rps,
            rate_limit_burst=self.rate_limit_burst,
            api_keys=frozenset(self.api_keys) if self.api_keys else None,
            attempt_timeout_s=self.attempt_timeout_ms / 1000 if self.attempt_timeout_ms else None,
            retry_budget=self.retry_budget,
            hedge_after_s=self.hedge_after_ms / 1000 if self.hedge_after_ms else None,
            hedge_max_extra=self.hedge_max_extra,
            outlier=self.outlier,
            breaker=self.breaker,
            panic_threshold=self.panic_threshold,
        )


@dataclass(frozen=True)
class RegistrySpec:
    heartbeat_interval_ms: float = 1000.0
    failure_timeout_ms: float = 3000.0
    suspect_timeout_ms: float = 2000.0
    check_interval_ms: float = 500.0
    consistency: str = "eventual"
    cache_ttl_ms: float = 2000.0
    lookup_cost_ms: float = 1.0  # strong only: a registry round trip per lookup
    #: watch only: how long a pushed membership/health update takes to reach a gateway
    watch_delay: Distribution | None = None
    detector: str = "timeout"
    #: phi_accrual only: threshold, suspect_threshold, window, min_std_ms, acceptable_pause_ms
    phi: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    duration_s: float
    warmup_s: float
    workers: WorkersConfig
    network: NetworkConfig
    workload: WorkloadConfig
    gateway: GatewaySpec
    balancer: BalancerConfig
    registry: RegistrySpec
    subscriptions: tuple[SubscriptionConfig, ...]
    faults: tuple[FaultSpec, ...] = ()
    slo: SloConfig = field(default_factory=SloConfig)
    alerts: AlertConfig | None = None
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    state: StateSpec | None = None
    cache: CacheSpec | None = None
    batching: BatchingConfig | None = None
    description: str = ""
    source: str | None = None
    #: the normalised scenario (defaults filled in) as plain data, for summary.json
    resolved: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return self.resolved


def parse_scenario(
    data: Any, *, source: str | None = None, base_dir: Path | None = None
) -> Scenario:
    """Validate plain data into a ``Scenario``; raises ``ScenarioError`` naming the key path."""
    root = Section(data, "", base_dir)
    name = root.string("name")
    description = root.string("description", "")
    seed = root.number("seed", 0, min=0, integer=True)
    duration_s = root.number("duration_s", min=0, min_exclusive=True)
    warmup_s = root.number("warmup_s", 0.0, min=0)
    if warmup_s >= duration_s:
        raise ScenarioError(
            f"must be shorter than duration_s ({duration_s:g}), got {warmup_s:g}", path="warmup_s"
        )
    resolved: dict[str, Any] = {}
    workers = _workers(root.section("workers"), resolved)
    network = _network(root.section("network"), resolved)
    subscriptions = _subscriptions(root.raw_value("subscriptions"), workers, resolved)
    workload = _workload(root.section("workload"), workers, subscriptions, resolved)
    gateway = _gateway(root.section("gateway"), resolved)
    balancer = _balancer(root.section("balancer"), resolved)
    registry = _registry(root.section("registry"), resolved)
    faults = parse_faults(root.raw_value("faults"), workers.count, duration_s, resolved)
    slo = parse_slo(root.section("slo"), resolved)
    alerts = parse_alerts(root.section("alerts"), root.has("alerts"), resolved)
    recovery = parse_recovery(root.section("recovery"), resolved)
    state = parse_state(root.section("state"), root.has("state"), resolved)
    cache = parse_cache(root.section("cache"), root.has("cache"), duration_s, resolved)
    batching = parse_batching(root.section("batching"), root.has("batching"), resolved)
    top = root.done(
        allowed_hint=[
            "name",
            "description",
            "seed",
            "duration_s",
            "warmup_s",
            "workers",
            "network",
            "workload",
            "gateway",
            "balancer",
            "registry",
            "subscriptions",
            "faults",
            "slo",
            "alerts",
            "recovery",
            "state",
            "cache",
            "batching",
        ]
    )
    return Scenario(
        name=name,
        seed=seed,
        duration_s=duration_s,
        warmup_s=warmup_s,
        workers=workers,
        network=network,
        workload=workload,
        gateway=gateway,
        balancer=balancer,
        registry=registry,
        subscriptions=subscriptions,
        faults=faults,
        slo=slo,
        alerts=alerts,
        recovery=recovery,
        state=state,
        cache=cache,
        batching=batching,
        description=description,
        source=source,
        resolved={**top, **resolved},
    )


def _workers(s: Section, out: dict[str, Any]) -> WorkersConfig:
    cfg = WorkersConfig(
        count=s.number("count", 10, min=1, integer=True),
        agent_types=s.string_list("agent_types", ["agent"]),
        concurrency=s.number("concurrency", 1, min=1, integer=True),
        queue_limit=s.number("queue_limit", None, min=0, integer=True),
        service_time=s.distribution("service_time", {"dist": "exponential", "mean_ms": 10}),
        speed=s.distribution("speed", {"dist": "constant", "value": 1}, unit=""),
    )
    if cfg.speed.mean <= 0:
        raise ScenarioError("speed factors must be > 0", path=s.key("speed"))
    out["workers"] = s.done()
    return cfg


def _network(s: Section, out: dict[str, Any]) -> NetworkConfig:
    cfg = NetworkConfig(latency=s.distribution("latency", None))
    out["network"] = s.done()
    return cfg


def _arrival(s: Section) -> ArrivalConfig:
    process = s.string("process", "poisson", choices=ARRIVAL_PROCESSES)
    if process == "poisson":
        return ArrivalConfig(process, rate_rps=s.number("rate_rps", min=0, min_exclusive=True))
    if process == "mmpp":
        rates = _number_list(s, "rates_rps", min_value=0.0)
        durations = _number_list(s, "mean_durations_s", min_value=0.0, exclusive=True)
        if len(rates) != len(durations) or len(rates) < 2:
            raise ScenarioError(
                "rates_rps and mean_durations_s need the same length, at least 2 states",
                path=s.key("rates_rps"),
            )
        if max(rates) <= 0:
            raise ScenarioError("at least one state needs a rate > 0", path=s.key("rates_rps"))
        return ArrivalConfig(process, rates_rps=rates, mean_durations_s=durations)
    if process == "ramp":
        lo = s.number("from_rps", min=0)
        hi = s.number("to_rps", min=0)
        if max(lo, hi) <= 0:
            raise ScenarioError("from_rps or to_rps must be > 0", path=s.key("to_rps"))
        return ArrivalConfig(process, from_rps=lo, to_rps=hi)
    if process == "diurnal":
        return ArrivalConfig(
            process,
            mean_rps=s.number("mean_rps", min=0, min_exclusive=True),
            amplitude=s.number("amplitude", 0.5, min=0, max=1),
            period_s=s.number("period_s", min=0, min_exclusive=True),
        )
    return ArrivalConfig(
        process,
        clients=s.number("clients", min=1, integer=True),
        think_time=s.distribution("think_time", {"dist": "constant", "value_ms": 0}),
    )


def _number_list(
    s: Section, name: str, *, min_value: float, exclusive: bool = False
) -> tuple[float, ...]:
    raw = s.raw_value(name)
    if not isinstance(raw, list) or not raw:
        raise ScenarioError("must be a non-empty list of numbers", path=s.key(name))
    values = []
    for i, v in enumerate(raw):
        bad = isinstance(v, bool) or not isinstance(v, int | float)
        if bad or v < min_value or (exclusive and v == min_value):
            op = ">" if exclusive else ">="
            raise ScenarioError(
                f"must be a number {op} {min_value:g}, got {v!r}", path=f"{s.key(name)}.{i}"
            )
        values.append(float(v))
    s.resolved[name] = values
    return tuple(values)


def _workload(
    s: Section,
    workers: WorkersConfig,
    subscriptions: tuple[SubscriptionConfig, ...],
    out: dict[str, Any],
) -> WorkloadConfig:
    arrival_section = s.section("arrival")
    arrival = _arrival(arrival_section)
    keys_section = s.section("keys")
    keys = KeysConfig(
        count=keys_section.number("count", 1000, min=1, integer=True),
        zipf_s=keys_section.number("zipf_s", 0.0, min=0),
    )
    publish_fraction = s.number("publish_fraction", 0.0, min=0, max=1)
    topics = s.string_list("topics", None)
    subscribed = {sub.topic for sub in subscriptions if sub.kind == "type"}
    if topics is None:
        topics = tuple(sorted(subscribed)) if subscriptions else ()
        s.resolved["topics"] = list(topics)
    if publish_fraction > 0 and not topics:
        raise ScenarioError(
            "publish_fraction > 0 needs topics to publish to (workload.topics or subscriptions)",
            path=s.key("publish_fraction"),
        )
    target_types = _target_types(s, workers)
    unauthorized = s.number("unauthorized_fraction", 0.0, min=0, max=1)
    out["workload"] = {
        "arrival": arrival_section.done(),
        "keys": keys_section.done(),
        **s.done(),
    }
    return WorkloadConfig(arrival, keys, publish_fraction, topics, target_types, unauthorized)


def _target_types(s: Section, workers: WorkersConfig) -> dict[str, float] | None:
    raw = s.raw_value("target_types")
    if raw is None:
        s.resolved["target_types"] = None
        return None
    path = s.key("target_types")
    if not isinstance(raw, dict) or not raw:
        raise ScenarioError("must be a mapping of agent type to share", path=path)
    shares: dict[str, float] = {}
    for agent_type, share in raw.items():
        if agent_type not in workers.agent_types:
            raise ScenarioError(
                f"no worker hosts agent type {agent_type!r} "
                f"(workers.agent_types: {', '.join(workers.agent_types)})",
                path=f"{path}.{agent_type}",
            )
        if isinstance(share, bool) or not isinstance(share, int | float) or share < 0:
            raise ScenarioError(
                f"must be a number >= 0, got {share!r}", path=f"{path}.{agent_type}"
            )
        shares[agent_type] = float(share)
    total = sum(shares.values())
    if total <= 0:
        raise ScenarioError("shares must not all be 0", path=path)
    shares = {k: v / total for k, v in shares.items()}
    s.resolved["target_types"] = shares
    return shares


def _subscriptions(
    raw: Any, workers: WorkersConfig, out: dict[str, Any]
) -> tuple[SubscriptionConfig, ...]:
    if raw is None:
        # AutoGen agents typically subscribe their type to a shared topic; by default every
        # agent type subscribes to topic type "events", so publishes fan out to each type once.
        subs = tuple(SubscriptionConfig("type", DEFAULT_TOPIC, t) for t in workers.agent_types)
        out["subscriptions"] = [
            {"agent_type": t, "topic_type": DEFAULT_TOPIC} for t in workers.agent_types
        ]
        return subs
    if not isinstance(raw, list):
        raise ScenarioError("must be a list of subscriptions", path="subscriptions")
    subs = []
    resolved = []
    for i, item in enumerate(raw):
        s = Section(item, f"subscriptions.{i}")
        agent_type = s.string("agent_type")
        if agent_type not in workers.agent_types:
            raise ScenarioError(
                f"no worker hosts agent type {agent_type!r} "
                f"(workers.agent_types: {', '.join(workers.agent_types)})",
                path=s.key("agent_type"),
            )
        if s.has("topic_type") == s.has("topic_type_prefix"):
            raise ScenarioError(
                "give exactly one of topic_type (TypeSubscription) or topic_type_prefix "
                "(TypePrefixSubscription)",
                path=s.path,
            )
        if s.has("topic_type"):
            subs.append(SubscriptionConfig("type", s.string("topic_type"), agent_type))
        else:
            subs.append(SubscriptionConfig("prefix", s.string("topic_type_prefix"), agent_type))
        resolved.append(s.done(allowed_hint=["agent_type", "topic_type", "topic_type_prefix"]))
    out["subscriptions"] = resolved
    return tuple(subs)


def _gateway(s: Section, out: dict[str, Any]) -> GatewaySpec:
    count = s.number("count", 1, min=1, integer=True)
    overhead_ms = s.number("overhead_ms", 0.0, min=0)
    timeout_ms = s.number("timeout_ms", 30_000.0, min=0, min_exclusive=True)
    retries = s.section("retries")
    max_attempts = retries.number("max_attempts", 1, min=1, integer=True)
    base_ms = retries.number("base_ms", 5.0, min=0)
    cap_ms = retries.number("cap_ms", 200.0, min=0)
    attempt_timeout_ms = retries.number("attempt_timeout_ms", None, min=0, min_exclusive=True)
    budget = None
    if retries.has("budget"):
        b = retries.section("budget")
        budget = RetryBudgetConfig(
            ratio=b.number("ratio", 0.2, min=0),
            min_per_s=b.number("min_per_s", 10.0, min=0),
            window_s=b.number("window_s", 10.0, min=0, min_exclusive=True),
        )
        budget_resolved = b.done()
    else:
        retries.raw_value("budget")
        budget_resolved = None
    hedge_after_ms = None
    hedge_max = 1
    hedging_resolved = None
    if s.has("hedging"):
        h = s.section("hedging")
        hedge_after_ms = h.number("after_ms", min=0, min_exclusive=True)
        hedge_max = h.number("max_extra", 1, min=1, integer=True)
        hedging_resolved = h.done()
    else:
        s.raw_value("hedging")
    outlier = None
    outlier_resolved = None
    if s.has("outlier_detection"):
        o = s.section("outlier_detection")
        outlier = OutlierConfig(
            consecutive_errors=o.number("consecutive_errors", 5, min=1, integer=True),
            base_ejection_s=o.number("base_ejection_s", 30.0, min=0, min_exclusive=True),
            max_ejection_s=o.number("max_ejection_s", 300.0, min=0, min_exclusive=True),
            max_ejection_fraction=o.number("max_ejection_percent", 10.0, min=0, max=100) / 100,
        )
        outlier_resolved = o.done()
    else:
        s.raw_value("outlier_detection")
    breaker = None
    breaker_resolved = None
    if s.has("circuit_breaker"):
        c = s.section("circuit_breaker")
        breaker = BreakerConfig(
            failure_threshold=c.number("failure_threshold", 5, min=1, integer=True),
            open_s=c.number("open_s", 10.0, min=0, min_exclusive=True),
            half_open_probes=c.number("half_open_probes", 1, min=1, integer=True),
            close_after=c.number("close_after", 2, min=1, integer=True),
        )
        breaker_resolved = c.done()
    else:
        s.raw_value("circuit_breaker")
    panic_threshold = s.number("panic_threshold", 0.5, min=0, max=1)
    rate = s.section("rate_limit")
    rate_rps = rate.number("rate_rps", None, min=0, min_exclusive=True)
    burst = rate.number("burst", max(1.0, (rate_rps or 0) / 10), min=1)
    api_keys = s.string_list("api_keys", None)
    out["gateway"] = {
        **s.done(),
        "retries": {**retries.done(), "budget": budget_resolved},
        "rate_limit": rate.done() if rate_rps is not None else None,
        "hedging": hedging_resolved,
        "outlier_detection": outlier_resolved,
        "circuit_breaker": breaker_resolved,
    }
    return GatewaySpec(
        count,
        overhead_ms,
        timeout_ms,
        max_attempts,
        base_ms,
        cap_ms,
        rate_rps,
        burst,
        api_keys,
        attempt_timeout_ms=attempt_timeout_ms,
        retry_budget=budget,
        hedge_after_ms=hedge_after_ms,
        hedge_max_extra=hedge_max,
        outlier=outlier,
        breaker=breaker,
        panic_threshold=panic_threshold,
    )


def _balancer(s: Section, out: dict[str, Any]) -> BalancerConfig:
    strategy = s.string("strategy", "round_robin", choices=STRATEGIES)
    weights_raw = s.raw_value("weights")
    weights = dict(DEFAULT_WEIGHTS)
    if weights_raw is not None:
        if not isinstance(weights_raw, dict):
            raise ScenarioError("must be a mapping of weight name to number", path=s.key("weights"))
        for k, v in weights_raw.items():
            if k not in DEFAULT_WEIGHTS:
                raise ScenarioError(
                    f"unknown weight {k!r} (known: {', '.join(DEFAULT_WEIGHTS)})",
                    path=f"{s.key('weights')}.{k}",
                )
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ScenarioError(
                    f"must be a number >= 0, got {v!r}", path=f"{s.key('weights')}.{k}"
                )
        weights = {k: float(weights_raw.get(k, 0.0)) for k in DEFAULT_WEIGHTS}
        try:
            weights = normalise_weights(weights)
        except ValueError as exc:
            raise ScenarioError(str(exc), path=s.key("weights")) from None
    s.resolved["weights"] = weights
    bounded = s.number("bounded_load", None, min=1, min_exclusive=True)
    cfg = BalancerConfig(
        strategy=strategy,
        weights=weights,
        d=s.number("d", 2, min=1, integer=True),
        sample=s.number("sample", None, min=1, integer=True),
        vnodes=s.number("vnodes", 100, min=1, integer=True),
        bounded_load=bounded,
        ewma_tau_s=s.number("ewma_tau_s", 10.0, min=0, min_exclusive=True),
    )
    out["balancer"] = s.done()
    return cfg


def _registry(s: Section, out: dict[str, Any]) -> RegistrySpec:
    interval = s.number("heartbeat_interval_ms", 1000.0, min=0, min_exclusive=True)
    timeout = s.number("failure_timeout_ms", 3 * interval, min=0, min_exclusive=True)
    if timeout <= interval:
        raise ScenarioError(
            f"must be longer than heartbeat_interval_ms ({interval:g}), got {timeout:g}",
            path=s.key("failure_timeout_ms"),
        )
    suspect = s.number("suspect_timeout_ms", min(2 * interval, timeout), min=0, min_exclusive=True)
    if suspect > timeout:
        raise ScenarioError(
            f"must not exceed failure_timeout_ms ({timeout:g}), got {suspect:g}",
            path=s.key("suspect_timeout_ms"),
        )
    cfg = RegistrySpec(
        heartbeat_interval_ms=interval,
        failure_timeout_ms=timeout,
        suspect_timeout_ms=suspect,
        check_interval_ms=s.number("check_interval_ms", interval / 2, min=0, min_exclusive=True),
        consistency=s.string("consistency", "eventual", choices=CONSISTENCY_MODELS),
        cache_ttl_ms=s.number("cache_ttl_ms", 2000.0, min=0),
        lookup_cost_ms=s.number("lookup_cost_ms", 1.0, min=0),
        watch_delay=s.distribution(
            "watch_delay",
            {"dist": "exponential", "mean_ms": 20} if s.raw.get("consistency") == "watch" else None,
        ),
        detector=s.string("detector", "timeout", choices=DETECTORS),
        phi=_phi(s),
    )
    out["registry"] = s.done()
    return cfg


def _phi(s: Section) -> dict[str, float]:
    """Phi-accrual parameters (read even for the timeout detector, so typos are caught)."""
    p = s.section("phi")
    if not s.has("phi") and s.raw.get("detector") != "phi_accrual":
        return {}
    threshold = p.number("threshold", 8.0, min=0, min_exclusive=True)
    suspect = p.number("suspect_threshold", threshold / 2, min=0, min_exclusive=True)
    if suspect > threshold:
        raise ScenarioError(
            f"must not exceed threshold ({threshold:g}), got {suspect:g}",
            path=p.key("suspect_threshold"),
        )
    params = {
        "threshold": threshold,
        "suspect_threshold": suspect,
        "window": p.number("window", 100, min=2, integer=True),
        "min_std_s": p.number("min_std_ms", 100.0, min=0, min_exclusive=True) / 1000,
        "acceptable_pause_s": p.number("acceptable_pause_ms", 0.0, min=0) / 1000,
    }
    s.resolved["phi"] = p.done()
    return params
