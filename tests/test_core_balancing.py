"""Tests for ``labkit.core.balancing`` and ``labkit.core.hashring``."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from hashlib import blake2b

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.core.balancing import (
    DEFAULT_WEIGHTS,
    STRATEGIES,
    Balancer,
    BalancerConfig,
    LocalLoad,
    PeakEwma,
    _sample_distinct,
    make_balancer,
    normalise_weights,
)
from labkit.core.hashring import HashRing, hash64
from labkit.core.registry import LoadReport, Pool, Registry, StrongView, TimeoutDetector
from labkit.errors import NoWorkerAvailable

SETTINGS = settings(derandomize=True, deadline=None, max_examples=40)

AGENT = "planner"

#: every strategy with its defaults, plus the variants that take other code paths
CONFIGS = [BalancerConfig(strategy=s) for s in STRATEGIES] + [
    BalancerConfig(strategy="consistent_hash", bounded_load=1.25, vnodes=20),
    BalancerConfig(strategy="adaptive", sample=2),
    BalancerConfig(strategy="p2c", d=3),
    BalancerConfig(strategy="peak_ewma", d=1),
]
CONFIG_IDS = [
    c.strategy + ("" if i < len(STRATEGIES) else f"-variant{i}") for i, c in enumerate(CONFIGS)
]


def build(
    n: int,
    healthy: Sequence[bool] | None = None,
    reports: Sequence[LoadReport | None] | None = None,
    agent_type: str = AGENT,
) -> tuple[Registry, list[str]]:
    """A registry with workers ``w0..w{n-1}`` hosting ``agent_type``; at t=10 the ones with
    ``healthy[i]`` False are down. ``reports[i]`` is each worker's last load report."""
    registry = Registry(TimeoutDetector(1.0, 2.0))
    ids = [f"w{i}" for i in range(n)]
    for w in ids:
        registry.register(w, [agent_type], 0.0)
    for i, w in enumerate(ids):
        report = reports[i] if reports is not None else None
        registry.heartbeat(w, 5.0, report)
        if healthy is None or healthy[i]:
            registry.heartbeat(w, 10.0, report)
    registry.evaluate(10.0)
    return registry, ids


def balancer_for(
    config: BalancerConfig | str,
    registry: Registry,
    local: LocalLoad | None = None,
    seed: int = 0,
) -> Balancer:
    if isinstance(config, str):
        config = BalancerConfig(strategy=config)
    return make_balancer(config, local or LocalLoad(), StrongView(registry), random.Random(seed))


def pool_of(registry: Registry, agent_type: str = AGENT) -> Pool:
    pool = registry.pool(agent_type)
    assert pool is not None
    return pool


def set_health(registry: Registry, ids: Sequence[str], up: Sequence[bool], now: float) -> None:
    """Make exactly the workers with ``up[i]`` healthy at ``now`` (others down)."""
    for i, w in enumerate(ids):
        if up[i]:
            registry.heartbeat(w, now)
    registry.evaluate(now)
    assert [registry.health_of(w).value == "healthy" for w in ids] == list(up)


# -- properties shared by every strategy --------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(1, 8))
    healthy = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    reports = [
        LoadReport(
            cpu=draw(st.floats(0.0, 1.0)),
            active=draw(st.integers(0, 10)),
            capacity=draw(st.integers(1, 4)),
            rt_ewma_ms=draw(st.just(0.0) | st.floats(0.01, 200.0)),
            error_rate=draw(st.floats(0.0, 1.0)),
        )
        if draw(st.booleans())
        else None
        for _ in range(n)
    ]
    inflight = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    samples = draw(st.lists(st.none() | st.floats(0.1, 500.0), min_size=n, max_size=n))
    excluded = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    keys = draw(st.lists(st.text(min_size=0, max_size=8), min_size=1, max_size=6))
    seed = draw(st.integers(0, 2**16))
    return dict(
        n=n,
        healthy=healthy,
        reports=reports,
        inflight=inflight,
        samples=samples,
        excluded=excluded,
        keys=keys,
        seed=seed,
    )


