"""The live gateway's admission and plumbing, in-process on a free loopback port: API keys, the
rate limit, the message-size limit, subscriptions, the control channel relay and /metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from labkit.live.gateway import LiveConfig, LiveGateway, Running, start
from labkit.live.pb import agent_worker_pb2 as pb
from labkit.live.pb import agent_worker_pb2_grpc as pb_grpc
from labkit.live.trace import (
    GATEWAY_IN,
    GATEWAY_OUT,
    GATEWAY_REPLY_IN,
    GATEWAY_REPLY_OUT,
    SEGMENTS,
    STAMPS,
    TRACE_KEY,
    segments_ms,
)

pytestmark = pytest.mark.timeout(60)


class Peer:
    """A raw client of the gateway: one OpenChannel stream plus the unary stub."""

    def __init__(self, channel: grpc.aio.Channel, name: str, key: str | None = None) -> None:
        self.md = [("client-id", name)] + ([("x-api-key", key)] if key else [])
        self.stub = pb_grpc.AgentRpcStub(channel)
        self.out: asyncio.Queue[pb.Message | None] = asyncio.Queue()
        self.stream: Any = None

    async def open(self) -> Peer:
        async def outgoing() -> AsyncIterator[pb.Message]:
            while (m := await self.out.get()) is not None:
                yield m

        self.stream = self.stub.OpenChannel(outgoing(), metadata=self.md)
        await self.stream.wait_for_connection()
        return self

    def request(self, rid: str, agent_type: str, data: bytes = b"{}") -> None:
        req = pb.RpcRequest(
            request_id=rid,
            target=pb.AgentId(type=agent_type, key="k"),
            payload=pb.Payload(data_type="T", data_content_type="application/json", data=data),
        )
        self.out.put_nowait(pb.Message(request=req))

    async def read(self) -> Any:
        return await asyncio.wait_for(self.stream.read(), 5)

    def close(self) -> None:
        self.out.put_nowait(None)
        if self.stream is not None:
            self.stream.cancel()


def run(
    body: Callable[[LiveGateway, Running, grpc.aio.Channel], Awaitable[None]],
    config: LiveConfig | None = None,
    metrics: bool = False,
) -> None:
    async def main() -> None:
        gw = LiveGateway(config)
        running = await start(gw, "127.0.0.1", 0, metrics_port=0 if metrics else None)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                await body(gw, running, channel)
        finally:
            await running.stop(grace=0.1)

    asyncio.run(main())


def with_gateway(**changes: Any) -> LiveConfig:
    config = LiveConfig()
    config.gateway = dataclasses.replace(config.gateway, **changes)
    return config


def test_api_keys_guard_rpcs_and_registration() -> None:
    async def body(gw: LiveGateway, _: Running, channel: grpc.aio.Channel) -> None:
        stranger = await Peer(channel, "stranger").open()
        stranger.request("1", "echo")
        reply = await stranger.read()
        assert reply.response.request_id == "1"
        assert "unauthorised" in reply.response.error
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stranger.stub.RegisterAgent(
                pb.RegisterAgentTypeRequest(type="echo"), metadata=stranger.md
            )
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        friend = await Peer(channel, "friend", key="s3cret").open()
        await friend.stub.RegisterAgent(
            pb.RegisterAgentTypeRequest(type="echo"), metadata=friend.md
        )
        assert "friend" in gw.registry.workers and "stranger" not in gw.registry.workers
        stranger.close()
        friend.close()

    run(body, with_gateway(api_keys=frozenset({"s3cret"})))


def test_rate_limit_answers_the_excess_with_errors() -> None:
    async def body(gw: LiveGateway, _: Running, channel: grpc.aio.Channel) -> None:
        caller = await Peer(channel, "caller").open()
        for i in range(20):
            caller.request(str(i), "nobody")  # unknown type: answered at once when admitted
        replies = [await caller.read() for _ in range(20)]
        errors = [r.response.error for r in replies]
        limited = [e for e in errors if "rate_limited" in e]
        assert len(limited) >= 10  # a burst of 5 at 1 per second: most are turned away
        assert all("unknown_type" in e for e in errors if e not in limited)
        assert gw.errors_by_reason["rate_limited"] == len(limited)
        caller.close()

    run(body, with_gateway(rate_limit_rps=1.0, rate_limit_burst=5.0))


def test_oversized_messages_get_an_error_not_a_dead_channel() -> None:
    config = LiveConfig(max_message_bytes=1000)

    async def body(gw: LiveGateway, _: Running, channel: grpc.aio.Channel) -> None:
        caller = await Peer(channel, "caller").open()
        caller.request("big", "echo", data=b"x" * 5000)
        caller.request("small", "echo")
        first, second = await caller.read(), await caller.read()
        assert first.response.request_id == "big" and "too_large" in first.response.error
        assert "5" in first.response.error and "1000" in first.response.error
        # the channel is alive: the next request was handled (no worker hosts echo)
        assert second.response.request_id == "small"
        assert "unknown_type" in second.response.error
        caller.close()

    run(body, config)


def test_subscriptions_are_merged_listed_and_removed_per_holder() -> None:
    async def body(gw: LiveGateway, _: Running, channel: grpc.aio.Channel) -> None:
        a = await Peer(channel, "a").open()
        b = await Peer(channel, "b").open()

        def sub(sid: str) -> pb.AddSubscriptionRequest:
            ts = pb.TypeSubscription(topic_type="news", agent_type="reader")
            return pb.AddSubscriptionRequest(
                subscription=pb.Subscription(id=sid, typeSubscription=ts)
            )

        await a.stub.AddSubscription(sub("s-a"), metadata=a.md)
        await b.stub.AddSubscription(sub("s-b"), metadata=b.md)  # the same subscription
        listed = await a.stub.GetSubscriptions(pb.GetSubscriptionsRequest(), metadata=a.md)
        assert len(listed.subscriptions) == 1
        # one holder removing it keeps it for the other
        await a.stub.RemoveSubscription(pb.RemoveSubscriptionRequest(id="s-a"), metadata=a.md)
        listed = await a.stub.GetSubscriptions(pb.GetSubscriptionsRequest(), metadata=a.md)
        assert len(listed.subscriptions) == 1
        await b.stub.RemoveSubscription(pb.RemoveSubscriptionRequest(id="s-b"), metadata=b.md)
        listed = await a.stub.GetSubscriptions(pb.GetSubscriptionsRequest(), metadata=a.md)
        assert len(listed.subscriptions) == 0
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await a.stub.RemoveSubscription(pb.RemoveSubscriptionRequest(id="nope"), metadata=a.md)
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        bad = pb.AddSubscriptionRequest(subscription=pb.Subscription(id="x"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await a.stub.AddSubscription(bad, metadata=a.md)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        a.close()
        b.close()

    run(body)


def test_control_messages_are_relayed_to_a_client_or_an_agents_worker() -> None:
    async def body(gw: LiveGateway, _: Running, channel: grpc.aio.Channel) -> None:
        worker = await Peer(channel, "worker").open()
        await worker.stub.RegisterAgent(pb.RegisterAgentTypeRequest(type="kv"), metadata=worker.md)
        stub = worker.stub
        wq: asyncio.Queue[pb.ControlMessage | None] = asyncio.Queue()
        cq: asyncio.Queue[pb.ControlMessage | None] = asyncio.Queue()

        async def outgoing(q: asyncio.Queue) -> AsyncIterator[pb.ControlMessage]:
            while (m := await q.get()) is not None:
                yield m

        wctl = stub.OpenControlChannel(outgoing(wq), metadata=worker.md)
        cctl = stub.OpenControlChannel(outgoing(cq), metadata=[("client-id", "caller")])
        await wctl.wait_for_connection()
        await cctl.wait_for_connection()
        await asyncio.sleep(0.2)  # both control streams registered
        cq.put_nowait(pb.ControlMessage(rpc_id="1", destination="agentid=kv/a"))
        got = await asyncio.wait_for(wctl.read(), 5)
        assert got.rpc_id == "1"
        cq.put_nowait(pb.ControlMessage(rpc_id="2", destination="agentid=ghost/a"))
        for _ in range(50):
            if gw.counters["control_undeliverable"]:
                break
            await asyncio.sleep(0.02)
        assert gw.counters["control_undeliverable"] == 1
        assert gw.counters["control_relayed"] == 1
        for q in (wq, cq):
            q.put_nowait(None)
        wctl.cancel()
        cctl.cancel()
        worker.close()

    run(body)


def test_metrics_endpoint_serves_prometheus_text() -> None:
    async def body(gw: LiveGateway, running: Running, channel: grpc.aio.Channel) -> None:
        caller = await Peer(channel, "caller").open()
        caller.request("1", "nobody")
        await caller.read()

        async def get(path: str) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", running.metrics_port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return data

        text = (await get("/metrics")).decode()
        assert text.startswith("HTTP/1.1 200")
        assert "labkit_gateway_rpc_requests_total 1" in text
        assert 'labkit_gateway_errors_total{reason="unknown_type"} 1' in text
        assert (await get("/other")).startswith(b"HTTP/1.1 404")
        caller.close()

    run(body, metrics=True)


def test_attempt_timeouts_retry_elsewhere_and_a_breaker_opens_on_a_silent_worker() -> None:
    from labkit.core.breaker import BreakerConfig
    from labkit.core.gateway import RetryPolicy

    config = with_gateway(
        timeout_s=3.0,
        attempt_timeout_s=0.2,
        retry=RetryPolicy(3, 0.001, 0.01),
        breaker=BreakerConfig(failure_threshold=1, open_s=30.0),
    )
    config.balancer = dataclasses.replace(config.balancer, strategy="round_robin")

    async def body(gw: LiveGateway, _: Running, channel: grpc.aio.Channel) -> None:
        silent = await Peer(channel, "silent").open()
        echo = await Peer(channel, "echo").open()
        for peer in (silent, echo):
            await peer.stub.RegisterAgent(pb.RegisterAgentTypeRequest(type="t"), metadata=peer.md)
        caller = await Peer(channel, "caller").open()

        async def answer() -> None:
            while True:
                m = await echo.stream.read()
                if m is grpc.aio.EOF:
                    return
                if m.WhichOneof("message") == "request":
                    reply = pb.RpcResponse(request_id=m.request.request_id)
                    echo.out.put_nowait(pb.Message(response=reply))

        answering = asyncio.create_task(answer())
        for i in range(6):
            caller.request(str(i), "t")
        replies = [await caller.read() for _ in range(6)]
        # every request succeeded: those sent to the silent worker timed out after 0.2 s
        # and were retried on the other; the breaker then kept the silent one out
        assert all(not r.response.error for r in replies)
        assert gw.counters["rpc_retries"] >= 1
        assert gw.policy.breakers is not None and gw.policy.breakers.opened >= 1
        answering.cancel()
        for peer in (silent, echo, caller):
            peer.close()

    run(body, config)


def test_a_caller_with_a_valid_key_is_served() -> None:
    async def body(gw: LiveGateway, _: Running, channel: grpc.aio.Channel) -> None:
        worker = await Peer(channel, "worker", key="s3cret").open()
        await worker.stub.RegisterAgent(
            pb.RegisterAgentTypeRequest(type="echo"), metadata=worker.md
        )
        caller = await Peer(channel, "caller", key="s3cret").open()
        caller.request("1", "echo")
        forwarded = await worker.read()
        assert forwarded.request.target.type == "echo"
        reply = pb.RpcResponse(request_id=forwarded.request.request_id)
        worker.out.put_nowait(pb.Message(response=reply))
        answer = await caller.read()
        assert answer.response.request_id == "1" and not answer.response.error
        worker.close()
        caller.close()

    run(body, with_gateway(api_keys=frozenset({"s3cret"})))


def sub_request(sid: str, topic: str, agent_type: str) -> pb.AddSubscriptionRequest:
    ts = pb.TypeSubscription(topic_type=topic, agent_type=agent_type)
    return pb.AddSubscriptionRequest(subscription=pb.Subscription(id=sid, typeSubscription=ts))


def test_a_shared_subscription_id_survives_one_holder_leaving() -> None:
    async def body(gw: LiveGateway, _: Running, channel: grpc.aio.Channel) -> None:
        a = await Peer(channel, "a").open()
        b = await Peer(channel, "b").open()
        for peer in (a, b):  # AutoGen workers of one type use the same id for the same sub
            await peer.stub.AddSubscription(sub_request("same", "news", "r"), metadata=peer.md)
        a.close()
        for _ in range(50):
            if "a" not in gw.clients:
                break
            await asyncio.sleep(0.02)
        listed = await b.stub.GetSubscriptions(pb.GetSubscriptionsRequest(), metadata=b.md)
        assert len(listed.subscriptions) == 1
        # and nobody can remove a subscription they do not hold
        c = await Peer(channel, "c").open()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.stub.RemoveSubscription(pb.RemoveSubscriptionRequest(id="same"), metadata=c.md)
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        b.close()
        c.close()

    run(body)


def test_a_publish_reaches_each_subscribed_type_once_when_one_worker_hosts_both() -> None:
    async def body(gw: LiveGateway, _: Running, channel: grpc.aio.Channel) -> None:
        w1 = await Peer(channel, "w1").open()
        w2 = await Peer(channel, "w2").open()
        await w1.stub.RegisterAgent(pb.RegisterAgentTypeRequest(type="A"), metadata=w1.md)
        for t in ("A", "B"):
            await w2.stub.RegisterAgent(pb.RegisterAgentTypeRequest(type=t), metadata=w2.md)
        for t in ("A", "B"):
            await w2.stub.AddSubscription(sub_request(f"s-{t}", "news", t), metadata=w2.md)
        publisher = await Peer(channel, "pub").open()
        for i in range(20):
            event = pb.Message()
            event.cloudEvent.id = str(i)
            event.cloudEvent.source = f"s{i}"
            event.cloudEvent.type = "news"
            publisher.out.put_nowait(event)
        for _ in range(50):
            if gw.counters["publishes"] == 20:
                break
            await asyncio.sleep(0.02)
        # w2 hosts both subscribed types: it alone gets each event (and delivers to both)
        assert gw.counters["deliveries"] == 20
        assert gw.counters["publish_overlaps"] == 0
        for peer in (w1, w2, publisher):
            peer.close()

    run(body)


def test_a_second_stream_with_the_same_id_keeps_the_registration() -> None:
    async def body(gw: LiveGateway, _: Running, channel: grpc.aio.Channel) -> None:
        first = await Peer(channel, "w").open()
        await first.stub.RegisterAgent(pb.RegisterAgentTypeRequest(type="echo"), metadata=first.md)
        second = await Peer(channel, "w").open()
        await asyncio.sleep(0.1)
        assert gw.registry.pool("echo").healthy == ("w",)
        caller = await Peer(channel, "caller").open()
        caller.request("1", "echo")
        forwarded = await second.read()  # the new stream is the worker now
        assert forwarded.request.target.type == "echo"
        for peer in (first, second, caller):
            peer.close()

    run(body)


def test_a_half_closed_stream_still_gets_its_replies() -> None:
    async def body(gw: LiveGateway, _: Running, channel: grpc.aio.Channel) -> None:
        worker = await Peer(channel, "worker").open()
        await worker.stub.RegisterAgent(
            pb.RegisterAgentTypeRequest(type="echo"), metadata=worker.md
        )
        caller = await Peer(channel, "caller").open()
        caller.request("1", "echo")
        caller.out.put_nowait(None)  # done sending: half-close
        forwarded = await worker.read()
        worker.out.put_nowait(
            pb.Message(response=pb.RpcResponse(request_id=forwarded.request.request_id))
        )
        answer = await caller.read()
        assert answer.response.request_id == "1" and not answer.response.error
        caller.close()
        worker.close()

    run(body)


def test_a_client_that_never_opens_its_stream_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    import labkit.live.gateway as gateway_module

    monkeypatch.setattr(gateway_module, "UNATTACHED_GRACE_S", 0.2)

    async def body(gw: LiveGateway, _: Running, channel: grpc.aio.Channel) -> None:
        ghost = Peer(channel, "ghost")
        await ghost.stub.RegisterAgent(pb.RegisterAgentTypeRequest(type="echo"), metadata=ghost.md)
        assert "ghost" in gw.registry.workers
        await asyncio.sleep(0.5)
        assert "ghost" not in gw.clients and "ghost" not in gw.registry.workers

    run(body)


def test_stats_return_the_load_reports_since_a_time_only_when_asked() -> None:
    from labkit.live.pb import labkit_pb2, labkit_pb2_grpc

    async def body(gw: LiveGateway, _: Running, channel: grpc.aio.Channel) -> None:
        worker = await Peer(channel, "w").open()
        await worker.stub.RegisterAgent(
            pb.RegisterAgentTypeRequest(type="echo"), metadata=worker.md
        )
        admin = labkit_pb2_grpc.LabkitGatewayStub(channel)
        report = labkit_pb2.LoadReport(client_id="w", cpu=0.25, active=3, capacity=4)
        assert (await admin.ReportLoad(report)).known
        middle = gw.load_history[-1][0]
        await asyncio.sleep(0.01)
        report.cpu, report.active = 0.75, 1
        await admin.ReportLoad(report)
        # a stranger's report is refused and not kept
        assert not (await admin.ReportLoad(labkit_pb2.LoadReport(client_id="x"))).known
        plain = await admin.Stats(labkit_pb2.StatsRequest())
        assert len(plain.load) == 0
        every = await admin.Stats(labkit_pb2.StatsRequest(with_load=True))
        assert [(s.worker, s.cpu, s.active) for s in every.load] == [("w", 0.25, 3), ("w", 0.75, 1)]
        later = await admin.Stats(
            labkit_pb2.StatsRequest(with_load=True, load_since_monotonic_s=middle + 1e-6)
        )
        assert [s.cpu for s in later.load] == [0.75]
        worker.close()

    run(body)


def test_a_traced_rpc_gets_the_gateways_stamps_and_an_untraced_one_none() -> None:
    async def body(gw: LiveGateway, _: Running, channel: grpc.aio.Channel) -> None:
        worker = await Peer(channel, "worker").open()
        await worker.stub.RegisterAgent(
            pb.RegisterAgentTypeRequest(type="echo"), metadata=worker.md
        )
        caller = await Peer(channel, "caller").open()
        answers = {}
        for rid, traced in (("plain", False), ("traced", True)):
            req = pb.RpcRequest(request_id=rid, target=pb.AgentId(type="echo", key="k"))
            if traced:
                req.metadata[TRACE_KEY] = "1"
            sent = time.monotonic()
            caller.out.put_nowait(pb.Message(request=req))
            forwarded = await worker.read()
            # the request is forwarded as sent, the flag included: a labkit worker stamps too
            assert (TRACE_KEY in forwarded.request.metadata) is traced
            reply = pb.RpcResponse(request_id=forwarded.request.request_id)
            worker.out.put_nowait(pb.Message(response=reply))
            answer = await caller.read()
            answers[rid] = (sent, answer.response.metadata, time.monotonic())
        assert not set(STAMPS) & set(answers["plain"][1])
        sent, md, received = answers["traced"]
        # a worker that does not stamp (as AutoGen's): the gateway's segments and the callers'
        # hops are there, the worker's three are not, and their sum is the gateway's gap
        assert set(md) == {GATEWAY_IN, GATEWAY_OUT, GATEWAY_REPLY_IN, GATEWAY_REPLY_OUT}
        seg = dict(zip(SEGMENTS, segments_ms(sent, md, received), strict=True))
        for name in ("to_gateway", "gateway", "gateway_reply", "to_caller"):
            assert 0 <= seg[name] < 5000, (name, seg)
        assert all(math.isnan(seg[n]) for n in ("to_worker", "worker", "from_worker"))
        gap = (float(md[GATEWAY_REPLY_IN]) - float(md[GATEWAY_OUT])) * 1000
        assert gap > 0
        total = sum(seg[n] for n in ("to_gateway", "gateway", "gateway_reply", "to_caller"))
        assert total + gap == pytest.approx((received - sent) * 1000)
        worker.close()
        caller.close()

    run(body)
