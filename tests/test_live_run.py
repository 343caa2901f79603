"""The live driver end to end: the gateway and labkit workers as real processes on loopback,
the load generator, faults applied to processes, results in the simulator's schema, and no
process left behind."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from labkit.core.outcomes import Detail
from labkit.live.gateway import LiveGateway, start
from labkit.live.loadgen import detail_of
from labkit.live.run import Supervisor, run_live
from labkit.live.trace import ADDED_COLUMNS, SEGMENTS
from labkit.live.worker import LabkitWorker, WorkerOptions
from labkit.plots_breakdown import has_breakdown, latency_breakdown
from labkit.scenario import load_scenario
from labkit.sim import simulate

pytestmark = pytest.mark.timeout(120)


def small(tmp_path: Path, **extra: Any) -> Path:
    data: dict[str, Any] = {
        "name": "live_small",
        "seed": 3,
        "duration_s": 4,
        "warmup_s": 1,
        "workers": {
            "count": 3,
            "concurrency": 2,
            "service_time": {"dist": "exponential", "mean_ms": 5},
        },
        "workload": {"arrival": {"process": "poisson", "rate_rps": 150}, "keys": {"count": 50}},
        "gateway": {"timeout_ms": 2000},
        "balancer": {"strategy": "p2c"},
    }
    data.update(extra)
    path = tmp_path / "live_small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes; the supervisor reaps its children
    try:
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0
    except FileNotFoundError:
        return False


def test_live_run_matches_the_simulators_schema_and_traffic(tmp_path: Path) -> None:
    sc = load_scenario(small(tmp_path))
    sup = Supervisor()
    live = run_live(sc, supervisor=sup)
    sim = simulate(sc)
    assert live.summary["driver"] == "live"
    assert list(live.records.columns) == list(sim.records.columns)
    assert set(live.workers.columns) >= {"worker", "served", "utilization", "busy_s"}
    # the same seeded arrivals: the same number of requests, at the same times
    assert len(live.records) == len(sim.records)
    assert live.records["arrival_s"].to_numpy() == pytest.approx(
        sim.records["arrival_s"].to_numpy()
    )
    assert live.summary["requests"]["completed"] == live.summary["requests"]["offered"]
    # every reply names its worker, every worker served some, and the counts agree
    assert set(live.records["worker"]) <= {"w-0", "w-1", "w-2"}
    assert int(live.workers["served"].sum()) == len(live.records)
    assert (live.workers["served"] > 0).all()
    # every reply carried the worker's own timing, which calibration splits the latency with
    assert len(live.timing) == len(live.records)
    assert (live.timing["worker_ms"] <= live.timing["latency_ms"] + 1e-6).all()
    assert (live.timing["service_ms"] <= live.timing["worker_ms"] + 1e-6).all()
    # and the per-hop stamps (one clock on one machine): every segment was measured, none runs
    # backwards, and with the worker's time they make up the latency from the actual send
    hops = live.timing[list(ADDED_COLUMNS)]
    assert hops.notna().all().all() and (hops >= 0).all().all()
    # from the scheduled arrival: the generator's late send, the segments, the worker's time
    # (its own account, taken a few microseconds before its last stamp)
    total = live.timing["send_lag_ms"] + hops.sum(axis=1) + live.timing["worker_ms"]
    gap = live.timing["latency_ms"] - total
    assert (gap >= -1e-6).all() and (gap < 1.0).all(), gap.describe()
    table = latency_breakdown(live)
    assert list(table["segment"]) == ["send_lag", *SEGMENTS]
    assert (table["samples"] == len(live.timing)).all()
    assert 0.95 < table["share"].sum() <= 1.0 + 1e-9
    assert not has_breakdown(sim)
    # real processes are slower than a zero-latency model, never faster
    assert live.summary["latency_ms"]["p50"] > sim.summary["latency_ms"]["p50"]
    assert sup.pids and not any(alive(p) for p in sup.pids)


def test_a_killed_worker_loses_in_flight_requests_and_the_rest_fail_over(tmp_path: Path) -> None:
    path = small(
        tmp_path,
        duration_s=5,
        workers={
            "count": 3,
            "concurrency": 4,
            "service_time": {"dist": "constant", "value_ms": 150},
        },
        workload={"arrival": {"process": "poisson", "rate_rps": 40}, "keys": {"count": 50}},
        gateway={"timeout_ms": 3000, "retries": {"max_attempts": 2, "base_ms": 1}},
        balancer={"strategy": "round_robin"},
        faults=[{"kind": "crash", "at_s": 2, "workers": ["w-1"]}],
    )
    sup = Supervisor()
    res = run_live(load_scenario(path), supervisor=sup)
    rec = res.records
    # everything ended: requests in flight on w-1 were retried on another worker
    assert res.summary["requests"]["completed"] == res.summary["requests"]["offered"]
    counters = res.summary["live"]["gateway_counters"]
    assert counters["rpc_retries"] > 0
    assert res.summary["resilience"]["retries"] == counters["rpc_retries"]
    after = rec[rec["arrival_s"] > 2.5]
    assert len(after) > 0 and "w-1" not in set(after["worker"])
    # the gateway noticed the closed channel at once: a registry "down" event right after 2 s
    ev = res.events
    down = ev[(ev["worker"] == "w-1") & (ev["source"] == "registry") & (ev["event"] == "down")]
    assert len(down) == 1 and 2.0 <= down["t_s"].iloc[0] < 2.5
    assert res.summary["faults"][0]["time_to_detect_s"] < 0.5
    # per-worker served counts include what w-1 served before it was killed
    assert int(res.workers["served"].sum()) == len(rec)
    assert int(res.workers.set_index("worker").loc["w-1", "served"]) > 0
    # the workers' load reports, on the run's clock: w-1 goes silent when killed
    reports = res.load_reports
    assert set(reports["worker"].astype(str)) == {"w-0", "w-1", "w-2"}
    assert reports["t_s"].min() >= 0 and reports["utilization"].between(0, 1).all()
    w1 = reports[reports["worker"] == "w-1"]["t_s"]
    assert len(w1) >= 2 and w1.max() < 2.5
    assert (reports[reports["worker"] == "w-0"]["t_s"] > 4).any()
    assert not any(alive(p) for p in sup.pids)


def test_flaky_and_slow_workers_live(tmp_path: Path) -> None:
    path = small(
        tmp_path,
        duration_s=5,
        workers={
            "count": 3,
            "concurrency": 1,
            "service_time": {"dist": "constant", "value_ms": 10},
        },
        workload={"arrival": {"process": "poisson", "rate_rps": 60}, "keys": {"count": 50}},
        balancer={"strategy": "round_robin"},
        faults=[
            {"kind": "flaky", "at_s": 0, "for_s": 10, "workers": ["w-0"], "error_rate": 1.0},
            {"kind": "slow", "at_s": 0, "for_s": 10, "workers": ["w-2"], "factor": 4},
        ],
    )
    sup = Supervisor()
    res = run_live(load_scenario(path), supervisor=sup)
    rec = res.records
    # every reply of w-0 became an error (no retries configured); the others succeeded
    by_worker = rec.groupby("worker", observed=True)["detail"].agg(lambda d: set(d.astype(str)))
    assert by_worker["w-0"] == {"worker_error"}
    assert by_worker["w-1"] == {"ok"}
    # w-2 runs a quarter of the time: its 10 ms of work take ~40 ms of wall time
    work = res.timing.groupby("worker")["service_ms"].median()
    assert work["w-2"] > 2.5 * work["w-1"]
    assert not any(alive(p) for p in sup.pids)


def test_detail_of_maps_gateway_reasons() -> None:
    assert detail_of("") is Detail.OK
    assert detail_of("labkit gateway: unknown_type: unknown agent type 'x'") is Detail.UNKNOWN_TYPE
    assert detail_of("labkit gateway: worker_lost: worker w-1 was lost") is Detail.WORKER_LOST
    assert detail_of("labkit gateway: deadline: no reply") is Detail.DEADLINE
    assert detail_of("ValueError: the agent raised") is Detail.WORKER_ERROR


def test_worker_reconnects_and_reregisters_after_a_gateway_restart() -> None:
    async def scenario() -> None:
        gw1 = LiveGateway()
        running = await start(gw1, "127.0.0.1", 0)
        port = running.port
        worker = LabkitWorker(
            WorkerOptions(gateway=f"127.0.0.1:{port}", agent_types=("echo",), name="w-x")
        )
        task = asyncio.create_task(worker.run())
        try:
            await _until(lambda: "w-x" in gw1.registry.workers, 10)
            await running.stop(grace=0.1)
            gw2 = LiveGateway()
            running = await start(gw2, "127.0.0.1", port)
            await _until(lambda: "w-x" in gw2.registry.workers, 15)
            assert worker.connections >= 2
            assert gw2.registry.pool("echo").healthy == ("w-x",)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 10)
            await running.stop(grace=0.1)

    asyncio.run(scenario())


async def _until(cond: Any, timeout: float) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def test_a_worker_may_register_before_its_channel_arrives() -> None:
    """AutoGen's worker calls RegisterAgent as soon as its stream's headers are sent, so the
    unary call can overtake the stream: the gateway must accept it and attach the stream."""
    import grpc

    from labkit.live.pb import agent_worker_pb2 as pb
    from labkit.live.pb import agent_worker_pb2_grpc as pb_grpc

    async def scenario() -> None:
        gw = LiveGateway()
        running = await start(gw, "127.0.0.1", 0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = pb_grpc.AgentRpcStub(channel)
                md = [("client-id", "early")]
                await stub.RegisterAgent(pb.RegisterAgentTypeRequest(type="echo"), metadata=md)
                assert "early" in gw.registry.workers
                out: asyncio.Queue[pb.Message | None] = asyncio.Queue()

                async def outgoing() -> Any:
                    while (m := await out.get()) is not None:
                        yield m

                stream = stub.OpenChannel(outgoing(), metadata=md)
                await stream.wait_for_connection()
                # a request to echo reaches this stream: it is the registered worker's
                request = pb.RpcRequest(request_id="1", target=pb.AgentId(type="echo", key="k"))
                out.put_nowait(pb.Message(request=request))
                forwarded = await asyncio.wait_for(stream.read(), 5)
                assert forwarded.request.target.type == "echo"
                out.put_nowait(None)
                stream.cancel()
        finally:
            await running.stop(grace=0.1)

    asyncio.run(scenario())


def test_fault_injection_requests_are_validated() -> None:
    from labkit.live.pb import labkit_pb2

    gw = LiveGateway()
    gw.unattached("w-0", None)

    def inject(**kw: Any) -> Any:
        return gw.inject_fault(labkit_pb2.FaultRequest(**kw))

    assert "no connected client" in inject(client_id="nope", kind="delay").error
    assert "unknown fault kind" in inject(client_id="w-0", kind="melt").error
    assert "factor must be > 0" in inject(client_id="w-0", kind="slow", factor=0).error
    assert "error_rate" in inject(client_id="w-0", kind="flaky", error_rate=2).error
    assert inject(client_id="w-0", kind="slow", factor=3).applied
    assert inject(client_id="w-0", kind="drop").applied
    client = gw.clients["w-0"]
    assert client.slowdown == 3 and client.drop_replies
    # ending one fault leaves the others in force
    assert inject(client_id="w-0", kind="undrop").applied
    assert client.slowdown == 3 and not client.drop_replies
    assert inject(client_id="w-0", kind="clear").applied
    assert client.slowdown == 1


def test_an_unanswered_rpc_gets_a_deadline_error_and_a_late_reply_is_dropped() -> None:
    import dataclasses

    import grpc

    from labkit.live.gateway import LiveConfig
    from labkit.live.pb import agent_worker_pb2 as pb
    from labkit.live.pb import agent_worker_pb2_grpc as pb_grpc

    async def scenario() -> None:
        config = LiveConfig()
        config.gateway = dataclasses.replace(config.gateway, timeout_s=0.3)
        gw = LiveGateway(config)
        running = await start(gw, "127.0.0.1", 0)

        async def open_stream(stub: Any, name: str) -> tuple[Any, asyncio.Queue]:
            out: asyncio.Queue = asyncio.Queue()

            async def outgoing() -> Any:
                while (m := await out.get()) is not None:
                    yield m

            stream = stub.OpenChannel(outgoing(), metadata=[("client-id", name)])
            await stream.wait_for_connection()
            return stream, out

        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = pb_grpc.AgentRpcStub(channel)
                silent, silent_out = await open_stream(stub, "silent")
                await stub.RegisterAgent(
                    pb.RegisterAgentTypeRequest(type="echo"), metadata=[("client-id", "silent")]
                )
                caller, caller_out = await open_stream(stub, "caller")
                for i in range(3):
                    request = pb.RpcRequest(
                        request_id=str(i), target=pb.AgentId(type="echo", key=f"k{i}")
                    )
                    caller_out.put_nowait(pb.Message(request=request))
                got = [await asyncio.wait_for(caller.read(), 5) for _ in range(3)]
                assert sorted(m.response.request_id for m in got) == ["0", "1", "2"]
                assert all("deadline" in m.response.error for m in got)
                assert gw.errors_by_reason["deadline"] == 3 and not gw.pending
                # the worker answers too late: dropped, counted, never sent to the caller
                forwarded = await asyncio.wait_for(silent.read(), 5)
                late = pb.RpcResponse(request_id=forwarded.request.request_id)
                silent_out.put_nowait(pb.Message(response=late))
                for _ in range(50):
                    if gw.counters["late_replies"]:
                        break
                    await asyncio.sleep(0.02)
                assert gw.counters["late_replies"] == 1
                for out in (silent_out, caller_out):
                    out.put_nowait(None)
                silent.cancel()
                caller.cancel()
        finally:
            await running.stop(grace=0.1)

    asyncio.run(scenario())


def test_live_publishes_are_timed_by_delivery_confirmations(tmp_path: Path) -> None:
    path = small(
        tmp_path,
        workers={
            "count": 3,
            "agent_types": ["chat", "tools"],
            "concurrency": 2,
            "service_time": {"dist": "exponential", "mean_ms": 5},
        },
        workload={
            "arrival": {"process": "poisson", "rate_rps": 120},
            "keys": {"count": 50},
            "publish_fraction": 0.3,
        },
        balancer={"strategy": "consistent_hash"},
    )
    sc = load_scenario(path)
    live, sim = run_live(sc), simulate(sc)
    pubs = live.records[live.records["kind"] == "publish"]
    sim_pubs = sim.records[sim.records["kind"] == "publish"]
    # the same draws decide which arrivals are publishes
    assert len(pubs) == len(sim_pubs) > 0
    # both types subscribe to "events" by default: two deliveries each, all confirmed
    assert (pubs["fanout"] == 2).all()
    assert (pubs["status"] == "completed").all()
    # a publish ends with its last delivery: slower than a single RPC at the median
    rpc = live.records[live.records["kind"] == "rpc"]
    assert pubs["latency_ms"].median() > rpc["latency_ms"].median()


def test_simulator_only_settings_are_refused_before_anything_starts(tmp_path: Path) -> None:
    from labkit.errors import LabkitError

    path = small(tmp_path, gateway={"timeout_ms": 2000, "hedging": {"after_ms": 10}})
    sup = Supervisor()
    with pytest.raises(LabkitError, match="hedging"):
        run_live(load_scenario(path), supervisor=sup)
    assert sup.pids == []


def test_a_full_worker_queue_turns_requests_away(tmp_path: Path) -> None:
    path = small(
        tmp_path,
        workers={
            "count": 1,
            "concurrency": 1,
            "queue_limit": 1,
            "service_time": {"dist": "constant", "value_ms": 50},
        },
        workload={"arrival": {"process": "poisson", "rate_rps": 60}, "keys": {"count": 10}},
    )
    res = run_live(load_scenario(path))
    assert res.summary["details"].get("queue_full", 0) > 0
    assert res.summary["requests"]["rejected"] == res.summary["details"]["queue_full"]


def test_sigterm_to_labkit_live_tears_every_process_down(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    path = small(tmp_path, duration_s=30)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "labkit", "live", str(path), "--out", str(out), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = str(out)  # the resolved scenario the children read lives under --out

    def children() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmd and "live" not in cmd.split()[3:4] and alive(int(entry.name)):
                found.append(int(entry.name))
        return [p for p in found if p != proc.pid]

    try:
        deadline = time.monotonic() + 30
        while len(children()) < 4 and time.monotonic() < deadline:  # gateway + 3 workers
            time.sleep(0.2)
        started = children()
        assert len(started) >= 4
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(p) for p in started)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_a_worker_stops_promptly_even_if_the_gateway_never_answers() -> None:
    async def scenario() -> None:
        # accepts TCP connections and never speaks: HTTP/2 setup never completes
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        worker = LabkitWorker(
            WorkerOptions(gateway=f"127.0.0.1:{port}", agent_types=("echo",), name="w-bh")
        )
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.5)
        worker.stop()
        await asyncio.wait_for(task, 3)
        server.close()

    asyncio.run(scenario())