def setup_scenario(config: BalancerConfig, sc: dict) -> tuple[Balancer, Pool, list[str]]:
    registry, ids = build(sc["n"], sc["healthy"], sc["reports"])
    local = LocalLoad()
    for i, w in enumerate(ids):
        for _ in range(sc["inflight"][i] + 1):
            local.dispatched(w)
        local.finished(w, 9.0, sc["samples"][i])
    balancer = balancer_for(config, registry, local, sc["seed"])
    return balancer, pool_of(registry), ids


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@SETTINGS
@given(sc=scenarios())
def test_pick_is_healthy_and_respects_exclude(config: BalancerConfig, sc: dict) -> None:
    balancer, pool, ids = setup_scenario(config, sc)
    exclude = {w for w, x in zip(ids, sc["excluded"], strict=True) if x}
    allowed = [w for w in pool.healthy if w not in exclude]
    for key in sc["keys"]:
        if not pool.healthy:
            with pytest.raises(NoWorkerAvailable):
                balancer.pick(pool, key, 10.0)
            with pytest.raises(NoWorkerAvailable):
                balancer.pick(pool, key, 10.0, exclude)
            continue
        assert balancer.pick(pool, key, 10.0) in pool.healthy_set
        chosen = balancer.pick(pool, key, 10.0, exclude)
        if allowed:
            assert chosen in allowed
        else:  # everyone healthy was tried already: any healthy worker rather than failing
            assert chosen in pool.healthy_set
        # Excluding every worker (healthy or not) falls back to a healthy one.
        assert balancer.pick(pool, key, 10.0, set(ids)) in pool.healthy_set


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@settings(derandomize=True, deadline=None, max_examples=15)
@given(
    n=st.integers(0, 6),
    agent_type=st.sampled_from(["planner", "coder", "a/b c", "タイプ"]),
    key=st.text(max_size=5),
)
def test_no_healthy_worker_raises_naming_the_type(
    config: BalancerConfig, n: int, agent_type: str, key: str
) -> None:
    registry, ids = build(n, [False] * n, agent_type=agent_type)
    pool = registry.pool(agent_type)
    if pool is None:  # n == 0: build a known-but-empty pool by hand
        pool = Pool(agent_type, (), (), frozenset(), 0)
    balancer = balancer_for(config, registry)
    for exclude in (None, set(ids[:1])):
        with pytest.raises(NoWorkerAvailable) as info:
            balancer.pick(pool, key, 10.0, exclude)
        assert info.value.agent_type == agent_type
        assert repr(agent_type) in str(info.value)


def test_make_balancer_rejects_an_unknown_strategy_listing_the_known_ones() -> None:
    registry, _ = build(1)
    with pytest.raises(ValueError) as info:
        balancer_for("fastest_please", registry)
    message = str(info.value)
    assert "fastest_please" in message
    for name in STRATEGIES:
        assert name in message


@pytest.mark.parametrize("name", STRATEGIES)
def test_make_balancer_builds_each_strategy(name: str) -> None:
    registry, _ = build(2)
    balancer = balancer_for(name, registry)
    assert balancer.name == name


# -- round robin ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "k"), [(1, 5), (3, 4), (7, 9)])
def test_round_robin_gives_each_worker_exactly_k_of_k_times_n(n: int, k: int) -> None:
    registry, ids = build(n)
    balancer = balancer_for("round_robin", registry)
    pool = pool_of(registry)
    picks = [balancer.pick(pool, "k", 10.0) for _ in range(k * n)]
    assert Counter(picks) == {w: k for w in ids}
    assert picks[:n] == list(pool.healthy)  # in registry order


def test_round_robin_skips_unhealthy_workers_and_stays_fair() -> None:
    registry, _ = build(5, [True, False, True, True, False])
    balancer = balancer_for("round_robin", registry)
    pool = pool_of(registry)
    picks = Counter(balancer.pick(pool, "k", 10.0) for _ in range(3 * 6))
    assert picks == {"w0": 6, "w2": 6, "w3": 6}


# -- random -------------------------------------------------------------------------------------


def test_random_is_roughly_uniform() -> None:
    n, draws = 5, 10_000
    registry, ids = build(n)
    balancer = balancer_for("random", registry, seed=12345)
    pool = pool_of(registry)
    counts = Counter(balancer.pick(pool, "k", 10.0) for _ in range(draws))
    expected = draws / n
    chi2 = sum((counts[w] - expected) ** 2 / expected for w in ids)
    assert chi2 < 18.47  # chi-square, 4 degrees of freedom, p = 0.001


# -- least connections --------------------------------------------------------------------------


@SETTINGS
@given(
    inflight=st.lists(st.integers(0, 6), min_size=1, max_size=8),
    seed=st.integers(0, 1000),
)
def test_least_connections_picks_a_minimum(inflight: list[int], seed: int) -> None:
    registry, ids = build(len(inflight))
    local = LocalLoad()
    for w, k in zip(ids, inflight, strict=True):
        for _ in range(k):
            local.dispatched(w)
    balancer = balancer_for("least_connections", registry, local, seed)
    pool = pool_of(registry)
    for _ in range(5):
        chosen = balancer.pick(pool, "k", 10.0)
        assert local.inflight.get(chosen, 0) == min(inflight)


