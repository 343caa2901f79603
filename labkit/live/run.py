"""``labkit live FILE``: the scenario against real processes on loopback.

Starts the gateway and ``workers.count`` labkit worker processes, waits until every worker has
registered, runs the scenario's open-loop workload through the load generator, applies its
faults to the real processes, and returns results in the simulator's schema (records, time
series, per-worker table, summary). Every process it starts is in its own process group and is
killed on the way out — normal end, error, or Ctrl-C — so nothing is left behind.

The phases are reusable on their own: ``start_fleet`` (gateway and workers up and registered),
``run_load`` (one load against a started fleet, results per run) and ``Supervisor.close``;
``labkit.live.session.LiveSession`` keeps a fleet up between them for notebooks.

Faults, live (each acts on the real processes or the gateway, never on the simulator's model):
- ``crash`` (and each crash of ``random_crashes``) SIGKILLs the workers (``connection: reset``,
  the default) or SIGSTOPs them (``connection: hang``); with ``restart_after_s`` a fresh process
  starts (or the frozen one is SIGCONTed);
- ``slow`` tells the worker (through the ack of its next load report, within 0.5 s) to serve
  1/factor as fast; AutoGen workers send no load reports and cannot be slowed this way;
- ``flaky`` makes the gateway turn ``error_rate`` of the worker's replies into errors;
- ``latency_spike`` makes the gateway delay every message to the workers by ``extra_ms``;
- ``partition`` makes the gateway drop their replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pandas as pd

from labkit.core.faults import FaultInstance, plan_faults, worker_name
from labkit.errors import LabkitError
from labkit.live.loadgen import LoadGenerator
from labkit.live.pb import labkit_pb2, labkit_pb2_grpc
from labkit.live.trace import ADDED_COLUMNS, SEND_LAG_COLUMN
from labkit.results import Results, build_results
from labkit.results.frames import events_frame, faults_frame, load_reports_frame
from labkit.scenario import Scenario
from labkit.sim.workload import workload_streams

#: how long processes get to start and register
STARTUP_TIMEOUT_S = 30.0
log = logging.getLogger("labkit.live")

# The supervisor forks (and at once execs) worker processes while its gRPC channels are busy,
# e.g. a crashed worker restarted mid-run. gRPC's fork handlers, meant for children that go on
# using gRPC, would only print a warning; an explicit setting is respected.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]


class Supervisor:
    """Owns every process of a live run; ``close`` kills them all (process groups included)."""

    def __init__(self) -> None:
        self.procs: list[_Proc] = []
        self.pids: list[int] = []  # every process ever started, for checks after the run
        self.names: list[str] = []  # and its name, in the same order

    def spawn(self, name: str, args: list[str]) -> _Proc:
        popen = subprocess.Popen(
            [sys.executable, "-m", "labkit", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: killable as a whole
            preexec_fn=_die_with_parent,
        )
        proc = _Proc(name, popen)
        self.procs.append(proc)
        self.pids.append(popen.pid)
        self.names.append(name)
        return proc

    def signal(self, proc: _Proc, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, sig)

    def close(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                self.signal(proc, signal.SIGCONT)
                self.signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for proc in self.procs:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.popen.wait(remaining)
            except subprocess.TimeoutExpired:
                self.signal(proc, signal.SIGKILL)
                proc.popen.wait(5.0)
            if proc.popen.stdout is not None:
                proc.popen.stdout.close()
        self.procs.clear()


def _die_with_parent() -> None:
    """In the child before exec: the kernel SIGKILLs it if the supervisor dies, whatever
    killed the supervisor (SIGKILL included, which no handler can catch)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _read_line(proc: _Proc, prefix: str, timeout: float) -> str:
    """The first stdout line starting with ``prefix``, within ``timeout`` seconds."""
    import selectors

    stdout = proc.popen.stdout
    assert stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(stdout, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    buffer = b""
    while time.monotonic() < end:
        if proc.popen.poll() is not None:
            raise LabkitError(f"{proc.name} exited with status {proc.popen.returncode} on start")
        if sel.select(max(0.0, end - time.monotonic())):
            chunk = os.read(stdout.fileno(), 4096)
            buffer += chunk
            complete, _, _ = buffer.rpartition(b"\n")  # a line still arriving is not read
            for line in complete.decode(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line
    raise LabkitError(f"{proc.name} did not start within {timeout:g} s")


async def wait_registered(address: str, count: int, timeout: float) -> None:
    """Wait until ``count`` clients have registered agent types (the gateway's own view), so a
    load never starts against a half-started fleet; raises after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = labkit_pb2_grpc.LabkitGatewayStub(channel)
        while time.monotonic() < end:
            stats = await stub.Stats(labkit_pb2.StatsRequest(), timeout=2.0)
            if sum(1 for w in stats.workers if w.agent_types) >= count:
                return
            await asyncio.sleep(0.1)
    raise LabkitError(f"fewer than {count} workers registered within {timeout:g} s")


async def gateway_stats(address: str, load_since: float | None = None) -> Any:
    """The gateway's ``Stats``: counters, every connected client, membership events, and with
    ``load_since`` (monotonic seconds) the load reports received since then."""
    request = labkit_pb2.StatsRequest(
        with_load=load_since is not None, load_since_monotonic_s=load_since or 0.0
    )
    async with grpc.aio.insecure_channel(address) as channel:
        stub = labkit_pb2_grpc.LabkitGatewayStub(channel)
        return await stub.Stats(request, timeout=5.0)


def check_live(scenario: Scenario) -> None:
    """Refuse, before any process starts, what the live driver cannot run: a closed loop, the
    simulator-only sections, a scenario without a file (the gateway and workers read it)."""
    if scenario.workload.arrival.process == "closed":
        raise LabkitError(
            "live mode sends open-loop arrivals; a closed loop (workload.arrival.process: "
            "closed) is simulator-only for now"
        )
    g = scenario.gateway
    unsupported = [
        ("gateway.hedging", g.hedge_after_ms is not None),
        ("gateway.count > 1", g.count > 1),
        ("workload.unauthorized_fraction", scenario.workload.unauthorized_fraction > 0),
        ("state", scenario.state is not None),
        ("cache", scenario.cache is not None),
        ("batching", scenario.batching is not None),
    ]
    refused = [name for name, used in unsupported if used]
    if refused:
        raise LabkitError(
            f"{', '.join(refused)}: simulator-only so far; remove it (--set KEY=null) to run live"
        )
    if scenario.source is None:
        raise LabkitError("live mode needs a scenario file (workers and gateway read it)")


def run_live(
    scenario: Scenario, progress: Any = None, supervisor: Supervisor | None = None
) -> Results:
    """Run ``scenario`` on real processes; always tears them down (``supervisor`` lets a
    caller see which processes were started)."""
    check_live(scenario)
    sup = supervisor or Supervisor()

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return asyncio.run(_run(scenario, sup, progress))
    finally:
        sup.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _run(scenario: Scenario, sup: Supervisor, progress: Any) -> Results:
    fleet = await start_fleet(scenario, sup)
    return await run_load(fleet, scenario, progress)


@dataclass
class Fleet:
    """A started gateway and its ``workers.count`` labkit workers: what one ``run_live`` uses
    once and a :class:`labkit.live.session.LiveSession` keeps up for several loads."""

    scenario: Scenario
    sup: Supervisor
    gateway: _Proc
    address: str
    names: list[str]
    speeds: Any  # each worker's speed, drawn from the scenario's seed as the simulator does
    api_key: str | None
    workers: dict[str, _Proc] = field(default_factory=dict)
    #: workers (re)started since the current load began: their gateway counters start at 0
    restarted: set[str] = field(default_factory=set)

    def start_worker(self, i: int) -> _Proc:
        """Start worker ``i`` (again, after a crash): same name, speed and seed."""
        source = str(Path(self.scenario.source).resolve())  # type: ignore[arg-type]
        name, seed = self.names[i], self.scenario.seed * 1000 + i
        args = ["worker", "--gateway", self.address, "--scenario", source, "--name", name]
        args += ["--speed", repr(float(self.speeds[i])), "--seed", str(seed)]
        if self.api_key:
            args += ["--api-key", self.api_key]
        proc = self.sup.spawn(name, args)
        self.workers[name] = proc
        self.restarted.add(name)
        return proc


def start_gateway(scenario: Scenario, sup: Supervisor, timeout: float) -> tuple[_Proc, str]:
    """Start the scenario's gateway on a free port of 127.0.0.1; returns it and its address
    once it listens."""
    source = str(Path(scenario.source).resolve())  # type: ignore[arg-type]
    gateway = sup.spawn("gateway", ["gateway", "--scenario", source, "--port", "0"])
    line = _read_line(gateway, "labkit gateway listening on ", timeout)
    return gateway, line.split(" on ", 1)[1].split(" ")[0]


async def start_fleet(
    scenario: Scenario, sup: Supervisor, timeout: float = STARTUP_TIMEOUT_S
) -> Fleet:
    """Start the gateway (on a free port of 127.0.0.1) and the workers, and wait until every
    worker has registered; the processes belong to ``sup``, which the caller must close."""
    gateway, address = start_gateway(scenario, sup, timeout)
    w = scenario.workers
    speeds = w.speed.sample(workload_streams(scenario.seed).speeds, w.count)
    fleet = Fleet(
        scenario=scenario,
        sup=sup,
        gateway=gateway,
        address=address,
        names=[worker_name(i) for i in range(w.count)],
        speeds=speeds,
        api_key=next(iter(scenario.gateway.api_keys or ()), None),
    )
    for i in range(w.count):
        fleet.start_worker(i)
    await wait_registered(address, w.count, timeout)
    return fleet


async def run_load(fleet: Fleet, scenario: Scenario, progress: Any = None) -> Results:
    """Send ``scenario``'s arrivals through ``fleet``, apply its faults, and build results in
    the simulator's schema. The gateway's counters and the workers' load reports are taken as
    differences from just before the load, so a fleet kept up between runs reports each run
    on its own (a worker restarted during the run counts from its restart)."""
    names, speeds = fleet.names, fleet.speeds
    w = scenario.workers
    streams = workload_streams(scenario.seed)
    faults = plan_faults(scenario.faults, names, scenario.duration_s, streams.all[11])
    before = await gateway_stats(fleet.address)
    fleet.restarted.clear()
    started = asyncio.Event()
    gen = LoadGenerator(scenario, fleet.address, api_key=fleet.api_key)
    load = asyncio.create_task(gen.run(on_start=started))
    await started.wait()
    t0 = time.monotonic()
    injector = asyncio.create_task(
        _inject(faults, fleet.workers, fleet.sup, fleet.address, t0, fleet.start_worker)
    )
    ticker = asyncio.create_task(_progress(progress, scenario.duration_s, t0))
    try:
        result = await load
    finally:
        injector.cancel()
        ticker.cancel()
    span = max(time.monotonic() - t0, scenario.duration_s)
    await asyncio.sleep(0.7)  # one more load report from every worker (every 0.5 s)
    stats = await gateway_stats(fleet.address, load_since=result.t0_monotonic)
    base = {ws.client_id: ws for ws in before.workers if ws.client_id not in fleet.restarted}
    by_name = {ws.client_id: _since(ws, base.get(ws.client_id)) for ws in stats.workers}
    worker_names = result.workers
    index_of = {n: i for i, n in enumerate(worker_names)}
    order = names + [n for n in worker_names if n not in names]
    remap = [order.index(n) for n in worker_names]
    log = result.log
    _remap_workers(log, remap, index_of)
    # served counts from the records (every incarnation of a restarted worker counts)
    served = [0] * len(order)
    for i in log.column("worker").astype(int).tolist():
        if i >= 0:
            served[i] += 1
    table = _worker_table(names, speeds, by_name, span, w.concurrency, served)
    counters = {k: int(v) - int(before.counters.get(k, 0)) for k, v in stats.counters.items()}
    extra: dict[str, Any] = {
        "resilience": {
            k.removeprefix("resilience."): int(v)
            for k, v in counters.items()
            if k.startswith("resilience.")
        },
        "live": {
            "gateway": fleet.address,
            "sent": result.sent,
            "late_replies": result.late_replies,
            "schedule_lag_ms": round(result.lag_s * 1000, 3),
            "gateway_counters": counters,
        },
    }
    results = build_results(
        scenario,
        log,
        driver="live",
        agent_types=list(scenario.workers.agent_types),
        worker_names=order,
        workers=table,
        extra=extra,
        faults=faults_frame(faults),
        events=_events(stats, faults, result.t0_monotonic),
    )
    results.timing = pd.DataFrame(
        result.timing,
        columns=[
            *("arrival_s", "latency_ms", "worker_ms", "service_ms", "worker", SEND_LAG_COLUMN),
            *ADDED_COLUMNS,
        ],
    )
    results.load_reports = _load_reports(stats, order, result.t0_monotonic)
    return results


def _load_reports(stats: Any, workers: list[str], t0: float) -> pd.DataFrame:
    """The labkit workers' load reports during the run, on its clock, in the simulator's
    ``load_reports`` schema (AutoGen workers send none)."""
    index = {name: i for i, name in enumerate(workers)}
    rows = [s for s in stats.load if s.worker in index]
    return load_reports_frame(
        [s.monotonic_s - t0 for s in rows],
        [index[s.worker] for s in rows],
        [s.cpu for s in rows],
        [s.active for s in rows],
        workers,
    )


def _since(now: Any, before: Any | None) -> Any:
    """A worker's gateway stats for this run only: its counters and busy time minus what they
    were before it (``before`` None: it connected during the run, everything counts). The
    longest queue and the response-time average are the worker's own, not per run."""
    if before is None:
        return now
    out = labkit_pb2.WorkerStats()
    out.CopyFrom(now)
    for attr in ("completed", "failed", "forwarded", "served"):
        setattr(out, attr, max(0, getattr(now, attr) - getattr(before, attr)))
    out.busy_s = max(0.0, now.busy_s - before.busy_s)
    return out


def _events(stats: Any, faults: list[FaultInstance], t0: float) -> pd.DataFrame:
    """The gateway's membership changes and the faults applied, on the run's clock, in the
    simulator's events schema (so recovery figures say when the gateway noticed)."""
    rows: list[dict[str, Any]] = []
    for ev in stats.events:
        t = ev.monotonic_s - t0
        if t >= 0:
            rows.append(
                {
                    "t_s": t,
                    "worker": ev.worker,
                    "source": ev.source,
                    "event": ev.event,
                    "gateway": "gw-live",
                }
            )
    for f in faults:
        for name in f.workers:
            rows.append(
                {
                    "t_s": f.start_s,
                    "worker": name,
                    "source": "fault",
                    "event": f.kind,
                    "gateway": "",
                }
            )
    return events_frame(rows)


def _worker_table(
    names: list[str],
    speeds: Any,
    stats: dict[str, Any],
    span: float,
    concurrency: int,
    served: list[int],
) -> pd.DataFrame:
    """The per-worker table in the simulator's columns: served counts from the records, the
    rest from the gateway's view and each worker's latest load report (busy time and queue of
    a worker restarted mid-run count since its restart)."""

    def get(name: str, attr: str, default: float = 0) -> Any:
        ws = stats.get(name)
        return getattr(ws, attr) if ws is not None else default

    busy = [float(get(n, "busy_s")) for n in names]
    return pd.DataFrame(
        {
            "worker": names,
            "speed": [float(s) for s in speeds],
            "received": [int(get(n, "forwarded")) for n in names],
            "served": served[: len(names)],
            "rejected": [0] * len(names),
            "expired": [0] * len(names),
            "errors": [int(get(n, "failed")) for n in names],
            "lost": [0] * len(names),
            "busy_s": busy,
            "utilization": [b / (span * concurrency) for b in busy],
            "mean_queue": [float("nan")] * len(names),
            "max_queue": [int(get(n, "max_queue")) for n in names],
            "rt_ewma_ms": [float(get(n, "rt_ewma_ms")) for n in names],
        }
    )


def _remap_workers(log: Any, remap: list[int], index_of: dict[str, int]) -> None:
    """Rewrite the log's worker indices from the load generator's order to the fleet's."""
    log.remap_workers(remap)


async def _inject(
    faults: list[FaultInstance],
    workers: dict[str, _Proc],
    sup: Supervisor,
    address: str,
    t0: float,
    start_worker: Any,
) -> None:
    events: list[tuple[float, FaultInstance, bool]] = []
    for f in faults:
        events.append((f.start_s, f, True))
        if f.end_s is not None:
            events.append((f.end_s, f, False))
    events.sort(key=lambda e: e[0])
    async with grpc.aio.insecure_channel(address) as channel:
        admin = labkit_pb2_grpc.LabkitGatewayStub(channel)
        for at, fault, starting in events:
            delay = at - (time.monotonic() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            for name in fault.workers or tuple(workers):
                await _apply(fault, starting, name, workers, sup, admin, start_worker)


async def _apply(
    fault: FaultInstance,
    starting: bool,
    name: str,
    workers: dict[str, _Proc],
    sup: Supervisor,
    admin: Any,
    start_worker: Any,
) -> None:
    proc = workers[name]
    if fault.kind == "crash":
        hang = fault.params.get("connection") == "hang"
        if starting:
            sup.signal(proc, signal.SIGSTOP if hang else signal.SIGKILL)
        elif hang:
            sup.signal(proc, signal.SIGCONT)
        else:
            start_worker(int(name.split("-")[1]))
        return
    # an ending fault sets its own kind back to neutral, leaving other faults in force
    p = fault.params
    if fault.kind == "latency_spike":
        extra = float(p.get("extra_ms", 0.0)) if starting else 0.0
        request = labkit_pb2.FaultRequest(client_id=name, kind="delay", extra_ms=extra)
    elif fault.kind == "partition":
        request = labkit_pb2.FaultRequest(client_id=name, kind="drop" if starting else "undrop")
    elif fault.kind == "slow":
        factor = float(p["factor"]) if starting else 1.0
        request = labkit_pb2.FaultRequest(client_id=name, kind="slow", factor=factor)
    else:  # flaky
        rate = float(p["error_rate"]) if starting else 0.0
        request = labkit_pb2.FaultRequest(client_id=name, kind="flaky", error_rate=rate)
    try:
        reply = await admin.InjectFault(request, timeout=2.0)
    except grpc.aio.AioRpcError as exc:
        log.warning("fault %s on %s not applied: %s", fault.kind, name, exc.code().name)
        return
    if not reply.applied:
        log.warning("fault %s on %s not applied: %s", fault.kind, name, reply.error)


async def _progress(progress: Any, duration: float, t0: float) -> None:
    if progress is None:
        return
    while True:
        progress(min(1.0, (time.monotonic() - t0) / duration))
        await asyncio.sleep(max(0.05, duration / 100))
