"""Interop tests: unmodified AutoGen workers (autogen-ext 0.7.5) against the live labkit gateway.

The gateway runs as ``python -m labkit gateway --host 127.0.0.1 --port 0`` and the AutoGen
workers, callers and publishers as ``tests/live_workers/autogen_worker.py`` subprocesses (see
``tests/live_support.py``; AutoGen is never imported here, its generated protos clash with
``labkit.live.pb`` in one process). The raw-client tests talk to the gateway with the stubs in
``labkit.live.pb``. Every wait is bounded and every process is stopped when a test ends.
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import time
from collections import Counter, defaultdict

import grpc
import pytest

from tests.live_support import (
    Procs,
    caller_results,
    gateway_overridden,
    wait_until,
)

if not gateway_overridden():
    try:
        import labkit.live.gateway  # noqa: F401
    except ImportError as exc:
        pytest.skip(
            f"labkit.live.gateway cannot be imported yet ({exc}); the live interop tests run "
            "against it",
            allow_module_level=True,
        )
if importlib.util.find_spec("autogen_ext") is None:
    pytest.skip(
        "autogen-ext[grpc]==0.7.5 is not installed (pip install -e '.[test]')",
        allow_module_level=True,
    )

from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc

from labkit.live.pb import agent_worker_pb2, agent_worker_pb2_grpc

pytestmark = pytest.mark.timeout(60)

GATEWAY_TIMEOUT_MS = 5000
DEFAULT_GATEWAY_ARGS = ("--timeout-ms", str(GATEWAY_TIMEOUT_MS))
# A caller gives each RPC the gateway's deadline plus this much before calling it hung.
CALL_SLACK_S = 10.0
CALL_TIMEOUT_S = GATEWAY_TIMEOUT_MS / 1000 + CALL_SLACK_S
# How long a test keeps listening for deliveries that should not come.
QUIET_S = 1.0


@pytest.fixture
def procs(tmp_path):
    started = Procs(tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def gateway(request, procs) -> str:
    """The gateway's ``127.0.0.1:PORT``; parametrize indirectly to pass other options."""
    args = getattr(request, "param", DEFAULT_GATEWAY_ARGS)
    return procs.gateway(*args)


def assert_echoes(results, caller: str, procs: Procs) -> None:
    """Every result is a reply from the agent it was sent to, for this caller's request."""
    bad = [
        r
        for r in results
        if not r["ok"]
        or r.get("echo_caller") != caller
        or r.get("echo_key") != r["key"]
        or r.get("echo_seq") != r["seq"]
    ]
    assert not bad, procs.explain(f"{caller}: {len(bad)} wrong or failed results, e.g. {bad[:3]}")


# -- RPC -----------------------------------------------------------------------------------


def test_one_worker_answers_every_rpc(procs, gateway):
    procs.worker("w1", gateway, "echo")
    caller = procs.caller("c1", gateway, "echo", count=20, timeout=CALL_TIMEOUT_S)
    results = caller_results(caller, 20, timeout=CALL_TIMEOUT_S + 10, procs=procs)
    assert_echoes(results, "c1", procs)
    assert {r["worker"] for r in results} == {"w1"}
    assert {r["echo_type"] for r in results} == {"echo"}
    assert sorted(r["seq"] for r in results) == list(range(20))


def test_two_workers_share_a_type_and_each_key_sticks_to_one(procs, gateway):
    # AutoGen's own host refuses the second RegisterAgent for "echo"; the gateway accepts it
    # (and the duplicate "echo:" prefix subscription that AutoGen's register() adds).
    procs.worker("w1", gateway, "echo")
    procs.worker("w2", gateway, "echo")
    owner: dict[str, set[str]] = defaultdict(set)
    for name in ("c1", "c2"):  # two callers: the key -> worker map is not per caller
        caller = procs.caller(name, gateway, "echo", count=40, repeat=3, timeout=CALL_TIMEOUT_S)
        results = caller_results(caller, 120, timeout=CALL_TIMEOUT_S + 10, procs=procs)
        assert_echoes(results, name, procs)
        for r in results:
            owner[r["key"]].add(r["worker"])
    assert len(owner) == 40
    split = {key: sorted(workers) for key, workers in owner.items() if len(workers) > 1}
    assert not split, procs.explain(f"keys answered by more than one worker: {split}")
    load = Counter(next(iter(workers)) for workers in owner.values())
    assert set(load) == {"w1", "w2"}, procs.explain(f"keys per worker: {dict(load)}")


