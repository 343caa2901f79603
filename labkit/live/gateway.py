"""The live gateway: AutoGen's Agent Worker Protocol over gRPC, with labkit's policy core.

Unmodified AutoGen workers (``GrpcWorkerAgentRuntime``) connect to it as to AutoGen's own host.
What it does differently from that host (see ``shared/AUTOGEN_PROTOCOL.md``):

- several workers may register one agent type; the scenario's balancer picks one per RPC
  (default consistent hashing on the agent key, so an agent's state stays on one worker);
- every RPC is answered — by the worker's reply or by an error response naming the reason —
  within its deadline: unknown agent type, no worker, worker lost (after any retries the
  scenario allows), deadline, rate limited, unauthorised, message too large;
- requests are forwarded under gateway-assigned ids and replies mapped back per caller, so two
  callers whose own counters overlap ("1", "2", ...) never see each other's replies;
- a publish goes to one worker per subscribed recipient type (an AutoGen worker delivers an
  event to every local agent subscribed to it, so sending it to two workers hosting the same
  type would deliver it twice). One case the protocol cannot cover: if two subscribed types
  are hosted on *different but overlapping* sets of workers, the worker chosen for one may also
  deliver to the other, and a second copy may reach it through its own worker. The gateway
  prefers a worker already chosen for the event, which avoids this whenever one worker can
  serve several recipient types; ``publish_overlaps`` counts the events where it could not;
- a duplicate subscription from a second worker of the same type is the same subscription;
- frames are decoded here, not by gRPC, so an undecodable frame is answered with an error
  response on the same stream instead of killing it;
- ``grpc.health.v1``, a Prometheus ``/metrics`` endpoint, and logs that never format a message
  per request (per-message lines are DEBUG, with lazy arguments).

All decisions (admission, routing, retries, deadlines) are the policy core's: this module moves
bytes and keeps the books.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from labkit.core.balancing import BalancerConfig, LocalLoad, make_balancer
from labkit.core.gateway import (
    GatewayConfig,
    GatewayPolicy,
    RetryPolicy,
    UnknownAgentType,
    resilience_counts,
)
from labkit.core.outcomes import Detail
from labkit.core.registry import LoadReport, Registry, StrongView, TimeoutDetector
from labkit.core.routing import (
    SubscriptionIndex,
    TopicId,
    TypePrefixSubscription,
    TypeSubscription,
)
from labkit.errors import NoWorkerAvailable
from labkit.live.pb import agent_worker_pb2 as pb
from labkit.live.pb import cloudevent_pb2 as ce
from labkit.live.pb import labkit_pb2
from labkit.live.trace import (
    GATEWAY_IN,
    GATEWAY_OUT,
    GATEWAY_REPLY_IN,
    GATEWAY_REPLY_OUT,
    TRACE_KEY,
    stamp,
)
from labkit.live.worker import ACK_TYPE_PREFIX, SERVICE_MS_KEY, WORKER_MS_KEY

log = logging.getLogger("labkit.gateway")

SERVICE = "agents.AgentRpc"
#: default largest message the gateway accepts (AutoGen's host has gRPC's 4 MiB)
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
API_KEY_HEADER = "x-api-key"
#: how long a client known only from unary calls may wait for its OpenChannel stream
UNATTACHED_GRACE_S = 5.0
#: load reports the gateway keeps for ``Stats(with_load=True)``
LOAD_HISTORY = 50_000
_ERROR_PREFIX = "labkit gateway: "


@dataclass
class LiveConfig:
    """What the live gateway enforces; built from a scenario's gateway and balancer sections."""

    gateway: GatewayConfig = field(
        default_factory=lambda: GatewayConfig(timeout_s=30.0, retry=RetryPolicy(2, 0.005, 0.2))
    )
    balancer: BalancerConfig = field(
        default_factory=lambda: BalancerConfig(strategy="consistent_hash")
    )
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    seed: int = 0


@dataclass(eq=False)
class Client:
    """One connected process (an AutoGen worker, a labkit worker, a load generator)."""

    client_id: str
    out: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    types: set[str] = field(default_factory=set)
    subscriptions: set[str] = field(default_factory=set)
    authorised: bool = True
    api_key: str | None = None
    connected: bool = True
    #: injected faults (``InjectFault``): extra delay before each message to it, drop its replies
    extra_s: float = 0.0
    drop_replies: bool = False
    error_rate: float = 0.0
    slowdown: float = 1.0
    #: its OpenChannel stream is being served (False: it called a unary method first)
    attached: bool = False
    completed: int = 0
    failed: int = 0
    forwarded: int = 0
    last_report: Any = None  # its latest labkit_pb2.LoadReport (labkit workers only)


@dataclass(eq=False)
class Pending:
    """An RPC forwarded to a worker, waiting for its reply."""

    caller: Client
    caller_request_id: str
    message: Any  # the caller's pb.Message, forwarded as is with the gateway's request id
    arrival: float
    deadline: float
    attempts: int = 0
    worker: Client | None = None
    sent_at: float = 0.0
    tried: list[str] = field(default_factory=list)
    #: the caller asked for per-hop stamps (``labkit.live.trace``): the gateway's own, kept
    #: here (CLOCK_MONOTONIC) until the reply carries them back
    traced: bool = False
    t_out: float = 0.0


