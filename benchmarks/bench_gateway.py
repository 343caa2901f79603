"""labkit's live gRPC gateway against AutoGen's own host, both serving unmodified AutoGen workers.

For each host (AutoGen's ``GrpcWorkerAgentRuntimeHost`` via ``autogen_host.py``, and ``python -m
labkit gateway``) the script starts, each in its own process and process group on 127.0.0.1:

- the host;
- one AutoGen worker process (``GrpcWorkerAgentRuntime``) hosting the agent type ``echo``, whose
  handler returns the 64-byte message it got (AutoGen's host allows one worker per agent type);
- one caller process, also a plain ``GrpcWorkerAgentRuntime``, that keeps a fixed number of
  ``send_message`` RPCs to ``echo`` in flight (concurrency 1, then 64), each for a warm-up and
  then a measured window, and records every RPC's latency.

The hosts are run interleaved (autogen, labkit, autogen, labkit, …) and the median of each figure
is reported; the ratios labkit / autogen are the figures to quote, since absolute rates depend on
the (often shared, noisy) machine. ``--labkit-workers 2`` adds a row where labkit balances two
``echo`` workers (AutoGen's host refuses the second one).

    python benchmarks/bench_gateway.py [--repeats R] [--seconds S] [--labkit-workers 2] [--json]

A script, not a test: nothing here asserts on wall-clock times. The worker and caller roles
(``--role``) import autogen only; nothing here imports labkit (its generated protos and
autogen_ext's register the same .proto names, so they cannot share a process).
"""

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from benchlib import emit, fmt, median, run_child, write_json

ROOT = Path(__file__).resolve().parents[1]
AUTOGEN_HOST_SCRIPT = Path(__file__).resolve().parent / "autogen_host.py"
HOST = "127.0.0.1"
ECHO_TYPE = "echo"
PAYLOAD = "x" * 64  # the message's one field: 64 ASCII bytes
START_TIMEOUT_S = 20.0  # a host's listening line, a worker's or caller's ready line
STOP_GRACE_S = 5.0  # SIGTERM -> exit, then SIGKILL
DRAIN_TIMEOUT_S = 10.0  # in-flight RPCs after a window; still unanswered then: "stuck"
CALL_TIMEOUT_S = 10.0  # the caller's first (routing check) RPC
LABKIT_LISTENING = re.compile(r"^labkit gateway listening on 127\.0\.0\.1:(\d+)\b")
AUTOGEN_LISTENING = re.compile(r"^autogen host listening on 127\.0\.0\.1:(\d+)$")


# -- the AutoGen processes (--role echo / --role caller) ------------------------------------------
@dataclass
class Blob:
    """The RPC's message and its reply: one 64-character string (JSON-serialised by AutoGen)."""

    data: str


def _new_runtime(address: str) -> Any:
    from autogen_core import try_get_known_serializers_for_type
    from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime

    runtime = GrpcWorkerAgentRuntime(host_address=address)
    runtime.add_message_serializer(try_get_known_serializers_for_type(Blob))
    return runtime


async def _watch_parent(parent: int) -> None:
    import asyncio

    while True:
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            os._exit(3)