@pytest.mark.parametrize("gateway", [("--timeout-ms", "30000")], indirect=True)
@pytest.mark.parametrize("with_worker", [True, False], ids=["echo-registered", "no-workers"])
def test_unknown_agent_type_gets_a_prompt_error(procs, gateway, with_worker):
    # The gateway's own timeout is 30 s but the caller waits only 5 s: only an immediate
    # "unknown agent type" error passes (AutoGen's host drops such a request and the caller
    # waits forever).
    if with_worker:
        procs.worker("w1", gateway, "echo")
    caller = procs.caller("c1", gateway, "ghost", keys=["a", "b", "c"], timeout=5.0)
    results = caller_results(caller, 3, timeout=20, procs=procs)
    timed_out = [r for r in results if r.get("timed_out")]
    assert not timed_out, procs.explain("no error response within 5 s for an unknown type")
    assert all(not r["ok"] for r in results), procs.explain(f"unexpected replies: {results}")
    unnamed = [r["error"] for r in results if "ghost" not in r["error"]]
    assert not unnamed, procs.explain(f"errors that do not name the type 'ghost': {unnamed}")


def test_callers_with_overlapping_request_ids_get_only_their_own_replies(procs, gateway):
    # Both AutoGen callers number their requests "1".."30"; the handler sleeps so that both
    # sets are in flight on the same worker at once.
    procs.worker("w1", gateway, "echo", delay_ms=100)
    callers = [
        procs.caller(name, gateway, "echo", count=30, timeout=CALL_TIMEOUT_S, wait_go=True)
        for name in ("alice", "bob")
    ]
    for caller in callers:
        caller.send("go\n")
    for caller in callers:
        results = caller_results(caller, 30, timeout=CALL_TIMEOUT_S + 10, procs=procs)
        assert_echoes(results, caller.name, procs)
        assert sorted(r["seq"] for r in results) == list(range(30))


# -- publish / subscribe -------------------------------------------------------------------

PUBSUB_CASES = {
    # TypeSubscription("news" -> listener): topic ("news", "s1") goes to agent listener/s1.
    "type": dict(
        sub=["news=listener"],
        prefix_sub=[],
        topics=["news"],
        noise=["weather", "newsy", "news.extra"],
    ),
    # TypePrefixSubscription("alerts." -> listener): any topic type starting "alerts.".
    "prefix": dict(
        sub=[],
        prefix_sub=["alerts.=listener"],
        topics=["alerts.disk", "alerts.cpu"],
        noise=["alerts", "alert.disk", "weather"],
    ),
}


@pytest.mark.parametrize("case", sorted(PUBSUB_CASES))
def test_publish_reaches_a_type_hosted_twice_once_per_event(procs, gateway, case):
    spec = PUBSUB_CASES[case]
    workers = [
        procs.worker(name, gateway, "listener", sub=spec["sub"], prefix_sub=spec["prefix_sub"])
        for name in ("w1", "w2")
    ]
    procs.publisher(
        "p1", gateway, topics=spec["topics"], source="s1", count=10, noise_topics=spec["noise"]
    )

    def deliveries():
        return [r for w in workers for r in w.records("delivered")]

    wait_until(lambda: len(deliveries()) >= 10, 20, "10 deliveries", procs)
    time.sleep(QUIET_S)  # a duplicate or a stray event would arrive in this time
    got = deliveries()
    seqs = Counter(r["seq"] for r in got)
    assert len(got) == 10 and set(seqs) == set(range(10)), procs.explain(
        f"deliveries per event seq: {dict(seqs)} (want each of 0..9 exactly once)"
    )
    assert {(r["agent_type"], r["agent_key"]) for r in got} == {("listener", "s1")}
    assert {r["topic_type"] for r in got} == set(spec["topics"])
    assert {r["publisher"] for r in got} == {"p1"}

    # Both workers added the subscription (each with its own id): the gateway keeps it once.
    listed = Counter(
        (kind, topic, agent)
        for kind, topic, agent in run(list_subscriptions(gateway))
        if agent == "listener"
    )
    wanted = [("prefix", "listener:", "listener")]  # what AutoGen's register() adds
    wanted += [("type", pair.split("=")[0], "listener") for pair in spec["sub"]]
    wanted += [("prefix", pair.split("=")[0], "listener") for pair in spec["prefix_sub"]]
    for key in wanted:
        assert listed[key] == 1, f"subscription {key} listed {listed[key]} times: {dict(listed)}"


# -- failures ------------------------------------------------------------------------------