class LiveGateway:
    """The gateway's state and message handling; ``serve`` wraps it in a gRPC server."""

    def __init__(self, config: LiveConfig | None = None) -> None:
        self.config = config or LiveConfig()
        # liveness is the open channel (AutoGen workers send no heartbeats): workers are
        # registered on RegisterAgent and deregistered when their channel closes
        self.registry = Registry(TimeoutDetector(1e9, 1e9))
        local = LocalLoad()
        view = StrongView(self.registry, 0.0)
        rng = random.Random(self.config.seed)
        balancer = make_balancer(self.config.balancer, local, view, rng)
        self.policy = GatewayPolicy(
            "gw-live", self.config.gateway, view, balancer, local, random.Random(rng.random())
        )
        self.subscriptions = SubscriptionIndex()
        self._sub_ids: dict[str, tuple[str, str, str]] = {}  # subscription id -> identity
        #: identity -> (client id, subscription id) of every client holding it
        self._sub_holders: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
        #: control channels by client id (one may open before, or outlive, the data stream)
        self.controls: dict[str, asyncio.Queue[bytes | None]] = {}
        self.clients: dict[str, Client] = {}
        self.pending: dict[str, Pending] = {}
        # one timeout for every RPC, so deadlines come in arrival order: one armed timer for
        # the oldest serves them all (no timer per RPC)
        self._deadlines: deque[tuple[float, str]] = deque()
        self._deadline_timer: asyncio.TimerHandle | None = None
        # per-attempt timeouts, one length for all: the same trick (gid, attempt number)
        self._attempt_timeouts: deque[tuple[float, str, int]] = deque()
        self._attempt_timer: asyncio.TimerHandle | None = None
        self._guarded = bool(self.policy.guards)
        self._next_id = 0
        self.counters: dict[str, int] = {
            "rpc_requests": 0,
            "rpc_replies": 0,
            "rpc_errors": 0,
            "rpc_retries": 0,
            "late_replies": 0,
            "publishes": 0,
            "deliveries": 0,
            "publish_overlaps": 0,
            "undecodable_frames": 0,
            "control_relayed": 0,
            "control_undeliverable": 0,
        }
        self.errors_by_reason: dict[str, int] = {}
        self._started = time.monotonic()
        self._fault_rng = random.Random(self.config.seed + 1)
        #: membership changes as the registry announced them (monotonic time, worker, health)
        self.events: list[tuple[float, str, str]] = []
        #: load reports as received (monotonic time, worker, cpu, active), for the
        #: utilization heatmap; bounded, at a labkit worker's 2 reports/s ≈ 8 min of 50 workers
        self.load_history: deque[tuple[float, str, float, int]] = deque(maxlen=LOAD_HISTORY)
        self.registry.add_listener(
            lambda worker, old, new, now: self.events.append((time.monotonic(), worker, str(new)))
        )

    # -- clock -------------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self._started

    # -- clients -----------------------------------------------------------------------------
    def key_ok(self, api_key: str | None) -> bool:
        keys = self.config.gateway.api_keys
        return keys is None or api_key in keys

    def connect(self, client_id: str, api_key: str | None) -> Client:
        """A client's OpenChannel stream opened; the stream's key decides its data plane."""
        old = self.clients.get(client_id)
        if old is not None and old.connected and not old.attached:
            # it registered before its stream got here (AutoGen's worker does not wait for
            # the stream before calling RegisterAgent): this is that client's stream
            old.attached = True
            old.authorised = self.key_ok(api_key)
            old.api_key = api_key
            return old
        client = Client(client_id, authorised=self.key_ok(api_key), api_key=api_key)
        client.attached = True
        if old is not None and old.connected:
            # the same id again while its old stream is open (a reconnect that raced the old
            # stream's end): the new stream takes over what the old one registered
            self._take_over(old, client)
        self.clients[client_id] = client
        log.info("client %s connected", client_id)
        return client

    def _take_over(self, old: Client, new: Client) -> None:
        new.types = set(old.types)
        new.subscriptions = set(old.subscriptions)
        for holders in self._sub_holders.values():
            for entry in [h for h in holders if h[0] == old.client_id]:
                holders.discard(entry)
                holders.add(entry)  # same client id: the holders stay
        old.types = set()
        old.subscriptions = set()
        old.connected = False
        old.out.put_nowait(None)
        now = self.now()
        for gid, p in list(self.pending.items()):
            if p.caller is old:
                self._forget(gid, p)
            elif p.worker is old:
                self._attempt_failed(gid, p, Detail.WORKER_LOST, now)
        if new.types:
            self.registry.register(new.client_id, sorted(new.types), now)

    def unattached(self, client_id: str, api_key: str | None) -> Client:
        """A client known by a unary call before its stream arrives; messages to it wait in
        its queue. If no stream comes within ``UNATTACHED_GRACE_S`` it is dropped, so requests
        are not routed to it for ever."""
        client = Client(client_id, authorised=self.key_ok(api_key), api_key=api_key)
        self.clients[client_id] = client
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return client  # no loop (a unit test driving the gateway by hand)
        loop.call_later(UNATTACHED_GRACE_S, self._reap, client)
        return client

    def _reap(self, client: Client) -> None:
        if client.connected and not client.attached:
            log.warning("client %s never opened its channel: dropped", client.client_id)
            self.disconnect(client)

    def disconnect(self, client: Client) -> None:
        if not client.connected:
            return
        client.connected = False
        client.out.put_nowait(None)
        if self.clients.get(client.client_id) is client:
            del self.clients[client.client_id]
        now = self.now()
        if client.types:
            self.registry.deregister(client.client_id, now)
        for sub_id in list(client.subscriptions):
            self._drop_subscription(client, sub_id)
        # its callers' requests are void; the requests it was serving fail over or fail
        for gid, p in list(self.pending.items()):
            if p.caller is client:
                self._forget(gid, p)
            elif p.worker is client:
                self._attempt_failed(gid, p, Detail.WORKER_LOST, now)
        log.info("client %s disconnected", client.client_id)

    def register(self, client: Client, agent_type: str) -> None:
        if not agent_type:
            raise ValueError("agent type must not be empty")
        client.types.add(agent_type)
        self.registry.register(client.client_id, sorted(client.types), self.now())
        log.info("client %s hosts agent type %s", client.client_id, agent_type)

    # -- subscriptions -----------------------------------------------------------------------
    def add_subscription(self, client: Client, sub: Any) -> None:
        kind = sub.WhichOneof("subscription")
        if kind == "typeSubscription":
            s: Any = TypeSubscription(
                sub.typeSubscription.topic_type, sub.typeSubscription.agent_type, sub.id
            )
        elif kind == "typePrefixSubscription":
            s = TypePrefixSubscription(
                sub.typePrefixSubscription.topic_type_prefix,
                sub.typePrefixSubscription.agent_type,
                sub.id,
            )
        else:
            raise ValueError("subscription has neither typeSubscription nor typePrefixSubscription")
        if not sub.id:
            raise ValueError("subscription id must not be empty")
        known = self._sub_ids.get(sub.id)
        if known is not None and known != s.identity:
            raise ValueError(f"subscription id {sub.id!r} is already used for another one")
        # the same subscription from a second worker of the type is the same subscription
        self.subscriptions.add(s)
        self._sub_ids[sub.id] = s.identity
        self._sub_holders.setdefault(s.identity, set()).add((client.client_id, sub.id))
        client.subscriptions.add(sub.id)

    def remove_subscription(self, client: Client, sub_id: str) -> None:
        if sub_id not in client.subscriptions:
            raise KeyError(f"this client holds no subscription with id {sub_id!r}")
        self._drop_subscription(client, sub_id)

    def _drop_subscription(self, client: Client, sub_id: str) -> None:
        """One client lets go of a subscription; it lives on while another client holds it."""
        client.subscriptions.discard(sub_id)
        identity = self._sub_ids.get(sub_id)
        if identity is None:
            return
        holders = self._sub_holders.get(identity, set())
        holders.discard((client.client_id, sub_id))
        if not any(h[1] == sub_id for h in holders):
            del self._sub_ids[sub_id]
        if holders:
            return
        self._sub_holders.pop(identity, None)
        for s in list(self.subscriptions):
            if s.identity == identity:
                # the index knows a subscription by the id it was first added under
                if s.id:
                    self.subscriptions.remove(s.id)
                break

    def subscription_protos(self) -> list[Any]:
        out = []
        for s in self.subscriptions:
            if isinstance(s, TypeSubscription):
                out.append(
                    pb.Subscription(
                        id=s.id,
                        typeSubscription=pb.TypeSubscription(
                            topic_type=s.topic_type, agent_type=s.agent_type
                        ),
                    )
                )
            else:
                out.append(
                    pb.Subscription(
                        id=s.id,
                        typePrefixSubscription=pb.TypePrefixSubscription(
                            topic_type_prefix=s.topic_type_prefix, agent_type=s.agent_type
                        ),
                    )
                )
        return out

    # -- the data plane ----------------------------------------------------------------------
    def on_frame(self, client: Client, frame: bytes) -> None:
        """One frame from a client's OpenChannel stream."""
        try:
            message = pb.Message.FromString(frame)
            kind = message.WhichOneof("message")
        except Exception as exc:  # a garbage frame: say so on the same stream, keep it open
            self.counters["undecodable_frames"] += 1
            log.warning(
                "undecodable frame from %s (%d bytes): %s", client.client_id, len(frame), exc
            )
            self._send_error(client, "", f"undecodable frame ({len(frame)} bytes): {exc}")
            return
        if kind == "request":
            self.on_request(client, message.request, len(frame), message)
        elif kind == "response":
            self.on_response(client, message.response, message)
        elif kind == "cloudEvent":
            self.on_event(client, message.cloudEvent)
        else:
            self.counters["undecodable_frames"] += 1
            self._send_error(client, "", "empty Message (none of request, response, cloudEvent)")

    def on_request(self, caller: Client, request: Any, size: int, message: Any = None) -> None:
        self.counters["rpc_requests"] += 1
        now = self.now()
        rid = request.request_id
        if not caller.authorised:
            self._reject(caller, rid, "unauthorised", f"missing or unknown {API_KEY_HEADER}")
            return
        if size > self.config.max_message_bytes:
            self._reject(
                caller,
                rid,
                "too_large",
                f"message of {size} bytes exceeds the limit of {self.config.max_message_bytes}",
            )
            return
        # a publish's delivery confirmations are part of work already admitted
        if not request.target.type.startswith(ACK_TYPE_PREFIX):
            denied = self.policy.admit(now, caller.api_key)
            if denied is not None:
                self._reject(caller, rid, denied.label, "turned away at admission; retry later")
                return
            self.policy.request_started(now)
        gid = str(self._next_id)
        self._next_id += 1
        if message is None:
            message = pb.Message(request=request)
        # forwarded as received, under the gateway's id (the caller's is kept to answer it)
        message.request.request_id = gid
        p = Pending(caller, rid, message, now, self.policy.deadline(now))
        p.traced = TRACE_KEY in request.metadata
        self.pending[gid] = p
        self._deadlines.append((p.deadline, gid))
        if self._deadline_timer is None:
            self._arm_deadlines(now)
        self._dispatch(gid, p, now)

    def _dispatch(self, gid: str, p: Pending, now: float) -> None:
        target = p.message.request.target
        try:
            name = self.policy.route(target.type, target.key, now, p.tried or None)
        except UnknownAgentType:
            known = ", ".join(sorted(self.registry.known_types)) or "none"
            self._fail(
                gid, p, "unknown_type", f"unknown agent type {target.type!r} (known: {known})"
            )
            return
        except NoWorkerAvailable:
            self._fail(gid, p, "no_worker", f"no worker available for agent type {target.type!r}")
            return
        worker = self.clients.get(name)
        if worker is None or not worker.connected:
            # the registry and the connection table disagree for an instant: try elsewhere
            p.tried.append(name)
            self._attempt_failed(gid, p, Detail.WORKER_LOST, now)
            return
        p.attempts += 1
        if self._guarded:
            self.policy.dispatched(name, now)
        attempt_timeout = self.config.gateway.attempt_timeout_s
        if attempt_timeout:
            self._attempt_timeouts.append((now + attempt_timeout, gid, p.attempts))
            if self._attempt_timer is None:
                self._arm_attempt_timeouts(now)
        worker.forwarded += 1
        p.worker = worker
        p.sent_at = now
        self.policy.local.dispatched(name)
        frame = p.message.SerializeToString()
        if worker.extra_s > 0:
            asyncio.get_running_loop().call_later(worker.extra_s, worker.out.put_nowait, frame)
        else:
            worker.out.put_nowait(frame)
        if p.traced:  # handed over (an injected latency spike is counted in the hop after)
            p.t_out = time.monotonic()
        log.debug("rpc %s from %s -> %s (%s)", gid, p.caller.client_id, name, target.type)

    def on_response(self, worker: Client, response: Any, message: Any = None) -> None:
        gid = response.request_id
        p = self.pending.get(gid)
        if worker.drop_replies:
            self.counters["dropped_replies"] = self.counters.get("dropped_replies", 0) + 1
            return
        if p is None or p.worker is not worker:
            self.counters["late_replies"] += 1  # after its deadline, or not this worker's
            return
        now = self.now()
        if message is None:
            message = pb.Message(response=response)
        reply = message.response
        if not reply.error and worker.error_rate and self._fault_rng.random() < worker.error_rate:
            reply.error = _ERROR_PREFIX + "worker_error: injected fault (flaky worker)"
            reply.ClearField("payload")
            for key in (SERVICE_MS_KEY, WORKER_MS_KEY):  # no timing: not a served request
                if key in reply.metadata:
                    del reply.metadata[key]
        ok = not reply.error
        if self._guarded:
            self.policy.attempt_ended(
                worker.client_id, Detail.OK if ok else Detail.WORKER_ERROR, now
            )
        if not ok:
            # the worker answered with an error: the scenario's retry policy decides
            delay = self.policy.after_attempt(Detail.WORKER_ERROR, p.attempts, now, p.deadline)
            if delay is not None:
                worker.failed += 1
                self.policy.local.finished(worker.client_id, now, None)
                p.tried.append(worker.client_id)
                p.worker = None
                self.counters["rpc_retries"] += 1
                asyncio.get_running_loop().call_later(delay, self._retry, gid)
                return
        del self.pending[gid]
        self.policy.local.finished(worker.client_id, now, (now - p.sent_at) * 1000 if ok else None)
        reply.request_id = p.caller_request_id
        if ok:
            self.counters["rpc_replies"] += 1
            worker.completed += 1
        else:
            worker.failed += 1
            self.counters["rpc_errors"] += 1
            self._count_reason("worker_error")
        if p.traced:
            md, started = reply.metadata, self._started
            stamp(md, GATEWAY_IN, p.arrival + started)
            stamp(md, GATEWAY_OUT, p.t_out)
            stamp(md, GATEWAY_REPLY_IN, now + started)
            stamp(md, GATEWAY_REPLY_OUT, time.monotonic())
        if p.caller.connected:
            p.caller.out.put_nowait(message.SerializeToString())

    def _arm_attempt_timeouts(self, now: float) -> None:
        items = self._attempt_timeouts
        while items and items[0][1] not in self.pending:
            items.popleft()
        if not items:
            self._attempt_timer = None
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, items[0][0] - now)
        self._attempt_timer = loop.call_at(loop.time() + delay, self._on_attempt_timeouts)

    def _on_attempt_timeouts(self) -> None:
        now = self.now()
        items = self._attempt_timeouts
        while items and items[0][0] <= now:
            _, gid, attempt = items.popleft()
            p = self.pending.get(gid)
            # only the attempt it was armed for, if still out (a retry has its own entry)
            if p is not None and p.attempts == attempt and p.worker is not None:
                self._attempt_failed(gid, p, Detail.ATTEMPT_TIMEOUT, now)
        self._arm_attempt_timeouts(now)

    def _attempt_failed(self, gid: str, p: Pending, detail: Detail, now: float) -> None:
        if p.worker is not None:
            if self._guarded:
                self.policy.attempt_ended(p.worker.client_id, detail, now)
            self.policy.local.finished(p.worker.client_id, now, None)
            p.tried.append(p.worker.client_id)
            lost = p.worker.client_id
            p.worker = None
        else:
            lost = "?"
        delay = self.policy.after_attempt(detail, max(1, p.attempts), now, p.deadline)
        if delay is None:
            self._fail(gid, p, detail.label, f"worker {lost} was lost with the request in flight")
            return
        self.counters["rpc_retries"] += 1
        loop = asyncio.get_running_loop()
        loop.call_later(delay, self._retry, gid)

    def _retry(self, gid: str) -> None:
        p = self.pending.get(gid)
        if p is not None:
            self._dispatch(gid, p, self.now())

    def _arm_deadlines(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][1] not in self.pending:
            deadlines.popleft()  # answered already
        if not deadlines:
            self._deadline_timer = None
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, deadlines[0][0] - now)
        self._deadline_timer = loop.call_at(loop.time() + delay, self._on_deadlines)

    def _on_deadlines(self) -> None:
        now = self.now()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, gid = deadlines.popleft()
            if gid in self.pending:
                self._on_deadline(gid)
        self._arm_deadlines(now)

    def _on_deadline(self, gid: str) -> None:
        p = self.pending.get(gid)
        if p is None:
            return
        timeout = self.config.gateway.timeout_s
        where = f" (last sent to {p.worker.client_id})" if p.worker is not None else ""
        if p.worker is not None:
            # the attempt timed out at its worker (passive checks hear it); not a cancellation
            now = self.now()
            if self._guarded:
                self.policy.attempt_ended(p.worker.client_id, Detail.DEADLINE, now)
            self.policy.local.finished(p.worker.client_id, now, None)
            p.worker = None
        self._fail(gid, p, "deadline", f"no reply within the deadline of {timeout:g} s{where}")

    def _fail(self, gid: str, p: Pending, reason: str, text: str) -> None:
        self._forget(gid, p)
        self.counters["rpc_errors"] += 1
        self._count_reason(reason)
        if p.caller.connected:
            self._send_error(p.caller, p.caller_request_id, f"{reason}: {text}")

    def _forget(self, gid: str, p: Pending) -> None:
        self.pending.pop(gid, None)
        if p.worker is not None:
            now = self.now()
            if self._guarded:
                self.policy.attempt_cancelled(p.worker.client_id, now)
            self.policy.local.finished(p.worker.client_id, now, None)
            p.worker = None

    def _reject(self, caller: Client, request_id: str, reason: str, text: str) -> None:
        self.counters["rpc_errors"] += 1
        self._count_reason(reason)
        self._send_error(caller, request_id, f"{reason}: {text}")

    def _send_error(self, client: Client, request_id: str, text: str) -> None:
        response = pb.RpcResponse(request_id=request_id, error=_ERROR_PREFIX + text)
        client.out.put_nowait(pb.Message(response=response).SerializeToString())

    def _count_reason(self, reason: str) -> None:
        self.errors_by_reason[reason] = self.errors_by_reason.get(reason, 0) + 1

    # -- publish -----------------------------------------------------------------------------
    def on_event(self, sender: Client, event: Any) -> None:
        self.counters["publishes"] += 1
        if not sender.authorised:
            return  # an event has no reply to carry an error; it is counted and dropped
        now = self.now()
        recipients = self.subscriptions.recipients(TopicId(event.type, event.source))
        subscribed = {a.type for a in recipients}
        chosen: dict[str, Client] = {}
        covered: set[str] = set()

        def hosts(agent_type: str) -> int:
            pool = self.registry.pool(agent_type)
            return len(pool.healthy) if pool is not None else 0

        # the types with fewest hosts first: the worker chosen for a rare type often hosts the
        # common ones too, and delivers to all of them at once
        for agent in sorted(recipients, key=lambda a: hosts(a.type)):
            if agent.type in covered:
                continue
            try:
                name = self.policy.route(agent.type, agent.key, now)
            except NoWorkerAvailable:
                self._count_reason("publish_no_worker")
                continue
            worker = self.clients.get(name)
            if worker is None:
                continue
            chosen[name] = worker
            covered |= worker.types & subscribed
        hosted = [c.types & subscribed for c in chosen.values()]
        if sum(len(h) for h in hosted) > len(set().union(*hosted)) if hosted else False:
            self.counters["publish_overlaps"] += 1
        frame = pb.Message(cloudEvent=event).SerializeToString()
        for worker in chosen.values():
            worker.out.put_nowait(frame)
            self.counters["deliveries"] += 1

    # -- control channel ---------------------------------------------------------------------
    def on_control(self, sender_id: str, frame: bytes) -> None:
        """Relay a ControlMessage to ``clientid=ID`` or to the worker hosting ``agentid=T/K``."""
        try:
            message = pb.ControlMessage.FromString(frame)
        except Exception:
            self.counters["undecodable_frames"] += 1
            return
        dest = message.destination
        target_id: str | None = None
        if dest.startswith("clientid="):
            target_id = dest.removeprefix("clientid=")
        elif dest.startswith("agentid="):
            agent_type, _, key = dest.removeprefix("agentid=").partition("/")
            with contextlib.suppress(NoWorkerAvailable):
                target_id = self.policy.route(agent_type, key, self.now())
        queue = self.controls.get(target_id) if target_id is not None else None
        if queue is None:
            self.counters["control_undeliverable"] += 1
            log.warning(
                "control message %s from %s to %r: no such destination",
                message.rpc_id,
                sender_id,
                dest,
            )
            return
        self.counters["control_relayed"] += 1
        queue.put_nowait(frame)

    # -- labkit's own service ----------------------------------------------------------------
    def report_load(self, report: Any) -> bool:
        client = self.clients.get(report.client_id)
        if client is None or not client.types:
            return False
        client.last_report = report
        self.load_history.append((time.monotonic(), report.client_id, report.cpu, report.active))
        load = LoadReport(
            cpu=report.cpu,
            active=report.active,
            capacity=max(1, report.capacity),
            rt_ewma_ms=report.rt_ewma_ms,
            error_rate=report.error_rate,
            at=self.now(),
        )
        return self.registry.heartbeat(report.client_id, self.now(), load)

    def stats(self, request: Any = None) -> Any:
        in_flight: dict[str, int] = {}
        for p in self.pending.values():
            if p.worker is not None:
                in_flight[p.worker.client_id] = in_flight.get(p.worker.client_id, 0) + 1
        counters = dict(self.counters)
        counters.update({f"errors.{k}": v for k, v in self.errors_by_reason.items()})
        counters.update({f"resilience.{k}": v for k, v in resilience_counts([self.policy]).items()})
        workers = [
            labkit_pb2.WorkerStats(
                client_id=c.client_id,
                agent_types=sorted(c.types),
                health=str(self.registry.health_of(c.client_id)) if c.types else "",
                in_flight=in_flight.get(c.client_id, 0),
                completed=c.completed,
                failed=c.failed,
                forwarded=c.forwarded,
                busy_s=c.last_report.busy_s if c.last_report is not None else 0.0,
                served=c.last_report.served if c.last_report is not None else 0,
                max_queue=c.last_report.max_queue if c.last_report is not None else 0,
                rt_ewma_ms=c.last_report.rt_ewma_ms if c.last_report is not None else 0.0,
            )
            for c in self.clients.values()
        ]
        events = [
            labkit_pb2.GatewayEvent(monotonic_s=t, worker=w, source="registry", event=e)
            for t, w, e in self.events
        ]
        load = []
        if request is not None and request.with_load:
            since = request.load_since_monotonic_s
            load = [
                labkit_pb2.LoadSample(monotonic_s=t, worker=w, cpu=cpu, active=active)
                for t, w, cpu, active in self.load_history
                if t >= since
            ]
        return labkit_pb2.StatsResponse(
            counters=counters, workers=workers, events=events, load=load
        )

    def inject_fault(self, request: Any) -> Any:
        client = self.clients.get(request.client_id)
        if client is None:
            return labkit_pb2.FaultResponse(
                applied=False, error=f"no connected client {request.client_id!r}"
            )
        if request.kind == "delay":
            client.extra_s = max(0.0, request.extra_ms) / 1000
        elif request.kind == "drop":
            client.drop_replies = True
        elif request.kind == "undrop":
            client.drop_replies = False
        elif request.kind == "flaky":
            if not 0 <= request.error_rate <= 1:
                return labkit_pb2.FaultResponse(
                    applied=False, error=f"error_rate must be in [0, 1], got {request.error_rate}"
                )
            client.error_rate = request.error_rate
        elif request.kind == "slow":
            if request.factor <= 0:
                return labkit_pb2.FaultResponse(
                    applied=False, error=f"factor must be > 0, got {request.factor}"
                )
            client.slowdown = request.factor
        elif request.kind == "clear":
            client.extra_s = 0.0
            client.drop_replies = False
            client.error_rate = 0.0
            client.slowdown = 1.0
        else:
            return labkit_pb2.FaultResponse(
                applied=False,
                error=(
                    f"unknown fault kind {request.kind!r} (delay, drop, undrop, flaky, slow, clear)"
                ),
            )
        log.info("fault %s on %s", request.kind, request.client_id)
        return labkit_pb2.FaultResponse(applied=True)

    # -- metrics -----------------------------------------------------------------------------
    def metrics_text(self) -> str:
        lines = []
        for name, value in self.counters.items():
            lines.append(f"# TYPE labkit_gateway_{name}_total counter")
            lines.append(f"labkit_gateway_{name}_total {value}")
        lines.append("# TYPE labkit_gateway_errors_total counter")
        for reason, value in sorted(self.errors_by_reason.items()):
            lines.append(f'labkit_gateway_errors_total{{reason="{reason}"}} {value}')
        lines.append("# TYPE labkit_gateway_clients gauge")
        lines.append(f"labkit_gateway_clients {len(self.clients)}")
        lines.append("# TYPE labkit_gateway_pending gauge")
        lines.append(f"labkit_gateway_pending {len(self.pending)}")
        for agent_type in sorted(self.registry.known_types):
            pool = self.registry.pool(agent_type)
            n = len(pool.healthy) if pool is not None else 0
            lines.append(f'labkit_gateway_workers{{agent_type="{agent_type}"}} {n}')
        return "\n".join(lines) + "\n"


