"""Live scale: labkit's gateway with 200 concurrent callers and 50 labkit worker processes.

Starts, on 127.0.0.1 with free ports, a ``labkit gateway`` and ``--workers`` ``labkit worker``
processes (through :class:`labkit.live.session.LiveSession`, which keeps them up between phases
and kills every process group on the way out), then ``--caller-procs`` caller processes of this
script that together hold ``--callers`` AutoGen-protocol clients: each client has its own
``client-id``, its own gRPC channel (its own TCP connection) and its own ``OpenChannel`` stream,
as separate AutoGen processes would. Every RPC targets the agent type the workers host, with a
key drawn uniformly from ``--keys`` keys, so the gateway's consistent hash spreads the RPCs over
all the workers. Each repeat runs two phases against the same fleet:

- **saturation** (closed loop): every client keeps one RPC in flight; the RPCs completed per
  second in the measured window are the saturation throughput X_sat, and every error response,
  broken stream or unanswered RPC is counted (the claim is "without errors");
- **half saturation** (open loop): the clients send Poisson arrivals (each at ``rate/callers``,
  so the sum is a Poisson stream) at ``0.5 × X_sat`` of that repeat; per RPC the client latency
  (the caller's ``write`` to its reader getting the reply) and the worker's own time from the
  reply metadata (``labkit-worker-ms``: the worker's arrival to its reply, queue + service) give
  the **added latency** = client latency − worker time: the caller's and the worker's gRPC
  stacks, four loopback hops and the gateway — everything but the worker's handling.

Every RPC is traced (``labkit.live.trace``): the gateway and the workers stamp it on one clock,
so the added latency splits into the four hops and the gateway's own handling, and the report
says which part is large. Before the fleet starts, a bare ``grpc.aio`` echo process gives the
floor: the round trip of two hops with nothing else in the way. ``--worker-procs K`` hosts the
same workers (each still its own client id, channel and stream, the same ``LabkitWorker``) in K
processes instead of one each, to show what 50 Python processes on 2 cores cost.

The median over ``--repeats`` of each figure is reported, errors are summed. CPU seconds per
process class (gateway, workers summed, callers summed) are read from ``/proc`` over each
measured window, and the whole machine's busy time from ``/proc/stat`` (``other``: what other
jobs on a shared machine took meanwhile).

    python benchmarks/bench_live_scale.py [--repeats R] [--seconds S] [--json [PATH]]
    python benchmarks/bench_live_scale.py --callers 4 --workers 2 --caller-procs 2 --seconds 1
    python benchmarks/bench_live_scale.py --worker-procs 2 --fractions 0.1,0.5

A script, not a test: nothing here asserts on wall-clock times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

from benchlib import emit, fmt, median, run_child, write_json

from labkit.live.trace import SEGMENTS, TRACE_KEY, segments_ms

ROOT = Path(__file__).resolve().parents[1]
AGENT_TYPE = "agent"
PAYLOAD = b'{"data": "' + b"x" * 52 + b'"}'  # 64 bytes of JSON
START_TIMEOUT_S = 180.0  # 50 Python workers starting on 2 shared cores take a while
READY_TIMEOUT_S = 60.0  # every caller connected and its first RPC answered
FIRST_RPC_TIMEOUT_S = 20.0
DRAIN_TIMEOUT_S = 10.0  # RPCs still unanswered this long after a phase: "stuck" (errors)
TARGET_P95_MS = 2.0


# -- the caller processes (--role caller) -------------------------------------------------------
class _Phase:
    """What one phase records in one caller process: completions, errors, samples."""

    def __init__(self, window_start: float, window_end: float, by_send: bool) -> None:
        self.start = window_start
        self.end = window_end
        self.by_send = by_send  # open loop: the RPCs *sent* in the window; closed: completed
        self.completed = 0  # replies received in the window (throughput)
        self.errors = 0  # error responses during the whole phase, warm-up included
        self.error_texts: list[str] = []
        self.latency_ms: list[float] = []
        self.worker_ms: list[float] = []
        self.service_ms: list[float] = []
        self.lag_ms: list[float] = []  # open loop: how late each send was against its schedule
        #: per RPC, the ``labkit.live.trace.SEGMENTS`` (ms): where its latency went
        self.segments: list[tuple[float, ...]] = []
        self.sent = 0


class _Client:
    """One AutoGen-protocol client: its own channel, client id and OpenChannel stream."""

    def __init__(self, pb: Any, pb_grpc: Any, address: str, client_id: str, keys: int) -> None:
        import grpc

        self.pb = pb
        self.client_id = client_id
        # a local subchannel pool: a TCP connection of its own, as a separate process would have
        self.channel = grpc.aio.insecure_channel(
            address, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self.call = pb_grpc.AgentRpcStub(self.channel).OpenChannel(
            metadata=[("client-id", client_id)]
        )
        self.keys = keys
        self.rng = random.Random(client_id)
        self.next_id = 0
        self.pending: dict[str, tuple[float, asyncio.Future[None] | None, _Phase | None]] = {}
        self.phase: _Phase | None = None
        self.late = 0
        self.broken: str | None = None
        self.reader: asyncio.Task[None] | None = None

    async def send(self, future: asyncio.Future[None] | None = None) -> None:
        pb = self.pb
        self.next_id += 1
        rid = str(self.next_id)
        request = pb.RpcRequest(
            request_id=rid,
            target=pb.AgentId(type=AGENT_TYPE, key=f"k{self.rng.randrange(self.keys)}"),
            payload=pb.Payload(
                data_type="bench.Blob", data_content_type="application/json", data=PAYLOAD
            ),
        )
        request.metadata[TRACE_KEY] = "1"
        message = pb.Message(request=request)
        self.pending[rid] = (time.monotonic(), future, self.phase)
        await self.call.write(message)

    async def read(self) -> None:
        import grpc

        from labkit.live.worker import SERVICE_MS_KEY, WORKER_MS_KEY

        clock = time.monotonic
        try:
            while True:
                message = await self.call.read()
                if message is grpc.aio.EOF:
                    self.broken = "stream ended by the gateway"
                    break
                now = clock()
                if message.WhichOneof("message") != "response":
                    continue
                response = message.response
                entry = self.pending.pop(response.request_id, None)
                if entry is None:
                    self.late += 1
                    continue
                sent, future, phase = entry
                if phase is not None:
                    in_window = phase.start <= now < phase.end
                    if response.error:
                        phase.errors += 1
                        if len(phase.error_texts) < 3:
                            phase.error_texts.append(response.error[:200])
                    elif in_window:
                        phase.completed += 1
                    counted = phase.start <= sent < phase.end if phase.by_send else in_window
                    if counted and not response.error:
                        md = response.metadata
                        phase.latency_ms.append((now - sent) * 1000)
                        phase.worker_ms.append(float(md.get(WORKER_MS_KEY, "nan")))
                        phase.service_ms.append(float(md.get(SERVICE_MS_KEY, "nan")))
                        phase.segments.append(segments_ms(sent, md, now))
                if future is not None and not future.done():
                    future.set_result(None)
        except grpc.aio.AioRpcError as exc:
            self.broken = f"stream failed: {exc.code().name} {exc.details()}"
        # whoever waits for a reply on a broken stream stops waiting
        for _, future, _ in self.pending.values():
            if future is not None and not future.done():
                future.set_exception(ConnectionError(self.broken))


async def _connect(client: _Client) -> None:
    await client.call.wait_for_connection()
    client.reader = asyncio.create_task(client.read())
    future = asyncio.get_running_loop().create_future()
    await client.send(future)
    await asyncio.wait_for(future, FIRST_RPC_TIMEOUT_S)  # routing works before we measure


async def _closed(client: _Client, phase: _Phase, until: float) -> None:
    loop = asyncio.get_running_loop()
    while time.monotonic() < until and client.broken is None:
        future = loop.create_future()
        phase.sent += 1
        try:
            await client.send(future)
            await future
        except Exception as exc:  # a broken stream: counted, this client stops
            phase.errors += 1
            if len(phase.error_texts) < 3:
                phase.error_texts.append(f"{type(exc).__name__}: {exc}"[:200])
            return


async def _open(client: _Client, phase: _Phase, rate: float, start: float, until: float) -> None:
    """Poisson arrivals at ``rate`` per second from ``start`` until ``until`` (seconds on
    CLOCK_MONOTONIC, the clock of the gateway's and workers' stamps)."""
    rng = client.rng
    t = start + rng.expovariate(rate)
    while t < until and client.broken is None:
        wait = t - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        lag = time.monotonic() - t
        if phase.start <= t < phase.end:
            phase.lag_ms.append(max(0.0, lag) * 1000)
        phase.sent += 1
        try:
            await client.send()
        except Exception as exc:
            phase.errors += 1
            if len(phase.error_texts) < 3:
                phase.error_texts.append(f"{type(exc).__name__}: {exc}"[:200])
            return
        t += rng.expovariate(rate)


async def _run_phase(clients: list[_Client], command: dict[str, Any]) -> dict[str, Any]:
    warmup, seconds = float(command["warmup"]), float(command["seconds"])
    begin = time.monotonic()
    phase = _Phase(begin + warmup, begin + warmup + seconds, by_send=command["mode"] == "open")
    for client in clients:
        client.phase = phase
    until = phase.end
    if command["mode"] == "closed":
        tasks = [asyncio.create_task(_closed(c, phase, until)) for c in clients]
    else:
        per_client = float(command["rate"]) / int(command["total_callers"])
        tasks = [asyncio.create_task(_open(c, phase, per_client, begin, until)) for c in clients]
    await asyncio.gather(*tasks)
    # wait for the replies still owed (bounded); what never comes back is "stuck"
    drain_end = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < drain_end and any(
        e[2] is phase for c in clients for e in c.pending.values()
    ):
        await asyncio.sleep(0.01)
    stuck = 0
    for client in clients:
        client.phase = None
        for rid, entry in list(client.pending.items()):
            if entry[2] is phase:
                stuck += 1
                del client.pending[rid]
    broken = [c.broken for c in clients if c.broken is not None]
    return {
        "event": "result",
        "mode": command["mode"],
        "window_s": phase.end - phase.start,
        "sent": phase.sent,
        "completed": phase.completed,
        "errors": phase.errors,
        "error_texts": phase.error_texts,
        "stuck": stuck,
        "broken": len(broken),
        "broken_texts": broken[:3],
        "late": sum(c.late for c in clients),
        "latency_ms": [round(v, 4) for v in phase.latency_ms],
        "worker_ms": [round(v, 4) for v in phase.worker_ms],
        "service_ms": [round(v, 4) for v in phase.service_ms],
        "segments_ms": [[round(v, 4) for v in seg] for seg in phase.segments],
        "lag_ms_p99": _pct(sorted(phase.lag_ms), 0.99),
        "lag_ms_max": max(phase.lag_ms, default=None),
    }


async def _caller_main(args: argparse.Namespace) -> None:
    from labkit.live.pb import agent_worker_pb2 as pb
    from labkit.live.pb import agent_worker_pb2_grpc as pb_grpc

    tag = f"scale-{args.index}-{uuid.uuid4().hex[:8]}"
    clients = [
        _Client(pb, pb_grpc, args.gateway, f"{tag}-{i}", args.keys) for i in range(args.callers)
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(_connect(c) for c in clients)), READY_TIMEOUT_S)
        emit(event="ready", callers=len(clients))
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            command = json.loads(line) if line.strip() else {"mode": "quit"}
            if command.get("mode") == "quit":
                break
            emit(**await _run_phase(clients, command))
    finally:
        for client in clients:
            if client.reader is not None:
                client.reader.cancel()
            client.call.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(
                asyncio.gather(*(c.channel.close() for c in clients), return_exceptions=True), 3.0
            )


def run_caller(args: argparse.Namespace) -> int:
    run_child(_caller_main(args))


# -- the worker host processes (--role workers, with --worker-procs) -----------------------------
async def _workers_main(args: argparse.Namespace) -> None:
    """Several labkit workers in one process: each its own ``LabkitWorker`` (client id, channel,
    OpenChannel stream, load reports), as the ``labkit worker`` process runs one."""
    from labkit.live.worker import LabkitWorker, WorkerOptions

    service_ms = float(args.service_ms)
    workers = [
        LabkitWorker(
            WorkerOptions(
                gateway=args.gateway,
                agent_types=(AGENT_TYPE,),
                name=name,
                concurrency=args.worker_concurrency,
                service_ms=lambda: service_ms,
                seed=i,
            )
        )
        for i, name in enumerate(args.names.split(","))
    ]
    await asyncio.gather(*(w.run() for w in workers))


def run_workers(args: argparse.Namespace) -> int:
    run_child(_workers_main(args))


# -- the floor: a bare grpc.aio echo (--role echo) ------------------------------------------------
ECHO_METHOD = "/labkit.bench.Echo/Echo"
FLOOR_ROUND_TRIPS = 3000
FLOOR_WARMUP = 200


async def _echo_main(args: argparse.Namespace) -> None:
    """A bidirectional stream that sends every message straight back: the least a gRPC hop pair
    can cost in this stack, with no gateway, no routing and no worker logic."""
    import grpc

    async def echo(requests: Any, context: Any) -> Any:
        async for message in requests:
            yield message

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "labkit.bench.Echo", {"Echo": grpc.stream_stream_rpc_method_handler(echo)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    emit(event="ready", port=port)
    await server.wait_for_termination()


def run_echo(args: argparse.Namespace) -> int:
    run_child(_echo_main(args))


async def _floor_round_trips(port: int) -> list[float]:
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(ECHO_METHOD)()
        message = PAYLOAD + b"x" * 64  # about the size of a traced RPC frame
        rtts = []
        for _ in range(FLOOR_WARMUP + FLOOR_ROUND_TRIPS):
            t = time.perf_counter()
            await call.write(message)
            await call.read()
            rtts.append((time.perf_counter() - t) * 1000)
        call.cancel()
    return sorted(rtts[FLOOR_WARMUP:])


def measure_floor(logdir: Path) -> dict[str, float | None]:
    """Sequential round trips (two hops) to a bare echo process on an idle fleet-less machine:
    the four hops of a gateway RPC cannot cost less than two of these."""
    echo = CallerProcs(logdir)
    try:
        echo.spawn("echo", ["--role", "echo"])
        port = int(echo.wait_all("ready", READY_TIMEOUT_S)[0]["port"])
        rtts = asyncio.run(_floor_round_trips(port))
    finally:
        echo.close()
    return {f"p{q}": _pct(rtts, q / 100) for q in (50, 95, 99)}


# -- the supervisor side --------------------------------------------------------------------------
def _pct(values: list[float], q: float) -> float | None:
    """The q-quantile of sorted ``values`` (nearest rank), None if empty."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far (Linux /proc), None if unknown or gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _host_busy_s() -> float | None:
    """CPU seconds the whole machine spent busy so far (all cores, /proc/stat)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user
    return (total - idle) / os.sysconf("SC_CLK_TCK")


def _load() -> float:
    return round(os.getloadavg()[0], 2)


class CallerProcs:
    """The caller processes, owned by a :class:`labkit.live.run.Supervisor` (own process group
    each, SIGTERM then SIGKILL on close, killed by the kernel if this process dies); their
    stdout lines are collected on threads, commands go to their stdin."""

    def __init__(self, logdir: Path) -> None:
        from labkit.live.run import Supervisor

        self.sup = Supervisor()
        self.logdir = logdir
        self.lines: dict[str, queue.Queue[str | None]] = {}
        self.logs: dict[str, Path] = {}

    def spawn(self, name: str, argv: list[str]) -> None:
        from labkit.live.run import _die_with_parent, _Proc

        log_path = self.logdir / f"{name}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), *argv],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # its own process group, as the Supervisor's others
                preexec_fn=_die_with_parent,
            )
        self.sup.procs.append(_Proc(name, popen))
        self.sup.pids.append(popen.pid)
        self.sup.names.append(name)
        self.logs[name] = log_path
        lines: queue.Queue[str | None] = queue.Queue()
        self.lines[name] = lines

        def read() -> None:
            with contextlib.suppress(ValueError, OSError):  # closed under us on teardown
                assert popen.stdout is not None
                for raw in popen.stdout:
                    lines.put(raw.decode("utf-8", errors="replace"))
            lines.put(None)

        threading.Thread(target=read, name=f"stdout-{name}", daemon=True).start()

    @property
    def pids(self) -> list[int]:
        return [p.popen.pid for p in self.sup.procs]

    def send(self, command: dict[str, Any]) -> None:
        data = (json.dumps(command) + "\n").encode()
        for proc in self.sup.procs:
            assert proc.popen.stdin is not None
            proc.popen.stdin.write(data)
            proc.popen.stdin.flush()

    def wait_all(self, event: str, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        return [self._wait(p.name, event, deadline) for p in self.sup.procs]

    def _wait(self, name: str, event: str, deadline: float) -> dict[str, Any]:
        lines = self.lines[name]
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(0.0, remaining)) if remaining > 0 else None
            except queue.Empty:
                line = None
            if line is None:
                raise RuntimeError(
                    f"{name}: no {event!r} line (exited or timed out)\n{self.tail(name)}"
                )
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == "fatal":
                    raise RuntimeError(f"{name}: {record.get('error')}\n{self.tail(name)}")
                if record.get("event") == event:
                    return record

    def tail(self, name: str) -> str:
        try:
            return self.logs[name].read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def close(self) -> None:
        for proc in self.sup.procs:
            with contextlib.suppress(OSError, ValueError):
                assert proc.popen.stdin is not None
                proc.popen.stdin.close()
        self.sup.close()

    def left(self) -> list[int]:
        return [pid for pid in self.sup.pids if _running(pid)]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def write_scenario(path: Path, args: argparse.Namespace) -> Path:
    import yaml

    data = {
        "name": "live_scale",
        "description": "bench_live_scale.py: one gateway, many labkit workers, constant service",
        "seed": 1,
        "duration_s": 1,  # unused: the callers here are the load, not the scenario's generator
        "workers": {
            "count": args.workers,
            "agent_types": [AGENT_TYPE],
            "concurrency": args.worker_concurrency,
            "service_time": {"dist": "constant", "value_ms": args.service_ms},
        },
        "workload": {"arrival": {"process": "poisson", "rate_rps": 1}, "keys": {"count": 1}},
        "gateway": {"timeout_ms": 10_000},
        "balancer": {"strategy": "consistent_hash"},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def wait_for_quiet(limit: float, max_wait_s: float) -> list[float]:
    """Wait (up to ``max_wait_s``) until the 1-minute load average is at most ``limit``;
    returns the load averages seen, one a minute."""
    seen = [_load()]
    end = time.monotonic() + max_wait_s
    while seen[-1] > limit and time.monotonic() < end:
        print(
            f"  load average {seen[-1]:.2f} > {limit:g}: waiting a minute …",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(min(60.0, max(0.0, end - time.monotonic())))
        seen.append(_load())
    return seen


class SessionFleet:
    """One process per worker, as ``labkit live`` starts them (``LiveSession``)."""

    def __init__(self, scenario: Any) -> None:
        from labkit.live.session import LiveSession

        self.session = LiveSession(scenario, startup_timeout_s=START_TIMEOUT_S)
        self.address = ""
        self.gateway_pid = 0
        self.worker_pids: list[int] = []
        self.names: list[str] = []

    def start(self) -> None:
        self.session.start()
        procs = self.session.processes()
        self.address = self.session.address
        self.gateway_pid = int(procs.loc[procs["name"] == "gateway", "pid"].iloc[0])
        self.worker_pids = [int(p) for p in procs.loc[procs["name"] != "gateway", "pid"]]
        self.names = list(self.session.workers)

    @property
    def pids(self) -> list[int]:
        return self.session.pids

    def close(self) -> None:
        self.session.close()


class PackedFleet:
    """The same gateway and the same workers (``LabkitWorker``, each its own client id, channel
    and stream), but hosted ``--worker-procs`` to a process: the gateway sees the same 50
    connections, the machine runs a few processes instead of 50."""

    def __init__(self, scenario: Any, args: argparse.Namespace, logdir: Path) -> None:
        from labkit.live.run import Supervisor

        self.scenario = scenario
        self.args = args
        self.sup = Supervisor()
        self.hosts = CallerProcs(logdir)
        self.address = ""
        self.gateway_pid = 0
        self.worker_pids: list[int] = []
        self.names: list[str] = []

    def start(self) -> None:
        from labkit.core.faults import worker_name
        from labkit.live.run import start_gateway, wait_registered

        args = self.args
        gateway, self.address = start_gateway(self.scenario, self.sup, START_TIMEOUT_S)
        self.gateway_pid = gateway.popen.pid
        self.names = [worker_name(i) for i in range(args.workers)]
        for i in range(args.worker_procs):
            names = self.names[i :: args.worker_procs]
            self.hosts.spawn(
                f"workers-{i}",
                [
                    *("--role", "workers", "--gateway", self.address, "--names", ",".join(names)),
                    *("--service-ms", repr(args.service_ms)),
                    *("--worker-concurrency", str(args.worker_concurrency)),
                ],
            )
        self.worker_pids = self.hosts.pids
        asyncio.run(wait_registered(self.address, args.workers, START_TIMEOUT_S))

    @property
    def pids(self) -> list[int]:
        return [self.gateway_pid, *self.worker_pids] if self.gateway_pid else []

    def close(self) -> None:
        try:
            self.hosts.close()
        finally:
            self.sup.close()


class Bench:
    def __init__(self, args: argparse.Namespace, fleet: Any, callers: CallerProcs) -> None:
        self.args = args
        self.fleet = fleet
        self.callers = callers
        self.gateway_pid = fleet.gateway_pid
        self.worker_pids = fleet.worker_pids

    def _cpu(self) -> dict[str, float | None]:
        def total(pids: list[int]) -> float | None:
            values = [_cpu_s(p) for p in pids]
            return sum(v for v in values if v is not None) if values else None

        return {
            "gateway": _cpu_s(self.gateway_pid),
            "workers": total(self.worker_pids),
            "callers": total(self.callers.pids),
            "host": _host_busy_s(),
            "wall": time.monotonic(),
        }

    def _forwarded(self) -> dict[str, int]:
        from labkit.live.run import gateway_stats

        stats = asyncio.run(gateway_stats(self.fleet.address))
        return {w.client_id: int(w.forwarded) for w in stats.workers}

    def phase(self, mode: str, rate: float | None = None) -> dict[str, Any]:
        args = self.args
        command: dict[str, Any] = {
            "mode": mode,
            "warmup": args.warmup,
            "seconds": args.seconds,
            "total_callers": args.callers,
        }
        if rate is not None:
            command["rate"] = rate
        before = self._forwarded()
        self.callers.send(command)
        time.sleep(args.warmup)
        start = self._cpu()
        time.sleep(args.seconds)
        end = self._cpu()
        timeout = args.warmup + args.seconds + DRAIN_TIMEOUT_S + 30.0
        results = self.callers.wait_all("result", timeout)
        after = self._forwarded()
        per_worker = [after.get(n, 0) - before.get(n, 0) for n in self.fleet.names]

        latency = [v for r in results for v in r["latency_ms"]]
        worker = [v for r in results for v in r["worker_ms"]]
        added = sorted(a - w for a, w in zip(latency, worker, strict=True) if not math.isnan(w))
        latency.sort()
        done = sum(r["completed"] / r["window_s"] for r in results if r["window_s"] > 0)
        wall = (end["wall"] - start["wall"]) if start["wall"] and end["wall"] else 0.0
        completed = sum(r["completed"] for r in results)
        cpu_pct: dict[str, float | None] = {}
        cpu_us: dict[str, float | None] = {}
        ours = 0.0
        for role in ("gateway", "workers", "callers", "host"):
            a, b = start[role], end[role]
            spent = b - a if a is not None and b is not None else None
            if role != "host" and spent is not None:
                ours += spent
            if role == "host" and spent is not None:
                role, spent = "other", max(0.0, spent - ours)
            cpu_pct[role] = 100 * spent / wall if spent is not None and wall > 0 else None
            cpu_us[role] = 1e6 * spent / completed if spent is not None and completed else None
        errors = sum(r["errors"] + r["stuck"] + r["broken"] for r in results)
        error_texts = [t for r in results for t in r["error_texts"] + r["broken_texts"]][:5]
        segments = [seg for r in results for seg in r["segments_ms"]]
        return {
            "mode": mode,
            "rate_rps": rate,
            "throughput_rps": done,
            "sent": sum(r["sent"] for r in results),
            "completed_in_window": completed,
            "errors": errors,
            "error_texts": error_texts,
            "stuck": sum(r["stuck"] for r in results),
            "broken_streams": sum(r["broken"] for r in results),
            "late_replies": sum(r["late"] for r in results),
            "samples": len(latency),
            "latency_ms": {f"p{q}": _pct(latency, q / 100) for q in (50, 95, 99)},
            "added_ms": {f"p{q}": _pct(added, q / 100) for q in (50, 95, 99)},
            "added_ms_mean": statistics.fmean(added) if added else None,
            "worker_ms_p50": _pct(sorted(worker), 0.5),
            "segments_ms": segment_percentiles(segments),
            "schedule_lag_ms_p99": median([r["lag_ms_p99"] for r in results]),
            "schedule_lag_ms_max": max(
                (r["lag_ms_max"] for r in results if r["lag_ms_max"] is not None), default=None
            ),
            "cpu_pct": cpu_pct,
            "cpu_us_per_rpc": cpu_us,
            "per_worker_rpcs": {
                "min": min(per_worker, default=0),
                "median": median(per_worker),
                "max": max(per_worker, default=0),
                "idle_workers": sum(1 for n in per_worker if n == 0),
            },
        }


#: what the segment table shows besides ``labkit.live.trace.SEGMENTS``: the gateway's own
#: handling both ways (its share of the added latency), and the four hops together
GATEWAY_OWN = "gateway, both ways"
HOPS = "four hops"


def segment_percentiles(segments: list[list[float]]) -> dict[str, dict[str, float | None]]:
    """p50 / p95 / p99 of each traced segment (``labkit.live.trace``) over one phase's RPCs,
    plus the gateway's own handling and the four hops, summed per RPC."""
    index = {name: i for i, name in enumerate(SEGMENTS)}
    parts = {name: (name,) for name in SEGMENTS}
    parts[GATEWAY_OWN] = ("gateway", "gateway_reply")
    parts[HOPS] = ("to_gateway", "to_worker", "from_worker", "to_caller")
    out: dict[str, dict[str, float | None]] = {}
    for name, members in parts.items():
        values = sorted(
            v
            for seg in segments
            if not math.isnan(v := sum(seg[index[m]] for m in members))  # a worker's unstamped
        )
        out[name] = {f"p{q}": _pct(values, q / 100) for q in (50, 95, 99)}
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every figure over the repeats (errors summed)."""
    row: dict[str, Any] = {
        "rate_rps": median([r["rate_rps"] for r in runs]),
        "throughput_rps": median([r["throughput_rps"] for r in runs]),
        "errors": sum(r["errors"] for r in runs),
        "latency_ms": {},
        "added_ms": {},
        "cpu_pct": {},
        "cpu_us_per_rpc": {},
        "schedule_lag_ms_p99": median([r["schedule_lag_ms_p99"] for r in runs]),
        "worker_ms_p50": median([r["worker_ms_p50"] for r in runs]),
    }
    for key in ("latency_ms", "added_ms"):
        for q in ("p50", "p95", "p99"):
            row[key][q] = median([r[key][q] for r in runs])
    row["segments_ms"] = {
        name: {q: median([r["segments_ms"][name][q] for r in runs]) for q in ("p50", "p95", "p99")}
        for name in runs[0]["segments_ms"]
    }
    for key in ("cpu_pct", "cpu_us_per_rpc"):
        for role in ("gateway", "workers", "callers", "other"):
            row[key][role] = median([r[key].get(role) for r in runs])
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=int, default=200, help="AutoGen-protocol clients")
    parser.add_argument("--caller-procs", type=int, default=4, help="processes they share")
    parser.add_argument("--workers", type=int, default=50, help="labkit worker processes")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; medians reported")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before it")
    parser.add_argument(
        "--fractions",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.5],
        help="open-loop rates as fractions of that repeat's saturation (default 0.5)",
    )
    parser.add_argument(
        "--service-ms", type=float, default=0.0, help="workers' constant service time"
    )
    parser.add_argument(
        "--worker-concurrency", type=int, default=64, help="requests a worker serves at once"
    )
    parser.add_argument("--keys", type=int, default=10_000, help="agent keys drawn uniformly")
    parser.add_argument(
        "--max-load",
        type=float,
        default=None,
        help="wait (up to --max-wait s) until the 1-minute load average is at most this",
    )
    parser.add_argument("--max-wait", type=float, default=240.0, help="seconds; see --max-load")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="also print every figure as one JSON line (or write it to PATH)",
    )
    parser.add_argument(
        "--worker-procs",
        type=int,
        default=0,
        help="host the workers in this many processes (default 0: one process per worker, "
        "as `labkit live` runs them)",
    )
    parser.add_argument("--role", choices=("caller", "workers", "echo"), help=argparse.SUPPRESS)
    parser.add_argument("--names", help=argparse.SUPPRESS)
    parser.add_argument("--gateway", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "caller":
        return run_caller(args)
    if args.role == "workers":
        return run_workers(args)
    if args.role == "echo":
        return run_echo(args)
    if args.callers < 1 or args.workers < 1 or args.caller_procs < 1 or args.repeats < 1:
        parser.error("--callers, --workers, --caller-procs and --repeats must be >= 1")
    if args.worker_procs < 0:
        parser.error("--worker-procs must be >= 0")
    args.caller_procs = min(args.caller_procs, args.callers)
    args.worker_procs = min(args.worker_procs, args.workers)

    from labkit.scenario import load_scenario

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so every finally runs
    loads_waited = wait_for_quiet(args.max_load, args.max_wait) if args.max_load else []
    load_before = _load()
    cores = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="bench_live_scale."))
    scenario = load_scenario(write_scenario(tmp / "live_scale.yaml", args))
    fleet = PackedFleet(scenario, args, tmp) if args.worker_procs else SessionFleet(scenario)
    callers = CallerProcs(tmp)
    runs: dict[str, list[dict[str, Any]]] = {"closed": []}
    for f in args.fractions:
        runs[f"open {f:g}"] = []
    fleet_pids: list[int] = []
    floor: dict[str, float | None] = {}
    left: list[int] = []
    startup_s = 0.0
    failed = False
    try:
        print(
            f"  starting the gateway and {args.workers} workers (load {load_before:.2f}) …",
            file=sys.stderr,
            flush=True,
        )
        floor = measure_floor(tmp)
        t0 = time.monotonic()
        fleet.start()
        fleet_pids = fleet.pids
        startup_s = time.monotonic() - t0
        shares = [args.callers // args.caller_procs] * args.caller_procs
        for i in range(args.callers % args.caller_procs):
            shares[i] += 1
        for i, n in enumerate(shares):
            callers.spawn(
                f"caller-{i}",
                [
                    *("--role", "caller", "--gateway", fleet.address, "--index", str(i)),
                    *("--callers", str(n), "--keys", str(args.keys)),
                ],
            )
        callers.wait_all("ready", READY_TIMEOUT_S + 30.0)
        print(f"  up in {startup_s:.1f} s; {args.callers} callers connected", file=sys.stderr)
        print(
            f"  pids: fleet {' '.join(map(str, fleet_pids))} callers "
            f"{' '.join(map(str, callers.pids))}",
            file=sys.stderr,
            flush=True,
        )
        bench = Bench(args, fleet, callers)
        for repeat in range(args.repeats):
            print(f"  repeat {repeat + 1}/{args.repeats}: saturation …", file=sys.stderr)
            sat = bench.phase("closed")
            runs["closed"].append(sat)
            for f in args.fractions:
                rate = f * sat["throughput_rps"]
                print(
                    f"  repeat {repeat + 1}/{args.repeats}: open loop at {rate:,.0f} req/s "
                    f"({f:g} × {sat['throughput_rps']:,.0f}) …",
                    file=sys.stderr,
                )
                runs[f"open {f:g}"].append(bench.phase("open", rate))
    except BaseException:
        failed = True
        print(f"caller logs kept in {tmp}", file=sys.stderr)
        raise
    finally:
        with contextlib.suppress(Exception):
            callers.send({"mode": "quit"})
        callers.close()
        fleet.close()
        left = callers.left() + [p for p in fleet_pids if _running(p)]
        if left:
            print(f"processes left behind: {left}", file=sys.stderr)
        if not failed:
            shutil.rmtree(tmp, ignore_errors=True)
    load_after = _load()

    env = {
        "cpu_count": cores,
        "python": platform.python_version(),
        "grpcio": metadata.version("grpcio"),
        "platform": platform.platform(),
    }
    rows = {name: summarise(r) for name, r in runs.items()}
    sat = rows["closed"]
    # the headline is the half-saturation row (else the first open-loop row asked for)
    headline_key = "open 0.5" if "open 0.5" in rows else next(k for k in rows if k != "closed")
    headline = rows[headline_key]
    at = f"{headline_key.split()[1]}×sat"
    errors = sum(row["errors"] for row in rows.values())
    p95 = headline["added_ms"]["p95"]
    met = p95 is not None and p95 < TARGET_P95_MS and errors == 0

    print(f"cpu_count={cores}  Python {env['python']}  grpcio {env['grpcio']}  ({env['platform']})")
    print(
        f"fleet: 1 labkit gateway + {args.workers} labkit workers in "
        f"{args.worker_procs or args.workers} processes (agent type '{AGENT_TYPE}', "
        f"constant {args.service_ms:g} ms service, concurrency {args.worker_concurrency} each, "
        f"consistent hashing over {args.keys:,} keys); {args.callers} callers = "
        f"{args.caller_procs} processes, each caller its own client id, channel and OpenChannel "
        f"stream; {args.warmup:g} s warm-up + {args.seconds:g} s measured per phase; "
        f"median of {args.repeats} repeats on one fleet (up in {startup_s:.0f} s)"
    )
    print(
        f"load average (1 min): before {load_before:.2f}, after {load_after:.2f}; cores {cores}"
        + (f"; waited for quiet: {loads_waited}" if len(loads_waited) > 1 else "")
    )
    print()
    header = (
        f"{'phase':<13} {'rate':>7} {'req/s':>7} {'errors':>6} | {'latency p50':>11} "
        f"{'p95':>6} {'p99':>6} | {'added p50':>9} {'p95':>6} {'p99':>6} | "
        f"{'CPU %: gw':>9} {'workers':>7} {'callers':>7} {'other':>5} | "
        f"{'CPU µs/RPC: gw':>14} {'workers':>7} {'callers':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        label = "saturation" if name == "closed" else f"{name.split()[1]} × sat"
        lat, add = row["latency_ms"], row["added_ms"]
        pct, us = row["cpu_pct"], row["cpu_us_per_rpc"]
        print(
            f"{label:<13} {fmt(row['rate_rps'], ',.0f'):>7} "
            f"{fmt(row['throughput_rps'], ',.0f'):>7} {row['errors']:>6} | "
            f"{fmt(lat['p50'], '.2f'):>11} {fmt(lat['p95'], '.2f'):>6} "
            f"{fmt(lat['p99'], '.2f'):>6} | {fmt(add['p50'], '.2f'):>9} "
            f"{fmt(add['p95'], '.2f'):>6} {fmt(add['p99'], '.2f'):>6} | "
            f"{fmt(pct['gateway'], '.0f'):>9} {fmt(pct['workers'], '.0f'):>7} "
            f"{fmt(pct['callers'], '.0f'):>7} {fmt(pct['other'], '.0f'):>5} | "
            f"{fmt(us['gateway'], '.0f'):>14} {fmt(us['workers'], '.0f'):>7} "
            f"{fmt(us['callers'], '.0f'):>7}"
        )
    print()
    summary_header = (
        f"{'callers':>7} {'workers':>7} {'saturation req/s':>16} {'errors':>6} "
        f"{at + ' req/s':>11} {'added p50':>9} {'p95':>5} {'p99 ms':>6} "
        f"{'p95 < 2 ms':>10} {'load before/after':>17} {'cores':>5}"
    )
    print(summary_header)
    add = headline["added_ms"]
    print(
        f"{args.callers:>7} {args.workers:>7} {fmt(sat['throughput_rps'], ',.0f'):>16} "
        f"{errors:>6} {fmt(headline['rate_rps'], ',.0f'):>11} {fmt(add['p50'], '.2f'):>9} "
        f"{fmt(add['p95'], '.2f'):>5} {fmt(add['p99'], '.2f'):>6} "
        f"{'yes' if met else 'no':>10} {f'{load_before:.2f} / {load_after:.2f}':>17} {cores:>5}"
    )
    print()
    sat_runs = ", ".join(fmt(r["throughput_rps"], ",.0f") for r in runs["closed"])
    print(f"saturation per repeat: {sat_runs} req/s")
    for name, per in runs.items():
        spread = [r["per_worker_rpcs"] for r in per]
        print(
            f"{name}: RPCs per worker over each phase (min / median / max): "
            + ", ".join(f"{s['min']} / {s['median']:g} / {s['max']}" for s in spread)
            + (f"; idle workers: {[s['idle_workers'] for s in spread]}" if name == "closed" else "")
        )
        texts = [t for r in per for t in r["error_texts"]]
        if texts:
            print(f"  {name} errors, first: {texts[:3]}")
    for name, row in rows.items():
        if name != "closed":
            print(
                f"{name}: callers' schedule lag p99 {fmt(row['schedule_lag_ms_p99'], '.2f')} ms; "
                f"worker time p50 {fmt(row['worker_ms_p50'], '.3f')} ms"
            )
    print()
    open_rows = [k for k in rows if k != "closed"]
    print(
        "where the latency goes (ms; per-RPC stamps on one clock, labkit.live.trace): "
        + " | ".join(f"{k.split()[1]}×sat p50 p95 p99" for k in open_rows)
    )
    for name in rows[headline_key]["segments_ms"]:
        cells = []
        for k in open_rows:
            seg = rows[k]["segments_ms"][name]
            cells.append(" ".join(f"{fmt(seg[q], '.3f'):>7}" for q in ("p50", "p95", "p99")))
        print(f"  {name:<20} " + " | ".join(cells))
    print(
        "floor: a bare grpc.aio echo round trip (two hops; measured before the fleet starts), "
        f"p50 / p95 / p99: {fmt(floor.get('p50'), '.3f')} / {fmt(floor.get('p95'), '.3f')} / "
        f"{fmt(floor.get('p99'), '.3f')} ms, so four hops cost at least about twice that"
    )
    own = headline["segments_ms"][GATEWAY_OWN]["p95"]
    print(
        f"the gateway's own handling (both ways) at {at}: p95 {fmt(own, '.3f')} ms; "
        "the rest of the added latency is the four hops: each side's gRPC stack, loopback and "
        "the wait for a CPU of the process on the far side"
    )
    print(
        f"target (p95 added latency at {at} < {TARGET_P95_MS:g} ms, no errors): "
        f"{'met' if met else 'not met'}"
    )
    if args.json:
        payload = {
            "environment": env,
            "callers": args.callers,
            "caller_procs": args.caller_procs,
            "workers": args.workers,
            "worker_concurrency": args.worker_concurrency,
            "service_ms": args.service_ms,
            "keys": args.keys,
            "warmup_s": args.warmup,
            "seconds": args.seconds,
            "repeats": args.repeats,
            "startup_s": startup_s,
            "load_before": load_before,
            "load_after": load_after,
            "loads_waited": loads_waited,
            "rows": rows,
            "runs": runs,
            "errors": errors,
            "saturation_rps": sat["throughput_rps"],
            "half_saturation_rps": headline["rate_rps"],
            "added_ms_at_half": headline["added_ms"],
            "segments_ms_at_half": headline["segments_ms"],
            "floor_round_trip_ms": floor,
            "worker_procs": args.worker_procs or args.workers,
            "target_p95_ms": TARGET_P95_MS,
            "target_met": met,
            "pids": {"fleet": fleet_pids, "callers": callers.sup.pids},
            "left_behind": left,
        }
        write_json(payload, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