async def role_echo(address: str) -> None:
    """An AutoGen worker hosting ``echo``: replies with the message; runs until SIGTERM."""
    import asyncio

    from autogen_core import MessageContext, RoutedAgent, message_handler

    served = 0

    class Echo(RoutedAgent):
        def __init__(self) -> None:
            super().__init__("echo")

        @message_handler
        async def on_blob(self, message: Blob, ctx: MessageContext) -> Blob:
            nonlocal served
            served += 1
            return message

    runtime = _new_runtime(address)

    async def setup() -> None:
        await runtime.start()
        await Echo.register(runtime, ECHO_TYPE, Echo)

    await asyncio.wait_for(setup(), START_TIMEOUT_S)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGUSR1: report the count so far (the benchmark asks at each window's start and end)
    loop.add_signal_handler(signal.SIGUSR1, lambda: emit(event="served", count=served))
    emit(event="ready")
    await stop.wait()
    with contextlib.suppress(BaseException):  # the host may be gone already; exiting anyway
        await asyncio.wait_for(runtime.stop(), 3.0)


async def _window(
    runtime: Any, concurrency: int, warmup_s: float, seconds: float
) -> dict[str, Any]:
    """``concurrency`` RPCs always in flight; latencies of those answered in the window."""
    import asyncio

    from autogen_core import AgentId

    latencies: list[float] = []
    errors = 0
    measuring = False
    running = True
    clock = time.perf_counter

    async def slot(i: int) -> None:
        nonlocal errors
        agent = AgentId(ECHO_TYPE, f"k{i}")  # one agent key per slot: labkit hashes on it
        message = Blob(PAYLOAD)
        while running:
            started = clock()
            try:
                reply = await runtime.send_message(message, agent)
                ok = isinstance(reply, Blob) and reply.data == PAYLOAD
            except Exception:
                ok = False
            if measuring:
                if ok:
                    latencies.append(clock() - started)
                else:
                    errors += 1

    tasks = [asyncio.create_task(slot(i)) for i in range(concurrency)]
    await asyncio.sleep(warmup_s)
    emit(event="window", concurrency=concurrency, phase="start")
    measuring = True
    opened = clock()
    await asyncio.sleep(seconds)
    measuring = False
    closed = clock()
    emit(event="window", concurrency=concurrency, phase="end")
    running = False
    _, stuck = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT_S)
    for task in stuck:
        task.cancel()
    latencies.sort()
    n = len(latencies)

    def pct(q: float) -> float | None:
        return 1000.0 * latencies[min(n - 1, int(q * n))] if n else None

    return {
        "concurrency": concurrency,
        "ok": n,
        "errors": errors,
        "stuck": len(stuck),
        "window_s": closed - opened,
        "rps": n / (closed - opened),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": 1000.0 * statistics.fmean(latencies) if n else None,
        "max_ms": 1000.0 * latencies[-1] if n else None,
    }


async def role_caller(
    address: str, concurrencies: Sequence[int], warmup_s: float, seconds: float
) -> None:
    import asyncio

    from autogen_core import AgentId

    runtime = _new_runtime(address)
    await asyncio.wait_for(runtime.start(), START_TIMEOUT_S)
    reply = await asyncio.wait_for(
        runtime.send_message(Blob(PAYLOAD), AgentId(ECHO_TYPE, "k0")), CALL_TIMEOUT_S
    )
    if not isinstance(reply, Blob) or reply.data != PAYLOAD:
        raise RuntimeError(f"unexpected echo reply {reply!r}")
    emit(event="ready")
    for concurrency in concurrencies:
        emit(event="result", **await _window(runtime, concurrency, warmup_s, seconds))
    emit(event="done")
    with contextlib.suppress(BaseException):  # the host may be gone already; exiting anyway
        await asyncio.wait_for(runtime.stop(), 3.0)


def run_role(args: argparse.Namespace) -> int:
    import asyncio

    async def main() -> None:
        watchdog = asyncio.ensure_future(_watch_parent(os.getppid()))
        try:
            if args.role == "echo":
                await role_echo(args.host)
            else:
                await role_caller(args.host, args.concurrency, args.warmup, args.seconds)
        finally:
            watchdog.cancel()

    run_child(main())


# -- processes ----------------------------------------------------------------------------------
# Run a command so that it gets SIGKILL if this process dies without cleaning up (Linux
# PR_SET_PDEATHSIG, kept across exec): no orphans even if the benchmark is killed hard.
_EXEC_TIED_TO_PARENT = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(3)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def _tied(argv: Sequence[str]) -> list[str]:
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-c", _EXEC_TIED_TO_PARENT, str(os.getpid()), *argv]


