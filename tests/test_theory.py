from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.theory import (
    erlang_c,
    littles_law_L,
    mm1_sojourn,
    mmc_sojourn,
    pbs_k_staleness,
    round_robin_sojourn,
    supermarket_sojourn,
    supermarket_tail,
)

utilisation = st.floats(min_value=0.01, max_value=0.98)
# Same examples on every run: a property failure must reproduce, not flake.
fixed = settings(derandomize=True)


def test_mm1() -> None:
    assert mm1_sojourn(0.9, 1.0) == pytest.approx(10.0)
    assert mm1_sojourn(0.0, 4.0) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="unstable"):
        mm1_sojourn(1.0, 1.0)


def test_erlang_c_reference_values() -> None:
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    # Textbook call-centre example: 10 agents, 8 Erlangs offered.
    assert erlang_c(10, 8.0) == pytest.approx(0.4092, abs=1e-4)
    assert erlang_c(1000, 900.0) < 1e-3  # no overflow for large c
    with pytest.raises(ValueError):
        erlang_c(2, 2.0)


@fixed
@given(rho=utilisation)
def test_erlang_c_single_server_is_rho(rho: float) -> None:
    assert erlang_c(1, rho) == pytest.approx(rho)


@fixed
@given(rho=utilisation, mu=st.floats(min_value=0.1, max_value=10))
def test_mmc_with_one_server_is_mm1(rho: float, mu: float) -> None:
    assert mmc_sojourn(rho * mu, mu, 1) == pytest.approx(mm1_sojourn(rho * mu, mu))


def test_mmc_pooling_beats_separate_queues() -> None:
    # Four servers at 90% sharing one queue vs. four independent M/M/1 queues.
    assert mmc_sojourn(3.6, 1.0, 4) < mm1_sojourn(0.9, 1.0)


def test_supermarket_reference_values() -> None:
    assert supermarket_sojourn(0.9, 2) == pytest.approx(2.6136, abs=1e-3)
    assert supermarket_sojourn(0.9, 1) == pytest.approx(10.0)
    assert supermarket_sojourn(0.9, 2, mu=2.0) == pytest.approx(2.6136 / 2, abs=1e-3)
    assert supermarket_tail(0.9, 2, 3) == pytest.approx(0.9**7)
    assert supermarket_tail(0.9, 1, 3) == pytest.approx(0.9**3)
    assert supermarket_tail(0.5, 3, 0) == 1.0


@fixed
@given(rho=utilisation, mu=st.floats(min_value=0.1, max_value=10))
def test_supermarket_d1_is_mm1_and_more_choices_help(rho: float, mu: float) -> None:
    assert supermarket_sojourn(rho, 1, mu) == pytest.approx(mm1_sojourn(rho * mu, mu))
    t1, t2, t3 = (supermarket_sojourn(rho, d, mu) for d in (1, 2, 3))
    assert t1 >= t2 >= t3 >= 1 / mu


@fixed
@given(rho=utilisation, mu=st.floats(min_value=0.1, max_value=10))
def test_round_robin_single_server_is_mm1(rho: float, mu: float) -> None:
    assert round_robin_sojourn(rho * mu, mu, 1) == pytest.approx(
        mm1_sojourn(rho * mu, mu), rel=1e-9
    )


@fixed
@given(rho=utilisation, n=st.integers(2, 32))
def test_round_robin_beats_random_routing(rho: float, n: int) -> None:
    lam = rho * n
    rr = round_robin_sojourn(lam, 1.0, n)
    assert 1.0 <= rr < mm1_sojourn(lam / n, 1.0)


def test_round_robin_reference_value() -> None:
    # n = 2 gives sigma solving a cubic; at rho = 0.9 the root is about 0.8536.
    sigma = 1 - 1 / round_robin_sojourn(1.8, 1.0, 2)
    assert sigma == pytest.approx((1.8 / (1.8 + 1 - sigma)) ** 2, rel=1e-12)
    assert round_robin_sojourn(1.8, 1.0, 2) == pytest.approx(7.588, abs=1e-3)
    with pytest.raises(ValueError):
        round_robin_sojourn(2.0, 1.0, 2)


def test_pbs_staleness() -> None:
    assert pbs_k_staleness(3, 1, 1) == pytest.approx(2 / 3)
    assert pbs_k_staleness(3, 1, 1, k=2) == pytest.approx(4 / 9)
    assert pbs_k_staleness(3, 2, 2) == 0.0  # overlapping quorums are never stale
    assert pbs_k_staleness(5, 1, 2) == pytest.approx(3 / 5)
    with pytest.raises(ValueError):
        pbs_k_staleness(3, 4, 1)


def test_littles_law() -> None:
    assert littles_law_L(0.9, 10.0) == pytest.approx(9.0)
    assert math.isclose(littles_law_L(2.0, mm1_sojourn(2.0, 4.0)), 1.0)
