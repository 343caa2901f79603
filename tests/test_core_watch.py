"""Tests for ``WatchView`` (pushed registry updates after a propagation delay), the registry's
change listeners, ``Registry.routable``/``snapshot``, and the gateway's misroute count."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.core.balancing import BalancerConfig, LocalLoad, make_balancer
from labkit.core.gateway import GatewayConfig, GatewayPolicy, resilience_counts
from labkit.core.registry import (
    EventualView,
    Health,
    LoadReport,
    Registry,
    RegistryView,
    StrongView,
    TimeoutDetector,
    WatchView,
)
from labkit.errors import NoWorkerAvailable

SETTINGS = settings(derandomize=True, deadline=None, max_examples=100)


def make_registry() -> Registry:
    # suspect after 1 s of silence, down after 2 s
    return Registry(TimeoutDetector(1.0, 2.0))


def delays(values: Iterable[float]) -> Callable[[], float]:
    """A deterministic delay source; raises StopIteration if asked more often than expected."""
    return iter(list(values)).__next__


def fleet(n: int = 3, agent_type: str = "a") -> Registry:
    registry = make_registry()
    for i in range(n):
        registry.register(f"w{i}", [agent_type], 0.0)
    return registry


def healthy(view: RegistryView, agent_type: str, now: float) -> tuple[str, ...] | None:
    pool = view.pool(agent_type, now)
    return None if pool is None else pool.healthy


def kill_w2(registry: Registry, until: float) -> None:
    """w0 and w1 keep beating every 0.5 s up to ``until``; w2 has been silent since 0."""
    t = 0.5
    while t <= until:
        registry.heartbeat("w0", t)
        registry.heartbeat("w1", t)
        t += 0.5


# -- Registry: change listeners, routable, snapshot --------------------------------------------


def test_change_listeners_hear_membership_and_health_changes_but_not_heartbeats() -> None:
    registry = make_registry()
    heard: list[tuple[float, int]] = []
    registry.add_change_listener(lambda now: heard.append((now, registry.version)))
    registry.register("w1", ["a"], 0.0)
    registry.register("w2", ["a"], 0.5)
    registry.heartbeat("w1", 1.0)
    assert registry.evaluate(1.4) == []  # nobody silent for more than 1 s: no change
    registry.heartbeat("w1", 2.0)
    registry.evaluate(2.6)  # w2 silent 2.1 s: down; w1 silent 0.6 s: healthy
    registry.deregister("w2", 3.0)
    registry.deregister("ghost", 3.5)  # unknown: no change
    assert [now for now, _ in heard] == [0.0, 0.5, 2.6, 3.0]
    # the listener runs after the version moved, so it sees the new state
    assert [v for _, v in heard] == [1, 2, 3, 4]
    assert registry.version == 4


def test_one_evaluate_with_several_changes_notifies_once() -> None:
    registry = fleet(3)
    heard: list[float] = []
    registry.add_change_listener(heard.append)
    changes = registry.evaluate(2.5)  # all three silent for 2.5 s
    assert len(changes) == 3
    assert heard == [2.5]


def test_routable_is_the_registrys_current_verdict() -> None:
    registry = fleet(2)
    assert registry.routable("w0") and registry.routable("w1")
    assert not registry.routable("ghost")
    registry.heartbeat("w0", 1.2)
    registry.evaluate(1.5)  # w1 silent 1.5 s: suspect, not routable
    assert registry.health_of("w1") is Health.SUSPECT
    assert registry.routable("w0") and not registry.routable("w1")
    registry.deregister("w0", 1.6)
    assert not registry.routable("w0")


def test_snapshot_is_cached_until_the_version_changes() -> None:
    registry = fleet(2)
    snap = registry.snapshot()
    assert set(snap) == {"a"}
    assert snap["a"].healthy == ("w0", "w1")
    assert snap["a"].version == registry.version
    registry.heartbeat("w0", 0.5, LoadReport(cpu=0.5, at=0.5))
    assert registry.snapshot() is snap  # heartbeats do not rebuild pools
    registry.register("w2", ["a", "b"], 1.0)
    new = registry.snapshot()
    assert new is not snap
    assert new["a"].members == ("w0", "w1", "w2")
    assert new["b"].healthy == ("w2",)
    assert snap["a"].members == ("w0", "w1")  # the old snapshot is untouched
    assert registry.pool("a") is new["a"]


# -- WatchView ---------------------------------------------------------------------------------


def test_watch_view_starts_from_the_registry_as_it_is() -> None:
    registry = fleet(2)
    view = WatchView(registry, delays([]))
    assert view.lookup_cost_s == 0.0
    assert healthy(view, "a", 0.0) == ("w0", "w1")
    assert view.pool("nope", 0.0) is None
    assert view.updates == 0 and view.stale_pools == 0


def test_watch_view_sees_a_health_change_only_after_the_delay() -> None:
    registry = fleet(2)
    view = WatchView(registry, delays([0.25]))
    registry.heartbeat("w0", 2.0)
    registry.evaluate(2.5)  # w1 silent 2.5 s: down
    assert not registry.routable("w1")
    assert healthy(view, "a", 2.5) == ("w0", "w1")
    assert healthy(view, "a", 2.7499) == ("w0", "w1")
    assert view.updates == 0 and view.stale_pools == 2
    assert healthy(view, "a", 2.75) == ("w0",)
    assert view.updates == 1 and view.stale_pools == 2
    pool = view.pool("a", 3.0)
    assert pool is not None and pool.members == ("w0", "w1")
    assert pool == registry.pool("a")
    assert view.updates == 1 and view.stale_pools == 2


def test_updates_apply_in_send_order_even_when_a_later_one_is_faster() -> None:
    registry = fleet(2)
    # first update (w2 joins at 1.0) takes 1.0 s; the second (w0 leaves at 1.1) only 0.1 s
    view = WatchView(registry, delays([1.0, 0.1]))
    registry.register("w2", ["a"], 1.0)
    registry.deregister("w0", 1.1)
    # A reordering stream would show w0 gone from 1.2 s while w2 was still unknown.
    for t in (1.1, 1.2, 1.5, 1.99):
        assert healthy(view, "a", t) == ("w0", "w1")
    assert view.updates == 0
    assert healthy(view, "a", 2.0) == ("w1", "w2")
    assert view.updates == 2


def test_a_slow_update_does_not_delay_a_later_one_beyond_its_own_delay() -> None:
    registry = fleet(1)
    view = WatchView(registry, delays([0.5, 0.2]))
    registry.register("w1", ["a"], 1.0)  # due 1.5
    registry.register("w2", ["a"], 1.4)  # due max(1.5, 1.6) = 1.6
    assert healthy(view, "a", 1.5) == ("w0", "w1")
    assert view.updates == 1 and view.stale_pools == 1  # the second one is still in flight
    assert healthy(view, "a", 1.59) == ("w0", "w1")
    assert healthy(view, "a", 1.6) == ("w0", "w1", "w2")
    assert view.updates == 2 and view.stale_pools == 2


def test_registrations_and_deregistrations_are_pushed_too() -> None:
    registry = fleet(1)
    view = WatchView(registry, delays([0.2, 0.3]))
    registry.register("b1", ["b"], 1.0)
    assert view.pool("b", 1.1) is None  # the new type is not known yet
    pool = view.pool("b", 1.2)
    assert pool is not None and pool.healthy == ("b1",)
    registry.deregister("b1", 2.0)
    pool = view.pool("b", 2.1)
    assert pool is not None and pool.healthy == ("b1",)  # still believed alive
    pool = view.pool("b", 2.3)
    # the type is still known, with nobody in it: an empty pool, not None
    assert pool is not None and pool.members == () and pool.healthy == ()
    assert view.updates == 2


def test_every_change_draws_one_delay() -> None:
    registry = fleet(3)
    drawn: list[float] = []

    def delay() -> float:
        drawn.append(0.1)
        return 0.1

    view = WatchView(registry, delay)
    registry.heartbeat("w0", 1.0, LoadReport(cpu=0.9, at=1.0))  # no change: nothing pushed
    assert drawn == []
    registry.evaluate(2.5)  # w1 and w2 down, w0 suspect: one change event
    assert len(drawn) == 1
    registry.register("w3", ["a"], 3.0)
    registry.deregister("w3", 3.0)
    assert len(drawn) == 3
    assert view.pool("a", 3.1) == registry.pool("a")
    assert view.updates == 3


def test_stale_pools_counts_lookups_while_an_update_is_in_flight() -> None:
    registry = fleet(2)
    view = WatchView(registry, delays([1.0]))
    for t in (0.1, 0.2):
        view.pool("a", t)
    assert view.stale_pools == 0  # nothing pending
    registry.register("w2", ["a"], 0.5)  # due 1.5
    for t in (0.5, 0.9, 1.49):
        view.pool("a", t)
    view.pool("other", 1.0)  # any lookup counts, whatever its type
    assert view.stale_pools == 4
    view.pool("a", 1.5)  # applies it: nothing left in flight
    view.pool("a", 2.0)
    assert view.stale_pools == 4
    assert view.updates == 1


def test_load_reports_are_live() -> None:
    registry = fleet(2)
    view = WatchView(registry, delays([]))
    assert view.report("w0").cpu == 0.0
    registry.heartbeat("w0", 0.5, LoadReport(cpu=0.7, active=3, at=0.5))
    assert view.report("w0").cpu == 0.7
    assert view.report("w0").active == 3
    assert view.report("ghost") == LoadReport()


def test_two_views_of_one_registry_have_their_own_delays() -> None:
    registry = fleet(1)
    fast = WatchView(registry, delays([0.01]))
    slow = WatchView(registry, delays([1.0]))
    registry.register("w1", ["a"], 1.0)
    assert healthy(fast, "a", 1.01) == ("w0", "w1")
    assert healthy(slow, "a", 1.01) == ("w0",)
    assert healthy(slow, "a", 2.0) == ("w0", "w1")


@SETTINGS
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["register", "deregister", "heartbeat", "evaluate", "lookup"]),
            st.sampled_from(["w1", "w2", "w3"]),
            st.sampled_from(["a", "b"]),
            st.floats(0.0, 1.0),
            st.floats(0.0, 2.0),  # the delay of the change this op may cause
        ),
        max_size=40,
    )
)
def test_watch_view_shows_the_latest_change_sent_before_now_minus_its_delay(
    ops: list[tuple[str, str, str, float, float]],
) -> None:
    registry = make_registry()
    pending: list[float] = []  # the delay the next change will draw
    view = WatchView(registry, lambda: pending.pop())
    sent: list[tuple[float, dict]] = []  # (due, registry pools at send time), send order
    last_due = float("-inf")
    now = 0.0
    for op, worker, agent_type, dt, delay in ops:
        now += dt
        version = registry.version
        pending.append(delay)
        if op == "register":
            registry.register(worker, [agent_type], now)
        elif op == "deregister":
            registry.deregister(worker, now)
        elif op == "heartbeat":
            registry.heartbeat(worker, now)
        elif op == "evaluate":
            registry.evaluate(now)
        if registry.version != version:
            assert not pending  # the change drew its delay
            last_due = max(last_due, now + delay)
            sent.append((last_due, {t: registry.pool(t) for t in ("a", "b", "c")}))
        else:
            pending.clear()
        arrived = [pools for due, pools in sent if due <= now]
        # send order == due order, so the view shows the last arrived one (or the start)
        expected = arrived[-1] if arrived else {"a": None, "b": None, "c": None}
        for t in ("a", "b", "c"):
            got = view.pool(t, now)
            want = expected[t]
            if want is None or got is None:
                assert got == want
            else:
                assert (got.members, got.healthy) == (want.members, want.healthy)


# -- misroutes ---------------------------------------------------------------------------------


def make_policy(view: RegistryView, *, panic_threshold: float = 0.5) -> GatewayPolicy:
    local = LocalLoad()
    balancer = make_balancer(BalancerConfig(strategy="round_robin"), local, view, random.Random(0))
    config = GatewayConfig(panic_threshold=panic_threshold)
    return GatewayPolicy("gw0", config, view, balancer, local, random.Random(1))


def route_many(policy: GatewayPolicy, n: int, now: float) -> list[str]:
    return [policy.route("a", f"k{i}", now) for i in range(n)]


def test_eventual_view_misroutes_until_its_snapshot_refreshes() -> None:
    registry = fleet(3)
    view = EventualView(registry, ttl_s=5.0)
    policy = make_policy(view)
    assert policy.misroutes == 0
    # Before the registry knows, routes to the silent w2 are not misroutes.
    picked = route_many(policy, 6, 0.0)  # snapshot taken at 0
    kill_w2(registry, 2.5)
    picked += route_many(policy, 6, 1.9)
    assert picked.count("w2") == 4
    assert policy.misroutes == 0
    registry.evaluate(2.5)  # w2 silent 2.5 s: down
    assert registry.health_of("w2") is Health.DOWN
    # Within the TTL the view still believes w2 is healthy: every route to it is a misroute.
    picked = route_many(policy, 9, 3.0)
    assert picked.count("w2") == 3
    assert policy.misroutes == 3
    assert resilience_counts([policy])["misroutes"] == 3
    # Once the snapshot refreshes, w2 is out of rotation and nothing more is misrouted.
    picked = route_many(policy, 9, 5.0)
    assert "w2" not in picked
    assert view.refreshes == 2
    assert policy.misroutes == 3


def test_routes_to_healthy_workers_of_a_stale_snapshot_are_not_misroutes() -> None:
    registry = fleet(3)
    view = EventualView(registry, ttl_s=5.0)
    policy = make_policy(view)
    route_many(policy, 3, 0.0)
    registry.register("w3", ["a"], 1.0)  # the registry moved on; the view did not
    picked = route_many(policy, 6, 1.0)
    assert set(picked) == {"w0", "w1", "w2"}
    assert policy.misroutes == 0


def test_a_deregistered_worker_still_in_a_snapshot_is_misrouted() -> None:
    registry = fleet(3)
    view = EventualView(registry, ttl_s=5.0)
    policy = make_policy(view)
    route_many(policy, 3, 0.0)
    registry.deregister("w1", 1.0)
    picked = route_many(policy, 6, 1.0)
    assert picked.count("w1") == 2
    assert policy.misroutes == 2


def test_strong_view_never_misroutes() -> None:
    registry = fleet(3)
    view = StrongView(registry)
    policy = make_policy(view)
    route_many(policy, 6, 0.0)
    kill_w2(registry, 2.5)
    registry.evaluate(2.5)
    picked = route_many(policy, 9, 3.0)
    assert "w2" not in picked
    registry.deregister("w1", 3.5)
    picked = route_many(policy, 6, 3.5)
    assert set(picked) == {"w0"}
    assert policy.misroutes == 0


def test_watch_view_misroutes_only_during_the_delay_window() -> None:
    registry = fleet(3)
    view = WatchView(registry, delays([0.25]))
    policy = make_policy(view)
    kill_w2(registry, 2.5)
    route_many(policy, 3, 1.0)
    registry.evaluate(2.5)  # w2 down; the gateway hears at 2.75
    picked = route_many(policy, 6, 2.5) + route_many(policy, 3, 2.7)
    assert picked.count("w2") == 3
    assert policy.misroutes == 3
    picked = route_many(policy, 9, 2.75) + route_many(policy, 9, 10.0)
    assert "w2" not in picked
    assert policy.misroutes == 3
    assert view.updates == 1


def test_panic_routes_to_dead_workers_are_not_misroutes() -> None:
    # With 2 of 3 workers down, panic (threshold 0.5) balances over every member on purpose;
    # that is counted as panic, not as a stale view.
    registry = fleet(3)
    view = WatchView(registry, delays([0.0]))
    policy = make_policy(view)
    registry.heartbeat("w0", 2.0)
    registry.evaluate(2.5)  # w1, w2 down
    picked = route_many(policy, 6, 2.5)
    assert set(picked) == {"w0", "w1", "w2"}
    assert policy.panic_routes > 0
    assert policy.misroutes == 0


def test_resilience_counts_sums_misroutes_over_gateways() -> None:
    registry = fleet(3)
    a = make_policy(EventualView(registry, ttl_s=10.0))
    b = make_policy(EventualView(registry, ttl_s=10.0))
    route_many(a, 1, 0.0)
    route_many(b, 1, 0.0)
    registry.deregister("w0", 1.0)
    route_many(a, 3, 1.0)  # w1, w2, w0
    route_many(b, 6, 1.0)  # w1, w2, w0, w1, w2, w0
    assert (a.misroutes, b.misroutes) == (1, 2)
    counts = resilience_counts([a, b])
    assert counts["misroutes"] == 3
    assert {"retries", "hedges", "panic_routes", "misroutes"} <= set(counts)


@pytest.mark.parametrize("kind", ["strong", "eventual", "watch"])
@SETTINGS
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(
                ["register", "deregister", "heartbeat", "evaluate", "route", "route", "route"]
            ),
            st.sampled_from(["w1", "w2", "w3", "w4"]),
            st.floats(0.0, 1.5),
        ),
        max_size=40,
    ),
    param=st.floats(0.0, 3.0),
)
def test_misroutes_count_exactly_the_routes_to_workers_the_registry_calls_unroutable(
    kind: str, ops: list[tuple[str, str, float]], param: float
) -> None:
    # With panic off and no passive checks, a gateway only ever picks workers its view calls
    # healthy, so a misroute is exactly a pick the registry already disagrees with.
    registry = make_registry()
    view: RegistryView
    if kind == "strong":
        view = StrongView(registry)
    elif kind == "eventual":
        view = EventualView(registry, ttl_s=param)
    else:
        view = WatchView(registry, lambda: param)
    policy = make_policy(view, panic_threshold=0.0)
    registry.register("w0", ["a"], 0.0)
    unroutable = 0
    now = 0.0
    for op, worker, dt in ops:
        now += dt
        if op == "register":
            registry.register(worker, ["a"], now)
        elif op == "deregister":
            registry.deregister(worker, now)
        elif op == "heartbeat":
            registry.heartbeat(worker, now)
        elif op == "evaluate":
            registry.evaluate(now)
        else:
            try:
                picked = policy.route("a", "k", now)
            except NoWorkerAvailable:
                continue
            if not registry.routable(picked):
                unroutable += 1
    assert policy.misroutes == unroutable
    if kind == "strong":
        assert unroutable == 0
