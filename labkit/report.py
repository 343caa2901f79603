"""The run report: PNG plots plus a self-contained ``report.html``, and a terminal summary.

``write_report`` is what ``Results.write`` (and so the CLI) calls after a run; ``format_summary``
turns ``summary.json`` into the few lines the CLI prints.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import yaml

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from labkit.results import Results

__all__ = ["FAILURE_PLOTS", "PLOTS", "format_summary", "write_report"]

STATUSES = ("completed", "failed", "rejected", "timed_out")
LATENCY_KEYS = (
    ("mean", "mean"),
    ("p50", "p50"),
    ("p90", "p90"),
    ("p95", "p95"),
    ("p99", "p99"),
    ("p999", "p99.9"),
    ("max", "max"),
)


def _plot(name: str) -> Callable[[Results], Figure]:
    def draw(results: Results) -> Figure:
        from labkit import plots

        return getattr(plots, name)(results)

    return draw


#: file stem → (caption, function drawing it); the order of the report
PLOTS: dict[str, tuple[str, Callable[[Results], Figure]]] = {
    "latency_percentiles": ("Latency percentiles", _plot("latency_percentiles")),
    "latency_cdf": ("Latency distribution", _plot("latency_cdf")),
    "percentiles_over_time": ("Latency and throughput over time", _plot("percentiles_over_time")),
    "outcomes_over_time": ("Outcomes over time", _plot("outcomes_over_time")),
    "worker_load": ("Worker load", _plot("worker_load")),
}


def _recovery_timeline(results: Results) -> Figure:
    from labkit import plots

    return plots.recovery_timeline(
        results.timeseries,
        results.faults,
        recovery=results.recovery,
        alerts=results.alerts,
        warmup_s=results.scenario.warmup_s,
        title=f"{results.scenario.name}: failure recovery",
    )


def _health_heatmap(results: Results) -> Figure:
    from labkit import plots

    return plots.health_heatmap(results.health, results.faults)


#: drawn only for runs with faults; they lead the report, being what such a run is about
FAILURE_PLOTS: dict[str, tuple[str, Callable[[Results], Figure]]] = {
    "recovery_timeline": ("Failure recovery", _recovery_timeline),
    "health_heatmap": ("Worker health as the routing layer saw it", _health_heatmap),
}

DPI = 100


def _use_agg_unless_chosen() -> None:
    """Render headless with Agg, unless the user already picked a backend.

    A backend counts as chosen when pyplot is already imported, ``MPLBACKEND`` is set (Jupyter
    kernels set it for the inline backend) or a matplotlibrc / ``matplotlib.use`` named one.
    """
    if "matplotlib.pyplot" in sys.modules or os.environ.get("MPLBACKEND"):
        return
    get_backend_or_none = getattr(matplotlib.rcParams, "_get_backend_or_none", None)
    if get_backend_or_none is not None and get_backend_or_none() is not None:
        return
    matplotlib.use("Agg")


def _close(fig: Figure) -> None:
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:  # only matters if the figure was made through pyplot
        pyplot.close(fig)
    fig.clear()


def _plots_for(results: Results) -> dict[str, tuple[str, Callable[[Results], Figure]]]:
    if results.faults is not None and not results.faults.empty:
        return {**FAILURE_PLOTS, **PLOTS}
    return PLOTS


def write_report(results: Results, out_dir: str | Path) -> dict[str, Path]:
    """Save the plots as PNG and a self-contained ``report.html`` into ``out_dir``.

    Returns file name stem → path for each PNG, plus ``"report"`` → ``out_dir/report.html``.
    """
    _use_agg_unless_chosen()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for stem, (_, draw) in _plots_for(results).items():
        fig = draw(results)
        try:
            path = out / f"{stem}.png"
            fig.savefig(path, dpi=DPI)
            paths[stem] = path
        finally:
            _close(fig)
    report = out / "report.html"
    report.write_text(_html(results.summary, paths), encoding="utf-8")
    paths["report"] = report
    return paths


# -- formatting --------------------------------------------------------------------------------


def _ms(value: Any) -> str:
    from labkit.plots import fmt_ms

    return fmt_ms(None if value is None else float(value))


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "-"


def _num(value: Any, spec: str = ",") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _scenario(summary: Mapping[str, Any]) -> Mapping[str, Any]:
    scenario = summary.get("scenario")
    return scenario if isinstance(scenario, Mapping) else {}


def _strategy(summary: Mapping[str, Any]) -> str:
    balancer = _scenario(summary).get("balancer")
    return str(balancer.get("strategy", "-")) if isinstance(balancer, Mapping) else "-"


def _notable_details(summary: Mapping[str, Any]) -> list[tuple[str, int]]:
    details = summary.get("details") or {}
    return [(k, int(v)) for k, v in details.items() if k != "ok" and v]


def format_summary(summary: Mapping[str, Any]) -> str:
    """A compact multi-line text summary of ``summary.json`` for the terminal."""
    scenario = _scenario(summary)
    requests = summary.get("requests") or {}
    offered = int(requests.get("offered", 0) or 0)
    lines = [
        f"scenario     {scenario.get('name', '-')}   "
        f"(driver {summary.get('driver', '-')}, strategy {_strategy(summary)}, "
        f"seed {summary.get('seed', '-')})"
    ]

    details = _notable_details(summary)
    width = max(len(k) for k in ("offered", *STATUSES, *(d for d, _ in details)))
    counts = [offered, *(int(requests.get(s, 0) or 0) for s in STATUSES), *(c for _, c in details)]
    cwidth = max(len(f"{c:,}") for c in counts)
    lines.append(f"requests     {'offered':<{width}}  {offered:>{cwidth},}")
    for status in STATUSES:
        n = int(requests.get(status, 0) or 0)
        lines.append(f"             {status:<{width}}  {n:>{cwidth},}  {_pct(n, offered):>7}")
    for i, (detail, n) in enumerate(details):
        head = "details" if i == 0 else ""
        lines.append(f"{head:<13}{detail:<{width}}  {n:>{cwidth},}  {_pct(n, offered):>7}")
    if summary.get("retries"):
        lines.append(f"retries      {summary['retries']:,}")

    throughput = f"throughput   {_num(summary.get('throughput_rps'), ',.1f')} req/s"
    if summary.get("offered_rps") is not None:
        throughput += f" (offered {_num(summary.get('offered_rps'), ',.1f')} req/s)"
    error_rate = summary.get("error_rate")
    throughput += f"   error rate {'-' if error_rate is None else f'{100 * error_rate:.2f}%'}"
    lines.append(throughput)

    rows = [("all", summary.get("latency_ms") or {})]
    by_kind = summary.get("latency_ms_by_kind") or {}
    if len(by_kind) > 1:
        rows += list(by_kind.items())
    cells = [[_ms(lat.get(key)) for key, _ in LATENCY_KEYS] for _, lat in rows]
    col = max(7, *(len(c) for row in cells for c in row))
    lines.append(
        f"{'latency ms':<13}{'':<8}" + "".join(f"{label:>{col + 1}}" for _, label in LATENCY_KEYS)
    )
    for (kind, _), row in zip(rows, cells, strict=True):
        lines.append(f"{'':<13}{kind:<8}" + "".join(f"{c:>{col + 1}}" for c in row))

    lines += _failure_lines(summary)

    per_worker = summary.get("per_worker") or {}
    if per_worker:
        util = per_worker.get("utilization") or {}
        text = f"workers      {_num(per_worker.get('count'))}"
        if util:
            text += (
                f"   utilization mean {_util(util.get('mean'))}  max {_util(util.get('max'))}"
                f"  min {_util(util.get('min'))}"
            )
        imbalance = per_worker.get("imbalance")
        if imbalance is not None:
            text += f"   imbalance {imbalance:.2f} (max/mean served)"
        lines.append(text)
    return "\n".join(lines)


def _util(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


# -- HTML --------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
.sub { color: #666; margin-top: 0; }
.tables { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
table { border-collapse: collapse; font-size: 0.92em; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3em; }
th, td { padding: 0.2em 0.8em; border-bottom: 1px solid #eee; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-weight: 600; margin-bottom: 0.4em; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }
summary { cursor: pointer; font-weight: 600; }
"""