def test_least_connections_breaks_ties_randomly() -> None:
    registry, _ids = build(4)
    local = LocalLoad()
    local.dispatched("w0")
    balancer = balancer_for("least_connections", registry, local, seed=3)
    pool = pool_of(registry)
    picks = Counter(balancer.pick(pool, "k", 10.0) for _ in range(600))
    assert "w0" not in picks
    assert set(picks) == {"w1", "w2", "w3"}
    assert min(picks.values()) > 120


def test_least_connections_follows_dispatches() -> None:
    registry, ids = build(3)
    local = LocalLoad()
    balancer = balancer_for("least_connections", registry, local, seed=1)
    pool = pool_of(registry)
    for _ in range(30):
        local.dispatched(balancer.pick(pool, "k", 10.0))
        assert max(local.inflight.values()) - min(local.inflight.get(w, 0) for w in ids) <= 1
    assert local.inflight == {w: 10 for w in ids}


# -- power of d choices -------------------------------------------------------------------------


@SETTINGS
@given(
    inflight=st.lists(st.integers(0, 6), min_size=1, max_size=8),
    seed=st.integers(0, 1000),
)
def test_p2c_with_d_equal_n_picks_a_global_minimum(inflight: list[int], seed: int) -> None:
    registry, ids = build(len(inflight))
    local = LocalLoad()
    for w, k in zip(ids, inflight, strict=True):
        for _ in range(k):
            local.dispatched(w)
    config = BalancerConfig(strategy="p2c", d=len(inflight))
    balancer = balancer_for(config, registry, local, seed)
    for _ in range(5):
        chosen = balancer.pick(pool_of(registry), "k", 10.0)
        assert local.inflight.get(chosen, 0) == min(inflight)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_p2c_compares_two_distinct_workers(n: int) -> None:
    # With two *distinct* candidates the single most loaded worker can never win; sampling with
    # replacement would sometimes draw it twice and pick it.
    registry, ids = build(n)
    local = LocalLoad()
    for _ in range(100):
        local.dispatched("w0")
    balancer = balancer_for("p2c", registry, local, seed=5)
    pool = pool_of(registry)
    picks = Counter(balancer.pick(pool, "k", 10.0) for _ in range(3000))
    assert "w0" not in picks
    assert set(picks) == set(ids[1:])


@SETTINGS
@given(n=st.integers(1, 10), d=st.integers(1, 12), seed=st.integers(0, 10_000))
def test_sample_distinct_draws_distinct_candidates(n: int, d: int, seed: int) -> None:
    candidates = [f"w{i}" for i in range(n)]
    rng = random.Random(seed)
    for _ in range(10):
        choice = _sample_distinct(rng, candidates, d)
        assert len(choice) == min(d, n)
        assert len(set(choice)) == len(choice)
        assert set(choice) <= set(candidates)


def test_sample_distinct_pairs_are_uniform() -> None:
    candidates = ["a", "b", "c", "d"]
    rng = random.Random(99)
    pairs = Counter(frozenset(_sample_distinct(rng, candidates, 2)) for _ in range(6000))
    assert len(pairs) == 6
    assert all(850 < c < 1150 for c in pairs.values())


# -- cpu based ----------------------------------------------------------------------------------


def test_cpu_based_picks_the_lowest_reported_cpu() -> None:
    cpus = [0.9, 0.4, 0.15, 0.6]
    registry, _ = build(4, reports=[LoadReport(cpu=c) for c in cpus])
    balancer = balancer_for("cpu_based", registry, seed=2)
    pool = pool_of(registry)
    assert {balancer.pick(pool, "k", 10.0) for _ in range(50)} == {"w2"}
    # A new heartbeat moves the herd.
    registry.heartbeat("w0", 11.0, LoadReport(cpu=0.05))
    assert {balancer.pick(pool, "k", 11.0) for _ in range(50)} == {"w0"}
    # Excluding the lowest gives the next lowest.
    assert balancer.pick(pool, "k", 11.0, {"w0"}) == "w2"


def test_cpu_based_ignores_down_workers_and_breaks_ties_randomly() -> None:
    cpus = [0.0, 0.3, 0.3, 0.3]
    registry, _ = build(4, [False, True, True, True], [LoadReport(cpu=c) for c in cpus])
    balancer = balancer_for("cpu_based", registry, seed=4)
    pool = pool_of(registry)
    picks = Counter(balancer.pick(pool, "k", 10.0) for _ in range(600))
    assert set(picks) == {"w1", "w2", "w3"}
    assert min(picks.values()) > 120