class Proc:
    """A subprocess in its own session: stdout lines collected on a thread, stderr to a log."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        logdir: Path,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            _tied(argv),
            cwd=ROOT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        self.pid = self.popen.pid  # also its process group id
        self._on_line = on_line
        self._lines: list[str] = []
        self._eof = False
        self._cond = threading.Condition()
        threading.Thread(target=self._read, name=f"stdout-{name}", daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if self._on_line is not None:
                self._on_line(line)
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_line(self, match: Callable[[str], Any], timeout: float, what: str) -> Any:
        """The first truthy ``match(line)``; raises after ``timeout`` s or when stdout closes."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    result = match(line)
                    if result:
                        return result
                seen = len(self._lines)
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    break
                self._cond.wait(remaining)
        status = "exited" if self._eof else f"gave nothing within {timeout:g} s"
        raise RuntimeError(f"{self.name} {status} while waiting for {what}\n{self.describe()}")

    def wait_event(self, event: str, timeout: float) -> dict[str, Any]:
        def match(line: str) -> dict[str, Any] | None:
            record = _record(line)
            if record is not None and record.get("event") == "fatal":
                raise RuntimeError(f"{self.name}: {record.get('error')}\n{self.describe()}")
            return record if record is not None and record.get("event") == event else None

        return self.wait_line(match, timeout, f"its {event!r} line")

    def records(self, event: str) -> list[dict[str, Any]]:
        with self._cond:
            lines = list(self._lines)
        return [r for r in map(_record, lines) if r is not None and r.get("event") == event]

    def describe(self) -> str:
        with self._cond:
            tail = "\n".join(self._lines[-10:])
        self._log.flush()
        log = self.log_path.read_text(errors="replace")[-3000:]
        return f"--- {self.name} stdout (tail) ---\n{tail}\n--- {self.name} log (tail) ---\n{log}"

    def cpu_s(self) -> float | None:
        """User + system CPU seconds so far (Linux /proc), None if unknown or gone."""
        try:
            with open(f"/proc/{self.pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def terminate(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)

    def reap(self, deadline: float) -> None:
        """Wait until ``deadline`` (monotonic), then SIGKILL the group; always closes the log."""
        try:
            self.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"  {self.name} ignored SIGTERM; killing it", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # the whole group: also anything it started
        try:
            self.popen.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            print(f"  {self.name} (pid {self.pid}) survived SIGKILL", file=sys.stderr)
        self._log.close()


def _record(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def stop_all(procs: list[Proc]) -> None:
    """SIGTERM every group at once (callers first in the list), then reap with one deadline."""
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for proc in procs:
        proc.reap(deadline)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# -- one run of one case ------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str  # row label
    host: str  # "autogen" | "labkit"
    workers: int  # echo worker processes


def start_host(case: Case, args: argparse.Namespace, logdir: Path, procs: list[Proc]) -> str:
    tag = f"{case.name}-host"
    if case.host == "labkit":
        cmd = args.labkit_cmd or [sys.executable, "-m", "labkit", "gateway"]
        argv = [*cmd, "--host", HOST, "--port", "0", "--log-level", "warning"]
        proc = Proc(tag, argv, logdir)
        procs.append(proc)
        port = proc.wait_line(LABKIT_LISTENING.match, START_TIMEOUT_S, "its listening line")
        return f"{HOST}:{port.group(1)}"
    for _ in range(3):  # autogen's host cannot bind port 0 and tell us: pick one, retry if taken
        proc = Proc(
            tag, [sys.executable, str(AUTOGEN_HOST_SCRIPT), "--port", str(_free_port())], logdir
        )
        procs.append(proc)
        try:
            port = proc.wait_line(AUTOGEN_LISTENING.match, START_TIMEOUT_S, "its listening line")
        except RuntimeError:
            if proc.popen.poll() == 2:  # the port was taken meanwhile
                continue
            raise
        return f"{HOST}:{port.group(1)}"
    raise RuntimeError("autogen host: no free port in 3 tries")


def run_case(case: Case, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    procs: list[Proc] = []
    cpu: dict[int, dict[str, Any]] = {}  # concurrency -> CPU seconds per process at start/end
    phases: list[tuple[int, str]] = []  # the window marks in order (echo workers count at each)

    def snapshot(line: str) -> None:
        record = _record(line)
        if record is None or record.get("event") != "window":
            return
        mark = {p.name: p.cpu_s() for p in procs}
        mark["_wall"] = time.monotonic()
        cpu.setdefault(record["concurrency"], {})[record["phase"]] = mark
        phases.append((record["concurrency"], record["phase"]))
        for proc in procs:
            if "-echo" in proc.name:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGUSR1)

    try:
        address = start_host(case, args, logdir, procs)
        workers = [
            Proc(
                f"{case.name}-echo{i + 1}",
                [sys.executable, __file__, "--role", "echo", "--host", address],
                logdir,
            )
            for i in range(case.workers)
        ]
        procs.extend(workers)
        for worker in workers:
            worker.wait_event("ready", START_TIMEOUT_S)
        caller = Proc(
            f"{case.name}-caller",
            [
                sys.executable,
                __file__,
                "--role",
                "caller",
                "--host",
                address,
                "--concurrency",
                ",".join(map(str, args.concurrency)),
                "--warmup",
                str(args.warmup),
                "--seconds",
                str(args.seconds),
            ],
            logdir,
            on_line=snapshot,
        )
        procs.insert(0, caller)
        caller.wait_event("ready", START_TIMEOUT_S)
        per_window = args.warmup + args.seconds + DRAIN_TIMEOUT_S + 5.0
        caller.wait_event("done", per_window * len(args.concurrency))
        results = {
            r["concurrency"]: {k: v for k, v in r.items() if k != "event"}
            for r in caller.records("result")
        }
    finally:
        stop_all(procs)
    # each echo worker's running count at each window mark (a worker may miss the last ones)
    counts = [
        dict(zip(phases, (r["count"] for r in w.records("served")), strict=False)) for w in workers
    ]
    for concurrency, row in results.items():
        marks = cpu.get(concurrency, {})
        spent = _cpu_spent(marks.get("start"), marks.get("end"), case.name)
        wall = marks["end"]["_wall"] - marks["start"]["_wall"] if len(marks) == 2 else 0.0
        row["cpu_pct"] = {k: _per(v, wall / 100) for k, v in spent.items()}
        row["cpu_us_per_rpc"] = {k: _per(v, row["ok"] / 1e6) for k, v in spent.items()}
        # RPCs each echo worker served in the window (how labkit split them between workers)
        row["served_per_worker"] = [
            c[(concurrency, "end")] - c[(concurrency, "start")]
            if (concurrency, "end") in c and (concurrency, "start") in c
            else None
            for c in counts
        ]
    return {"windows": results}


def _per(value: float | None, unit: float) -> float | None:
    return value / unit if value is not None and unit > 0 else None


def _cpu_spent(
    start: dict[str, Any] | None, end: dict[str, Any] | None, prefix: str
) -> dict[str, float | None]:
    """CPU seconds per role over the window: host, echo (all workers summed), caller."""
    out: dict[str, float | None] = {"host": None, "echo": None, "caller": None}
    if not start or not end:
        return out
    for role in out:
        names = [n for n in start if n.startswith(f"{prefix}-{role}")]
        spent = [end[n] - start[n] for n in names if start[n] is not None and end.get(n)]
        if spent:
            out[role] = sum(spent)
    return out


# -- the report ---------------------------------------------------------------------------------


def summarise(runs: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    windows = [r["windows"][concurrency] for r in runs]
    row: dict[str, Any] = {
        key: median([w[key] for w in windows])
        for key in ("rps", "p50_ms", "p99_ms", "mean_ms", "errors", "stuck")
    }
    for role in ("host", "echo", "caller"):
        row[f"cpu_{role}_pct"] = median([w["cpu_pct"][role] for w in windows])
        row[f"cpu_{role}_us_per_rpc"] = median([w["cpu_us_per_rpc"][role] for w in windows])
    row["runs"] = windows
    return row


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per host")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before it")
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 64],
        help="RPCs kept in flight, comma-separated levels (default 1,64)",
    )
    parser.add_argument(
        "--labkit-workers",
        type=int,
        default=1,
        choices=(1, 2),
        help="2: add a row where labkit balances two echo workers",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="also print every figure as one JSON line (or write it to PATH)",
    )
    parser.add_argument(
        "--labkit-cmd",
        type=lambda s: s.split(),
        help="command prefix for labkit's gateway (default: python -m labkit gateway), e.g. "
        "to profile it: 'python -m cProfile -o out/gw.prof -m labkit gateway'",
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep every process's stderr (else only on failure)",
    )
    parser.add_argument("--role", choices=("echo", "caller"), help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        return run_role(args)

    cases = [Case("autogen", "autogen", 1), Case("labkit", "labkit", 1)]
    if args.labkit_workers == 2:
        cases.append(Case("labkit-2w", "labkit", 2))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so every finally runs

    logdir = Path(tempfile.mkdtemp(prefix="bench_gateway."))
    runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in cases}
    try:
        for repeat in range(args.repeats):
            for case in cases:  # interleaved: autogen, labkit, (labkit-2w), autogen, …
                print(
                    f"  run {repeat + 1}/{args.repeats}: {case.name} …", file=sys.stderr, flush=True
                )
                rundir = logdir / f"{repeat + 1}-{case.name}"
                rundir.mkdir()
                runs[case.name].append(run_case(case, args, rundir))
    except BaseException:
        print(f"process logs kept in {logdir}", file=sys.stderr)
        raise
    if not args.keep_logs:
        shutil.rmtree(logdir, ignore_errors=True)

    env = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "autogen_ext": metadata.version("autogen-ext"),
        "grpcio": metadata.version("grpcio"),
        "platform": platform.platform(),
    }
    print(
        f"cpu_count={env['cpu_count']}  Python {env['python']}  autogen-ext {env['autogen_ext']}  "
        f"grpcio {env['grpcio']}  ({env['platform']})"
    )
    print(
        f"load: {len(PAYLOAD)}-byte echo RPCs, one AutoGen caller process -> host -> AutoGen "
        f"worker(s) hosting '{ECHO_TYPE}'; {args.warmup:g} s warm-up + {args.seconds:g} s "
        f"measured per concurrency; median of {args.repeats} interleaved runs"
    )
    print()
    header = (
        f"{'host':<10} {'workers':>7} {'conc':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} | {'CPU %: host':>11} {'echo':>5} {'caller':>6} | "
        f"{'CPU µs/RPC: host':>16} {'echo':>5} {'caller':>6}"
    )
    print(header)
    print("-" * len(header))
    rows: dict[str, dict[int, dict[str, Any]]] = {}
    for case in cases:
        rows[case.name] = {}
        for concurrency in args.concurrency:
            row = summarise(runs[case.name], concurrency)
            rows[case.name][concurrency] = row
            errors = (row["errors"] or 0) + (row["stuck"] or 0)
            print(
                f"{case.name:<10} {case.workers:>7} {concurrency:>5} {fmt(row['rps'], ',.0f'):>8} "
                f"{fmt(row['p50_ms'], '.2f'):>7} {fmt(row['p99_ms'], '.2f'):>7} {errors:>6g} | "
                f"{fmt(row['cpu_host_pct'], '.0f'):>11} {fmt(row['cpu_echo_pct'], '.0f'):>5} "
                f"{fmt(row['cpu_caller_pct'], '.0f'):>6} | "
                f"{fmt(row['cpu_host_us_per_rpc'], '.0f'):>16} "
                f"{fmt(row['cpu_echo_us_per_rpc'], '.0f'):>5} "
                f"{fmt(row['cpu_caller_us_per_rpc'], '.0f'):>6}"
            )
    print()
    print(
        f"{'ratio vs autogen':<19} {'conc':>4} {'throughput':>10} {'p99':>6} "
        f"{'host CPU/RPC':>12}   throughput per run"
    )
    ratios: dict[str, dict[int, dict[str, Any]]] = {}
    base = rows["autogen"]
    for case in cases[1:]:
        ratios[case.name] = {}
        for concurrency in args.concurrency:
            row, ref = rows[case.name][concurrency], base[concurrency]
            paired = [
                _ratio(mine["rps"], theirs["rps"])
                for mine, theirs in zip(row["runs"], ref["runs"], strict=True)
            ]
            r = {
                "throughput": _ratio(row["rps"], ref["rps"]),
                "p99": _ratio(row["p99_ms"], ref["p99_ms"]),
                "host_cpu_per_rpc": _ratio(row["cpu_host_us_per_rpc"], ref["cpu_host_us_per_rpc"]),
                "throughput_per_run": paired,
            }
            ratios[case.name][concurrency] = r
            print(
                f"{case.name + ' / autogen':<19} {concurrency:>4} "
                f"{fmt(r['throughput'], '.2f') + '×':>10} {fmt(r['p99'], '.2f') + '×':>6} "
                f"{fmt(r['host_cpu_per_rpc'], '.2f') + '×':>12}   "
                + ", ".join(fmt(p, ".2f") for p in paired)
            )
    top = max(args.concurrency)
    verdict = ratios["labkit"][top]
    met = (
        verdict["throughput"] is not None
        and verdict["p99"] is not None
        and verdict["throughput"] >= 3.0
        and verdict["p99"] <= 1 / 3
    )
    print()
    print(
        f"target at concurrency {top} (labkit, 1 worker): throughput ≥ 3× and p99 ≤ ⅓ of "
        f"autogen's: {'met' if met else 'not met'}"
    )
    if "labkit-2w" in runs:
        splits = [r["windows"][top]["served_per_worker"] for r in runs["labkit-2w"]]
        print(
            f"labkit-2w at concurrency {top}: RPCs each echo worker served in the window, "
            f"per run: {splits}"
        )
    if args.keep_logs:
        print(f"process logs: {logdir}")

    if args.json:
        payload = {
            "environment": env,
            "payload_bytes": len(PAYLOAD),
            "warmup_s": args.warmup,
            "seconds": args.seconds,
            "repeats": args.repeats,
            "concurrency": args.concurrency,
            "rows": {name: {str(c): row for c, row in per.items()} for name, per in rows.items()},
            "ratios_vs_autogen": {
                name: {str(c): r for c, r in per.items()} for name, per in ratios.items()
            },
            "target_met": met,
        }
        write_json(payload, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
