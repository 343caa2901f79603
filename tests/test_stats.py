from __future__ import annotations

import math

import numpy as np
import pytest

from labkit.stats import batch_means_ci, exact_percentiles, student_t_critical


def test_percentiles_of_a_known_array() -> None:
    result = exact_percentiles(np.arange(1, 101))  # 1..100
    assert result == pytest.approx(
        {
            "p50": 50.5,
            "p90": 90.1,
            "p95": 95.05,
            "p99": 99.01,
            "p999": 99.901,
            "mean": 50.5,
            "max": 100.0,
        }
    )
    assert exact_percentiles([3.0], qs=(50, 99.99)) == {
        "p50": 3.0,
        "p9999": 3.0,
        "mean": 3.0,
        "max": 3.0,
    }


def test_empty_input_gives_nan() -> None:
    result = exact_percentiles([])
    assert set(result) == {"p50", "p90", "p95", "p99", "p999", "mean", "max"}
    assert all(math.isnan(v) for v in result.values())
    mean, half = batch_means_ci([])
    assert math.isnan(mean) and math.isnan(half)
    mean, half = batch_means_ci([1.0, 3.0], batches=20)
    assert mean == 2.0 and math.isnan(half)


@pytest.mark.parametrize(
    ("dof", "expected"), [(1, 12.7062), (2, 4.3027), (5, 2.5706), (19, 2.0930), (60, 2.0003)]
)
def test_student_t_critical_matches_tables(dof: int, expected: float) -> None:
    assert student_t_critical(0.95, dof) == pytest.approx(expected, abs=1e-4)


def test_student_t_critical_other_levels() -> None:
    assert student_t_critical(0.99, 10) == pytest.approx(3.1693, abs=1e-4)
    assert student_t_critical(0.90, 4) == pytest.approx(2.1318, abs=1e-4)
    assert student_t_critical(0.95, 50_000) == pytest.approx(1.96, abs=1e-3)


def test_ci_covers_the_true_mean_of_iid_exponentials() -> None:
    rng = np.random.default_rng(2024)
    covered = 0
    for _ in range(200):
        mean, half = batch_means_ci(rng.exponential(4.0, 2_000))
        assert half > 0
        covered += abs(mean - 4.0) <= half
    # Nominal 95%; 200 replications give a binomial spread of about +-3%.
    assert 0.88 <= covered / 200 <= 0.99


def test_ci_shrinks_with_more_data_and_drops_leftovers_from_the_start() -> None:
    rng = np.random.default_rng(7)
    _, small = batch_means_ci(rng.exponential(1.0, 1_000))
    _, large = batch_means_ci(rng.exponential(1.0, 100_000))
    assert large < small / 5
    # 23 samples in 20 batches: the first three are dropped.
    mean, _ = batch_means_ci([1000.0] * 3 + [1.0] * 20)
    assert mean == 1.0


def test_batch_means_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        batch_means_ci([1.0, 2.0], batches=1)
    with pytest.raises(ValueError):
        batch_means_ci(np.ones(100), confidence=1.5)