# -- weighted response time ---------------------------------------------------------------------


def _proportions_match(counts: Counter, probs: dict[str, float], draws: int) -> None:
    for w, p in probs.items():
        sigma = math.sqrt(draws * p * (1 - p))
        assert abs(counts[w] - draws * p) < 4 * sigma, (w, counts[w], draws * p)


def test_weighted_response_time_favours_fast_workers_in_proportion() -> None:
    rts = [10.0, 20.0, 40.0]
    registry, _ids = build(3, reports=[LoadReport(rt_ewma_ms=r) for r in rts])
    balancer = balancer_for("weighted_response_time", registry, seed=11)
    pool = pool_of(registry)
    draws = 14_000
    counts = Counter(balancer.pick(pool, "k", 10.0) for _ in range(draws))
    # weights 1/10 : 1/20 : 1/40 = 4 : 2 : 1
    _proportions_match(counts, {"w0": 4 / 7, "w1": 2 / 7, "w2": 1 / 7}, draws)


def test_weighted_response_time_gives_unreported_workers_the_mean_weight() -> None:
    rts = [10.0, 30.0, 0.0]  # w2 has no response time yet: treated as the mean, 20
    registry, _ = build(3, reports=[LoadReport(rt_ewma_ms=r) for r in rts])
    balancer = balancer_for("weighted_response_time", registry, seed=12)
    pool = pool_of(registry)
    draws = 11_000
    counts = Counter(balancer.pick(pool, "k", 10.0) for _ in range(draws))
    total = 1 / 10 + 1 / 30 + 1 / 20
    _proportions_match(
        counts, {"w0": 0.1 / total, "w1": (1 / 30) / total, "w2": 0.05 / total}, draws
    )


def test_weighted_response_time_survives_a_tiny_reported_response_time() -> None:
    registry, _ = build(2, reports=[LoadReport(rt_ewma_ms=5e-324), LoadReport(rt_ewma_ms=10.0)])
    balancer = balancer_for("weighted_response_time", registry)
    assert balancer.pick(pool_of(registry), "k", 10.0) in ("w0", "w1")


def test_weighted_response_time_without_reports_is_uniform() -> None:
    registry, ids = build(4)
    balancer = balancer_for("weighted_response_time", registry, seed=13)
    pool = pool_of(registry)
    draws = 8000
    counts = Counter(balancer.pick(pool, "k", 10.0) for _ in range(draws))
    _proportions_match(counts, dict.fromkeys(ids, 0.25), draws)


# -- adaptive -----------------------------------------------------------------------------------


def test_normalise_weights_scales_to_one() -> None:
    assert normalise_weights(DEFAULT_WEIGHTS) == pytest.approx(DEFAULT_WEIGHTS)
    assert sum(normalise_weights(DEFAULT_WEIGHTS).values()) == pytest.approx(1.0)
    w = normalise_weights({"cpu": 3, "errors": 1})
    assert w == pytest.approx(
        {"response_time": 0.0, "cpu": 0.75, "connections": 0.0, "errors": 0.25}
    )
    assert set(w) == set(DEFAULT_WEIGHTS)


