"""Closed-form results the simulator is checked against.

A simulator that disagrees with M/M/1 under M/M/1 assumptions is wrong, so the tests run the
simulator in the regimes where these formulas hold and compare. Every function states its source
and the assumptions under which the number is exact; outside them it is only a reference point.
Rates are per unit time (any unit, used consistently); results are in the same time unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from labkit.distributions import Distribution

__all__ = [
    "erlang_c",
    "littles_law_L",
    "mm1_sojourn",
    "mmc_sojourn",
    "pbs_k_staleness",
    "round_robin_sojourn",
    "supermarket_sojourn",
    "supermarket_tail",
    "wars_t_visibility",
]


def _check_rates(lam: float, mu: float) -> None:
    if lam < 0:
        raise ValueError(f"arrival rate must be >= 0, got {lam}")
    if mu <= 0:
        raise ValueError(f"service rate must be > 0, got {mu}")


def _check_rho(rho: float) -> None:
    if not 0 <= rho < 1:
        raise ValueError(f"utilisation rho must be in [0, 1) for a stable queue, got {rho}")


def mm1_sojourn(lam: float, mu: float) -> float:
    """Mean time in system of an M/M/1 FIFO queue, W = 1/(mu - lam).

    Source: any queueing text (e.g. Kleinrock, Queueing Systems Vol. 1, 1975, §3.2). Assumes
    Poisson arrivals, exponential service, one server, infinite buffer; needs lam < mu.
    """
    _check_rates(lam, mu)
    if lam >= mu:
        raise ValueError(f"unstable queue: lam ({lam}) must be < mu ({mu})")
    return 1.0 / (mu - lam)


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with offered load a = lam/mu.

    Source: Erlang C formula (Kleinrock 1975, §3.5). Computed from the Erlang B recursion
    B(k) = a*B(k-1) / (k + a*B(k-1)), which avoids the factorials and powers that overflow for
    large c, then C = c*B / (c - a*(1 - B)). Needs a < c.
    """
    if c < 1:
        raise ValueError(f"number of servers must be >= 1, got {c}")
    if a < 0:
        raise ValueError(f"offered load must be >= 0, got {a}")
    if a >= c:
        raise ValueError(f"unstable queue: offered load a ({a}) must be < c ({c})")
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return c * b / (c - a * (1 - b))


def mmc_sojourn(lam: float, mu: float, c: int) -> float:
    """Mean time in system of an M/M/c FIFO queue (one shared queue, c servers).

    W = C(c, a) / (c*mu - lam) + 1/mu with a = lam/mu (Kleinrock 1975, §3.5). This is the ideal
    a gateway with a single central queue would reach; per-worker queues can only do worse.
    """
    _check_rates(lam, mu)
    if lam >= c * mu:
        raise ValueError(f"unstable queue: lam ({lam}) must be < c*mu ({c * mu})")
    return erlang_c(c, lam / mu) / (c * mu - lam) + 1.0 / mu


def supermarket_sojourn(rho: float, d: int, mu: float = 1.0) -> float:
    """Mean sojourn time under power-of-d-choices routing (join the shortest of d random queues).

    T_d(rho) = (1/mu) * sum_{i>=1} rho^((d^i - d)/(d - 1)), the fixed point of the supermarket
    model (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing", IEEE TPDS 2001).
    Exact only in the limit of infinitely many servers, with Poisson arrivals, exponential service
    and per-server utilisation rho; for finite fleets it is a good approximation (slightly
    optimistic). d = 1 is random routing, i.e. independent M/M/1 queues.
    """
    _check_rho(rho)
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    if mu <= 0:
        raise ValueError(f"service rate must be > 0, got {mu}")
    if d == 1:
        return 1.0 / (mu * (1 - rho))
    total = 0.0
    i = 1
    while True:
        exponent = (d**i - d) // (d - 1)  # an integer: 1 + d + ... + d^(i-2)
        term = rho**exponent
        total += term
        if term < 1e-15:
            return total / mu
        i += 1


