"""Tests for ``labkit.core.breaker``: per-worker circuit breakers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.core.breaker import BreakerConfig, BreakerState, CircuitBreakers

SETTINGS = settings(derandomize=True, deadline=None, max_examples=100)

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

Event = tuple[str, str, float]


def make(**cfg: float) -> tuple[CircuitBreakers, list[Event]]:
    b = CircuitBreakers(BreakerConfig(**cfg))  # type: ignore[arg-type]
    events: list[Event] = []
    b.on_change = lambda w, event, at: events.append((w, event, at))
    return b, events


def fail(b: CircuitBreakers, worker: str, now: float, times: int = 5) -> None:
    for _ in range(times):
        b.record(worker, False, now)


def probe(b: CircuitBreakers, worker: str, ok: bool, sent: float, done: float) -> None:
    b.dispatched(worker, sent)
    b.record(worker, ok, done)


# -- config -------------------------------------------------------------------------------------


def test_config_defaults() -> None:
    c = BreakerConfig()
    assert (c.failure_threshold, c.open_s, c.half_open_probes, c.close_after) == (5, 10.0, 1, 2)
    assert BreakerState.HALF_OPEN == "half_open"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_threshold": 1.5}, "failure_threshold"),
        ({"open_s": 0.0}, "open_s"),
        ({"open_s": math.inf}, "open_s"),
        ({"half_open_probes": 0}, "half_open_probes"),
        ({"close_after": 0}, "close_after"),
        ({"close_after": True}, "close_after"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]


# -- the cycle ----------------------------------------------------------------------------------


def test_full_cycle_closed_open_half_open_closed() -> None:
    b, events = make()
    assert b.state("w", 0.0) is CLOSED
    fail(b, "w", 1.0, times=4)
    assert b.state("w", 1.0) is CLOSED
    assert b.blocked(1.0) == frozenset()
    b.record("w", False, 2.0)  # fifth consecutive failure
    assert b.state("w", 2.0) is OPEN
    assert b.blocked(2.0) == frozenset({"w"})
    assert b.opened == 1
    assert b.next_change_at == 12.0
    assert b.state("w", 11.999) is OPEN
    # open_s elapses at 12.0; noticed at 15.0
    assert b.blocked(15.0) == frozenset()
    assert b.state("w", 15.0) is HALF_OPEN
    assert b.next_change_at == math.inf
    probe(b, "w", True, 15.0, 15.1)
    assert b.state("w", 15.1) is HALF_OPEN
    probe(b, "w", True, 15.2, 15.3)  # second successful probe closes it
    assert b.state("w", 15.3) is CLOSED
    assert b.blocked(15.3) == frozenset()
    assert events == [("w", "open", 2.0), ("w", "half_open", 12.0), ("w", "closed", 15.3)]
    # closed again with a fresh failure count
    fail(b, "w", 16.0, times=4)
    assert b.state("w", 16.0) is CLOSED


def test_successes_reset_the_failure_count() -> None:
    b, _ = make()
    fail(b, "w", 0.0, times=4)
    b.record("w", True, 0.0)
    fail(b, "w", 0.0, times=4)
    assert b.state("w", 0.0) is CLOSED
    b.record("w", False, 0.0)
    assert b.state("w", 0.0) is OPEN


def test_failed_probe_reopens_for_open_s() -> None:
    b, events = make()
    fail(b, "w", 0.0)
    assert b.state("w", 10.0) is HALF_OPEN
    probe(b, "w", True, 10.0, 10.5)
    probe(b, "w", False, 11.0, 11.5)  # one success is not enough; a failure re-opens
    assert b.state("w", 11.5) is OPEN
    assert b.next_change_at == 21.5
    assert b.opened == 2
    assert b.state("w", 21.4) is OPEN
    assert b.state("w", 21.5) is HALF_OPEN
    # successes count afresh after re-opening
    probe(b, "w", True, 22.0, 22.1)
    assert b.state("w", 22.1) is HALF_OPEN
    probe(b, "w", True, 22.2, 22.3)
    assert b.state("w", 22.3) is CLOSED
    assert [e for _, e, _ in events] == ["open", "half_open", "open", "half_open", "closed"]
    assert [at for _, _, at in events] == [0.0, 10.0, 11.5, 21.5, 22.3]


def test_probe_slots_limit_dispatches_while_half_open() -> None:
    b, _ = make(half_open_probes=2, close_after=3)
    fail(b, "w", 0.0)
    assert b.blocked(10.0) == frozenset()
    b.dispatched("w", 10.0)
    assert b.blocked(10.0) == frozenset()  # one slot left
    b.dispatched("w", 10.0)
    assert b.blocked(10.0) == frozenset({"w"})  # both taken
    b.record("w", True, 10.5)
    assert b.blocked(10.5) == frozenset()  # a slot freed
    b.record("w", True, 10.6)
    b.dispatched("w", 10.7)
    b.record("w", True, 10.8)
    assert b.state("w", 10.8) is CLOSED


def test_dispatch_past_the_limit_is_still_counted() -> None:
    b, _ = make(half_open_probes=1, close_after=5)
    fail(b, "w", 0.0)
    b.dispatched("w", 10.0)
    b.dispatched("w", 10.0)  # the caller ignored blocked()
    b.record("w", True, 10.1)
    assert b.blocked(10.1) == frozenset({"w"})  # one probe still out
    b.record("w", True, 10.2)
    assert b.blocked(10.2) == frozenset()


def test_dispatch_while_closed_or_open_takes_no_slot() -> None:
    b, _ = make()
    b.dispatched("w", 0.0)  # unknown worker
    fail(b, "w", 0.0)
    b.dispatched("w", 5.0)  # open: ignored
    assert b.state("w", 10.0) is HALF_OPEN
    assert b.blocked(10.0) == frozenset()


# -- stragglers ---------------------------------------------------------------------------------


def test_stragglers_for_an_open_breaker_are_ignored() -> None:
    b, events = make()
    fail(b, "w", 0.0)
    b.record("w", True, 1.0)  # sent before it opened
    fail(b, "w", 2.0, times=10)
    assert b.state("w", 9.9) is OPEN
    assert b.next_change_at == 10.0  # not extended
    assert b.opened == 1
    assert events == [("w", "open", 0.0)]


def test_outcomes_with_no_probe_in_flight_are_ignored_while_half_open() -> None:
    b, _ = make()
    fail(b, "w", 0.0)
    assert b.state("w", 10.0) is HALF_OPEN
    b.record("w", False, 10.5)  # an attempt sent while closed, long ago
    assert b.state("w", 10.5) is HALF_OPEN
    b.record("w", True, 10.6)
    b.record("w", True, 10.7)
    assert b.state("w", 10.7) is HALF_OPEN  # not closed by stragglers either


# -- version, listener, forget ------------------------------------------------------------------


def test_version_bumps_when_the_blocked_set_changes() -> None:
    b, _ = make()
    v = b.version
    fail(b, "w", 0.0, times=4)
    b.record("x", True, 0.0)
    assert b.version == v
    b.record("w", False, 0.0)  # opens: blocked
    assert b.version == v + 1
    blocked = b.blocked(5.0)
    assert b.blocked(6.0) is blocked  # cached
    b.blocked(10.0)  # half-open, a free slot: unblocked
    assert b.version == v + 2
    b.dispatched("w", 10.0)  # slot taken: blocked
    assert b.version == v + 3
    b.record("w", False, 10.5)  # failed probe: re-opened, still blocked
    assert b.version == v + 3
    b.blocked(20.5)
    b.dispatched("w", 20.5)
    b.record("w", True, 20.6)  # slot freed
    assert b.version == v + 6
    b.dispatched("w", 20.7)
    b.record("w", True, 20.8)  # closed
    assert b.version == v + 8
    assert b.blocked(20.8) == frozenset()


def test_listener_times_for_several_breakers_are_in_order() -> None:
    b, events = make(open_s=5.0)
    fail(b, "b", 1.0)
    fail(b, "a", 2.0)
    assert b.next_change_at == 6.0
    b.blocked(100.0)
    assert events == [
        ("b", "open", 1.0),
        ("a", "open", 2.0),
        ("b", "half_open", 6.0),
        ("a", "half_open", 7.0),
    ]


def test_forget_drops_a_breaker_silently() -> None:
    b, events = make()
    fail(b, "w", 0.0)
    v = b.version
    b.forget("w")
    assert b.blocked(1.0) == frozenset()
    assert b.version == v + 1
    assert b.next_change_at == math.inf
    assert b.state("w", 1.0) is CLOSED
    assert events == [("w", "open", 0.0)]
    b.forget("nobody")
    assert b.version == v + 1


# -- property -----------------------------------------------------------------------------------


@SETTINGS
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(["ok", "fail", "send"]), st.floats(0, 4)),
        max_size=300,
    )
)
def test_blocked_matches_state_and_events_alternate(steps: list[tuple[int, str, float]]) -> None:
    b, events = make(failure_threshold=3, open_s=5.0, half_open_probes=2, close_after=2)
    t = 0.0
    inflight: dict[str, int] = {}
    for worker, action, dt in steps:
        t += dt
        w = f"w{worker}"
        if action == "send":
            b.dispatched(w, t)
            inflight[w] = inflight.get(w, 0) + 1
        elif inflight.get(w):
            inflight[w] -= 1
            b.record(w, action == "ok", t)
        else:
            b.record(w, action == "ok", t)
        blocked = b.blocked(t)
        for i in range(4):
            s = b.state(f"w{i}", t)
            if s is OPEN:
                assert f"w{i}" in blocked
            elif s is CLOSED:
                assert f"w{i}" not in blocked
    times = [at for _, _, at in events]
    assert times == sorted(times)
    allowed = {
        None: {"open"},
        "open": {"half_open"},
        "half_open": {"open", "closed"},
        "closed": {"open"},
    }
    last: dict[str, str | None] = {}
    for w, event, _ in events:
        assert event in allowed[last.get(w)]
        last[w] = event
    assert b.opened == sum(1 for _, e, _ in events if e == "open")
