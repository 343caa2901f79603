"""Sweeps: grid expansion and seeding (units), real sweeps on a LocalCluster, failed runs, the
``--scheduler`` path. One two-worker cluster serves the module, so Dask starts once."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import dask
import pandas as pd
import pytest
from distributed import Client, LocalCluster

import labkit.sweep as sweep_module
from labkit.errors import ScenarioError
from labkit.scenario import Scenario, load_scenario
from labkit.sim import simulate
from labkit.sweep import (
    CORE_METRICS,
    SweepProgress,
    aggregate,
    derive_seeds,
    expand_grid,
    grid_keys,
    parse_grid,
    plan_sweep,
    run_metrics,
    sweep,
)

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"
#: a run of about 0.1 s: 3 simulated seconds at a light load
SHORT = ("duration_s=3", "warmup_s=1")
GRID = {"balancer.strategy": ["round_robin", "p2c"], "workload.arrival.rate_rps": ["500", "1000"]}

# the failing runners below live in this module, which the workers cannot import by name
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    # a worker that dies fails its task at once (not after three more deaths): the death test
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        ) as local,
    ):
        yield local


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster, set_as_default=False) as c:
        yield c


def _workers(client: Client) -> set[str]:
    return set(client.scheduler_info()["workers"])


# -- the grid ----------------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_in_key_order() -> None:
    grid = parse_grid(["balancer.strategy=round_robin,p2c", "workload.arrival.rate_rps=1,2,3"])
    assert grid == {
        "balancer.strategy": ["round_robin", "p2c"],
        "workload.arrival.rate_rps": ["1", "2", "3"],
    }
    points = expand_grid(grid)
    assert [tuple(p.values.values()) for p in points] == [
        ("round_robin", 1),
        ("round_robin", 2),
        ("round_robin", 3),
        ("p2c", 1),
        ("p2c", 2),
        ("p2c", 3),
    ]
    assert [p.index for p in points] == list(range(6))
    assert points[4].sets == ("balancer.strategy=p2c", "workload.arrival.rate_rps=2")
    assert len(expand_grid({})) == 1 and expand_grid(None)[0].sets == ()


def test_grid_values_are_yaml_like_set() -> None:
    (point,) = expand_grid({"a": ["0.5"], "b": ["true"], "c": ["null"], "d": [1e-7]})
    assert point.values == {"a": 0.5, "b": True, "c": None, "d": 1e-7}
    # a Python float is written so that YAML reads a number back (a bare 1e-07 is a string)
    assert point.sets[3] == "d=1.0e-07"
    points = expand_grid({"workers.agent_types": ["[chat]", "[chat, tools]"]})
    assert [p.values["workers.agent_types"] for p in points] == ["[chat]", "[chat, tools]"]
    # numbers and words in one column: kept as the text given, so the column has one type
    mixed = expand_grid({"batching.max_batch": [4, "auto"]})
    assert [p.values["batching.max_batch"] for p in mixed] == ["4", "auto"]
    # Python values from notebooks work like their text
    assert expand_grid({"x": [1000, 2000.5]})[1].values == {"x": 2000.5}


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"workload.arrival.rate_rps": ["1000", "1000.0"]}, "'1000.0' is listed twice"),
        ({"balancer.strategy": ["p2c", "p2c"]}, "'p2c' is listed twice"),
        ({"seed": ["1", "2"]}, "--repeats"),
        ({"balancer.strategy": []}, "no values"),
        ({"balancer.strategy": "p2c"}, "expected a list"),
    ],
)
def test_bad_grids_are_rejected(grid: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        expand_grid(grid)


def test_grid_arguments_are_checked() -> None:
    with pytest.raises(ScenarioError, match="--grid names 'a' twice"):
        parse_grid(["a=1,2", "a=3"])
    with pytest.raises(ScenarioError, match="--grid needs KEY=V1,V2"):
        parse_grid(["balancer.strategy"])
    # a comma inside brackets belongs to the value
    assert parse_grid(["workers.agent_types=[a,b],[c]"]) == {
        "workers.agent_types": ["[a,b]", "[c]"]
    }


def test_every_combination_is_validated_before_anything_runs() -> None:
    ran: list[Scenario] = []

    def runner(scenario: Scenario) -> Any:
        ran.append(scenario)
        return simulate(scenario)

    grid = {"balancer.strategy": ["p2c", "fastest"], "workload.arrival.rate_rps": ["500"]}
    with pytest.raises(ScenarioError) as info:
        sweep(QUICKSTART, grid, overrides=SHORT, scheduler="serial", runner=runner)
    assert "quickstart.yaml" in str(info.value)
    assert "balancer.strategy: unknown value 'fastest'" in str(info.value)
    assert ran == []
    with pytest.raises(ScenarioError, match=r"workers\.concurency: unknown key"):
        plan_sweep(QUICKSTART, {"workers.concurency": ["1", "2"]})
    with pytest.raises(ScenarioError, match="both overridden"):
        plan_sweep(QUICKSTART, GRID, overrides=["balancer.strategy=p2c"])
    with pytest.raises(ScenarioError, match="repeats"):
        plan_sweep(QUICKSTART, GRID, repeats=0)


# -- seeds -------------------------------------------------------------------------------------


def test_common_random_numbers_share_a_seed_per_repeat() -> None:
    plan = plan_sweep(QUICKSTART, GRID, repeats=4, overrides=SHORT)
    assert plan.base_seed == 7 and len(plan) == 16
    by_point: dict[int, list[int]] = {}
    for run in plan.runs:
        by_point.setdefault(run.point, []).append(run.seed)
        assert run.scenario.seed == run.seed == run.scenario.to_dict()["seed"]
    seeds = list(by_point.values())
    assert all(s == seeds[0] for s in seeds)  # repeat r: one seed at every point
    assert len(set(seeds[0])) == 4  # never twice at one point
    assert seeds[0][0] == 7  # repeat 0 is the scenario's own seed: labkit run / compare numbers
    # reproducible from the base seed, and a different base gives different seeds
    assert [r.seed for r in plan_sweep(QUICKSTART, GRID, repeats=4, overrides=SHORT).runs] == [
        r.seed for r in plan.runs
    ]
    other = plan_sweep(QUICKSTART, GRID, repeats=4, overrides=SHORT, seed=8)
    assert other.base_seed == 8 and not set(seeds[0]) & {r.seed for r in other.runs}
    assert plan_sweep(QUICKSTART, GRID, overrides=[*SHORT, "seed=3"]).base_seed == 3


def test_independent_seeds_are_unique_and_stable_when_the_grid_grows() -> None:
    small = plan_sweep(QUICKSTART, GRID, repeats=3, common_random_numbers=False)
    seeds = [r.seed for r in small.runs]
    assert len(set(seeds)) == len(seeds) == 12
    bigger = dict(GRID, **{"workload.arrival.rate_rps": ["500", "750", "1000"]})
    grown = plan_sweep(QUICKSTART, bigger, repeats=3, common_random_numbers=False)
    before = {(tuple(r.values.values()), r.repeat): r.seed for r in small.runs}
    after = {(tuple(r.values.values()), r.repeat): r.seed for r in grown.runs}
    assert all(after[k] == v for k, v in before.items())


def test_seed_collisions_are_redrawn(monkeypatch: pytest.MonkeyPatch) -> None:
    # with two-bit seeds collisions are certain: every seed that must differ still does
    monkeypatch.setattr(sweep_module, "_SEED_BITS", 2)
    points = expand_grid(GRID)
    (crn, *_) = derive_seeds(1, points, 4)
    assert sorted(crn) == [0, 1, 2, 3] and crn[0] == 1
    independent = derive_seeds(1, points[:2], 2, common_random_numbers=False)
    assert sorted(s for row in independent for s in row) == [0, 1, 2, 3]
    assert derive_seeds(1, points, 4) == derive_seeds(1, points, 4)
    with pytest.raises(ScenarioError, match="distinct seeds"):
        derive_seeds(1, points, 5)


# -- tables ------------------------------------------------------------------------------------


def test_aggregate_gives_the_t_interval_over_successful_repeats() -> None:
    frame = pd.DataFrame(
        {
            "k": ["a", "a", "a", "a", "b"],
            "point": [0, 0, 0, 0, 1],
            "repeat": [0, 1, 2, 3, 0],
            "seed": [1, 2, 3, 4, 1],
            "status": ["ok", "ok", "ok", "failed", "ok"],
            "error": ["", "", "", "boom", ""],
            "p99_ms": [1.0, 2.0, 3.0, math.nan, 5.0],
        }
    )
    assert grid_keys(frame) == ["k"]
    summary = aggregate(frame)
    a, b = summary.to_dict("records")
    assert (a["runs"], a["ok"], a["failed"]) == (4, 3, 1)
    assert a["p99_ms_mean"] == pytest.approx(2.0)
    # sd 1, n 3: t(0.975, 2) = 4.3027 → 4.3027 / sqrt(3)
    assert a["p99_ms_ci"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert b["p99_ms_mean"] == 5.0 and math.isnan(b["p99_ms_ci"])


def test_paired_difference_pairs_repeats_on_the_same_seed() -> None:
    # the seed's luck (+0, +10, +20) moves both strategies; the difference is always 2
    rows = [
        {
            "s": s,
            "load": load,
            "point": 0,
            "repeat": r,
            "seed": r,
            "status": "ok",
            "p99_ms": base + 10 * r,
        }
        for load in (1, 2)
        for s, base in (("a", 102.0), ("b", 100.0))
        for r in range(3)
    ]
    rows.append(
        {
            "s": "a",
            "load": 2,
            "point": 0,
            "repeat": 3,
            "seed": 3,
            "status": "failed",
            "p99_ms": math.nan,
        }
    )
    frame = pd.DataFrame(rows)
    frame.attrs["grid"] = ["s", "load"]
    table = sweep_module.paired_difference(frame, "s", "a", "b")
    assert table["load"].tolist() == [1, 2] and table["pairs"].tolist() == [3, 3]
    assert table["a-b_mean"].tolist() == [2.0, 2.0] and table["a-b_ci"].tolist() == [0.0, 0.0]
    assert table.loc[0, "a_ci"] == pytest.approx(4.302653 * 10 / math.sqrt(3), rel=1e-5)
    with pytest.raises(ValueError, match="s='c'"):
        sweep_module.paired_difference(frame, "s", "a", "c")


def test_a_run_of_the_sweep_is_labkit_run_with_its_seed() -> None:
    frame = sweep(
        QUICKSTART, {"balancer.strategy": ["p2c"]}, repeats=2, overrides=SHORT, scheduler="serial"
    )
    row = frame.iloc[1]
    assert row["repeat"] == 1 and row["seed"] != 7
    alone = simulate(
        load_scenario(QUICKSTART, [*SHORT, "balancer.strategy=p2c"], seed=int(row["seed"]))
    )
    expected = run_metrics(alone.summary)
    assert {k: row[k] for k in expected} == pytest.approx(expected)
    assert list(frame.columns[:7]) == [
        "balancer.strategy",
        "point",
        "repeat",
        "seed",
        "status",
        "error",
        "throughput_rps",
    ]


def test_progress_bar_counts_runs_and_failures() -> None:
    class Log:
        text = ""

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            pass

    log = Log()
    bar = SweepProgress("sweep x", stream=log)  # type: ignore[arg-type]
    for done in range(1, 21):
        bar(done, 20, {"status": "failed" if done == 3 else "ok"})
    lines = log.text.splitlines()
    assert 5 <= len(lines) <= 11  # about one line per 10 % in a log
    assert lines[-1].startswith("sweep x [") and "20/20 runs, 1 failed" in lines[-1]


# -- on a cluster ------------------------------------------------------------------------------


def _drop_run_facts(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["wall_s", "worker", "run_dir"], errors="ignore")


def test_small_real_sweep_on_a_local_cluster(client: Client, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    frame = sweep(
        QUICKSTART,
        GRID,
        repeats=2,
        overrides=SHORT,
        scheduler=client,
        progress=lambda done, total, row: seen.append((done, total)),
    )
    assert len(frame) == 8 and seen[-1] == (8, 8) and len(seen) == 8
    assert list(frame.columns[:7]) == [*GRID, "point", "repeat", "seed", "status", "error"]
    assert set(CORE_METRICS) <= set(frame.columns)
    assert (frame["status"] == "ok").all() and (frame["error"] == "").all()
    assert frame["offered"].gt(0).all() and frame["p99_ms"].gt(0).all()
    assert frame.groupby("point")["repeat"].apply(list).tolist() == [[0, 1]] * 4
    assert set(frame["worker"]) <= _workers(client)  # ran on the cluster's workers
    assert frame.attrs["sweep"]["scheduler"] == client.scheduler.address
    # deterministic: the same sweep again (here keeping records and writing its files), and in
    # this process, give the same table
    again = sweep(
        QUICKSTART,
        GRID,
        repeats=2,
        overrides=SHORT,
        scheduler=client,
        keep_records=True,
        out=tmp_path,
    )
    pd.testing.assert_frame_equal(_drop_run_facts(frame), _drop_run_facts(again))
    serial = sweep(QUICKSTART, GRID, repeats=2, overrides=SHORT, scheduler="serial")
    pd.testing.assert_frame_equal(_drop_run_facts(frame), _drop_run_facts(serial))
    # the files, and the records each worker wrote itself
    stored = pd.read_parquet(tmp_path / "sweep.parquet")
    pd.testing.assert_frame_equal(_drop_run_facts(stored), _drop_run_facts(frame))
    assert stored.attrs["grid"] == list(GRID)
    summary = pd.read_csv(tmp_path / "sweep_summary.csv")
    assert len(summary) == 4 and {"p99_ms_mean", "p99_ms_ci", "ok"} <= set(summary.columns)
    meta = json.loads((tmp_path / "sweep.json").read_text())
    assert meta["base_seed"] == 7 and meta["repeats"] == 2 and meta["failed"] == 0
    for name in ("report.html", "curve_p99_ms.png", "heatmap_p99_ms.png", "heatmap_error_rate.png"):
        assert (tmp_path / name).stat().st_size > 0
    records = pd.read_parquet(tmp_path / "runs" / "p003-r01" / "records.parquet")
    assert len(records) >= again.loc[7, "offered"]
    assert again.loc[7, "run_dir"] == str(tmp_path.resolve() / "runs" / "p003-r01")


def _fail_on_p2c_at_1000(scenario: Scenario) -> Any:
    if scenario.balancer.strategy == "p2c" and scenario.workload.arrival.rate_rps == 1000:
        raise RuntimeError("injected failure")
    return simulate(scenario)


def test_a_failed_run_is_recorded_and_the_rest_continue(client: Client) -> None:
    frame = sweep(
        QUICKSTART, GRID, repeats=2, overrides=SHORT, scheduler=client, runner=_fail_on_p2c_at_1000
    )
    failed = frame[frame["status"] == "failed"]
    assert len(frame) == 8 and len(failed) == 2
    assert set(failed["point"]) == {3}
    assert failed["error"].str.startswith("RuntimeError: injected failure (at test_sweep.py:").all()
    assert failed["p99_ms"].isna().all() and failed["offered"].isna().all()
    ok = frame[frame["status"] == "ok"]
    assert ok["p99_ms"].notna().all() and (ok["error"] == "").all()
    assert frame.attrs["sweep"]["failed"] == 2
    summary = aggregate(frame)
    assert summary.loc[3, "ok"] == 0 and math.isnan(summary.loc[3, "p99_ms_mean"])


def _die_on_p2c(scenario: Scenario) -> Any:
    if scenario.balancer.strategy == "p2c":
        os._exit(3)  # the worker process dies mid-run, as on an out-of-memory kill
    return simulate(scenario)


def test_a_worker_that_dies_fails_its_run_only(client: Client) -> None:
    grid = {"balancer.strategy": ["round_robin", "p2c", "random"]}
    frame = sweep(QUICKSTART, grid, overrides=SHORT, scheduler=client, runner=_die_on_p2c)
    assert frame["status"].tolist() == ["ok", "failed", "ok"]
    assert "KilledWorker" in frame.loc[1, "error"]
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it


def test_cli_uses_the_cluster_at_the_scheduler_address(
    cluster: LocalCluster, client: Client, tmp_path: Path
) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "labkit",
            "sweep",
            str(QUICKSTART),
            "--grid",
            "balancer.strategy=round_robin,p2c",
            "--repeats",
            "2",
            "--set",
            "duration_s=3",
            "--set",
            "warmup_s=1",
            "--set",
            "workload.arrival.rate_rps=500",
            "--scheduler",
            cluster.scheduler_address,
            "--no-report",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert out.returncode == 0, out.stderr
    assert f"on {cluster.scheduler_address} (2 workers)" in out.stdout
    frame = pd.read_parquet(tmp_path / "sweep.parquet")
    assert len(frame) == 4 and (frame["status"] == "ok").all()
    assert set(frame["worker"]) <= _workers(client)
    # the cluster is not the CLI's: it is still up with both workers
    assert cluster.status.name == "running" and len(_workers(client)) == 2
    assert not (tmp_path / "report.html").exists()


# -- plots -------------------------------------------------------------------------------------


def _synthetic(keys: dict[str, list[Any]], repeats: int = 3) -> pd.DataFrame:
    """A sweep table without running anything: p99 grows with the load and the point index."""
    rows = []
    for point, values in enumerate(expand_grid(keys)):
        for r in range(repeats):
            load = float(values.values.get("workload.arrival.rate_rps", 1))
            p99 = 100 + load / 10 + 20 * point + r
            rows.append(
                {
                    **values.values,
                    "point": point,
                    "repeat": r,
                    "seed": r,
                    "status": "ok",
                    "error": "",
                    "p99_ms": p99,
                    "error_rate": 0.02 * (point % 2),
                }
            )
    frame = pd.DataFrame(rows)
    frame.attrs["grid"] = list(keys)
    return frame


@pytest.mark.parametrize(
    ("keys", "curve_panels", "heatmap_panels"),
    [
        ({}, 1, 1),
        ({"balancer.strategy": ["p2c", "random"]}, 1, 1),
        ({"workload.arrival.rate_rps": [1000, 2000], "balancer.strategy": ["p2c", "random"]}, 1, 1),
        (
            {
                "balancer.strategy": ["p2c", "random"],
                "registry.consistency": ["eventual", "strong"],
                "workload.arrival.rate_rps": [1000, 2000],
            },
            2,
            2,
        ),
    ],
)
def test_sweep_plots_handle_any_number_of_keys(
    keys: dict[str, list[Any]], curve_panels: int, heatmap_panels: int
) -> None:
    from labkit.sweep_plots import summary_table, sweep_curves, sweep_heatmap

    frame = _synthetic(keys)
    curves = sweep_curves(frame)
    assert (
        len([a for a in curves.axes if a.get_visible() and a.get_label() != "<colorbar>"])
        == curve_panels
    )
    heatmap = sweep_heatmap(frame, "error_rate")
    assert len([a for a in heatmap.axes if a.get_label() != "<colorbar>"]) == heatmap_panels
    if len(keys) >= 2:  # the load key is the x axis of both
        assert (
            curves.axes[0].get_xlabel()
            == heatmap.axes[0].get_xlabel()
            == "workload.arrival.rate_rps"
        )
    table = summary_table(frame)
    assert len(table) == max(1, math.prod(len(v) for v in keys.values()))
    assert table["ok/runs"].eq("3/3").all() and table["p99 ms"].str.contains("±").all()
    # the summary draws the same as the tidy table
    assert sweep_curves(aggregate(frame)).axes[0].get_title() == curves.axes[0].get_title()
    assert sweep_curves(frame.iloc[0:0]).axes[0].texts  # an empty table: a note, no exception
