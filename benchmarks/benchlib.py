"""Small pieces the benchmarks share: medians, table cells, JSON lines, child processes, RSS.

Benchmarks run as scripts (``python benchmarks/bench_x.py``), so this module is imported from
the script's own directory, not from the labkit package: it is benchmark-only code.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import traceback
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, NoReturn


def median(values: list[Any]) -> float | None:
    """The median of the values that were measured (None for a failed repeat is skipped)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def write_json(payload: dict[str, Any], dest: str, indent: int | None = None) -> None:
    """JSON on stdout (``dest == "-"``) or into the file ``dest``: one line, or indented."""
    line = json.dumps(payload, indent=indent)
    if dest == "-":
        print(line)
        return
    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(line + "\n", encoding="utf-8")
    print(f"wrote {path}")


def emit(**fields: Any) -> None:
    """One JSON line on stdout: how a benchmark's child processes report to their parent."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def run_child(main: Coroutine[Any, Any, None]) -> NoReturn:
    """Run a child process's asyncio ``main``, report a crash as a ``fatal`` line, and exit
    without interpreter teardown (grpc's threads can delay a normal exit)."""
    import asyncio

    status = 0
    try:
        asyncio.run(main)
    except BaseException as exc:
        emit(event="fatal", error=f"{type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def peak_rss_mb() -> float:
    """This process's peak resident set in MB.

    On Linux ``VmHWM`` is read from /proc: ``getrusage`` would also count the parent's peak,
    which a forked child inherits and keeps across exec.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # KiB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, else KiB


def sim_environment() -> dict[str, Any]:
    """The simulator benchmarks' header: the machine, Python, SimPy, and which labkit build ran
    (pure Python or the compiled one), so figures from the two builds cannot be mixed up."""
    import platform

    import simpy

    from labkit._compiled import is_compiled

    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "simpy": simpy.__version__,
        "platform": platform.platform(),
        "labkit_build": "mypyc" if is_compiled() else "pure Python",
    }


def environment_line(env: dict[str, Any]) -> str:
    return (
        f"cpu_count={env['cpu_count']}  Python {env['python']}  SimPy {env['simpy']}  "
        f"labkit {env['labkit_build']}  ({env['platform']})"
    )
