"""``labkit worker``: a worker process hosting synthetic agents, speaking AutoGen's protocol.

It is what the simulator's worker is, as a real process: ``concurrency`` requests served at
once, the rest queued FIFO, each taking a service time drawn from the scenario's distribution
(divided by this worker's speed). It tells the gateway its load every heartbeat interval over
labkit's own service, and when the gateway goes away it reconnects with full-jitter backoff and
registers its types and subscriptions again — AutoGen's own worker does neither.

Replies echo the request's payload and carry ``labkit-worker`` in their metadata, so the load
generator can attribute every request to the worker that served it. A published event is
handled by each local agent type subscribed to it (as an AutoGen worker does), each taking a
service time; if the event carries a ``labkitackto`` attribute, each delivery is confirmed by an
RPC to that agent type (the load generator's), keyed by the event id — how a live run times a
publish, which the protocol itself never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from labkit.live.pb import agent_worker_pb2 as pb
from labkit.live.pb import agent_worker_pb2_grpc as pb_grpc
from labkit.live.pb import labkit_pb2, labkit_pb2_grpc
from labkit.live.trace import TRACE_KEY, WORKER_IN, WORKER_OUT, stamp

log = logging.getLogger("labkit.worker")

WORKER_METADATA_KEY = "labkit-worker"
#: reply metadata: milliseconds of work (service) and from arrival to reply (queue + service)
SERVICE_MS_KEY = "labkit-service-ms"
WORKER_MS_KEY = "labkit-worker-ms"
#: reconnect backoff: full jitter over base * 2^n, capped
RECONNECT_BASE_S = 0.05
RECONNECT_CAP_S = 2.0
#: CloudEvent attribute naming the agent type that wants a confirmation of each delivery
ACK_ATTRIBUTE = "labkitackto"
#: a labkit worker's error response when its queue is full (the load generator maps it)
QUEUE_FULL_ERROR = "labkit worker: queue_full"
#: agent types of that kind start with this (the gateway admits their RPCs without the rate
#: limit: they confirm work already admitted)
ACK_TYPE_PREFIX = "labkit-acks-"


@dataclass
class WorkerOptions:
    gateway: str
    agent_types: tuple[str, ...] = ("agent",)
    name: str = ""
    concurrency: int = 1
    queue_limit: int | None = None  # requests waiting beyond those in service; None: no limit
    #: milliseconds of work per request (a draw per call)
    service_ms: Callable[[], float] = field(default_factory=lambda: lambda: 10.0)
    speed: float = 1.0
    report_interval_s: float = 0.5
    #: (kind "type" | "prefix", topic type or prefix, agent type) for the types it hosts
    subscriptions: tuple[tuple[str, str, str], ...] = ()
    api_key: str | None = None
    seed: int = 0


class LabkitWorker:
    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.client_id = options.name or f"worker-{uuid.uuid4()}"
        self.rng = random.Random(options.seed)
        self._slots = asyncio.Semaphore(options.concurrency)
        self._waiting = 0
        self._serving = 0
        self._busy_s = 0.0
        self._served = 0
        self._errors = 0
        self._rt_ewma_ms = 0.0
        self._max_queue = 0
        self.slowdown = 1.0  # an injected "slow" fault, learned from load report acks
        self._acks = 0
        self._stop = asyncio.Event()
        self.connections = 0

    @property
    def metadata(self) -> list[tuple[str, str]]:
        md = [("client-id", self.client_id)]
        if self.options.api_key:
            md.append(("x-api-key", self.options.api_key))
        return md

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Connect, serve, and on any loss of the gateway reconnect with backoff, until stopped."""
        failures = 0
        while not self._stop.is_set():
            started = time.monotonic()
            session = asyncio.create_task(self._session())
            stopper = asyncio.create_task(self._stop.wait())
            # a stop must not wait for a gateway that accepts connections but never answers
            await asyncio.wait({session, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not session.done():
                session.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await session
                break
            try:
                session.result()
            except (grpc.aio.AioRpcError, ConnectionError, OSError) as exc:
                reason = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else exc
                log.info("gateway connection lost (%s); reconnecting", reason)
            if self._stop.is_set():
                break
            # a session that lasted a while resets the backoff: the gateway came back
            failures = 0 if time.monotonic() - started > 5 else failures + 1
            delay = self.rng.uniform(0, min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2**failures))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _session(self) -> None:
        async with grpc.aio.insecure_channel(self.options.gateway) as channel:
            stub = pb_grpc.AgentRpcStub(channel)
            out: asyncio.Queue[pb.Message | None] = asyncio.Queue()

            async def outgoing() -> AsyncIterator[pb.Message]:
                while True:
                    message = await out.get()
                    if message is None:
                        return
                    yield message

            stream = stub.OpenChannel(outgoing(), metadata=self.metadata)
            await stream.wait_for_connection()
            # subscriptions first: once it is registered, its subscriptions are in place
            for kind, topic, agent_type in self.options.subscriptions:
                if agent_type not in self.options.agent_types:
                    continue
                sub_id = f"{self.client_id}:{kind}:{topic}:{agent_type}"
                if kind == "type":
                    sub = pb.Subscription(
                        id=sub_id,
                        typeSubscription=pb.TypeSubscription(
                            topic_type=topic, agent_type=agent_type
                        ),
                    )
                else:
                    sub = pb.Subscription(
                        id=sub_id,
                        typePrefixSubscription=pb.TypePrefixSubscription(
                            topic_type_prefix=topic, agent_type=agent_type
                        ),
                    )
                await stub.AddSubscription(
                    pb.AddSubscriptionRequest(subscription=sub), metadata=self.metadata
                )
            for agent_type in self.options.agent_types:
                await stub.RegisterAgent(
                    pb.RegisterAgentTypeRequest(type=agent_type), metadata=self.metadata
                )
            self.connections += 1
            log.info(
                "registered %s with %s", ",".join(self.options.agent_types), self.options.gateway
            )
            reporter = asyncio.create_task(self._report_load(channel))
            stopper = asyncio.create_task(self._stop.wait())
            tasks: set[asyncio.Task[None]] = set()
            try:
                reader = asyncio.create_task(self._read(stream, out, tasks))
                done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if reader in done:
                    reader.result()  # re-raise a connection error
            finally:
                reporter.cancel()
                stopper.cancel()
                for task in tasks:
                    task.cancel()
                out.put_nowait(None)
                stream.cancel()

    async def _read(
        self, stream: grpc.aio.StreamStreamCall, out: asyncio.Queue, tasks: set
    ) -> None:
        async for message in stream:
            kind = message.WhichOneof("message")
            if kind == "request":
                task = asyncio.create_task(self._serve(message.request, out))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif kind == "cloudEvent":
                task = asyncio.create_task(self._deliver(message.cloudEvent, out))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            # responses and events need no handling: synthetic agents call no one

    async def _serve(self, request: pb.RpcRequest, out: asyncio.Queue) -> None:
        arrived = time.monotonic()
        limit = self.options.queue_limit
        if (
            limit is not None
            and self._serving >= self.options.concurrency
            and self._waiting >= limit
        ):
            # as the simulator's worker does: a full queue turns the request away at once
            response = pb.RpcResponse(
                request_id=request.request_id,
                error=f"{QUEUE_FULL_ERROR}: {self._waiting} waiting (limit {limit})",
            )
            response.metadata[WORKER_METADATA_KEY] = self.client_id
            out.put_nowait(pb.Message(response=response))
            return
        served_s = await self._work()
        rt_ms = (time.monotonic() - arrived) * 1000
        self._rt_ewma_ms += 0.1 * (rt_ms - self._rt_ewma_ms)
        response = pb.RpcResponse(request_id=request.request_id, payload=request.payload)
        response.metadata[WORKER_METADATA_KEY] = self.client_id
        response.metadata[SERVICE_MS_KEY] = f"{served_s * 1000:.4f}"
        response.metadata[WORKER_MS_KEY] = f"{rt_ms:.4f}"
        if TRACE_KEY in request.metadata:
            stamp(response.metadata, WORKER_IN, arrived)
            stamp(response.metadata, WORKER_OUT, time.monotonic())
        out.put_nowait(pb.Message(response=response))

    def _recipients(self, topic_type: str) -> list[str]:
        """Local agent types subscribed to the topic type, each once (AutoGen's rule)."""
        types: list[str] = []
        for kind, topic, agent_type in self.options.subscriptions:
            if agent_type not in self.options.agent_types or agent_type in types:
                continue
            if topic_type == topic if kind == "type" else topic_type.startswith(topic):
                types.append(agent_type)
        return types

    async def _deliver(self, event: Any, out: asyncio.Queue) -> None:
        ack = event.attributes.get(ACK_ATTRIBUTE)
        ack_to = ack.ce_string if ack is not None else ""
        for agent_type in self._recipients(event.type):
            await self._work()
            if ack_to:
                self._acks += 1
                request = pb.RpcRequest(
                    request_id=f"ack-{self._acks}",
                    source=pb.AgentId(type=agent_type, key=event.source),
                    target=pb.AgentId(type=ack_to, key=event.id),
                    payload=pb.Payload(
                        data_type="labkit.Delivered",
                        data_content_type="application/json",
                        data=b'{"agent_type": "%s"}' % agent_type.encode(),
                    ),
                )
                request.metadata[WORKER_METADATA_KEY] = self.client_id
                out.put_nowait(pb.Message(request=request))

    async def _work(self) -> float:
        """One handling's service time, in one of the worker's slots; returns the seconds it
        took (the work as the clock saw it, overshoot included)."""
        self._waiting += 1
        self._max_queue = max(self._max_queue, self._waiting)
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1  # served or cancelled (its session ended): no longer waiting
        try:
            self._serving += 1
            speed = self.options.speed / self.slowdown
            started = time.monotonic()
            try:
                await asyncio.sleep(max(0.0, self.options.service_ms()) / 1000 / speed)
            finally:
                self._serving -= 1
                served_s = time.monotonic() - started
                self._busy_s += served_s
        finally:
            self._slots.release()
        self._served += 1
        return served_s

    async def _report_load(self, channel: grpc.aio.Channel) -> None:
        stub = labkit_pb2_grpc.LabkitGatewayStub(channel)
        interval = self.options.report_interval_s
        last_busy = self._busy_s
        while True:
            await asyncio.sleep(interval)
            busy = self._busy_s
            cpu = min(1.0, (busy - last_busy) / (interval * self.options.concurrency))
            last_busy = busy
            report = labkit_pb2.LoadReport(
                client_id=self.client_id,
                cpu=cpu,
                active=self._serving + self._waiting,
                capacity=self.options.concurrency,
                rt_ewma_ms=self._rt_ewma_ms,
                error_rate=0.0,
                busy_s=busy,
                served=self._served,
                max_queue=self._max_queue,
            )
            with contextlib.suppress(grpc.aio.AioRpcError):
                ack = await stub.ReportLoad(report, metadata=self.metadata, timeout=interval)
                self.slowdown = ack.slowdown if ack.slowdown > 0 else 1.0


def main(options: WorkerOptions, log_level: str = "info") -> int:
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    worker = LabkitWorker(options)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        print(
            f"labkit worker {worker.client_id} serving {','.join(options.agent_types)}", flush=True
        )
        await worker.run()

    asyncio.run(run())
    return 0