@SETTINGS
@given(
    st.fixed_dictionaries(
        {},
        optional={k: st.floats(0.0, 1e6) for k in DEFAULT_WEIGHTS},
    ).filter(lambda d: sum(d.values()) > 0)
)
def test_normalise_weights_property(weights: dict[str, float]) -> None:
    w = normalise_weights(weights)
    assert set(w) == set(DEFAULT_WEIGHTS)
    assert sum(w.values()) == pytest.approx(1.0)
    assert all(v >= 0 for v in w.values())
    for k in DEFAULT_WEIGHTS:
        if weights.get(k, 0.0) == 0.0:
            assert w[k] == 0.0


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ({"cpu": 1.0, "latency": 1.0}, "latency"),
        ({"cpu": -0.1, "errors": 1.0}, ">= 0"),
        ({"cpu": math.inf}, "finite"),
        ({"cpu": math.nan}, "finite"),
        ({"cpu": 0.0, "errors": 0.0}, "all be 0"),
        ({}, "all be 0"),
    ],
)
def test_normalise_weights_rejects_bad_weights(weights: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        normalise_weights(weights)
    registry, _ = build(1)
    with pytest.raises(ValueError, match=match):
        balancer_for(BalancerConfig(strategy="adaptive", weights=weights), registry)


@SETTINGS
@given(
    cpus=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8, unique=True),
    other=st.lists(st.floats(0.0, 1.0), min_size=8, max_size=8),
    seed=st.integers(0, 1000),
)
def test_adaptive_with_all_weight_on_cpu_behaves_like_cpu_based(
    cpus: list[float], other: list[float], seed: int
) -> None:
    reports = [
        LoadReport(cpu=c, rt_ewma_ms=100 * o, error_rate=o, capacity=2)
        for c, o in zip(cpus, other, strict=False)
    ]
    registry, ids = build(len(cpus), reports=reports)
    local = LocalLoad()
    for w, o in zip(ids, other, strict=False):
        for _ in range(int(o * 5)):
            local.dispatched(w)
    adaptive = balancer_for(
        BalancerConfig(strategy="adaptive", weights={"cpu": 1.0}), registry, local, seed
    )
    cpu_based = balancer_for("cpu_based", registry, local, seed)
    pool = pool_of(registry)
    expected = ids[cpus.index(min(cpus))]
    for _ in range(3):
        assert adaptive.pick(pool, "k", 10.0) == expected
        assert cpu_based.pick(pool, "k", 10.0) == expected


def test_adaptive_with_all_weight_on_connections_avoids_a_busy_worker() -> None:
    # w0's report looks best on every reported term, but this gateway has 20 requests on it.
    reports = [
        LoadReport(cpu=0.0, rt_ewma_ms=1.0, capacity=4),
        LoadReport(cpu=0.9, rt_ewma_ms=90.0, error_rate=0.5, capacity=4),
        LoadReport(cpu=0.8, rt_ewma_ms=80.0, error_rate=0.5, capacity=4),
    ]
    registry, _ = build(3, reports=reports)
    local = LocalLoad()
    for _ in range(20):
        local.dispatched("w0")
    local.dispatched("w1")
    balancer = balancer_for(
        BalancerConfig(strategy="adaptive", weights={"connections": 1.0}), registry, local, 7
    )
    pool = pool_of(registry)
    assert {balancer.pick(pool, "k", 10.0) for _ in range(50)} == {"w2"}


def test_adaptive_connection_term_stops_the_stale_report_herd() -> None:
    # Default weights: the worker with the good (stale) report draws requests only until this
    # gateway's own in-flight count on it outweighs the report.
    reports = [
        LoadReport(cpu=0.1, rt_ewma_ms=10.0, capacity=2),
        LoadReport(cpu=0.6, rt_ewma_ms=50.0, capacity=2),
        LoadReport(cpu=0.6, rt_ewma_ms=50.0, capacity=2),
    ]
    registry, _ = build(3, reports=reports)
    local = LocalLoad()
    balancer = balancer_for("adaptive", registry, local, 8)
    pool = pool_of(registry)
    for _ in range(60):
        local.dispatched(balancer.pick(pool, "k", 10.0))
    assert local.inflight["w0"] < 60
    assert local.inflight.get("w1", 0) > 0 and local.inflight.get("w2", 0) > 0
    cpu_local = LocalLoad()
    herd = balancer_for("cpu_based", registry, cpu_local, 8)
    for _ in range(60):
        cpu_local.dispatched(herd.pick(pool, "k", 10.0))
    assert cpu_local.inflight == {"w0": 60}


@pytest.mark.parametrize(
    ("weights", "reports", "expected"),
    [
        (
            {"response_time": 1.0},
            [LoadReport(rt_ewma_ms=30.0), LoadReport(rt_ewma_ms=5.0), LoadReport(rt_ewma_ms=9.0)],
            "w1",
        ),
        (
            {"errors": 1.0},
            [LoadReport(error_rate=0.3), LoadReport(error_rate=0.2), LoadReport(error_rate=0.01)],
            "w2",
        ),
    ],
)
def test_adaptive_single_term(
    weights: dict[str, float], reports: list[LoadReport], expected: str
) -> None:
    registry, _ = build(3, reports=reports)
    balancer = balancer_for(BalancerConfig(strategy="adaptive", weights=weights), registry)
    pool = pool_of(registry)
    assert {balancer.pick(pool, "k", 10.0) for _ in range(20)} == {expected}


