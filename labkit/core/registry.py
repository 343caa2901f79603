"""The worker registry, its failure detector, and the gateway's views of it.

The registry is the authority on which workers exist, which agent types they host, and how
healthy they are; it knows only what heartbeats told it, so the load reports it holds are as old
as the last heartbeat. A gateway never reads the registry directly but through a *view*:

- ``StrongView`` sees the registry as it is now, and the driver charges ``lookup_cost_s`` per
  lookup (a registry round trip);
- ``EventualView`` keeps a snapshot refreshed after a TTL. Between refreshes it routes on stale
  membership, health and load: a dead worker stays routable until the snapshot ages out. That is
  the trade-off this lab exists to show, not a bug.
- ``WatchView`` is pushed every membership or health change (an etcd/ZooKeeper watch) and sees it
  after a propagation delay; updates arrive in order. Lookups are free and stale only for the
  delay, not for a whole TTL.

A route is a *misroute* when the view handed out a worker it believed healthy that the registry
already knew was not (``Registry.routable``): the cost of a stale view, counted by the gateway.

Pools are rebuilt only when membership or health changes (tracked by ``version``), so a lookup on
the hot path is a dict access.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

WorkerId = str


class Health(StrEnum):
    HEALTHY = "healthy"
    SUSPECT = "suspect"
    DOWN = "down"


@dataclass(slots=True)
class LoadReport:
    """What a worker says about itself in a heartbeat (so it ages with the heartbeat)."""

    cpu: float = 0.0  # utilisation of its service slots over the last interval, 0..1
    active: int = 0  # requests in service plus queued
    capacity: int = 1  # requests it serves at once
    rt_ewma_ms: float = 0.0  # its own response-time EWMA
    error_rate: float = 0.0  # fraction of errors over the last interval
    at: float = 0.0  # when it was measured (seconds)


@dataclass(slots=True)
class WorkerRecord:
    worker_id: WorkerId
    agent_types: tuple[str, ...]
    capabilities: dict[str, object]
    registered_at: float
    last_heartbeat: float
    report: LoadReport
    health: Health = Health.HEALTHY


@dataclass(frozen=True, slots=True)
class Pool:
    """The workers one view offers for one agent type.

    ``members`` keeps every registered worker in registration order (hash rings need the full
    membership so that a worker's keys come back to it after it recovers); ``healthy`` is what a
    balancer may pick from. ``version`` changes whenever either does.
    """

    agent_type: str
    members: tuple[WorkerId, ...]
    healthy: tuple[WorkerId, ...]
    healthy_set: frozenset[WorkerId]
    version: int


class FailureDetector(Protocol):
    """Turns heartbeat arrival times into a health verdict (``TimeoutDetector`` here, the
    phi-accrual detector in ``labkit.core.detectors``)."""

    def heartbeat(self, worker_id: WorkerId, now: float) -> None: ...

    def health(self, worker_id: WorkerId, now: float) -> Health: ...

    def forget(self, worker_id: WorkerId) -> None: ...


@dataclass(slots=True)
class TimeoutDetector:
    """Suspect after ``suspect_after_s`` without a heartbeat, down after ``down_after_s``."""

    suspect_after_s: float
    down_after_s: float
    _last: dict[WorkerId, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.suspect_after_s <= self.down_after_s:
            raise ValueError("need 0 < suspect_after_s <= down_after_s")

    def heartbeat(self, worker_id: WorkerId, now: float) -> None:
        self._last[worker_id] = now

    def health(self, worker_id: WorkerId, now: float) -> Health:
        silent = now - self._last.get(worker_id, now)
        if silent > self.down_after_s:
            return Health.DOWN
        if silent > self.suspect_after_s:
            return Health.SUSPECT
        return Health.HEALTHY

    def forget(self, worker_id: WorkerId) -> None:
        self._last.pop(worker_id, None)


StatusListener = Callable[[WorkerId, Health, Health, float], None]


class Registry:
    """Authoritative membership and health; the driver calls ``evaluate(now)`` periodically."""

    def __init__(self, detector: FailureDetector) -> None:
        self.detector = detector
        self.workers: dict[WorkerId, WorkerRecord] = {}
        self.version = 0
        self.known_types: set[str] = set()
        self._listeners: list[StatusListener] = []
        self._pools: dict[str, Pool] = {}
        self._pools_version = -1
        self._departed: set[WorkerId] = set()  # deregistered: listeners last heard "down"
        self._change_listeners: list[Callable[[float], None]] = []

    # -- membership ---------------------------------------------------------------------------
    def register(
        self,
        worker_id: WorkerId,
        agent_types: Iterable[str],
        now: float,
        *,
        capacity: int = 1,
        capabilities: dict[str, object] | None = None,
    ) -> WorkerRecord:
        """Add (or re-add after a restart) a worker; it starts healthy, as if it just beat."""
        types = tuple(dict.fromkeys(agent_types))
        if not types:
            raise ValueError(f"worker {worker_id!r} registers no agent type")
        old = self.workers.get(worker_id)
        previous = old.health if old is not None else Health.HEALTHY
        if old is None and worker_id in self._departed:
            previous = Health.DOWN
        self._departed.discard(worker_id)
        record = WorkerRecord(
            worker_id=worker_id,
            agent_types=types,
            capabilities=dict(capabilities or {}),
            registered_at=now,
            last_heartbeat=now,
            report=LoadReport(capacity=capacity, at=now),
        )
        self.workers[worker_id] = record
        self.known_types.update(types)
        # a re-registration is a new incarnation: its heartbeat history starts afresh
        self.detector.forget(worker_id)
        self.detector.heartbeat(worker_id, now)
        self._bump(now)
        if previous is not Health.HEALTHY:
            self._notify(worker_id, previous, Health.HEALTHY, now)
        return record

    def deregister(self, worker_id: WorkerId, now: float) -> None:
        record = self.workers.pop(worker_id, None)
        if record is None:
            return
        self.detector.forget(worker_id)
        self._departed.add(worker_id)
        self._bump(now)
        if record.health is not Health.DOWN:
            self._notify(worker_id, record.health, Health.DOWN, now)

    def heartbeat(self, worker_id: WorkerId, now: float, report: LoadReport | None = None) -> bool:
        """Record a heartbeat; returns False for a worker the registry does not know."""
        record = self.workers.get(worker_id)
        if record is None:
            return False
        record.last_heartbeat = now
        if report is not None:
            record.report = report
        self.detector.heartbeat(worker_id, now)
        return True

    # -- health -------------------------------------------------------------------------------
    def add_listener(self, listener: StatusListener) -> None:
        """``listener(worker_id, old, new, now)`` is called on every health change."""
        self._listeners.append(listener)

    def evaluate(self, now: float) -> list[tuple[WorkerId, Health, Health]]:
        """Ask the detector about every worker; apply and announce changes."""
        changes: list[tuple[WorkerId, Health, Health]] = []
        health = self.detector.health
        for worker_id, record in self.workers.items():
            new = health(worker_id, now)
            if new is not record.health:
                changes.append((worker_id, record.health, new))
                record.health = new
        if changes:
            self._bump(now)
            for worker_id, old, new in changes:
                self._notify(worker_id, old, new, now)
        return changes

    def add_change_listener(self, listener: Callable[[float], None]) -> None:
        """``listener(now)`` is called after every change of membership or health (a watch)."""
        self._change_listeners.append(listener)

    def _bump(self, now: float) -> None:
        self.version += 1
        for listener in self._change_listeners:
            listener(now)

    def routable(self, worker_id: WorkerId) -> bool:
        """Is the worker registered and healthy right now (the authority's verdict)?"""
        record = self.workers.get(worker_id)
        return record is not None and record.health is Health.HEALTHY

    def snapshot(self) -> dict[str, Pool]:
        """Every type's current pool (shared, immutable: cheap to hand to many views)."""
        if self._pools_version != self.version:
            self._pools = self._build_pools()
            self._pools_version = self.version
        return self._pools

    def _notify(self, worker_id: WorkerId, old: Health, new: Health, now: float) -> None:
        for listener in self._listeners:
            listener(worker_id, old, new, now)

    # -- lookups ------------------------------------------------------------------------------
    def pool(self, agent_type: str) -> Pool | None:
        """The current pool for ``agent_type``; None if no worker ever registered it."""
        pool = self.snapshot().get(agent_type)
        if pool is None and agent_type in self.known_types:
            return Pool(agent_type, (), (), frozenset(), self.version)
        return pool

    def _build_pools(self) -> dict[str, Pool]:
        members: dict[str, list[WorkerId]] = {}
        healthy: dict[str, list[WorkerId]] = {}
        for worker_id, record in self.workers.items():
            up = record.health is Health.HEALTHY
            for agent_type in record.agent_types:
                members.setdefault(agent_type, []).append(worker_id)
                if up:
                    healthy.setdefault(agent_type, []).append(worker_id)
        return {
            t: Pool(
                t,
                tuple(ids),
                tuple(healthy.get(t, ())),
                frozenset(healthy.get(t, ())),
                self.version,
            )
            for t, ids in members.items()
        }

    def health_counts(self) -> dict[Health, int]:
        """How many registered workers are in each health state (deregistered ones: down)."""
        counts = dict.fromkeys(Health, 0)
        for record in self.workers.values():
            counts[record.health] += 1
        counts[Health.DOWN] += len(self._departed)
        return counts

    def report(self, worker_id: WorkerId) -> LoadReport:
        record = self.workers.get(worker_id)
        return record.report if record is not None else _EMPTY_REPORT

    def health_of(self, worker_id: WorkerId) -> Health:
        record = self.workers.get(worker_id)
        return record.health if record is not None else Health.DOWN


_EMPTY_REPORT = LoadReport()


class RegistryView(Protocol):
    """What a gateway sees of the registry."""

    #: seconds a lookup costs the request that makes it (the driver adds it to the path)
    lookup_cost_s: float

    def pool(self, agent_type: str, now: float) -> Pool | None: ...

    def report(self, worker_id: WorkerId) -> LoadReport: ...


class StrongView:
    """Every lookup reads the registry now, at the price of a round trip."""

    def __init__(self, registry: Registry, lookup_cost_s: float = 0.0) -> None:
        self.registry = registry
        self.lookup_cost_s = lookup_cost_s
        self.report = registry.report

    def pool(self, agent_type: str, now: float) -> Pool | None:
        return self.registry.pool(agent_type)


class EventualView:
    """A gateway-local snapshot of the registry refreshed once it is ``ttl_s`` old.

    Lookups are free; membership, health and load reports are as old as the snapshot.
    ``refreshes`` counts snapshot refreshes, ``stale_pools`` how many lookups were answered
    from a snapshot older than the registry's current version.
    """

    def __init__(self, registry: Registry, ttl_s: float) -> None:
        if ttl_s < 0:
            raise ValueError("ttl_s must be >= 0")
        self.registry = registry
        self.ttl_s = ttl_s
        self.lookup_cost_s = 0.0
        self.refreshes = 0
        self.stale_pools = 0
        self._taken_at = float("-inf")
        self._version = -1
        self._pools: dict[str, Pool | None] = {}
        self._reports: dict[WorkerId, LoadReport] = {}

    def refresh(self, now: float) -> None:
        registry = self.registry
        self._taken_at = now
        self._version = registry.version
        self._pools = {t: registry.pool(t) for t in registry.known_types}
        self._reports = {w: r.report for w, r in registry.workers.items()}
        self.refreshes += 1

    def pool(self, agent_type: str, now: float) -> Pool | None:
        if now - self._taken_at >= self.ttl_s:
            self.refresh(now)
        elif self._version != self.registry.version:
            self.stale_pools += 1
        return self._pools.get(agent_type)

    def report(self, worker_id: WorkerId) -> LoadReport:
        return self._reports.get(worker_id, _EMPTY_REPORT)


class WatchView:
    """Pools pushed by the registry on every change, each arriving ``delay()`` seconds later.

    Updates are applied in the order they were sent (a watch stream is ordered), so a quick
    update never overtakes a slow one. Load reports are read from the registry as they are:
    they ride on heartbeats, whose age dwarfs the propagation delay. ``stale_pools`` counts
    lookups answered while an update was still on its way; ``updates`` counts those applied.
    """

    def __init__(self, registry: Registry, delay: Callable[[], float]) -> None:
        self.registry = registry
        self.delay = delay
        self.lookup_cost_s = 0.0
        self.report = registry.report
        self.updates = 0
        self.stale_pools = 0
        self._pools: dict[str, Pool] = registry.snapshot()
        self._known: frozenset[str] = frozenset(registry.known_types)
        self._pending: deque[tuple[float, dict[str, Pool], frozenset[str]]] = deque()
        self._last_due = float("-inf")
        registry.add_change_listener(self._on_change)

    def _on_change(self, now: float) -> None:
        due = max(self._last_due, now + self.delay())
        self._last_due = due
        registry = self.registry
        self._pending.append((due, registry.snapshot(), frozenset(registry.known_types)))

    def pool(self, agent_type: str, now: float) -> Pool | None:
        pending = self._pending
        if pending:
            while pending and pending[0][0] <= now:
                _, self._pools, self._known = pending.popleft()
                self.updates += 1
            if pending:
                self.stale_pools += 1
        pool = self._pools.get(agent_type)
        if pool is None and agent_type in self._known:
            return Pool(agent_type, (), (), frozenset(), 0)
        return pool
