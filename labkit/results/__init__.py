"""One results schema for both drivers: records, time series, per-worker table, summary."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from labkit.results.records import RecordLog
from labkit.results.summary import summarize, timeseries
from labkit.scenario import Scenario

__all__ = ["RecordLog", "Results", "build_results"]

SCHEMA_VERSION = 1


@dataclass
class Results:
    """What a run produced. ``summary`` is exactly what ``summary.json`` holds."""

    scenario: Scenario
    records: pd.DataFrame
    timeseries: pd.DataFrame
    workers: pd.DataFrame
    summary: dict[str, Any]
    samples: pd.DataFrame = field(default_factory=pd.DataFrame)

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
        paths["summary"].write_text(
            json.dumps(self.summary, indent=2, default=_json_default) + "\n"
        )
        self.records.to_parquet(paths["records"], index=False)
        self.timeseries.to_csv(paths["timeseries"], index=False)
        self.workers.to_csv(paths["workers"], index=False)
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
) -> Results:
    """Turn a driver's raw output into the shared schema."""
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
    return Results(
        scenario,
        records,
        series,
        workers,
        summary,
        samples if samples is not None else pd.DataFrame(),
    )
