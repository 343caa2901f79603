"""The SimPy driver: a fleet of workers behind one or more gateways, on simulated time.

Speed matters (hundreds of thousands of requests per run), so a request is not a SimPy process:
it is a small slotted object moved along by scheduled callbacks — arrival, (hop to the worker),
service completion, (hop back) — two events per request in the idealized case. Every decision
(admission, lookup, worker choice, retry) is delegated to the policy core in ``labkit.core``.

Deadlines cost almost nothing: requests enter a FIFO in deadline order (the timeout is one
value per run), and a single timer is armed for the earliest request still in flight. Per-attempt
timeouts and hedging delays are constants too, so they use the same trick.

A request is carried to workers by *attempts* (the first, retries, hedges). Every attempt is
released exactly once at its gateway — by its reply, its attempt timeout, the request's deadline
or a sibling's success — which keeps in-flight counts and passive health checks honest when
workers crash, hang or are cut off (see ``labkit.core.faults`` for what each fault does).
"""

from __future__ import annotations

import gc
import random
import time
from collections import deque
from collections.abc import Callable
from heapq import heappop, heappush
from itertools import repeat
from math import inf as INF
from typing import Any

import numpy as np
import pandas as pd
import simpy
from simpy.core import NORMAL

from labkit.core.alerts import AlertManager, Sample
from labkit.core.balancing import LocalLoad, make_balancer
from labkit.core.batching import Batcher, batch_size_summary, coalesce
from labkit.core.cache import CacheCluster, CacheSamplers, GatewayCache
from labkit.core.detectors import make_detector
from labkit.core.faults import (
    ACTUAL_STATES,
    FaultInstance,
    WorkerFaultState,
    plan_faults,
    worker_name,
)
from labkit.core.gateway import (
    GatewayPolicy,
    UnknownAgentType,
    resilience_counts,
)
from labkit.core.outcomes import RETRY_SAME_WORKER, SEVERITY, Detail
from labkit.core.registry import (
    EventualView,
    Health,
    LoadReport,
    Registry,
    RegistryView,
    StrongView,
    WatchView,
)
from labkit.core.routing import SubscriptionIndex, TopicId, TypePrefixSubscription, TypeSubscription
from labkit.core.state import StateStore, WarsSamplers
from labkit.distributions import BatchSampler, Constant
from labkit.errors import LabkitError, NoWorkerAvailable
from labkit.results import RecordLog, Results, build_results
from labkit.results.consistency import consistency_results
from labkit.results.frames import (
    REGISTRY_STATES,
    events_frame,
    faults_frame,
    health_frame,
    load_reports_frame,
)
from labkit.results.records import PUBLISH, RPC, pack_row
from labkit.results.window import fleet_metrics, window_metrics
from labkit.scenario import Scenario
from labkit.sim.workload import (
    STREAM_ARRIVALS,
    STREAM_SERVICE,
    STREAM_SPEEDS,
    Arrivals,
    RequestMix,
    workload_streams,
)

OK = Detail.OK
#: how often (simulated seconds) the number of requests in the system is sampled
SAMPLE_INTERVAL_S = 0.02
#: a closed-loop client turned away at once (rate limited, no worker) waits at least this long
#: before sending again, as real clients back off; with zero think time it would otherwise
#: resend at the same simulated instant forever
CLIENT_MIN_BACKOFF_S = 0.001
#: weight of the newest sample in a worker's own response-time EWMA
WORKER_EWMA_ALPHA = 0.1


class _Stop(Exception):
    """Raised by the loop's last entry: the run has drained (or hit its watchdog)."""


class Request:
    """One RPC, one publish, or one delivery of a publish to a recipient."""

    __slots__ = (
        "agent_type",
        "arrival",
        "att",
        "attempts",
        "client",
        "deadline",
        "done",
        "extra",
        "fanout",
        "gw",
        "hedges",
        "key",
        "kind",
        "live",
        "parent",
        "pending",
        "service_ms",
        "tried",
        "worker",
        "worst",
    )

    def __init__(
        self,
        gw: int,
        kind: int,
        agent_type: int,
        key: int,
        arrival: float,
        deadline: float,
        client: int = -1,
    ) -> None:
        self.gw = gw
        self.kind = kind
        self.agent_type = agent_type
        self.key = key
        self.arrival = arrival
        self.deadline = deadline
        self.attempts = 0
        self.worker = -1  # the worker of the attempt that decided the outcome (or the last sent)
        self.done = False
        self.live = 0  # attempts in flight
        self.att: Attempt | None = None  # the latest attempt
        self.extra: list[Attempt] | None = None  # earlier attempts still in flight (hedging)
        self.hedges = 0
        self.tried: list[str] | None = None
        self.parent: Request | None = None
        self.pending = 0
        self.fanout = 0
        self.worst = OK
        self.service_ms = 0.0
        self.client = client


class Attempt:
    """One try of a request at one worker; ``active`` until its gateway releases it.

    Built in ``_dispatch`` without ``__init__`` (it is on the hot path): ``req``, ``worker``,
    ``t_sent`` and ``active`` are set there; ``t_worker`` (arrival at the worker), ``result`` and
    ``t_end`` (crashable runs only) are set on the way, before anything reads them. With a state
    service, ``base`` is the state version the attempt read and ``write`` where its state write
    stands (``_NO_WRITE``, ``_WRITE_DUE``, ``_WROTE`` or ``_REJECTED``).
    """

    __slots__ = (
        "active",
        "base",
        "req",
        "result",
        "t_end",
        "t_sent",
        "t_worker",
        "worker",
        "write",
    )

    # declared for type checkers (and mypyc, which compiles them into a fixed C layout)
    active: bool
    base: int
    req: Request
    result: Detail
    t_end: float
    t_sent: float
    t_worker: float
    worker: int
    write: int


_NO_WRITE, _WRITE_DUE, _WROTE, _REJECTED = 0, 1, 2, 3


class _Batch:
    """Attempts the gateway sent to one worker together; the worker serves them as one unit."""

    __slots__ = ("atts", "gw", "t_end", "worker", "writing")

    def __init__(self, atts: list[Attempt], gw: int, worker: int) -> None:
        self.atts = atts
        self.gw = gw
        self.worker = worker
        self.t_end = 0.0
        self.writing = False

    @property
    def active(self) -> bool:
        return any(a.active for a in self.atts)


def _queued(worker: Worker) -> int:
    """Requests waiting in a worker's queue (its entries are batches when batching is on)."""
    queue = worker.queue
    if queue and type(queue[0]) is _Batch:
        return sum(len(b.atts) for b in queue)
    return len(queue)


def _flat(units: Any) -> list[Attempt]:
    """The attempts in a worker's serving set or queue, batches opened up."""
    out: list[Attempt] = []
    for u in units:
        if type(u) is _Batch:
            out.extend(u.atts)
        else:
            out.append(u)
    return out


