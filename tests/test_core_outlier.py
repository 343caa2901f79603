"""Tests for ``labkit.core.outlier``: Envoy-style consecutive-error ejection."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.core.outlier import OutlierConfig, OutlierDetector

SETTINGS = settings(derandomize=True, deadline=None, max_examples=100)

Event = tuple[str, str, float]


def make(hosts: int = 100, **cfg: float) -> tuple[OutlierDetector, list[Event]]:
    d = OutlierDetector(OutlierConfig(**cfg), hosts=hosts)  # type: ignore[arg-type]
    events: list[Event] = []
    d.on_change = lambda w, event, at: events.append((w, event, at))
    return d, events


def fail(d: OutlierDetector, worker: str, now: float, times: int = 5) -> None:
    for _ in range(times):
        d.record(worker, False, now)


# -- config -------------------------------------------------------------------------------------


def test_config_defaults_are_envoys() -> None:
    c = OutlierConfig()
    assert (c.consecutive_errors, c.base_ejection_s, c.max_ejection_s) == (5, 30.0, 300.0)
    assert c.max_ejection_fraction == 0.1


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"consecutive_errors": 0}, "consecutive_errors"),
        ({"consecutive_errors": 2.5}, "consecutive_errors"),
        ({"base_ejection_s": 0.0}, "base_ejection_s"),
        ({"base_ejection_s": math.inf}, "base_ejection_s"),
        ({"max_ejection_s": -1.0}, "max_ejection_s"),
        ({"max_ejection_fraction": 1.5}, "max_ejection_fraction"),
        ({"max_ejection_fraction": -0.1}, "max_ejection_fraction"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        OutlierConfig(**kwargs)  # type: ignore[arg-type]


def test_detector_rejects_negative_hosts() -> None:
    with pytest.raises(ValueError, match="hosts"):
        OutlierDetector(OutlierConfig(), hosts=-1)


# -- ejection -----------------------------------------------------------------------------------


def test_ejected_after_exactly_five_consecutive_errors() -> None:
    d, events = make()
    fail(d, "w", 1.0, times=4)
    assert not d.is_ejected("w", 1.0)
    assert d.blocked(1.0) == frozenset()
    d.record("w", False, 1.0)
    assert d.is_ejected("w", 1.0)
    assert d.blocked(1.0) == frozenset({"w"})
    assert d.ejections == 1
    assert d.ejected_until("w") == 31.0
    assert d.next_change_at == 31.0
    assert events == [("w", "ejected", 1.0)]


def test_a_success_in_between_resets_the_count() -> None:
    d, _ = make()
    fail(d, "w", 0.0, times=4)
    d.record("w", True, 0.0)
    fail(d, "w", 0.0, times=4)
    assert not d.is_ejected("w", 0.0)
    d.record("w", False, 0.0)
    assert d.is_ejected("w", 0.0)


def test_other_workers_outcomes_do_not_interleave() -> None:
    d, _ = make()
    for _ in range(4):
        d.record("a", False, 0.0)
        d.record("b", True, 0.0)
    d.record("a", False, 0.0)
    assert d.blocked(0.0) == frozenset({"a"})


def test_ejection_returns_after_base_time() -> None:
    d, events = make()
    fail(d, "w", 10.0)
    assert d.is_ejected("w", 39.999)
    assert d.blocked(40.0) == frozenset()
    assert d.next_change_at == math.inf
    assert events == [("w", "ejected", 10.0), ("w", "returned", 40.0)]


def test_repeated_ejections_last_30_then_60_then_90_seconds() -> None:
    d, events = make()
    t = 0.0
    durations = []
    for _ in range(3):
        fail(d, "w", t)
        until = d.ejected_until("w")
        assert until is not None
        durations.append(until - t)
        t = until  # fails again the moment it returns
        assert not d.is_ejected("w", t)
    assert durations == [30.0, 60.0, 90.0]
    assert [e for _, e, _ in events] == ["ejected", "returned"] * 3
    assert [at for _, _, at in events] == [0.0, 30.0, 30.0, 90.0, 90.0, 180.0]


def test_ejection_time_is_capped_at_max() -> None:
    d, _ = make()
    t = 0.0
    durations = []
    for _ in range(13):
        fail(d, "w", t)
        until = d.ejected_until("w")
        assert until is not None
        durations.append(until - t)
        t = until
        d.blocked(t)
    assert durations == [30.0 * k for k in range(1, 11)] + [300.0] * 3


def test_max_below_base_caps_every_ejection() -> None:
    d, _ = make(base_ejection_s=30.0, max_ejection_s=10.0)
    fail(d, "w", 0.0)
    assert d.ejected_until("w") == 10.0
    d.blocked(10.0)
    fail(d, "w", 10.0)
    assert d.ejected_until("w") == 20.0


# -- decay --------------------------------------------------------------------------------------


def test_multiplier_decays_one_step_per_clean_base_period() -> None:
    d, _ = make()
    t = 0.0
    for _ in range(3):  # ejected for 30, 60, 90 s: multiplier 3, back at t = 180
        fail(d, "w", t)
        until = d.ejected_until("w")
        assert until is not None
        t = until
    assert t == 180.0
    # 59.9 s clean: one full period, multiplier 3 → 2, this ejection uses 3 → 90 s
    fail(d, "w", 239.9)
    assert d.ejected_until("w") == pytest.approx(239.9 + 90.0)
    d.blocked(329.9)
    # 60 s clean: two periods, multiplier 3 → 1, this ejection uses 2 → 60 s
    fail(d, "w", 389.9)
    assert d.ejected_until("w") == pytest.approx(389.9 + 60.0)
    d.blocked(449.9)
    # a long healthy spell brings it back to the base time
    fail(d, "w", 10_000.0)
    assert d.ejected_until("w") == 10_030.0


def test_at_the_cap_one_clean_period_does_not_shorten_the_next_ejection() -> None:
    """Envoy grows the multiplier while base·k < max + base, one step past the cap (k = 11)."""
    d, _ = make()
    t = 0.0
    for _ in range(12):
        fail(d, "w", t)
        until = d.ejected_until("w")
        assert until is not None
        t = until
    fail(d, "w", t + 30.0)  # one clean period: 11 → 10, then +1 → 11: still 300 s
    assert d.ejected_until("w") == t + 30.0 + 300.0
    t = t + 330.0
    fail(d, "w", t + 60.0)  # two clean periods: 11 → 9, +1 → 10: 300 s
    assert d.ejected_until("w") == t + 60.0 + 300.0
    t = t + 360.0
    fail(d, "w", t + 90.0)  # three: 10 → 7, +1 → 8: 240 s
    assert d.ejected_until("w") == t + 90.0 + 240.0


# -- cap ----------------------------------------------------------------------------------------


def test_at_most_ten_percent_of_twenty_hosts() -> None:
    d, events = make(hosts=20)
    fail(d, "a", 0.0)
    fail(d, "b", 0.0)
    fail(d, "c", 0.0)
    assert d.blocked(0.0) == frozenset({"a", "b"})
    assert d.ejections == 2
    assert d.refused_by_cap == 1
    assert [w for w, e, _ in events if e == "ejected"] == ["a", "b"]
    # "c" stays in with its count running: each further failure tries again ...
    d.record("c", False, 1.0)
    assert d.refused_by_cap == 2
    # ... and the first failure after room frees up ejects it
    d.blocked(30.0)  # a and b return
    d.record("c", False, 30.0)
    assert d.blocked(30.0) == frozenset({"c"})
    # while a success in between would have reset it
    fail(d, "d", 31.0)
    fail(d, "e", 31.0)
    assert d.is_ejected("d", 31.0)
    assert not d.is_ejected("e", 31.0)
    d.record("e", True, 31.0)
    d.record("e", False, 31.0)
    assert d.refused_by_cap == 3  # only "e"'s fifth failure tried: the success reset its count


def test_at_least_one_host_may_be_ejected_regardless() -> None:
    d, _ = make(hosts=5)  # 10 % of 5 hosts is half a host
    fail(d, "a", 0.0)
    fail(d, "b", 0.0)
    assert d.blocked(0.0) == frozenset({"a"})
    assert d.refused_by_cap == 1
    d0, _ = make(hosts=5, max_ejection_fraction=0.0)
    fail(d0, "a", 0.0)
    assert d0.blocked(0.0) == frozenset({"a"})


def test_fraction_tolerates_float_rounding() -> None:
    # 0.57 × 100 = 56.99999999999999 in floating point, yet 57 of 100 hosts may be ejected
    d, _ = make(hosts=100, max_ejection_fraction=0.57)
    for i in range(58):
        fail(d, f"w{i}", 0.0)
    assert d.ejections == 57
    assert d.refused_by_cap == 1


def test_hosts_is_settable_and_seen_workers_count_towards_the_fleet() -> None:
    d, _ = make(hosts=0)
    for i in range(20):
        d.record(f"w{i}", True, 0.0)  # 20 workers seen
    for i in range(3):
        fail(d, f"w{i}", 0.0)
    assert d.ejections == 2  # 10 % of the 20 seen
    d.hosts = 40
    fail(d, "w2", 0.0)
    fail(d, "w3", 0.0)
    assert d.ejections == 4


# -- stragglers, forget, version ----------------------------------------------------------------


def test_stragglers_neither_extend_nor_reset_an_ejection() -> None:
    d, events = make()
    fail(d, "w", 0.0)
    fail(d, "w", 10.0, times=20)  # failures of attempts sent before the ejection
    d.record("w", True, 11.0)
    assert d.ejected_until("w") == 30.0
    assert d.ejections == 1
    assert d.is_ejected("w", 29.0)
    assert not d.is_ejected("w", 30.0)
    # and they did not count towards the next ejection
    fail(d, "w", 31.0, times=4)
    assert not d.is_ejected("w", 31.0)
    assert events == [("w", "ejected", 0.0), ("w", "returned", 30.0)]


def test_version_bumps_only_when_the_blocked_set_changes() -> None:
    d, _ = make()
    v0 = d.version
    fail(d, "w", 0.0, times=4)
    d.record("x", True, 0.0)
    assert d.version == v0
    d.record("w", False, 0.0)
    v1 = d.version
    assert v1 > v0
    blocked = d.blocked(1.0)
    assert d.blocked(2.0) is blocked  # cached
    fail(d, "w", 5.0)  # stragglers
    assert d.version == v1
    d.blocked(30.0)
    v2 = d.version
    assert v2 > v1
    assert d.blocked(31.0) == frozenset()
    assert d.version == v2


def test_returned_events_carry_expiry_times_in_order() -> None:
    d, events = make(hosts=10, max_ejection_fraction=1.0)
    fail(d, "b", 5.0)  # until 35
    fail(d, "a", 0.0)  # until 30
    fail(d, "c", 20.0)  # until 50
    assert d.next_change_at == 30.0
    d.blocked(100.0)  # noticed late
    assert events[3:] == [("a", "returned", 30.0), ("b", "returned", 35.0), ("c", "returned", 50.0)]
    assert d.next_change_at == math.inf


def test_next_change_at_tracks_the_earliest_expiry() -> None:
    d, _ = make(hosts=10, max_ejection_fraction=1.0)
    assert d.next_change_at == math.inf
    fail(d, "a", 0.0)
    fail(d, "b", 10.0)
    assert d.next_change_at == 30.0
    d.blocked(30.0)
    assert d.next_change_at == 40.0


def test_forget_drops_an_ejection_silently() -> None:
    d, events = make()
    fail(d, "w", 0.0)
    v = d.version
    d.forget("w")
    assert d.blocked(1.0) == frozenset()
    assert d.version == v + 1
    assert d.next_change_at == math.inf
    assert events == [("w", "ejected", 0.0)]
    fail(d, "w", 2.0)  # starts afresh: base ejection time again
    assert d.ejected_until("w") == 32.0
    d.forget("nobody")


def test_dispatched_is_a_no_op() -> None:
    d, _ = make()
    v = d.version
    d.dispatched("w", 0.0)
    assert d.version == v
    assert d.blocked(0.0) == frozenset()


# -- property -----------------------------------------------------------------------------------


@SETTINGS
@given(
    outcomes=st.lists(
        st.tuples(st.integers(0, 9), st.booleans(), st.floats(0.0, 5.0)), max_size=300
    ),
    fraction=st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0]),
)
def test_cap_and_durations_hold_under_any_outcome_sequence(
    outcomes: list[tuple[int, bool, float]], fraction: float
) -> None:
    d, events = make(hosts=10, max_ejection_fraction=fraction, consecutive_errors=3)
    t = 0.0
    allowed = max(1, math.floor(fraction * 10 + 1e-9))
    for worker, ok, dt in outcomes:
        t += dt
        d.record(f"w{worker}", ok, t)
        blocked = d.blocked(t)
        assert len(blocked) <= allowed
        for w in blocked:
            until = d.ejected_until(w)
            assert until is not None and t < until
    ejected_at: dict[str, float] = {}
    times = [at for _, _, at in events]
    assert times == sorted(times)
    for w, event, at in events:
        if event == "ejected":
            assert w not in ejected_at
            ejected_at[w] = at
        else:
            k = (at - ejected_at.pop(w)) / 30.0
            assert round(k) == pytest.approx(k, abs=1e-9)
            assert 1 <= round(k) <= 10