# -- the gRPC surface ----------------------------------------------------------------------------
def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


async def _client_id(context: grpc.aio.ServicerContext) -> str:
    client_id = _metadata(context).get("client-id")
    if not client_id:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, "client-id metadata is required (one id per process)"
        )
    return client_id  # type: ignore[return-value]


class _Handlers:
    """The AgentRpc methods, on raw bytes (frames are decoded by ``LiveGateway``)."""

    def __init__(self, gw: LiveGateway) -> None:
        self.gw = gw

    async def open_channel(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        gw = self.gw
        client_id = await _client_id(context)
        client = gw.connect(client_id, _metadata(context).get(API_KEY_HEADER))

        async def read() -> None:
            try:
                async for frame in requests:
                    gw.on_frame(client, frame)
            except (grpc.aio.AioRpcError, asyncio.CancelledError):
                gw.disconnect(client)
            # a clean end of the request side is a half-close: replies still owed to it go
            # out on the response side, which ends when the client cancels the call

        reader = asyncio.create_task(read())
        try:
            while True:
                frame = await client.out.get()
                if frame is None:
                    break
                yield frame
        finally:
            reader.cancel()
            gw.disconnect(client)

    async def open_control_channel(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        gw = self.gw
        client_id = await _client_id(context)
        api_key = _metadata(context).get(API_KEY_HEADER)
        if not gw.key_ok(api_key):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, f"missing or unknown {API_KEY_HEADER}"
            )
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        gw.controls[client_id] = queue

        async def read() -> None:
            try:
                async for frame in requests:
                    gw.on_control(client_id, frame)
            except (grpc.aio.AioRpcError, asyncio.CancelledError):
                pass
            finally:
                queue.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                frame = await queue.get()
                if frame is None:
                    break
                yield frame
        finally:
            reader.cancel()
            if gw.controls.get(client_id) is queue:
                del gw.controls[client_id]

    async def _caller(self, context: grpc.aio.ServicerContext) -> Client:
        client_id = await _client_id(context)
        api_key = _metadata(context).get(API_KEY_HEADER)
        client = self.gw.clients.get(client_id)
        if client is None:
            # its OpenChannel may still be on the way: know it now, attach the stream later
            client = self.gw.unattached(client_id, api_key)
        # every call is judged by its own key, not by whichever call came first
        if not self.gw.key_ok(api_key):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, f"missing or unknown {API_KEY_HEADER}"
            )
        return client  # type: ignore[return-value]

    async def register_agent(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        client = await self._caller(context)
        message = await _decode(pb.RegisterAgentTypeRequest, request, context)
        try:
            self.gw.register(client, message.type)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.RegisterAgentTypeResponse().SerializeToString()

    async def add_subscription(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        client = await self._caller(context)
        message = await _decode(pb.AddSubscriptionRequest, request, context)
        try:
            self.gw.add_subscription(client, message.subscription)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.AddSubscriptionResponse().SerializeToString()

    async def remove_subscription(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        client = await self._caller(context)
        message = await _decode(pb.RemoveSubscriptionRequest, request, context)
        try:
            self.gw.remove_subscription(client, message.id)
        except KeyError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc.args[0]))
        return pb.RemoveSubscriptionResponse().SerializeToString()

    async def get_subscriptions(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await self._caller(context)
        subs = self.gw.subscription_protos()
        return pb.GetSubscriptionsResponse(subscriptions=subs).SerializeToString()


async def _decode(cls: Any, data: bytes, context: grpc.aio.ServicerContext) -> Any:
    try:
        return cls.FromString(data)
    except Exception as exc:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"undecodable {cls.__name__} ({len(data)} bytes): {exc}",
        )


def _labkit_handler(gw: LiveGateway) -> grpc.GenericRpcHandler:
    async def report_load(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        message = await _decode(labkit_pb2.LoadReport, request, context)
        known = gw.report_load(message)
        client = gw.clients.get(message.client_id)
        slowdown = client.slowdown if client is not None else 1.0
        return labkit_pb2.LoadReportAck(known=known, slowdown=slowdown).SerializeToString()

    async def stats(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        message = await _decode(labkit_pb2.StatsRequest, request, context)
        return gw.stats(message).SerializeToString()

    async def inject_fault(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        message = await _decode(labkit_pb2.FaultRequest, request, context)
        return gw.inject_fault(message).SerializeToString()

    return grpc.method_handlers_generic_handler(
        "labkit.LabkitGateway",
        {
            "ReportLoad": grpc.unary_unary_rpc_method_handler(report_load),
            "Stats": grpc.unary_unary_rpc_method_handler(stats),
            "InjectFault": grpc.unary_unary_rpc_method_handler(inject_fault),
        },
    )


def _raw_handler(gw: LiveGateway) -> grpc.GenericRpcHandler:
    h = _Handlers(gw)
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "OpenChannel": grpc.stream_stream_rpc_method_handler(h.open_channel),
            "OpenControlChannel": grpc.stream_stream_rpc_method_handler(h.open_control_channel),
            "RegisterAgent": grpc.unary_unary_rpc_method_handler(h.register_agent),
            "AddSubscription": grpc.unary_unary_rpc_method_handler(h.add_subscription),
            "RemoveSubscription": grpc.unary_unary_rpc_method_handler(h.remove_subscription),
            "GetSubscriptions": grpc.unary_unary_rpc_method_handler(h.get_subscriptions),
        },
    )


@dataclass
class Running:
    server: grpc.aio.Server
    gateway: LiveGateway
    port: int
    metrics_port: int | None
    metrics_server: asyncio.AbstractServer | None

    async def stop(self, grace: float = 1.0) -> None:
        for client in list(self.gateway.clients.values()):
            self.gateway.disconnect(client)
        if self.metrics_server is not None:
            self.metrics_server.close()
        await self.server.stop(grace)


async def start(
    gateway: LiveGateway,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    metrics_port: int | None = None,
) -> Running:
    """Bind and start; ``port=0`` picks a free port (returned in ``Running.port``)."""
    limit = gateway.config.max_message_bytes + 64 * 1024
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # a second gateway on a taken port must fail, not share it silently
            ("grpc.so_reuseport", 0),
            # a frozen peer (SIGSTOP, a dead host) is found by keepalive pings
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ]
    )
    server.add_generic_rpc_handlers((_raw_handler(gateway), _labkit_handler(gateway)))
    health_servicer = health.aio.HealthServicer() if hasattr(health, "aio") else None
    if health_servicer is None:
        health_servicer = _AsyncHealth()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    await server.start()
    await _set_serving(health_servicer)
    metrics_server = None
    metrics_bound = None
    if metrics_port is not None:
        metrics_server = await asyncio.start_server(
            lambda r, w: _serve_metrics(gateway, r, w), host, metrics_port
        )
        metrics_bound = metrics_server.sockets[0].getsockname()[1]
    return Running(server, gateway, bound, metrics_bound, metrics_server)