class Worker:
    """A worker process: ``concurrency`` service slots and a FIFO queue with an optional limit.

    ``speed`` is the effective speed (base speed over any ``slow`` factor in force); the fault
    flags are plain attributes so the no-fault path costs one attribute test.
    """

    __slots__ = (
        "agent_types",
        "base_speed",
        "busy",
        "busy_ms",
        "concurrency",
        "error_rate",
        "errors",
        "expired",
        "extra_s",
        "faults",
        "index",
        "last_busy_ms",
        "last_errors",
        "last_received",
        "lost",
        "max_queue",
        "name",
        "queue",
        "queue_limit",
        "queue_samples",
        "queue_sum",
        "reachable",
        "received",
        "rejected",
        "rt_ewma_ms",
        "served",
        "serving",
        "speed",
    )

    def __init__(
        self, index: int, name: str, speed: float, concurrency: int, queue_limit: int | None
    ):
        self.index = index
        self.name = name
        self.base_speed = speed
        self.speed = speed
        self.concurrency = concurrency
        self.queue_limit = queue_limit if queue_limit is not None else 1 << 62
        self.busy = 0
        # attempts, or ``_Batch``es when batching is on (typed ``Any``: a compiled build checks
        # declared types at run time)
        self.queue: deque[Any] = deque()
        # in service, in start order (a dict, not a set: a crash fails them in a reproducible
        # order, and set order would follow memory addresses); attempts or batches, as ``queue``
        self.serving: dict[Any, None] = {}
        self.received = 0
        self.served = 0
        self.rejected = 0
        self.expired = 0
        self.errors = 0
        self.lost = 0
        self.busy_ms = 0.0
        self.rt_ewma_ms = 0.0
        self.max_queue = 0
        self.queue_sum = 0
        self.queue_samples = 0
        self.last_busy_ms = 0.0
        self.last_errors = 0
        self.last_received = 0
        self.faults = WorkerFaultState()
        self.reachable = True  # alive and not partitioned
        self.error_rate = 0.0
        self.extra_s = 0.0


