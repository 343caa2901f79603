"""Subprocess harness for the live gateway interop tests (``tests/test_live_interop.py``).

Every process is started in its own session (so its whole process group can be signalled),
its stdout is read line by line on a daemon thread, its stderr goes to a log file, and
:class:`Procs` stops all of them on close: SIGTERM to each group, up to 5 s, then SIGKILL. Every
wait takes a timeout and fails with the process's recent output and log, so a hung gateway or
worker shows up as a readable assertion, never as a hang or an orphan.

``LABKIT_INTEROP_GATEWAY_CMD`` (a shell-quoted command prefix, default ``python -m labkit
gateway``) points the suite at another gateway implementation, e.g. a stand-in while
``labkit.live.gateway`` is being written; ``--host 127.0.0.1 --port 0`` and the test's own
options are appended.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORKER_SCRIPT = ROOT / "tests" / "live_workers" / "autogen_worker.py"
GATEWAY_CMD_ENV = "LABKIT_INTEROP_GATEWAY_CMD"
LISTENING = re.compile(r"^labkit gateway listening on (127\.0\.0\.1:(\d+))$")

START_TIMEOUT_S = 10.0  # the gateway's listening line
READY_TIMEOUT_S = 20.0  # an AutoGen worker connected and registered
STOP_GRACE_S = 5.0  # SIGTERM -> exit, before SIGKILL


# Run a command so that it gets SIGKILL if this process dies without cleaning up (Linux
# PR_SET_PDEATHSIG, kept across exec): no orphans even when pytest itself is killed hard.
# The signal fires when the *thread* that started the child exits: start processes from the
# test's own (main) thread, as the fixtures do.
_EXEC_TIED_TO_PARENT = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):  # the parent died before prctl took effect
    sys.exit(3)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def tied_to_this_process(argv: Sequence[str]) -> list[str]:
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-c", _EXEC_TIED_TO_PARENT, str(os.getpid()), *argv]


def gateway_command() -> list[str]:
    override = os.environ.get(GATEWAY_CMD_ENV, "").strip()
    if override:
        return shlex.split(override)
    return [sys.executable, "-m", "labkit", "gateway"]


def gateway_overridden() -> bool:
    return bool(os.environ.get(GATEWAY_CMD_ENV, "").strip())


class Proc:
    """One subprocess: its stdout lines (collected as they come) and its stderr log."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, *, stdin: bool) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.popen = subprocess.Popen(
            tied_to_this_process(self.argv),
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        self.pid = self.popen.pid  # also its process group id (start_new_session)
        self.ready: dict[str, Any] = {}  # an AutoGen process's "ready" line, once seen
        self._lines: list[str] = []
        self._eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"stdout-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    # -- output ---------------------------------------------------------------------------

    @property
    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def records(self, event: str | None = None) -> list[dict[str, Any]]:
        """The JSON objects printed so far (other lines skipped), optionally of one event."""
        out = []
        for line in self.lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and (event is None or record.get("event") == event):
                out.append(record)
        return out

    def wait_line(self, match: Callable[[str], Any], timeout: float, what: str) -> Any:
        """The first truthy ``match(line)``; fails after ``timeout`` s or when stdout closes."""
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
        raise AssertionError(f"{self.name} {status} while waiting for {what}\n{self.describe()}")

    def wait_record(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        def match(line: str) -> dict[str, Any] | None:
            try:
                record = json.loads(line)
            except ValueError:
                return None
            return record if isinstance(record, dict) and pred(record) else None

        return self.wait_line(match, timeout, what)

    def wait_event(self, event: str, timeout: float) -> dict[str, Any]:
        """The first ``{"event": event}`` record; a ``fatal`` record fails at once."""
        record = self.wait_record(
            lambda r: r.get("event") in (event, "fatal"), timeout, f'a "{event}" line'
        )
        if record["event"] == "fatal":
            raise AssertionError(
                f"{self.name} failed before {event}: {record.get('error')}\n{self.describe()}"
            )
        return record

    def wait_eof(self, timeout: float) -> bool:
        """Wait until stdout is closed (the process exited and every line has been read)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._eof:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def log_tail(self, limit: int = 4000) -> str:
        with contextlib.suppress(OSError):
            self._log.flush()
            text = self.log_path.read_text(errors="replace")
            return text[-limit:]
        return ""

    def describe(self, lines: int = 15) -> str:
        code = self.popen.poll()
        state = "running" if code is None else f"exit status {code}"
        out = "\n".join(f"    {line}" for line in self.lines[-lines:]) or "    (nothing)"
        err = "\n".join(f"    {line}" for line in self.log_tail().splitlines()[-40:])
        return (
            f"--- {self.name} ({state}): {shlex.join(self.argv)}\n"
            f"  stdout (last {lines} lines):\n{out}\n"
            f"  stderr ({self.log_path}):\n{err or '    (nothing)'}"
        )

    # -- input and signals ----------------------------------------------------------------

    def send(self, text: str) -> None:
        assert self.popen.stdin is not None, f"{self.name} was started without stdin"
        self.popen.stdin.write(text.encode())
        self.popen.stdin.flush()

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        """Signal the process group (the process and anything it started)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def kill(self, timeout: float = STOP_GRACE_S) -> int | None:
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.popen.wait(timeout)
        return None

    def wait_exit(self, timeout: float) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.popen.wait(timeout)
        return None

    def close(self) -> None:
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._reader.join(1.0)
        with contextlib.suppress(OSError):
            self._log.close()


_LIVE: set[Procs] = set()


class Procs:
    """Starts the gateway and AutoGen processes for one test; :meth:`close` stops them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Proc] = []
        self.gateway_proc: Proc | None = None
        _LIVE.add(self)

    def start(self, name: str, argv: Sequence[str], *, stdin: bool = False) -> Proc:
        log = self.log_dir / f"{len(self.started):02d}-{name}.stderr.log"
        proc = Proc(name, argv, log, stdin=stdin)
        self.started.append(proc)
        return proc

    # -- the pieces -----------------------------------------------------------------------

    def gateway(self, *args: str, timeout: float = START_TIMEOUT_S) -> str:
        """Start the gateway; returns ``127.0.0.1:PORT`` from its listening line."""
        argv = [*gateway_command(), "--host", "127.0.0.1", "--port", "0", *args]
        proc = self.start("gateway", argv)
        self.gateway_proc = proc
        match = proc.wait_line(LISTENING.match, timeout, "'labkit gateway listening on ...'")
        address, port = match.group(1), int(match.group(2))
        assert port != 0, f"the gateway printed port 0\n{proc.describe()}"
        return address

    def worker(
        self,
        name: str,
        address: str,
        *types: str,
        sub: Iterable[str] = (),
        prefix_sub: Iterable[str] = (),
        delay_ms: float = 0.0,
        wait_ready: bool = True,
    ) -> Proc:
        """An AutoGen worker hosting ``types``; ``sub``/``prefix_sub`` are ``X=AGENT_TYPE``."""
        argv = [sys.executable, str(WORKER_SCRIPT), "serve", "--host", address, "--name", name]
        for agent_type in types:
            argv += ["--type", agent_type]
        for pair in sub:
            argv += ["--sub", pair]
        for pair in prefix_sub:
            argv += ["--prefix-sub", pair]
        if delay_ms:
            argv += ["--delay-ms", str(delay_ms)]
        proc = self.start(name, argv)
        if wait_ready:
            proc.ready = proc.wait_event("ready", READY_TIMEOUT_S)
        return proc

    def caller(
        self,
        name: str,
        address: str,
        target: str,
        *,
        keys: Sequence[str] | None = None,
        count: int | None = None,
        repeat: int = 1,
        timeout: float = 15.0,
        wait_go: bool = False,
    ) -> Proc:
        """An AutoGen runtime sending RPCs to ``target``; with ``wait_go`` it sends them only
        after a line on its stdin (``proc.send("go\\n")``)."""
        argv = [sys.executable, str(WORKER_SCRIPT), "call", "--host", address, "--name", name]
        argv += ["--target", target, "--repeat", str(repeat), "--timeout", str(timeout)]
        argv += ["--keys", ",".join(keys)] if keys is not None else ["--count", str(count)]
        if wait_go:
            argv.append("--wait-go")
        proc = self.start(name, argv, stdin=True)
        proc.ready = proc.wait_event("ready", READY_TIMEOUT_S)
        return proc

    def publisher(
        self,
        name: str,
        address: str,
        *,
        topics: Sequence[str],
        source: str,
        count: int,
        noise_topics: Sequence[str] = (),
    ) -> Proc:
        argv = [sys.executable, str(WORKER_SCRIPT), "publish", "--host", address, "--name", name]
        for topic in topics:
            argv += ["--topic", topic]
        for topic in noise_topics:
            argv += ["--noise-topic", topic]
        argv += ["--source", source, "--count", str(count)]
        proc = self.start(name, argv, stdin=True)
        proc.ready = proc.wait_event("ready", READY_TIMEOUT_S)
        return proc

    # -- diagnostics and teardown ---------------------------------------------------------

    def explain(self, message: str) -> str:
        """``message`` followed by every process's recent output, for assertion messages."""
        return "\n".join([message, *(proc.describe() for proc in self.started)])

    def close(self) -> None:
        """SIGTERM every process group, wait up to 5 s in all, SIGKILL whatever is left."""
        _LIVE.discard(self)
        procs = list(reversed(self.started))
        for proc in procs:
            if proc.alive:
                proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in procs:
            proc.wait_exit(max(0.0, deadline - time.monotonic()))
        for proc in procs:
            # Also reaches a group's other members, if the leader started any.
            proc.signal_group(signal.SIGKILL)
            proc.wait_exit(STOP_GRACE_S)
            proc.close()


@atexit.register
def _close_leftovers() -> None:  # last resort if a fixture never got to tear down
    for procs in list(_LIVE):
        procs.close()


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, procs: Procs | None = None
) -> None:
    """Poll ``condition`` until true; fails after ``timeout`` s with the processes' output."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout:g} s waiting for {what}"
            raise AssertionError(procs.explain(message) if procs else message)
        time.sleep(0.05)


def caller_results(
    proc: Proc, expected: int, timeout: float, procs: Procs | None = None
) -> list[dict[str, Any]]:
    """Wait for a caller's ``done`` line; returns its ``result`` records (exactly ``expected``)."""
    try:
        proc.wait_event("done", timeout)
    except AssertionError as exc:
        raise AssertionError(procs.explain(str(exc)) if procs else str(exc)) from None
    results = proc.records("result")
    assert len(results) == expected, (
        procs.explain(f"{proc.name}: {len(results)} results, expected {expected}")
        if procs
        else f"{proc.name}: {len(results)} results, expected {expected}"
    )
    return results