def test_adaptive_sample_scores_only_k_workers() -> None:
    # With sample=2 of 3, the single worst worker can never win; the best does not always.
    reports = [LoadReport(cpu=0.1), LoadReport(cpu=0.5), LoadReport(cpu=0.9)]
    registry, _ = build(3, reports=reports)
    balancer = balancer_for(
        BalancerConfig(strategy="adaptive", weights={"cpu": 1.0}, sample=2), registry, seed=21
    )
    pool = pool_of(registry)
    picks = Counter(balancer.pick(pool, "k", 10.0) for _ in range(3000))
    assert set(picks) == {"w0", "w1"}
    assert picks["w0"] == pytest.approx(2000, abs=150)  # w0 is in 2 of the 3 pairs


# -- peak EWMA ----------------------------------------------------------------------------------


def test_local_load_counts_inflight() -> None:
    local = LocalLoad()
    local.dispatched("a")
    local.dispatched("a")
    local.dispatched("b")
    assert local.inflight == {"a": 2, "b": 1} and local.total == 3
    local.finished("a", 1.0, None)
    assert local.inflight == {"a": 1, "b": 1} and local.total == 2
    assert local.peak_ewma_ms("a", 1.0) == 0.0  # no reply, no sample


def test_peak_ewma_first_sample_and_decay() -> None:
    local = LocalLoad(tau_s=10.0)
    assert local.peak_ewma_ms("a", 0.0) == 0.0
    local.dispatched("a")
    local.finished("a", 5.0, 80.0)
    assert local.peak_ewma_ms("a", 5.0) == pytest.approx(80.0)
    # Without new samples the estimate decays towards 0 with time constant tau.
    assert local.peak_ewma_ms("a", 15.0) == pytest.approx(80.0 / math.e)
    assert local.peak_ewma_ms("a", 25.0) == pytest.approx(80.0 / math.e**2)


def test_peak_ewma_jumps_up_to_a_slower_sample() -> None:
    local = LocalLoad(tau_s=10.0)
    for rtt in (20.0, 500.0):
        local.dispatched("a")
        local.finished("a", 1.0, rtt)
    assert local.peak_ewma_ms("a", 1.0) == pytest.approx(500.0)


def test_peak_ewma_moves_down_to_faster_samples_with_tau() -> None:
    local = LocalLoad(tau_s=10.0)
    local.dispatched("a")
    local.finished("a", 0.0, 100.0)
    local.dispatched("a")
    local.finished("a", 0.0, 10.0)  # no time passed: a faster sample has no weight yet
    assert local.peak_ewma_ms("a", 0.0) == pytest.approx(100.0)
    local.dispatched("a")
    local.finished("a", 10.0, 10.0)  # one tau later: weight 1 - 1/e on the new sample
    w = math.exp(-1.0)
    # blended from the estimate as it reads now (already decayed towards 0 while idle)
    current = 100.0 * w
    assert local.peak_ewma_ms("a", 10.0) == pytest.approx(current * w + 10.0 * (1 - w))
    for t in range(11, 200):
        local.dispatched("a")
        local.finished("a", float(t), 10.0)
    assert local.peak_ewma_ms("a", 199.0) == pytest.approx(10.0, rel=1e-3)


def test_peak_ewma_after_a_slower_sample_equals_that_sample() -> None:
    local = LocalLoad(tau_s=10.0)
    local.dispatched("a")
    local.finished("a", 0.0, 100.0)
    current = local.peak_ewma_ms("a", 10.0)
    assert current == pytest.approx(100.0 / math.e)  # ≈ 36.8 ms
    local.dispatched("a")
    local.finished("a", 10.0, 50.0)  # slower than the current estimate
    # "the estimate jumps to a slower sample": expected 50, actual ≈ 68.4 (36.8 + 50·(1-1/e))
    assert local.peak_ewma_ms("a", 10.0) == pytest.approx(50.0)


@SETTINGS
@given(
    samples=st.lists(
        st.tuples(st.floats(0.0, 30.0), st.floats(0.1, 1000.0)), min_size=1, max_size=20
    )
)
def test_peak_ewma_estimate_is_at_least_the_latest_sample(
    samples: list[tuple[float, float]],
) -> None:
    local = LocalLoad(tau_s=5.0)
    now = 0.0
    highest = 0.0
    for dt, rtt in samples:
        now += dt
        local.dispatched("a")
        local.finished("a", now, rtt)
        highest = max(highest, rtt)
        est = local.peak_ewma_ms("a", now)
        assert est >= rtt * (1 - 1e-9)
        assert est <= highest * (1 + 1e-9)


