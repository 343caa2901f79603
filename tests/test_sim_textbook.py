"""The idealized simulator must reproduce textbook queueing results (GUIDE §3).

Seeds are fixed, so these tests are deterministic; several seeds are pooled where one run at
high load would only be good to a few percent, so the tolerances are tight enough to catch a
wrong model (a missing queue, a misrouted request, a clock bug) without being flaky.
"""

from __future__ import annotations

import numpy as np
import pytest

from labkit import theory
from labkit.sim import simulate
from labkit.stats import batch_means_ci
from tests.helpers import idealized


def _sojourns_ms(results) -> np.ndarray:  # type: ignore[no-untyped-def]
    r = results.records
    ok = r[r["measured"] & (r["status"] == "completed")]
    assert len(ok) == len(r[r["measured"]]), "the idealized case must complete every request"
    return ok["latency_ms"].to_numpy()


def _pooled_mean(seeds, **kw) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Mean sojourn over several seeds, and the widest batch-means CI half-width among them."""
    means, halves = [], []
    for seed in seeds:
        mean, half = batch_means_ci(_sojourns_ms(simulate(idealized(seed=seed, **kw))))
        means.append(mean)
        halves.append(half)
    return float(np.mean(means)), float(max(halves))


def test_random_balancing_is_mm1_per_worker() -> None:
    # 20 workers, rho = 0.7: each is M/M/1 with lambda/n, W = 1/(mu - lambda/n)
    n, mu, rho = 20, 100.0, 0.7
    lam = rho * mu * n
    expected_ms = theory.mm1_sojourn(lam / n, mu) * 1000
    mean, half = _pooled_mean((1, 2, 3), workers=n, rate_rps=lam, strategy="random")
    assert abs(mean - expected_ms) / expected_ms < 0.03, (mean, expected_ms, half)


def test_round_robin_matches_gi_m_1_with_erlang_arrivals() -> None:
    n, mu, rho = 10, 100.0, 0.8
    lam = rho * mu * n
    expected_ms = theory.round_robin_sojourn(lam, mu, n) * 1000
    mean, _ = _pooled_mean((1, 2, 3), workers=n, rate_rps=lam, strategy="round_robin")
    assert abs(mean - expected_ms) / expected_ms < 0.03, (mean, expected_ms)
    # and clearly better than random at this load (M/M/1: 50 ms; round robin ≈ 28.8 ms)
    assert mean < 0.7 * theory.mm1_sojourn(lam / n, mu) * 1000


def test_single_worker_with_c_slots_is_erlang_c() -> None:
    c, mu, rho = 8, 100.0, 0.8
    lam = rho * c * mu
    expected_ms = theory.mmc_sojourn(lam, mu, c) * 1000
    mean, _ = _pooled_mean((1, 2, 3), workers=1, concurrency=c, rate_rps=lam, duration_s=60)
    assert abs(mean - expected_ms) / expected_ms < 0.03, (mean, expected_ms)


def test_power_of_two_choices_reproduces_the_supermarket_model() -> None:
    # Mitzenmacher: T_2(0.9) ≈ 2.61 service times on a large fleet, vs 10 for random
    n, mu, rho = 100, 100.0, 0.9
    lam = rho * mu * n
    expected_ms = theory.supermarket_sojourn(rho, 2, mu) * 1000
    results = simulate(
        idealized(workers=n, rate_rps=lam, strategy="p2c", duration_s=30, warmup_s=5)
    )
    mean = float(np.mean(_sojourns_ms(results)))
    # a finite fleet sits slightly above the n → ∞ limit
    assert expected_ms * 0.98 < mean < expected_ms * 1.06, (mean, expected_ms)
    assert mean < 0.35 * theory.mm1_sojourn(lam / n, mu) * 1000


def test_littles_law_holds_on_a_run() -> None:
    results = simulate(idealized(workers=20, rate_rps=1400, strategy="p2c", duration_s=60))
    s = results.summary
    r = results.records
    measured = r[r["measured"]]
    w_s = float(measured["latency_ms"].mean()) / 1000
    lam = s["offered_rps"]
    L = s["sim"]["mean_in_flight"]
    assert L == pytest.approx(lam * w_s, rel=0.03)


def test_same_seed_same_summary_and_different_seed_differs() -> None:
    def run(seed: int) -> dict:
        s = simulate(idealized(workers=10, rate_rps=700, duration_s=10, seed=seed)).summary
        s = dict(s)
        s["sim"] = {k: v for k, v in s["sim"].items() if k not in ("wall_s", "requests_per_wall_s")}
        return s

    assert run(5) == run(5)
    assert run(5)["latency_ms"] != run(6)["latency_ms"]
