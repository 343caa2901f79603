"""LiveSession: a live fleet kept up between runs, from a notebook or a script. Starts and stops,
runs in the simulator's schema (each run on its own), restores the fleet its faults disturbed,
and leaves no process behind however it ends: close, an exception in the ``with`` body, an
interrupt or a timeout during a run, a forgotten handle, interpreter exit."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from labkit.errors import LabkitError
from labkit.live.session import LiveSession, _Runtime, _same, host_load, pid_alive
from labkit.scenario import load_scenario
from labkit.sim import simulate

pytestmark = pytest.mark.timeout(180)


def small(tmp_path: Path, **extra: Any) -> Path:
    data: dict[str, Any] = {
        "name": "session_small",
        "seed": 5,
        "duration_s": 3,
        "warmup_s": 0.5,
        "workers": {
            "count": 3,
            "concurrency": 2,
            "service_time": {"dist": "exponential", "mean_ms": 5},
        },
        "workload": {"arrival": {"process": "poisson", "rate_rps": 120}, "keys": {"count": 50}},
        "gateway": {"timeout_ms": 2000, "retries": {"max_attempts": 2, "base_ms": 1}},
        "balancer": {"strategy": "round_robin"},
    }
    data.update(extra)
    path = tmp_path / "session_small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_start_inspect_and_close(tmp_path: Path) -> None:
    session = LiveSession(load_scenario(small(tmp_path)))
    assert not session.started and session.pids == []
    with session as live:
        assert live is session and live.started and not live.closed
        host, port = live.address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        assert live.workers == ["w-0", "w-1", "w-2"]
        stats = live.stats()
        assert set(stats.index) >= {"w-0", "w-1", "w-2"}
        assert (stats.loc[live.workers, "health"] == "healthy").all()
        procs = live.processes()
        assert list(procs["name"]) == ["gateway", "w-0", "w-1", "w-2"]
        assert procs["running"].all() and len(live.alive_pids()) == 4
        assert "rpc_requests" in live.counters()
        assert "running" in repr(live)
    assert session.closed and "closed" in repr(session)
    assert session.alive_pids() == [] and not any(pid_alive(p) for p in session.pids)
    assert not session.processes()["running"].any()
    session.close()  # idempotent
    with pytest.raises(LabkitError, match="closed"):
        session.run()
    with pytest.raises(LabkitError, match="already started"):
        session.start()


def test_runs_in_the_simulators_schema_each_on_its_own(tmp_path: Path) -> None:
    sc = load_scenario(small(tmp_path))
    with LiveSession(sc) as live:
        first = live.run()
        second = live.run("workload.arrival.rate_rps=60", "seed=6")
        pids = live.pids
    sim = simulate(sc)
    assert first.summary["driver"] == "live"
    assert list(first.records.columns) == list(sim.records.columns)
    assert set(first.workers.columns) == set(sim.workers.columns)
    # the same seeded arrivals as the simulator
    assert len(first.records) == len(sim.records)
    assert first.records["arrival_s"].to_numpy() == pytest.approx(
        sim.records["arrival_s"].to_numpy()
    )
    other = simulate(load_scenario(small(tmp_path), ["workload.arrival.rate_rps=60", "seed=6"]))
    assert len(second.records) == len(other.records)
    for res in (first, second):
        assert res.summary["requests"]["completed"] == res.summary["requests"]["offered"]
        assert int(res.workers["served"].sum()) == len(res.records)
        assert len(res.timing) == len(res.records)
        # the gateway's counters are this run's, not the fleet's since it started
        counters = res.summary["live"]["gateway_counters"]
        assert counters["rpc_requests"] == res.summary["live"]["sent"]
        assert (
            int(res.workers["received"].sum())
            == res.summary["live"]["sent"] + (counters["rpc_retries"])
        )
    assert first.summary["live"]["gateway"] == second.summary["live"]["gateway"]
    assert len(pids) == 4  # one fleet for both runs
    assert not any(pid_alive(p) for p in pids)


def test_the_fleet_is_restored_after_a_run_with_faults(tmp_path: Path) -> None:
    path = small(
        tmp_path,
        faults=[
            {"kind": "crash", "at_s": 1, "workers": ["w-1"]},  # not restarted within the run
            {"kind": "flaky", "at_s": 0.5, "workers": ["w-2"], "error_rate": 1.0},  # to the end
        ],
    )
    with LiveSession(load_scenario(path)) as live:
        faulted = live.run()
        # every reply of w-2 became an error (retried elsewhere), counted for this run
        assert faulted.workers.set_index("worker").loc["w-2", "errors"] > 0
        assert not live.processes().set_index("name").loc["w-1", "running"]
        clean = live.run("faults=[]")
        procs = live.processes()
        pids = live.pids
    # w-1 was started again before the second run, and w-2 is no longer flaky
    assert list(procs["name"]).count("w-1") == 2 and procs["running"].sum() == 4
    assert clean.summary["requests"]["failed"] == 0
    assert clean.workers["errors"].sum() == 0
    assert (clean.workers.set_index("worker")["served"] > 0).all()
    assert not any(pid_alive(p) for p in pids)


def test_no_orphans_when_the_body_raises(tmp_path: Path) -> None:
    sc = load_scenario(small(tmp_path))
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="boom"), LiveSession(sc) as live:
        pids = live.pids
        assert len(live.alive_pids()) == 4
        raise RuntimeError("boom")
    assert pids and not any(pid_alive(p) for p in pids)


def test_an_interrupt_during_a_run_closes_the_session(tmp_path: Path) -> None:
    """What a Jupyter kernel interrupt does: a SIGINT to the process mid-run (whichever thread
    the kernel delivers it to, the main thread raises KeyboardInterrupt)."""
    live = LiveSession(load_scenario(small(tmp_path, duration_s=60))).start()
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            live.run()
    finally:
        timer.cancel()
    assert live.closed and live.alive_pids() == []


def test_a_run_is_bounded_in_time(tmp_path: Path) -> None:
    live = LiveSession(load_scenario(small(tmp_path, duration_s=60))).start()
    with pytest.raises(LabkitError, match="did not finish within 1 s"):
        live.run(timeout_s=1)
    assert live.closed and live.alive_pids() == []


def test_a_forgotten_handle_is_cleaned_up_when_collected(tmp_path: Path) -> None:
    live = LiveSession(load_scenario(small(tmp_path))).start()
    pids = live.pids
    assert all(pid_alive(p) for p in pids)
    del live
    gc.collect()
    assert not any(pid_alive(p) for p in pids)


def test_a_session_left_open_at_interpreter_exit_leaves_nothing(tmp_path: Path) -> None:
    path = small(tmp_path)
    code = (
        "import json\n"
        "from labkit.live.session import LiveSession\n"
        "from labkit.scenario import load_scenario\n"
        f"live = LiveSession(load_scenario({str(path)!r})).start()\n"
        "print(json.dumps(live.pids), flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    pids = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(pids) == 4
    assert not any(pid_alive(p) for p in pids)


def test_refusals_leave_the_fleet_up(tmp_path: Path) -> None:
    sc = load_scenario(small(tmp_path))
    with pytest.raises(LabkitError, match="simulator-only"):
        LiveSession(load_scenario(small(tmp_path), ["batching.max_batch=4"]))
    with LiveSession(sc) as live:
        with pytest.raises(LabkitError, match="workers: the running fleet"):
            live.run("workers.concurrency=4")
        with pytest.raises(LabkitError, match="balancer"):
            live.run(scenario=load_scenario(small(tmp_path), ["balancer.strategy=p2c"]))
        with pytest.raises(LabkitError, match="closed loop"):
            live.run("workload.arrival={process: closed, clients: 4}")
        assert not live.closed and len(live.alive_pids()) == 4


def test_overrides_of_the_fleet_reach_the_processes(tmp_path: Path) -> None:
    """The processes read a file: a session started with overrides of the fleet's sections
    gives them a resolved copy, so the workers really serve with the overridden settings."""
    sc = load_scenario(small(tmp_path), ["workers.service_time.mean_ms=40"])
    with LiveSession(sc) as live:
        res = live.run("duration_s=2", "workload.arrival.rate_rps=40")
    service = res.timing["service_ms"].mean()
    assert service > 20  # 40 ms mean; the file says 5


def test_same_tolerates_float_drift_only() -> None:
    assert _same({"a": [0.30000000000000004, 1]}, {"a": [0.3, 1.0]})
    assert not _same({"a": 0.3}, {"a": 0.31})
    assert not _same({"a": 1}, {"b": 1})
    assert not _same([1, 2], [1, 2, 3])
    assert not _same(True, 1.0)


def test_host_load_reports_the_load_average_and_cores() -> None:
    load, cores = host_load()
    assert load >= 0 and cores >= 1
    assert not pid_alive(2**22 + 12345)  # above any pid this machine hands out


def test_a_close_cut_short_is_completed_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second Ctrl-C during close leaves processes up; the next close() (or the finalizer
    at exit) finishes the job, and no new run is accepted meanwhile."""
    live = LiveSession(load_scenario(small(tmp_path))).start()
    sup = live._runtime.sup  # type: ignore[union-attr]
    real_close = sup.close
    calls: list[int] = []

    def interrupted_once() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        real_close()

    monkeypatch.setattr(sup, "close", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        live.close()
    assert live.closed and len(live.alive_pids()) == 4
    with pytest.raises(LabkitError, match="closed"):
        live.run()
    live.close()
    assert len(calls) == 2 and live.alive_pids() == []


def test_a_close_on_the_sessions_own_thread_ends_the_thread() -> None:
    """The finalizer of a handle collected by the cyclic GC runs on whichever thread triggered
    the collection, possibly the session's own: its thread must still end and its loop close."""
    runtime = _Runtime()
    runtime.loop.call_soon_threadsafe(runtime.close)
    runtime.thread.join(STOP_WAIT_S)
    assert not runtime.thread.is_alive() and runtime.loop.is_closed()
    assert not runtime.tmp.exists()
    runtime.close()  # and again from here: nothing left to do


#: how long a test waits for a thread that should end at once (a bound, not a measurement)
STOP_WAIT_S = 10.0
