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
import numpy as np
import yaml

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from labkit.results import Results

__all__ = [
    "DATA_PLOTS",
    "FAILURE_PLOTS",
    "PLOTS",
    "draw_plot",
    "format_summary",
    "plot_applies",
    "plot_stems",
    "write_report",
]

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
    "utilization_heatmap": ("Worker utilization over time", _plot("utilization_heatmap")),
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


# -- data-service plots: drawn only for runs that have the section ------------------------------


def _measured(results: Results, frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of a ``t_s`` frame inside the measured window, like the summary's figures."""
    scenario = results.scenario
    t = frame["t_s"]
    return frame[(t >= scenario.warmup_s) & (t < scenario.duration_s)]


def wars_theory(
    results: Results,
    deltas_ms: np.ndarray | None = None,
    *,
    trials: int | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The WARS Monte Carlo t-visibility of the run's state settings, to set the measured
    curve against; None for ``session`` (its re-reads from the primary are not in WARS).
    ``deltas_ms`` defaults to a plot's grid (0 and 80 log-spaced points to 2 s)."""
    spec = getattr(results.scenario, "state", None)
    config = getattr(spec, "config", None)
    if spec is None or config is None or config.model == "session":
        return None
    from labkit.theory import wars_t_visibility

    if deltas_ms is None:
        deltas_ms = np.concatenate([[0.0], np.geomspace(0.05, 2000.0, 80)])
    probabilities = wars_t_visibility(
        config.n,
        config.r,
        config.w,
        spec.write_delay,
        spec.ack_delay,
        spec.read_delay,
        spec.response_delay,
        deltas_ms,
        trials=WARS_TRIALS if trials is None else trials,
        rng=np.random.default_rng(results.scenario.seed) if rng is None else rng,
        write_fanout=config.write_fanout,
    )
    return deltas_ms, probabilities


def _state_heading(results: Results) -> str:
    state = results.summary.get("state") or {}
    return (
        f"{state.get('model', '-')} n={state.get('n', '-')} r={state.get('r', '-')} "
        f"w={state.get('w', '-')}"
    )


def _t_visibility(results: Results) -> Figure:
    from labkit import plots

    return plots.t_visibility(
        _measured(results, results.state_ops),
        theory=wars_theory(results),
        title=f"t-visibility ({_state_heading(results)}): P(read sees the newest commit) vs Δ",
    )


def _state_latency(results: Results) -> Figure:
    from labkit import plots

    return plots.state_latency(
        _measured(results, results.state_ops),
        title=f"State service ({_state_heading(results)}): latency, staleness, conflicts",
    )


def _cache_hit_rate(results: Results) -> Figure:
    from labkit import plots

    cache = results.summary.get("cache") or {}
    return plots.cache_hit_rate(
        results.cache, cache.get("events"), warmup_s=results.scenario.warmup_s
    )


def _batch_sizes(results: Results) -> Figure:
    from labkit import plots

    return plots.batch_sizes(results.summary.get("batching"))


def _batch_limit(results: Results) -> Figure:
    from labkit import plots

    return plots.batch_limit(
        results.batching,
        target_ms=_batching_target_ms(results.summary),
        warmup_s=results.scenario.warmup_s,
    )


def _frame(results: Results, name: str) -> pd.DataFrame | None:
    frame = getattr(results, name, None)
    return frame if frame is not None and not frame.empty else None


def _latency_breakdown(results: Results) -> Figure:
    from labkit.plots_breakdown import latency_breakdown_plot

    return latency_breakdown_plot(results)


def _has_breakdown(results: Results) -> bool:
    from labkit.plots_breakdown import has_breakdown

    return has_breakdown(results)


def _has_state(results: Results) -> bool:
    return bool(results.summary.get("state")) and _frame(results, "state_ops") is not None


def _has_cache(results: Results) -> bool:
    return bool(results.summary.get("cache")) and _frame(results, "cache") is not None


def _has_batching(results: Results) -> bool:
    return bool(results.summary.get("batching"))


def _has_adaptive(results: Results) -> bool:
    return _has_batching(results) and _frame(results, "batching") is not None


#: drawn only for runs with a state, cache or batching section, after the failure plots:
#: file stem → (caption, function drawing it)
DATA_PLOTS: dict[str, tuple[str, Callable[[Results], Figure]]] = {
    "t_visibility": ("State: t-visibility (fresh reads by time since the commit)", _t_visibility),
    "state_latency": ("State: read/write latency, staleness and conflicts", _state_latency),
    "cache_hit_rate": ("Cache: where reads were served, over time", _cache_hit_rate),
    "batch_sizes": ("Batching: batch-size distribution", _batch_sizes),
    "batch_limit": ("Batching: adaptive limit and p99", _batch_limit),
    "latency_breakdown": ("Live: where the latency went, hop by hop", _latency_breakdown),
}
#: when each data plot is drawn
_DATA_PLOT_WHEN: dict[str, Callable[[Results], bool]] = {
    "t_visibility": _has_state,
    "state_latency": _has_state,
    "cache_hit_rate": _has_cache,
    "batch_sizes": _has_batching,
    "batch_limit": _has_adaptive,
    "latency_breakdown": _has_breakdown,
}
#: what to read off each data plot, printed under it in report.html
_DATA_NOTES: dict[str, str] = {
    "t_visibility": (
        "Steps: the share of reads that saw the newest committed write, by how long after that "
        "commit they began (shaded: 95% interval; grey: reads per bin). Dashed: the WARS Monte "
        "Carlo for the same n, r, w and delays."
    ),
    "state_latency": (
        "What the consistency level costs (bar heights) and what the reads got for it (note)."
    ),
    "cache_hit_rate": (
        "Stacked: the layer that served each read; black: hit rate. Red spans: a cache node "
        "down; labels give the keys that moved and the dip in the hit rate."
    ),
    "batch_sizes": (
        "The share of batches of each size; the flush counts say whether batches filled up "
        "(size) or timed out (delay)."
    ),
    "batch_limit": "The AIMD limit of each gateway and the p99 it steered by, against the target.",
    "latency_breakdown": (
        "Each segment of a live RPC from stamps the gateway and the labkit workers add "
        "(labkit.live.trace; one clock on one machine). The hops include each side's gRPC stack "
        "and its wait for a CPU; shares are of the mean end-to-end time."
    ),
}
#: Monte Carlo trials of the WARS overlay: about 1 % resolution, well under a second
WARS_TRIALS = 20_000

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


def _has_faults(results: Results) -> bool:
    return results.faults is not None and not results.faults.empty


def _plots_for(results: Results) -> dict[str, tuple[str, Callable[[Results], Figure]]]:
    data = {stem: plot for stem, plot in DATA_PLOTS.items() if _DATA_PLOT_WHEN[stem](results)}
    if _has_faults(results):
        return {**FAILURE_PLOTS, **data, **PLOTS}
    return {**data, **PLOTS}


def plot_applies(stem: str, results: Results) -> bool:
    """Whether the report would draw plot ``stem`` for this run (it has the data for it)."""
    if stem in PLOTS:
        return True
    if stem in FAILURE_PLOTS:
        return _has_faults(results)
    if stem in DATA_PLOTS:
        return _DATA_PLOT_WHEN[stem](results)
    raise KeyError(f"unknown plot {stem!r}; known: {', '.join(plot_stems())}")


def plot_stems() -> list[str]:
    return [*FAILURE_PLOTS, *DATA_PLOTS, *PLOTS]


def draw_plot(stem: str, results: Results) -> Figure:
    """The report's plot ``stem`` for one run, so notebook panels show exactly the report's."""
    for table in (PLOTS, FAILURE_PLOTS, DATA_PLOTS):
        if stem in table:
            return table[stem][1](results)
    raise KeyError(f"unknown plot {stem!r}; known: {', '.join(plot_stems())}")


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
    lines += _data_lines(summary)

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
p.note { color: #555; font-size: 0.9em; margin: 0 0 0.5em; }
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
    data_tables = _data_tables(summary)

    figures = []
    for stem, (caption, _) in {**FAILURE_PLOTS, **DATA_PLOTS, **PLOTS}.items():
        if stem in images:
            src = escape(Path(images[stem]).name, quote=True)
            note = _DATA_NOTES.get(stem)
            figures.append(
                f"<figure><figcaption>{escape(caption)}</figcaption>"
                + (f'<p class="note">{escape(note)}</p>' if note else "")
                + f'<img src="{src}" alt="{escape(caption, quote=True)}"></figure>'
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
<div class="tables">
{"".join(data_tables)}
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


# -- data sections: state, cache, batching, registry --------------------------------------------


def _frac(value: Any) -> str:
    """A fraction as a percentage, with the decimals a small one needs: 12.3%, 0.08%."""
    if value is None:
        return "-"
    x = float(value)
    if not math.isfinite(x):
        return "-"
    pct = 100 * x
    if pct == 0:
        return "0%"
    if abs(pct) < 0.1:
        return f"{pct:.3f}%"
    if abs(pct) < 1:
        return f"{pct:.2f}%"
    return f"{pct:.1f}%"


def _conflicts(state: Mapping[str, Any]) -> str:
    conflicts = state.get("conflicts") or {}
    parts = [f"{int(n):,} {kind}" for kind, n in conflicts.items() if n]
    return ", ".join(parts) if parts else "no conflicts"


def _cache_event_text(event: Mapping[str, Any]) -> str:
    """``crash at 30 s: 23.1% keys moved, hit 89.4%→80.2%, back in 6 s``."""
    kind = str(event.get("event", ""))
    text = f"{kind} at {_num(event.get('t_s'), 'g')} s"
    details = []
    if event.get("keys_moved") is not None:
        details.append(f"{_frac(event['keys_moved'])} keys moved")
    if event.get("keys_dropped") is not None:
        dropped = f"{_num(event['keys_dropped'])} keys dropped"
        if event.get("l1_dropped"):
            dropped += f" (+{_num(event['l1_dropped'])} L1 copies)"
        details.append(dropped)
    if event.get("hit_before") is not None and event.get("hit_min_after") is not None:
        dip = f"hit {_frac(event['hit_before'])}→{_frac(event['hit_min_after'])}"
        back = event.get("recovered_after_s")
        dip += f", back in {_num(back, 'g')} s" if back is not None else ", not back by the end"
        details.append(dip)
    return text + (": " + ", ".join(details) if details else "")


def _batching_target_ms(summary: Mapping[str, Any]) -> float | None:
    """The adaptive controller's p99 target, from the normalized scenario."""
    batching = _scenario(summary).get("batching")
    adaptive = batching.get("adaptive") if isinstance(batching, Mapping) else None
    target = adaptive.get("target_p99_ms") if isinstance(adaptive, Mapping) else None
    return None if target is None else float(target)


def _registry_notable(registry: Mapping[str, Any]) -> bool:
    """The registry view is worth a line when it cost something or was chosen explicitly."""
    return (
        registry.get("consistency") not in ("eventual", None)
        or bool(registry.get("misroutes"))
        or bool(registry.get("sent_to_unreachable"))
    )


def _data_lines(summary: Mapping[str, Any]) -> list[str]:
    """State, cache, batching and (when notable) registry lines of the terminal summary."""
    lines: list[str] = []
    state = summary.get("state")
    if state:
        read, write = state.get("read_ms") or {}, state.get("write_ms") or {}
        k = state.get("k_staleness") or {}
        text = (
            f"state        {state.get('model')} n={state.get('n')} r={state.get('r')} "
            f"w={state.get('w')}  read p99 {_ms(read.get('p99'))} ms  "
            f"write p99 {_ms(write.get('p99'))} ms  stale {_frac(state.get('stale_fraction'))}"
        )
        if k.get("2") is not None:
            text += f" (k≥2 {_frac(k.get('2'))})"
        text += f"  {_conflicts(state)}"
        if state.get("session_retries"):
            text += f"  {state['session_retries']:,} session re-reads"
        lines.append(text)
    cache = summary.get("cache")
    if cache:
        shares = cache.get("layer_share") or {}
        layers = ", ".join(
            f"{layer} {_frac(share)}"
            for layer, share in shares.items()
            if layer != "store" and (share or layer in ("l1", "l2"))
        )
        text = f"cache        hit {_frac(cache.get('hit_rate'))}"
        if layers:
            text += f" ({layers})"
        text += f"  stale {_frac(cache.get('stale_fraction'))}"
        if cache.get("unavailable"):
            text += f"  {cache['unavailable']:,} accesses with no cache node up"
        lines.append(text)
        for event in cache.get("events") or []:
            node = str(event.get("node") or "")
            lines.append(f"{'cache ' + node:<13}{_cache_event_text(event)}")
    batching = summary.get("batching")
    if batching:
        served = batching.get("served") or {}
        flushes = batching.get("flushes") or {}
        text = (
            f"batching     served mean {_num(served.get('mean_size'), '.2f')} "
            f"(p99 {_num(served.get('p99_size'))})  flushes "
            + " / ".join(f"{_num(n)} {reason}" for reason, n in flushes.items())
        )
        adaptive = batching.get("adaptive")
        if adaptive:
            text += (
                f"  adaptive limit mean {_num(adaptive.get('mean_limit'), '.2f')}, "
                f"final {_limits(adaptive.get('final_limits'))}"
            )
            target = _batching_target_ms(summary)
            if target is not None:
                text += f" (target p99 {_num(target, 'g')} ms)"
        lines.append(text)
    registry = summary.get("registry")
    if registry and _registry_notable(registry):
        lines.append(
            f"registry     {registry.get('consistency')}: {_num(registry.get('misroutes'))} "
            f"misroutes, {_num(registry.get('sent_to_unreachable'))} sends to unreachable "
            f"workers, {_num(registry.get('stale_lookups'))} stale lookups"
        )
    return lines


def _data_tables(summary: Mapping[str, Any]) -> list[str]:
    tables: list[str] = []
    state = summary.get("state")
    if state:
        read, write = state.get("read_ms") or {}, state.get("write_ms") or {}
        k = state.get("k_staleness") or {}
        conflicts = state.get("conflicts") or {}
        rows: list[tuple[Any, ...]] = [
            ("model", state.get("model", "-")),
            ("n / r / w", f"{state.get('n')} / {state.get('r')} / {state.get('w')}"),
            ("conflict policy", state.get("conflict", "-")),
            ("reads / writes", f"{_num(state.get('reads'))} / {_num(state.get('writes'))}"),
            ("read p50 / p99 (ms)", f"{_ms(read.get('p50'))} / {_ms(read.get('p99'))}"),
            ("write p50 / p99 (ms)", f"{_ms(write.get('p50'))} / {_ms(write.get('p99'))}"),
            ("stale reads", _frac(state.get("stale_fraction"))),
            *((f"k-staleness k≥{n}", _frac(k.get(n))) for n in ("1", "2", "3") if n in k),
            ("max versions behind", _num(state.get("max_behind"))),
            ("session re-reads", _num(state.get("session_retries"))),
            *((f"writes {kind}", _num(n)) for kind, n in conflicts.items()),
        ]
        tables.append(_table("State service", rows, numeric=False))
    cache = summary.get("cache")
    if cache:
        shares = cache.get("layer_share") or {}
        rows = [
            ("hit rate", _frac(cache.get("hit_rate"))),
            *((f"served by {layer}", _frac(share)) for layer, share in shares.items()),
            ("stale reads", _frac(cache.get("stale_fraction"))),
            ("reads / writes", f"{_num(cache.get('reads'))} / {_num(cache.get('writes'))}"),
        ]
        if cache.get("unavailable"):
            rows.append(("no cache node up", _num(cache.get("unavailable"))))
        tables.append(_table("Cache", rows, numeric=False))
        events = cache.get("events") or []
        if events:
            tables.append(
                _table(
                    "Cache node events",
                    [
                        (
                            f"{_num(e.get('t_s'), 'g')} s",
                            e.get("node") or "-",
                            e.get("event", "-"),
                            _frac(e.get("keys_moved"))
                            if e.get("keys_moved") is not None
                            else f"{_num(e.get('keys_dropped'))} dropped",
                            _frac(e.get("hit_before")),
                            _frac(e.get("hit_min_after")),
                            _secs(e.get("recovered_after_s")),
                        )
                        for e in events
                    ],
                    header=("at", "node", "event", "keys moved", "hit before", "low", "back in"),
                )
            )
    batching = summary.get("batching")
    if batching:
        rows = []
        for key in ("sent", "served"):
            dist = batching.get(key) or {}
            rows.append(
                (
                    key,
                    _num(dist.get("batches")),
                    _num(dist.get("messages")),
                    _num(dist.get("mean_size"), ".3f"),
                    _num(dist.get("p50_size")),
                    _num(dist.get("p99_size")),
                    _num(dist.get("max_size")),
                )
            )
        tables.append(
            _table(
                "Batches",
                rows,
                header=("", "batches", "messages", "mean size", "p50", "p99", "max"),
            )
        )
        flushes = batching.get("flushes") or {}
        rows = [(f"flushed on {reason}", _num(n)) for reason, n in flushes.items()]
        adaptive = batching.get("adaptive")
        if adaptive:
            rows += [
                ("adaptive: mean limit", _num(adaptive.get("mean_limit"), ".2f")),
                ("adaptive: final limit", _limits(adaptive.get("final_limits"))),
                ("adaptive: decisions", _num(adaptive.get("decisions"))),
            ]
            target = _batching_target_ms(summary)
            if target is not None:
                rows.append(("adaptive: p99 target", f"{_num(target, 'g')} ms"))
        tables.append(_table("Batching", rows, numeric=False))
    registry = summary.get("registry")
    if registry:
        rows = [
            ("consistency", registry.get("consistency", "-")),
            ("misroutes", _num(registry.get("misroutes"))),
            ("stale lookups", _num(registry.get("stale_lookups"))),
            ("sends to unreachable workers", _num(registry.get("sent_to_unreachable"))),
            ("refreshes", _num(registry.get("refreshes"))),
            ("pushed updates", _num(registry.get("pushed_updates"))),
        ]
        tables.append(_table("Registry view", rows, numeric=False))
    return tables


def _limits(values: list[int] | None) -> str:
    """Final adaptive limits, one per gateway ("4" for one gateway, "3, 4" for two)."""
    return ", ".join(str(v) for v in values) if values else "-"