def _table(
    caption: str,
    rows: list[tuple[Any, ...]],
    header: tuple[str, ...] = (),
    *,
    numeric: bool = True,
) -> str:
    parts = [f"<table><caption>{escape(caption)}</caption>"]
    if header:
        parts.append("<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        label, *values = row
        td = '<td class="n">' if numeric else "<td>"
        cells = "".join(f"{td}{escape(str(v))}</td>" for v in values)
        parts.append(f"<tr><th>{escape(str(label))}</th>{cells}</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def _html(summary: Mapping[str, Any], images: Mapping[str, Path]) -> str:
    scenario = _scenario(summary)
    name = str(scenario.get("name", "labkit run"))
    requests = summary.get("requests") or {}
    offered = int(requests.get("offered", 0) or 0)

    run_rows: list[tuple[Any, ...]] = [
        ("scenario", name),
        ("driver", summary.get("driver", "-")),
        ("strategy", _strategy(summary)),
        ("seed", summary.get("seed", "-")),
        ("source file", summary.get("source") or "-"),
        ("duration", f"{_num(scenario.get('duration_s'), 'g')} s"),
        ("warm-up", f"{_num(scenario.get('warmup_s'), 'g')} s"),
        ("throughput", f"{_num(summary.get('throughput_rps'), ',.2f')} req/s"),
    ]
    if summary.get("offered_rps") is not None:
        run_rows.append(("offered rate", f"{_num(summary.get('offered_rps'), ',.2f')} req/s"))
    error_rate = summary.get("error_rate")
    run_rows.append(("error rate", "-" if error_rate is None else f"{100 * error_rate:.2f}%"))
    per_worker = summary.get("per_worker") or {}
    if per_worker:
        util = per_worker.get("utilization") or {}
        run_rows.append(("workers", _num(per_worker.get("count"))))
        if util:
            run_rows.append(
                ("utilization mean / max", f"{_util(util.get('mean'))} / {_util(util.get('max'))}")
            )
        if per_worker.get("imbalance") is not None:
            run_rows.append(("imbalance (max/mean served)", f"{per_worker['imbalance']:.3f}"))

    request_rows: list[tuple[Any, ...]] = [("offered", f"{offered:,}", "")]
    for status in STATUSES:
        n = int(requests.get(status, 0) or 0)
        request_rows.append((status, f"{n:,}", _pct(n, offered)))
    detail_rows = [(d, f"{n:,}", _pct(n, offered)) for d, n in _notable_details(summary)]

    latency_rows = [
        ("all", *(_ms((summary.get("latency_ms") or {}).get(k)) for k, _ in LATENCY_KEYS))
    ]
    by_kind = summary.get("latency_ms_by_kind") or {}
    if len(by_kind) > 1:
        for kind, lat in by_kind.items():
            latency_rows.append((kind, *(_ms(lat.get(k)) for k, _ in LATENCY_KEYS)))

    tables = [
        _table("Run", run_rows, numeric=False),
        _table("Requests (after warm-up)", request_rows),
    ]
    if detail_rows:
        tables.append(_table("Details", detail_rows))
    latency_table = _table(
        "Latency of completed requests (ms)",
        latency_rows,
        header=("", *(label for _, label in LATENCY_KEYS)),
    )

    failure_tables = _failure_tables(summary)

    figures = []
    for stem, (caption, _) in {**FAILURE_PLOTS, **PLOTS}.items():
        if stem in images:
            src = escape(Path(images[stem]).name, quote=True)
            figures.append(
                f"<figure><figcaption>{escape(caption)}</figcaption>"
                f'<img src="{src}" alt="{escape(caption, quote=True)}"></figure>'
            )

    scenario_yaml = yaml.safe_dump(dict(scenario), sort_keys=False) if scenario else ""
    description = scenario.get("description")
    sub = f'<p class="sub">{escape(str(description))}</p>\n' if description else ""

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(name)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{escape(name)}</h1>
{sub}<div class="tables">
{"".join(tables)}
</div>
{latency_table}
<div class="tables">
{"".join(failure_tables)}
</div>
{"".join(figures)}
<details>
<summary>Scenario (normalized)</summary>
<pre>{escape(scenario_yaml)}</pre>
</details>
</body>
</html>
"""


# -- failure sections --------------------------------------------------------------------------


def _secs(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f} s"


def _failure_lines(summary: Mapping[str, Any]) -> list[str]:
    """SLO, per-fault recovery and alert counts, for runs that have them."""
    lines: list[str] = []
    slo = summary.get("slo")
    if slo and (summary.get("faults") or summary.get("alerts")):
        lines.append(
            f"slo          {100 * slo['target']:g}% within {_num(slo['latency_ms'], 'g')} ms: "
            f"{'met' if slo.get('met') else 'MISSED'}, {_num(slo.get('bad'))} bad events, "
            f"{100 * (slo.get('budget_consumed') or 0):.1f}% of the error budget"
        )
    for f in summary.get("faults") or []:
        who = f.get("workers") or "all workers"
        lines.append(
            f"fault {f['fault']:<6} {f['kind']} {who} at {f['start_s']:g} s: "
            f"detected {_secs(f.get('time_to_detect_s'))} ({f.get('detected_by') or 'never'}), "
            f"recovered {_secs(f.get('time_to_recover_s'))}, "
            f"{_num(f.get('failed'))} failed, {_num(f.get('timed_out'))} timed out"
        )
    alerts = summary.get("alerts")
    if alerts:
        lines.append(
            f"alerts       {alerts['fired']} fired, {alerts['resolved']} resolved, "
            f"{alerts['escalated']} escalated, {alerts['silenced']} silenced, "
            f"{alerts['deduplicated']} deduplicated, {alerts['notifications']} notifications"
        )
    return lines


#: how many fault rows the HTML report lists before summarising the rest
MAX_FAULT_ROWS = 40


def _failure_tables(summary: Mapping[str, Any]) -> list[str]:
    tables: list[str] = []
    faults = summary.get("faults") or []
    if faults:
        rows: list[tuple[Any, ...]] = []
        for f in faults[:MAX_FAULT_ROWS]:
            rows.append(
                (
                    f["fault"],
                    f["kind"],
                    f.get("workers") or "all",
                    f"{f['start_s']:g}",
                    "-" if f.get("end_s") is None else f"{f['end_s']:g}",
                    f.get("detected_by") or "never",
                    _secs(f.get("time_to_detect_s")),
                    _secs(f.get("time_to_recover_s")),
                    _num(f.get("failed")),
                    _num(f.get("timed_out")),
                    _num(f.get("retried")),
                    _ms(f.get("extra_latency_ms_mean")),
                    "-"
                    if f.get("error_budget_burned") is None
                    else f"{100 * f['error_budget_burned']:.1f}%",
                )
            )
        if len(faults) > MAX_FAULT_ROWS:
            rows.append((f"... {len(faults) - MAX_FAULT_ROWS} more in summary.json",))
        tables.append(
            _table(
                "Faults: detection and recovery",
                rows,
                header=(
                    "#",
                    "kind",
                    "workers",
                    "start s",
                    "end s",
                    "detected by",
                    "to detect",
                    "to recover",
                    "failed",
                    "timed out",
                    "retried",
                    "extra latency",
                    "budget burned",
                ),
            )
        )
    slo = summary.get("slo")
    if slo and (faults or summary.get("alerts")):
        tables.append(
            _table(
                "SLO",
                [
                    ("objective", f"{100 * slo['target']:g}% within {slo['latency_ms']:g} ms"),
                    ("bad events", _num(slo.get("bad"))),
                    ("error budget consumed", f"{100 * (slo.get('budget_consumed') or 0):.1f}%"),
                    ("met", "yes" if slo.get("met") else "no"),
                ],
                numeric=False,
            )
        )
    alerts = summary.get("alerts")
    if alerts:
        keys = ("fired", "resolved", "escalated", "silenced", "deduplicated", "notifications")
        rows = [(k, _num(alerts.get(k))) for k in keys]
        rows += [(f"fired: {name}", _num(n)) for name, n in (alerts.get("by_rule") or {}).items()]
        tables.append(_table("Alerts", rows, numeric=False))
    resilience = summary.get("resilience") or {}
    if any(resilience.values()):
        tables.append(
            _table(
                "Gateway failure handling",
                [(k.replace("_", " "), _num(v)) for k, v in resilience.items()],
                numeric=False,
            )
        )
    return tables
