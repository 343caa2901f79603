"""Fault plans and per-worker fault state (``labkit.core.faults``)."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.core.faults import (
    FaultInstance,
    FaultSpec,
    WorkerFaultState,
    WorkerSelector,
    plan_faults,
    worker_name,
)


def fleet(n: int) -> list[str]:
    return [worker_name(i) for i in range(n)]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def inst(kind: str, fault: int = 0, **params: Any) -> FaultInstance:
    """A fault instance on one worker, as ``plan_faults`` would emit it."""
    return FaultInstance(fault, kind, "schedule", 0.0, None, ("w-0",), params)


# --- worker names and selectors -------------------------------------------------------------


def test_worker_names_are_w_dash_index() -> None:
    assert [worker_name(i) for i in (0, 1, 12)] == ["w-0", "w-1", "w-12"]


@pytest.mark.parametrize("n", [1, 3, 7, 10])
def test_count_picks_exactly_n_distinct_workers_in_fleet_order(n: int) -> None:
    workers = fleet(10)
    chosen = WorkerSelector(count=n).resolve(workers, rng(1))
    assert len(chosen) == n
    assert len(set(chosen)) == n
    assert set(chosen) <= set(workers)
    assert list(chosen) == sorted(chosen, key=workers.index)


def test_count_is_deterministic_for_a_seed_and_varies_with_it() -> None:
    workers = fleet(50)
    sel = WorkerSelector(count=5)
    assert sel.resolve(workers, rng(42)) == sel.resolve(workers, rng(42))
    picks = {sel.resolve(workers, rng(seed)) for seed in range(10)}
    assert len(picks) > 1  # C(50, 5) choices: ten seeds cannot all pick the same five


def test_count_larger_than_fleet_is_clamped() -> None:
    assert WorkerSelector(count=9).resolve(fleet(4), rng()) == tuple(fleet(4))


@pytest.mark.parametrize(
    ("fraction", "size", "expected"),
    [(0.1, 25, 3), (0.25, 20, 5), (0.2, 20, 4), (0.01, 10, 1), (1.0, 7, 7), (0.5, 3, 2)],
)
def test_fraction_rounds_up(fraction: float, size: int, expected: int) -> None:
    """A fraction selects ceil(fraction · fleet): "10%" of 25 workers hits 3."""
    chosen = WorkerSelector(fraction=fraction).resolve(fleet(size), rng(3))
    assert len(chosen) == expected
    assert len(set(chosen)) == expected


@pytest.mark.parametrize(("percent", "size"), [(7, 100), (14, 50), (28, 25), (55, 100)])
def test_fraction_with_exact_product_is_not_rounded_up(percent: int, size: int) -> None:
    """An exact percentage of the fleet must select exactly that many workers."""
    chosen = WorkerSelector(fraction=percent / 100).resolve(fleet(size), rng())
    assert len(chosen) == percent * size // 100


def test_names_are_returned_as_given_without_drawing() -> None:
    generator = rng(5)
    before = generator.bit_generator.state
    names = ("w-7", "w-2", "w-3")
    assert WorkerSelector(names=names).resolve(fleet(10), generator) == names
    assert generator.bit_generator.state == before


def test_no_selector_means_every_worker() -> None:
    assert WorkerSelector().resolve(fleet(6), rng()) == tuple(fleet(6))


@pytest.mark.parametrize(
    ("selector", "text"),
    [
        (WorkerSelector(), "all"),
        (WorkerSelector(count=3), "3"),
        (WorkerSelector(fraction=0.25), "25%"),
        (WorkerSelector(names=("w-1", "w-4")), "w-1,w-4"),
    ],
)
def test_selector_describe(selector: WorkerSelector, text: str) -> None:
    assert selector.describe() == text


# --- scheduled faults -----------------------------------------------------------------------


def test_plan_orders_by_start_ties_keep_scenario_order_and_numbers_in_that_order() -> None:
    specs = [
        FaultSpec("slow", at_s=20, workers=WorkerSelector(names=("w-0",)), factor=2),
        FaultSpec("crash", at_s=5, workers=WorkerSelector(names=("w-1",))),
        FaultSpec("flaky", at_s=5, workers=WorkerSelector(names=("w-2",)), error_rate=0.1),
        FaultSpec("partition", at_s=0, workers=WorkerSelector(names=("w-3",))),
        FaultSpec("latency_spike", at_s=5, extra_ms=10),
    ]
    plan = plan_faults(specs, fleet(4), 60, rng())
    assert [(f.kind, f.start_s) for f in plan] == [
        ("partition", 0),
        ("crash", 5),
        ("flaky", 5),
        ("latency_spike", 5),
        ("slow", 20),
    ]
    assert [f.fault for f in plan] == [0, 1, 2, 3, 4]
    assert {f.origin for f in plan} == {"schedule"}


def test_empty_plan() -> None:
    assert plan_faults([], fleet(3), 10, rng()) == []


def test_crash_with_restart_ends_and_records_restart() -> None:
    spec = FaultSpec("crash", at_s=40, workers=WorkerSelector(count=2), restart_after_s=20)
    (f,) = plan_faults([spec], fleet(10), 100, rng(2))
    assert (f.kind, f.start_s, f.end_s) == ("crash", 40, 60)
    assert len(f.workers) == 2
    assert f.params == {"connection": "reset", "restart_after_s": 20}
    assert f.label() == "crash ×2"


def test_crash_without_restart_never_ends() -> None:
    spec = FaultSpec(
        "crash", at_s=30, workers=WorkerSelector(names=("w-1", "w-5")), connection="hang"
    )
    (f,) = plan_faults([spec], fleet(10), 60, rng())
    assert f.end_s is None
    assert f.workers == ("w-1", "w-5")
    assert f.params == {"connection": "hang"}


@pytest.mark.parametrize(
    ("spec", "params"),
    [
        (FaultSpec("slow", at_s=30, for_s=30, factor=8), {"factor": 8}),
        (FaultSpec("flaky", at_s=30, for_s=30, error_rate=0.3), {"error_rate": 0.3}),
        (FaultSpec("partition", at_s=30, for_s=30), {}),
        (FaultSpec("latency_spike", at_s=30, for_s=30, extra_ms=50), {"extra_ms": 50}),
    ],
    ids=["slow", "flaky", "partition", "latency_spike"],
)
def test_timed_faults_carry_params_and_end(spec: FaultSpec, params: dict[str, float]) -> None:
    names = WorkerSelector(names=("w-3", "w-7"))
    (f,) = plan_faults([replace(spec, workers=names)], fleet(10), 90, rng())
    assert (f.kind, f.start_s, f.end_s) == (spec.kind, 30, 60)
    assert f.params == params
    assert f.workers == ("w-3", "w-7")


def test_timed_fault_without_for_s_lasts_to_the_end() -> None:
    spec = FaultSpec("slow", at_s=10, workers=WorkerSelector(count=1), factor=2)
    (f,) = plan_faults([spec], fleet(3), 60, rng())
    assert f.end_s is None


def test_fleet_wide_latency_spike_has_no_workers_but_a_listed_one_does() -> None:
    spike = FaultSpec("latency_spike", at_s=1, for_s=2, extra_ms=5)
    listed = FaultSpec(
        "latency_spike", at_s=1, for_s=2, extra_ms=5, workers=WorkerSelector(count=1)
    )
    wide, one = plan_faults([spike, listed], fleet(4), 10, rng())
    assert wide.workers == ()
    assert wide.label() == "latency_spike all"
    assert len(one.workers) == 1


def test_fleet_wide_default_only_for_latency_spike() -> None:
    """Other kinds given no selector hit every worker by name."""
    (f,) = plan_faults([FaultSpec("partition", at_s=1, for_s=2)], fleet(3), 10, rng())
    assert f.workers == ("w-0", "w-1", "w-2")


def test_scheduled_plan_is_deterministic_per_seed() -> None:
    specs = [
        FaultSpec("crash", at_s=1, workers=WorkerSelector(count=3)),
        FaultSpec("slow", at_s=2, workers=WorkerSelector(fraction=0.2), factor=3),
    ]
    assert plan_faults(specs, fleet(30), 10, rng(9)) == plan_faults(specs, fleet(30), 10, rng(9))


# --- random crashes -------------------------------------------------------------------------


def _by_worker(plan: list[FaultInstance]) -> dict[str, list[FaultInstance]]:
    out: dict[str, list[FaultInstance]] = defaultdict(list)
    for f in plan:
        (name,) = f.workers
        out[name].append(f)
    return out


def _random_plan(seed: int, *, mtbf_s: float = 10.0, mttr_s: float = 2.0) -> list[FaultInstance]:
    spec = FaultSpec("random_crashes", mtbf_s=mtbf_s, mttr_s=mttr_s, connection="hang")
    return plan_faults([spec], fleet(8), 200.0, rng(seed))


def test_random_crashes_are_deterministic_per_seed() -> None:
    assert _random_plan(1) == _random_plan(1)
    assert _random_plan(1) != _random_plan(2)


def test_random_crashes_are_single_worker_crash_instances_within_the_run() -> None:
    plan = _random_plan(4)
    assert len(plan) > 50  # ~8 workers × 200 s / 12 s per cycle
    assert [f.fault for f in plan] == list(range(len(plan)))
    assert [f.start_s for f in plan] == sorted(f.start_s for f in plan)
    for f in plan:
        assert (f.kind, f.origin, len(f.workers)) == ("crash", "random", 1)
        assert 0 < f.start_s < 200.0
        assert f.params["connection"] == "hang"
        if f.end_s is None:
            assert "restart_after_s" not in f.params
        else:
            assert f.start_s <= f.end_s < 200.0
            assert f.params["restart_after_s"] == pytest.approx(f.end_s - f.start_s, abs=1e-6)


def test_random_crashes_alternate_and_do_not_overlap_per_worker() -> None:
    """Per worker: down, up, down, ... — each crash ends before the next begins; only the last
    may outlast the run."""
    per_worker = _by_worker(_random_plan(5))
    assert len(per_worker) == 8
    for crashes in per_worker.values():
        for prev, nxt in itertools.pairwise(crashes):
            assert prev.end_s is not None
            assert prev.end_s <= nxt.start_s
        assert all(f.end_s is not None for f in crashes[:-1])


def test_random_crashes_with_a_selector_hit_only_the_selected_workers() -> None:
    spec = FaultSpec("random_crashes", workers=WorkerSelector(count=3), mtbf_s=5, mttr_s=1)
    plan = plan_faults([spec], fleet(20), 500.0, rng(6))
    assert len({f.workers for f in plan}) == 3


def test_a_random_crash_outlasting_the_run_has_no_end() -> None:
    spec = FaultSpec("random_crashes", mtbf_s=1.0, mttr_s=1e9)
    plan = plan_faults([spec], fleet(5), 1000.0, rng(7))
    assert len(plan) == 5  # each worker crashes once and is never repaired within the run
    assert all(f.end_s is None for f in plan)


def test_random_and_scheduled_faults_interleave_by_start() -> None:
    specs = [
        FaultSpec("random_crashes", mtbf_s=10, mttr_s=1),
        FaultSpec("slow", at_s=50, workers=WorkerSelector(count=1), factor=2),
    ]
    plan = plan_faults(specs, fleet(5), 100.0, rng(8))
    starts = [f.start_s for f in plan]
    assert starts == sorted(starts)
    slow = [f for f in plan if f.kind == "slow"]
    assert len(slow) == 1
    assert 0 < plan.index(slow[0]) < len(plan) - 1
    assert [f.fault for f in plan] == list(range(len(plan)))


def test_random_crash_up_and_down_times_have_the_configured_means() -> None:
    """Up times are exponential with mean ``mtbf_s`` and down times with mean ``mttr_s``.

    40 workers over 3000 s with a 12 s cycle give ~10,000 of each. The sample mean of n
    exponentials has relative standard error 1/√n (~1 %), so 5/√n is a five-sigma band: tight
    enough to catch a swapped or mis-scaled parameter, and the seed makes it deterministic.
    Only completed periods are pooled: the one period per worker cut off by the end of the run
    is dropped, which biases the mean by O(workers / n), well inside the band.
    """
    mtbf, mttr, horizon = 10.0, 2.0, 3000.0
    spec = FaultSpec("random_crashes", mtbf_s=mtbf, mttr_s=mttr)
    plan = plan_faults([spec], fleet(40), horizon, rng(2024))
    ups: list[float] = []
    downs: list[float] = []
    for crashes in _by_worker(plan).values():
        back_up = 0.0
        for f in crashes:
            ups.append(f.start_s - back_up)
            if f.end_s is None:
                break
            downs.append(f.end_s - f.start_s)
            back_up = f.end_s
    for samples, mean in ((ups, mtbf), (downs, mttr)):
        n = len(samples)
        assert n > 8000
        assert float(np.mean(samples)) == pytest.approx(mean, rel=5 / math.sqrt(n))


# --- composed fault state -------------------------------------------------------------------


def test_pristine_state() -> None:
    s = WorkerFaultState()
    assert (s.alive, s.reachable, s.slowdown, s.error_rate, s.extra_s) == (
        True,
        True,
        1.0,
        0.0,
        0.0,
    )
    assert s.actual == "up"
    assert s.hang == 0


def test_slow_factors_multiply_and_removing_one_leaves_the_other() -> None:
    s = WorkerFaultState()
    twice, four = inst("slow", 0, factor=2.0), inst("slow", 1, factor=4.0)
    s.apply(twice, True)
    s.apply(four, True)
    assert s.slowdown == 8.0
    s.apply(twice, False)
    assert s.slowdown == 4.0
    assert s.actual == "slow"
    s.apply(four, False)
    assert s.slowdown == 1.0
    assert s.actual == "up"


def test_equal_slow_factors_compose_and_unwind() -> None:
    s = WorkerFaultState()
    a, b = inst("slow", 0, factor=3.0), inst("slow", 1, factor=3.0)
    s.apply(a, True)
    s.apply(b, True)
    assert s.slowdown == 9.0
    s.apply(a, False)
    assert s.slowdown == 3.0


def test_flaky_rates_combine_as_independent_failures() -> None:
    s = WorkerFaultState()
    s.apply(inst("flaky", 0, error_rate=0.5), True)
    s.apply(inst("flaky", 1, error_rate=0.5), True)
    assert s.error_rate == pytest.approx(0.75)
    s.apply(inst("flaky", 2, error_rate=0.2), True)
    assert s.error_rate == pytest.approx(1 - 0.5 * 0.5 * 0.8)
    assert s.actual == "flaky"


def test_latency_spikes_add_in_seconds_and_leave_the_worker_up() -> None:
    s = WorkerFaultState()
    s.apply(inst("latency_spike", 0, extra_ms=50.0), True)
    s.apply(inst("latency_spike", 1, extra_ms=25.0), True)
    assert s.extra_s == pytest.approx(0.075)
    assert s.actual == "up"
    assert s.alive and s.reachable


def test_overlapping_crashes_keep_the_worker_down_until_both_end() -> None:
    s = WorkerFaultState()
    first, second = inst("crash", 0, connection="reset"), inst("crash", 1, connection="reset")
    s.apply(first, True)
    s.apply(second, True)
    s.apply(first, False)
    assert not s.alive
    assert not s.reachable
    assert s.actual == "crashed"
    s.apply(second, False)
    assert s.alive
    assert s.actual == "up"


def test_partition_makes_the_worker_unreachable_but_alive() -> None:
    s = WorkerFaultState()
    a, b = inst("partition", 0), inst("partition", 1)
    s.apply(a, True)
    s.apply(b, True)
    assert s.alive
    assert not s.reachable
    assert s.actual == "partitioned"
    s.apply(b, False)
    assert not s.reachable
    s.apply(a, False)
    assert s.reachable


def test_hang_counts_only_hang_crashes() -> None:
    s = WorkerFaultState()
    hang, reset = inst("crash", 0, connection="hang"), inst("crash", 1, connection="reset")
    s.apply(hang, True)
    s.apply(reset, True)
    assert (s.crashed, s.hang) == (2, 1)
    s.apply(hang, False)
    assert (s.crashed, s.hang) == (1, 0)
    s.apply(reset, False)
    assert (s.crashed, s.hang) == (0, 0)


def test_actual_reports_the_worst_fault_in_force() -> None:
    """Priority: crashed > partitioned > slow > flaky > up; peeling the worst reveals the next."""
    s = WorkerFaultState()
    faults = [
        inst("flaky", 0, error_rate=0.1),
        inst("slow", 1, factor=2.0),
        inst("partition", 2),
        inst("crash", 3, connection="reset"),
    ]
    for f in faults:
        s.apply(f, True)
    seen = [s.actual]
    for f in reversed(faults):
        s.apply(f, False)
        seen.append(s.actual)
    assert seen == ["crashed", "partitioned", "slow", "flaky", "up"]


_instances = st.one_of(
    st.builds(lambda c: inst("crash", connection=c), st.sampled_from(["reset", "hang"])),
    st.just(inst("partition")),
    st.builds(
        lambda x: inst("slow", factor=x), st.floats(1.01, 50, allow_nan=False, allow_infinity=False)
    ),
    st.builds(lambda p: inst("flaky", error_rate=p), st.floats(0.01, 1.0)),
    st.builds(lambda ms: inst("latency_spike", extra_ms=ms), st.floats(0.1, 500.0)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_instances, max_size=12), st.data())
def test_any_interleaving_of_starts_and_ends_matches_the_faults_in_force(
    faults: list[FaultInstance], data: st.DataObject
) -> None:
    """Apply each fault's start and end in any order that keeps start before end: after every
    step the state equals the composition of the faults in force, and at the end it is pristine.
    """
    # a shuffled list holding each index twice; its first occurrence is the start
    events = data.draw(st.permutations([i for i in range(len(faults)) for _ in (0, 1)]))
    state = WorkerFaultState()
    active: set[int] = set()
    for i in events:
        starting = i not in active
        state.apply(faults[i], starting)
        (active.add if starting else active.remove)(i)
        now = [faults[j] for j in active]
        assert state.crashed == sum(f.kind == "crash" for f in now)
        assert state.hang == sum(f.params.get("connection") == "hang" for f in now)
        assert state.partitioned == sum(f.kind == "partition" for f in now)
        factors = [f.params["factor"] for f in now if f.kind == "slow"]
        assert state.slowdown == pytest.approx(math.prod(factors))
        rates = [f.params["error_rate"] for f in now if f.kind == "flaky"]
        assert state.error_rate == pytest.approx(1 - math.prod(1 - p for p in rates), abs=1e-12)
        extra = [f.params["extra_ms"] for f in now if f.kind == "latency_spike"]
        assert state.extra_s == pytest.approx(sum(extra) / 1000)
    assert state == WorkerFaultState()
