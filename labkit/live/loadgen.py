"""The live load generator: the scenario's open-loop arrivals, sent as AutoGen RPCs.

It is one more client of the gateway (its own ``client-id``), so what it measures is what an
AutoGen caller sees: send to reply through the gateway, workers and back. Arrival times, keys
and target types come from the same seeded streams as the simulator's (``labkit.sim.workload``),
so a live run and a simulated run of one scenario see the same traffic.

Arrivals are open-loop: a request goes out at its scheduled time whether or not earlier ones
were answered (a closed loop would hide overload by slowing down). Every request ends in the
record log with a detail: the reply (ok), the gateway's error response mapped back to its
reason, or — should the gateway break its promise — a client-side deadline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from labkit.core.outcomes import Detail
from labkit.core.routing import SubscriptionIndex, TopicId, TypePrefixSubscription, TypeSubscription
from labkit.live.pb import agent_worker_pb2 as pb
from labkit.live.pb import agent_worker_pb2_grpc as pb_grpc
from labkit.live.pb import cloudevent_pb2 as ce
from labkit.live.trace import ADDED_INDEX, TRACE_KEY, segments_ms
from labkit.live.worker import (
    ACK_ATTRIBUTE,
    ACK_TYPE_PREFIX,
    QUEUE_FULL_ERROR,
    SERVICE_MS_KEY,
    WORKER_METADATA_KEY,
    WORKER_MS_KEY,
)
from labkit.results import RecordLog
from labkit.results.records import PUBLISH
from labkit.scenario import Scenario
from labkit.sim.workload import (
    Arrivals,
    RequestMix,
    workload_streams,
)

#: the gateway's error responses start with this, then "<reason>: <text>"
_PREFIX = "labkit gateway: "
#: the gateway's reasons, mapped to the details the results schema knows
REASONS: dict[str, Detail] = {
    "unknown_type": Detail.UNKNOWN_TYPE,
    "no_worker": Detail.NO_WORKER,
    "worker_lost": Detail.WORKER_LOST,
    "deadline": Detail.DEADLINE,
    "rate_limited": Detail.RATE_LIMITED,
    "unauthorized": Detail.UNAUTHORIZED,
    "unauthorised": Detail.UNAUTHORIZED,
    "too_large": Detail.QUEUE_FULL,
}
#: the client gives the gateway this long past the deadline before it records a timeout itself
CLIENT_GRACE_S = 2.0


def detail_of(error: str) -> Detail:
    """The detail an error response stands for; a worker's own error is ``worker_error``."""
    if not error:
        return Detail.OK
    if error.startswith(QUEUE_FULL_ERROR):
        return Detail.QUEUE_FULL
    if error.startswith(_PREFIX):
        reason = error[len(_PREFIX) :].split(":", 1)[0]
        return REASONS.get(reason, Detail.WORKER_ERROR)
    return Detail.WORKER_ERROR


@dataclass
class _Sent:
    arrival: float
    agent_type: int  # -1 for a publish
    key: int
    kind: int = 0  # RPC or PUBLISH
    fanout: int = 0  # a publish: deliveries expected
    delivered: int = 0
    sent_at: float = 0.0  # CLOCK_MONOTONIC when handed to the stream (per-hop timing)


@dataclass
class LoadResult:
    log: RecordLog
    workers: list[str]
    sent: int
    late_replies: int
    started_wall: float
    lag_s: float  # how far behind schedule the generator fell at worst (its own limit)
    #: per completed request: arrival (s), latency, the worker's own account (ms) of its time
    #: (queue + service) and of the service alone — what calibration separates — then the
    #: worker's name, how late the generator sent it (ms) and the ``labkit.live.trace.ADDED``
    #: segments (ms) of the rest
    timing: list[tuple[Any, ...]] = field(default_factory=list)
    t0_monotonic: float = 0.0  # the run's time zero on CLOCK_MONOTONIC