NO_RETRY_SCENARIO = f"""\
name: interop-no-retry
duration_s: 10
workers: {{count: 2, agent_types: [echo]}}
workload: {{arrival: {{process: poisson, rate_rps: 10}}}}
gateway: {{timeout_ms: {GATEWAY_TIMEOUT_MS}, retries: {{max_attempts: 1}}}}
balancer: {{strategy: consistent_hash}}
"""


@pytest.mark.parametrize("retries", ["default", "off"])
def test_worker_killed_mid_flight_every_rpc_ends_and_the_survivor_takes_over(
    procs, tmp_path, retries
):
    # "default": the gateway's own settings (it may retry a lost request on the survivor).
    # "off": a scenario with max_attempts 1, so each lost request must be answered with an
    # error naming the lost worker.
    args = list(DEFAULT_GATEWAY_ARGS)
    if retries == "off":
        scenario = tmp_path / "no-retry.yaml"
        scenario.write_text(NO_RETRY_SCENARIO)
        args += ["--scenario", str(scenario)]
    gateway = procs.gateway(*args)
    w1 = procs.worker("w1", gateway, "echo", delay_ms=200)
    procs.worker("w2", gateway, "echo", delay_ms=200)
    lost_id = w1.ready["client_id"]
    assert lost_id, "the AutoGen worker did not report its client-id"
    caller = procs.caller("c1", gateway, "echo", count=40, timeout=CALL_TIMEOUT_S, wait_go=True)
    caller.send("go\n")
    caller.wait_event("sending", 10)
    sent_at = time.monotonic()
    # Kill w1 about 100 ms in, once it holds a request: handlers sleep 200 ms, so what it
    # has received by then is still in flight.
    w1.wait_event("received", 10)
    time.sleep(max(0.0, 0.1 - (time.monotonic() - sent_at)))
    w1.kill()
    assert w1.wait_eof(5), "w1's stdout stayed open after SIGKILL"

    results = caller_results(caller, 40, timeout=CALL_TIMEOUT_S + 10, procs=procs)
    hung = [r for r in results if r.get("timed_out")]
    assert not hung, procs.explain(f"{len(hung)} RPCs got no reply or error within the deadline")
    by_seq = {r["seq"]: r for r in results}
    in_flight = {r["seq"] for r in w1.records("received") if r["caller"] == "c1"} - {
        r["seq"] for r in results if r["ok"] and r["worker"] == "w1"
    }
    assert in_flight, procs.explain("w1 had no request in flight when it was killed")

    failed = [r for r in results if not r["ok"]]
    unnamed = [r["error"] for r in failed if lost_id not in r["error"]]
    assert not unnamed, procs.explain(
        f"errors that do not name the lost worker (client-id {lost_id}): {unnamed[:5]}"
    )
    assert_echoes([r for r in results if r["ok"]], "c1", procs)
    for seq in in_flight:
        result = by_seq[seq]
        # a lost request ends with an error naming w1, or (if retried) a reply from w2
        assert not result["ok"] or result["worker"] == "w2", result
        if retries == "off":
            assert not result["ok"], procs.explain(f"lost RPC answered without retries: {result}")

    # RPCs sent after the kill, for every key (w1's included), all go to the survivor.
    after = procs.caller("c2", gateway, "echo", count=40, timeout=CALL_TIMEOUT_S)
    results = caller_results(after, 40, timeout=CALL_TIMEOUT_S + 10, procs=procs)
    assert_echoes(results, "c2", procs)
    assert {r["worker"] for r in results} == {"w2"}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_gateway_exits_zero_on_signal_with_workers_connected(procs, gateway, sig):
    procs.worker("w1", gateway, "echo")
    caller = procs.caller("c1", gateway, "echo", count=5, timeout=CALL_TIMEOUT_S)
    caller_results(caller, 5, timeout=CALL_TIMEOUT_S + 10, procs=procs)
    proc = procs.gateway_proc
    assert proc is not None
    proc.popen.send_signal(sig)
    code = proc.wait_exit(5.0)
    assert code == 0, procs.explain(f"gateway exit status after {sig.name}: {code} (want 0 in 5 s)")


# -- raw clients with labkit's generated stubs ----------------------------------------------

# Field 1 (request), length-delimited, with a length far beyond the frame: never decodable.
GARBAGE = b"\x0a\xff\xff\xff\xff\x0f\x00"


