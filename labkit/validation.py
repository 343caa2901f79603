"""The simulator against queueing theory and PBS: the comparisons behind notebook 07.

A simulator earns trust where theory can check it. Each function here runs the simulator (or
the replicated state store it uses) in a regime where a closed form or a model-level Monte
Carlo holds, and returns a tidy table of measured against predicted values, with a confidence
interval on the measurement, the relative (or absolute) error, and whether the interval contains
the prediction:

- :func:`sojourn_vs_theory` — mean time in system across utilisation for one worker with c
  slots (M/M/c, Erlang C), random routing (independent M/M/1 queues), round robin (GI/M/1 with
  Erlang arrivals) and power-of-two-choices (the supermarket model, exact only as n → ∞);
  each run also gets a Little's law check (L = λW) from its own in-flight samples;
- :func:`k_staleness_vs_theory` — PBS k-staleness of the store against (C(n-w, r)/C(n, r))^k;
- :func:`t_visibility_vs_wars` — a simulation's measured t-visibility against the WARS Monte
  Carlo, each Δ bin's prediction averaged over that bin's own reads (so wide bins compare
  like with like);
- :func:`scorecard` — one line per check, for the notebook's conclusion.

The formulas live in :mod:`labkit.theory`; ``tests/test_sim_textbook.py`` and
``tests/test_theory_pbs.py`` hold the simulator to them with fixed tolerances, these functions
show the same comparisons across a range, with their uncertainty.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, PercentFormatter

from labkit import theory
from labkit.core.state import StateConfig, StateStore, WarsSamplers
from labkit.distributions import Exponential
from labkit.results import Results
from labkit.results.consistency import VISIBILITY_EDGES_MS
from labkit.scenario import Scenario, load_scenario, scenario_from_dict
from labkit.sim import simulate
from labkit.stats import batch_means_ci

__all__ = [
    "DEFAULT_MODELS",
    "QueueCase",
    "k_staleness_vs_theory",
    "littles_law",
    "plot_k_staleness",
    "plot_sojourn",
    "queue_case",
    "scorecard",
    "sojourn_vs_theory",
    "t_visibility_vs_wars",
    "theory_sojourn_ms",
    "wilson",
]

#: the routing models compared by default: name, or (name, fleet size)
DEFAULT_MODELS: tuple[str | tuple[str, int], ...] = (
    "mmc",
    "random",
    "round_robin",
    "p2c",
    ("p2c", 100),
)
#: warm-up of each run, in mean sojourn times of the model at that load (at least 10 % of it)
WARMUP_SOJOURNS = 50.0
#: z for the 95 % Wilson interval
Z95 = 1.959963984540054


# -- queueing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueCase:
    """One routing model on an idealised fleet, and the formula it should match."""

    model: str  # "mmc" | "random" | "round_robin" | "p2c"
    workers: int  # worker processes (1 for mmc)
    slots: int  # requests each serves at once (c for mmc, else 1)
    strategy: str  # the balancer strategy simulated
    formula: str  # "erlang_c" | "mm1" | "gi_m_1" | "supermarket"
    exact: bool  # the formula is exact for this finite fleet (False: an n → ∞ limit)

    @property
    def servers(self) -> int:
        return self.workers * self.slots

    @property
    def label(self) -> str:
        return {
            "mmc": f"M/M/{self.slots}: 1 worker, {self.slots} slots",
            "random": f"random, {self.workers} workers",
            "round_robin": f"round robin, {self.workers} workers",
            "p2c": f"p2c, {self.workers} workers",
        }[self.model]

    @property
    def theory_label(self) -> str:
        return {
            "erlang_c": "Erlang C",
            "mm1": "M/M/1 (supermarket d=1)",
            "gi_m_1": "GI/M/1, Erlang arrivals",
            "supermarket": "supermarket d=2 (n→∞)",
        }[self.formula]


def queue_case(model: str, workers: int = 8) -> QueueCase:
    """The case for ``model`` on ``workers`` servers: ``mmc`` is one worker with ``workers``
    slots sharing one queue (Erlang C); ``random`` gives each worker an M/M/1 queue with
    λ/n; ``round_robin`` feeds each every n-th arrival (Erlang-n gaps: GI/M/1); ``p2c`` joins
    the shorter of two random queues (Mitzenmacher's supermarket model, exact as n → ∞)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if model == "mmc":
        return QueueCase("mmc", 1, workers, "round_robin", "erlang_c", True)
    if model == "random":
        return QueueCase("random", workers, 1, "random", "mm1", True)
    if model == "round_robin":
        return QueueCase("round_robin", workers, 1, "round_robin", "gi_m_1", True)
    if model == "p2c":
        return QueueCase("p2c", workers, 1, "p2c", "supermarket", False)
    raise ValueError(f"unknown model {model!r} (mmc, random, round_robin, p2c)")


def theory_sojourn_ms(case: QueueCase, rho: float, mean_ms: float) -> float:
    """The formula's mean time in system (ms) at per-server utilisation ``rho``."""
    mu = 1000.0 / mean_ms  # per second
    lam = rho * case.servers * mu
    if case.formula == "erlang_c":
        seconds = theory.mmc_sojourn(lam, mu, case.servers)
    elif case.formula == "mm1":
        seconds = theory.mm1_sojourn(lam / case.servers, mu)
    elif case.formula == "gi_m_1":
        seconds = theory.round_robin_sojourn(lam, mu, case.servers)
    else:
        seconds = theory.supermarket_sojourn(rho, 2, mu)
    return seconds * 1000.0


def _idealized() -> Scenario:
    from labkit.notebook import scenario_path

    return load_scenario(scenario_path("idealized"))


def _check_textbook(base: Scenario) -> float:
    """The base's mean service time (ms), after checking the formulas' assumptions hold."""
    if not isinstance(base.workers.service_time, Exponential):
        raise ValueError(
            "the formulas assume exponential service; got "
            f"{base.workers.service_time.describe()} (start from scenarios/idealized.yaml)"
        )
    if base.workload.arrival.process != "poisson":
        raise ValueError(
            f"the formulas assume Poisson arrivals, got {base.workload.arrival.process}"
        )
    if base.faults or base.gateway.max_attempts > 1:
        raise ValueError("the formulas assume no faults and no retries")
    latency = base.network.latency
    if base.gateway.overhead_ms or (latency is not None and latency.mean > 0):
        raise ValueError("the formulas assume no network delay and no gateway overhead")
    if base.workers.queue_limit is not None:
        raise ValueError("the formulas assume unbounded queues (workers.queue_limit: null)")
    return float(base.workers.service_time.mean)


def _parse_models(models: Sequence[str | tuple[str, int]], workers: int) -> list[QueueCase]:
    cases = []
    for m in models:
        name, n = (m, workers) if isinstance(m, str) else (m[0], int(m[1]))
        cases.append(queue_case(name, n))
    return cases


def _run_case(
    base: Scenario, case: QueueCase, rho: float, mean_ms: float, requests: int, seed: int
) -> Results:
    lam = rho * case.servers * 1000.0 / mean_ms
    expected_s = theory_sojourn_ms(case, rho, mean_ms) / 1000.0
    span = requests / lam
    warmup = max(0.1 * span, WARMUP_SOJOURNS * expected_s)
    overrides = [
        f"name=textbook_{case.model}",
        f"seed={seed}",
        f"workers.count={case.workers}",
        f"workers.concurrency={case.slots}",
        f"balancer.strategy={case.strategy}",
        f"workload.arrival.rate_rps={lam!r}",
        f"warmup_s={warmup!r}",
        f"duration_s={warmup + span!r}",
        f"gateway.timeout_ms={max(600_000.0, 1000 * (warmup + span) * 10)!r}",
    ]
    return simulate(scenario_from_dict(dict(base.to_dict()), overrides))


def littles_law(results: Results) -> dict[str, float]:
    """Little's law on one run's measured window: L, the time-average number in the system
    (the simulator samples it), against λ·W from the requests that arrived in the window."""
    sc = results.scenario
    window = sc.duration_s - sc.warmup_s
    rec = results.records
    measured = rec[rec["measured"]]
    lam = len(measured) / window
    w_s = float(measured["latency_ms"].mean()) / 1000.0
    mean_in_flight = results.summary.get("sim", {}).get("mean_in_flight")
    if mean_in_flight is None:
        samples = results.samples
        inside = samples[(samples["t_s"] >= sc.warmup_s) & (samples["t_s"] < sc.duration_s)]
        mean_in_flight = float(inside["in_flight"].mean())
    L = float(mean_in_flight)
    return {"lambda_rps": lam, "W_ms": w_s * 1000, "L": L, "lambda_W": lam * w_s}


def sojourn_vs_theory(
    models: Sequence[str | tuple[str, int]] = DEFAULT_MODELS,
    rhos: Sequence[float] = (0.3, 0.5, 0.7, 0.8, 0.9),
    *,
    requests: int = 100_000,
    seeds: Sequence[int] | None = None,
    base: Scenario | None = None,
    confidence: float = 0.95,
    batches: int = 20,
) -> pd.DataFrame:
    """Simulate each model at each per-server utilisation and set the mean sojourn beside the
    formula, one row per (model, ρ).

    ``base`` (default ``scenarios/idealized.yaml``: exponential service, Poisson arrivals, no
    network, no gateway cost, no retries) gives the service time and every setting not varied;
    its fleet size is the default for a model named without one. Each run offers about
    ``requests`` requests after a warm-up of 50 mean sojourns (at least 10 % of the run), so
    every load gets a similar sample. The interval is by batch means (latencies of successive
    requests are correlated); several ``seeds`` are pooled (mean of means, half-widths added in
    quadrature). Columns: the case, ``rho``, ``lambda_rps``, ``requests`` (measured),
    ``sim_ms``, ``ci_ms`` (half-width), ``theory_ms``, ``rel_error`` (sim/theory − 1),
    ``ci_contains_theory``, ``exact``, and Little's law: ``L`` (time-average in system),
    ``lambda_W``, ``littles_rel_error`` (L/(λW) − 1).
    """
    base = base or _idealized()
    mean_ms = _check_textbook(base)
    seeds = list(seeds) if seeds is not None else [base.seed]
    if not seeds:
        raise ValueError("need at least one seed")
    for rho in rhos:
        if not 0 < rho < 1:
            raise ValueError(f"utilisation must be in (0, 1), got {rho}")
    rows = []
    for case in _parse_models(models, base.workers.count):
        for rho in rhos:
            means, halves, counts, littles = [], [], [], []
            for seed in seeds:
                res = _run_case(base, case, rho, mean_ms, requests, seed)
                rec = res.records
                ok = rec[rec["measured"] & (rec["status"] == "completed")]
                if len(ok) != int(rec["measured"].sum()):
                    raise RuntimeError(f"{case.label} at rho={rho}: some requests did not complete")
                lat = ok.sort_values("arrival_s")["latency_ms"].to_numpy()
                mean, half = batch_means_ci(lat, batches=batches, confidence=confidence)
                means.append(mean)
                halves.append(half)
                counts.append(len(lat))
                littles.append(littles_law(res))
            sim_ms = float(np.mean(means))
            ci_ms = float(math.sqrt(sum(h * h for h in halves)) / len(halves))
            theory_ms = theory_sojourn_ms(case, rho, mean_ms)
            L = float(np.mean([x["L"] for x in littles]))
            lam_w = float(np.mean([x["lambda_W"] for x in littles]))
            rows.append(
                {
                    "model": case.label,
                    "formula": case.theory_label,
                    "case": case.model,
                    "servers": case.servers,
                    "strategy": case.strategy,
                    "workers": case.workers,
                    "slots": case.slots,
                    "rho": rho,
                    "lambda_rps": rho * case.servers * 1000.0 / mean_ms,
                    "requests": int(sum(counts)),
                    "sim_ms": sim_ms,
                    "ci_ms": ci_ms,
                    "theory_ms": theory_ms,
                    "rel_error": sim_ms / theory_ms - 1,
                    "ci_contains_theory": abs(sim_ms - theory_ms) <= ci_ms,
                    "exact": case.exact,
                    "mean_service_ms": mean_ms,
                    "L": L,
                    "lambda_W": lam_w,
                    "littles_rel_error": L / lam_w - 1 if lam_w > 0 else math.nan,
                }
            )
    return pd.DataFrame(rows)


def _case_of(row: pd.Series) -> QueueCase:
    return queue_case(str(row["case"]), int(row["servers"]))


def plot_sojourn(frame: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Simulated mean sojourn (points, with their interval) against each formula (lines) over
    utilisation, in mean service times on a log axis; below, the relative error with its
    interval. A point whose bar crosses zero agrees with its formula; hollow points are set
    against an n → ∞ limit, which a finite fleet sits above."""
    fig = Figure(figsize=(9.5, 7.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
    lo = max(0.02, float(frame["rho"].min()) - 0.05)
    rho_grid = np.linspace(lo, min(0.975, float(frame["rho"].max()) + 0.025), 200)
    groups = list(frame.groupby("model", sort=False))
    for i, (label, group) in enumerate(groups):
        color = f"C{i}"
        group = group.sort_values("rho")
        first = group.iloc[0]
        case = _case_of(first)
        unit = float(first["mean_service_ms"])
        exact = bool(first["exact"])
        face = color if exact else "white"
        curve = [theory_sojourn_ms(case, r, unit) / unit for r in rho_grid]
        top.plot(rho_grid, curve, "-" if exact else "--", color=color, lw=1.2, alpha=0.8)
        top.errorbar(
            group["rho"],
            group["sim_ms"] / unit,
            yerr=group["ci_ms"] / unit,
            fmt="o",
            color=color,
            mfc=face,
            ms=5,
            capsize=2,
            label=f"{label}  vs  {first['formula']}",
        )
        bottom.errorbar(
            group["rho"] + (i - (len(groups) - 1) / 2) * 0.004,  # side by side, not on top
            100 * group["rel_error"],
            yerr=100 * group["ci_ms"] / group["theory_ms"],
            fmt="o",
            color=color,
            mfc=face,
            ms=4,
            capsize=2,
        )
    top.set_yscale("log")
    _plain_log(top)
    top.set_ylabel("mean time in system\n(in mean service times)")
    top.grid(alpha=0.3, which="both")
    top.set_title(title or "Simulated mean sojourn (points, 95 % CI) vs theory (lines)")
    top.legend(fontsize=8, loc="upper left")
    bottom.axhline(0, color="k", lw=0.8)
    bottom.set_ylabel("sim / theory − 1 (%)")
    bottom.set_xlabel("utilisation ρ (per server)")
    bottom.grid(alpha=0.3)
    return fig


def _plain_log(ax: Axes) -> None:
    """Log y ticks at 1, 2, 5 × 10^k written as plain numbers (1, 2, 5, 10, 20), not 10^k."""
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


# -- PBS -----------------------------------------------------------------------------------------


def wilson(successes: np.ndarray | float, n: np.ndarray | float) -> tuple[Any, Any]:
    """The 95 % Wilson interval of a binomial proportion (sound near 0 and 1, unlike p ± 2σ)."""
    s = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = s / n
        denom = 1 + Z95**2 / n
        centre = (p + Z95**2 / (2 * n)) / denom
        half = Z95 * np.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
        # exact at the ends (rounding would put 1.0 just outside [lo, hi] when all succeed)
        lo = np.where(s == 0, 0.0, np.clip(centre - half, 0.0, 1.0))
        hi = np.where(s == n, 1.0, np.clip(centre + half, 0.0, 1.0))
    lo = np.where(n > 0, lo, np.nan)
    hi = np.where(n > 0, hi, np.nan)
    return (lo, hi) if lo.ndim else (float(lo), float(hi))


def _exp_samplers(rng: random.Random, mean_ms: float = 1.0) -> WarsSamplers:
    def draw() -> float:
        return rng.expovariate(1.0 / mean_ms)

    return WarsSamplers(draw, draw, draw, draw)


def k_staleness_vs_theory(
    configs: Sequence[tuple[int, int, int]] = ((3, 1, 1), (5, 1, 2), (3, 2, 1), (5, 2, 2)),
    ks: Sequence[int] = (1, 2, 3),
    *,
    trials: int = 20_000,
    seed: int = 0,
) -> pd.DataFrame:
    """PBS k-staleness measured on the state store against the closed form, per (n, r, w, k).

    The closed form's setting: each write goes only to its w fastest replicas and is never
    propagated further (``write_fanout: quorum``, no anti-entropy), delays are iid and
    continuous (exponential, 1 ms: their scale does not matter), and the read comes after the
    k writes landed. Each trial writes a fresh key and reads it after its 1st, 2nd, ... k-th
    write (reads change nothing); the read after the k-th write is k-stale when it misses every
    write quorum and returns the initial version. The k estimates of one trial are correlated,
    each is still binomial over the trials. Columns: ``n``, ``r``, ``w``, ``k``, ``trials``,
    ``measured``, ``ci_low``/``ci_high`` (95 % Wilson), ``theory``, ``abs_error``,
    ``ci_contains_theory``.
    """
    ks = sorted(set(ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"k must be >= 1, got {ks}")
    rows = []
    for n, r, w in configs:
        rng = random.Random(seed * 1_000_003 + n * 10_000 + r * 100 + w)
        config = StateConfig(n=n, r=r, w=w, write_fanout="quorum", max_versions=ks[-1] + 1)
        store = StateStore(config, _exp_samplers(rng), rng)
        stale = dict.fromkeys(ks, 0)
        for trial in range(trials):
            key = f"agent-{trial}"
            for k in range(1, ks[-1] + 1):
                store.write(key, 10.0 * k)  # 10 s apart: each lands long before the next
                if k in stale:
                    stale[k] += store.read(key, 10.0 * k + 1.0).behind >= k
        for k in ks:
            lo, hi = wilson(stale[k], trials)
            expected = theory.pbs_k_staleness(n, r, w, k)
            rows.append(
                {
                    "n": n,
                    "r": r,
                    "w": w,
                    "k": k,
                    "trials": trials,
                    "measured": stale[k] / trials,
                    "ci_low": float(lo),
                    "ci_high": float(hi),
                    "theory": expected,
                    "abs_error": stale[k] / trials - expected,
                    "ci_contains_theory": bool(lo <= expected <= hi),
                }
            )
    return pd.DataFrame(rows)


def plot_k_staleness(frame: pd.DataFrame) -> Figure:
    """P(read ≥ k versions stale) per quorum configuration: measured (points, 95 % interval)
    against PBS's closed form (short bars), log scale — each k multiplies by the same factor."""
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.add_subplot()
    configs = list(dict.fromkeys(zip(frame["n"], frame["r"], frame["w"], strict=True)))
    ks = sorted(frame["k"].unique())
    width = 0.8 / max(1, len(ks))
    for j, k in enumerate(ks):
        rows = frame[frame["k"] == k].set_index(["n", "r", "w"]).loc[configs]
        x = np.arange(len(configs)) + (j - (len(ks) - 1) / 2) * width
        measured = rows["measured"].to_numpy()
        yerr = np.vstack([measured - rows["ci_low"], rows["ci_high"] - measured])
        ax.errorbar(x, measured, yerr=yerr, fmt="o", color=f"C{j}", capsize=3, label=f"k={k}")
        ax.hlines(rows["theory"], x - width / 2.5, x + width / 2.5, color="k", lw=1.5)
    ax.plot([], [], "k-", label="(C(n−w, r) / C(n, r))^k")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    ax.set_xticks(np.arange(len(configs)), [f"n={n} r={r} w={w}" for n, r, w in configs])
    ax.set_ylabel("P(read ≥ k versions stale)")
    ax.set_title("PBS k-staleness: the state store (points, 95 % CI) vs the closed form (bars)")
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(fontsize=9)
    return fig


def _wars_curve(results: Results, trials: int, rng: np.random.Generator) -> tuple[Any, Any]:
    from labkit.report import wars_theory

    deltas = np.concatenate([[0.0], np.geomspace(0.01, 5000.0, 400)])
    curve = wars_theory(results, deltas, trials=trials, rng=rng)
    if curve is None:
        raise ValueError("t-visibility against WARS needs a state section (eventual or strong)")
    return curve


#: batches for the t-visibility intervals, and the fewest reads in a bin to use them
VISIBILITY_BATCHES = 20
MIN_BATCHED_READS = 20 * VISIBILITY_BATCHES


def t_visibility_vs_wars(
    results: Results,
    *,
    trials: int = 400_000,
    edges_ms: Sequence[float] = VISIBILITY_EDGES_MS,
    seed: int | None = None,
) -> pd.DataFrame:
    """A simulation's t-visibility, per Δ bin, against the WARS Monte Carlo of its settings.

    Measured: the share of reads (in the measured window, after some write committed) that
    returned the newest committed version, binned by Δ = read start − that commit. Predicted:
    WARS's P(consistent | Δ) averaged over the same reads' own Δ — a bin's reads are not spread
    evenly, so the curve at the bin's centre would not be a fair comparison. WARS assumes one
    write, iid delays, no queueing; the simulated workload has many keys written and read
    concurrently, so agreement says the simulator's state path is the WARS model and its
    workload does not distort it. Columns: ``delta_lo_ms``, ``delta_hi_ms``, ``reads``,
    ``p_consistent`` (measured), ``ci_low``/``ci_high`` (95 %: batch means over the bin's
    reads in time order, since reads of one write share its delays, widened to Wilson's where
    that is wider; Wilson alone for bins of fewer than ``MIN_BATCHED_READS`` reads),
    ``wars``, ``abs_error``, ``ci_contains_theory``.
    """
    ops = results.state_ops
    sc = results.scenario
    rng = np.random.default_rng(sc.seed if seed is None else seed)
    deltas, probs = _wars_curve(results, trials, rng)
    reads = ops[
        (ops["op"] == "read")
        & ops["delta_ms"].notna()
        & (ops["t_s"] >= sc.warmup_s)
        & (ops["t_s"] < sc.duration_s)
    ]
    d = reads["delta_ms"].to_numpy(dtype=np.float64)
    fresh = (reads["behind"] == 0).to_numpy()
    predicted = np.interp(d, deltas, probs)
    bins = [*edges_ms, math.inf]
    which = np.digitize(d, bins[1:-1], right=False)  # bin i: [bins[i], bins[i+1])
    rows = []
    for i in range(len(bins) - 1):
        inside = which == i
        n = int(inside.sum())
        hits = int(fresh[inside].sum())
        p = hits / n if n else math.nan
        if n >= MIN_BATCHED_READS:
            # reads of one write share its replica delays, so they are not independent and a
            # binomial (Wilson) interval would be too narrow; batches of reads in time order
            # span seconds, far longer than a write's visibility window, so their means are
            # nearly independent
            # (never narrower than Wilson's: a bin of all-fresh batches has no spread at all)
            _, half = batch_means_ci(fresh[inside], batches=VISIBILITY_BATCHES)
            w_lo, w_hi = wilson(hits, n)
            lo, hi = min(w_lo, max(0.0, p - half)), max(w_hi, min(1.0, p + half))
        else:
            lo, hi = wilson(hits, n) if n else (math.nan, math.nan)
        wars = float(predicted[inside].mean()) if n else math.nan
        rows.append(
            {
                "delta_lo_ms": float(bins[i]),
                "delta_hi_ms": float(bins[i + 1]),
                "reads": n,
                "p_consistent": p,
                "ci_low": float(lo),
                "ci_high": float(hi),
                "wars": wars,
                "abs_error": p - wars if n else math.nan,
                "ci_contains_theory": bool(n and lo <= wars <= hi + 1e-12),
            }
        )
    return pd.DataFrame(rows)


# -- the conclusion ------------------------------------------------------------------------------


def scorecard(
    sojourn: pd.DataFrame | None = None,
    k_staleness: pd.DataFrame | None = None,
    t_visibility: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per check: how many comparisons, the median and the largest error, and in how
    many the measurement's 95 % interval contains the prediction (one in twenty may miss by
    chance; against an n → ∞ limit a finite fleet should miss)."""
    rows: list[dict[str, Any]] = []
    if sojourn is not None and not sojourn.empty:
        for (model, formula), g in sojourn.groupby(["model", "formula"], sort=False):
            rows.append(
                {
                    "check": f"{model} vs {formula}",
                    "points": len(g),
                    "median error": f"{100 * g['rel_error'].abs().median():.1f} % (relative)",
                    "largest error": f"{100 * g['rel_error'].abs().max():.1f} % (relative)",
                    "CI contains theory": f"{int(g['ci_contains_theory'].sum())}/{len(g)}",
                }
            )
        rows.append(
            {
                "check": "Little's law, L = λW (every run above)",
                "points": len(sojourn),
                "median error": f"{100 * sojourn['littles_rel_error'].abs().median():.2f} % "
                "(relative)",
                "largest error": f"{100 * sojourn['littles_rel_error'].abs().max():.2f} % "
                "(relative)",
                "CI contains theory": "-",
            }
        )
    if k_staleness is not None and not k_staleness.empty:
        rows.append(
            {
                "check": "k-staleness vs PBS closed form",
                "points": len(k_staleness),
                "median error": f"{k_staleness['abs_error'].abs().median():.4f} (absolute)",
                "largest error": f"{k_staleness['abs_error'].abs().max():.4f} (absolute)",
                "CI contains theory": f"{int(k_staleness['ci_contains_theory'].sum())}"
                f"/{len(k_staleness)}",
            }
        )
    if t_visibility is not None and not t_visibility.empty:
        tv = t_visibility[t_visibility["reads"] > 0]
        rows.append(
            {
                "check": "t-visibility vs WARS Monte Carlo",
                "points": len(tv),
                "median error": f"{tv['abs_error'].abs().median():.4f} (absolute)",
                "largest error": f"{tv['abs_error'].abs().max():.4f} (absolute)",
                "CI contains theory": f"{int(tv['ci_contains_theory'].sum())}/{len(tv)}",
            }
        )
    return pd.DataFrame(rows).set_index("check")
