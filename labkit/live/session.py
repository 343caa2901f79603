"""A live fleet kept up between runs: start the gateway and workers once, run loads, inspect.

``run_live`` starts, loads and stops in one call: right for ``labkit live``, wrong for a
notebook, where a person wants to start the cluster, look at it (or point an AutoGen worker at
its address), run a load or two, and shut it down. :class:`LiveSession` splits those phases and
reuses ``labkit.live.run``'s pieces (``start_fleet``, ``run_load``, ``Supervisor``), so each run
is exactly what ``labkit live`` does and returns ``Results`` in the simulator's schema.

Why a thread: Jupyter runs cells inside its own asyncio loop, where ``asyncio.run`` refuses to
start (so ``run_live`` cannot be called from a cell). A session runs its own event loop in a
daemon thread and submits work to it. The processes are started from that thread and it lives
as long as the session, because a child's death signal (``PR_SET_PDEATHSIG``) follows the
*thread* that started it.

Teardown, whichever way the session ends: ``close()`` or leaving ``with``; an error, a timeout
or a Ctrl-C / kernel interrupt during ``start()`` or ``run()`` (the fleet's state is then
unknown, so it is closed and the exception re-raised); a handle that is garbage collected or
still open at interpreter exit (a ``weakref.finalize``, which also runs at exit); and the
kernel dying outright (every child dies with its parent). Each path kills every process group
the session started, restarted workers included.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import shutil
import signal
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
import pandas as pd
import yaml

from labkit.errors import LabkitError
from labkit.live.loadgen import CLIENT_GRACE_S
from labkit.live.pb import labkit_pb2, labkit_pb2_grpc
from labkit.live.run import (
    STARTUP_TIMEOUT_S,
    Fleet,
    Supervisor,
    check_live,
    gateway_stats,
    run_load,
    start_fleet,
    wait_registered,
)
from labkit.results import Results
from labkit.scenario import Scenario, load_scenario, scenario_from_dict

__all__ = ["FLEET_SECTIONS", "LiveSession", "host_load", "pid_alive"]

#: what the running processes were started with; a run may change anything else
#: (load, duration, warm-up, seed, faults) but not these
FLEET_SECTIONS = ("workers", "gateway", "balancer", "subscriptions")
#: seconds a run may take beyond its duration and deadline before the session gives up on it
RUN_GRACE_S = 30.0
#: seconds ``close`` waits for an interrupted run to unwind, and for the session's thread
STOP_TIMEOUT_S = 10.0
#: how often a waiting call wakes to let an interrupt through
WAIT_SLICE_S = 0.1
#: a worker learns that a "slow" fault was cleared from its next load report's ack (every 0.5 s)
CLEAR_SETTLE_S = 0.6

T = TypeVar("T")


def host_load() -> tuple[float, int]:
    """The machine's 1-minute load average and its number of cores. A live run measures the
    host as well as the fleet: with a load above the cores, the gateway, the workers and the
    load generator wait for a CPU, and that wait lands in the latencies (and in a calibration's
    per-hop overhead), where no scenario describes it."""
    return os.getloadavg()[0], os.cpu_count() or 1


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running labkit process (a zombie is dead: nothing is left to kill;
    another program that reused the pid is not ours)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or another user's process now
        return False
    proc = Path(f"/proc/{pid}")
    try:
        if "State:\tZ" in (proc / "status").read_text():
            return False
        return b"labkit" in (proc / "cmdline").read_bytes()
    except OSError:  # it exited while we looked
        return False


def _same(a: Any, b: Any) -> bool:
    """Equal as scenario data, floats to 1e-9 relative (a scenario's resolved data drifts in the
    last bits when parsed again: adaptive weights are renormalised)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    numbers = (int, float)
    if (
        isinstance(a, bool)
        or isinstance(b, bool)
        or not (isinstance(a, numbers) and isinstance(b, numbers))
    ):
        return type(a) is type(b) and bool(a == b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


class _Runtime:
    """What must be released however a session ends: its event-loop thread, its processes and
    its temporary files. Kept apart from the session so the finalizer can hold it without
    keeping the session alive."""

    def __init__(self) -> None:
        self.sup = Supervisor()
        self.tmp = Path(tempfile.mkdtemp(prefix="labkit-live-"))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name="labkit-live-session", daemon=True)
        self.closed = False  # no new work is accepted (set as soon as closing begins)
        self._done = False  # teardown completed (an interrupted close may be retried)
        self._lock = threading.RLock()
        self.thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            if self.closed and not self.loop.is_closed():
                self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the session's loop and wait at most ``timeout`` seconds; on any way
        out but a result (timeout, interrupt) the coroutine is cancelled."""
        if self.closed:
            coro.close()
            raise LabkitError("the live session is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        deadline = time.monotonic() + timeout
        try:
            # in short waits: a SIGINT (Jupyter's interrupt) delivered to another thread only
            # sets a flag, which the main thread acts on when it next runs Python code
            while True:
                try:
                    return future.result(max(0.0, min(WAIT_SLICE_S, deadline - time.monotonic())))
                except TimeoutError:
                    if time.monotonic() >= deadline:
                        raise
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        """Stop any run in flight (so nothing restarts a worker mid-teardown), kill every
        process group, stop the thread, remove the temporary files. Idempotent; a close cut
        short (a second Ctrl-C) is completed by the next call."""
        with self._lock:
            self.closed = True
            if self._done:
                return
            elsewhere = threading.current_thread() is not self.thread
            if elsewhere and self.thread.is_alive():
                with contextlib.suppress(Exception):
                    future = asyncio.run_coroutine_threadsafe(_cancel_tasks(), self.loop)
                    future.result(STOP_TIMEOUT_S)
            self.sup.close()
            if elsewhere and self.thread.is_alive():
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(STOP_TIMEOUT_S)
            elif not elsewhere:
                # on the loop's own thread (the finalizer of a handle the cyclic GC collected
                # there): the loop stops after this callback, and the thread closes it and ends
                self.loop.stop()
            if not self.thread.is_alive() and not self.loop.is_closed():
                self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            self._done = True


async def _cancel_tasks() -> None:
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S / 2)


class LiveSession:
    """A gateway and ``workers.count`` labkit workers on 127.0.0.1, kept up between runs.

    >>> with LiveSession(load("live_small")) as live:     # doctest: +SKIP
    ...     print(live.address)                  # point an AutoGen worker here too
    ...     a = live.run()                       # the scenario's load, as written
    ...     b = live.run("workload.arrival.rate_rps=150")  # half the load, same fleet

    ``start()`` and ``close()`` do the same outside ``with`` (a notebook keeps the handle over
    several cells). ``run`` overrides may change the load, duration, warm-up, seed and faults;
    the fleet's own sections (:data:`FLEET_SECTIONS`) are fixed while it runs: start another
    session to change them. Between runs the session restores the fleet its faults disturbed
    (dead workers restarted, frozen ones woken, gateway-side faults cleared). Gateway state
    that is the fleet's, not the run's (the balancer's hash ring, each worker's response-time
    average and longest queue), carries over from run to run, as it would in production.
    """

    def __init__(self, scenario: Scenario, *, startup_timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        check_live(scenario)
        self.scenario = scenario
        self.startup_timeout_s = startup_timeout_s
        self._runtime: _Runtime | None = None
        self._fleet: Fleet | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._disturbed = False  # the last run had faults: restore the fleet before the next

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LiveSession:
        """Start the gateway and the workers and wait until every worker has registered."""
        if self._runtime is not None:
            raise LabkitError(
                "this live session was already started" + (" and closed" if self.closed else "")
            )
        runtime = _Runtime()
        self._runtime = runtime
        self._finalizer = weakref.finalize(self, runtime.close)
        try:
            fleet_scenario = self._fleet_scenario(runtime.tmp)
            timeout = self.startup_timeout_s
            self._fleet = runtime.call(
                start_fleet(fleet_scenario, runtime.sup, timeout), 2 * timeout + 10
            )
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Kill every process the session started and stop its thread (idempotent)."""
        if self._runtime is not None:
            self._runtime.close()
        if self._finalizer is not None:
            self._finalizer.detach()  # done: nothing left for garbage collection or exit

    def __enter__(self) -> LiveSession:
        return self if self._runtime is not None and not self.closed else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def started(self) -> bool:
        return self._fleet is not None

    @property
    def closed(self) -> bool:
        return self._runtime is not None and self._runtime.closed

    def __repr__(self) -> str:
        state = "closed" if self.closed else "running" if self.started else "not started"
        where = f" at {self._fleet.address}" if self._fleet is not None else ""
        return (
            f"LiveSession({self.scenario.name}: {self.scenario.workers.count} workers{where}, "
            f"{state})"
        )

    # -- what is running ---------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The gateway's ``127.0.0.1:PORT``: AutoGen's ``GrpcWorkerAgentRuntime(host_address=…)``
        connects here as it would to AutoGen's own host."""
        return self._require().address

    @property
    def workers(self) -> list[str]:
        """The labkit workers' names (their client ids at the gateway)."""
        return list(self._require().names)

    @property
    def pids(self) -> list[int]:
        """Every process the session started (gateway first; restarted workers included)."""
        return list(self._runtime.sup.pids) if self._runtime is not None else []

    def alive_pids(self) -> list[int]:
        """The session's processes still alive; empty once it is closed."""
        return [pid for pid in self.pids if pid_alive(pid)]

    def processes(self) -> pd.DataFrame:
        """One row per process started: name, pid, whether it is still running."""
        if self._runtime is None:
            return pd.DataFrame(columns=["name", "pid", "running"])
        sup = self._runtime.sup
        return pd.DataFrame(
            {
                "name": list(sup.names),
                "pid": list(sup.pids),
                "running": [pid_alive(p) for p in sup.pids],
            }
        )

    def stats(self) -> pd.DataFrame:
        """What the gateway knows right now, one row per connected client (labkit workers, any
        AutoGen worker pointed at it, a load generator while a run is on). Counts are since the
        client connected; busy time, served and the longest queue come from a labkit worker's
        latest load report (every 0.5 s)."""
        reply = self._stats()
        rows = [
            {
                "client": ws.client_id,
                "agent_types": ",".join(ws.agent_types),
                "health": ws.health,
                "in_flight": ws.in_flight,
                "forwarded": ws.forwarded,
                "completed": ws.completed,
                "failed": ws.failed,
                "served": ws.served,
                "busy_s": round(ws.busy_s, 3),
                "max_queue": ws.max_queue,
                "rt_ewma_ms": round(ws.rt_ewma_ms, 3),
            }
            for ws in reply.workers
        ]
        columns = ["client", "agent_types", "health", "in_flight", "forwarded", "completed"]
        columns += ["failed", "served", "busy_s", "max_queue", "rt_ewma_ms"]
        return pd.DataFrame(rows, columns=columns).set_index("client").sort_index()

    def counters(self) -> dict[str, int]:
        """The gateway's counters since it started (requests, replies, errors by reason, ...)."""
        return {k: int(v) for k, v in sorted(self._stats().counters.items())}

    # -- runs --------------------------------------------------------------------------------

    def run(
        self,
        *overrides: str,
        scenario: Scenario | None = None,
        progress: Callable[[float], None] | None = None,
        timeout_s: float | None = None,
    ) -> Results:
        """Run the session's scenario (or ``scenario``), with ``--set`` style ``overrides``,
        against the fleet; returns ``Results`` in the simulator's schema, this run's only.

        A bad override raises before anything is sent and leaves the fleet up. A failure,
        Ctrl-C or a run longer than ``timeout_s`` (default: its duration, its deadline and
        30 s) closes the session and re-raises. ``progress`` is called with the fraction done,
        from the session's thread.
        """
        runtime = self._runtime
        fleet = self._require()
        assert runtime is not None
        sc = self._run_scenario(scenario, overrides)
        limit = timeout_s
        if limit is None:
            limit = sc.duration_s + sc.gateway.timeout_ms / 1000 + CLIENT_GRACE_S + RUN_GRACE_S
        try:
            return runtime.call(self._run(fleet, sc, progress), limit)
        except TimeoutError:
            self.close()
            raise LabkitError(
                f"the live run did not finish within {limit:g} s; the session was closed"
            ) from None
        except BaseException:
            self.close()
            raise

    async def _run(
        self, fleet: Fleet, scenario: Scenario, progress: Callable[[float], None] | None
    ) -> Results:
        await self._restore(fleet)
        self._disturbed = self._disturbed or bool(scenario.faults)
        results = await run_load(fleet, scenario, progress)
        return results

    async def _restore(self, fleet: Fleet) -> None:
        """Undo what the last run's faults left: a worker killed (and not restarted within the
        run) starts again, a frozen one is woken, gateway-side faults are cleared; then wait
        until every worker is registered."""
        for i, name in enumerate(fleet.names):
            proc = fleet.workers[name]
            if proc.popen.poll() is not None:
                fleet.start_worker(i)
            else:
                fleet.sup.signal(proc, signal.SIGCONT)
        if self._disturbed:
            async with grpc.aio.insecure_channel(fleet.address) as channel:
                admin = labkit_pb2_grpc.LabkitGatewayStub(channel)
                for name in fleet.names:
                    request = labkit_pb2.FaultRequest(client_id=name, kind="clear")
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await admin.InjectFault(request, timeout=2.0)
            await asyncio.sleep(CLEAR_SETTLE_S)
            self._disturbed = False
        await wait_registered(fleet.address, len(fleet.names), self.startup_timeout_s)

    # -- helpers -----------------------------------------------------------------------------

    def _require(self) -> Fleet:
        if self.closed:
            raise LabkitError("the live session is closed; start a new one")
        if self._fleet is None:
            raise LabkitError("the live session is not started: use start() or `with`")
        return self._fleet

    def _stats(self) -> Any:
        self._require()
        assert self._runtime is not None
        try:
            return self._runtime.call(gateway_stats(self.address), 10.0)
        except grpc.aio.AioRpcError as exc:
            raise LabkitError(f"the gateway did not answer: {exc.code().name}") from None

    def _fleet_scenario(self, tmp: Path) -> Scenario:
        """The scenario the processes read. They read a file: the original when the sections
        they use (and the seed) are as written there, else a resolved copy in ``tmp`` so that
        overrides of those sections reach them too."""
        source = Path(self.scenario.source)  # type: ignore[arg-type]
        wanted = self.scenario.to_dict()
        with contextlib.suppress(LabkitError, OSError):
            as_written = load_scenario(source)
            written = as_written.to_dict()
            if all(_same(written.get(k), wanted.get(k)) for k in (*FLEET_SECTIONS, "seed")):
                return as_written
        resolved = tmp / "scenario.yaml"
        resolved.write_text(yaml.safe_dump(self.scenario.to_dict(), sort_keys=False))
        return load_scenario(resolved)

    def _run_scenario(self, scenario: Scenario | None, overrides: tuple[str, ...]) -> Scenario:
        base = scenario or self.scenario
        sc = base
        if overrides:
            base_dir = Path(base.source).resolve().parent if base.source else None
            sc = scenario_from_dict(dict(base.to_dict()), list(overrides), base_dir=base_dir)
            sc = dataclasses.replace(sc, source=base.source)
        check_live(sc)
        ours, theirs = self.scenario.to_dict(), sc.to_dict()
        changed = [k for k in FLEET_SECTIONS if not _same(ours.get(k), theirs.get(k))]
        if changed:
            raise LabkitError(
                f"{', '.join(changed)}: the running fleet was started with other settings; "
                "start a new session to change them (a run may change the load, duration, "
                "warm-up, seed and faults)"
            )
        return sc
