"""Scenario sections about data: ``state`` (replicated agent state), ``cache`` (the distributed
cache and its L1) and ``batching``.

Like the failure sections, they build the policy core's own config objects, so a value the core
would refuse (r + w <= n under ``strong``, replication above the node count) is reported with its
key path instead of surfacing as a stack trace mid-run.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from labkit.core.batching import AdaptiveBatching, BatchingConfig
from labkit.core.cache import EVICTION_POLICIES, CacheConfig, L1Config
from labkit.core.state import CONFLICT_POLICIES, STATE_MODELS, WRITE_FANOUTS, StateConfig
from labkit.distributions import Distribution, parse_distribution
from labkit.errors import ScenarioError
from labkit.scenario.section import Section

_ONE_MS = {"dist": "exponential", "mean_ms": 1}


def _dist(spec: dict[str, Any]) -> Distribution:
    return parse_distribution(spec)


@dataclass(frozen=True)
class StateSpec:
    config: StateConfig
    #: the four WARS delays (ms): coordinator→replica write, ack back, read, response back
    write_delay: Distribution = field(default_factory=lambda: _dist(_ONE_MS))
    ack_delay: Distribution = field(default_factory=lambda: _dist(_ONE_MS))
    read_delay: Distribution = field(default_factory=lambda: _dist(_ONE_MS))
    response_delay: Distribution = field(default_factory=lambda: _dist(_ONE_MS))


@dataclass(frozen=True)
class CacheNodeFailure:
    node: str
    at_s: float
    duration_s: float | None  # None: the node stays down


@dataclass(frozen=True)
class Invalidation:
    at_s: float
    pattern: str


@dataclass(frozen=True)
class CacheSpec:
    config: CacheConfig
    node_rtt: Distribution
    store_read: Distribution
    store_write: Distribution
    failures: tuple[CacheNodeFailure, ...] = ()
    invalidations: tuple[Invalidation, ...] = ()


def _core(path: str, build: Any) -> Any:
    """Build a core config, turning its ValueError into a ScenarioError at ``path``."""
    try:
        return build()
    except ValueError as exc:
        raise ScenarioError(str(exc), path=path) from None


def parse_state(s: Section, present: bool, out: dict[str, Any]) -> StateSpec | None:
    if not present:
        s.done()
        out["state"] = None
        return None
    model = s.string("model", "eventual", choices=STATE_MODELS)
    n = s.number("n", 3, min=1, integer=True)
    strong = model == "strong"
    default_q = n // 2 + 1 if strong else 1
    r = s.number("r", default_q, min=1, max=n, integer=True)
    w = s.number("w", default_q, min=1, max=n, integer=True)
    if strong and r + w <= n:
        raise ScenarioError(
            f"strong consistency needs r + w > n, got r={r}, w={w}, n={n} "
            "(raise r or w, or use model: eventual)",
            path=s.key("r"),
        )
    config = _core(
        s.path,
        lambda: StateConfig(
            model=model,
            n=n,
            r=r,
            w=w,
            conflict=s.string("conflict", "last_write_wins", choices=CONFLICT_POLICIES),
            fields=s.number("fields", 8, min=1, integer=True),
            write_fanout=s.string("write_fanout", "all", choices=WRITE_FANOUTS),
            read_fraction=s.number("read_fraction", 1.0, min=0, max=1),
            write_fraction=s.number("write_fraction", 0.5, min=0, max=1),
            max_versions=s.number("max_versions", 64, min=2, integer=True),
        ),
    )
    d = s.section("delays")
    spec = StateSpec(
        config,
        write_delay=d.distribution("write", _ONE_MS),
        ack_delay=d.distribution("ack", _ONE_MS),
        read_delay=d.distribution("read", _ONE_MS),
        response_delay=d.distribution("response", _ONE_MS),
    )
    out["state"] = {**s.done(), "delays": d.done()}
    return spec


def parse_cache(
    s: Section, present: bool, duration_s: float, out: dict[str, Any]
) -> CacheSpec | None:
    if not present:
        s.done()
        out["cache"] = None
        return None
    nodes = s.number("nodes", 4, min=1, integer=True)
    replication = s.number("replication", min(2, nodes), min=1, max=nodes, integer=True)
    l1 = None
    l1_resolved = None
    if s.has("l1"):
        l1s = s.section("l1")
        l1 = _core(
            l1s.path,
            lambda: L1Config(
                capacity=l1s.number("capacity", 1000, min=1, integer=True),
                ttl_s=l1s.number("ttl_s", 5.0, min=0, min_exclusive=True),
                eviction=l1s.string("eviction", "lru", choices=EVICTION_POLICIES),
            ),
        )
        l1_resolved = l1s.done()
    else:
        s.raw_value("l1")
    config = _core(
        s.path,
        lambda: CacheConfig(
            nodes=nodes,
            vnodes=s.number("vnodes", 100, min=1, integer=True),
            replication=replication,
            capacity=s.number("capacity", 10_000, min=1, integer=True),
            eviction=s.string("eviction", "lru", choices=EVICTION_POLICIES),
            ttl_s=_ttl(s),
            read_repair=s.boolean("read_repair", True),
            l1=l1,
            read_fraction=s.number("read_fraction", 1.0, min=0, max=1),
            write_fraction=s.number("write_fraction", 0.0, min=0, max=1),
        ),
    )
    node_names = [f"c-{i}" for i in range(nodes)]
    failures = _failures(s, node_names, duration_s)
    invalidations = _invalidations(s, duration_s)
    spec = CacheSpec(
        config,
        node_rtt=s.distribution("node_rtt", {"dist": "exponential", "mean_ms": 0.5}),
        store_read=s.distribution("store_read", {"dist": "exponential", "mean_ms": 20}),
        store_write=s.distribution("store_write", {"dist": "exponential", "mean_ms": 30}),
        failures=failures,
        invalidations=invalidations,
    )
    out["cache"] = {**s.done(), "l1": l1_resolved}
    return spec


def _ttl(s: Section) -> float | None:
    """``ttl_s: null`` means entries never expire; left out, 60 s."""
    if "ttl_s" in s.raw and s.raw["ttl_s"] is None:
        s.raw_value("ttl_s")
        s.resolved["ttl_s"] = None
        return None
    return s.number("ttl_s", 60.0, min=0, min_exclusive=True)


def _failures(s: Section, nodes: list[str], duration_s: float) -> tuple[CacheNodeFailure, ...]:
    raw = s.raw_value("node_failures")
    if raw is None:
        s.resolved["node_failures"] = []
        return ()
    if not isinstance(raw, list):
        raise ScenarioError("must be a list of node failures", path=s.key("node_failures"))
    failures: list[CacheNodeFailure] = []
    resolved = []
    for i, item in enumerate(raw):
        f = Section(item, f"{s.key('node_failures')}.{i}")
        node = f.string("node", choices=nodes)
        at_s = f.number("at_s", min=0)
        if at_s >= duration_s:
            raise ScenarioError(
                f"starts at or after the end of the run (duration_s {duration_s:g})",
                path=f.key("at_s"),
            )
        duration = f.number("duration_s", None, min=0, min_exclusive=True)
        failures.append(CacheNodeFailure(node, at_s, duration))
        resolved.append(f.done())
    # one node cannot fail again while it is down
    by_node: dict[str, list[CacheNodeFailure]] = {}
    for fail in failures:
        by_node.setdefault(fail.node, []).append(fail)
    for node, items in by_node.items():
        items.sort(key=lambda x: x.at_s)
        for a, b in itertools.pairwise(items):
            if a.duration_s is None or a.at_s + a.duration_s > b.at_s:
                raise ScenarioError(
                    f"cache node {node!r} fails at {b.at_s:g}s while still down",
                    path=s.key("node_failures"),
                )
    if len({f.node for f in failures if f.duration_s is None}) >= len(nodes):
        raise ScenarioError("would leave no cache node alive", path=s.key("node_failures"))
    s.resolved["node_failures"] = resolved
    return tuple(failures)


def _invalidations(s: Section, duration_s: float) -> tuple[Invalidation, ...]:
    raw = s.raw_value("invalidations")
    if raw is None:
        s.resolved["invalidations"] = []
        return ()
    if not isinstance(raw, list):
        raise ScenarioError("must be a list of invalidations", path=s.key("invalidations"))
    items = []
    resolved = []
    for i, item in enumerate(raw):
        v = Section(item, f"{s.key('invalidations')}.{i}")
        at_s = v.number("at_s", min=0)
        if at_s >= duration_s:
            raise ScenarioError(
                f"is at or after the end of the run (duration_s {duration_s:g})",
                path=v.key("at_s"),
            )
        items.append(Invalidation(at_s, v.string("pattern")))
        resolved.append(v.done())
    s.resolved["invalidations"] = resolved
    return tuple(items)


def parse_batching(s: Section, present: bool, out: dict[str, Any]) -> BatchingConfig | None:
    if not present:
        s.done()
        out["batching"] = None
        return None
    adaptive = None
    adaptive_resolved = None
    max_batch = s.number("max_batch", 8, min=1, integer=True)
    if s.has("adaptive"):
        a = s.section("adaptive")
        decrease = a.number("decrease", 0.5, min=0, min_exclusive=True)
        if decrease >= 1:
            raise ScenarioError(
                f"must be < 1 (the limit is multiplied by it), got {decrease:g}",
                path=a.key("decrease"),
            )
        adaptive = _core(
            a.path,
            lambda: AdaptiveBatching(
                target_p99_s=a.number("target_p99_ms", min=0, min_exclusive=True) / 1000,
                interval_s=a.number("interval_s", 1.0, min=0, min_exclusive=True),
                increase=a.number("increase", 1, min=1, integer=True),
                decrease=decrease,
                min_batch=a.number("min_batch", 1, min=1, integer=True),
                max_batch=a.number("max_batch", max(64, max_batch), min=1, integer=True),
                min_samples=a.number("min_samples", 20, min=1, integer=True),
            ),
        )
        adaptive_resolved = a.done()
    else:
        s.raw_value("adaptive")
    config = _core(
        s.path,
        lambda: BatchingConfig(
            max_batch=max_batch,
            max_delay_s=s.number("max_delay_ms", 2.0, min=0) / 1000,
            batch_cost_s=s.number("batch_cost_ms", 0.5, min=0) / 1000,
            message_cost_s=s.number("message_cost_ms", 0.0, min=0) / 1000,
            adaptive=adaptive,
        ),
    )
    out["batching"] = {**s.done(), "adaptive": adaptive_resolved}
    return config