def test_peak_ewma_prefers_the_fast_worker() -> None:
    registry, _ = build(2)
    local = LocalLoad(tau_s=10.0)
    for w, rtt in (("w0", 400.0), ("w1", 20.0)):
        local.dispatched(w)
        local.finished(w, 9.0, rtt)
    balancer = balancer_for("peak_ewma", registry, local, seed=1)
    pool = pool_of(registry)
    assert {balancer.pick(pool, "k", 10.0) for _ in range(30)} == {"w1"}
    # In-flight requests multiply the cost: 20 ms × 21 > 400 ms × 1.
    for _ in range(20):
        local.dispatched("w1")
    assert balancer.pick(pool, "k", 10.0) == "w0"


def test_peak_ewma_penalises_pending_requests_without_a_sample() -> None:
    registry, _ = build(2)
    local = LocalLoad()
    local.dispatched("w0")  # in flight, never measured
    local.dispatched("w1")
    local.finished("w1", 9.0, 900.0)
    local.dispatched("w1")
    balancer = balancer_for("peak_ewma", registry, local, seed=1)
    assert balancer.pick(pool_of(registry), "k", 10.0) == "w1"
    assert isinstance(balancer, PeakEwma)
    assert balancer._cost("w0", 10.0) >= PeakEwma.PENALTY_MS


# -- consistent hash ----------------------------------------------------------------------------

KEYS = [f"agent-{i}" for i in range(2000)]


def owners(balancer: Balancer, pool: Pool, keys: Sequence[str] = KEYS) -> dict[str, str]:
    return {k: balancer.pick(pool, k, 10.0) for k in keys}


def test_consistent_hash_same_key_same_worker() -> None:
    registry, _ = build(6)
    pool = pool_of(registry)
    a = balancer_for("consistent_hash", registry, seed=1)
    b = balancer_for("consistent_hash", registry, seed=2)
    first = owners(a, pool)
    assert owners(a, pool) == first
    assert owners(b, pool) == first  # independent of the rng and of the instance
    assert len(set(first.values())) == 6
    ring = HashRing(pool.members, BalancerConfig().vnodes)
    assert all(ring.node_for(k) == w for k, w in first.items())


def test_consistent_hash_moves_only_an_unhealthy_workers_keys_and_brings_them_back() -> None:
    registry, ids = build(8)
    balancer = balancer_for("consistent_hash", registry)
    before = owners(balancer, pool_of(registry))

    set_health(registry, ids, [w != "w3" for w in ids], 20.0)
    during = owners(balancer, pool_of(registry))
    moved = {k for k in KEYS if during[k] != before[k]}
    assert moved == {k for k in KEYS if before[k] == "w3"}
    assert moved and "w3" not in during.values()

    set_health(registry, ids, [True] * 8, 30.0)
    assert owners(balancer, pool_of(registry)) == before


def test_consistent_hash_skips_to_the_next_worker_clockwise() -> None:
    registry, ids = build(5)
    balancer = balancer_for("consistent_hash", registry)
    pool = pool_of(registry)
    ring = HashRing(pool.members, BalancerConfig().vnodes)
    for key in KEYS[:200]:
        order = list(ring.walk(key))
        assert balancer.pick(pool, key, 10.0, {order[0]}) == order[1]
        assert balancer.pick(pool, key, 10.0, set(order[:3])) == order[3]
        assert balancer.pick(pool, key, 10.0, set(ids)) == order[0]


def test_consistent_hash_leave_moves_about_one_nth_of_the_keys() -> None:
    n = 20
    keys = [f"session-{i}" for i in range(5000)]
    registry, _ids = build(n)
    balancer = balancer_for("consistent_hash", registry)
    before = owners(balancer, pool_of(registry), keys)
    registry.deregister("w7", 20.0)
    after = owners(balancer, pool_of(registry), keys)
    moved = [k for k in keys if after[k] != before[k]]
    assert set(moved) == {k for k in keys if before[k] == "w7"}
    assert 0.5 / n <= len(moved) / len(keys) <= 1.6 / n


def test_consistent_hash_join_only_takes_keys_for_the_newcomer() -> None:
    n = 10
    registry, _ids = build(n)
    balancer = balancer_for("consistent_hash", registry)
    before = owners(balancer, pool_of(registry))
    registry.register("w-new", [AGENT], 20.0)
    after = owners(balancer, pool_of(registry))
    moved = [k for k in KEYS if after[k] != before[k]]
    assert moved and all(after[k] == "w-new" for k in moved)
    assert 0.5 / (n + 1) <= len(moved) / len(KEYS) <= 1.6 / (n + 1)


