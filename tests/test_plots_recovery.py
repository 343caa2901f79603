"""The failure-recovery plots on hand-built frames: structure, not pixels.

Artists the tests look for carry a ``gid`` (``fault:<id>``, ``detected:<id>``, ``recovered:<id>``,
``alert:<name>``, ...), so the checks do not depend on drawing order or matplotlib internals.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from labkit import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T = 60  # bins of 1 s: the data ends at 60 s
STATE = [name for name, _, _ in plots.HEALTH_STATES]


# -- synthetic frames --------------------------------------------------------------------------


def _timeseries(n: int = T) -> pd.DataFrame:
    t = np.arange(n, dtype=np.float64)
    offered = np.full(n, 100.0)
    error_rate = np.where((t >= 10) & (t < 16), 0.3, 0.01)
    completed = offered * (1 - error_rate)
    p50 = np.full(n, 10.0)
    p99 = np.where((t >= 10) & (t < 18), 200.0, 40.0)
    p50[30] = p99[30] = np.nan  # a bin with no completions
    return pd.DataFrame(
        {
            "t_s": t,
            "offered": offered,
            "completed": completed,
            "failed": offered * error_rate,
            "rejected": 0.0,
            "timed_out": 0.0,
            "throughput_rps": completed,
            "error_rate": error_rate,
            "p50_ms": p50,
            "p90_ms": p99 / 2,
            "p99_ms": p99,
            "mean_ms": p50,
            "in_flight": 3.0,
        }
    )


def _faults() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "fault": [0, 1, 2],
            "kind": ["crash", "partition", "latency_spike"],
            "origin": ["schedule", "schedule", "random"],
            "start_s": [10.0, 25.0, 45.0],
            "end_s": [20.0, 35.0, np.nan],  # the spike outlasts the run
            "workers": [("w-1", "w-2", "w-3", "w-4", "w-5"), ("w-7",), ()],
            "params": [{}, {}, {"extra_ms": 50}],
        }
    )


def _recovery() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "fault": [0, 1, 2],
            "kind": ["crash", "partition", "latency_spike"],
            "start_s": [10.0, 25.0, 45.0],
            "end_s": [20.0, 35.0, np.nan],
            "detected_at_s": [12.5, 29.0, np.nan],  # the spike was never detected
            "detected_by": ["heartbeat", "outlier", None],
            "impact_at_s": [10.0, 25.0, 45.0],
            "recovered_at_s": [18.0, 37.0, np.nan],
            "time_to_detect_s": [2.5, 4.0, np.nan],
            "time_to_recover_s": [8.0, 12.0, np.nan],
        }
    )


def _alerts() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "name": ["HighErrorRate", "WorkerDown", "HighErrorRate", "LatencyHigh"],
            "severity": ["page", "ticket", "page", "ticket"],
            "group": ["svc"] * 4,
            "fired_at": [11.0, 13.0, 27.0, 47.0],
            "resolved_at": [16.0, 21.0, 36.0, np.nan],  # the last one still fires at the end
            "value": [0.3, 1.0, 0.1, 200.0],
            "escalated": [False, False, True, False],
            "escalated_at": [np.nan, np.nan, 31.0, np.nan],
            "silenced": [False, True, False, False],
            "duplicate": [False] * 4,
            "notified": [True, False, True, True],
        }
    )


def _health(
    n_workers: int = 12, n_bins: int = T, *, faults: dict[str, list] | None = None
) -> pd.DataFrame:
    """All workers up and healthy, then per worker ``(start, end, actual, registry, gateway)``."""
    names = [f"w-{i}" for i in range(n_workers)]
    rows = {
        "t_s": np.tile(np.arange(n_bins, dtype=np.float64), n_workers),
        "worker": np.repeat(names, n_bins),
        "actual": np.full(n_workers * n_bins, "up", dtype=object),
        "registry": np.full(n_workers * n_bins, "healthy", dtype=object),
        "gateway": np.full(n_workers * n_bins, "routable", dtype=object),
    }
    for worker, spells in (faults or {}).items():
        i = names.index(worker)
        for start, end, actual, registry, gateway in spells:
            sl = slice(i * n_bins + start, i * n_bins + end)
            rows["actual"][sl] = actual
            rows["registry"][sl] = registry
            rows["gateway"][sl] = gateway
    frame = pd.DataFrame(rows)
    # shuffled, categorical, like a frame concatenated from several sources
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    for col in ("actual", "registry", "gateway"):
        frame[col] = frame[col].astype("category")
    return frame


#: w-10 crashes at 5 s; believed healthy 5–7 s (routed to dead), suspect 7–8, down 8–20
CRASH_W10 = {
    "w-10": [
        (5, 7, "crashed", "healthy", "routable"),
        (7, 8, "crashed", "suspect", "routable"),
        (8, 20, "crashed", "down", "routable"),
    ]
}


# -- helpers -----------------------------------------------------------------------------------


def _xspan(patch: Patch) -> tuple[float, float]:
    """x extent of an axvspan/bar in data coordinates (Rectangle or Polygon alike)."""
    xs = patch.get_patch_transform().transform(patch.get_path().vertices)[:, 0]
    return float(xs.min()), float(xs.max())


def _with_gid(artists: list, prefix: str) -> list:
    return [a for a in artists if (a.get_gid() or "").startswith(prefix)]


def _texts(fig: Figure) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


def _legend_labels(fig: Figure) -> list[str]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


def _save_png(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=60)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 300 and height >= 150, (width, height)


@pytest.fixture(scope="module")
def timeline() -> Figure:
    return plots.recovery_timeline(
        _timeseries(), _faults(), recovery=_recovery(), alerts=_alerts(), warmup_s=5.0
    )


# -- recovery_timeline -------------------------------------------------------------------------


def test_timeline_panels(timeline: Figure, tmp_path: Path) -> None:
    assert len(timeline.axes) == 4  # throughput, error rate, latency, alerts
    tp, err, lat, alerts = timeline.axes
    assert tp.get_ylabel() == "requests / s" and tp.get_ylim()[0] == 0
    assert lat.get_yscale() == "log"
    assert isinstance(err.yaxis.get_major_formatter(), PercentFormatter)
    assert err.get_ylim() == (0.0, 1.0)
    for ax in timeline.axes:  # one shared time axis, ending with the last bin
        assert ax.get_xlim() == pytest.approx((0.0, T))
    assert alerts.get_xlabel() == "time (s)"
    _save_png(timeline, tmp_path / "timeline.png")


def test_fault_spans_on_every_panel(timeline: Figure) -> None:
    faults = _faults()
    for ax in timeline.axes:
        spans = {p.get_gid(): _xspan(p) for p in _with_gid(ax.patches, "fault:")}
        assert set(spans) == {"fault:0", "fault:1", "fault:2"}
        assert spans["fault:0"] == pytest.approx((10.0, 20.0))
        assert spans["fault:1"] == pytest.approx((25.0, 35.0))
        # NaN end: the spike lasted past the end, shaded to the end of the last bin
        assert math.isnan(faults["end_s"][2])
        assert spans["fault:2"] == pytest.approx((45.0, T))


def test_detection_and_recovery_markers(timeline: Figure) -> None:
    rec = _recovery()
    for ax in timeline.axes:
        detected = {ln.get_gid(): ln for ln in _with_gid(ax.lines, "detected:")}
        recovered = {ln.get_gid(): ln for ln in _with_gid(ax.lines, "recovered:")}
        # the spike was neither detected nor recovered: no markers for it
        assert set(detected) == {"detected:0", "detected:1"}
        assert set(recovered) == {"recovered:0", "recovered:1"}
        for fault in (0, 1):
            row = rec[rec["fault"] == fault].iloc[0]
            assert detected[f"detected:{fault}"].get_xdata()[0] == row["detected_at_s"]
            assert recovered[f"recovered:{fault}"].get_xdata()[0] == row["recovered_at_s"]
            assert detected[f"detected:{fault}"].get_linestyle() == "--"
            assert recovered[f"recovered:{fault}"].get_linestyle() == "-"


def test_fault_labels_and_title(timeline: Figure) -> None:
    labels = [t.get_text() for t in timeline.axes[0].texts]
    assert any(t.startswith("crash ×5") for t in labels)
    assert any(t.startswith("partition w-7") for t in labels)
    assert any(t.startswith("latency_spike (all)") for t in labels)
    assert any("detected +2.5 s" in t and "recovered +8.0 s" in t for t in labels)
    assert any("not detected" in t and "not recovered" in t for t in labels)
    title = timeline.get_suptitle()
    assert "3 faults" in title and "2/3 detected" in title and "2/3 recovered" in title


def test_alert_bars(timeline: Figure) -> None:
    alerts = timeline.axes[3]
    bars = _with_gid(alerts.patches, "alert:")
    assert len(bars) == len(_alerts())
    extents = sorted((b.get_gid(), _xspan(b)) for b in bars)
    assert extents == [
        ("alert:HighErrorRate", pytest.approx((11.0, 16.0))),
        ("alert:HighErrorRate", pytest.approx((27.0, 36.0))),
        ("alert:LatencyHigh", pytest.approx((47.0, T))),  # still firing: to the end of the data
        ("alert:WorkerDown", pytest.approx((13.0, 21.0))),
    ]
    # rows in order of first firing, one per alert name
    assert [t.get_text() for t in alerts.get_yticklabels()] == [
        "HighErrorRate",
        "WorkerDown",
        "LatencyHigh",
    ]
    by_name = {b.get_gid(): b for b in bars}
    assert by_name["alert:WorkerDown"].get_hatch()  # silenced
    assert not by_name["alert:LatencyHigh"].get_hatch()
    page, ticket = (to_hex(plots.SEVERITY_COLORS[s]) for s in ("page", "ticket"))
    assert to_hex(by_name["alert:LatencyHigh"].get_edgecolor()) == ticket
    assert all(
        to_hex(b.get_edgecolor()) == page for b in bars if b.get_gid() == "alert:HighErrorRate"
    )
    (star,) = _with_gid(alerts.lines, "escalated:")
    assert star.get_xdata()[0] == 31.0
    assert _with_gid(alerts.lines, "firing:LatencyHigh")


def test_legend_one_entry_per_kind(timeline: Figure) -> None:
    labels = _legend_labels(timeline)
    assert len(labels) == len(set(labels))
    for kind in ("crash", "partition", "latency_spike"):
        assert labels.count(f"fault: {kind}") == 1
    for label in ("fault detected", "recovered (back to baseline)", "alert: page", "escalated"):
        assert label in labels
    assert "alert silenced" in labels and "warm-up (5 s)" in labels


def test_many_random_crashes_stay_legible(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 30
    starts = np.sort(rng.uniform(0, 55, n))
    faults = pd.DataFrame(
        {
            "fault": range(n),
            "kind": "crash",
            "origin": "random",
            "start_s": starts,
            "end_s": starts + 3,
            "workers": [(f"w-{i}",) for i in range(n)],
            "params": [{}] * n,
        }
    )
    recovery = faults[["fault", "kind", "start_s", "end_s"]].assign(
        detected_at_s=starts + 1, recovered_at_s=starts + 4
    )
    fig = plots.recovery_timeline(_timeseries(), faults, recovery=recovery)
    labels = _legend_labels(fig)
    assert labels.count("fault: crash") == 1
    assert len(labels) < 12
    assert len(_with_gid(fig.axes[1].patches, "fault:")) == n  # every fault still shaded
    assert len(_with_gid(fig.axes[1].lines, "detected:")) == n
    # labels are packed into a few rows rather than stacked on top of each other
    fault_labels = _with_gid(fig.axes[0].texts, "label:")
    assert 0 < len(fault_labels) < n
    _save_png(fig, tmp_path / "many.png")


def test_timeline_empty_inputs(tmp_path: Path) -> None:
    empty = pd.DataFrame()
    fig = plots.recovery_timeline(empty, empty, recovery=empty, alerts=empty)
    assert len(fig.axes) == 4
    assert "Empty time series" in _texts(fig)
    _save_png(fig, tmp_path / "empty.png")

    fig = plots.recovery_timeline(None, None)
    assert "Empty time series" in _texts(fig)

    # data but no faults, no alerts, no completions
    ts = _timeseries()
    ts[["p50_ms", "p99_ms"]] = np.nan
    fig = plots.recovery_timeline(ts, empty, alerts=empty)
    text = _texts(fig)
    assert "no faults injected" in text
    assert "No alerts fired" in text
    assert "No completed requests" in text
    assert not _with_gid(fig.axes[0].patches, "fault:")
    _save_png(fig, tmp_path / "no_faults.png")
    assert "No alert data" in _texts(plots.recovery_timeline(_timeseries(), _faults()))


def test_timeline_without_recovery_or_faults_frame() -> None:
    fig = plots.recovery_timeline(_timeseries(), _faults())
    assert not _with_gid(fig.axes[0].lines, "detected:")
    assert "no recovery analysis" in fig.get_suptitle()
    # the recovery frame alone still gives the spans and markers
    fig = plots.recovery_timeline(_timeseries(), None, recovery=_recovery())
    assert len(_with_gid(fig.axes[2].patches, "fault:")) == 3
    assert len(_with_gid(fig.axes[2].lines, "recovered:")) == 2


def test_timeline_given_axes() -> None:
    fig = Figure(figsize=(10, 8), layout="constrained")
    axes = fig.subplots(4, 1, sharex=True)
    assert plots.recovery_timeline(_timeseries(), _faults(), axes=axes, title="mine") is fig
    assert axes[0].get_title() == "mine"
    assert _with_gid(axes[3].patches, "fault:")
    with pytest.raises(ValueError, match="four axes"):
        plots.recovery_timeline(_timeseries(), _faults(), axes=axes[:3])


def test_error_rate_in_percent_is_normalised() -> None:
    ts = _timeseries()
    ts["error_rate"] *= 100  # a producer that reports percents
    fig = plots.recovery_timeline(ts, _faults())
    assert "peak 30.0% at 10 s" in _texts(fig)


# -- health_heatmap ----------------------------------------------------------------------------


def _image(fig: Figure) -> np.ma.MaskedArray:
    (image,) = fig.axes[0].images
    return image.get_array()


def test_heatmap_dims_order_and_dead_cells(tmp_path: Path) -> None:
    health = _health(12, faults=CRASH_W10)
    fig = plots.health_heatmap(health, _faults())
    ax = fig.axes[0]
    grid = _image(fig)
    assert grid.shape == (12, T)
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names == [f"w-{i}" for i in range(12)]  # w-2 before w-10, not lexical
    row = names.index("w-10")
    dead, healthy = STATE.index("routed_to_dead"), STATE.index("healthy")
    assert list(grid[row, 5:7]) == [dead, dead]  # crashed but still believed healthy
    assert grid[row, 7] == STATE.index("suspect")
    assert grid[row, 8] == STATE.index("down")  # crashed and known to be: not marked
    assert grid[row, 30] == healthy
    assert (grid == dead).sum() == 2  # nowhere else
    # the red cell colour is distinct from every other state's
    colors = [c for _, _, c in plots.HEALTH_STATES]
    assert len(set(colors)) == len(colors)
    image = ax.images[0]
    assert to_hex(image.cmap(image.norm(dead))) == to_hex(colors[dead])
    # the truth is drawn over the belief: one solid segment for the crash
    (truth,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    (segment,) = truth.get_segments()
    assert segment[:, 0] == pytest.approx([5.0, 20.0])
    assert segment[:, 1] == pytest.approx([row, row])
    labels = _legend_labels(fig)
    assert any("routed to a dead worker" in label for label in labels)
    assert "fault start: crash" in labels
    assert "2 worker-seconds routed to a dead worker" in ax.get_title()
    _save_png(fig, tmp_path / "heatmap.png")


def test_heatmap_gateway_states_and_worst_verdict() -> None:
    health = _health(
        4,
        faults={
            "w-1": [
                (10, 15, "partitioned", "healthy", "open"),
                (15, 18, "up", "healthy", "half_open"),
            ],
            "w-2": [(20, 30, "slow", "healthy", "ejected")],
            "w-3": [(40, 45, "up", "down", "half_open")],
        },
    )
    grid = _image(plots.health_heatmap(health))
    assert grid[1, 12] == STATE.index("open")
    assert grid[1, 16] == STATE.index("half_open")
    assert grid[2, 25] == STATE.index("ejected")
    assert grid[3, 42] == STATE.index("down")  # registry down outranks a half-open gateway


def test_heatmap_large_fleet_shows_affected_only(tmp_path: Path) -> None:
    spells = {
        "w-250": CRASH_W10["w-10"],
        "w-3": [(30, 40, "flaky", "healthy", "routable")],
        "w-1000": [(50, 55, "up", "suspect", "routable")],  # a false suspicion counts too
    }
    health = _health(1200, n_bins=T, faults=spells)
    fig = plots.health_heatmap(health, max_workers=200)
    ax = fig.axes[0]
    assert _image(fig).shape == (3, T)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["w-3", "w-250", "w-1000"]
    assert "1,197 workers always healthy and up not shown" in ax.get_title()
    # flaky is drawn as a dashed truth line, crashed as a solid one
    assert len([c for c in ax.collections if isinstance(c, LineCollection)]) == 2
    _save_png(fig, tmp_path / "big.png")


def test_heatmap_caps_rows_at_max_workers() -> None:
    spells = {f"w-{i}": [(10, 10 + i % 7 + 1, "crashed", "down", "routable")] for i in range(30)}
    fig = plots.health_heatmap(_health(60, faults=spells), max_workers=10)
    assert _image(fig).shape[0] == 10
    names = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert names == sorted(names, key=lambda n: int(n.split("-")[1]))
    # the most affected are kept: 7 bins (i % 7 == 6), 6 bins, then the first two with 5 bins
    assert {int(n.split("-")[1]) for n in names} == {6, 13, 20, 27, 5, 12, 19, 26, 4, 11}
    assert "the 10 most affected of 30" in fig.axes[0].get_title()


def test_heatmap_large_fleet_all_healthy() -> None:
    fig = plots.health_heatmap(_health(300, n_bins=5), max_workers=200)
    assert "All 300 workers stayed healthy and up" in _texts(fig)
    assert not fig.axes[0].images


def test_heatmap_merges_long_runs_without_losing_red() -> None:
    n_bins = 3 * plots.MAX_HEATMAP_COLUMNS + 10
    spells = {
        "w-1": [
            (1000, 1001, "crashed", "healthy", "routable"),
            (1001, 1100, "crashed", "down", "routable"),
        ]
    }
    fig = plots.health_heatmap(_health(3, n_bins=n_bins, faults=spells))
    grid = _image(fig)
    assert grid.shape[1] <= plots.MAX_HEATMAP_COLUMNS
    assert (grid[1] == STATE.index("routed_to_dead")).sum() == 1  # a 1 s stretch survives
    assert "each column 4 s" in fig.axes[0].get_title()


def test_heatmap_empty_and_given_ax(tmp_path: Path) -> None:
    for empty in (None, pd.DataFrame(), pd.DataFrame(columns=["t_s", "worker"])):
        fig = plots.health_heatmap(empty)
        assert "No worker health samples" in _texts(fig)
        _save_png(fig, tmp_path / "empty_heatmap.png")
    fig = Figure()
    ax: Axes = fig.add_subplot()
    assert plots.health_heatmap(_health(3), ax=ax) is fig
    assert ax.images


def test_heatmap_without_gateway_column() -> None:
    health = _health(3, faults={"w-2": [(0, 3, "crashed", "healthy", "routable")]}).drop(
        columns="gateway"
    )
    grid = _image(plots.health_heatmap(health))
    assert (grid[2, :3] == STATE.index("routed_to_dead")).all()


def test_public_names() -> None:
    for name in ("recovery_timeline", "health_heatmap", "FAULT_COLORS", "HEALTH_STATES"):
        assert name in plots.__all__