class _AsyncHealth(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 for grpc.aio servers when the package has no aio servicer."""

    def __init__(self) -> None:
        self.status = health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(self, request: Any, context: Any) -> Any:
        return health_pb2.HealthCheckResponse(status=self.status)


async def _set_serving(servicer: Any) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    if isinstance(servicer, _AsyncHealth):
        servicer.status = serving
        return
    for name in ("", SERVICE):
        result = servicer.set(name, serving)
        if asyncio.iscoroutine(result):
            await result


async def _serve_metrics(
    gateway: LiveGateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """A minimal HTTP endpoint: GET /metrics in Prometheus text format, 404 otherwise."""
    try:
        request = await asyncio.wait_for(reader.readline(), 5.0)
        while (await asyncio.wait_for(reader.readline(), 5.0)) not in (b"\r\n", b"\n", b""):
            pass
        path = request.split(b" ")[1] if request.count(b" ") >= 2 else b""
        if path == b"/metrics":
            body = gateway.metrics_text().encode()
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
        else:
            body = b"not found: try /metrics\n"
            head = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
        writer.write(head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        writer.write(body)
        await writer.drain()
    except (TimeoutError, ConnectionError, IndexError):
        pass
    finally:
        writer.close()


# re-exported for tests that build events
CloudEvent = ce.CloudEvent
