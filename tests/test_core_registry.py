"""Tests for ``labkit.core.registry``: membership, failure detection, pools and views."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.core.registry import (
    EventualView,
    Health,
    LoadReport,
    Pool,
    Registry,
    StrongView,
    TimeoutDetector,
)

SETTINGS = settings(derandomize=True, deadline=None, max_examples=80)

SUSPECT_S = 1.0
DOWN_S = 3.0


def make_registry() -> tuple[Registry, list[tuple[str, Health, Health, float]]]:
    registry = Registry(TimeoutDetector(SUSPECT_S, DOWN_S))
    calls: list[tuple[str, Health, Health, float]] = []
    registry.add_listener(lambda w, old, new, now: calls.append((w, old, new, now)))
    return registry, calls


# -- TimeoutDetector ----------------------------------------------------------------------------


@pytest.mark.parametrize(("suspect", "down"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_timeout_detector_rejects_bad_thresholds(suspect: float, down: float) -> None:
    with pytest.raises(ValueError):
        TimeoutDetector(suspect, down)


def test_timeout_detector_allows_equal_thresholds() -> None:
    d = TimeoutDetector(2.0, 2.0)
    d.heartbeat("w", 0.0)
    assert d.health("w", 2.0) is Health.HEALTHY
    assert d.health("w", 2.001) is Health.DOWN


def test_timeout_detector_thresholds_are_strict() -> None:
    d = TimeoutDetector(SUSPECT_S, DOWN_S)
    d.heartbeat("w", 10.0)
    assert d.health("w", 10.0) is Health.HEALTHY
    assert d.health("w", 10.0 + SUSPECT_S) is Health.HEALTHY
    assert d.health("w", 10.0 + SUSPECT_S + 1e-6) is Health.SUSPECT
    assert d.health("w", 10.0 + DOWN_S) is Health.SUSPECT
    assert d.health("w", 10.0 + DOWN_S + 1e-6) is Health.DOWN
    d.heartbeat("w", 20.0)
    assert d.health("w", 20.5) is Health.HEALTHY
    d.forget("w")
    # A forgotten worker has no silence to measure.
    assert d.health("w", 1000.0) is Health.HEALTHY


# -- membership ---------------------------------------------------------------------------------


def test_register_creates_a_healthy_record() -> None:
    registry, calls = make_registry()
    record = registry.register("w1", ["a", "b", "a"], 5.0, capacity=4, capabilities={"gpu": 1})
    assert record.worker_id == "w1"
    assert record.agent_types == ("a", "b")  # de-duplicated, order kept
    assert record.health is Health.HEALTHY
    assert record.registered_at == record.last_heartbeat == 5.0
    assert record.report.capacity == 4 and record.report.at == 5.0
    assert record.capabilities == {"gpu": 1}
    assert registry.workers["w1"] is record
    assert registry.known_types == {"a", "b"}
    assert registry.health_of("w1") is Health.HEALTHY
    assert calls == []  # a first registration is not a health change


def test_register_without_agent_types_fails() -> None:
    registry, _ = make_registry()
    with pytest.raises(ValueError, match="w1"):
        registry.register("w1", [], 0.0)
    assert "w1" not in registry.workers


def test_register_copies_capabilities() -> None:
    registry, _ = make_registry()
    caps: dict[str, object] = {"x": 1}
    record = registry.register("w1", ["a"], 0.0, capabilities=caps)
    caps["x"] = 2
    assert record.capabilities == {"x": 1}


def test_deregister_removes_and_notifies_down() -> None:
    registry, calls = make_registry()
    registry.register("w1", ["a"], 0.0)
    registry.register("w2", ["a"], 0.0)
    registry.deregister("w1", 1.0)
    assert "w1" not in registry.workers
    assert registry.health_of("w1") is Health.DOWN
    assert calls == [("w1", Health.HEALTHY, Health.DOWN, 1.0)]
    pool = registry.pool("a")
    assert pool is not None and pool.members == ("w2",) and pool.healthy == ("w2",)


def test_deregister_unknown_is_a_noop() -> None:
    registry, calls = make_registry()
    registry.register("w1", ["a"], 0.0)
    version = registry.version
    registry.deregister("nope", 1.0)
    assert registry.version == version and calls == []


def test_deregister_a_down_worker_does_not_notify_again() -> None:
    registry, calls = make_registry()
    registry.register("w1", ["a"], 0.0)
    registry.evaluate(10.0)
    assert calls == [("w1", Health.HEALTHY, Health.DOWN, 10.0)]
    registry.deregister("w1", 11.0)
    assert len(calls) == 1


def test_deregister_a_suspect_worker_notifies_suspect_to_down() -> None:
    registry, calls = make_registry()
    registry.register("w1", ["a"], 0.0)
    registry.evaluate(2.0)
    registry.deregister("w1", 2.5)
    assert calls == [
        ("w1", Health.HEALTHY, Health.SUSPECT, 2.0),
        ("w1", Health.SUSPECT, Health.DOWN, 2.5),
    ]


def test_heartbeat_updates_record_and_report() -> None:
    registry, _ = make_registry()
    registry.register("w1", ["a"], 0.0, capacity=2)
    assert registry.heartbeat("w1", 0.5) is True
    record = registry.workers["w1"]
    assert record.last_heartbeat == 0.5
    assert record.report.capacity == 2  # no report: the old one stays
    report = LoadReport(cpu=0.7, active=3, capacity=2, rt_ewma_ms=12.0, at=0.9)
    assert registry.heartbeat("w1", 0.9, report) is True
    assert registry.report("w1") is report
    assert registry.heartbeat("ghost", 1.0) is False
    assert registry.report("ghost") == LoadReport()


# -- health transitions -------------------------------------------------------------------------


def test_evaluate_walks_healthy_suspect_down_and_back() -> None:
    registry, calls = make_registry()
    registry.register("w1", ["a"], 0.0)
    registry.register("w2", ["a"], 0.0)

    assert registry.evaluate(SUSPECT_S) == []
    # w2 keeps beating; w1 falls silent.
    registry.heartbeat("w2", 0.9)
    changes = registry.evaluate(SUSPECT_S + 0.01)
    assert changes == [("w1", Health.HEALTHY, Health.SUSPECT)]
    assert registry.health_of("w1") is Health.SUSPECT
    registry.heartbeat("w2", 2.5)
    assert registry.evaluate(DOWN_S) == []  # still suspect at the threshold itself

    registry.heartbeat("w2", 2.9)
    changes = registry.evaluate(DOWN_S + 0.01)
    assert changes == [("w1", Health.SUSPECT, Health.DOWN)]
    assert registry.health_of("w1") is Health.DOWN
    assert registry.evaluate(DOWN_S + 0.5) == []  # nothing new: no repeated calls

    registry.heartbeat("w1", 4.0)
    registry.heartbeat("w2", 4.0)
    # A heartbeat alone does not change the verdict; evaluate does.
    assert registry.health_of("w1") is Health.DOWN
    changes = registry.evaluate(4.0)
    assert changes == [("w1", Health.DOWN, Health.HEALTHY)]
    assert registry.health_of("w1") is Health.HEALTHY

    assert calls == [
        ("w1", Health.HEALTHY, Health.SUSPECT, SUSPECT_S + 0.01),
        ("w1", Health.SUSPECT, Health.DOWN, DOWN_S + 0.01),
        ("w1", Health.DOWN, Health.HEALTHY, 4.0),
    ]


def test_a_late_evaluate_jumps_straight_to_down_with_one_notification() -> None:
    registry, calls = make_registry()
    registry.register("w1", ["a"], 0.0)
    assert registry.evaluate(100.0) == [("w1", Health.HEALTHY, Health.DOWN)]
    assert calls == [("w1", Health.HEALTHY, Health.DOWN, 100.0)]


def test_every_listener_is_called_once_per_change() -> None:
    registry = Registry(TimeoutDetector(SUSPECT_S, DOWN_S))
    first: list[tuple[object, ...]] = []
    second: list[tuple[object, ...]] = []
    registry.add_listener(lambda *args: first.append(args))
    registry.add_listener(lambda *args: second.append(args))
    registry.register("w1", ["a"], 0.0)
    registry.register("w2", ["a"], 0.0)
    registry.evaluate(5.0)
    expected = [
        ("w1", Health.HEALTHY, Health.DOWN, 5.0),
        ("w2", Health.HEALTHY, Health.DOWN, 5.0),
    ]
    assert first == expected and second == expected


def test_reregistering_a_down_worker_makes_it_healthy_and_notifies() -> None:
    registry, calls = make_registry()
    registry.register("w1", ["a"], 0.0)
    registry.evaluate(10.0)
    pool = registry.pool("a")
    assert pool is not None and pool.healthy == ()
    registry.register("w1", ["a"], 11.0)
    assert registry.health_of("w1") is Health.HEALTHY
    assert calls[-1] == ("w1", Health.DOWN, Health.HEALTHY, 11.0)
    pool = registry.pool("a")
    assert pool is not None and pool.healthy == ("w1",)
    # The detector was told too: it does not fall back to down on the next evaluate.
    assert registry.evaluate(11.5) == []


def test_reregistering_after_deregister_notifies_healthy() -> None:
    registry, calls = make_registry()
    registry.register("w1", ["a"], 0.0)
    registry.deregister("w1", 1.0)
    assert registry.health_of("w1") is Health.DOWN
    registry.register("w1", ["a"], 2.0)
    assert registry.health_of("w1") is Health.HEALTHY
    assert calls == [
        ("w1", Health.HEALTHY, Health.DOWN, 1.0),
        ("w1", Health.DOWN, Health.HEALTHY, 2.0),
    ]


def test_reregistering_a_healthy_worker_does_not_notify() -> None:
    registry, calls = make_registry()
    registry.register("w1", ["a"], 0.0)
    registry.register("w1", ["a", "b"], 0.5)
    assert calls == []
    assert registry.workers["w1"].agent_types == ("a", "b")


@SETTINGS
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["register", "heartbeat", "evaluate"]),
            st.sampled_from(["w1", "w2", "w3"]),
            st.floats(0.0, 2.5),
        ),
        max_size=40,
    )
)
def test_notifications_form_a_consistent_chain(ops: list[tuple[str, str, float]]) -> None:
    """Per worker, each notification starts where the previous one ended and changes something,
    and the last one agrees with the registry's verdict. (Deregistration is left out: see
    ``test_reregistering_after_deregister_notifies_healthy``.)"""
    registry, calls = make_registry()
    now = 0.0
    for op, worker, dt in ops:
        now += dt
        if op == "register":
            registry.register(worker, ["a"], now)
        elif op == "heartbeat":
            registry.heartbeat(worker, now)
        else:
            registry.evaluate(now)
    last: dict[str, Health] = {}
    times = [c[3] for c in calls]
    assert times == sorted(times)
    for worker, old, new, _ in calls:
        assert old is not new
        assert last.get(worker, Health.HEALTHY) is old
        last[worker] = new
    for worker in ("w1", "w2", "w3"):
        expected = registry.health_of(worker)
        if worker in last or expected is not Health.DOWN:
            assert last.get(worker, Health.HEALTHY) is expected


# -- pools and versions -------------------------------------------------------------------------


def test_pool_is_none_for_an_unknown_type() -> None:
    registry, _ = make_registry()
    assert registry.pool("a") is None
    registry.register("w1", ["a"], 0.0)
    assert registry.pool("b") is None


def test_pool_lists_members_in_registration_order() -> None:
    registry, _ = make_registry()
    for w in ("w3", "w1", "w2"):
        registry.register(w, ["a"], 0.0)
    registry.register("w4", ["b"], 0.0)
    pool = registry.pool("a")
    assert pool is not None
    assert pool.agent_type == "a"
    assert pool.members == ("w3", "w1", "w2")
    assert pool.healthy == ("w3", "w1", "w2")
    assert pool.healthy_set == frozenset({"w1", "w2", "w3"})
    assert pool.version == registry.version


def test_pool_of_a_type_whose_workers_are_all_down_is_empty_but_present() -> None:
    registry, _ = make_registry()
    registry.register("w1", ["a"], 0.0)
    registry.register("w2", ["a"], 0.0)
    registry.evaluate(10.0)
    pool = registry.pool("a")
    assert isinstance(pool, Pool)
    assert pool.members == ("w1", "w2")
    assert pool.healthy == () and pool.healthy_set == frozenset()


def test_pool_of_a_known_type_with_no_members_left_is_empty() -> None:
    registry, _ = make_registry()
    registry.register("w1", ["a"], 0.0)
    registry.deregister("w1", 1.0)
    pool = registry.pool("a")
    assert isinstance(pool, Pool)
    assert pool.members == () and pool.healthy == () and pool.healthy_set == frozenset()


def test_suspect_workers_are_members_but_not_healthy() -> None:
    registry, _ = make_registry()
    registry.register("w1", ["a"], 0.0)
    registry.register("w2", ["a"], 0.0)
    registry.heartbeat("w2", 1.5)
    registry.evaluate(2.0)
    pool = registry.pool("a")
    assert pool is not None
    assert pool.members == ("w1", "w2") and pool.healthy == ("w2",)


def test_pool_version_changes_iff_membership_or_health_changes() -> None:
    registry, _ = make_registry()
    registry.register("w1", ["a"], 0.0)
    registry.register("w2", ["a"], 0.0)
    pool = registry.pool("a")
    assert pool is not None
    v0 = pool.version

    # Heartbeats (with or without a load report) and verdict-preserving evaluations: same pool.
    registry.heartbeat("w1", 0.5, LoadReport(cpu=0.9, at=0.5))
    registry.heartbeat("w2", 0.5)
    assert registry.evaluate(0.6) == []
    assert registry.pool("a") is pool
    assert pool.version == v0

    # Health change.
    registry.heartbeat("w2", 1.4)
    registry.evaluate(1.6)  # w1 suspect
    p1 = registry.pool("a")
    assert p1 is not None and p1.version != v0 and p1.healthy == ("w2",)

    # Membership change: a new worker.
    registry.register("w3", ["a"], 1.7)
    p2 = registry.pool("a")
    assert p2 is not None and p2.version not in (v0, p1.version)
    assert p2.members == ("w1", "w2", "w3")

    # Membership change: a worker leaves.
    registry.deregister("w3", 1.8)
    p3 = registry.pool("a")
    assert p3 is not None and p3.version not in (v0, p1.version, p2.version)
    assert registry.pool("a") is p3  # stable until the next change


# -- views --------------------------------------------------------------------------------------


def test_strong_view_sees_every_change_at_once() -> None:
    registry, _ = make_registry()
    view = StrongView(registry, lookup_cost_s=0.002)
    assert view.lookup_cost_s == 0.002
    assert view.pool("a", 0.0) is None
    registry.register("w1", ["a"], 0.0)
    registry.register("w2", ["a"], 0.0)
    pool = view.pool("a", 0.0)
    assert pool is not None and pool.healthy == ("w1", "w2")
    registry.heartbeat("w2", 2.0, LoadReport(cpu=0.25, at=2.0))
    registry.evaluate(2.0)
    pool = view.pool("a", 2.0)
    assert pool is not None and pool.healthy == ("w2",)
    assert view.report("w2").cpu == 0.25


def test_eventual_view_rejects_negative_ttl() -> None:
    registry, _ = make_registry()
    with pytest.raises(ValueError):
        EventualView(registry, -0.1)


def test_eventual_view_serves_a_stale_snapshot_until_the_ttl_passes() -> None:
    registry, _ = make_registry()
    registry.register("w1", ["a"], 0.0)
    registry.register("w2", ["a"], 0.0)
    registry.heartbeat("w1", 0.0, LoadReport(cpu=0.1, at=0.0))
    view = EventualView(registry, ttl_s=5.0)
    assert view.lookup_cost_s == 0.0

    pool = view.pool("a", 0.0)
    assert pool is not None and pool.healthy == ("w1", "w2")
    assert view.refreshes == 1 and view.stale_pools == 0

    # w1 dies (no heartbeats); w2 reports a new load. The registry knows, the view does not.
    registry.heartbeat("w2", 3.5, LoadReport(cpu=0.8, at=3.5))
    registry.evaluate(3.5)
    assert registry.health_of("w1") is Health.DOWN
    stale = view.pool("a", 3.5)
    assert stale is pool
    assert stale is not None and "w1" in stale.healthy_set  # a dead worker is still routable
    assert view.report("w1").cpu == 0.1
    assert view.report("w2").cpu == 0.0  # the old report
    assert view.refreshes == 1 and view.stale_pools == 1
    view.pool("a", 4.99)
    assert view.refreshes == 1 and view.stale_pools == 2

    # Once the snapshot is ttl_s old, the next lookup refreshes it.
    fresh = view.pool("a", 5.0)
    assert fresh is not None and fresh.healthy == ("w2",)
    assert view.report("w2").cpu == 0.8
    assert view.refreshes == 2 and view.stale_pools == 2

    # A lookup from a snapshot that matches the registry is not stale.
    view.pool("a", 6.0)
    assert view.refreshes == 2 and view.stale_pools == 2


def test_eventual_view_does_not_count_lookups_with_only_new_load_reports_as_stale() -> None:
    # stale_pools tracks membership/health versions; load reports ride on heartbeats.
    registry, _ = make_registry()
    registry.register("w1", ["a"], 0.0)
    view = EventualView(registry, ttl_s=5.0)
    view.pool("a", 0.0)
    registry.heartbeat("w1", 1.0, LoadReport(cpu=0.5, at=1.0))
    view.pool("a", 1.0)
    assert view.stale_pools == 0
    assert view.report("w1").cpu == 0.0


def test_eventual_view_does_not_know_types_registered_after_its_snapshot() -> None:
    registry, _ = make_registry()
    registry.register("w1", ["a"], 0.0)
    view = EventualView(registry, ttl_s=5.0)
    view.pool("a", 0.0)
    registry.register("w2", ["b"], 1.0)
    assert view.pool("b", 1.0) is None
    assert view.stale_pools == 1
    pool = view.pool("b", 5.0)
    assert pool is not None and pool.healthy == ("w2",)
    assert view.report("ghost") == LoadReport()


@SETTINGS
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["register", "deregister", "heartbeat", "evaluate", "lookup"]),
            st.sampled_from(["w1", "w2", "w3", "w4"]),
            st.sampled_from(["a", "b"]),
            st.floats(0.0, 2.0),
        ),
        max_size=40,
    )
)
def test_ttl_zero_behaves_like_a_strong_view(ops: list[tuple[str, str, str, float]]) -> None:
    registry, _ = make_registry()
    strong = StrongView(registry)
    eventual = EventualView(registry, ttl_s=0.0)
    now = 0.0
    for op, worker, agent_type, dt in ops:
        now += dt
        if op == "register":
            registry.register(worker, [agent_type], now)
        elif op == "deregister":
            registry.deregister(worker, now)
        elif op == "heartbeat":
            registry.heartbeat(worker, now, LoadReport(cpu=dt / 2, at=now))
        elif op == "evaluate":
            registry.evaluate(now)
        for t in ("a", "b", "c"):
            assert eventual.pool(t, now) == strong.pool(t, now)
        for w in ("w1", "w2", "w3", "w4"):
            assert eventual.report(w) == strong.report(w)
    assert eventual.stale_pools == 0


@SETTINGS
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["register", "deregister", "heartbeat", "evaluate"]),
            st.sampled_from(["w1", "w2", "w3"]),
            st.floats(0.0, 1.5),
        ),
        max_size=40,
    ),
    ttl=st.floats(0.5, 4.0),
)
def test_eventual_view_answers_from_the_registry_as_of_its_last_refresh(
    ops: list[tuple[str, str, float]], ttl: float
) -> None:
    registry, _ = make_registry()
    view = EventualView(registry, ttl_s=ttl)
    snapshot = None
    taken_at = float("-inf")
    stale = 0
    now = 0.0
    for op, worker, dt in ops:
        now += dt
        if op == "register":
            registry.register(worker, ["a"], now)
        elif op == "deregister":
            registry.deregister(worker, now)
        elif op == "heartbeat":
            registry.heartbeat(worker, now)
        else:
            registry.evaluate(now)
        if now - taken_at >= ttl:
            snapshot, taken_at = (registry.pool("a"), registry.version), now
        elif snapshot[1] != registry.version:
            stale += 1
        assert view.pool("a", now) == snapshot[0]
    assert view.stale_pools == stale
