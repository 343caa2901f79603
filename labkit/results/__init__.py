"""One results schema for both drivers: records, time series, per-worker table, summary."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from labkit.core.alerts import AlertManager
from labkit.results.consistency import DataResults
from labkit.results.frames import events_frame, faults_frame
from labkit.results.records import RecordLog
from labkit.results.recovery import recovery_summary, recovery_table, slo_summary
from labkit.results.summary import summarize, timeseries
from labkit.scenario import Scenario

__all__ = ["RecordLog", "Results", "build_results"]

SCHEMA_VERSION = 3

#: columns of ``Results.alerts`` (one row per alert firing)
ALERT_COLUMNS = [
    "name",
    "severity",
    "group",
    "fired_at",
    "resolved_at",
    "value",
    "peak",
    "escalated",
    "escalated_at",
    "silenced",
    "duplicate",
    "notified",
    "pending_since",
]


@dataclass
class Results:
    """What a run produced. ``summary`` is exactly what ``summary.json`` holds."""

    scenario: Scenario
    records: pd.DataFrame
    timeseries: pd.DataFrame
    workers: pd.DataFrame
    summary: dict[str, Any]
    samples: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: fault instances (see ``labkit.results.frames``)
    faults: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: detection and fault events: registry verdicts, ejections, breakers, crashes, panics
    events: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: per worker per second: truth, registry verdict, gateway view
    health: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: one row per alert firing (``AlertManager.timeline``)
    alerts: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: one row per fault: detection, impact, recovery, cost (``labkit.results.recovery``)
    recovery: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: one row per state read or write (``labkit.results.consistency.STATE_COLUMNS``)
    state_ops: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: per second: cache reads and the share each layer served
    cache: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: adaptive batching: one row per controller decision (time, gateway, limit, p99)
    batching: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: live runs: per completed request, latency and the worker's own timing (for calibration)
    timing: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: per worker per heartbeat: the load report (utilization over the interval, active requests)
    load_reports: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def latency_ms(self) -> dict[str, float | None]:
        return self.summary["latency_ms"]

    def summary_frame(self) -> pd.DataFrame:
        """The headline numbers as a two-column table (for notebooks and the report)."""
        s = self.summary
        rows: list[tuple[str, Any]] = [
            ("scenario", s["scenario"]["name"]),
            ("driver", s["driver"]),
            ("strategy", s["scenario"]["balancer"]["strategy"]),
            ("seed", s["seed"]),
        ]
        rows += [(f"requests.{k}", v) for k, v in s["requests"].items()]
        rows += [("throughput_rps", s["throughput_rps"]), ("error_rate", s["error_rate"])]
        rows += [(f"latency_ms.{k}", v) for k, v in s["latency_ms"].items()]
        return pd.DataFrame(rows, columns=["metric", "value"]).set_index("metric")

    def write(self, out_dir: str | Path, *, report: bool = True) -> dict[str, Path]:
        """Write summary.json, the tables, and (by default) the PNG plots and report.html."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "summary": out / "summary.json",
            "records": out / "records.parquet",
            "timeseries": out / "timeseries.csv",
            "workers": out / "workers.csv",
        }
        tables = {
            "faults": self.faults,
            "events": self.events,
            "alerts": self.alerts,
            "recovery": self.recovery,
        }
        paths["summary"].write_text(
            json.dumps(self.summary, indent=2, default=_json_default) + "\n"
        )
        self.records.to_parquet(paths["records"], index=False)
        self.timeseries.to_csv(paths["timeseries"], index=False)
        self.workers.to_csv(paths["workers"], index=False)
        if not self.cache.empty:
            tables["cache"] = self.cache
        if not self.batching.empty:
            tables["batching"] = self.batching
        if not self.timing.empty:
            tables["timing"] = self.timing
        for name, table in tables.items():
            if not table.empty:
                paths[name] = out / f"{name}.csv"
                table.to_csv(paths[name], index=False)
        if not self.health.empty and not self.faults.empty:
            paths["health"] = out / "health.parquet"
            self.health.to_parquet(paths["health"], index=False)
        if not self.load_reports.empty:
            paths["load_reports"] = out / "load_reports.parquet"
            self.load_reports.to_parquet(paths["load_reports"], index=False)
        if not self.state_ops.empty:
            paths["state_ops"] = out / "state_ops.parquet"
            self.state_ops.to_parquet(paths["state_ops"], index=False)
        if report:
            from labkit.report import write_report

            paths.update(write_report(self, out))
        return paths


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def build_results(
    scenario: Scenario,
    log: RecordLog,
    *,
    driver: str,
    agent_types: list[str],
    worker_names: list[str],
    workers: pd.DataFrame,
    samples: pd.DataFrame | None = None,
    extra: dict[str, Any] | None = None,
    faults: pd.DataFrame | None = None,
    events: pd.DataFrame | None = None,
    health: pd.DataFrame | None = None,
    alerts: AlertManager | None = None,
    data: DataResults | None = None,
) -> Results:
    """Turn a driver's raw output into the shared schema.

    With faults, ``summary["faults"]`` holds one recovery record per fault; ``summary["slo"]``
    the run's error-budget figures; ``summary["alerts"]`` the alert counts (None without an
    alert manager).
    """
    records = log.frame(agent_types=agent_types, workers=worker_names, warmup_s=scenario.warmup_s)
    series = timeseries(records, scenario.duration_s)
    if samples is not None and not samples.empty:
        per_second = samples.groupby((samples["t_s"] // 1.0).astype(int))["in_flight"].mean()
        series["in_flight"] = per_second.reindex(range(len(series))).to_numpy()
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "driver": driver,
        "scenario": scenario.to_dict(),
        "seed": scenario.seed,
        "source": scenario.source,
    }
    summary.update(
        summarize(
            records,
            duration_s=scenario.duration_s,
            warmup_s=scenario.warmup_s,
            workers=workers,
            extra=extra,
        )
    )
    faults = faults if faults is not None else faults_frame(())
    events = events if events is not None else events_frame(())
    alert_rows = pd.DataFrame(alerts.timeline(), columns=ALERT_COLUMNS) if alerts else None
    summary["slo"] = slo_summary(
        records, scenario.slo, warmup_s=scenario.warmup_s, duration_s=scenario.duration_s
    )
    summary["alerts"] = alerts.counts() if alerts is not None else None
    recovery = recovery_table(
        records,
        faults,
        events,
        alert_rows,
        slo=scenario.slo,
        config=scenario.recovery,
        warmup_s=scenario.warmup_s,
        duration_s=scenario.duration_s,
    )
    summary["faults"] = recovery_summary(recovery)
    return Results(
        scenario,
        records,
        series,
        workers,
        summary,
        samples if samples is not None else pd.DataFrame(),
        faults=faults,
        events=events,
        health=health if health is not None else pd.DataFrame(),
        alerts=alert_rows if alert_rows is not None else pd.DataFrame(columns=ALERT_COLUMNS),
        recovery=recovery,
        state_ops=data.state_ops if data is not None else pd.DataFrame(),
        cache=data.cache if data is not None else pd.DataFrame(),
        batching=data.batching if data is not None else pd.DataFrame(),
    )
