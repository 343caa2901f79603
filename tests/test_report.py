"""The PNG plots, report.html and the terminal summary, on synthetic results."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from labkit import plots
from labkit.core.outcomes import Detail
from labkit.plots import fmt_ms
from labkit.report import format_summary, write_report
from labkit.results import RecordLog, Results, build_results
from labkit.scenario import scenario_from_dict

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNGS = (
    "latency_percentiles",
    "latency_cdf",
    "percentiles_over_time",
    "worker_load",
    "utilization_heatmap",
    "outcomes_over_time",
)
NAME = "<b>A/B</b> & co"


def _scenario(name: str = NAME):
    return scenario_from_dict(
        {
            "name": name,
            "duration_s": 10,
            "warmup_s": 1,
            "workload": {"arrival": {"process": "poisson", "rate_rps": 100}},
        }
    )


def _workers(names: list[str], served: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "worker": names,
            "speed": np.ones(len(names)),
            "served": served,
            "rejected": np.zeros(len(names), dtype=np.int64),
            "utilization": rng.uniform(0.2, 0.9, len(names)),
            "mean_queue": rng.uniform(0, 2, len(names)),
            "max_queue": rng.integers(0, 10, len(names)),
        }
    )


def _results(
    n: int = 1000,
    n_workers: int = 5,
    *,
    all_rejected: bool = False,
    name: str = NAME,
    seed: int = 0,
) -> Results:
    rng = np.random.default_rng(seed)
    scenario = _scenario(name)
    names = [f"w{i}" for i in range(n_workers)]
    log = RecordLog()
    arrivals = np.sort(rng.uniform(0, 10, n))
    if all_rejected:
        details = np.full(n, Detail.RATE_LIMITED)
    else:
        details = rng.choice(
            [Detail.OK, Detail.RATE_LIMITED, Detail.WORKER_ERROR, Detail.DEADLINE],
            size=n,
            p=[0.9, 0.04, 0.03, 0.03],
        )
    served = np.zeros(n_workers, dtype=np.int64)
    for i, arrival in enumerate(arrivals):
        detail = Detail(int(details[i]))
        worker = -1 if detail == Detail.RATE_LIMITED else int(rng.integers(n_workers))
        latency_s = 0.0 if worker < 0 else 0.001 + rng.exponential(0.02)
        if detail == Detail.OK:
            served[worker] += 1
        log.add(
            0, int(rng.random() < 0.2), 0, i, worker, arrival, arrival + latency_s, detail, 1, 1
        )
    return build_results(
        scenario,
        log,
        driver="sim",
        agent_types=["agent"],
        worker_names=names,
        workers=_workers(names, served, rng),
    )


@pytest.fixture(scope="module")
def results() -> Results:
    return _results()


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 300 and height >= 200, (path, width, height)
    assert len(data) > 5000, path


def _texts(fig: Figure) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_write_report_files_and_html(results: Results, tmp_path: Path) -> None:
    paths = write_report(results, tmp_path / "out")
    assert set(paths) == {*PNGS, "report"}
    assert paths["report"] == tmp_path / "out" / "report.html"
    for stem in PNGS:
        assert paths[stem] == tmp_path / "out" / f"{stem}.png"
        _check_png(paths[stem])

    html = paths["report"].read_text(encoding="utf-8")
    escaped = "&lt;b&gt;A/B&lt;/b&gt; &amp; co"
    assert f"<title>{escaped}</title>" in html
    assert f"<h1>{escaped}</h1>" in html
    assert "<b>A/B</b>" not in html  # the name never appears unescaped, YAML included
    p99 = results.summary["latency_ms"]["p99"]
    assert p99 is not None and fmt_ms(p99) in html
    for stem in PNGS:  # relative references, no external assets or scripts
        assert f'src="{stem}.png"' in html
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert "<details>" in html and "round_robin" in html and "rate_limited" in html
    assert "rate_rps: 100" in html  # the normalized scenario as YAML


def test_summary_values_match_records(results: Results) -> None:
    rec = results.records
    ok = rec[(rec["status"] == "completed") & rec["measured"]]["latency_ms"].to_numpy()
    assert results.summary["latency_ms"]["p99"] == pytest.approx(np.percentile(ok, 99), rel=1e-6)


def test_format_summary(results: Results) -> None:
    s = results.summary
    text = format_summary(s)
    req = s["requests"]
    assert NAME in text and "round_robin" in text and "sim" in text
    for status in ("completed", "failed", "rejected", "timed_out"):
        assert status in text
        assert f"{req[status]:,}" in text
    assert f"{req['offered']:,}" in text
    assert f"{100 * req['completed'] / req['offered']:.2f}%" in text
    assert "rate_limited" in text and "worker_error" in text and "deadline" in text
    assert f"{s['throughput_rps']:,.1f} req/s" in text
    for key in ("p50", "p90", "p99", "p999", "max"):
        assert fmt_ms(s["latency_ms"][key]) in text
    assert "p99.9" in text
    assert f"imbalance {s['per_worker']['imbalance']:.2f}" in text
    assert f"mean {100 * s['per_worker']['utilization']['mean']:.1f}%" in text
    # rpc and publish both occur, so each gets its own latency row
    assert "rpc" in text and "publish" in text


def test_fmt_ms() -> None:
    assert fmt_ms(0.12345) == "0.123"
    assert fmt_ms(4.5678) == "4.568"
    assert fmt_ms(12.345) == "12.35" or fmt_ms(12.345) == "12.34"
    assert fmt_ms(123.45) == "123.5" or fmt_ms(123.45) == "123.4"
    assert fmt_ms(None) == "-"
    assert fmt_ms(float("nan")) == "-"


def test_all_rejected(tmp_path: Path) -> None:
    empty = _results(200, all_rejected=True, name="empty")
    assert empty.summary["requests"]["completed"] == 0
    assert empty.summary["latency_ms"]["p99"] is None
    paths = write_report(empty, tmp_path)
    for stem in PNGS:
        _check_png(paths[stem])
    html = paths["report"].read_text(encoding="utf-8")
    assert "<h1>empty</h1>" in html

    text = format_summary(empty.summary)
    rejected = empty.summary["requests"]["rejected"]
    assert f"{rejected:,}" in text and "100.00%" in text

    assert "No completed requests" in _texts(plots.latency_percentiles(empty))
    assert "No completed requests" in _texts(plots.latency_cdf(empty, tail=True))
    assert "No completed requests" in _texts(plots.percentiles_over_time(empty))


def test_no_records_at_all(tmp_path: Path) -> None:
    scenario = _scenario("nothing")
    res = build_results(
        scenario,
        RecordLog(),
        driver="sim",
        agent_types=["agent"],
        worker_names=[],
        workers=pd.DataFrame(
            columns=[
                "worker",
                "speed",
                "served",
                "rejected",
                "utilization",
                "mean_queue",
                "max_queue",
            ]
        ),
    )
    paths = write_report(res, tmp_path)
    for stem in PNGS:
        _check_png(paths[stem])
    assert "offered" in format_summary(res.summary)


def test_many_workers_draws_curves_not_bars() -> None:
    res = _results(3000, n_workers=2000, name="big")
    fig = plots.worker_load(res)
    ax = fig.axes[0]
    assert len(ax.patches) == 0  # no 2000 bars
    assert any(len(line.get_xdata()) == 2000 for line in ax.lines)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    assert buf.getvalue()[:8] == PNG_MAGIC


def test_few_workers_draws_bars(results: Results) -> None:
    fig = plots.worker_load(results)
    assert len(fig.axes[0].patches) == len(results.workers)


def test_comparison_and_given_axes(results: Results) -> None:
    other = _results(500, seed=1, name="B")
    runs = [("A", results), ("B", other)]
    fig = Figure()
    axes = fig.subplots(1, 3)
    assert plots.latency_percentiles(runs, ax=axes[0]) is fig
    assert plots.latency_cdf(runs, ax=axes[1]) is fig
    assert plots.latency_cdf(runs, ax=axes[2], tail=True) is fig
    assert len(axes[0].patches) == 2 * 5  # two runs x five percentiles
    assert len(axes[1].lines) >= 2
    assert axes[1].get_xscale() == "log" and axes[2].get_yscale() == "log"
    assert axes[0].get_yscale() == "log"
    labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert labels[0].startswith("A") and labels[1].startswith("B")


def test_a_failure_run_leads_its_report_with_recovery(tmp_path: Path) -> None:
    import json

    from labkit.scenario import load_scenario
    from labkit.sim import simulate
    from tests.conftest import SCENARIOS

    results = simulate(load_scenario(SCENARIOS / "failure_latency_spike.yaml"))
    paths = results.write(tmp_path)
    for name in ("recovery_timeline", "health_heatmap", "faults", "recovery", "alerts", "events"):
        assert paths[name].exists(), name
    html = paths["report"].read_text()
    assert html.index("recovery_timeline.png") < html.index("latency_percentiles.png")
    assert "Faults: detection and recovery" in html and "alert:HighP99" in html
    summary = json.loads(paths["summary"].read_text())
    (fault,) = summary["faults"]
    assert fault["kind"] == "latency_spike" and fault["detected_by"] == "alert:HighP99"
    assert summary["alerts"]["fired"] >= 1
    text = format_summary(summary)
    assert "fault 0" in text and "latency_spike all workers at 30 s" in text
    assert "alerts " in text and "slo " in text
    # a run without faults keeps its report as it was
    plain = format_summary(results.summary | {"faults": [], "alerts": None})
    assert "fault " not in plain


CACHE_SUMMARY = {
    "reads": 1000,
    "writes": 20,
    "hit_rate": 0.868,
    "layer_share": {"l1": 0.379, "l2": 0.479, "replica": 0.011, "store": 0.131},
    "stale_fraction": 0.066,
    "unavailable": 0,
    "events": [
        {
            "t_s": 30.0,
            "node": "c-1",
            "event": "crash",
            "keys_moved": 0.231,
            "hit_before": 0.89,
            "hit_min_after": 0.80,
            "recovered_after_s": 6.0,
        },
        {"t_s": 70.0, "node": "", "event": "invalidate k1*", "keys_dropped": 8731},
    ],
}
BATCHING_SUMMARY = {
    "sent": {"batches": 10, "messages": 19, "mean_size": 1.9, "p50_size": 2, "p99_size": 6},
    "served": {"batches": 10, "messages": 19, "mean_size": 1.9, "p50_size": 2, "p99_size": 6},
    "flushes": {"size": 120, "delay": 900},
    "adaptive": None,
}


def _registry(consistency: str, misroutes: int, unreachable: int = 0) -> dict[str, object]:
    return {
        "consistency": consistency,
        "misroutes": misroutes,
        "stale_lookups": 3,
        "refreshes": 20,
        "pushed_updates": 0,
        "sent_to_unreachable": unreachable,
    }


def test_format_summary_data_sections(results: Results) -> None:
    summary = results.summary | {
        "cache": CACHE_SUMMARY,
        "batching": BATCHING_SUMMARY,
        "registry": _registry("eventual", 721, 1233),
    }
    lines = format_summary(summary).splitlines()
    assert "cache        hit 86.8% (l1 37.9%, l2 47.9%, replica 1.1%)  stale 6.6%" in lines
    assert "cache c-1    crash at 30 s: 23.1% keys moved, hit 89.0%→80.0%, back in 6 s" in lines
    assert "cache        invalidate k1* at 70 s: 8,731 keys dropped" in lines
    assert "batching     served mean 1.90 (p99 6)  flushes 120 size / 900 delay" in lines
    assert any(
        line.startswith("registry     eventual: 721 misroutes, 1,233 sends to unreachable")
        for line in lines
    )
    # the default view that cost nothing stays quiet; a chosen one is always reported
    quiet = format_summary(results.summary | {"registry": _registry("eventual", 0)})
    assert "registry" not in quiet
    assert "registry     strong: 0 misroutes" in format_summary(
        results.summary | {"registry": _registry("strong", 0)}
    )
    assert "state " not in quiet and "cache " not in quiet and "batching " not in quiet


def test_html_data_tables_follow_the_summary(results: Results, tmp_path: Path) -> None:
    results.summary["cache"] = CACHE_SUMMARY
    results.summary["registry"] = _registry("watch", 2)
    try:
        paths = write_report(results, tmp_path)
    finally:
        del results.summary["cache"], results.summary["registry"]
    # no per-second cache frame: the tables, but no plot
    assert "cache_hit_rate" not in paths
    html = paths["report"].read_text(encoding="utf-8")
    assert "<caption>Cache</caption>" in html and "86.8%" in html
    assert "<caption>Cache node events</caption>" in html and "8,731 dropped" in html
    assert "<caption>Registry view</caption>" in html and "watch" in html
    assert "<caption>State service</caption>" not in html
