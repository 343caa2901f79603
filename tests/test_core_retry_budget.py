"""Tests for ``labkit.core.retry_budget``: a Finagle-style retry budget."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.core.retry_budget import RetryBudget, RetryBudgetConfig

SETTINGS = settings(derandomize=True, deadline=None, max_examples=150)


# -- config -------------------------------------------------------------------------------------


def test_config_defaults_are_finagles() -> None:
    c = RetryBudgetConfig()
    assert (c.ratio, c.min_per_s, c.window_s, c.buckets) == (0.2, 10.0, 10.0, 10)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"ratio": -0.1}, "ratio"),
        ({"ratio": math.inf}, "ratio"),
        ({"min_per_s": -1.0}, "min_per_s"),
        ({"min_per_s": math.nan}, "min_per_s"),
        ({"window_s": 0.0}, "window_s"),
        ({"buckets": 0}, "buckets"),
        ({"buckets": 2.0}, "buckets"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        RetryBudgetConfig(**kwargs)  # type: ignore[arg-type]


# -- behaviour ----------------------------------------------------------------------------------


def test_reserve_allows_retries_with_no_traffic() -> None:
    b = RetryBudget(RetryBudgetConfig(min_per_s=10.0, window_s=10.0))
    granted = sum(b.try_spend(5.0) for _ in range(150))
    assert granted == 100  # min_per_s × window_s
    assert (b.spent, b.denied) == (100, 50)
    assert b.available(5.0) == 0.0
    # no reserve, no traffic: nothing
    none = RetryBudget(RetryBudgetConfig(min_per_s=0.0))
    assert not none.try_spend(0.0)


def test_ratio_of_requests_in_the_window() -> None:
    b = RetryBudget(RetryBudgetConfig(ratio=0.2, min_per_s=0.0))
    for _ in range(50):
        b.on_request(1.0)
    assert b.available(1.0) == pytest.approx(10.0)
    assert sum(b.try_spend(1.0) for _ in range(20)) == 10
    assert b.window_counts(1.0) == (50, 10)
    for _ in range(4):
        b.on_request(2.0)
    assert not b.try_spend(2.0)  # 10 + 1 ≤ 0.2 × 54 = 10.8 fails
    b.on_request(2.0)
    assert b.try_spend(2.0)  # 10 + 1 ≤ 0.2 × 55 = 11 holds
    assert (b.spent, b.denied) == (11, 11)


def test_steady_1000_rps_allows_about_200_retries_per_second() -> None:
    """1000 requests/s, each asking for a retry, ratio 0.2, reserve 10/s × 10 s.

    Per 10 s window: 0.2 × 10 000 + 100 = 2100 retries. The reserve is taken in the first second
    of each window-length period (its bucket expires 10 s later, together with its retries), the
    rest flows at 200/s, and the remaining 800/s are denied.
    """
    b = RetryBudget()
    per_s = [0] * 60
    for ms in range(60_000):
        t = ms / 1000
        b.on_request(t)
        if b.try_spend(t):
            per_s[ms // 1000] += 1
    assert b.requests == 60_000
    assert b.spent + b.denied == 60_000
    assert per_s == ([300] + [200] * 9) * 6
    for start in range(51):  # every 10 s window (on bucket boundaries) holds at most 2100
        assert sum(per_s[start : start + 10]) <= 0.2 * 10_000 + 100
    assert b.spent == 0.2 * 60_000 + 100 * 6  # the bound below, met with equality
    assert b.denied == 47_400


def test_deposits_expire_as_the_window_slides() -> None:
    b = RetryBudget()
    for _ in range(1000):
        b.on_request(0.0)
    assert sum(b.try_spend(0.0) for _ in range(400)) == 300  # 200 + reserve 100
    assert not b.try_spend(9.99)
    assert b.window_counts(9.99) == (1000, 300)
    # at 10 s the bucket [0, 1) leaves the window: its requests and retries both expire
    assert b.window_counts(10.0) == (0, 0)
    assert sum(b.try_spend(10.0) for _ in range(150)) == 100  # only the reserve now


def test_granularity_is_one_bucket() -> None:
    """A deposit counts for between window − bucket (exclusive) and window seconds."""
    b = RetryBudget(RetryBudgetConfig(ratio=1.0, min_per_s=0.0))  # buckets of 1 s
    b.on_request(0.0)
    b.on_request(0.999)
    assert b.window_counts(9.999) == (2, 0)
    assert b.window_counts(10.0) == (0, 0)  # the 0.999 deposit lasted only 9.001 s
    coarse = RetryBudget(RetryBudgetConfig(ratio=1.0, min_per_s=0.0, buckets=1))
    coarse.on_request(9.9)
    assert coarse.window_counts(9.99) == (1, 0)
    assert coarse.window_counts(10.0) == (0, 0)  # one bucket: a deposit may last 0.1 s


def test_reserve_granularity_exceeds_the_naive_bound() -> None:
    """spent ≤ ratio·requests + min_per_s·(elapsed + window) fails by up to one bucket."""
    b = RetryBudget(RetryBudgetConfig(ratio=0.0, min_per_s=10.0))
    first = sum(b.try_spend(0.999) for _ in range(200))
    second = sum(b.try_spend(10.0) for _ in range(200))
    assert first == second == 100
    elapsed = 10.0 - 0.999
    assert b.spent > 10.0 * (elapsed + 10.0)
    assert b.spent <= 10.0 * (elapsed + 10.0 + 1.0)


def test_long_gap_clears_everything() -> None:
    b = RetryBudget(RetryBudgetConfig(min_per_s=0.0))
    for _ in range(100):
        b.on_request(0.0)
    assert b.try_spend(0.0)
    assert b.window_counts(1e6) == (0, 0)
    assert not b.try_spend(1e6)


def test_time_going_backwards_counts_in_the_current_bucket() -> None:
    b = RetryBudget(RetryBudgetConfig(min_per_s=0.0, ratio=1.0))
    b.on_request(5.5)
    b.on_request(2.0)  # late: lands in the bucket of 5.5
    assert b.window_counts(14.9) == (2, 0)
    assert b.window_counts(15.0) == (0, 0)


def test_ratio_tolerates_float_rounding() -> None:
    # 0.29 × 100 = 28.999999999999996 in floating point; the 29th retry is still allowed
    b = RetryBudget(RetryBudgetConfig(ratio=0.29, min_per_s=0.0))
    for _ in range(100):
        b.on_request(0.0)
    assert sum(b.try_spend(0.0) for _ in range(40)) == 29


# -- property -----------------------------------------------------------------------------------


@SETTINGS
@given(
    ratio=st.sampled_from([0.0, 0.1, 0.2, 1.5]),
    min_per_s=st.sampled_from([0.0, 0.5, 10.0]),
    window_s=st.sampled_from([1.0, 10.0, 3.0]),
    buckets=st.sampled_from([1, 4, 10]),
    start=st.floats(-100.0, 100.0),
    steps=st.lists(
        st.tuples(st.floats(0.0, 3.0), st.integers(0, 5), st.integers(0, 8)), max_size=200
    ),
)
def test_spent_never_exceeds_the_proven_bound(
    ratio: float,
    min_per_s: float,
    window_s: float,
    buckets: int,
    start: float,
    steps: list[tuple[float, int, int]],
) -> None:
    """spent ≤ ratio·R + min_per_s·window_s·(⌊(e₁ − e₀)/buckets⌋ + 1)
    ≤ ratio·R + min_per_s·(elapsed + window_s + bucket_s), e₀/e₁ the buckets of the first call
    and of the last granted retry (see ``RetryBudget``)."""
    cfg = RetryBudgetConfig(ratio=ratio, min_per_s=min_per_s, window_s=window_s, buckets=buckets)
    b = RetryBudget(cfg)
    bucket_s = window_s / buckets
    t = start
    first = None
    last_spend = None
    for dt, requests, retries in steps:
        t += dt
        if first is None:
            first = t
        for _ in range(requests):
            b.on_request(t)
        for _ in range(retries):
            if b.try_spend(t):
                last_spend = t
    assert b.spent + b.denied == sum(r for _, _, r in steps)
    if last_spend is None or first is None:
        assert b.spent == 0
        return
    e0 = math.floor(first / bucket_s)
    e1 = math.floor(last_spend / bucket_s)
    reserve = min_per_s * window_s
    tight = ratio * b.requests + reserve * ((e1 - e0) // buckets + 1)
    loose = ratio * b.requests + min_per_s * (last_spend - first + window_s + bucket_s)
    assert b.spent <= tight + 1e-6
    assert b.spent <= loose + 1e-6
