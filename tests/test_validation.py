"""labkit.validation: the comparison tables behind notebook 07 (simulator vs queueing theory and
PBS). Small runs: the tables' shape, the agreement the full-size checks in test_sim_textbook.py
and test_core_state.py hold to tight tolerances, and the guards on the formulas' assumptions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from labkit import theory
from labkit.notebook import load
from labkit.results.consistency import visibility_curve
from labkit.sim import simulate
from labkit.validation import (
    k_staleness_vs_theory,
    littles_law,
    plot_k_staleness,
    plot_sojourn,
    queue_case,
    scorecard,
    sojourn_vs_theory,
    t_visibility_vs_wars,
    theory_sojourn_ms,
    wilson,
)


@pytest.fixture(scope="module")
def sweep() -> pd.DataFrame:
    return sojourn_vs_theory(("mmc", "random", ("p2c", 20)), (0.5, 0.8), requests=6000)


def test_cases_and_their_formulas() -> None:
    mmc = queue_case("mmc", 8)
    assert (mmc.workers, mmc.slots, mmc.servers, mmc.exact) == (1, 8, 8, True)
    assert theory_sojourn_ms(mmc, 0.9, 10.0) == pytest.approx(
        theory.mmc_sojourn(720, 100, 8) * 1000
    )
    assert theory_sojourn_ms(queue_case("random", 8), 0.9, 10.0) == pytest.approx(100.0)
    rr = queue_case("round_robin", 10)
    assert theory_sojourn_ms(rr, 0.8, 10.0) == pytest.approx(
        theory.round_robin_sojourn(800, 100, 10) * 1000
    )
    p2c = queue_case("p2c", 100)
    assert not p2c.exact and p2c.strategy == "p2c"
    assert theory_sojourn_ms(p2c, 0.9, 10.0) == pytest.approx(26.1405, rel=1e-4)
    with pytest.raises(ValueError, match="unknown model"):
        queue_case("jsq", 8)
    with pytest.raises(ValueError, match="workers"):
        queue_case("random", 0)


def test_sojourn_sweep_agrees_with_theory(sweep: pd.DataFrame) -> None:
    assert list(sweep["model"].unique()) == [
        "M/M/8: 1 worker, 8 slots",
        "random, 8 workers",
        "p2c, 20 workers",
    ]
    assert len(sweep) == 6 and set(sweep["rho"]) == {0.5, 0.8}
    assert (sweep["requests"] > 5500).all()  # about `requests` after the warm-up
    exact = sweep[sweep["exact"]]
    assert (exact["rel_error"].abs() < 0.1).all(), exact[["model", "rho", "rel_error"]]
    assert (sweep["ci_ms"] > 0).all()
    # the interval grows with the load: queues correlate successive latencies
    for _, g in sweep.groupby("model"):
        assert g.sort_values("rho")["ci_ms"].is_monotonic_increasing
    # a finite p2c fleet sits above the n → ∞ supermarket limit, never below it by much
    p2c = sweep[~sweep["exact"]]
    assert (p2c["rel_error"] > -0.05).all()
    # Little's law holds on every run
    assert (sweep["littles_rel_error"].abs() < 0.03).all()
    row = sweep.iloc[0]
    assert row["ci_contains_theory"] == (abs(row["sim_ms"] - row["theory_ms"]) <= row["ci_ms"])


def test_littles_law_on_one_run() -> None:
    res = simulate(load("idealized", "duration_s=20", "warmup_s=2", quick=()))
    law = littles_law(res)
    assert law["lambda_rps"] == pytest.approx(720, rel=0.05)
    assert law["L"] == pytest.approx(law["lambda_W"], rel=0.03)


def test_the_formulas_assumptions_are_checked() -> None:
    lognormal = load(
        "idealized", "workers.service_time={dist: lognormal, median_ms: 8, p99_ms: 40}"
    )
    with pytest.raises(ValueError, match="exponential service"):
        sojourn_vs_theory(("random",), (0.5,), base=lognormal, requests=100)
    retries = load("idealized", "gateway.retries={max_attempts: 2}")
    with pytest.raises(ValueError, match="no retries"):
        sojourn_vs_theory(("random",), (0.5,), base=retries, requests=100)
    slow_network = load("idealized", "network.latency={dist: constant, value_ms: 1}")
    with pytest.raises(ValueError, match="no network delay"):
        sojourn_vs_theory(("random",), (0.5,), base=slow_network, requests=100)
    bounded = load("idealized", "workers.queue_limit=10")
    with pytest.raises(ValueError, match="unbounded queues"):
        sojourn_vs_theory(("random",), (0.5,), base=bounded, requests=100)
    with pytest.raises(ValueError, match=r"utilisation must be in \(0, 1\)"):
        sojourn_vs_theory(("random",), (1.0,), requests=100)
    with pytest.raises(ValueError, match="seed"):
        sojourn_vs_theory(("random",), (0.5,), seeds=(), requests=100)


def test_seeds_are_pooled() -> None:
    one = sojourn_vs_theory(("random",), (0.5,), requests=2000, seeds=(1,))
    two = sojourn_vs_theory(("random",), (0.5,), requests=2000, seeds=(1, 2))
    assert two["requests"].iloc[0] == pytest.approx(2 * one["requests"].iloc[0], rel=0.1)
    assert two["ci_ms"].iloc[0] < one["ci_ms"].iloc[0]


def test_wilson_interval() -> None:
    lo, hi = wilson(5, 10)
    assert (float(lo), float(hi)) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    lo, hi = wilson(0, 10)
    assert float(lo) == pytest.approx(0.0, abs=1e-12) and float(hi) == pytest.approx(0.2775, 1e-3)
    lo, hi = wilson(np.array([10, 0]), np.array([10, 0]))
    assert float(hi[0]) == pytest.approx(1.0) and math.isnan(lo[1])


def test_k_staleness_matches_the_closed_form() -> None:
    frame = k_staleness_vs_theory(((3, 1, 1), (3, 2, 1)), (1, 2), trials=4000, seed=3)
    assert list(frame.columns[:5]) == ["n", "r", "w", "k", "trials"]
    assert len(frame) == 4
    for _, row in frame.iterrows():
        p = row["theory"]
        assert p == theory.pbs_k_staleness(row["n"], row["r"], row["w"], row["k"])
        se = math.sqrt(p * (1 - p) / row["trials"])
        assert abs(row["measured"] - p) < 4 * se, row
        assert row["ci_low"] <= row["measured"] <= row["ci_high"]
    with pytest.raises(ValueError, match="k must be"):
        k_staleness_vs_theory(((3, 1, 1),), (0,), trials=10)


def test_t_visibility_against_wars() -> None:
    res = simulate(load("state_consistency", "duration_s=12", "warmup_s=2", quick=()))
    frame = t_visibility_vs_wars(res, trials=100_000)
    # the same reads, bins and freshness as the results layer's own curve
    ops = res.state_ops
    sc = res.scenario
    window = ops[(ops["t_s"] >= sc.warmup_s) & (ops["t_s"] < sc.duration_s)]
    curve = visibility_curve(window)
    assert frame["reads"].tolist() == curve["reads"].tolist()
    np.testing.assert_allclose(frame["p_consistent"], curve["p_consistent"], equal_nan=True)
    has = frame[frame["reads"] > 0]
    assert ((has["ci_low"] <= has["p_consistent"]) & (has["p_consistent"] <= has["ci_high"])).all()
    # WARS rises with Δ, and the simulation agrees with it within a few points everywhere
    assert has["wars"].is_monotonic_increasing
    assert (has["abs_error"].abs() < 0.15).all()
    assert has["ci_contains_theory"].mean() > 0.7
    assert has["wars"].iloc[-1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="state section"):
        t_visibility_vs_wars(simulate(load("idealized", "duration_s=2", "warmup_s=1", quick=())))


def test_scorecard_and_plots(sweep: pd.DataFrame) -> None:
    ks = k_staleness_vs_theory(((3, 1, 1),), (1,), trials=500)
    card = scorecard(sweep, ks)
    assert len(card) == 3 + 2  # one line per model, Little's law, k-staleness
    assert card.loc["random, 8 workers vs M/M/1 (supermarket d=1)", "points"] == 2
    assert "Little's law" in card.index[3]
    fig = plot_sojourn(sweep)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert len(fig.axes[0].get_legend().get_texts()) == 3
    fig = plot_k_staleness(ks)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
