"""Summary statistics for simulation output.

Latencies from one simulation run are autocorrelated (a long queue delays many consecutive
requests), so the naive iid confidence interval is far too narrow; batch means give an honest
one. Percentiles are exact sample quantiles rather than sketches, because runs fit in memory and
tests compare them with theory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["batch_means_ci", "exact_percentiles", "student_t_critical"]


def _t_central_probability(t: float, dof: int) -> float:
    """P(|T| < t) for Student's t with integer ``dof``, by the finite series of
    Abramowitz & Stegun 26.7.3-4 (exact, no special functions needed)."""
    theta = math.atan(t / math.sqrt(dof))
    c2 = math.cos(theta) ** 2
    if dof % 2 == 1:
        if dof == 1:
            return 2 * theta / math.pi
        term, total = 1.0, 1.0
        for j in range(2, dof - 1, 2):  # terms (2*4*...*j)/(3*5*...*(j+1)) * cos^j
            term *= j / (j + 1) * c2
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    term, total = 1.0, 1.0
    for j in range(1, dof - 2, 2):  # terms (1*3*...*j)/(2*4*...*(j+1)) * cos^(j+1)
        term *= j / (j + 1) * c2
        total += term
    return math.sin(theta) * total


def student_t_critical(confidence: float, dof: int) -> float:
    """Two-sided Student t critical value: t with P(|T| < t) = confidence.

    Computed (not tabulated) so any confidence level works without scipy; for very large dof the
    normal quantile is used, which agrees to better than 1e-4 there.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if dof < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
    if dof > 10_000:
        return NormalDist().inv_cdf((1 + confidence) / 2)
    lo, hi = 0.0, 1.0
    while _t_central_probability(hi, dof) < confidence:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if _t_central_probability(mid, dof) < confidence:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return (lo + hi) / 2


def batch_means_ci(
    values: ArrayLike, batches: int = 20, confidence: float = 0.95
) -> tuple[float, float]:
    """Mean and confidence half-width of a possibly autocorrelated series, by batch means.

    The series (in time order) is cut into ``batches`` contiguous equal batches; if the batches
    are long compared with the correlation time their means are nearly iid, so a Student t
    interval on them is valid. Leftover samples that do not fill a batch are dropped from the
    *start*, where any remaining warm-up bias lives. The returned mean is that of the samples used.

    Returns ``(nan, nan)`` for an empty series and ``(mean, nan)`` when there are fewer samples
    than batches: too little data for an interval is reported, not raised, so a report on a
    short run still renders.
    """
    if batches < 2:
        raise ValueError(f"need at least 2 batches, got {batches}")
    data = np.asarray(values, dtype=np.float64).ravel()
    n = data.shape[0]
    if n == 0:
        return math.nan, math.nan
    if n < batches:
        return float(data.mean()), math.nan
    size = n // batches
    means = data[n - size * batches :].reshape(batches, size).mean(axis=1)
    half_width = (
        student_t_critical(confidence, batches - 1) * means.std(ddof=1) / math.sqrt(batches)
    )
    return float(means.mean()), float(half_width)


def _percentile_key(q: float) -> str:
    return "p" + f"{q:g}".replace(".", "")


def exact_percentiles(
    values: ArrayLike, qs: Sequence[float] | Iterable[float] = (50, 90, 95, 99, 99.9)
) -> dict[str, float]:
    """Sample quantiles (numpy's default linear interpolation) plus ``mean`` and ``max``.

    Keys are ``p50``, ``p90``, ``p95``, ``p99``, ``p999`` (the dot dropped) so they can be used as
    column names. An empty input gives NaN everywhere rather than an error, for the same reason as
    :func:`batch_means_ci`.
    """
    qs = list(qs)
    data = np.asarray(values, dtype=np.float64).ravel()
    keys = [_percentile_key(q) for q in qs]
    if data.shape[0] == 0:
        return {key: math.nan for key in [*keys, "mean", "max"]}
    result = dict(zip(keys, np.percentile(data, qs).tolist(), strict=True))
    result["mean"] = float(data.mean())
    result["max"] = float(data.max())
    return result
