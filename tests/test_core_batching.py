"""Tests for ``labkit.core.batching``: configs, the AIMD controller, the per-link batcher,
the nearest-rank percentile and the batch-size summary written to summary.json."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.core.batching import (
    FLUSH_REASONS,
    AdaptiveBatching,
    AimdController,
    Batcher,
    BatchingConfig,
    batch_size_summary,
    percentile,
)

SETTINGS = settings(derandomize=True, deadline=None, max_examples=150)


def adaptive(**kw: Any) -> AdaptiveBatching:
    params: dict[str, Any] = {"target_p99_s": 0.1, "min_samples": 3, "max_batch": 16}
    params.update(kw)
    return AdaptiveBatching(**params)


def controller(limit: int, **kw: Any) -> AimdController:
    return AimdController(adaptive(**kw), limit)


def feed(ctl: AimdController, latencies: list[float]) -> None:
    for x in latencies:
        ctl.observe(x)


# -- BatchingConfig ----------------------------------------------------------------------------


def test_batching_config_defaults() -> None:
    cfg = BatchingConfig()
    assert cfg.max_batch == 8
    assert cfg.max_delay_s == 0.002
    assert cfg.batch_cost_s == 0.0005
    assert cfg.message_cost_s == 0.0
    assert cfg.adaptive is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_batch": 0},
        {"max_batch": -3},
        {"max_delay_s": -0.001},
        {"batch_cost_s": -0.5},
        {"message_cost_s": -1e-9},
    ],
)
def test_batching_config_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BatchingConfig(**kwargs)


def test_batching_config_accepts_zero_delay_and_zero_costs() -> None:
    cfg = BatchingConfig(max_batch=1, max_delay_s=0.0, batch_cost_s=0.0, message_cost_s=0.0)
    assert cfg.worker_time_s(0.25, 3) == 0.25


def test_worker_time_is_batch_cost_plus_per_message_cost_plus_service() -> None:
    cfg = BatchingConfig(batch_cost_s=0.5, message_cost_s=0.25)
    assert cfg.worker_time_s(2.0, 4) == 0.5 + 4 * 0.25 + 2.0
    assert cfg.worker_time_s(0.0, 1) == 0.75
    # One batch of 8 saves 7 fixed costs compared with 8 batches of one.
    one_batch = cfg.worker_time_s(8.0, 8)
    eight_batches = sum(cfg.worker_time_s(1.0, 1) for _ in range(8))
    assert eight_batches - one_batch == pytest.approx(7 * 0.5)


# -- AdaptiveBatching --------------------------------------------------------------------------


def test_adaptive_batching_defaults() -> None:
    a = AdaptiveBatching(target_p99_s=0.05)
    assert (a.interval_s, a.increase, a.decrease) == (1.0, 1, 0.5)
    assert (a.min_batch, a.max_batch, a.min_samples) == (1, 64, 20)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"target_p99_s": 0.0}, "target_p99_s"),
        ({"target_p99_s": -1.0}, "target_p99_s"),
        ({"interval_s": 0.0}, "interval_s"),
        ({"increase": 0}, "increase"),
        ({"decrease": 0.0}, "decrease"),
        ({"decrease": 1.0}, "decrease"),
        ({"decrease": 1.5}, "decrease"),
        ({"min_batch": 0}, "min_batch"),
        ({"min_batch": 9, "max_batch": 8}, "min_batch"),
        ({"min_samples": 0}, "min_samples"),
    ],
)
def test_adaptive_batching_rejects_bad_values(kwargs: dict[str, Any], fragment: str) -> None:
    params: dict[str, Any] = {"target_p99_s": 0.1, **kwargs}
    with pytest.raises(ValueError, match=fragment):
        AdaptiveBatching(**params)


def test_adaptive_batching_accepts_min_equal_max() -> None:
    a = AdaptiveBatching(target_p99_s=0.1, min_batch=4, max_batch=4)
    assert a.min_batch == a.max_batch == 4


# -- AimdController ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "expected"), [(0, 2), (1, 2), (2, 2), (7, 7), (16, 16), (99, 16)]
)
def test_controller_clamps_its_starting_limit(start: int, expected: int) -> None:
    assert controller(start, min_batch=2).limit == expected


def test_additive_increase_under_target() -> None:
    ctl = controller(4, increase=3)
    feed(ctl, [0.01, 0.02, 0.05])
    assert ctl.tick(1.0) == 7
    assert ctl.limit == 7
    assert ctl.history == [(1.0, 7, 0.05)]


def test_p99_equal_to_target_counts_as_under() -> None:
    ctl = controller(4)
    feed(ctl, [0.1, 0.1, 0.1])
    assert ctl.tick(1.0) == 5


def test_multiplicative_decrease_over_target_rounds_down() -> None:
    ctl = controller(7, decrease=0.5)
    feed(ctl, [0.01, 0.01, 0.2])
    assert ctl.tick(1.0) == 3  # floor(7 * 0.5)
    assert ctl.history == [(1.0, 3, 0.2)]
    feed(ctl, [0.3, 0.3, 0.3])
    assert ctl.tick(2.0) == 1


def test_limit_never_leaves_min_and_max_batch() -> None:
    ctl = controller(3, min_batch=2, max_batch=5, increase=2)
    for t in range(1, 6):
        feed(ctl, [0.01] * 3)
        ctl.tick(float(t))
    assert ctl.limit == 5
    assert [row[1] for row in ctl.history] == [5, 5, 5, 5, 5]
    for t in range(6, 10):
        feed(ctl, [1.0] * 3)
        ctl.tick(float(t))
    assert ctl.limit == 2
    assert [row[1] for row in ctl.history[5:]] == [2, 2, 2, 2]


def test_no_decision_with_fewer_than_min_samples() -> None:
    ctl = controller(6, min_samples=5)
    feed(ctl, [10.0] * 4)  # way over target, but too few to trust a p99
    assert ctl.tick(1.0) == 6
    assert ctl.history == [(1.0, 6, None)]


def test_window_is_reset_at_every_tick() -> None:
    ctl = controller(6, min_samples=3)
    feed(ctl, [0.01] * 2)
    ctl.tick(1.0)  # too few: discarded, not carried over
    feed(ctl, [0.01])
    ctl.tick(2.0)  # 1 sample, not 3
    assert ctl.limit == 6
    feed(ctl, [0.01] * 3)
    ctl.tick(3.0)
    assert ctl.limit == 7
    ctl.tick(4.0)  # nothing observed since the last tick
    assert ctl.history == [(1.0, 6, None), (2.0, 6, None), (3.0, 7, 0.01), (4.0, 7, None)]


def test_controller_uses_the_nearest_rank_p99_of_the_window() -> None:
    # 100 samples, one slow: the p99 is the 99th smallest, a fast one -> increase.
    ctl = controller(8, min_samples=100)
    feed(ctl, [0.01] * 99 + [5.0])
    assert ctl.tick(1.0) == 9
    assert ctl.history[-1][2] == 0.01
    # Two slow ones out of 100: the 99th smallest is slow -> decrease.
    feed(ctl, [0.01] * 98 + [5.0, 5.0])
    assert ctl.tick(2.0) == 4
    assert ctl.history[-1][2] == 5.0


@SETTINGS
@given(
    start=st.integers(-5, 100),
    rounds=st.lists(st.lists(st.floats(0.0, 1.0), max_size=8), max_size=15),
)
def test_controller_limit_follows_aimd_rules(start: int, rounds: list[list[float]]) -> None:
    cfg = adaptive(target_p99_s=0.5, min_samples=3, min_batch=2, max_batch=20, increase=2)
    ctl = AimdController(cfg, start)
    limit = min(max(start, 2), 20)
    assert ctl.limit == limit
    for t, window in enumerate(rounds):
        feed(ctl, window)
        ctl.tick(float(t))
        if len(window) >= 3:
            p99 = sorted(window)[math.ceil(0.99 * len(window)) - 1]
            limit = min(20, limit + 2) if p99 <= 0.5 else max(2, math.floor(limit * 0.5))
        assert ctl.limit == limit
        assert 2 <= ctl.limit <= 20
    assert len(ctl.history) == len(rounds)


# -- Batcher -----------------------------------------------------------------------------------


def test_flush_by_size_returns_the_batch_in_order() -> None:
    b: Batcher[str] = Batcher(BatchingConfig(max_batch=3))
    assert b.limit == 3
    assert b.add("L", "a", 0.0) == (None, 0)  # first item: arm a timer for generation 0
    assert b.add("L", "b", 0.001) == (None, None)
    assert b.pending("L") == 2
    assert b.add("L", "c", 0.0015) == (["a", "b", "c"], None)
    assert b.pending("L") == 0
    assert b.sizes == {3: 1}
    assert b.flushes == {"size": 1, "delay": 0}


def test_each_new_buffer_returns_a_new_generation() -> None:
    b: Batcher[int] = Batcher(BatchingConfig(max_batch=2))
    gens = []
    for i in range(0, 8, 2):
        batch, gen = b.add("L", i, float(i))
        assert batch is None
        gens.append(gen)
        assert b.add("L", i + 1, float(i)) == ([i, i + 1], None)
    assert gens == [0, 1, 2, 3]


def test_stale_timer_after_a_size_flush_does_nothing() -> None:
    b: Batcher[str] = Batcher(BatchingConfig(max_batch=2))
    _, gen0 = b.add("L", "a", 0.0)
    batch, _ = b.add("L", "b", 0.0005)
    assert batch == ["a", "b"]
    _, gen1 = b.add("L", "c", 0.001)  # a new buffer, a new timer
    assert gen1 is not None and gen1 != gen0
    assert b.expire("L", gen0, 0.002) is None  # the first timer outlived its batch
    assert b.pending("L") == 1
    assert b.expire("L", gen1, 0.003) == ["c"]
    assert b.flushes == {"size": 1, "delay": 1}
    assert b.sizes == {2: 1, 1: 1}


def test_expire_with_the_current_generation_flushes_with_reason_delay() -> None:
    b: Batcher[str] = Batcher(BatchingConfig(max_batch=10))
    _, gen = b.add("L", "x", 0.0)
    b.add("L", "y", 0.001)
    assert gen is not None
    assert b.expire("L", gen, 0.002) == ["x", "y"]
    assert b.flushes == {"size": 0, "delay": 1}
    assert b.sizes == {2: 1}
    # The same timer firing twice, or a timer for a link never used, does nothing.
    assert b.expire("L", gen, 0.003) is None
    assert b.expire("nobody", 0, 0.003) is None
    assert b.flushes == {"size": 0, "delay": 1}
    # After a delay flush the next item opens a buffer with a fresh generation.
    assert b.add("L", "z", 0.004) == (None, gen + 1)


def test_links_are_independent() -> None:
    b: Batcher[str] = Batcher(BatchingConfig(max_batch=2))
    assert b.add(0, "a0", 0.0) == (None, 0)
    assert b.add(1, "b0", 0.0) == (None, 0)
    assert b.pending(0) == 1 and b.pending(1) == 1
    assert b.add(1, "b1", 0.0) == (["b0", "b1"], None)
    assert b.pending(0) == 1  # link 0 untouched
    # link 1's flush advanced only link 1's generation: link 0's timer is still live
    assert b.expire(0, 0, 0.002) == ["a0"]
    assert b.expire(1, 0, 0.002) is None
    assert b.add(1, "b2", 0.003) == (None, 1)
    assert b.add(0, "a1", 0.003) == (None, 1)


def test_max_batch_one_flushes_every_item_immediately() -> None:
    b: Batcher[int] = Batcher(BatchingConfig(max_batch=1))
    for i in range(5):
        assert b.add("L", i, float(i)) == ([i], None)  # never arms a timer
    assert b.sizes == {1: 5}
    assert b.flushes == {"size": 5, "delay": 0}


def test_served_sizes_are_counted_separately_from_sent_sizes() -> None:
    b: Batcher[int] = Batcher(BatchingConfig(max_batch=4))
    b.served(4, 0.0)
    b.served(8, 0.0)
    b.served(4, 0.0)
    assert b.served_sizes == {4: 2, 8: 1}
    assert b.sizes == {}
    assert set(b.flushes) == set(FLUSH_REASONS)


def test_fixed_batcher_has_no_controller() -> None:
    b: Batcher[int] = Batcher(BatchingConfig(max_batch=5))
    assert b.controller is None
    assert b.limit == 5


def test_adaptive_limit_follows_the_controller() -> None:
    cfg = BatchingConfig(max_batch=2, adaptive=adaptive(min_samples=1, max_batch=8, increase=2))
    b: Batcher[int] = Batcher(cfg)
    assert b.controller is not None
    assert b.limit == 2  # max_batch is the starting limit
    assert b.add("L", 1, 0.0)[0] is None
    assert b.add("L", 2, 0.0)[0] == [1, 2]
    b.controller.observe(0.01)
    b.controller.tick(1.0)
    assert b.limit == 4
    for i in range(3):
        assert b.add("L", i, 1.0)[0] is None
    assert b.add("L", 3, 1.0)[0] == [0, 1, 2, 3]
    b.controller.observe(9.0)
    b.controller.tick(2.0)
    assert b.limit == 2
    assert b.add("L", 5, 2.0)[0] is None
    assert b.add("L", 6, 2.0)[0] == [5, 6]
    assert b.sizes == {2: 2, 4: 1}


def test_adaptive_starting_limit_is_clamped_to_the_adaptive_range() -> None:
    cfg = BatchingConfig(max_batch=100, adaptive=adaptive(min_batch=2, max_batch=10))
    assert Batcher(cfg).limit == 10
    cfg = BatchingConfig(max_batch=1, adaptive=adaptive(min_batch=2, max_batch=10))
    assert Batcher(cfg).limit == 2


def test_a_batch_never_exceeds_the_limit_after_the_limit_shrinks() -> None:
    cfg = BatchingConfig(max_batch=8, adaptive=adaptive(min_samples=1, decrease=0.25))
    b: Batcher[int] = Batcher(cfg)
    for i in range(5):
        assert b.add("L", i, 0.0)[0] is None
    assert b.controller is not None
    b.controller.observe(9.0)
    b.controller.tick(1.0)
    assert b.limit == 2
    batch, _ = b.add("L", 5, 1.0)
    assert batch is not None
    assert len(batch) <= b.limit


@st.composite
def batcher_ops(draw: st.DrawFn) -> tuple[int, list[tuple[str, int, int]]]:
    limit = draw(st.integers(1, 6))
    ops = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["add", "add", "add", "expire"]),
                st.integers(0, 2),  # link
                st.integers(0, 5),  # which generation an expire uses (index into those seen)
            ),
            max_size=80,
        )
    )
    return limit, ops


@SETTINGS
@given(case=batcher_ops())
def test_every_item_comes_out_exactly_once_in_order(
    case: tuple[int, list[tuple[str, int, int]]],
) -> None:
    limit, ops = case
    b: Batcher[tuple[int, int]] = Batcher(BatchingConfig(max_batch=limit))
    added: dict[int, list[tuple[int, int]]] = {}
    flushed: dict[int, list[tuple[int, int]]] = {}
    gens: dict[int, list[int]] = {}  # every generation handed out per link, oldest first
    batches: list[list[tuple[int, int]]] = []
    seq = 0
    now = 0.0

    def take(link: int, batch: list[tuple[int, int]] | None) -> None:
        if batch is not None:
            assert batch, "an empty batch was flushed"
            assert len(batch) <= limit
            batches.append(batch)
            flushed.setdefault(link, []).extend(batch)

    for op, link, pick in ops:
        now += 0.001
        if op == "add":
            item = (link, seq)
            seq += 1
            added.setdefault(link, []).append(item)
            batch, gen = b.add(link, item, now)
            assert batch is None or gen is None
            if gen is not None:
                gens.setdefault(link, []).append(gen)
            take(link, batch)
        else:
            seen = gens.get(link, [])
            gen = seen[pick % len(seen)] if seen else pick
            take(link, b.expire(link, gen, now))
        assert b.pending(link) == len(added.get(link, [])) - len(flushed.get(link, []))
    # A non-empty buffer always has a live timer: the last generation handed out flushes it.
    for link, seen in gens.items():
        if b.pending(link):
            take(link, b.expire(link, seen[-1], now))
        assert b.pending(link) == 0
    assert flushed == {k: v for k, v in added.items() if v}
    total = sum(len(v) for v in added.values())
    assert sum(size * count for size, count in b.sizes.items()) == total
    assert sum(b.sizes.values()) == len(batches) == sum(b.flushes.values())
    # a batch is full exactly when it went by size; a timer only ever sends a partial one
    assert b.flushes["size"] == sum(1 for batch in batches if len(batch) == limit)
    assert all(size <= limit for size in b.sizes)


# -- percentile --------------------------------------------------------------------------------


def brute_force_percentile(values: list[float], q: float) -> float:
    """The smallest value with at least q % of the values at or below it (exact arithmetic)."""
    n = len(values)
    need = Fraction(str(q)) / 100 * n  # the decimal q the caller wrote, not its binary float
    return min(v for v in values if sum(1 for x in values if x <= v) >= need)


def test_percentile_known_values() -> None:
    values = [15.0, 20.0, 35.0, 40.0, 50.0]  # the Wikipedia nearest-rank example
    assert percentile(values, 5) == 15.0
    assert percentile(values, 30) == 20.0
    assert percentile(values, 40) == 20.0
    assert percentile(values, 50) == 35.0
    assert percentile(values, 100) == 50.0
    assert percentile(values, 0) == 15.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input
    assert percentile([7.0], 99) == 7.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([float(i) for i in range(1, 101)], 50) == 50.0


def test_percentile_does_not_reorder_its_input() -> None:
    values = [3.0, 1.0, 2.0]
    percentile(values, 50)
    assert values == [3.0, 1.0, 2.0]


@SETTINGS
@given(
    values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=60),
    q=st.sampled_from([0, 1, 5, 10, 25, 50, 75, 90, 95, 99, 100]),
)
def test_percentile_matches_brute_force_nearest_rank(values: list[float], q: int) -> None:
    assert percentile(values, q) == brute_force_percentile(values, q)


@pytest.mark.parametrize(
    ("n", "q", "expected"),
    [(100, 7, 7.0), (25, 28, 7.0), (1000, 99.9, 999.0), (100, 55, 55.0)],
)
def test_percentile_rank_is_exact_for_percentages_not_representable_in_binary(
    n: int, q: float, expected: float
) -> None:
    values = [float(i) for i in range(1, n + 1)]
    assert brute_force_percentile(values, q) == expected
    assert percentile(values, q) == expected


# -- batch_size_summary ------------------------------------------------------------------------


def make_batcher(sizes: dict[int, int], served: dict[int, int], flushes: dict[str, int]) -> Batcher:
    b: Batcher[int] = Batcher(BatchingConfig())
    b.sizes = dict(sizes)
    b.served_sizes = dict(served)
    b.flushes = dict(flushes)
    return b


def test_summary_of_known_sizes() -> None:
    # 98 batches of 1 and 2 of 10: mean 118/100, p50 1, p99 10 (the 99th smallest), max 10.
    b = make_batcher({1: 98, 10: 2}, {2: 3, 4: 1}, {"size": 2, "delay": 98})
    out = batch_size_summary([b])
    assert out["sent"] == {
        "batches": 100,
        "messages": 118,
        "mean_size": 1.18,
        "p50_size": 1,
        "p99_size": 10,
        "max_size": 10,
        "sizes": {"1": 98, "10": 2},
    }
    served = out["served"]
    assert isinstance(served, dict)
    assert served["batches"] == 4
    assert served["messages"] == 10
    assert served["mean_size"] == 2.5
    assert served["p50_size"] == 2
    assert served["p99_size"] == 4
    assert served["max_size"] == 4
    assert out["flushes"] == {"size": 2, "delay": 98}


def test_summary_p99_with_a_single_large_batch_in_a_hundred() -> None:
    out = batch_size_summary([make_batcher({1: 99, 10: 1}, {}, {"size": 1, "delay": 99})])
    sent = out["sent"]
    assert isinstance(sent, dict)
    assert sent["p99_size"] == 1  # the 99th of 100 is still a 1
    assert sent["max_size"] == 10


def test_summary_merges_several_batchers() -> None:
    a = make_batcher({2: 3, 4: 1}, {4: 2}, {"size": 1, "delay": 3})
    b = make_batcher({4: 2, 8: 1}, {8: 1, 4: 1}, {"size": 3, "delay": 0})
    out = batch_size_summary([a, b])
    sent = out["sent"]
    assert isinstance(sent, dict)
    assert sent["sizes"] == {"2": 3, "4": 3, "8": 1}
    assert sent["batches"] == 7
    assert sent["messages"] == 2 * 3 + 4 * 3 + 8
    assert sent["mean_size"] == round(26 / 7, 4)
    assert sent["p50_size"] == 4  # rank 4 of 7
    assert sent["p99_size"] == 8
    assert sent["max_size"] == 8
    served = out["served"]
    assert isinstance(served, dict)
    assert served["sizes"] == {"4": 3, "8": 1}
    assert out["flushes"] == {"size": 4, "delay": 3}


def test_summary_of_nothing() -> None:
    out = batch_size_summary([Batcher(BatchingConfig()), Batcher(BatchingConfig())])
    for key in ("sent", "served"):
        assert out[key] == {
            "batches": 0,
            "messages": 0,
            "mean_size": None,
            "p50_size": None,
            "p99_size": None,
            "max_size": None,
            "sizes": {},
        }
    assert out["flushes"] == {"size": 0, "delay": 0}
    assert batch_size_summary([])["flushes"] == {"size": 0, "delay": 0}


def test_summary_from_real_batchers() -> None:
    a: Batcher[int] = Batcher(BatchingConfig(max_batch=3))
    b: Batcher[int] = Batcher(BatchingConfig(max_batch=2))
    for i in range(7):  # 3 + 3 by size, 1 left and expired
        a.add("x", i, 0.0)
    assert a.expire("x", 2, 0.01) == [6]
    for i in range(4):  # 2 + 2 by size
        b.add("y", i, 0.0)
    a.served(6, 0.0)
    b.served(2, 0.0)
    out = batch_size_summary([a, b])
    sent = out["sent"]
    assert isinstance(sent, dict)
    assert sent["sizes"] == {"1": 1, "2": 2, "3": 2}
    assert sent["messages"] == 11
    assert out["flushes"] == {"size": 4, "delay": 1}
    served = out["served"]
    assert isinstance(served, dict)
    assert served["sizes"] == {"2": 1, "6": 1}


@SETTINGS
@given(
    parts=st.lists(
        st.dictionaries(st.integers(1, 50), st.integers(1, 30), max_size=6), min_size=1, max_size=4
    )
)
def test_summary_quantiles_match_the_expanded_list(parts: list[dict[int, int]]) -> None:
    batchers = [make_batcher(p, {}, {"size": 0, "delay": 0}) for p in parts]
    sent = batch_size_summary(batchers)["sent"]
    assert isinstance(sent, dict)
    expanded = [float(s) for p in parts for s, c in p.items() for _ in range(c)]
    if not expanded:
        assert sent["batches"] == 0 and sent["p50_size"] is None
        return
    assert sent["batches"] == len(expanded)
    assert sent["messages"] == sum(expanded)
    assert sent["p50_size"] == brute_force_percentile(expanded, 50)
    assert sent["p99_size"] == brute_force_percentile(expanded, 99)
    assert sent["max_size"] == max(expanded)
    assert sent["mean_size"] == round(sum(expanded) / len(expanded), 4)


# -- what the controller learns from, and merging queued batches ----------------------------------
def test_observe_learns_from_timeouts_and_failures_not_rejections() -> None:
    from labkit.core.outcomes import Detail

    b: Batcher[int] = Batcher(BatchingConfig(max_batch=4, adaptive=adaptive(min_samples=1)))
    assert b.controller is not None
    b.observe(0.5, Detail.DEADLINE)
    b.observe(0.4, Detail.ATTEMPT_TIMEOUT)
    b.observe(0.3, Detail.WORKER_LOST)
    b.observe(0.001, Detail.OK)
    b.observe(0.0, Detail.RATE_LIMITED)
    b.observe(0.0, Detail.QUEUE_FULL)
    assert sorted(b.controller._window) == [0.001, 0.3, 0.4, 0.5]


def test_sizes_outside_the_measured_window_are_not_counted() -> None:
    b: Batcher[int] = Batcher(BatchingConfig(max_batch=2), measure_from=1.0, measure_until=2.0)
    b.add("x", 1, 0.5)
    b.add("x", 2, 0.5)  # full before the window: not counted
    b.add("x", 3, 1.5)
    b.add("x", 4, 1.5)
    b.served(2, 0.5)
    b.served(2, 1.5)
    assert b.sizes == {2: 1} and b.served_sizes == {2: 1}
    assert b.flushes["size"] == 1


def test_coalesce_takes_queued_batches_while_they_fit() -> None:
    from collections import deque

    from labkit.core.batching import coalesce

    queued: deque[list[int]] = deque([[2, 3], [4], [5, 6, 7], [8]])
    assert coalesce([1], queued, 4, list) == [1, 2, 3, 4]
    assert list(queued) == [[5, 6, 7], [8]]
    # the next one would overflow: it stays
    assert coalesce([9, 10], queued, 4, list) == [9, 10]
    assert list(queued) == [[5, 6, 7], [8]]
    # ``take`` filters what is still worth serving (expired messages drop out)
    assert coalesce([], queued, 4, lambda b: [m for m in b if m != 6]) == [5, 7, 8]
    assert not queued