def run(coro, timeout: float = 20.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ghost_request(request_id: str) -> agent_worker_pb2.Message:
    return agent_worker_pb2.Message(
        request=agent_worker_pb2.RpcRequest(
            request_id=request_id,
            target=agent_worker_pb2.AgentId(type="ghost", key="k"),
            method="",
            payload=agent_worker_pb2.Payload(
                data_type="Ping", data_content_type="application/json", data=b"{}"
            ),
        )
    )


async def list_subscriptions(address: str) -> list[tuple[str, str, str]]:
    """GetSubscriptions as (kind, topic type or prefix, agent type).

    The gateway serves the unary methods only to a client with an open channel, so this opens
    one first and waits for an answer on it (proof the gateway has registered it)."""
    metadata = [("client-id", "interop-observer")]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_worker_pb2_grpc.AgentRpcStub(channel)
        stream = stub.OpenChannel(metadata=metadata, timeout=15)
        await stream.write(ghost_request("probe"))
        while True:
            message = await asyncio.wait_for(stream.read(), 5)
            assert message is not grpc.aio.EOF, "the gateway closed the observer's channel"
            if message.WhichOneof("message") == "response":
                break
        reply = await stub.GetSubscriptions(
            agent_worker_pb2.GetSubscriptionsRequest(), metadata=metadata, timeout=5
        )
        stream.cancel()
    out = []
    for sub in reply.subscriptions:
        if sub.WhichOneof("subscription") == "typeSubscription":
            t = sub.typeSubscription
            out.append(("type", t.topic_type, t.agent_type))
        else:
            p = sub.typePrefixSubscription
            out.append(("prefix", p.topic_type_prefix, p.agent_type))
    return out


def test_health_service_reports_serving(gateway):
    async def check():
        async with grpc.aio.insecure_channel(gateway) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)

    reply = run(check())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


MISSING_CLIENT_ID_CALLS = {
    "RegisterAgent": lambda stub: stub.RegisterAgent(
        agent_worker_pb2.RegisterAgentTypeRequest(type="echo"), timeout=5
    ),
    "AddSubscription": lambda stub: stub.AddSubscription(
        agent_worker_pb2.AddSubscriptionRequest(
            subscription=agent_worker_pb2.Subscription(
                id="sub-1",
                typeSubscription=agent_worker_pb2.TypeSubscription(
                    topic_type="news", agent_type="echo"
                ),
            )
        ),
        timeout=5,
    ),
    "GetSubscriptions": lambda stub: stub.GetSubscriptions(
        agent_worker_pb2.GetSubscriptionsRequest(), timeout=5
    ),
    "OpenChannel": lambda stub: stub.OpenChannel(timeout=5).read(),
}


@pytest.mark.parametrize("method", sorted(MISSING_CLIENT_ID_CALLS))
def test_call_without_client_id_is_invalid_argument(gateway, method):
    async def call():
        async with grpc.aio.insecure_channel(gateway) as channel:
            stub = agent_worker_pb2_grpc.AgentRpcStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await MISSING_CLIENT_ID_CALLS[method](stub)
            return info.value

    error = run(call())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert "client-id" in (error.details() or ""), error.details()


def test_undecodable_frame_does_not_kill_the_channel(gateway):
    with pytest.raises(DecodeError):  # guard: the frame really is undecodable
        agent_worker_pb2.Message.FromString(GARBAGE)

    async def exchange():
        async with grpc.aio.insecure_channel(gateway) as channel:
            open_channel = channel.stream_stream(
                "/agents.AgentRpc/OpenChannel",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )
            call = open_channel(metadata=[("client-id", "raw-garbage-client")], timeout=15)
            answers = {}
            for request_id in ("1", "2"):
                await call.write(GARBAGE)
                await call.write(ghost_request(request_id).SerializeToString())
                # Other frames may come first (e.g. an error response with request_id ""
                # reporting the bad frame); wait for the answer to this request.
                while request_id not in answers:
                    frame = await asyncio.wait_for(call.read(), 5)
                    assert frame is not grpc.aio.EOF, "the gateway closed the channel"
                    message = agent_worker_pb2.Message.FromString(frame)
                    if message.WhichOneof("message") == "response":
                        answers[message.response.request_id] = message.response
            await call.done_writing()
            call.cancel()
            return answers

    try:
        answers = run(exchange())
    except grpc.aio.AioRpcError as exc:
        pytest.fail(f"the channel failed after an undecodable frame: {exc.code()} {exc.details()}")
    for request_id in ("1", "2"):
        assert "ghost" in answers[request_id].error, answers[request_id]