def supermarket_tail(rho: float, d: int, i: int) -> float:
    """Fraction of queues holding at least ``i`` jobs in the supermarket model.

    s_i = rho^((d^i - 1)/(d - 1)) (Mitzenmacher 2001); for d = 1 it is the M/M/1 tail rho^i.
    The doubly exponential decay for d >= 2 is why two choices nearly remove long queues.
    Same assumptions as :func:`supermarket_sojourn`.
    """
    _check_rho(rho)
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    if i < 0:
        raise ValueError(f"queue length i must be >= 0, got {i}")
    if d == 1:
        return rho**i
    return rho ** ((d**i - 1) // (d - 1))


def round_robin_sojourn(lam: float, mu: float, n: int) -> float:
    """Mean sojourn time when a Poisson stream of rate lam is dealt round robin to n servers.

    Each server then sees every n-th arrival: Erlang-n interarrival times with mean n/lam, so it is
    a GI/M/1 queue (Kleinrock 1975, §6.4). With A*(s) = (lam/(lam + s))^n the interarrival
    Laplace transform, sigma is the root in (0, 1) of sigma = A*(mu(1 - sigma)) and
    W = 1/(mu(1 - sigma)). Assumes exponential service and lam/n < mu; n = 1 is M/M/1.
    """
    _check_rates(lam, mu)
    if n < 1:
        raise ValueError(f"number of servers must be >= 1, got {n}")
    if lam >= n * mu:
        raise ValueError(f"unstable queue: lam ({lam}) must be < n*mu ({n * mu})")
    if lam == 0:
        return 1.0 / mu

    def excess(sigma: float) -> float:
        return (lam / (lam + mu * (1 - sigma))) ** n - sigma

    # excess > 0 below the root and < 0 between it and the trivial root at 1, so bisection on
    # (0, 1) converges to the root we want without ever evaluating the trivial one.
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if excess(mid) > 0:
            lo = mid
        else:
            hi = mid
    sigma = (lo + hi) / 2
    return 1.0 / (mu * (1 - sigma))


def pbs_k_staleness(n: int, r: int, w: int, k: int = 1) -> float:
    """Probability that a read issued right after a write returns a value >= k versions stale.

    p = (C(n - w, r) / C(n, r))^k: the read quorum of r replicas misses all w replicas that
    acknowledged each of the last k writes (Bailis et al., "Probabilistically Bounded
    Staleness for Practical Partial Quorums", VLDB 2012). Assumes quorums are chosen uniformly
    at random and no anti-entropy has happened since the write (the worst moment).
    """
    if n < 1:
        raise ValueError(f"replica count n must be >= 1, got {n}")
    if not 1 <= r <= n or not 1 <= w <= n:
        raise ValueError(f"need 1 <= r, w <= n, got n={n}, r={r}, w={w}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return (math.comb(n - w, r) / math.comb(n, r)) ** k


#: trials per vectorised block of :func:`wars_t_visibility`, times n: bounds its memory
_WARS_BLOCK = 1_000_000


def wars_t_visibility(
    n: int,
    r: int,
    w: int,
    write: Distribution,
    ack: Distribution,
    read: Distribution,
    response: Distribution,
    deltas_ms: Sequence[float] | np.ndarray,
    trials: int,
    rng: np.random.Generator,
    write_fanout: str = "all",
) -> np.ndarray:
    """P(consistent read) for a read started delta ms after a write committed, per delta.

    The WARS Monte Carlo of PBS t-visibility (Bailis et al., VLDB 2012, §4): per trial, draw
    W_i, A_i, R_i, S_i (ms) for each of the n replicas; the write commits at the w-th smallest
    W_i + A_i; a read starting delta after the commit reaches replica i delta + R_i after the
    commit, and replica i has the write iff W_i <= commit + delta + R_i; the coordinator keeps
    the r fastest responders by R_i + S_i; the read is consistent iff one of them has the write.
    With ``write_fanout="quorum"`` only the w replicas that acknowledged the write ever get it
    (no anti-entropy): t-visibility is then flat at 1 - :func:`pbs_k_staleness` (n, r, w).

    No closed form in general: there is no queueing, but the order statistics of sums do not
    simplify. Exact only for iid delays across replicas and operations, as WARS assumes.
    Vectorised: one trial is one row; a trial is consistent at every delta >= its own
    "visibility lag" min over the read quorum of (W_i - R_i) - commit, so all deltas come from
    one sorted array. Ties among responders are broken arbitrarily.
    """
    if n < 1:
        raise ValueError(f"replica count n must be >= 1, got {n}")
    if not 1 <= r <= n or not 1 <= w <= n:
        raise ValueError(f"need 1 <= r, w <= n, got n={n}, r={r}, w={w}")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if write_fanout not in ("all", "quorum"):
        raise ValueError(f"write_fanout must be 'all' or 'quorum', got {write_fanout!r}")
    deltas = np.asarray(deltas_ms, dtype=np.float64)
    if deltas.ndim != 1:
        raise ValueError(f"deltas_ms must be one-dimensional, got shape {deltas.shape}")
    if np.any(np.isnan(deltas)):
        raise ValueError("deltas_ms must not contain nan")

    consistent = np.zeros(deltas.shape, dtype=np.int64)
    block = max(1, _WARS_BLOCK // n)
    done = 0
    while done < trials:
        m = min(block, trials - done)
        done += m
        w_ms = write.sample(rng, m * n).reshape(m, n)
        round_trip = w_ms + ack.sample(rng, m * n).reshape(m, n)
        r_ms = read.sample(rng, m * n).reshape(m, n)
        read_rt = r_ms + response.sample(rng, m * n).reshape(m, n)
        commit = np.partition(round_trip, w - 1, axis=1)[:, w - 1]
        if write_fanout == "quorum" and w < n:
            quorum = np.argpartition(round_trip, w - 1, axis=1)[:, :w]
            has_write = np.zeros((m, n), dtype=bool)
            np.put_along_axis(has_write, quorum, True, axis=1)
            w_ms = np.where(has_write, w_ms, np.inf)
        # how long after the commit replica i must be asked for the read to find the write there
        lag = w_ms - r_ms - commit[:, None]
        if r < n:
            responders = np.argpartition(read_rt, r - 1, axis=1)[:, :r]
            lag = np.take_along_axis(lag, responders, axis=1)
        trial_lag = np.sort(lag.min(axis=1))
        consistent += np.searchsorted(trial_lag, deltas, side="right")
    return consistent / trials


def littles_law_L(lam: float, w: float) -> float:
    """Mean number in system, L = lam * W (Little 1961); holds for any stable system."""
    return lam * w
