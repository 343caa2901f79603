"""The SimPy driver: a fleet of workers behind one or more gateways, on simulated time.

Speed matters (hundreds of thousands of requests per run), so a request is not a SimPy process:
it is a small slotted object moved along by scheduled callbacks — arrival, (hop to the worker),
service completion, (hop back) — two events per request in the idealized case. Every decision
(admission, lookup, worker choice, retry) is delegated to the policy core in ``labkit.core``.

Deadlines cost almost nothing: requests enter a FIFO in deadline order (the timeout is one
value per run), and a single timer is armed for the earliest request still in flight.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from heapq import heappush
from typing import Any

import numpy as np
import pandas as pd
import simpy
from simpy.core import NORMAL
from simpy.events import Event

from labkit.core.balancing import LocalLoad, make_balancer
from labkit.core.gateway import GatewayConfig, GatewayPolicy, RetryPolicy, UnknownAgentType
from labkit.core.outcomes import SEVERITY, Detail
from labkit.core.registry import (
    EventualView,
    LoadReport,
    Registry,
    RegistryView,
    StrongView,
    TimeoutDetector,
)
from labkit.core.routing import SubscriptionIndex, TopicId, TypePrefixSubscription, TypeSubscription
from labkit.distributions import BatchSampler
from labkit.errors import LabkitError, NoWorkerAvailable
from labkit.results import RecordLog, Results, build_results
from labkit.scenario import Scenario
from labkit.sim.workload import Arrivals, IntSampler, key_sampler

RPC, PUBLISH = 0, 1
OK = Detail.OK
#: how often (simulated seconds) the number of requests in the system is sampled
SAMPLE_INTERVAL_S = 0.02
#: a closed-loop client turned away at once (rate limited, no worker) waits at least this long
#: before sending again, as real clients back off; with zero think time it would otherwise
#: resend at the same simulated instant forever
CLIENT_MIN_BACKOFF_S = 0.001
#: weight of the newest sample in a worker's own response-time EWMA
WORKER_EWMA_ALPHA = 0.1


class _Call(Event):
    """A scheduled function call: the cheapest event SimPy can process.

    Built without ``__init__`` and pushed straight onto SimPy's heap (what
    ``Environment.schedule`` does), because the simulator creates two of these per request.
    """


class Request:
    """One RPC, one publish, or one delivery of a publish to a recipient."""

    __slots__ = (
        "agent_type",
        "arrival",
        "attempts",
        "client",
        "deadline",
        "done",
        "fanout",
        "gw",
        "inflight",
        "key",
        "kind",
        "parent",
        "pending",
        "result",
        "service_ms",
        "t_sent",
        "t_worker",
        "tried",
        "worker",
        "worst",
    )

    def __init__(self, gw: int, kind: int, agent_type: int, key: int, arrival: float) -> None:
        self.gw = gw
        self.kind = kind
        self.agent_type = agent_type
        self.key = key
        self.arrival = arrival
        self.deadline = 0.0
        self.attempts = 0
        self.worker = -1
        self.done = False
        self.inflight = False
        self.tried: list[str] | None = None
        self.parent: Request | None = None
        self.pending = 0
        self.fanout = 0
        self.worst = OK
        self.result = OK
        self.service_ms = 0.0
        self.t_worker = 0.0
        self.t_sent = 0.0
        self.client = -1


class Worker:
    """A worker process: ``concurrency`` service slots and a FIFO queue with an optional limit."""

    __slots__ = (
        "agent_types",
        "busy",
        "busy_ms",
        "concurrency",
        "errors",
        "expired",
        "index",
        "last_busy_ms",
        "last_errors",
        "last_received",
        "max_queue",
        "name",
        "queue",
        "queue_limit",
        "queue_samples",
        "queue_sum",
        "received",
        "rejected",
        "rt_ewma_ms",
        "served",
        "speed",
    )

    def __init__(
        self, index: int, name: str, speed: float, concurrency: int, queue_limit: int | None
    ):
        self.index = index
        self.name = name
        self.speed = speed
        self.concurrency = concurrency
        self.queue_limit = queue_limit if queue_limit is not None else 1 << 62
        self.busy = 0
        self.queue: deque[Request] = deque()
        self.received = 0
        self.served = 0
        self.rejected = 0
        self.expired = 0
        self.errors = 0
        self.busy_ms = 0.0
        self.rt_ewma_ms = 0.0
        self.max_queue = 0
        self.queue_sum = 0
        self.queue_samples = 0
        self.last_busy_ms = 0.0
        self.last_errors = 0
        self.last_received = 0


class FleetSim:
    def __init__(self, scenario: Scenario, progress: Callable[[float], None] | None = None) -> None:
        self.sc = sc = scenario
        self.env = env = simpy.Environment()
        # the pieces of Environment.schedule, bound once (see ``at``)
        self._heap = env._queue
        self._eid = env._eid
        self.progress = progress
        seeds = np.random.SeedSequence(sc.seed).spawn(12)
        rngs = [np.random.default_rng(s) for s in seeds]
        py_seed = [int(s.generate_state(1)[0]) for s in seeds]

        w = sc.workers
        self.agent_types = list(w.agent_types)
        self.type_index = {t: i for i, t in enumerate(self.agent_types)}
        speeds = w.speed.sample(rngs[0], w.count)
        self.workers = [
            Worker(i, f"w-{i}", float(speeds[i]), w.concurrency, w.queue_limit)
            for i in range(w.count)
        ]
        self.by_name = {wk.name: wk for wk in self.workers}

        # registry + failure detection
        r = sc.registry
        self.registry = Registry(
            TimeoutDetector(r.suspect_timeout_ms / 1000, r.failure_timeout_ms / 1000)
        )
        for wk in self.workers:
            self.registry.register(wk.name, self.agent_types, 0.0, capacity=w.concurrency)
        self.health_changes: list[dict[str, Any]] = []
        self.registry.add_listener(
            lambda wid, old, new, now: self.health_changes.append(
                {"t_s": now, "worker": wid, "from": str(old), "to": str(new)}
            )
        )

        # routing
        self.subscriptions = SubscriptionIndex()
        for sub in sc.subscriptions:
            if sub.kind == "type":
                self.subscriptions.add(TypeSubscription(sub.topic, sub.agent_type))
            else:
                self.subscriptions.add(TypePrefixSubscription(sub.topic, sub.agent_type))

        # gateways
        g = sc.gateway
        gw_config = GatewayConfig(
            overhead_s=g.overhead_ms / 1000,
            timeout_s=g.timeout_ms / 1000,
            retry=RetryPolicy(g.max_attempts, g.retry_base_ms / 1000, g.retry_cap_ms / 1000),
            rate_limit_rps=g.rate_limit_rps,
            rate_limit_burst=g.rate_limit_burst,
            api_keys=frozenset(g.api_keys) if g.api_keys else None,
        )
        self.gateways: list[GatewayPolicy] = []
        for i in range(g.count):
            view: RegistryView
            if r.consistency == "strong":
                view = StrongView(self.registry, r.lookup_cost_ms / 1000)
            else:
                view = EventualView(self.registry, r.cache_ttl_ms / 1000)
            local = LocalLoad(sc.balancer.ewma_tau_s)
            rng = random.Random(py_seed[1] + i)
            balancer = make_balancer(sc.balancer, local, view, rng)
            self.gateways.append(
                GatewayPolicy(
                    f"gw-{i}", gw_config, view, balancer, local, random.Random(py_seed[2] + i)
                )
            )
        self.valid_key = next(iter(gw_config.api_keys)) if gw_config.api_keys else None
        # admission has nothing to decide without auth or a rate limit
        self.admission = bool(gw_config.api_keys) or bool(gw_config.rate_limit_rps)

        # workload streams
        wl = sc.workload
        self.service = BatchSampler(w.service_time, rngs[3])
        latency = sc.network.latency
        # a zero-mean delay of a non-negative distribution is always zero: skip the hop events
        self.net = BatchSampler(latency, rngs[4]) if latency and latency.mean > 0 else None
        self.keys = key_sampler(wl.keys, rngs[5])
        self.key_names = [f"k{i}" for i in range(wl.keys.count)]
        self.coin = BatchSampler(_UNIFORM, rngs[6])
        shares = wl.target_types or {t: 1.0 for t in self.agent_types}
        self.multi_type = len(self.agent_types) > 1
        self.target = IntSampler(np.array([shares.get(t, 0.0) for t in self.agent_types]), rngs[7])
        self.topics = list(wl.topics)
        self.topic_pick = IntSampler(np.ones(max(1, len(self.topics))), rngs[8])
        self.publish_fraction = wl.publish_fraction
        self.unauthorized = wl.unauthorized_fraction
        self.think = BatchSampler(wl.arrival.think_time, rngs[9]) if wl.arrival.think_time else None
        self.arrivals = (
            Arrivals(wl.arrival, sc.duration_s, rngs[10])
            if wl.arrival.process != "closed"
            else None
        )
        self.gw_count = g.count
        self.timeout_s = gw_config.timeout_s
        self.fixed_hop_s = gw_config.overhead_s

        # bookkeeping
        self.log = RecordLog()
        self.deadlines: deque[Request] = deque()
        self.timer_armed = False
        self.outstanding = 0
        self.arrivals_over = False
        self.next_id = 0
        self.late_replies = 0
        self.samples_t: list[float] = []
        self.samples_n: list[int] = []
        self.drained = env.event()

    # -- scheduling ---------------------------------------------------------------------------
    def at(self, delay: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        ev = _new_call(_Call)
        ev.env = self.env
        ev.callbacks = [fn]
        ev._value = arg
        ev._ok = True
        heappush(self._heap, (self.env._now + delay, NORMAL, next(self._eid), ev))

    # -- arrivals -----------------------------------------------------------------------------
    def _next_open_arrival(self, _: Any = None) -> None:
        t = self.arrivals.next()  # type: ignore[union-attr]
        if t is None:
            self._arrivals_done()
            return
        self.at(t - self.env.now, self._on_arrival)

    def _on_arrival(self, _: Any) -> None:
        self._new_request(-1)
        self._next_open_arrival()

    def _start_closed_loop(self) -> None:
        clients = self.sc.workload.arrival.clients
        for c in range(clients):
            first = self.think() / 1000 if self.think else 0.0
            self.at(first, self._on_client_send, c)
        self.at(self.sc.duration_s, lambda _: self._arrivals_done())

    def _on_client_send(self, ev: Event) -> None:
        if self.env.now >= self.sc.duration_s:
            return
        self._new_request(ev._value)

    def _client_ready(self, client: int, turned_away: bool) -> None:
        think = self.think() / 1000 if self.think else 0.0
        if turned_away and think < CLIENT_MIN_BACKOFF_S:
            think = CLIENT_MIN_BACKOFF_S
        if self.env.now + think < self.sc.duration_s:
            self.at(think, self._on_client_send, client)

    def _arrivals_done(self) -> None:
        self.arrivals_over = True
        if self.outstanding == 0 and not self.drained.triggered:
            self.drained.succeed()

    def _new_request(self, client: int) -> None:
        now = self.env.now
        rid = self.next_id
        self.next_id = rid + 1
        gw_index = rid % self.gw_count
        gw = self.gateways[gw_index]
        key = self.keys()
        is_publish = self.publish_fraction and self.coin() < self.publish_fraction
        kind = PUBLISH if is_publish else RPC
        agent_type = -1 if is_publish else (self.target() if self.multi_type else 0)
        req = Request(gw_index, kind, agent_type, key, now)
        req.client = client
        req.deadline = now + self.timeout_s
        self.outstanding += 1
        if self.admission:
            api_key = self.valid_key
            if self.unauthorized and self.coin() < self.unauthorized:
                api_key = "not-a-valid-key"
            denied = gw.admit(now, api_key)
            if denied is not None:
                self._finish(req, denied)
                return
        if is_publish:
            self._publish(req, gw)
        else:
            self._track_deadline(req)
            self._dispatch(req)

    def _publish(self, req: Request, gw: GatewayPolicy) -> None:
        topic = TopicId(self.topics[self.topic_pick()], self.key_names[req.key])
        recipients = self.subscriptions.recipients(topic)
        req.pending = req.fanout = len(recipients)
        if not recipients:
            self._finish(req, OK)
            return
        for agent in recipients:
            child = Request(req.gw, PUBLISH, self.type_index[agent.type], req.key, req.arrival)
            child.parent = req
            child.deadline = req.deadline
            self._track_deadline(child)
            self._dispatch(child)

    # -- gateway → worker ---------------------------------------------------------------------
    def _dispatch(self, req: Request) -> None:
        if req.done:
            return
        now = self.env.now
        gw = self.gateways[req.gw]
        try:
            name = gw.route(
                self.agent_types[req.agent_type], self.key_names[req.key], now, req.tried
            )
        except UnknownAgentType:
            self._finish(req, Detail.UNKNOWN_TYPE)
            return
        except NoWorkerAvailable:
            self._finish(req, Detail.NO_WORKER)
            return
        worker = self.by_name[name]
        req.attempts += 1
        req.worker = worker.index
        req.inflight = True
        req.t_sent = now
        gw.local.dispatched(name)
        if req.attempts == 1:
            req.service_ms = self.service()
        delay = self.fixed_hop_s + gw.view.lookup_cost_s
        if self.net is not None:
            delay += self.net() / 1000
        if delay > 0:
            self.at(delay, self._on_worker_receive, req)
        else:
            self._worker_receive(req)

    def _on_worker_receive(self, ev: Event) -> None:
        self._worker_receive(ev._value)

    def _worker_receive(self, req: Request) -> None:
        worker = self.workers[req.worker]
        worker.received += 1
        if req.done:  # its deadline passed on the way here
            worker.expired += 1
            return
        req.t_worker = self.env.now
        if worker.busy < worker.concurrency:
            self._start(worker, req)
            return
        queue = worker.queue
        if len(queue) >= worker.queue_limit:
            # requests whose deadline passed while queued hold no place in the queue
            # (they sit at the head: FIFO with one timeout per run), so popping is amortised O(1)
            while queue and queue[0].done:
                queue.popleft()
                worker.expired += 1
        if len(queue) < worker.queue_limit:
            queue.append(req)
            if len(queue) > worker.max_queue:
                worker.max_queue = len(queue)
        else:
            worker.rejected += 1
            worker.errors += 1
            req.result = Detail.QUEUE_FULL
            self._reply(req)

    def _start(self, worker: Worker, req: Request) -> None:
        worker.busy += 1
        ms = req.service_ms / worker.speed
        worker.busy_ms += ms
        self.at(ms / 1000, self._on_complete, req)

    def _on_complete(self, ev: Event) -> None:
        req: Request = ev._value
        worker = self.workers[req.worker]
        now = self.env.now
        worker.busy -= 1
        worker.served += 1
        worker.rt_ewma_ms += WORKER_EWMA_ALPHA * ((now - req.t_worker) * 1000 - worker.rt_ewma_ms)
        req.result = OK
        self._reply(req)
        queue = worker.queue
        while queue:
            nxt = queue.popleft()
            if nxt.done or nxt.deadline <= now:
                # the caller's deadline travels with the request (as gRPC's does): a worker
                # does not start work nobody is waiting for any more
                worker.expired += 1
                continue
            self._start(worker, nxt)
            break

    # -- worker → gateway ---------------------------------------------------------------------
    def _reply(self, req: Request) -> None:
        delay = self.net() if self.net is not None else 0.0
        if delay > 0:
            self.at(delay / 1000, self._on_reply, req)
        else:
            self._gateway_reply(req)

    def _on_reply(self, ev: Event) -> None:
        self._gateway_reply(ev._value)

    def _gateway_reply(self, req: Request) -> None:
        if req.done:
            self.late_replies += 1
            return
        now = self.env.now
        gw = self.gateways[req.gw]
        name = self.workers[req.worker].name
        req.inflight = False
        detail = req.result
        if detail is OK:
            # this attempt's round trip only: earlier attempts and backoff are not its doing
            gw.local.finished(name, now, (now - req.t_sent) * 1000)
            self._finish(req, OK)
            return
        gw.local.finished(name, now, None)
        delay = gw.after_attempt(detail, req.attempts, now, req.deadline)
        if delay is None:
            self._finish(req, detail)
            return
        if req.tried is None:
            req.tried = [name]
        else:
            req.tried.append(name)
        self.at(delay, self._on_retry, req)

    def _on_retry(self, ev: Event) -> None:
        self._dispatch(ev._value)

    # -- deadlines ----------------------------------------------------------------------------
    def _track_deadline(self, req: Request) -> None:
        self.deadlines.append(req)
        if not self.timer_armed:
            self.timer_armed = True
            self.at(req.deadline - self.env.now, self._on_deadline_timer)

    def _on_deadline_timer(self, _: Any) -> None:
        now = self.env.now
        deadlines = self.deadlines
        while deadlines and (deadlines[0].done or deadlines[0].deadline <= now):
            req = deadlines.popleft()
            if req.done:
                continue
            if req.inflight:
                req.inflight = False
                self.gateways[req.gw].local.finished(self.workers[req.worker].name, now, None)
            self._finish(req, Detail.DEADLINE)
        if deadlines:
            self.at(deadlines[0].deadline - now, self._on_deadline_timer)
        else:
            self.timer_armed = False

    # -- endings ------------------------------------------------------------------------------
    def _finish(self, req: Request, detail: Detail) -> None:
        req.done = True
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
        now = self.env.now
        if detail is Detail.DEADLINE:
            now = req.deadline
        self.log.add(
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
        self.outstanding -= 1
        if req.client >= 0:
            self._client_ready(req.client, now == req.arrival and detail is not OK)
        if self.arrivals_over and self.outstanding == 0 and not self.drained.triggered:
            self.drained.succeed()

    # -- background processes -----------------------------------------------------------------
    def _heartbeats(self, bucket: int, buckets: int):  # type: ignore[no-untyped-def]
        """Workers heartbeat every interval, spread over ``buckets`` phases; reports age."""
        interval = self.sc.registry.heartbeat_interval_ms / 1000
        env = self.env
        registry = self.registry
        mine = self.workers[bucket::buckets]
        yield env.timeout(interval * bucket / buckets)
        while True:
            now = env.now
            for wk in mine:
                capacity_ms = interval * 1000 * wk.concurrency
                received = wk.received - wk.last_received
                report = LoadReport(
                    cpu=min(1.0, (wk.busy_ms - wk.last_busy_ms) / capacity_ms),
                    active=wk.busy + len(wk.queue),
                    capacity=wk.concurrency,
                    rt_ewma_ms=wk.rt_ewma_ms,
                    error_rate=(wk.errors - wk.last_errors) / received if received else 0.0,
                    at=now,
                )
                wk.last_busy_ms = wk.busy_ms
                wk.last_errors = wk.errors
                wk.last_received = wk.received
                wk.queue_sum += len(wk.queue)
                wk.queue_samples += 1
                registry.heartbeat(wk.name, now, report)
            yield env.timeout(interval)

    def _detector(self):  # type: ignore[no-untyped-def]
        interval = self.sc.registry.check_interval_ms / 1000
        while True:
            yield self.env.timeout(interval)
            self.registry.evaluate(self.env.now)

    def _sampler(self):  # type: ignore[no-untyped-def]
        env = self.env
        t, n = self.samples_t, self.samples_n
        while True:
            t.append(env.now)
            n.append(self.outstanding)
            yield env.timeout(SAMPLE_INTERVAL_S)

    def _progress(self):  # type: ignore[no-untyped-def]
        step = self.sc.duration_s / 100
        while True:
            self.progress(min(1.0, self.env.now / self.sc.duration_s))  # type: ignore[misc]
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
        if self.progress is not None:
            env.process(self._progress())
        if self.arrivals is not None:
            self._next_open_arrival()
        else:
            self._start_closed_loop()
        # Every request ends by its deadline at the latest, so the run must drain by then.
        limit = self.sc.duration_s + self.timeout_s + self.sc.gateway.retry_cap_ms / 1000 + 1.0
        watchdog = env.timeout(limit)
        env.run(until=self.drained | watchdog)
        if not self.drained.triggered:
            raise LabkitError(
                f"simulation did not drain by t={limit:g}s: {self.outstanding} requests "
                "still open (a bug in labkit; please report it with the scenario)"
            )
        if self.progress is not None:
            self.progress(1.0)
        end = env.now
        wall = time.perf_counter() - started
        return self._results(end, wall)

    def _results(self, end: float, wall: float) -> Results:
        sc = self.sc
        span = max(end, sc.duration_s)
        workers = pd.DataFrame(
            {
                "worker": [w.name for w in self.workers],
                "speed": [w.speed for w in self.workers],
                "received": [w.received for w in self.workers],
                "served": [w.served for w in self.workers],
                "rejected": [w.rejected for w in self.workers],
                "expired": [w.expired for w in self.workers],
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
                "health_changes": len(self.health_changes),
            },
        }
        return build_results(
            sc,
            self.log,
            driver="sim",
            agent_types=self.agent_types,
            worker_names=[w.name for w in self.workers],
            workers=workers,
            samples=samples,
            extra=extra,
        )


from labkit.distributions import parse_distribution  # noqa: E402

_new_call = object.__new__
_UNIFORM = parse_distribution({"dist": "uniform", "low": 0, "high": 1}, unit="")


def simulate(scenario: Scenario, progress: Callable[[float], None] | None = None) -> Results:
    """Run one scenario on the SimPy driver; deterministic for a given scenario and seed."""
    return FleetSim(scenario, progress).run()
