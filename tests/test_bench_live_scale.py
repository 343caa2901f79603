"""benchmarks/bench_live_scale.py's machinery on a tiny fleet (2 workers, 4 callers in 2
processes, 1 s windows): it runs both phases, reports the figures, and leaves no process behind,
whether it ends normally or is interrupted. Nothing here asserts on time."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit.live.trace import SEGMENTS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_live_scale.py"
TINY = ["--callers", "4", "--workers", "2", "--caller-procs", "2", "--repeats", "1"]
TINY += ["--seconds", "1", "--warmup", "0.3"]

pytestmark = pytest.mark.timeout(180)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _all_gone(pids: list[int], within_s: float = 10.0) -> list[int]:
    end = time.monotonic() + within_s
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < end:
        time.sleep(0.1)
        left = [p for p in left if _alive(p)]
    return left


def test_tiny_run_reports_and_tears_down(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "saturation req/s" in done.stdout and "target (p95 added latency" in done.stdout
    data = json.loads(out.read_text())
    assert data["callers"] == 4 and data["workers"] == 2 and data["caller_procs"] == 2
    assert data["errors"] == 0, data["rows"]
    sat, half = data["rows"]["closed"], data["rows"]["open 0.5"]
    assert sat["throughput_rps"] > 0 and half["rate_rps"] == pytest.approx(
        sat["throughput_rps"] / 2
    )
    for q in ("p50", "p95", "p99"):
        assert half["added_ms"][q] is not None
    run = data["runs"]["open 0.5"][0]
    assert run["samples"] > 0 and run["per_worker_rpcs"]["max"] > 0
    assert set(run["cpu_pct"]) == {"gateway", "workers", "callers", "other"}
    pids = data["pids"]["fleet"] + data["pids"]["callers"]
    assert len(data["pids"]["fleet"]) == 3 and len(data["pids"]["callers"]) == 2
    assert data["left_behind"] == []
    assert _all_gone(pids) == []
    # where the latency went: every traced segment measured, the gateway's own share in it
    segments = data["segments_ms_at_half"]
    assert set(segments) == {*SEGMENTS, "gateway, both ways", "four hops"}
    assert all(segments[name]["p95"] is not None for name in segments)
    assert segments["gateway, both ways"]["p50"] <= half["added_ms"]["p50"]
    assert 0 < data["floor_round_trip_ms"]["p50"] <= data["floor_round_trip_ms"]["p99"]


def test_workers_hosted_in_fewer_processes_all_serve_and_are_torn_down(tmp_path: Path) -> None:
    out = tmp_path / "packed.json"
    argv = [*TINY, "--workers", "3", "--worker-procs", "1", "--fractions", "0.5"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *argv, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 labkit workers in 1 processes" in done.stdout
    data = json.loads(out.read_text())
    assert data["workers"] == 3 and data["worker_procs"] == 1 and data["errors"] == 0
    assert len(data["pids"]["fleet"]) == 2  # the gateway and one process hosting 3 workers
    spread = data["runs"]["closed"][0]["per_worker_rpcs"]
    assert spread["min"] > 0 and spread["idle_workers"] == 0  # every hosted worker served
    assert data["left_behind"] == []
    assert _all_gone(data["pids"]["fleet"] + data["pids"]["callers"]) == []


def test_interrupt_mid_run_leaves_nothing(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *TINY, "--seconds", "30"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    pids: list[int] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the script names its processes once they are all up
            found = re.match(r"\s*pids: fleet ([\d ]+) callers ([\d ]+)", line)
            if found:
                pids = [int(p) for p in (found[1] + " " + found[2]).split()]
                break
        assert len(pids) == 5, "the script never reported its processes"
        assert all(_alive(p) for p in pids)
        time.sleep(0.5)  # inside the saturation phase
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C
        proc.communicate(timeout=60)
        assert proc.returncode != 0
        assert _all_gone(pids) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
