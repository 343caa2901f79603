"""Tests for ``labkit.core.gateway`` and ``labkit.core.outcomes``."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.core.balancing import BalancerConfig, LocalLoad, make_balancer
from labkit.core.breaker import BreakerConfig
from labkit.core.gateway import (
    GatewayConfig,
    GatewayPolicy,
    RetryPolicy,
    TokenBucket,
    UnknownAgentType,
)
from labkit.core.outcomes import DETAIL_FINAL, FINAL_OF_DETAIL, RETRYABLE, Detail, Final
from labkit.core.outlier import OutlierConfig
from labkit.core.registry import Registry, StrongView, TimeoutDetector
from labkit.core.retry_budget import RetryBudgetConfig
from labkit.errors import NoWorkerAvailable

SETTINGS = settings(derandomize=True, deadline=None, max_examples=100)


def make_policy(
    config: GatewayConfig | None = None,
    *,
    workers: int = 3,
    strategy: str = "round_robin",
    seed: int = 0,
) -> tuple[GatewayPolicy, Registry]:
    registry = Registry(TimeoutDetector(1.0, 2.0))
    for i in range(workers):
        registry.register(f"w{i}", ["planner"], 0.0)
    view = StrongView(registry)
    local = LocalLoad()
    balancer = make_balancer(BalancerConfig(strategy=strategy), local, view, random.Random(seed))
    policy = GatewayPolicy(
        "gw0", config or GatewayConfig(), view, balancer, local, random.Random(seed + 1)
    )
    return policy, registry


# -- token bucket -------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1.0), (-1.0, 5.0), (1.0, 0.5), (1.0, 0.0)])
def test_token_bucket_rejects_bad_parameters(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


def test_token_bucket_allows_burst_then_rate() -> None:
    bucket = TokenBucket(rate=4.0, burst=5.0, now=0.0)
    assert [bucket.allow(0.0) for _ in range(6)] == [True] * 5 + [False]
    # 0.25 s refills exactly one token (exact in binary floating point).
    assert bucket.allow(0.25) is True
    assert bucket.allow(0.25) is False
    # One second later: 4 more.
    assert [bucket.allow(1.25) for _ in range(5)] == [True] * 4 + [False]
    # Saving up never exceeds the burst.
    assert [bucket.allow(100.0) for _ in range(6)] == [True] * 5 + [False]


def test_token_bucket_denied_calls_do_not_spend_tokens() -> None:
    bucket = TokenBucket(rate=2.0, burst=1.0, now=0.0)
    assert bucket.allow(0.0)
    for t in (0.1, 0.2, 0.3, 0.4):
        assert not bucket.allow(t)
    assert bucket.allow(0.5)


def test_token_bucket_cost() -> None:
    bucket = TokenBucket(rate=1.0, burst=4.0, now=0.0)
    assert bucket.allow(0.0, cost=3.0)
    assert not bucket.allow(0.0, cost=2.0)
    assert bucket.allow(0.0, cost=1.0)
    assert not bucket.allow(0.0)


def test_token_bucket_starts_full_at_its_creation_time() -> None:
    bucket = TokenBucket(rate=1.0, burst=2.0, now=50.0)
    assert bucket.allow(50.0) and bucket.allow(50.0)
    assert not bucket.allow(50.5)
    assert bucket.allow(51.0)


@SETTINGS
@given(
    rate=st.floats(0.1, 100.0),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0.0, 0.5), min_size=1, max_size=60),
)
def test_token_bucket_never_admits_more_than_burst_plus_rate_times_window(
    rate: float, burst: int, gaps: list[float]
) -> None:
    bucket = TokenBucket(rate, float(burst), now=0.0)
    times: list[float] = []
    now = 0.0
    for gap in gaps:
        now += gap
        if bucket.allow(now):
            times.append(now)
    # Over [0, T] and, more strongly, over every window [t_i, t_j] of admitted calls.
    assert len(times) <= burst + rate * now + 1e-9
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= burst + rate * (times[j] - times[i]) + 1e-9


@SETTINGS
@given(rate=st.sampled_from([1.0, 2.0, 4.0, 8.0]), burst=st.integers(1, 10), n=st.integers(1, 40))
def test_token_bucket_admits_calls_spaced_at_the_rate(rate: float, burst: int, n: int) -> None:
    bucket = TokenBucket(rate, float(burst), now=0.0)
    for _ in range(burst):
        assert bucket.allow(0.0)
    assert not bucket.allow(0.0)
    for k in range(1, n + 1):
        assert bucket.allow(k / rate)


# -- admission ----------------------------------------------------------------------------------


def test_admit_without_auth_or_rate_limit_lets_everything_in() -> None:
    policy, _ = make_policy()
    assert policy.bucket is None
    for i in range(100):
        assert policy.admit(float(i) * 1e-3, None) is None
        assert policy.admit(float(i) * 1e-3, "anything") is None


@pytest.mark.parametrize("key", [None, "", "wrong", "K1", "k1 "])
def test_admit_rejects_a_missing_or_wrong_key(key: str | None) -> None:
    policy, _ = make_policy(GatewayConfig(api_keys=frozenset({"k1", "k2"})))
    assert policy.admit(0.0, key) is Detail.UNAUTHORIZED


def test_admit_accepts_a_valid_key() -> None:
    policy, _ = make_policy(GatewayConfig(api_keys=frozenset({"k1", "k2"})))
    assert policy.admit(0.0, "k1") is None
    assert policy.admit(0.0, "k2") is None


def test_admit_rate_limits_when_the_bucket_is_empty() -> None:
    config = GatewayConfig(api_keys=frozenset({"k1"}), rate_limit_rps=2.0, rate_limit_burst=3.0)
    policy, _ = make_policy(config)
    assert policy.bucket is not None
    # Unauthorized requests are turned away before they can spend tokens.
    for _ in range(10):
        assert policy.admit(0.0, "bad") is Detail.UNAUTHORIZED
    assert [policy.admit(0.0, "k1") for _ in range(4)] == [None, None, None, Detail.RATE_LIMITED]
    assert policy.admit(0.5, "k1") is None
    assert policy.admit(0.5, "k1") is Detail.RATE_LIMITED
    # Rate limited even with a bad key? No: auth is checked first.
    assert policy.admit(0.5, None) is Detail.UNAUTHORIZED


def test_admit_rate_limit_without_auth() -> None:
    policy, _ = make_policy(GatewayConfig(rate_limit_rps=10.0))  # burst defaults to 1
    assert policy.admit(0.0) is None
    assert policy.admit(0.05) is Detail.RATE_LIMITED
    assert policy.admit(0.1) is None


def test_deadline() -> None:
    policy, _ = make_policy(GatewayConfig(timeout_s=1.5))
    assert policy.deadline(10.0) == pytest.approx(11.5)


# -- retries ------------------------------------------------------------------------------------


@SETTINGS
@given(
    attempts=st.integers(1, 60),
    base=st.floats(1e-4, 1.0),
    cap=st.floats(1e-4, 10.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_backoff_is_within_full_jitter_bounds(
    attempts: int, base: float, cap: float, seed: int
) -> None:
    policy = RetryPolicy(max_attempts=5, base_s=base, cap_s=cap)
    ceiling = min(cap, base * 2 ** (attempts - 1))
    rng = random.Random(seed)
    for _ in range(5):
        assert 0.0 <= policy.backoff(attempts, rng) <= ceiling


@pytest.mark.parametrize("attempts", [1, 2, 3, 6, 10])
def test_backoff_mean_is_half_the_ceiling(attempts: int) -> None:
    policy = RetryPolicy(max_attempts=10, base_s=0.01, cap_s=0.2)
    ceiling = min(0.2, 0.01 * 2 ** (attempts - 1))
    rng = random.Random(attempts)
    samples = [policy.backoff(attempts, rng) for _ in range(20_000)]
    assert statistics.fmean(samples) == pytest.approx(ceiling / 2, rel=0.02)
    assert max(samples) <= ceiling
    assert max(samples) > 0.95 * ceiling  # really spread over the whole range


def test_backoff_is_capped_for_huge_attempt_counts() -> None:
    policy = RetryPolicy(max_attempts=5000, base_s=0.005, cap_s=0.2)
    assert 0.0 <= policy.backoff(2000, random.Random(0)) <= 0.2


def test_after_attempt_finishes_non_retryable_details() -> None:
    config = GatewayConfig(retry=RetryPolicy(max_attempts=5))
    policy, _ = make_policy(config)
    for detail in Detail:
        if detail not in RETRYABLE:
            assert policy.after_attempt(detail, 1, 0.0, 100.0) is None
    assert policy.retries == 0


def test_after_attempt_retries_retryable_details_until_max_attempts() -> None:
    config = GatewayConfig(retry=RetryPolicy(max_attempts=3, base_s=0.01, cap_s=1.0))
    policy, _ = make_policy(config)
    for detail in RETRYABLE:
        assert policy.after_attempt(detail, 1, 0.0, 100.0) is not None
        assert policy.after_attempt(detail, 2, 0.0, 100.0) is not None
        assert policy.after_attempt(detail, 3, 0.0, 100.0) is None
        assert policy.after_attempt(detail, 4, 0.0, 100.0) is None
    assert policy.retries == 2 * len(RETRYABLE)


def test_default_retry_policy_never_retries() -> None:
    policy, _ = make_policy()
    assert policy.config.retry.max_attempts == 1
    assert policy.after_attempt(Detail.WORKER_ERROR, 1, 0.0, 100.0) is None


@SETTINGS
@given(
    detail=st.sampled_from(list(Detail)),
    attempts=st.integers(0, 8),
    max_attempts=st.integers(1, 6),
    now=st.floats(0.0, 10.0),
    budget=st.floats(-0.1, 0.3),
    seed=st.integers(0, 2**16),
)
def test_after_attempt_property(
    detail: Detail, attempts: int, max_attempts: int, now: float, budget: float, seed: int
) -> None:
    retry = RetryPolicy(max_attempts=max_attempts, base_s=0.02, cap_s=0.16)
    policy, _ = make_policy(GatewayConfig(retry=retry), seed=seed)
    twin = random.Random(seed + 1)  # same stream as the policy's rng
    deadline = now + budget
    delay = policy.after_attempt(detail, attempts, now, deadline)
    if detail not in RETRYABLE or attempts >= max_attempts:
        assert delay is None
        assert policy.retries == 0
        return
    would_be = retry.backoff(attempts, twin)
    if now + would_be >= deadline:
        assert delay is None  # the backoff would end at or past the deadline
        assert policy.retries == 0
    else:
        assert delay == would_be
        assert 0.0 <= delay <= min(0.16, 0.02 * 2 ** (attempts - 1))
        assert now + delay < deadline
        assert policy.retries == 1


def test_after_attempt_never_retries_past_the_deadline() -> None:
    config = GatewayConfig(retry=RetryPolicy(max_attempts=10, base_s=0.5, cap_s=0.5))
    policy, _ = make_policy(config)
    for _ in range(200):
        assert policy.after_attempt(Detail.QUEUE_FULL, 1, 10.0, 10.0) is None
    assert policy.retries == 0


# -- routing ------------------------------------------------------------------------------------


def test_route_picks_a_healthy_worker() -> None:
    policy, registry = make_policy(GatewayConfig(panic_threshold=0), workers=3)
    assert [policy.route("planner", "k", 0.0) for _ in range(3)] == ["w0", "w1", "w2"]
    assert policy.route("planner", "k", 0.0, exclude={"w0", "w1"}) == "w2"
    registry.heartbeat("w1", 2.5)
    registry.evaluate(3.0)
    assert {policy.route("planner", "k", 3.0) for _ in range(5)} == {"w1"}


def test_route_unknown_type_raises_unknown_agent_type() -> None:
    policy, _ = make_policy()
    with pytest.raises(UnknownAgentType) as info:
        policy.route("coder", "k", 0.0)
    assert isinstance(info.value, NoWorkerAvailable)
    assert info.value.agent_type == "coder"
    assert "'coder'" in str(info.value)
    assert "registered" in str(info.value)


def test_route_all_down_raises_no_worker_available() -> None:
    policy, registry = make_policy(GatewayConfig(panic_threshold=0), workers=2)
    registry.evaluate(10.0)
    with pytest.raises(NoWorkerAvailable) as info:
        policy.route("planner", "k", 10.0)
    assert not isinstance(info.value, UnknownAgentType)
    assert info.value.agent_type == "planner"
    assert "'planner'" in str(info.value)


def test_route_after_every_worker_left_is_no_worker_not_unknown_type() -> None:
    policy, registry = make_policy(workers=1)
    registry.deregister("w0", 1.0)
    with pytest.raises(NoWorkerAvailable) as info:
        policy.route("planner", "k", 1.0)
    assert not isinstance(info.value, UnknownAgentType)


# -- outcomes -----------------------------------------------------------------------------------


def test_every_detail_maps_to_exactly_one_final() -> None:
    assert set(DETAIL_FINAL) == set(Detail)
    for detail in Detail:
        assert isinstance(DETAIL_FINAL[detail], Final)
        assert detail.final is DETAIL_FINAL[detail]
    assert Detail.OK.final is Final.COMPLETED
    assert {d for d in Detail if d.final is Final.COMPLETED} == {Detail.OK}
    assert Detail.DEADLINE.final is Final.TIMED_OUT
    assert Detail.UNAUTHORIZED.final is Final.REJECTED
    assert Detail.RATE_LIMITED.final is Final.REJECTED


def test_final_of_detail_is_consistent() -> None:
    assert [int(d) for d in Detail] == list(range(len(Detail)))  # usable as an index
    assert len(FINAL_OF_DETAIL) == len(Detail)
    for detail in Detail:
        assert FINAL_OF_DETAIL[int(detail)] == int(detail.final)
    assert set(FINAL_OF_DETAIL) <= {int(f) for f in Final}


def test_final_codes_and_labels() -> None:
    assert [f.label for f in Final] == ["completed", "failed", "rejected", "timed_out"]
    assert [int(f) for f in Final] == [0, 1, 2, 3]
    assert Detail.NO_WORKER.label == "no_worker"
    assert len({d.label for d in Detail}) == len(Detail)


def test_retryable_details_are_failures_that_never_started_or_failed_on_a_worker() -> None:
    assert (
        frozenset(
            {
                Detail.QUEUE_FULL,
                Detail.WORKER_ERROR,
                Detail.WORKER_LOST,
                Detail.ATTEMPT_TIMEOUT,
                Detail.CONFLICT,
            }
        )
        == RETRYABLE
    )
    assert Detail.OK not in RETRYABLE
    assert Detail.DEADLINE not in RETRYABLE
    assert Detail.ATTEMPT_TIMEOUT.final is Final.TIMED_OUT


# -- panic, passive health checks, retry budget, hedging ------------------------------------------


def test_panic_routes_over_every_member_when_too_few_are_healthy() -> None:
    policy, registry = make_policy(GatewayConfig(panic_threshold=0.5), workers=4)
    events: list[tuple[str, str, str, float]] = []
    policy.on_event = lambda *e: events.append(e)
    # 2 of 4 healthy: exactly the threshold, not below it, so no panic
    registry.heartbeat("w0", 2.5)
    registry.heartbeat("w1", 2.5)
    registry.evaluate(3.0)
    assert {policy.route("planner", "k", 3.0) for _ in range(8)} == {"w0", "w1"}
    assert policy.panic_routes == 0
    # 1 of 4 healthy: below half, so every member is a candidate again (Envoy's panic mode)
    registry.heartbeat("w0", 4.5)
    registry.evaluate(5.0)
    assert {policy.route("planner", "k", 5.0) for _ in range(8)} == {"w0", "w1", "w2", "w3"}
    assert policy.panic_routes == 8
    assert events == [("planner", "panic", "enter", 5.0)]
    # all healthy again: panic ends
    for w in ("w0", "w1", "w2", "w3"):
        registry.heartbeat(w, 5.5)
    registry.evaluate(6.0)
    policy.route("planner", "k", 6.0)
    assert events[-1] == ("planner", "panic", "exit", 6.0)


def test_panic_off_fails_fast_when_everyone_is_down() -> None:
    policy, registry = make_policy(GatewayConfig(panic_threshold=0.0), workers=2)
    registry.evaluate(10.0)
    with pytest.raises(NoWorkerAvailable):
        policy.route("planner", "k", 10.0)


def test_outlier_ejection_takes_a_failing_worker_out_of_rotation() -> None:
    config = GatewayConfig(
        outlier=OutlierConfig(
            consecutive_errors=3, base_ejection_s=10.0, max_ejection_fraction=0.5
        ),
        panic_threshold=0.0,
    )
    policy, _ = make_policy(config, workers=4)
    seen: list[tuple[str, str, str, float]] = []
    policy.on_event = lambda *e: seen.append(e)
    for t in (1.0, 1.1):
        policy.attempt_ended("w2", Detail.WORKER_ERROR, t)
    policy.attempt_ended("w2", Detail.QUEUE_FULL, 1.2)  # load shedding is a sign of life
    for t in (1.3, 1.4):
        policy.attempt_ended("w2", Detail.WORKER_LOST, t)
    assert "w2" in {policy.route("planner", "k", 1.5) for _ in range(8)}
    policy.attempt_ended("w2", Detail.ATTEMPT_TIMEOUT, 1.6)
    assert policy.blocked(1.7) == {"w2"}
    assert "w2" not in {policy.route("planner", "k", 1.7) for _ in range(8)}
    assert seen == [("w2", "outlier", "ejected", 1.6)]
    # back after base_ejection_s
    assert "w2" in {policy.route("planner", "k", 11.7) for _ in range(8)}
    assert seen[-1] == ("w2", "outlier", "returned", pytest.approx(11.6))


def test_open_breaker_blocks_until_a_half_open_probe_succeeds() -> None:
    config = GatewayConfig(
        breaker=BreakerConfig(failure_threshold=2, open_s=5.0, half_open_probes=1, close_after=1),
        panic_threshold=0.0,
    )
    policy, _ = make_policy(config, workers=2)
    policy.attempt_ended("w0", Detail.DEADLINE, 1.0)
    policy.attempt_ended("w0", Detail.WORKER_ERROR, 1.5)
    assert {policy.route("planner", "k", 2.0) for _ in range(4)} == {"w1"}
    # half-open after 5 s: one probe may go
    routes = []
    for _ in range(4):
        w = policy.route("planner", "k", 6.6)
        policy.dispatched(w, 6.6)
        routes.append(w)
    assert routes.count("w0") == 1
    policy.attempt_ended("w0", Detail.OK, 6.7)
    assert {policy.route("planner", "k", 6.8) for _ in range(4)} == {"w0", "w1"}


def test_retry_budget_caps_retries_and_hedges() -> None:
    budget = RetryBudgetConfig(ratio=0.1, min_per_s=0.0, window_s=10.0)
    config = GatewayConfig(
        retry=RetryPolicy(max_attempts=5, base_s=0.0, cap_s=0.0), retry_budget=budget
    )
    policy, _ = make_policy(config)
    for i in range(100):
        policy.request_started(i * 0.01)
    granted = [policy.after_attempt(Detail.WORKER_ERROR, 1, 1.0, 5.0) for _ in range(20)]
    assert sum(g is not None for g in granted) == 10
    assert policy.budget_denied == 10
    assert not policy.hedge_allowed(1.0)
    policy.request_started(1.0)
    policy.request_started(1.0)  # 102 requests: ratio 0.1 allows 10.2, so still none
    assert not policy.hedge_allowed(1.0)
    for _ in range(8):
        policy.request_started(1.0)  # 110: one more retry or hedge
    assert policy.hedge_allowed(1.0)
    assert policy.hedges == 1