def _zipf_keys(count: int, seed: int) -> list[str]:
    population = [f"agent-{i}" for i in range(1000)]
    weights = [1 / (r + 1) ** 1.2 for r in range(len(population))]
    return random.Random(seed).choices(population, weights=weights, k=count)


@pytest.mark.parametrize("c", [1.1, 1.25, 2.0])
def test_consistent_hash_bounded_load_caps_every_worker(c: float) -> None:
    n = 10
    registry, _ = build(n)
    local = LocalLoad()
    config = BalancerConfig(strategy="consistent_hash", bounded_load=c)
    balancer = balancer_for(config, registry, local)
    pool = pool_of(registry)
    rng = random.Random(17)
    for key in _zipf_keys(1500, seed=3):
        cap = math.ceil(c * (local.total + 1) / n)
        w = balancer.pick(pool, key, 10.0)
        assert local.inflight.get(w, 0) < cap
        local.dispatched(w)
        assert max(local.inflight.values()) <= math.ceil(c * local.total / n)
        if rng.random() < 0.4:  # some requests finish
            busy = [x for x, k in local.inflight.items() if k > 0]
            local.finished(rng.choice(busy), 10.0, None)


def test_zipf_keys_concentrate_without_the_bound_but_not_with_it() -> None:
    n, c, count = 10, 1.25, 500
    registry, _ = build(n)
    pool = pool_of(registry)
    keys = _zipf_keys(count, seed=7)
    peak = {}
    for bound in (None, c):
        local = LocalLoad()
        config = BalancerConfig(strategy="consistent_hash", bounded_load=bound)
        balancer = balancer_for(config, registry, local)
        for key in keys:
            local.dispatched(balancer.pick(pool, key, 10.0))
        peak[bound] = max(local.inflight.values())
    limit = math.ceil(c * count / n)
    assert peak[c] <= limit
    assert peak[None] > 2 * limit


def test_consistent_hash_keeps_affinity_under_the_bound_when_load_is_light() -> None:
    registry, _ = build(6)
    pool = pool_of(registry)
    plain = balancer_for("consistent_hash", registry)
    local = LocalLoad()
    bounded = balancer_for(
        BalancerConfig(strategy="consistent_hash", bounded_load=1.25), registry, local
    )
    for key in KEYS[:300]:  # nothing in flight: nobody is at the cap
        assert bounded.pick(pool, key, 10.0) == plain.pick(pool, key, 10.0)


# -- hash ring ----------------------------------------------------------------------------------


def test_hash64_is_stable_across_processes() -> None:
    # Pinned values (blake2b, 8 bytes, big-endian): Python's salted hash() would change per run.
    assert hash64("") == 0xE4A6A0577479B2B4
    assert hash64("agent-1") == 0x0683BA7D8365344A
    assert hash64("w0#0") == 0xA04D10D3A2B90987
    assert hash64("w0#0") == int.from_bytes(blake2b(b"w0#0", digest_size=8).digest(), "big")


def test_hash_ring_is_deterministic_and_order_independent() -> None:
    nodes = [f"n{i}" for i in range(7)]
    a = HashRing(nodes, 50)
    b = HashRing(list(reversed(nodes)), 50)
    c = HashRing(nodes + nodes[:3], 50)  # duplicates collapse
    assert len(a) == len(c) == 7
    assert c.nodes == tuple(nodes)
    for key in KEYS[:500]:
        assert a.node_for(key) == b.node_for(key) == c.node_for(key)


@SETTINGS
@given(
    nodes=st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=12, unique=True),
    vnodes=st.integers(1, 30),
    key=st.text(max_size=10),
)
def test_hash_ring_walk_yields_each_node_once_starting_at_the_owner(
    nodes: list[str], vnodes: int, key: str
) -> None:
    ring = HashRing(nodes, vnodes)
    walk = list(ring.walk(key))
    assert sorted(walk) == sorted(nodes)
    assert walk[0] == ring.node_for(key)


def test_hash_ring_spreads_keys_over_nodes() -> None:
    ring = HashRing([f"n{i}" for i in range(10)], 100)
    counts = Counter(ring.node_for(f"k{i}") for i in range(20_000))
    assert len(counts) == 10
    assert all(1200 < c < 2800 for c in counts.values())


def test_empty_hash_ring() -> None:
    ring = HashRing([], 10)
    assert len(ring) == 0
    with pytest.raises(LookupError):
        ring.node_for("k")
    assert list(ring.walk("k")) == []


def test_hash_ring_rejects_zero_vnodes() -> None:
    with pytest.raises(ValueError):
        HashRing(["a"], 0)
