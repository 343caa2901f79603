"""Tests for ``labkit.core.alerts``: rule state machine, dedup, silences, grouping, escalation,
and the SRE workbook's multi-window burn-rate alerts, all on hand-built metric sequences."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.core.alerts import (
    METRICS,
    OPS,
    AlertConfig,
    AlertManager,
    BurnRateRule,
    Escalation,
    Notification,
    Sample,
    Silence,
    ThresholdRule,
)
from labkit.core.slo import SloConfig

SETTINGS = settings(derandomize=True, deadline=None, max_examples=150)
NAN = math.nan
SLO = SloConfig(latency_ms=500, target=0.999)
RATE = 1000  # finished requests per second in the burn-rate scenarios

HIGH_P99 = ThresholdRule("HighP99", "latency_p99_ms", ">", 500, severity="page")
HIGH_ERRORS = ThresholdRule("HighErrors", "error_rate", ">", 0.05, severity="page")
WORKER_DOWN = ThresholdRule("WorkerDown", "workers_down", ">=", 1, severity="ticket")


def manager(*rules: ThresholdRule | BurnRateRule, **config: Any) -> AlertManager:
    return AlertManager(AlertConfig(rules=rules, **config), SLO)


def feed(
    am: AlertManager, points: Iterable[tuple[float, float]], metric: str = "latency_p99_ms"
) -> list[Notification]:
    """Evaluate ``metric = value`` at each ``(t, value)``; return everything sent."""
    sent: list[Notification] = []
    for t, value in points:
        sent += am.evaluate(t, Sample({metric: value}))
    return sent


def seconds(start: int, values: Sequence[float]) -> list[tuple[float, float]]:
    """One evaluation per second from ``start``."""
    return [(float(start + i), v) for i, v in enumerate(values)]


def kinds(sent: Iterable[Notification]) -> list[tuple[float, str, tuple[str, ...]]]:
    return [(n.at, n.kind, n.alerts) for n in sent]


# -- validation ---------------------------------------------------------------------------------


def test_unknown_metric_names_it_and_lists_allowed() -> None:
    with pytest.raises(ValueError, match="latency_p999_ms") as err:
        ThresholdRule("X", "latency_p999_ms", ">", 1)
    for name in METRICS:
        assert name in str(err.value)


def test_unknown_op_names_it_and_lists_allowed() -> None:
    with pytest.raises(ValueError, match="=>") as err:
        ThresholdRule("X", "in_flight", "=>", 1)
    for op in OPS:
        assert op in str(err.value)


def test_metric_table_has_the_documented_names() -> None:
    expected = {
        "latency_p50_ms",
        "latency_p99_ms",
        "latency_mean_ms",
        "error_rate",
        "throughput_rps",
        "offered_rps",
        "timeouts_rps",
        "workers_down",
        "workers_suspect",
        "workers_unhealthy",
        "workers_ejected",
        "in_flight",
        "burn_rate",
    }
    assert expected <= set(METRICS)
    assert all(isinstance(d, str) and d for d in METRICS.values())


@pytest.mark.parametrize(
    "build",
    [
        lambda: ThresholdRule("X", "in_flight", ">", NAN),
        lambda: ThresholdRule("X", "in_flight", ">", 1, for_s=-1),
        lambda: ThresholdRule("", "in_flight", ">", 1),
        lambda: ThresholdRule("X", "in_flight", ">", 1, labels=(("name", "Y"),)),
        lambda: ThresholdRule("X", "in_flight", ">", 1, labels=(("team", "a"), ("team", "b"))),
        lambda: BurnRateRule("B", long_window_s=300, short_window_s=300, factor=14.4),
        lambda: BurnRateRule("B", long_window_s=300, short_window_s=3600, factor=14.4),
        lambda: BurnRateRule("B", long_window_s=3600, short_window_s=0, factor=14.4),
        lambda: BurnRateRule("B", long_window_s=3600, short_window_s=300, factor=0),
        lambda: Silence((), 0, 10),
        lambda: Silence((("name", "X"),), 10, 0),
        lambda: Escalation("page", -1, "critical"),
        lambda: Escalation("page", 10, "page"),
        lambda: AlertConfig(rules=(), evaluation_interval_s=0),
        lambda: AlertConfig(rules=(), group_wait_s=-1),
        lambda: AlertConfig(
            rules=(), escalations=(Escalation("page", 1, "a"), Escalation("page", 2, "b"))
        ),
        lambda: Sample({}, events=10, bad_events=11),
        lambda: Sample({}, events=-1),
    ],
)
def test_bad_configs_are_rejected(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        build()


def test_short_window_must_be_shorter() -> None:
    with pytest.raises(ValueError, match="short_window_s"):
        BurnRateRule("B", long_window_s=300, short_window_s=3600, factor=14.4)


def test_duplicate_rule_names_are_named() -> None:
    with pytest.raises(ValueError, match="HighP99"):
        AlertConfig(rules=(HIGH_P99, ThresholdRule("HighP99", "error_rate", ">", 0.1)))


def test_burn_rate_rule_needs_an_slo() -> None:
    config = AlertConfig(rules=(BurnRateRule("Fast", 3600, 300, 14.4),))
    with pytest.raises(ValueError, match="Fast"):
        AlertManager(config, None)
    AlertManager(AlertConfig(rules=(HIGH_P99,)), None)  # threshold rules alone need none


def test_config_accepts_lists_and_dicts_from_a_parser() -> None:
    rule = ThresholdRule("X", "in_flight", ">", 1, labels={"team": "infra"})  # type: ignore[arg-type]
    config = AlertConfig(
        rules=[rule],  # type: ignore[arg-type]
        silences=[Silence({"name": "X"}, 0, 1)],  # type: ignore[list-item, arg-type]
        group_by=["team"],  # type: ignore[arg-type]
    )
    assert rule.labels == (("team", "infra"),)
    assert config.rules == (rule,)
    assert config.silences[0].matchers == (("name", "X"),)
    assert config.group_by == ("team",)
    hash(config)


def test_time_must_not_go_backwards() -> None:
    am = manager(HIGH_P99)
    am.evaluate(10.0, Sample({}))
    am.evaluate(10.0, Sample({}))  # same instant is fine
    with pytest.raises(ValueError, match="backwards"):
        am.evaluate(9.0, Sample({}))


# -- the state machine --------------------------------------------------------------------------


def test_for_s_fires_exactly_for_s_after_the_first_true_evaluation() -> None:
    am = manager(ThresholdRule("HighP99", "latency_p99_ms", ">", 500, for_s=5))
    sent = feed(am, seconds(0, [100] * 10 + [600] * 5))  # true at 10..14: pending
    assert sent == []
    assert am.active() == []
    sent = feed(am, [(15.0, 600)])
    assert kinds(sent) == [(15.0, "firing", ("HighP99",))]
    assert am.active(15.0) == ["HighP99"]
    (row,) = am.timeline()
    assert row["pending_since"] == 10.0
    assert row["fired_at"] == 15.0
    assert math.isnan(row["resolved_at"])


def test_pending_is_cancelled_when_the_condition_drops() -> None:
    am = manager(ThresholdRule("HighP99", "latency_p99_ms", ">", 500, for_s=5))
    # true 10..13, false at 14: back to inactive; true again from 15 restarts the clock
    sent = feed(am, seconds(10, [600, 600, 600, 600, 100] + [600] * 5))  # t = 10..19
    assert sent == []
    assert am.timeline() == []
    sent = feed(am, [(20.0, 600)])
    assert kinds(sent) == [(20.0, "firing", ("HighP99",))]
    assert am.timeline()[0]["pending_since"] == 15.0


def test_for_s_uses_now_not_evaluation_counts() -> None:
    am = manager(ThresholdRule("HighP99", "latency_p99_ms", ">", 500, for_s=5))
    assert feed(am, [(0.0, 600), (2.5, 600), (4.9, 600)]) == []
    assert kinds(feed(am, [(7.0, 600)])) == [(7.0, "firing", ("HighP99",))]


def test_for_s_tolerates_an_accumulated_float_clock() -> None:
    am = manager(ThresholdRule("HighP99", "latency_p99_ms", ">", 500, for_s=0.5))
    t, fired = 0.0, []
    for _ in range(10):
        t += 0.1  # 0.1 steps: t reaches 0.6 only approximately
        fired += am.evaluate(t, Sample({"latency_p99_ms": 600}))
    assert len(fired) == 1
    assert fired[0].at == pytest.approx(0.6)  # 0.5 s after the first true evaluation at 0.1


def test_for_0_fires_at_the_first_true_evaluation_and_resolves_at_the_first_false() -> None:
    am = manager(HIGH_P99)
    sent = feed(am, seconds(0, [100, 600, 800, 700, 400, 100]))
    assert kinds(sent) == [(1.0, "firing", ("HighP99",)), (4.0, "resolved", ("HighP99",))]
    firing, resolved = sent
    assert (firing.severity, firing.value, firing.group) == ("page", 600, "name=HighP99")
    assert resolved.value == 700  # the last value seen while firing
    (row,) = am.timeline()
    assert row == {
        "name": "HighP99",
        "severity": "page",
        "group": "name=HighP99",
        "fired_at": 1.0,
        "resolved_at": 4.0,
        "value": 600,
        "peak": 800,
        "escalated": False,
        "escalated_at": row["escalated_at"],
        "silenced": False,
        "duplicate": False,
        "notified": True,
        "pending_since": 1.0,
    }
    assert math.isnan(row["escalated_at"])
    assert am.active() == []


def test_peak_is_the_minimum_for_below_threshold_rules() -> None:
    am = manager(ThresholdRule("LowThroughput", "throughput_rps", "<", 50))
    feed(am, seconds(0, [100, 40, 10, 30, 60]), metric="throughput_rps")
    (row,) = am.timeline()
    assert (row["value"], row["peak"], row["resolved_at"]) == (40, 10, 4.0)


@pytest.mark.parametrize(
    ("op", "values", "fires_at"),
    [
        (">", [4, 5, 6], 2.0),
        (">=", [4, 5, 6], 1.0),
        ("<", [6, 5, 4], 2.0),
        ("<=", [6, 5, 4], 1.0),
        ("==", [4, 5, 6], 1.0),
        ("!=", [5, 5, 6], 2.0),
    ],
)
def test_each_op(op: str, values: list[float], fires_at: float) -> None:
    am = manager(ThresholdRule("R", "in_flight", op, 5))
    sent = feed(am, seconds(0, values), metric="in_flight")
    assert sent[0].at == fires_at and sent[0].kind == "firing"


@pytest.mark.parametrize("op", OPS)
def test_nan_never_holds(op: str) -> None:
    am = manager(ThresholdRule("R", "in_flight", op, 5))
    assert feed(am, seconds(0, [NAN, NAN]), metric="in_flight") == []
    assert am.evaluate(2.0, Sample({})) == []  # missing metric: no data, no alert


def test_nan_and_missing_values_resolve_a_firing_alert() -> None:
    am = manager(HIGH_P99, dedup_window_s=0)  # no dedup, so every firing is notified
    sent = feed(am, seconds(0, [600, 900, NAN, 600]))
    assert kinds(sent) == [
        (0.0, "firing", ("HighP99",)),
        (2.0, "resolved", ("HighP99",)),
        (3.0, "firing", ("HighP99",)),
    ]
    assert kinds(am.evaluate(4.0, Sample({"error_rate": 0.5}))) == [(4.0, "resolved", ("HighP99",))]
    rows = am.timeline()
    assert [(r["fired_at"], r["resolved_at"], r["peak"]) for r in rows] == [
        (0.0, 2.0, 900),
        (3.0, 4.0, 600),
    ]


def test_send_resolved_false() -> None:
    am = manager(HIGH_P99, send_resolved=False)
    assert kinds(feed(am, seconds(0, [600, 100]))) == [(0.0, "firing", ("HighP99",))]


# -- dedup --------------------------------------------------------------------------------------


def fire_once(am: AlertManager, at: int, value: float) -> list[Notification]:
    """True (``value``) at ``at``, false one second later."""
    return feed(am, [(float(at), value), (float(at + 1), 100)])


def test_refire_within_window_and_tolerance_is_a_duplicate() -> None:
    am = manager(HIGH_P99)
    assert [n.kind for n in fire_once(am, 10, 600)] == ["firing", "resolved"]
    assert fire_once(am, 100, 640) == []  # 90 s later, |640-600| = 40 <= 60: no firing, no resolved
    rows = am.timeline()
    assert [r["duplicate"] for r in rows] == [False, True]
    assert [r["notified"] for r in rows] == [True, False]
    assert rows[1]["resolved_at"] == 101.0
    assert am.counts()["deduplicated"] == 1


def test_refire_outside_tolerance_is_new() -> None:
    am = manager(HIGH_P99)
    fire_once(am, 10, 600)
    assert [n.kind for n in fire_once(am, 100, 661)] == ["firing", "resolved"]  # 61 > 60
    # the new firing is now the reference: |600-661| = 61 <= 66.1, so this one is a duplicate
    assert fire_once(am, 200, 600) == []
    assert [r["duplicate"] for r in am.timeline()] == [False, False, True]


def test_dedup_window_is_inclusive_and_measured_between_firings() -> None:
    am = manager(HIGH_P99)
    fire_once(am, 10, 600)
    assert fire_once(am, 310, 600) == []  # exactly 300 s after the previous firing: duplicate
    am = manager(HIGH_P99)
    fire_once(am, 10, 600)
    assert [n.kind for n in fire_once(am, 311, 600)] == ["firing", "resolved"]  # 301 s: new


def test_dedup_reference_is_the_last_notified_firing() -> None:
    am = manager(HIGH_P99)
    fire_once(am, 10, 600)  # notified: the reference
    assert fire_once(am, 100, 650) == []  # duplicate of 600
    assert fire_once(am, 250, 655) == []  # still compared with 600 (55 <= 60), not with 650
    # 301 s after the reference, though only 61 s after the last duplicate: new
    assert [n.kind for n in fire_once(am, 311, 600)] == ["firing", "resolved"]
    assert [r["duplicate"] for r in am.timeline()] == [False, True, True, False]


def test_tolerance_is_relative_to_the_reference_value() -> None:
    am = manager(HIGH_P99, dedup_tolerance=0.5)
    fire_once(am, 10, 1000)
    assert fire_once(am, 20, 1500) == []  # +50 %
    assert [n.kind for n in fire_once(am, 30, 1501)] == ["firing", "resolved"]


def test_a_silenced_firing_is_no_dedup_reference() -> None:
    silence = Silence((("name", "HighP99"),), 0, 50)
    am = manager(HIGH_P99, silences=(silence,))
    assert fire_once(am, 10, 600) == []  # swallowed by the silence
    assert [n.kind for n in fire_once(am, 60, 600)] == ["firing", "resolved"]


# -- silences -----------------------------------------------------------------------------------

WORKER_SILENCE = Silence((("name", "WorkerDown"),), from_s=0, to_s=30)


def test_silenced_firing_is_notified_when_the_silence_ends() -> None:
    am = manager(WORKER_DOWN, silences=(WORKER_SILENCE,))
    sent = feed(am, seconds(5, [1] * 36 + [0]), metric="workers_down")  # 1 on 5..40, 0 at 41
    assert kinds(sent) == [(30.0, "firing", ("WorkerDown",)), (41.0, "resolved", ("WorkerDown",))]
    (row,) = am.timeline()
    assert (row["fired_at"], row["silenced"], row["notified"]) == (5.0, True, True)


def test_resolved_inside_the_silence_sends_nothing() -> None:
    am = manager(WORKER_DOWN, silences=(WORKER_SILENCE,))
    assert feed(am, seconds(5, [1] * 16 + [0] * 20), metric="workers_down") == []
    (row,) = am.timeline()
    assert (row["resolved_at"], row["silenced"], row["notified"]) == (21.0, True, False)
    assert am.counts()["silenced"] == 1


def test_silence_interval_is_half_open() -> None:
    silence = Silence((("name", "WorkerDown"),), from_s=10, to_s=20)
    am = manager(WORKER_DOWN, silences=(silence,))
    assert feed(am, [(10.0, 1), (19.999, 1)], metric="workers_down") == []
    assert kinds(feed(am, [(20.0, 1)], metric="workers_down")) == [
        (20.0, "firing", ("WorkerDown",))
    ]
    am = manager(WORKER_DOWN, silences=(silence,))
    assert len(feed(am, [(9.0, 1)], metric="workers_down")) == 1  # before it starts
    assert not am.timeline()[0]["silenced"]


def test_silence_matchers_must_all_match() -> None:
    tagged = ThresholdRule(
        "WorkerDown", "workers_down", ">=", 1, severity="ticket", labels=(("team", "infra"),)
    )
    by_severity = Silence((("severity", "ticket"),), 0, 100)
    both = Silence((("severity", "ticket"), ("team", "infra")), 0, 100)
    mismatch = Silence((("severity", "ticket"), ("team", "web")), 0, 100)
    for silence, silenced in [(by_severity, True), (both, True), (mismatch, False)]:
        am = manager(tagged, silences=(silence,))
        assert (feed(am, [(1.0, 1)], metric="workers_down") == []) is silenced


def test_a_notified_alert_is_resolved_even_if_a_silence_started_since() -> None:
    am = manager(WORKER_DOWN, silences=(Silence((("name", "WorkerDown"),), 10, 100),))
    sent = feed(am, seconds(5, [1] * 10 + [0]), metric="workers_down")
    assert kinds(sent) == [(5.0, "firing", ("WorkerDown",)), (15.0, "resolved", ("WorkerDown",))]
    assert not am.timeline()[0]["silenced"]


# -- escalation ---------------------------------------------------------------------------------

PAGE_TO_CRITICAL = Escalation(severity="page", after_s=120, to="critical")


def test_escalates_exactly_after_s_after_firing_and_once() -> None:
    rule = ThresholdRule("HighP99", "latency_p99_ms", ">", 500, for_s=5, severity="page")
    am = manager(rule, escalations=(PAGE_TO_CRITICAL,))
    sent = feed(am, seconds(10, [600] * 300 + [100]))  # pending 10, fires 15, resolves 310
    assert kinds(sent) == [
        (15.0, "firing", ("HighP99",)),
        (135.0, "escalated", ("HighP99",)),  # 120 s after firing, not after pending
        (310.0, "resolved", ("HighP99",)),
    ]
    assert sent[1].severity == "critical"
    (row,) = am.timeline()
    assert (row["escalated"], row["escalated_at"], row["severity"]) == (True, 135.0, "page")
    assert am.counts()["escalated"] == 1


def test_no_escalation_when_resolved_before_after_s_or_other_severity() -> None:
    am = manager(HIGH_P99, WORKER_DOWN, escalations=(PAGE_TO_CRITICAL,))
    sent: list[Notification] = []
    for t in range(0, 300):
        p99 = 600 if t < 120 else 100  # resolves at 120, one evaluation short of escalation
        sent += am.evaluate(float(t), Sample({"latency_p99_ms": p99, "workers_down": 1}))
    assert [n.kind for n in sent] == ["firing", "firing", "resolved"]
    assert not any(r["escalated"] for r in am.timeline())


def test_escalation_under_a_silence_waits_for_the_silence_to_end() -> None:
    silence = Silence((("name", "HighP99"),), 100, 200)
    am = manager(HIGH_P99, escalations=(PAGE_TO_CRITICAL,), silences=(silence,))
    sent = feed(am, seconds(0, [600] * 250))
    assert kinds(sent) == [(0.0, "firing", ("HighP99",)), (200.0, "escalated", ("HighP99",))]
    assert am.timeline()[0]["escalated_at"] == 120.0


def test_duplicates_escalate_silently() -> None:
    am = manager(HIGH_P99, escalations=(PAGE_TO_CRITICAL,))
    fire_once(am, 0, 600)
    sent = feed(am, seconds(10, [600] * 200))
    assert sent == []
    row = am.timeline()[1]
    assert row["duplicate"] and row["escalated"] and row["escalated_at"] == 130.0


# -- grouping -----------------------------------------------------------------------------------


def both_true(am: AlertManager, t: float) -> list[Notification]:
    return am.evaluate(t, Sample({"latency_p99_ms": 600, "error_rate": 0.2}))


def test_group_by_name_sends_one_notification_per_rule() -> None:
    am = manager(HIGH_P99, HIGH_ERRORS)
    sent = both_true(am, 10.0)
    assert [(n.group, n.alerts) for n in sent] == [
        ("name=HighP99", ("HighP99",)),
        ("name=HighErrors", ("HighErrors",)),
    ]


def test_group_by_severity_batches_rules_of_one_severity() -> None:
    am = manager(HIGH_P99, WORKER_DOWN, HIGH_ERRORS, group_by=("severity",))
    sent = am.evaluate(10.0, Sample({"latency_p99_ms": 600, "error_rate": 0.2, "workers_down": 2}))
    assert [(n.group, n.alerts, n.severity) for n in sent] == [
        ("severity=page", ("HighP99", "HighErrors"), "page"),
        ("severity=ticket", ("WorkerDown",), "ticket"),
    ]
    resolved = am.evaluate(11.0, Sample({"workers_down": 2}))
    assert [(n.kind, n.group, n.alerts) for n in resolved] == [
        ("resolved", "severity=page", ("HighP99", "HighErrors"))
    ]
    assert am.timeline()[0]["group"] == "severity=page"


def test_one_group_for_all_takes_the_most_severe_severity() -> None:
    am = manager(WORKER_DOWN, HIGH_P99, group_by=())
    (n,) = am.evaluate(0.0, Sample({"latency_p99_ms": 700, "workers_down": 1}))
    assert (n.group, n.alerts, n.severity, n.value) == ("", ("WorkerDown", "HighP99"), "page", 700)


def test_group_by_custom_labels_and_all_labels() -> None:
    a = ThresholdRule("A", "in_flight", ">", 1, labels=(("team", "x"),))
    b = ThresholdRule("B", "in_flight", ">", 1, labels=(("team", "x"),))
    c = ThresholdRule("C", "in_flight", ">", 1)
    am = manager(a, b, c, group_by=("team",))
    sent = am.evaluate(0.0, Sample({"in_flight": 5}))
    assert [(n.group, n.alerts) for n in sent] == [("team=x", ("A", "B")), ("team=", ("C",))]
    am = manager(a, group_by=("...",))
    (n,) = am.evaluate(0.0, Sample({"in_flight": 5}))
    assert n.group == "name=A,severity=warning,team=x"


def test_group_wait_collects_then_group_interval_spaces() -> None:
    timeouts = ThresholdRule("Timeouts", "timeouts_rps", ">", 1, severity="page")
    am = manager(
        HIGH_P99,
        HIGH_ERRORS,
        timeouts,
        group_by=("severity",),
        group_wait_s=5,
        group_interval_s=10,
    )
    sent: list[Notification] = []
    for t in range(0, 20):
        values = {"latency_p99_ms": 600.0}
        if t >= 3:
            values["error_rate"] = 0.2
        if t >= 8:
            values["timeouts_rps"] = 3.0
        sent += am.evaluate(float(t), Sample(values))
    assert kinds(sent) == [
        (5.0, "firing", ("HighP99", "HighErrors")),  # first alert at 0 + group_wait 5
        (15.0, "firing", ("Timeouts",)),  # previous group notification at 5 + group_interval 10
    ]


def test_alert_resolved_during_group_wait_sends_nothing_and_group_is_forgotten() -> None:
    am = manager(HIGH_P99, group_wait_s=5)
    assert feed(am, seconds(0, [600, 600, 600, 100])) == []
    assert am.timeline()[0]["notified"] is False
    # the group was forgotten when its last alert resolved: a new firing waits group_wait again
    assert kinds(feed(am, seconds(10, [900] * 6))) == [(15.0, "firing", ("HighP99",))]


# -- burn-rate windows (SRE workbook, ch. 5) ----------------------------------------------------

FAST = BurnRateRule("ErrorBudgetFastBurn", long_window_s=3600, short_window_s=300, factor=14.4)
SLOW = BurnRateRule("ErrorBudgetSlowBurn", long_window_s=21600, short_window_s=1800, factor=6)


def run(
    am: AlertManager, first: int, last: int, bad: int, step: int = 1, events: int = RATE
) -> list[Notification]:
    """Evaluate at ``first, first+step, ..., last`` with ``events`` finished, ``bad`` bad each."""
    sent: list[Notification] = []
    for t in range(first, last + 1, step):
        sent += am.evaluate(float(t), Sample({}, events=events, bad_events=bad))
    return sent


def test_fast_burn_fires_when_the_long_window_has_enough_bad_events() -> None:
    # 1 h of clean traffic, then 1.5 % bad (burn rate 15) from T: each sample at t covers
    # (t-1, t], so at T+k both windows hold k bad seconds.
    # short: 15·k/300 > 14.4 <=> k > 288;  long: 15·k/3600 > 14.4 <=> k > 3456.
    T = 3600
    am = manager(FAST)
    assert run(am, 1, T, bad=0) == []
    short_crossed = None
    for t in range(T + 1, T + 3457):
        assert am.evaluate(float(t), Sample({}, events=RATE, bad_events=15)) == []
        if short_crossed is None and am.window_burn_rate(300) > 14.4:
            short_crossed = t
    assert short_crossed == T + 289  # the short window crosses within five minutes ...
    assert am.window_burn_rate(3600) == pytest.approx(15 * 3456 / 3600)  # ... long sits at 14.4
    (n,) = am.evaluate(float(T + 3457), Sample({}, events=RATE, bad_events=15))
    assert (n.at, n.kind, n.severity) == (T + 3457, "firing", "page")
    assert n.value == pytest.approx(15 * 3457 / 3600)  # the long-window burn rate
    assert len(am._windows[3600.0]) == 3600  # history stays bounded by the window
    assert len(am._windows[300.0]) == 300


def test_fast_burn_resolves_when_the_short_window_recovers() -> None:
    # after firing at S = T+3457 errors stop; at S+j the short window holds 300-j bad seconds:
    # 15·(300-j)/300 > 14.4 <=> j < 12, so it resolves at S+12 ...
    T = 3600
    S = T + 3457
    am = manager(FAST)
    run(am, 1, T, bad=0)
    assert [n.at for n in run(am, T + 1, S, bad=15)] == [S]
    assert run(am, S + 1, S + 11, bad=0) == []
    (n,) = run(am, S + 12, S + 12, bad=0)
    assert (n.at, n.kind) == (S + 12, "resolved")
    # ... while the long window alone would still say "burning": 15·3457/3600 > 14.4 until
    # S+144, when only 3456 bad seconds remain in it.
    assert am.window_burn_rate(3600) == pytest.approx(15 * 3457 / 3600)
    assert am.window_burn_rate(3600) > 14.4
    run(am, S + 13, S + 144, bad=0)
    assert am.window_burn_rate(3600) < 14.4
    (row,) = am.timeline()
    assert (row["fired_at"], row["resolved_at"]) == (S, S + 12)
    assert row["peak"] == pytest.approx(15 * 3457 / 3600)


def test_short_spike_trips_the_short_window_only() -> None:
    # 60 s at 10 % bad: short burn 100·60/300/1000/0.001 = 20 > 14.4, long only 6000/3.6e6/0.001
    T = 3600
    am = manager(FAST)
    run(am, 1, T, bad=0)
    assert run(am, T + 1, T + 60, bad=100) == []
    assert am.window_burn_rate(300) == pytest.approx(20.0)
    assert am.window_burn_rate(3600) == pytest.approx(6000 / 3_600_000 / 0.001)
    assert run(am, T + 61, T + 600, bad=0) == []
    assert am.timeline() == []


def test_slow_burn_6x_over_6h_and_30m() -> None:
    # burn 15 from T after 6 h clean: short 15·k/1800 > 6 <=> k > 720; long 15·k/21600 > 6
    # <=> k > 8640, so it fires at T+8641.
    T = 21600
    am = manager(SLOW)
    run(am, 1, T, bad=0)
    assert run(am, T + 1, T + 720, bad=15) == []
    assert am.window_burn_rate(1800) == pytest.approx(6.0)
    run(am, T + 721, T + 721, bad=15)
    assert am.window_burn_rate(1800) > 6
    assert run(am, T + 722, T + 8640, bad=15) == []
    sent = run(am, T + 8641, T + 8641, bad=15)
    assert kinds(sent) == [(T + 8641, "firing", ("ErrorBudgetSlowBurn",))]


def test_both_workbook_alerts_together() -> None:
    am = manager(FAST, SLOW)
    run(am, 1, 21600, bad=0)
    sent = run(am, 21601, 21600 + 8641, bad=15)
    assert [(n.at - 21600, n.alerts) for n in sent] == [
        (3457, ("ErrorBudgetFastBurn",)),
        (8641, ("ErrorBudgetSlowBurn",)),
    ]


def test_coarser_evaluations_count_samples_by_time() -> None:
    # every 10 s, 10 000 events and 150 bad per sample after T: at T+10k the long window holds k
    # bad samples of 360: 15·k/360 > 14.4 <=> k > 345.6, so it fires at T+3460
    T = 3600
    am = manager(FAST, evaluation_interval_s=10)
    run(am, 10, T, bad=0, step=10, events=10 * RATE)
    sent = run(am, T + 10, T + 3460, bad=150, step=10, events=10 * RATE)
    assert [n.at for n in sent] == [T + 3460]


def test_windows_use_the_history_that_exists() -> None:
    # bleeding from the first second: both windows hold only bad-fraction-1.5 % history, burn 15
    am = manager(FAST)
    assert [n.at for n in run(am, 1, 5, bad=15)] == [1.0]


def test_no_traffic_means_no_burn() -> None:
    am = manager(FAST)
    assert run(am, 1, 100, bad=0, events=0) == []
    assert am.window_burn_rate(3600) == 0.0
    with pytest.raises(KeyError):
        am.window_burn_rate(60)


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.25, 0.5, 1.0, 7.0, 60.0]),
            st.integers(0, 50),
            st.integers(0, 50),
        ),
        min_size=1,
        max_size=120,
    )
)
def test_window_sums_match_brute_force(steps: list[tuple[float, int, int]]) -> None:
    am = manager(BurnRateRule("B", long_window_s=120, short_window_s=30, factor=1))
    history: list[tuple[float, int, int]] = []
    t = 0.0
    for dt, good, bad in steps:
        t += dt
        am.evaluate(t, Sample({}, events=good + bad, bad_events=bad))
        history.append((t, good + bad, bad))
        for window in (120.0, 30.0):
            inside = [(e, b) for ts, e, b in history if ts > t - window + 1e-9]
            assert am.window_burn_rate(window) == SLO.burn_rate(
                sum(b for _, b in inside), sum(e for e, _ in inside)
            )
            assert len(am._windows[window]) <= len(inside)


# -- outputs and properties ---------------------------------------------------------------------


def test_counts_are_json_ready() -> None:
    am = manager(HIGH_P99, WORKER_DOWN, escalations=(PAGE_TO_CRITICAL,))
    feed(am, seconds(0, [600] * 130 + [100]))
    fire_once(am, 200, 610)  # duplicate
    counts = am.counts()
    assert counts == {
        "fired": 2,
        "resolved": 2,
        "escalated": 1,
        "silenced": 0,
        "deduplicated": 1,
        "notifications": 3,
        "by_rule": {"HighP99": 2, "WorkerDown": 0},
        "by_severity": {"page": 2, "ticket": 0},
    }
    json.dumps(counts)


def test_finish_leaves_firing_rows_open() -> None:
    am = manager(HIGH_P99)
    feed(am, seconds(0, [600, 600]))
    am.finish(2.0)
    (row,) = am.timeline()
    assert math.isnan(row["resolved_at"])
    assert am.counts()["resolved"] == 0
    assert am.active() == ["HighP99"]


def oracle(points: list[tuple[float, float]], for_s: float) -> list[tuple[float, float, float]]:
    """(pending_since, fired_at, resolved_at) of ``p99 > 500`` by the textbook definition."""
    out: list[tuple[float, float, float]] = []
    start: float | None = None
    fired: float | None = None
    for t, v in points:
        if v > 500:  # False for NaN
            start = t if start is None else start
            if fired is None and t - start >= for_s:
                fired = t
        else:
            if fired is not None:
                out.append((start, fired, t))
            start = fired = None
    if fired is not None:
        out.append((start, fired, NAN))
    return out


@SETTINGS
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from([0.5, 1.0, 2.0, 3.0]), st.sampled_from([NAN, 400.0, 600.0, 640.0])
        ),
        min_size=1,
        max_size=80,
    ),
    for_s=st.sampled_from([0.0, 1.0, 2.5, 5.0]),
    silence=st.tuples(st.integers(0, 100), st.integers(0, 60)),
    group_wait=st.sampled_from([0.0, 2.0]),
    dedup_window=st.sampled_from([0.0, 30.0, 300.0]),
)
def test_state_machine_matches_the_definition_and_notifications_are_consistent(
    steps: list[tuple[float, float]],
    for_s: float,
    silence: tuple[int, int],
    group_wait: float,
    dedup_window: float,
) -> None:
    rule = ThresholdRule("HighP99", "latency_p99_ms", ">", 500, for_s=for_s, severity="page")
    am = manager(
        rule,
        silences=(Silence((("name", "HighP99"),), silence[0], silence[0] + silence[1]),),
        escalations=(Escalation("page", 10, "critical"),),
        group_wait_s=group_wait,
        dedup_window_s=dedup_window,
    )
    points: list[tuple[float, float]] = []
    t = 0.0
    for dt, v in steps:
        t += dt
        points.append((t, v))
    feed(am, points)
    rows = am.timeline()
    got = [(r["pending_since"], r["fired_at"], r["resolved_at"]) for r in rows]
    expected = oracle(points, for_s)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g[:2] == e[:2]
        assert g[2] == e[2] or (math.isnan(g[2]) and math.isnan(e[2]))

    sent = am.notifications
    assert [n.at for n in sent] == sorted(n.at for n in sent)
    for r in rows:
        fired_at, resolved_at = r["fired_at"], r["resolved_at"]
        assert r["pending_since"] <= fired_at
        assert math.isnan(resolved_at) or fired_at < resolved_at
        end = math.inf if math.isnan(resolved_at) else resolved_at
        mine = [n for n in sent if fired_at <= n.at <= end]
        firing = [n for n in mine if n.kind == "firing" and n.at < end]
        resolved = [n for n in mine if n.kind == "resolved" and n.at == end]
        escalated = [n for n in mine if n.kind == "escalated" and n.at < end]
        assert len(firing) == (1 if r["notified"] else 0)
        assert len(resolved) == (1 if r["notified"] else 0) or math.isnan(resolved_at)
        assert len(escalated) <= 1
        assert not (r["duplicate"] and (firing or resolved or escalated))
        if escalated:
            assert r["escalated"] and escalated[0].at >= r["escalated_at"]
    counts = am.counts()
    assert counts["fired"] == len(rows)
    assert counts["notifications"] == len(sent)