class FleetSim:
    def __init__(self, scenario: Scenario, progress: Callable[[float], None] | None = None) -> None:
        self.sc = sc = scenario
        self.env = env = simpy.Environment()
        # the pieces of Environment.schedule, bound once (see ``at``)
        # entries of two shapes share it (see ``at``): typed loosely on purpose
        self._heap: list[Any] = env._queue
        self._eid = env._eid
        self.progress = progress
        # children are numbered: adding streams at the end leaves the earlier ones unchanged;
        # the workload's indices are shared with the live driver (``labkit.sim.workload``)
        streams = workload_streams(sc.seed)
        rngs = streams.all
        py_seed = streams.py_seeds

        w = sc.workers
        self.agent_types = list(w.agent_types)
        self.type_index = {t: i for i, t in enumerate(self.agent_types)}
        speeds = w.speed.sample(rngs[STREAM_SPEEDS], w.count)
        self.workers = [
            Worker(i, worker_name(i), float(speeds[i]), w.concurrency, w.queue_limit)
            for i in range(w.count)
        ]
        self.by_name = {wk.name: wk for wk in self.workers}

        # registry + failure detection
        r = sc.registry
        if r.watch_delay is not None:
            watch_ms = BatchSampler(r.watch_delay, rngs[14])
            self._watch_delay: Callable[[], float] = lambda: watch_ms() / 1000
        if r.detector == "phi_accrual":
            # the first silence is judged against the configured heartbeat interval
            detector = make_detector(
                "phi_accrual", first_interval_s=r.heartbeat_interval_ms / 1000, **r.phi
            )
        else:
            detector = make_detector(
                "timeout",
                suspect_after_s=r.suspect_timeout_ms / 1000,
                down_after_s=r.failure_timeout_ms / 1000,
            )
        self.registry = Registry(detector)
        for wk in self.workers:
            self.registry.register(wk.name, self.agent_types, 0.0, capacity=w.concurrency)
        #: detection and fault events, one dict per row of ``Results.events``
        self.events: list[dict[str, Any]] = []
        self.health_changes = 0
        self.registry.add_listener(self._on_health_change)

        # routing
        self.subscriptions = SubscriptionIndex()
        for sub in sc.subscriptions:
            if sub.kind == "type":
                self.subscriptions.add(TypeSubscription(sub.topic, sub.agent_type))
            else:
                self.subscriptions.add(TypePrefixSubscription(sub.topic, sub.agent_type))

        # gateways
        g = sc.gateway
        gw_config = g.core_config()
        self.gateways: list[GatewayPolicy] = []
        for i in range(g.count):
            view: RegistryView
            if r.consistency == "strong":
                view = StrongView(self.registry, r.lookup_cost_ms / 1000)
            elif r.consistency == "watch":
                view = WatchView(self.registry, self._watch_delay)
            else:
                view = EventualView(self.registry, r.cache_ttl_ms / 1000)
            # only peak_ewma reads the latency estimates: skip their upkeep otherwise
            local = LocalLoad(
                sc.balancer.ewma_tau_s, track_latency=sc.balancer.strategy == "peak_ewma"
            )
            rng = random.Random(py_seed[1] + i)
            balancer = make_balancer(sc.balancer, local, view, rng)
            policy = GatewayPolicy(
                f"gw-{i}", gw_config, view, balancer, local, random.Random(py_seed[2] + i)
            )
            policy.on_event = self._gateway_listener(policy.name)
            if policy.outlier is not None:
                policy.outlier.hosts = w.count
            self.gateways.append(policy)
        self.guarded = bool(self.gateways[0].guards)
        self.budgeted = gw_config.retry_budget is not None
        self.valid_key = next(iter(gw_config.api_keys)) if gw_config.api_keys else None
        # admission has nothing to decide without auth or a rate limit
        self.admission = bool(gw_config.api_keys) or bool(gw_config.rate_limit_rps)

        # workload streams
        wl = sc.workload
        self.service = BatchSampler(w.service_time, rngs[STREAM_SERVICE])
        latency = sc.network.latency
        # a zero-mean delay of a non-negative distribution is always zero: skip the hop events
        self.net: Callable[[], float] | None = None
        if isinstance(latency, Constant) and latency.value > 0:
            # a constant delay draws nothing: ``repeat(v).__next__`` returns it with no Python
            # frame (the sampler would have returned the same float from ``np.full``)
            self.net = repeat(float(latency.value)).__next__
        elif latency and latency.mean > 0:
            self.net = BatchSampler(latency, rngs[4])
        # what each arrival is: the same draws as the live load generator's
        self.mix = RequestMix(wl, self.agent_types, streams)
        self.next_request = self.mix.next
        self.key_names = [f"k{i}" for i in range(wl.keys.count)]
        self.coin = self.mix.coin  # the unauthorised coin follows the publish coin
        self.unauthorized = wl.unauthorized_fraction
        self.think = BatchSampler(wl.arrival.think_time, rngs[9]) if wl.arrival.think_time else None
        self.arrivals = (
            Arrivals(wl.arrival, sc.duration_s, rngs[STREAM_ARRIVALS])
            if wl.arrival.process != "closed"
            else None
        )
        self._arrival_time: Callable[[], float] = iter(()).__next__
        self._arrival_t = INF  # the next open-loop arrival (see ``_loop``)
        self._arrival_eid = 0
        self.gw_count = g.count
        self.timeout_s = gw_config.timeout_s
        self.fixed_hop_s = gw_config.overhead_s

        # failure: faults, per-attempt timeouts, hedges, alerts
        self.faults: list[FaultInstance] = plan_faults(
            sc.faults, [wk.name for wk in self.workers], sc.duration_s, rngs[11]
        )
        self.fault_coin = BatchSampler(_UNIFORM, rngs[12])
        self.attempt_timer = (
            _FifoTimer(self, gw_config.attempt_timeout_s, self._attempt_timed_out)
            if gw_config.attempt_timeout_s
            else None
        )
        self.hedge_timer = (
            _FifoTimer(self, gw_config.hedge_after_s, self._hedge_due)
            if gw_config.hedge_after_s
            else None
        )
        self.hedge_max = gw_config.hedge_max_extra
        #: any per-dispatch work beyond the plain path (guards, attempt timeouts, hedges)
        self.extras = self.guarded or self.attempt_timer is not None or self.hedge_timer is not None
        self.crashable = any(f.kind == "crash" for f in self.faults)
        self.sent_to_unreachable = 0
        self._setup_data(rngs, py_seed)
        self.alerts = AlertManager(sc.alerts, sc.slo) if sc.alerts is not None else None
        self.health_t: list[float] = []
        self.unregistered: set[str] = set()  # restarted while cut off from the registry
        self.health_codes: list[np.ndarray] = []

        # bookkeeping
        self.log = RecordLog()
        self.add_record = self.log.add_row  # ``pack_row(...)``, once per request
        self.deadlines: deque[Request] = deque()
        self.timer_armed = False
        self.outstanding = 0
        self.arrivals_over = False
        self.next_id = 0
        self.late_replies = 0
        self.samples_t: list[float] = []
        self.samples_n: list[int] = []
        # each heartbeat's load report, for the utilization heatmap (per heartbeat, not per
        # request: a few appends per worker per interval)
        self.report_t: list[float] = []
        self.report_w: list[int] = []
        self.report_cpu: list[float] = []
        self.report_active: list[int] = []
        self.drained = False

    def _setup_data(self, rngs: list[np.random.Generator], py_seed: list[int]) -> None:
        """The state service, the cache and the batchers (each None when not configured)."""
        sc = self.sc
        self.state: StateStore | None = None
        if sc.state is not None:
            st = sc.state
            srng = rngs[15]
            samplers = WarsSamplers(
                BatchSampler(st.write_delay, srng),
                BatchSampler(st.ack_delay, srng),
                BatchSampler(st.read_delay, srng),
                BatchSampler(st.response_delay, srng),
            )
            self.state = StateStore(st.config, samplers, random.Random(py_seed[16]))
            self.state_coin = BatchSampler(_UNIFORM, rngs[16])
            self.state_session = st.config.model == "session"
        self.cache: CacheCluster | None = None
        self.gw_caches: list[GatewayCache] = []
        if sc.cache is not None:
            cs = sc.cache
            crng = rngs[17]
            self.cache = CacheCluster(
                cs.config,
                CacheSamplers(
                    BatchSampler(cs.node_rtt, crng),
                    BatchSampler(cs.store_read, crng),
                    BatchSampler(cs.store_write, crng),
                ),
            )
            self.gw_caches = [GatewayCache(self.cache, cs.config.l1) for _ in self.gateways]
            self.cache_coin = BatchSampler(_UNIFORM, rngs[18])
            # one entry per cache access: when, which layer served it (-1: a write), stale
            self.cache_t: list[float] = []
            self.cache_layer: list[int] = []
            self.cache_stale: list[bool] = []
            self.cache_events: list[dict[str, Any]] = []
            self.cache_down = 0  # accesses that found no cache node alive
        self.batchers: list[Batcher[Attempt]] | None = None
        self.aimd = False
        if sc.batching is not None:
            self.batchers = [
                Batcher(sc.batching, sc.warmup_s, sc.duration_s) for _ in self.gateways
            ]
            self.batching = sc.batching
            self.aimd = sc.batching.adaptive is not None

    # -- scheduling ---------------------------------------------------------------------------
    def at(self, delay: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        """Call ``fn(arg)`` after ``delay`` simulated seconds.

        Pushed onto SimPy's own heap as ``(time, priority, id, fn, arg)``: no ``Event`` object,
        no callback list, since the simulator schedules two to four of these per request. SimPy's
        events are 4-tuples ``(time, priority, id, event)``; the ids are unique, so the heap never
        compares past them and both kinds share one order: the order SimPy itself would use.
        ``_loop`` runs both.
        """
        heappush(self._heap, (self.env._now + delay, NORMAL, next(self._eid), fn, arg))

    def _loop(self) -> None:
        """``Environment.run``, except that a 5-tuple from ``at`` is one plain call, and the
        open-loop arrivals are merged in without a heap entry each.

        The next arrival waits in ``_arrival_t`` with the id its heap entry would have had
        (``_arrival_eid``): it runs before the heap's first entry when it sorts before it as
        that entry would, so the order is the one SimPy would follow. A SimPy event (the
        background processes' timeouts) is processed exactly as ``Environment.step`` does it.
        The loop ends when a ``_Stop`` is raised by ``_stop``, scheduled once the run has
        drained or by the watchdog.
        """
        env = self.env
        heap = self._heap
        pop = heappop
        eid = self._eid
        new_request = self._new_request
        t_arrival, arrival_eid = self._arrival_t, self._arrival_eid
        next_time = self._arrival_time
        try:
            while True:
                head = heap[0]
                if t_arrival <= head[0] and (
                    t_arrival < head[0] or (NORMAL, arrival_eid) < head[1:3]
                ):
                    env._now = t_arrival
                    new_request(-1)
                    # ``_next_open_arrival`` with its common case (the block goes on) inlined
                    try:
                        t = next_time()
                    except StopIteration:
                        self._next_open_arrival()
                        t_arrival, arrival_eid = self._arrival_t, self._arrival_eid
                        next_time = self._arrival_time
                        continue
                    t_arrival += t - t_arrival  # ``now + (t - now)``, as ``at`` would push it
                    arrival_eid = next(eid)
                    continue
                entry = pop(heap)
                env._now = entry[0]
                if len(entry) == 5:
                    entry[3](entry[4])
                    continue
                event: Any = entry[3]
                callbacks, event.callbacks = event.callbacks, None
                for callback in callbacks:
                    callback(event)
                if not event._ok and not hasattr(event, "_defused"):
                    raise event._value
        except _Stop:
            return

    def _stop(self, _: object = None) -> None:
        raise _Stop

    # -- arrivals -----------------------------------------------------------------------------
    def _next_open_arrival(self) -> None:
        """Draw the next arrival into ``_arrival_t`` (``inf`` once they are over), which
        ``_loop`` merges with the heap. Arrival times come a block at a time
        (``Arrivals.block``), so this is mostly a list iterator's ``next``."""
        try:
            t = self._arrival_time()
        except StopIteration:
            block = self.arrivals.block()  # type: ignore[union-attr]
            if not block:
                self._arrival_t = INF
                self._arrivals_done()
                return
            self._arrival_time = iter(block).__next__
            t = self._arrival_time()
        # the time and id a heap entry pushed now would carry (``at``'s ``now + delay``)
        now = self.env._now
        self._arrival_t = now + (t - now)
        self._arrival_eid = next(self._eid)

    def _start_closed_loop(self) -> None:
        clients = self.sc.workload.arrival.clients
        for c in range(clients):
            first = self.think() / 1000 if self.think else 0.0
            self.at(first, self._on_client_send, c)
        self.at(self.sc.duration_s, self._arrivals_done)

    def _on_client_send(self, client: int) -> None:
        if self.env._now >= self.sc.duration_s:
            return
        self._new_request(client)

    def _client_ready(self, client: int, turned_away: bool) -> None:
        think = self.think() / 1000 if self.think else 0.0
        if turned_away and think < CLIENT_MIN_BACKOFF_S:
            think = CLIENT_MIN_BACKOFF_S
        if self.env._now + think < self.sc.duration_s:
            self.at(think, self._on_client_send, client)

    def _arrivals_done(self, _: object = None) -> None:
        self.arrivals_over = True
        if self.outstanding == 0:
            self._drain()

    def _drain(self) -> None:
        """Every request has ended and no more will come: stop after what is due now (as
        SimPy's ``run(until=event)`` would, one event later)."""
        if not self.drained:
            self.drained = True
            self.at(0.0, self._stop)

    def _new_request(self, client: int) -> None:
        now = self.env._now
        rid = self.next_id
        self.next_id = rid + 1
        gw_index = rid % self.gw_count
        gw = self.gateways[gw_index]
        key, agent_type = self.next_request()
        is_publish = agent_type < 0
        req = Request(
            gw_index,
            PUBLISH if is_publish else RPC,
            agent_type,
            key,
            now,
            now + self.timeout_s,
            client,
        )
        self.outstanding += 1
        if self.admission:
            api_key = self.valid_key
            if self.unauthorized and self.coin() < self.unauthorized:
                api_key = "not-a-valid-key"
            denied = gw.admit(now, api_key)
            if denied is not None:
                self._finish(req, denied)
                return
        if self.budgeted:
            gw.request_started(now)
        if is_publish:
            self._publish(req, gw)
        else:
            # ``_track_deadline(req)``, inlined: once per request
            self.deadlines.append(req)
            if not self.timer_armed:
                self.timer_armed = True
                self.at(req.deadline - now, self._on_deadline_timer)
            if self.cache is not None:
                delay = self._cache_access(req, now)
                if delay > 0:
                    self.at(delay, self._dispatch, req)
                    return
            self._dispatch(req)

    def _cache_access(self, req: Request, now: float) -> float:
        """The gateway reads (or updates, write-through) the agent's object through its cache
        before forwarding; returns how long that took."""
        access = self.gw_caches[req.gw].access(self.key_names[req.key], now, self.cache_coin())
        if access is None:
            return 0.0
        if access.unavailable:
            self.cache_down += 1
        self.cache_t.append(now)
        self.cache_layer.append(access.layer)
        self.cache_stale.append(access.stale)
        return access.latency_s

    def _publish(self, req: Request, gw: GatewayPolicy) -> None:
        topic = TopicId(self.mix.topic(), self.key_names[req.key])
        recipients = self.subscriptions.recipients(topic)
        req.pending = req.fanout = len(recipients)
        if not recipients:
            self._finish(req, OK)
            return
        for agent in recipients:
            child = Request(
                req.gw, PUBLISH, self.type_index[agent.type], req.key, req.arrival, req.deadline
            )
            child.parent = req
            self._track_deadline(child)
            self._dispatch(child)

    # -- gateway → worker ---------------------------------------------------------------------
    def _dispatch(self, req: Request, hedge: bool = False) -> None:
        if req.done:
            return
        now = self.env._now
        gw = self.gateways[req.gw]
        try:
            name = gw.route(
                self.agent_types[req.agent_type], self.key_names[req.key], now, req.tried
            )
        except NoWorkerAvailable as exc:
            if not hedge:  # a hedge with nowhere to go is simply not sent
                unknown = isinstance(exc, UnknownAgentType)
                self._finish(req, Detail.UNKNOWN_TYPE if unknown else Detail.NO_WORKER)
            return
        if hedge:
            if not gw.hedge_allowed(now):
                return
            req.hedges += 1
        worker = self.by_name[name]
        # Attempt(req, worker.index, now) without the call: two of these per request matter
        att = _new_attempt(Attempt)
        att.req = req
        att.worker = worker.index
        att.t_sent = now
        att.active = True
        if req.live:  # a hedge: the earlier attempt stays in flight
            if req.extra is None:
                req.extra = [req.att]  # type: ignore[list-item]
            else:
                req.extra.append(req.att)  # type: ignore[arg-type]
        req.att = att
        req.attempts += 1
        req.live += 1
        req.worker = worker.index
        gw.local.dispatched(name)
        if req.attempts == 1:
            req.service_ms = self.service()
        if self.extras:
            if self.guarded:
                gw.dispatched(name, now)
            if self.attempt_timer is not None:
                self.attempt_timer.push(att, now)
            if self.hedge_timer is not None and req.hedges < self.hedge_max:
                self.hedge_timer.push(att, now)
        if self.batchers is not None:
            self._batch_add(req.gw, worker, att, now)
            return
        delay = self.fixed_hop_s + gw.view.lookup_cost_s + worker.extra_s
        if self.net is not None:
            delay += self.net() / 1000
        if delay > 0:
            self.at(delay, self._worker_receive, att)
        else:
            self._worker_receive(att)

    def _worker_receive(self, att: Attempt) -> None:
        worker = self.workers[att.worker]
        if not worker.reachable:
            self._unreachable(worker, att)
            return
        worker.received += 1
        if not att.active:  # released on the way here (deadline, timeout, a sibling won)
            worker.expired += 1
            return
        att.t_worker = self.env._now
        if worker.busy < worker.concurrency:
            self._start(worker, att)
            return
        queue = worker.queue
        if len(queue) >= worker.queue_limit:
            # released attempts hold no place in the queue; they gather at the head (one
            # timeout per run, FIFO), so popping them is amortised O(1)
            while queue and not queue[0].active:
                queue.popleft()
                worker.expired += 1
        if len(queue) < worker.queue_limit:
            queue.append(att)
            if len(queue) > worker.max_queue:
                worker.max_queue = len(queue)
        else:
            worker.rejected += 1
            worker.errors += 1
            att.result = Detail.QUEUE_FULL
            self._reply(worker, att)

    def _unreachable(self, worker: Worker, att: Attempt) -> None:
        """An attempt reached a dead or cut-off worker."""
        self.sent_to_unreachable += 1
        faults = worker.faults
        if faults.alive or faults.hang or faults.partitioned:
            return  # partitioned, or a frozen host: nothing comes back
        # a killed process: the connection is refused, which the gateway hears one hop later
        att.result = Detail.WORKER_LOST
        self._send_back(worker, att)

    def _start(self, worker: Worker, att: Attempt) -> None:
        worker.busy += 1
        ms = att.req.service_ms / worker.speed
        if self.state is not None:
            # state calls wait on the network, not the CPU: no speed factor
            ms += self._state_read(worker, att, self.env._now) * 1000
        worker.busy_ms += ms
        now = self.env._now
        if self.crashable:  # only a crash needs to know what is in service
            att.t_end = now + ms / 1000
            worker.serving[att] = None
        # ``self.at(ms / 1000, self._on_complete, att)``, inlined: once per request
        heappush(self._heap, (now + ms / 1000, NORMAL, next(self._eid), self._on_complete, att))

    def _on_complete(self, att: Attempt) -> None:
        worker = self.workers[att.worker]
        if self.crashable and att not in worker.serving:
            return  # the worker crashed while serving it
        now = self.env._now
        if self.state is not None and att.write == _WRITE_DUE:
            # the work is done; the reply waits for the state write's acknowledgement
            latency = self._state_write(worker, att, now)
            worker.busy_ms += latency * 1000
            att.t_end = now + latency
            self.at(latency, self._on_complete, att)
            return
        if self.crashable:
            del worker.serving[att]
        worker.busy -= 1
        worker.served += 1
        worker.rt_ewma_ms += WORKER_EWMA_ALPHA * ((now - att.t_worker) * 1000 - worker.rt_ewma_ms)
        if worker.error_rate and self.fault_coin() < worker.error_rate:
            att.result = Detail.WORKER_ERROR
            worker.errors += 1
        elif self.state is not None and att.write == _REJECTED:
            att.result = Detail.CONFLICT  # the store's doing, not the worker's: no error count
        else:
            att.result = OK
        if worker.reachable:  # ``_reply``, inlined for the common case of no delay back
            if self.net is None and not worker.extra_s:
                self._gateway_reply(att)
            else:
                self._send_back(worker, att)
        queue = worker.queue
        while queue:
            nxt: Attempt = queue.popleft()
            if not nxt.active or nxt.req.deadline <= now:
                # the caller's deadline travels with the request (as gRPC's does): a worker
                # does not start work nobody is waiting for any more
                worker.expired += 1
                continue
            self._start(worker, nxt)
            break

    # -- agent state --------------------------------------------------------------------------
    def _state_key(self, req: Request) -> str:
        key = self.key_names[req.key]
        return f"{self.agent_types[req.agent_type]}/{key}" if self.mix.multi_type else key

    def _state_read(self, worker: Worker, att: Attempt, now: float) -> float:
        """The agent reads its state before working (if this request does); decides whether
        it writes afterwards. Returns the read's latency in seconds."""
        store = self.state
        assert store is not None
        att.base = -1
        reads, writes = store.plan(self.state_coin(), self.state_coin())
        att.write = _WRITE_DUE if writes else _NO_WRITE
        if not reads:
            return 0.0
        session = worker.name if self.state_session else None
        res = store.read(self._state_key(att.req), now, session)
        att.base = res.version
        return res.latency_s

    def _state_write(self, worker: Worker, att: Attempt, now: float) -> float:
        store = self.state
        assert store is not None
        session = worker.name if self.state_session else None
        base = att.base if att.base >= 0 else None
        res = store.write(self._state_key(att.req), now, session, base)
        att.write = _REJECTED if res.version is None else _WROTE
        return res.latency_s

    # -- batching -----------------------------------------------------------------------------
    def _batch_add(self, gw_index: int, worker: Worker, att: Attempt, now: float) -> None:
        batcher = self.batchers[gw_index]  # type: ignore[index]
        batch, generation = batcher.add(worker.index, att, now)
        if batch is not None:
            self._send_batch(gw_index, worker, batch)
        elif generation is not None:
            self.at(
                self.batching.max_delay_s,
                self._on_batch_timer,
                (gw_index, worker.index, generation),
            )

    def _on_batch_timer(self, due: tuple[int, int, int]) -> None:
        gw_index, index, generation = due
        batch = self.batchers[gw_index].expire(index, generation, self.env._now)  # type: ignore[index]
        if batch is not None:
            self._send_batch(gw_index, self.workers[index], batch)

    def _send_batch(self, gw_index: int, worker: Worker, atts: list[Attempt]) -> None:
        """One hop carries the whole batch (one network delay, one lookup cost)."""
        delay = self.fixed_hop_s + self.gateways[gw_index].view.lookup_cost_s + worker.extra_s
        if self.net is not None:
            delay += self.net() / 1000
        self.at(delay, self._on_batch_receive, _Batch(atts, gw_index, worker.index))

    def _on_batch_receive(self, batch: _Batch) -> None:
        worker = self.workers[batch.worker]
        if not worker.reachable:
            for att in batch.atts:
                self._unreachable(worker, att)
            return
        atts = batch.atts
        worker.received += len(atts)
        live = [a for a in atts if a.active]
        worker.expired += len(atts) - len(live)
        if not live:
            return
        now = self.env._now
        for a in live:
            a.t_worker = now
        batch.atts = live
        if worker.busy < worker.concurrency:
            self._start_batch(worker, batch)
            return
        # the queue limit counts requests, as without batching
        queue = worker.queue
        waiting = _queued(worker)
        if waiting + len(live) > worker.queue_limit:
            while queue and not queue[0].active:
                worker.expired += len(queue.popleft().atts)
            waiting = _queued(worker)
        if waiting + len(live) <= worker.queue_limit:
            queue.append(batch)
            waiting += len(live)
            if waiting > worker.max_queue:
                worker.max_queue = waiting
            return
        worker.rejected += len(live)
        worker.errors += len(live)
        for a in live:
            a.result = Detail.QUEUE_FULL
        self._reply_batch(worker, live)

    def _start_batch(self, worker: Worker, batch: _Batch) -> None:
        """Serve a batch: one fixed cost, then every message's own work."""
        now = self.env._now
        worker.busy += 1
        cfg = self.batching
        self.batchers[batch.gw].served(len(batch.atts), now)  # type: ignore[index]
        work_ms = sum(a.req.service_ms for a in batch.atts)
        n = len(batch.atts)
        ms = (cfg.batch_cost_s * 1000 + n * cfg.message_cost_s * 1000 + work_ms) / worker.speed
        if self.state is not None:
            # the batch's state reads go out together: the slowest one holds the batch
            ms += max(self._state_read(worker, a, now) for a in batch.atts) * 1000
        worker.busy_ms += ms
        batch.t_end = now + ms / 1000
        if self.crashable:
            worker.serving[batch] = None
        self.at(ms / 1000, self._on_batch_complete, batch)

    def _on_batch_complete(self, batch: _Batch) -> None:
        worker = self.workers[batch.worker]
        if self.crashable and batch not in worker.serving:
            return  # the worker crashed while serving it
        now = self.env._now
        atts = batch.atts
        if self.state is not None and not batch.writing:
            batch.writing = True
            due = [a for a in atts if a.write == _WRITE_DUE]
            if due:
                latency = max(self._state_write(worker, a, now) for a in due)
                worker.busy_ms += latency * 1000
                batch.t_end = now + latency
                self.at(latency, self._on_batch_complete, batch)
                return
        if self.crashable:
            del worker.serving[batch]
        worker.busy -= 1
        worker.served += len(atts)
        for a in atts:
            worker.rt_ewma_ms += WORKER_EWMA_ALPHA * ((now - a.t_worker) * 1000 - worker.rt_ewma_ms)
            if worker.error_rate and self.fault_coin() < worker.error_rate:
                a.result = Detail.WORKER_ERROR
                worker.errors += 1
            elif self.state is not None and a.write == _REJECTED:
                a.result = Detail.CONFLICT
            else:
                a.result = OK
        self._reply_batch(worker, atts)
        queue = worker.queue
        while queue:
            nxt: _Batch = queue.popleft()
            live = self._still_wanted(worker, nxt, now)
            if not live:
                continue
            # batches waiting together are served together, up to the limit
            limit = self.batchers[nxt.gw].limit  # type: ignore[index]
            nxt.atts = coalesce(live, queue, limit, lambda b: self._still_wanted(worker, b, now))
            self._start_batch(worker, nxt)
            break

    @staticmethod
    def _still_wanted(worker: Worker, batch: _Batch, now: float) -> list[Attempt]:
        live = [a for a in batch.atts if a.active and a.req.deadline > now]
        worker.expired += len(batch.atts) - len(live)
        if len(live) != len(batch.atts):
            batch.atts = live
        return live

    def _reply_batch(self, worker: Worker, atts: list[Attempt]) -> None:
        """Replies travel back together, as the batch came."""
        if not worker.reachable:
            return
        delay = self.net() / 1000 if self.net is not None else 0.0
        delay += worker.extra_s
        self.at(delay, self._on_batch_reply, atts)

    def _on_batch_reply(self, atts: list[Attempt]) -> None:
        for att in atts:
            self._gateway_reply(att)

    def _batch_control(self, gw_index: int):  # type: ignore[no-untyped-def]
        """Adaptive batching: the controller decides once per interval."""
        batcher = self.batchers[gw_index]  # type: ignore[index]
        assert batcher.controller is not None
        interval = batcher.controller.config.interval_s
        while True:
            yield self.env.timeout(interval)
            for link, batch in batcher.tick(self.env._now):
                self._send_batch(gw_index, self.workers[link], batch)  # type: ignore[index]

    # -- worker → gateway ---------------------------------------------------------------------
    def _reply(self, worker: Worker, att: Attempt) -> None:
        if not worker.reachable:
            return  # cut off: the reply is lost
        self._send_back(worker, att)

    def _send_back(self, worker: Worker, att: Attempt) -> None:
        delay = self.net() / 1000 if self.net is not None else 0.0
        delay += worker.extra_s
        if delay > 0:
            self.at(delay, self._gateway_reply, att)
        else:
            self._gateway_reply(att)

    def _release(self, att: Attempt, now: float, signal: Detail | None) -> str:
        """Release an attempt at its gateway; ``signal`` is what passive health checks hear
        (None: it was cancelled, which says nothing about the worker)."""
        att.active = False
        req = att.req
        req.live -= 1
        gw = self.gateways[req.gw]
        name = self.workers[att.worker].name
        if signal is OK:
            # this attempt's round trip only: earlier attempts and backoff are not its doing
            gw.local.finished(name, now, (now - att.t_sent) * 1000)
        else:
            gw.local.finished(name, now, None)
        if self.guarded:
            if signal is None:
                gw.attempt_cancelled(name, now)
            else:
                gw.attempt_ended(name, signal, now)
        return name

    def _gateway_reply(self, att: Attempt) -> None:
        if not att.active:
            self.late_replies += 1
            return
        now = self.env._now
        req = att.req
        detail = att.result
        if detail is OK and not self.guarded:
            # the common case, ``_release`` inlined: one call less per request
            att.active = False
            req.live -= 1
            self.gateways[req.gw].local.finished(
                self.workers[att.worker].name, now, (now - att.t_sent) * 1000
            )
            req.worker = att.worker
            self._finish(req, OK)
            return
        name = self._release(att, now, detail)
        if detail is OK:
            req.worker = att.worker
            self._finish(req, OK)
            return
        self._attempt_failed(req, name, detail, now)

    def _attempt_failed(self, req: Request, name: str, detail: Detail, now: float) -> None:
        """An attempt ended badly: wait for a sibling still in flight, retry, or give up."""
        elsewhere = detail not in RETRY_SAME_WORKER
        if req.live:
            # a sibling is still out and its outcome decides; a retry after it avoids this one
            if elsewhere:
                _avoid(req, name)
            return
        gw = self.gateways[req.gw]
        delay = gw.after_attempt(detail, req.attempts, now, req.deadline)
        if delay is None:
            self._finish(req, detail)
            return
        if elsewhere:
            _avoid(req, name)
        self.at(delay, self._dispatch, req)

    # -- per-attempt timeouts and hedges ------------------------------------------------------
    def _attempt_timed_out(self, att: Attempt, now: float) -> None:
        if not att.active:
            return
        name = self._release(att, now, Detail.ATTEMPT_TIMEOUT)
        self._attempt_failed(att.req, name, Detail.ATTEMPT_TIMEOUT, now)

    def _hedge_due(self, att: Attempt, now: float) -> None:
        """The newest attempt has been out ``hedge_after``: send one more copy elsewhere."""
        req = att.req
        if not att.active or req.done or att is not req.att or req.hedges >= self.hedge_max:
            return
        _avoid(req, self.workers[att.worker].name)
        self._dispatch(req, hedge=True)

    # -- deadlines ----------------------------------------------------------------------------
    def _track_deadline(self, req: Request) -> None:
        self.deadlines.append(req)
        if not self.timer_armed:
            self.timer_armed = True
            self.at(req.deadline - self.env._now, self._on_deadline_timer)

    def _on_deadline_timer(self, _: Any) -> None:
        now = self.env._now
        deadlines = self.deadlines
        while deadlines and (deadlines[0].done or deadlines[0].deadline <= now):
            req = deadlines.popleft()
            if req.done:
                continue
            self._finish(req, Detail.DEADLINE)
        if deadlines:
            self.at(deadlines[0].deadline - now, self._on_deadline_timer)
        else:
            self.timer_armed = False

    # -- endings ------------------------------------------------------------------------------
    def _finish(self, req: Request, detail: Detail) -> None:
        req.done = True
        if req.live:
            # attempts still out are cancelled; at the deadline they count as the worker's
            # timeouts, after a sibling's success they say nothing about their worker
            now = self.env._now
            signal = Detail.DEADLINE if detail is Detail.DEADLINE else None
            att = req.att
            if att is not None and att.active:
                self._release(att, now, signal)
            if req.extra:
                for other in req.extra:
                    if other.active:
                        self._release(other, now, signal)
        # a request and its attempts point at each other; nothing reads ``req.att`` once it is
        # done, so breaking the cycle here lets reference counting free both (see ``run``)
        req.att = None
        req.extra = None
        parent = req.parent
        if parent is not None:
            # a publish ends as badly as its worst delivery, with its most-retried attempts
            if SEVERITY[detail] > SEVERITY[parent.worst]:
                parent.worst = detail
            if req.attempts > parent.attempts:
                parent.attempts = req.attempts
            parent.pending -= 1
            if parent.pending == 0:
                self._finish(parent, parent.worst)
            return
        now = self.env._now
        if detail is Detail.DEADLINE:
            now = req.deadline
        self.add_record(
            pack_row(
                req.gw,
                req.kind,
                req.agent_type,
                req.key,
                req.worker,
                req.arrival,
                now,
                detail,
                req.attempts,
                req.fanout,
            )
        )
        self.outstanding -= 1
        if self.aimd:
            self.batchers[req.gw].observe(now - req.arrival, detail)  # type: ignore[index]
        if req.client >= 0:
            self._client_ready(req.client, now == req.arrival and detail is not OK)
        if self.arrivals_over and self.outstanding == 0:
            self._drain()

    # -- events -------------------------------------------------------------------------------
    def _event(self, t: float, worker: str, source: str, event: str, gateway: str = "") -> None:
        self.events.append(
            {"t_s": t, "worker": worker, "source": source, "event": event, "gateway": gateway}
        )

    def _on_health_change(self, worker: str, old: Health, new: Health, now: float) -> None:
        self.health_changes += 1
        self._event(now, worker, "registry", str(new))

    def _gateway_listener(self, gateway: str) -> Callable[[str, str, str, float], None]:
        def listener(worker: str, source: str, event: str, now: float) -> None:
            self._event(now, worker, source, event, gateway)

        return listener

    # -- faults -------------------------------------------------------------------------------
    def _schedule_faults(self) -> None:
        for inst in self.faults:
            self.at(inst.start_s, self._on_fault, (inst, True))
            if inst.end_s is not None:
                self.at(inst.end_s, self._on_fault, (inst, False))

    def _on_fault(self, change: tuple[FaultInstance, bool]) -> None:
        inst, starting = change
        now = self.env._now
        targets = [self.by_name[n] for n in inst.workers] if inst.workers else list(self.workers)
        if not inst.workers:
            self._event(now, "", "fault", inst.kind if starting else f"{inst.kind}_end")
        for wk in targets:
            was_alive = wk.faults.alive
            wk.faults.apply(inst, starting)
            self._refresh_worker(wk)
            if was_alive and not wk.faults.alive:
                self._crash(wk, now)
            elif not was_alive and wk.faults.alive:
                self._restart(wk, now)
            elif inst.workers:
                self._event(now, wk.name, "fault", inst.kind if starting else f"{inst.kind}_end")
            if wk.reachable and wk.name in self.unregistered:
                # restarted inside a partition: it registers when the partition heals
                self.unregistered.discard(wk.name)
                self.registry.register(wk.name, self.agent_types, now, capacity=wk.concurrency)

    def _refresh_worker(self, wk: Worker) -> None:
        f = wk.faults
        wk.reachable = f.reachable
        wk.speed = wk.base_speed / f.slowdown
        wk.error_rate = f.error_rate
        wk.extra_s = f.extra_s

    def _crash(self, wk: Worker, now: float) -> None:
        """The process dies with its work; the gateway hears of it only as the connection
        mode allows (see ``labkit.core.faults``)."""
        self._event(now, wk.name, "fault", "crash")
        for a in wk.serving:
            wk.busy_ms -= max(0.0, a.t_end - now) * 1000
        # the next heartbeat reports busy time since the last one: never below zero
        wk.last_busy_ms = min(wk.last_busy_ms, wk.busy_ms)
        lost = [a for a in _flat(wk.serving) if a.active] + [a for a in _flat(wk.queue) if a.active]
        wk.serving.clear()
        wk.queue.clear()
        if self.state is not None:
            self.state.forget_session(wk.name)  # its session tokens lived in its memory
        wk.busy = 0
        wk.lost += len(lost)
        if not wk.faults.hang and not wk.faults.partitioned:
            for att in lost:
                att.result = Detail.WORKER_LOST
                self._send_back(wk, att)

    def _restart(self, wk: Worker, now: float) -> None:
        """Back with an empty queue, registered afresh (once the registry can hear it)."""
        self._event(now, wk.name, "fault", "restart")
        wk.rt_ewma_ms = 0.0
        if wk.reachable:
            self.registry.register(wk.name, self.agent_types, now, capacity=wk.concurrency)
        else:
            self.unregistered.add(wk.name)

    def _schedule_cache_events(self) -> None:
        spec = self.sc.cache
        assert spec is not None
        for f in spec.failures:
            self.at(f.at_s, self._on_cache_node, (f.node, True))
            if f.duration_s is not None:
                self.at(f.at_s + f.duration_s, self._on_cache_node, (f.node, False))
        for inv in spec.invalidations:
            self.at(inv.at_s, self._on_invalidation, inv.pattern)

    def _on_cache_node(self, change: tuple[str, bool]) -> None:
        node, failing = change
        now = self.env._now
        cache = self.cache
        assert cache is not None
        moved = cache.fail_node(node, now) if failing else cache.recover_node(node, now)
        self.cache_events.append(
            {
                "t_s": now,
                "node": node,
                "event": "crash" if failing else "restart",
                "keys_moved": round(moved, 6),
                "alive_nodes": len(cache.alive_nodes()),
            }
        )

    def _on_invalidation(self, pattern: str) -> None:
        now = self.env._now
        cache = self.cache
        assert cache is not None
        dropped = cache.invalidate(pattern, now)
        dropped_l1 = sum(g.invalidate(pattern, now) for g in self.gw_caches)
        self.cache_events.append(
            {
                "t_s": now,
                "node": "",
                "event": f"invalidate {pattern}",
                "keys_dropped": dropped,
                "l1_dropped": dropped_l1,
            }
        )

    # -- background processes -----------------------------------------------------------------
    def _heartbeats(self, bucket: int, buckets: int):  # type: ignore[no-untyped-def]
        """Workers heartbeat every interval, spread over ``buckets`` phases; reports age."""
        interval = self.sc.registry.heartbeat_interval_ms / 1000
        env = self.env
        registry = self.registry
        mine = self.workers[bucket::buckets]
        report_t, report_w = self.report_t, self.report_w
        report_cpu, report_active = self.report_cpu, self.report_active
        yield env.timeout(interval * bucket / buckets)
        while True:
            now = env._now
            for wk in mine:
                if not wk.reachable:
                    continue  # dead or cut off: no heartbeat reaches the registry
                capacity_ms = interval * 1000 * wk.concurrency
                received = wk.received - wk.last_received
                report = LoadReport(
                    cpu=min(1.0, (wk.busy_ms - wk.last_busy_ms) / capacity_ms),
                    active=wk.busy + _queued(wk),
                    capacity=wk.concurrency,
                    rt_ewma_ms=wk.rt_ewma_ms,
                    error_rate=(wk.errors - wk.last_errors) / received if received else 0.0,
                    at=now,
                )
                wk.last_busy_ms = wk.busy_ms
                wk.last_errors = wk.errors
                wk.last_received = wk.received
                wk.queue_sum += _queued(wk)
                wk.queue_samples += 1
                registry.heartbeat(wk.name, now, report)
                report_t.append(now)
                report_w.append(wk.index)
                report_cpu.append(report.cpu)
                report_active.append(report.active)
            yield env.timeout(interval)

    def _detector(self):  # type: ignore[no-untyped-def]
        interval = self.sc.registry.check_interval_ms / 1000
        while True:
            yield self.env.timeout(interval)
            self.registry.evaluate(self.env._now)

    def _sampler(self):  # type: ignore[no-untyped-def]
        env = self.env
        t, n = self.samples_t, self.samples_n
        while True:
            t.append(env._now)
            n.append(self.outstanding)
            yield env.timeout(SAMPLE_INTERVAL_S)

    def _health_sampler(self):  # type: ignore[no-untyped-def]
        """Once a second: each worker's truth, registry verdict and gateway view (as codes)."""
        env = self.env
        registry = self.registry
        actual_code = {s: i for i, s in enumerate(ACTUAL_STATES)}
        health_code = {h: i for i, h in enumerate(REGISTRY_STATES)}
        names = [wk.name for wk in self.workers]
        guarded = [g for g in self.gateways if g.guards]
        while True:
            now = env._now
            codes = np.empty((3, len(self.workers)), dtype=np.int8)
            codes[0] = [actual_code[wk.faults.actual] for wk in self.workers]
            codes[1] = [health_code[registry.health_of(n)] for n in names]
            codes[2] = 0
            for g in guarded:
                state = np.asarray(g.passive_states(names, now), dtype=np.int8)
                np.maximum(codes[2], state, out=codes[2])
            self.health_t.append(now)
            self.health_codes.append(codes)
            yield env.timeout(1.0)

    def _alert_loop(self):  # type: ignore[no-untyped-def]
        """Evaluate the alert rules on the metric stream every evaluation interval."""
        manager = self.alerts
        assert manager is not None
        interval = manager.config.evaluation_interval_s
        slo = self.sc.slo
        env = self.env
        read_from = 0
        while True:
            yield env.timeout(interval)
            now = env._now
            values, events, bad, read_from = window_metrics(self.log, read_from, now, interval, slo)
            values.update(fleet_metrics(self.registry, self.gateways, now, self.outstanding))
            manager.evaluate(now, Sample(values=values, events=events, bad_events=bad))

    def _progress(self):  # type: ignore[no-untyped-def]
        step = self.sc.duration_s / 100
        while True:
            self.progress(min(1.0, self.env._now / self.sc.duration_s))  # type: ignore[misc]
            yield self.env.timeout(step)

    # -- run ----------------------------------------------------------------------------------
    def run(self) -> Results:
        env = self.env
        started = time.perf_counter()
        buckets = min(len(self.workers), 10)
        for b in range(buckets):
            env.process(self._heartbeats(b, buckets))
        env.process(self._detector())
        env.process(self._sampler())
        env.process(self._health_sampler())
        if self.alerts is not None:
            env.process(self._alert_loop())
        self._schedule_faults()
        if self.batchers is not None and self.aimd:
            for gw_index in range(len(self.batchers)):
                env.process(self._batch_control(gw_index))
        if self.cache is not None:
            self._schedule_cache_events()
        if self.progress is not None:
            env.process(self._progress())
        if self.arrivals is not None:
            self._next_open_arrival()
        else:
            self._start_closed_loop()
        # Every request ends by its deadline at the latest, so the run must drain by then.
        limit = self.sc.duration_s + self.timeout_s + self.sc.gateway.retry_cap_ms / 1000 + 1.0
        self.at(limit, self._stop)  # the watchdog
        # The run allocates a few objects per request and frees them by reference counting
        # (``_finish`` breaks the one cycle); the cyclic collector would only walk the live
        # ones, again and again, for nothing: a tenth of the run's time. So it pauses for the
        # loop, and for building the results too (pandas allocates enough to set off a full
        # collection over every request still held, a few percent of the run), and resumes
        # after.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._loop()
            if not self.drained:
                raise LabkitError(
                    f"simulation did not drain by t={limit:g}s: {self.outstanding} requests "
                    "still open (a bug in labkit; please report it with the scenario)"
                )
            if self.progress is not None:
                self.progress(1.0)
            end = env._now
            wall = time.perf_counter() - started
            results = self._results(end, wall)
            # the finished requests are garbage now; free them here rather than whenever the
            # collector gets to this simulator (it sits in reference cycles)
            self.deadlines.clear()
            return results
        finally:
            if collecting:
                gc.enable()

    def _results(self, end: float, wall: float) -> Results:
        sc = self.sc
        span = max(end, sc.duration_s)
        workers = pd.DataFrame(
            {
                "worker": [w.name for w in self.workers],
                "speed": [w.base_speed for w in self.workers],
                "received": [w.received for w in self.workers],
                "served": [w.served for w in self.workers],
                "rejected": [w.rejected for w in self.workers],
                "expired": [w.expired for w in self.workers],
                "errors": [w.errors for w in self.workers],
                "lost": [w.lost for w in self.workers],
                "busy_s": [w.busy_ms / 1000 for w in self.workers],
                "utilization": [w.busy_ms / 1000 / (span * w.concurrency) for w in self.workers],
                "mean_queue": [
                    w.queue_sum / w.queue_samples if w.queue_samples else 0.0 for w in self.workers
                ],
                "max_queue": [w.max_queue for w in self.workers],
                "rt_ewma_ms": [w.rt_ewma_ms for w in self.workers],
            }
        )
        samples = pd.DataFrame({"t_s": self.samples_t, "in_flight": self.samples_n})
        measured = samples[(samples["t_s"] >= sc.warmup_s) & (samples["t_s"] < sc.duration_s)]
        n_records = len(self.log)
        extra = {
            "sim": {
                "end_s": round(end, 6),
                "wall_s": round(wall, 3),
                "requests_per_wall_s": round(n_records / wall, 1) if wall > 0 else None,
                "late_replies": self.late_replies,
                "mean_in_flight": round(float(measured["in_flight"].mean()), 6)
                if len(measured)
                else None,
                "registry_refreshes": sum(getattr(g.view, "refreshes", 0) for g in self.gateways),
                "health_changes": self.health_changes,
            },
            "resilience": resilience_counts(self.gateways),
            "registry": self._registry_summary(),
        }
        data = consistency_results(
            sc,
            state=self.state,
            cache=self._cache_log() if self.cache is not None else None,
            batching=self._batching_log() if self.batchers is not None else None,
        )
        extra.update(data.summary)
        names = [w.name for w in self.workers]
        results = build_results(
            sc,
            self.log,
            driver="sim",
            agent_types=self.agent_types,
            worker_names=names,
            workers=workers,
            samples=samples,
            extra=extra,
            faults=faults_frame(self.faults),
            events=events_frame(self.events),
            health=health_frame(self.health_t, self.health_codes, names),
            alerts=self.alerts,
            data=data,
        )
        results.load_reports = load_reports_frame(
            self.report_t, self.report_w, self.report_cpu, self.report_active, names
        )
        return results

    def _registry_summary(self) -> dict[str, Any]:
        """How stale the gateways' views were and what it cost (misroutes)."""
        views = [g.view for g in self.gateways]
        return {
            "consistency": self.sc.registry.consistency,
            "misroutes": sum(g.misroutes for g in self.gateways),
            "stale_lookups": sum(getattr(v, "stale_pools", 0) for v in views),
            "refreshes": sum(getattr(v, "refreshes", 0) for v in views),
            "pushed_updates": sum(getattr(v, "updates", 0) for v in views),
            "sent_to_unreachable": self.sent_to_unreachable,
        }

    def _cache_log(self) -> dict[str, Any]:
        cache = self.cache
        assert cache is not None
        l1: dict[str, int] = {}
        for g in self.gw_caches:
            for k, v in g.counters.items():
                l1[k] = l1.get(k, 0) + v
        return {
            "t": self.cache_t,
            "layer": self.cache_layer,
            "stale": self.cache_stale,
            "events": self.cache_events,
            "counters": dict(cache.counters),
            "l1_counters": l1,
            "unavailable": self.cache_down,
        }

    def _batching_log(self) -> dict[str, Any]:
        batchers = self.batchers
        assert batchers is not None
        history = [
            (t, i, limit, p99)
            for i, b in enumerate(batchers)
            if b.controller is not None
            for t, limit, p99 in b.controller.history
        ]
        return {"summary": batch_size_summary(batchers), "history": history}


from labkit.distributions import parse_distribution  # noqa: E402


def _avoid(req: Request, worker: str) -> None:
    """Later attempts of ``req`` go elsewhere than ``worker`` (the balancer's ``exclude``)."""
    if req.tried is None:
        req.tried = [worker]
    elif worker not in req.tried:
        req.tried.append(worker)


class _FifoTimer:
    """Timeouts of one fixed length: items expire in the order they were pushed.

    Since every item waits the same ``delay``, one armed event (for the oldest item) serves
    them all, as the deadline FIFO does.
    """

    __slots__ = ("armed", "delay", "fire", "items", "sim")

    def __init__(self, sim: FleetSim, delay: float, fire: Callable[[Attempt, float], None]) -> None:
        self.sim = sim
        self.delay = delay
        self.fire = fire
        self.items: deque[tuple[float, Attempt]] = deque()
        self.armed = False

    def push(self, item: Attempt, now: float) -> None:
        self.items.append((now + self.delay, item))
        if not self.armed:
            self.armed = True
            self.sim.at(self.delay, self._on_timer)

    def _on_timer(self, _: Any) -> None:
        now = self.sim.env._now
        items = self.items
        while items and items[0][0] <= now:
            _, item = items.popleft()
            if item.active:
                self.fire(item, now)
        while items and not items[0][1].active:
            items.popleft()
        if items:
            self.sim.at(items[0][0] - now, self._on_timer)
        else:
            self.armed = False


# ``Attempt.__new__``, not ``object.__new__``: the same function in pure Python, but a class
# compiled with mypyc refuses ``object.__new__`` (and mypyc compiles a call to
# ``Attempt.__new__`` written at the call site into one to ``object.__new__``)
_new_attempt = Attempt.__new__
_UNIFORM = parse_distribution({"dist": "uniform", "low": 0, "high": 1}, unit="")


def simulate(scenario: Scenario, progress: Callable[[float], None] | None = None) -> Results:
    """Run one scenario on the SimPy driver; deterministic for a given scenario and seed."""
    return FleetSim(scenario, progress).run()
