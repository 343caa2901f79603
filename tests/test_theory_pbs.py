"""Tests for ``labkit.theory.wars_t_visibility``: the WARS Monte Carlo of PBS t-visibility.

The Monte Carlo is checked against an exact result rather than against itself. For N=3, R=W=1,
exponential W (rate lam, lam != 1) and A=R=S exponential with mean 1 ms, a read started delta
after the commit asks one replica j (the fastest responder by R+S, independent of the write) and
is inconsistent iff W_j > C + delta + R_j, where C is the fastest W+A among the other two
replicas (if j itself acknowledged first, commit >= W_j and the read is consistent). W_j is
memoryless and independent of C and R_j, so

    P(inconsistent) = exp(-lam * delta) * E[exp(-lam * C)] * E[exp(-lam * R_j)],

and both expectations have closed forms (see :func:`n3_r1_w1_inconsistency`). Inconsistency
decays exactly exponentially in delta at the rate of W.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from labkit.distributions import Distribution, parse_distribution
from labkit.theory import pbs_k_staleness, wars_t_visibility

ONE_MS = parse_distribution({"dist": "exponential", "mean_ms": 1})


def exp_ms(mean_ms: float) -> Distribution:
    return parse_distribution({"dist": "exponential", "mean_ms": mean_ms})


def n3_r1_w1_inconsistency(w_mean_ms: float, delta_ms: float) -> float:
    """Exact P(inconsistent read) for N=3, R=W=1, W ~ exp(mean w_mean_ms), A=R=S ~ exp(1 ms).

    E[exp(-lam*C)]: C = min of two W+A; W+A (hypoexponential, rates lam and 1) has survival
    (lam*e^-t - e^-lam*t)/(lam - 1), so E[e^-lam*C] = 1 - lam * int e^-lam*t S(t)^2 dt.
    E[exp(-lam*R_j)]: R_j + S_j = M, the minimum of three Gamma(2, 1) round trips, with density
    3m(1+m)^2 e^-3m; given M, R_j is uniform on [0, M]; integrating gives
    (3/lam) * (g(3) - g(3 + lam)) with g(a) = 1/a + 2/a^2 + 2/a^3.
    """
    lam = 1.0 / w_mean_ms
    if math.isclose(lam, 1.0):
        raise ValueError("the closed form needs W's rate != 1")
    integral = (lam**2 / (lam + 2) - 2 * lam / (1 + 2 * lam) + 1 / (3 * lam)) / (lam - 1) ** 2
    e_commit = 1 - lam * integral

    def g(a: float) -> float:
        return 1 / a + 2 / a**2 + 2 / a**3

    e_read = 3 / lam * (g(3) - g(3 + lam))
    return math.exp(-lam * delta_ms) * e_commit * e_read


def delta_for(w_mean_ms: float, target: float) -> float:
    """Smallest delta (ms) with P(consistent) >= target, from the exact form."""
    return w_mean_ms * math.log(n3_r1_w1_inconsistency(w_mean_ms, 0.0) / (1 - target))


def within(estimate: float, p: float, trials: int, sigmas: float = 4.0) -> bool:
    """Binomial tolerance: |estimate - p| within ``sigmas`` standard errors (floor 1/trials)."""
    se = math.sqrt(max(p * (1 - p), 1 / trials) / trials)
    return abs(estimate - p) <= sigmas * se


# -- the exact form itself, against the paper's synthetic figures ------------------------------


def test_exact_form_matches_paper_figures() -> None:
    # PBS §5 synthetic case (W mean 0.25 ms): "~94% at t=0, 99.9% after 1 ms"
    assert 1 - n3_r1_w1_inconsistency(0.25, 0.0) == pytest.approx(0.94295, abs=1e-5)
    assert delta_for(0.25, 0.999) == pytest.approx(1.011, abs=1e-3)  # 1 ms, rounded in the paper
    # W mean 10 ms: "~41% at t=0, 99.9% after ~65 ms": the model gives 42.0% and 63.6 ms
    assert 1 - n3_r1_w1_inconsistency(10.0, 0.0) == pytest.approx(0.41956, abs=1e-5)
    assert delta_for(10.0, 0.999) == pytest.approx(63.64, abs=0.01)


# -- Monte Carlo against the exact form ---------------------------------------------------------


@pytest.mark.parametrize(
    ("w_mean_ms", "deltas"),
    [
        (0.25, [0.0, 0.25, 0.5, 1.0, 1.011, 2.0]),
        (10.0, [0.0, 5.0, 20.0, 40.0, 63.64, 80.0]),
        (3.0, [0.0, 1.0, 3.0, 10.0]),
    ],
)
def test_monte_carlo_matches_exact_form(w_mean_ms: float, deltas: list[float]) -> None:
    trials = 400_000
    got = wars_t_visibility(
        3, 1, 1, exp_ms(w_mean_ms), ONE_MS, ONE_MS, ONE_MS, deltas, trials, np.random.default_rng(7)
    )
    assert got.shape == (len(deltas),)
    for d, p_hat in zip(deltas, got, strict=True):
        p = 1 - n3_r1_w1_inconsistency(w_mean_ms, d)
        assert within(float(p_hat), p, trials), (w_mean_ms, d, p_hat, p)


def test_paper_figures_from_monte_carlo() -> None:
    """94% / 99.9%-after-1-ms and 42% / 99.9%-after-~64-ms, measured, not computed."""
    trials = 1_000_000
    fast = wars_t_visibility(
        3, 1, 1, exp_ms(0.25), ONE_MS, ONE_MS, ONE_MS, [0.0, 0.95, 1.1], trials,
        np.random.default_rng(11),
    )  # fmt: skip
    assert fast[0] == pytest.approx(0.943, abs=0.002)
    assert fast[1] < 0.999 < fast[2]  # 99.9% is crossed between 0.95 and 1.1 ms (exact: 1.011)
    slow = wars_t_visibility(
        3, 1, 1, exp_ms(10.0), ONE_MS, ONE_MS, ONE_MS, [0.0, 60.0, 68.0], trials,
        np.random.default_rng(12),
    )  # fmt: skip
    assert slow[0] == pytest.approx(0.420, abs=0.002)
    assert slow[1] < 0.999 < slow[2]  # crossed between 60 and 68 ms (exact: 63.6)


def test_monotone_in_delta_and_in_quorums() -> None:
    deltas = np.linspace(0, 20, 41)
    w = exp_ms(5.0)
    base = wars_t_visibility(
        3, 1, 1, w, ONE_MS, ONE_MS, ONE_MS, deltas, 50_000, np.random.default_rng(1)
    )
    assert np.all(np.diff(base) >= 0)  # one sorted array per block: monotone by construction
    bigger_r = wars_t_visibility(
        3, 2, 1, w, ONE_MS, ONE_MS, ONE_MS, deltas, 50_000, np.random.default_rng(1)
    )
    assert bigger_r[0] > base[0] + 0.05
    strong = wars_t_visibility(
        3, 2, 2, w, ONE_MS, ONE_MS, ONE_MS, deltas, 50_000, np.random.default_rng(1)
    )
    assert np.all(strong == 1.0)  # r + w > n: quorum intersection, consistent at any delta


def test_read_all_replicas_is_always_consistent() -> None:
    got = wars_t_visibility(
        4, 4, 1, exp_ms(50.0), ONE_MS, ONE_MS, ONE_MS, [0.0], 20_000, np.random.default_rng(2)
    )
    assert got[0] == 1.0  # the replica that acknowledged first holds the write at commit


@pytest.mark.parametrize(("n", "r", "w"), [(3, 1, 1), (5, 1, 2), (3, 2, 1), (5, 2, 2)])
def test_quorum_fanout_is_flat_at_k_staleness(n: int, r: int, w: int) -> None:
    """No anti-entropy: only the write quorum ever has the write, so waiting does not help and
    P(consistent) = 1 - P(read quorum misses write quorum), the PBS closed form at k=1."""
    trials = 100_000
    got = wars_t_visibility(
        n, r, w, exp_ms(2.0), ONE_MS, ONE_MS, ONE_MS, [0.0, 10.0, 1000.0], trials,
        np.random.default_rng(n * 100 + r * 10 + w), write_fanout="quorum",
    )  # fmt: skip
    expected = 1 - pbs_k_staleness(n, r, w)
    assert got[0] == got[1] == got[2]
    assert within(float(got[0]), expected, trials), (got[0], expected)


def test_constant_delays_are_deterministic() -> None:
    c = parse_distribution(1)
    # W=A=R=S=1 ms: commit at 2 ms, every replica already has the write: always consistent
    assert wars_t_visibility(3, 1, 1, c, c, c, c, [0.0], 10, np.random.default_rng(0))[0] == 1.0
    # W=5 ms but A=0: commit at 5 ms, and every replica got the write at 5 ms too
    w5 = parse_distribution(5)
    zero = parse_distribution(0)
    assert wars_t_visibility(3, 1, 2, w5, zero, c, c, [0.0], 10, np.random.default_rng(0))[0] == 1.0
    # negative delta: a read "before" the commit; it reaches the replica 1 ms after starting,
    # so it sees the write iff it starts at most 1 ms before the commit
    got = wars_t_visibility(3, 1, 1, c, c, c, c, [-3.5, -1.0, -0.5], 10, np.random.default_rng(0))
    assert got.tolist() == [0.0, 1.0, 1.0]


def test_blocks_and_seed_reproducibility(monkeypatch: pytest.MonkeyPatch) -> None:
    import labkit.theory as theory

    args = (3, 1, 1, exp_ms(2.0), ONE_MS, ONE_MS, ONE_MS, [0.0, 2.0], 10_001)
    one = wars_t_visibility(*args, np.random.default_rng(3))
    assert np.array_equal(one, wars_t_visibility(*args, np.random.default_rng(3)))
    monkeypatch.setattr(theory, "_WARS_BLOCK", 3 * 1000)  # 11 blocks, the last one short
    chunked = wars_t_visibility(*args, np.random.default_rng(3))
    assert np.abs(chunked - one).max() < 0.03  # same estimate, different draws


def test_validation() -> None:
    rng = np.random.default_rng(0)
    d = ONE_MS
    with pytest.raises(ValueError, match="n must be"):
        wars_t_visibility(0, 1, 1, d, d, d, d, [0.0], 10, rng)
    with pytest.raises(ValueError, match="1 <= r, w <= n"):
        wars_t_visibility(3, 4, 1, d, d, d, d, [0.0], 10, rng)
    with pytest.raises(ValueError, match="1 <= r, w <= n"):
        wars_t_visibility(3, 1, 0, d, d, d, d, [0.0], 10, rng)
    with pytest.raises(ValueError, match="trials"):
        wars_t_visibility(3, 1, 1, d, d, d, d, [0.0], 0, rng)
    with pytest.raises(ValueError, match="write_fanout"):
        wars_t_visibility(3, 1, 1, d, d, d, d, [0.0], 10, rng, write_fanout="some")
    with pytest.raises(ValueError, match="nan"):
        wars_t_visibility(3, 1, 1, d, d, d, d, [math.nan], 10, rng)
