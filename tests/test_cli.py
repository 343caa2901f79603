"""The command line as a user meets it (run in a subprocess, as a shell would)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def labkit(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labkit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"},
    )


def test_help_lists_commands() -> None:
    out = labkit("--help")
    assert out.returncode == 0
    assert "run" in out.stdout and "validate" in out.stdout and "--set" in out.stdout


def test_run_writes_summary_tables_and_report(tmp_path: Path) -> None:
    out = labkit(
        "run",
        "scenarios/quickstart.yaml",
        "--set",
        "duration_s=8",
        "--set",
        "warmup_s=2",
        "--out",
        str(tmp_path / "qs"),
    )
    assert out.returncode == 0, out.stderr
    assert "latency ms" in out.stdout and "p99" in out.stdout
    summary = json.loads((tmp_path / "qs" / "summary.json").read_text())
    req = summary["requests"]
    assert req["offered"] == req["completed"] + req["failed"] + req["rejected"] + req["timed_out"]
    assert summary["scenario"]["name"] == "quickstart"
    assert summary["scenario"]["duration_s"] == 8
    assert summary["seed"] == 7
    for name in (
        "records.parquet",
        "timeseries.csv",
        "workers.csv",
        "report.html",
        "latency_percentiles.png",
    ):
        assert (tmp_path / "qs" / name).stat().st_size > 0


def test_seed_option_changes_the_run(tmp_path: Path) -> None:
    a = labkit(
        "run",
        "scenarios/quickstart.yaml",
        "--set",
        "duration_s=3",
        "--set",
        "warmup_s=1",
        "--seed",
        "1",
        "--no-report",
        "-q",
        "--out",
        str(tmp_path / "a"),
    )
    assert a.returncode == 0, a.stderr
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["seed"] == 1
    assert not (tmp_path / "a" / "report.html").exists()


def test_bad_scenario_is_one_line_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nduration_s: 10\nworkload:\n  arrival: {rate_rps: 5}\nworkers:\n  count: -3\n"
    )
    for command in (("validate", str(bad)), ("run", str(bad))):
        out = labkit(*command)
        assert out.returncode == 2
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        assert lines[0] == f"error: {bad}:6: workers.count: must be >= 1, got -3"
        assert "Traceback" not in out.stderr


def test_missing_file_and_bad_override(tmp_path: Path) -> None:
    out = labkit("run", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "no such scenario file" in out.stderr
    out = labkit("run", "scenarios/quickstart.yaml", "--set", "balancer.strategy=fastest")
    assert out.returncode == 2
    assert "balancer.strategy: unknown value 'fastest'" in out.stderr
    assert "Traceback" not in out.stderr


def test_validate_all_shipped_scenarios() -> None:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "scenarios").glob("*.yaml"))
    out = labkit("validate", *files)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("ok: ") == len(files)


@pytest.mark.timeout(120)
def test_live_writes_the_same_kind_of_report_as_run(tmp_path: Path) -> None:
    out = labkit(
        "live",
        "scenarios/live_small.yaml",
        "--set",
        "duration_s=8",
        "--set",
        "workload.arrival.rate_rps=100",
        "--out",
        str(tmp_path / "live"),
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "live" / "summary.json").read_text())
    assert summary["driver"] == "live"
    assert summary["scenario"]["duration_s"] == 8  # --set reached the processes' scenario
    req = summary["requests"]
    assert req["completed"] == req["offered"] > 0
    for name in ("records.parquet", "timeseries.csv", "workers.csv", "timing.csv", "report.html"):
        assert (tmp_path / "live" / name).exists(), name
    assert "driver live" in out.stdout


def test_live_refuses_a_closed_loop_with_a_clear_error(tmp_path: Path) -> None:
    out = labkit(
        "live",
        "scenarios/closed_loop.yaml",
        "--set",
        "duration_s=2",
        "--set",
        "warmup_s=0",
        "--out",
        str(tmp_path / "c"),
    )
    assert out.returncode != 0
    assert out.stderr.startswith("error: ") and "open-loop" in out.stderr
    assert "Traceback" not in out.stderr


SWEEP_SMALL = (
    "--set",
    "duration_s=3",
    "--set",
    "warmup_s=1",
    "--grid",
    "balancer.strategy=round_robin,p2c",
    "--grid",
    "workload.arrival.rate_rps=500,1000",
)


@pytest.mark.timeout(180)
def test_sweep_runs_a_grid_on_a_local_cluster(tmp_path: Path) -> None:
    out = labkit(
        "sweep", "scenarios/quickstart.yaml", *SWEEP_SMALL, "--repeats", "2", "--workers", "2",
        "--out", str(tmp_path / "sw"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "4 grid point(s) x 2 repeat(s) = 8 runs, base seed 7" in out.stderr
    assert "8/8 runs" in out.stderr  # the progress bar
    assert "p99 ms" in out.stdout and "8 runs on tcp://127.0.0.1:" in out.stdout
    assert "(2 workers)" in out.stdout and "0 failed" in out.stdout
    for name in ("sweep.parquet", "sweep_summary.csv", "sweep.json", "report.html"):
        assert (tmp_path / "sw" / name).stat().st_size > 0
    assert (tmp_path / "sw" / "curve_p99_ms.png").exists()
    assert (tmp_path / "sw" / "heatmap_p99_ms.png").exists()


def test_sweep_checks_every_value_before_running(tmp_path: Path) -> None:
    out = labkit(
        "sweep", "scenarios/quickstart.yaml", "--grid", "balancer.strategy=p2c,fastest",
        "--out", str(tmp_path / "sw"),
    )  # fmt: skip
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(
        "error: scenarios/quickstart.yaml:27: balancer.strategy: unknown value 'fastest'"
    )
    assert not (tmp_path / "sw").exists()
    out = labkit("sweep", "scenarios/quickstart.yaml", "--grid", "seed=1,2")
    assert out.returncode == 2 and "--repeats" in out.stderr and "Traceback" not in out.stderr
    out = labkit(
        "sweep", "scenarios/quickstart.yaml", "--grid", "balancer.strategy=p2c",
        "--workers", "2", "--scheduler", "tcp://127.0.0.1:1",
    )  # fmt: skip
    assert out.returncode == 2 and "drop --workers" in out.stderr


def test_sweep_records_a_failed_run_and_exits_1(tmp_path: Path) -> None:
    # a file where run p001-r00 must write its records: that run fails, the others do not
    (tmp_path / "sw" / "runs").mkdir(parents=True)
    (tmp_path / "sw" / "runs" / "p001-r00").write_text("in the way")
    out = labkit(
        "sweep", "scenarios/quickstart.yaml", *SWEEP_SMALL, "--serial", "--keep-records",
        "--no-report", "--out", str(tmp_path / "sw"),
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "run failed (balancer.strategy=round_robin, workload.arrival.rate_rps=1000" in out.stderr
    assert "error: 1 of 4 runs failed" in out.stderr
    frame = pd.read_parquet(tmp_path / "sw" / "sweep.parquet")
    assert frame["status"].tolist() == ["ok", "failed", "ok", "ok"]
    assert "FileExistsError" in frame.loc[1, "error"]
    assert (tmp_path / "sw" / "runs" / "p003-r00" / "records.parquet").exists()