class LoadGenerator:
    def __init__(self, scenario: Scenario, gateway: str, api_key: str | None = None) -> None:
        self.sc = scenario
        self.gateway = gateway
        self.client_id = f"loadgen-{uuid.uuid4()}"
        self.api_key = api_key
        streams = workload_streams(scenario.seed)
        wl = scenario.workload
        if wl.arrival.process == "closed":
            raise ValueError("live mode runs open-loop arrivals; closed loops are sim-only for now")
        self.arrivals = Arrivals(wl.arrival, scenario.duration_s, streams.arrivals)
        self.types = list(scenario.workers.agent_types)
        # what each arrival is: the simulator's own draws (``RequestMix``), same seed, same order
        self.mix = RequestMix(wl, self.types, streams)
        self.publish_fraction = wl.publish_fraction
        self.key_names = [f"k{i}" for i in range(wl.keys.count)]

    async def run(self, on_start: asyncio.Event | None = None) -> LoadResult:
        metadata = [("client-id", self.client_id)]
        if self.api_key:
            metadata.append(("x-api-key", self.api_key))
        log = RecordLog()
        workers: dict[str, int] = {}
        pending: dict[str, _Sent] = {}  # RPCs by request id, publishes by event id
        out: asyncio.Queue[pb.Message | None] = asyncio.Queue()
        late = 0
        timing: list[tuple[Any, ...]] = []
        deadline_s = self.sc.gateway.timeout_ms / 1000 + CLIENT_GRACE_S
        finished = asyncio.Event()
        arrivals_done = False
        # publishes are timed by delivery confirmations: workers send one RPC per delivery to
        # this agent type (a labkit extension the AutoGen protocol itself does not have)
        ack_type = f"{ACK_TYPE_PREFIX}{self.client_id}"

        async def outgoing() -> AsyncIterator[pb.Message]:
            while True:
                message = await out.get()
                if message is None:
                    return
                yield message

        async with grpc.aio.insecure_channel(
            self.gateway, options=[("grpc.max_receive_message_length", 64 << 20)]
        ) as channel:
            stub = pb_grpc.AgentRpcStub(channel)
            stream = stub.OpenChannel(outgoing(), metadata=metadata)
            await stream.wait_for_connection()
            subscriptions = SubscriptionIndex()
            if self.publish_fraction > 0:
                await stub.RegisterAgent(
                    pb.RegisterAgentTypeRequest(type=ack_type), metadata=metadata
                )
                listed = await stub.GetSubscriptions(
                    pb.GetSubscriptionsRequest(), metadata=metadata
                )
                for sub in listed.subscriptions:
                    if sub.WhichOneof("subscription") == "typeSubscription":
                        ts = sub.typeSubscription
                        subscriptions.add(TypeSubscription(ts.topic_type, ts.agent_type, sub.id))
                    else:
                        tp = sub.typePrefixSubscription
                        subscriptions.add(
                            TypePrefixSubscription(tp.topic_type_prefix, tp.agent_type, sub.id)
                        )
            t0 = time.monotonic()
            started_wall = time.time()

            def record(rid: str, detail: Detail, worker: str) -> None:
                sent = pending.pop(rid)
                index = workers.setdefault(worker, len(workers)) if worker else -1
                log.add(
                    0,
                    sent.kind,
                    sent.agent_type,
                    sent.key,
                    index if index >= 0 else _NO_WORKER,
                    sent.arrival,
                    time.monotonic() - t0,
                    int(detail),
                    1,
                    sent.fanout,
                )
                if arrivals_done and not pending:
                    finished.set()

            def on_ack(request: Any) -> None:
                # answer it (the gateway is waiting), then count the delivery
                reply = pb.RpcResponse(request_id=request.request_id)
                out.put_nowait(pb.Message(response=reply))
                sent = pending.get(request.target.key)
                if sent is None or sent.kind != PUBLISH:
                    return
                sent.delivered += 1
                if sent.delivered >= sent.fanout:
                    record(
                        request.target.key, Detail.OK, request.metadata.get(WORKER_METADATA_KEY, "")
                    )

            async def read() -> None:
                nonlocal late
                async for message in stream:
                    kind = message.WhichOneof("message")
                    if kind == "request" and message.request.target.type == ack_type:
                        on_ack(message.request)
                        continue
                    if kind != "response":
                        continue
                    response = message.response
                    rid = response.request_id
                    if rid not in pending:
                        late += 1
                        continue
                    md = response.metadata
                    worker = md.get(WORKER_METADATA_KEY, "")
                    if WORKER_MS_KEY in md:
                        sent = pending[rid]
                        received = time.monotonic()
                        end = received - t0
                        hops = segments_ms(sent.sent_at, md, received)
                        timing.append(
                            (
                                sent.arrival,
                                (end - sent.arrival) * 1000,
                                float(md[WORKER_MS_KEY]),
                                float(md.get(SERVICE_MS_KEY, "nan")),
                                worker,
                                (sent.sent_at - t0 - sent.arrival) * 1000,
                                *(hops[i] for i in ADDED_INDEX),
                            )
                        )
                    record(rid, detail_of(response.error), worker)

            reader = asyncio.create_task(read())
            if on_start is not None:
                on_start.set()
            lag = 0.0
            next_id = 0
            while True:
                t = self.arrivals.next()
                if t is None:
                    break
                wait = t - (time.monotonic() - t0)
                if wait > 0:
                    await asyncio.sleep(wait)
                else:
                    lag = max(lag, -wait)
                next_id += 1
                key, type_index = self.mix.next()
                if type_index < 0:
                    self._publish(next_id, t, key, ack_type, subscriptions, pending, out, record)
                    continue
                rid = str(next_id)
                sent = pending[rid] = _Sent(t, type_index, key)
                request = pb.RpcRequest(
                    request_id=rid,
                    target=pb.AgentId(type=self.types[type_index], key=self.key_names[key]),
                    payload=pb.Payload(
                        data_type="labkit.Ping",
                        data_content_type="application/json",
                        data=b'{"n": %d}' % next_id,
                    ),
                )
                request.metadata[TRACE_KEY] = "1"
                sent.sent_at = time.monotonic()
                out.put_nowait(pb.Message(request=request))
            arrivals_done = True
            if pending:
                try:
                    await asyncio.wait_for(finished.wait(), deadline_s)
                except TimeoutError:
                    for rid in list(pending):
                        record(rid, Detail.DEADLINE, "")
            out.put_nowait(None)
            reader.cancel()
            stream.cancel()
        names = [""] * len(workers)
        for name, index in workers.items():
            names[index] = name
        return LoadResult(log, names, next_id, late, started_wall, lag, timing, t0)

    def _publish(
        self,
        n: int,
        t: float,
        key: int,
        ack_type: str,
        subscriptions: SubscriptionIndex,
        pending: dict[str, _Sent],
        out: asyncio.Queue,
        record: Any,
    ) -> None:
        """A CloudEvent to a topic of the scenario, as AutoGen's publish_message sends it."""
        topic = self.mix.topic()
        source = self.key_names[key]
        event_id = f"{self.client_id}-{n}"
        fanout = len(subscriptions.recipients(TopicId(topic, source)))
        pending[event_id] = _Sent(t, -1, key, kind=PUBLISH, fanout=fanout)
        if fanout == 0:
            record(event_id, Detail.OK, "")  # nobody subscribed: done at once, as in the sim
            return

        def expire() -> None:
            # like an RPC, a publish gets the gateway's timeout: a lost delivery (a crashed
            # worker) ends it there, not at the end of the run
            if event_id in pending:
                record(event_id, Detail.DEADLINE, "")

        asyncio.get_running_loop().call_later(self.sc.gateway.timeout_ms / 1000, expire)
        event = ce.CloudEvent(id=event_id, source=source, spec_version="1.0", type=topic)
        attrs = {
            "datacontenttype": "application/json",
            "dataschema": "labkit.Ping",
            "agmsgkind": "publish",
            "agagentsendertype": "labkit-loadgen",
            "agagentsenderkey": self.client_id,
            ACK_ATTRIBUTE: ack_type,
        }
        for name, value in attrs.items():
            event.attributes[name].ce_string = value
        event.binary_data = b'{"n": %d}' % n
        out.put_nowait(pb.Message(cloudEvent=event))


#: record value for "no worker" (RecordLog maps -1 to the empty name)
_NO_WORKER = -1
