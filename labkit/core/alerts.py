"""Alert rules and an alert manager, evaluated on a metric stream the driver supplies.

The model is Prometheus alerting rules feeding an Alertmanager, squeezed into one sans-I/O object.
Every ``evaluation_interval_s`` the driver calls ``AlertManager.evaluate(now, sample)`` with the
current metric values (``METRICS``) and the count of finished requests since the previous call
(and how many of them were bad per the SLO). The manager returns the notifications a human would
receive at ``now`` and keeps a timeline of every firing for the results tables.

Rules (Prometheus alerting-rule semantics)
------------------------------------------
- ``ThresholdRule``: ``metric op threshold``. A NaN or missing value makes the condition false
  ("no data, no alert"), so it also resolves a firing alert. ``NaN != x`` is false too.
- ``BurnRateRule``: the SRE workbook's multi-window burn-rate alert (ch. 5, "Alerting on SLOs"):
  fire while the burn rate over the long window *and* over the short window both exceed
  ``factor`` — e.g. 14.4x over 1 h and 5 min (2 % of a 30-day budget in an hour), or 6x over 6 h
  and 30 min (5 % in six hours). The long window makes the alert significant; the short one makes
  it reset within minutes once the bleeding stops. Burn rate is ``SloConfig.burn_rate`` of the
  events in the window. The sample at time ``t`` covers ``(t_previous, t]``, so a window of ``W``
  at ``now`` holds the samples with ``now - W < t <= now``. Until ``W`` seconds of history exist
  the window uses what exists, like ``rate()`` over a partly filled range: a lab that starts
  bleeding at t=0 alerts at once. The alert's value is the long-window burn rate (the left operand
  of ``and`` in the workbook's PromQL, which is what Prometheus reports). Window sums are running
  sums over a deque per distinct window length, so an evaluation is O(1) amortised and history
  older than the longest window is dropped.

Per rule the state machine is Prometheus's: *inactive* -> *pending* (condition true, ``for_s`` >
0; ``pending_since`` is the first true evaluation) -> *firing* once ``now - pending_since >=
for_s`` -> *resolved* at the first false evaluation -> *inactive*. A pending rule whose condition
turns false goes back to inactive without a trace. ``for_s = 0`` fires at the first true
evaluation. Only ``now`` is used, never a count of evaluations, so the driver need not space them
exactly. Durations are compared with a 1e-9 s tolerance so that a clock accumulated from 0.1 s
steps does not fire one evaluation late.

Notifications (Alertmanager-like, simplified and deterministic)
---------------------------------------------------------------
Each firing instance is one timeline row. Its *firing* notification is held back while any of
these hold, and sent at the first evaluation where none does (if it still fires then):

- **Dedup** (this lab's rule, not Alertmanager's ``repeat_interval``): a firing is a *duplicate*
  when it starts within ``dedup_window_s`` (inclusive) of the previous firing of the same rule
  that was notified, with a value within ``dedup_tolerance`` (relative, inclusive) of that
  firing's value. The reference is the last *notified* firing, deliberately, so a flapping alert
  still notifies at least once per window, a value creeping up by < 10 % per flap is still
  noticed, and a firing that a silence swallowed cannot make a later one a duplicate. A duplicate
  is recorded (``duplicate=True``) but sends nothing at all: no firing, no escalation, no resolved.
- **Silences**: an alert whose labels (``name``, ``severity`` and the rule's ``labels``) equal all
  of a silence's matchers while ``from_s <= now < to_s`` is silenced. If the silence ends while
  the alert fires, its firing notification goes out then. ``silenced=True`` on a row means a
  silence matched it at some evaluation while it fired and was not (yet) notified.
- **Grouping**: alerts are grouped by the values of the labels in ``group_by`` (key e.g.
  ``"name=HighP99"``, or ``"severity=page,name=X"``, in ``group_by`` order; ``"..."`` groups by
  all labels, ``()`` puts every alert in one group ``""``). A group exists while one of its alerts
  fires (silenced and duplicate ones included) and is forgotten when none does, as in
  Alertmanager. Its first firing notification waits until ``group_wait_s`` after the group came
  into existence (possibly through a silenced or duplicate alert, in which case a later alert may
  find the wait already over); later ones until ``group_interval_s`` after its previous firing
  notification.
  Everything that is due in one evaluation goes out as one notification listing the newly
  notified alerts (Alertmanager would re-list all firing alerts; we list only the new ones so
  each row is announced exactly once). With both waits 0 (the default) the alerts of one group
  that start firing in the same evaluation share one notification.

*Resolved* notifications are sent, if ``send_resolved``, for alerts whose firing notification was
sent — the notifier closes what it opened, even if a silence started in between (Alertmanager
would drop it) — and never for one whose firing was not notified. They go out at once (no
``group_interval``), one per group per evaluation, with the last value seen while firing.

*Escalation*: an alert whose rule severity has an ``Escalation`` and that still fires ``after_s``
after it fired is escalated once (``escalated``, ``escalated_at`` on its row; the row keeps the
rule's severity). The single ``"escalated"`` notification (severity ``to``) is sent when the alert
has been notified and is not silenced — at once, or later when its firing notification goes out or
its silence ends; never for duplicates or alerts that resolve before being notified. There is no
escalation chain: one escalation per instance.

A group notification's severity is the most severe rule severity among its alerts by
``SEVERITY_RANK`` (unknown severities rank lowest; ties go to rule order) and its value is that
alert's current value; only ``"escalated"`` notifications carry the escalated severity.
Within one evaluation notifications are ordered resolved, firing, escalated; within a kind, by the
rule order of the groups' first alerts.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from labkit.core.slo import SloConfig

METRICS: dict[str, str] = {
    "latency_p50_ms": "median latency of requests completed in the last window (NaN if none)",
    "latency_p99_ms": "p99 latency of requests completed in the last window (NaN if none)",
    "latency_mean_ms": "mean latency of requests completed in the last window (NaN if none)",
    "error_rate": "fraction of requests ended in the last evaluation window that did not complete",
    "throughput_rps": "requests completed per second over the last evaluation window",
    "offered_rps": "requests arriving per second over the last evaluation window",
    "timeouts_rps": "requests timed out per second over the last evaluation window",
    "workers_down": "workers the registry considers down",
    "workers_suspect": "workers the registry considers suspect",
    "workers_unhealthy": "workers down or suspect",
    "workers_ejected": "workers ejected by gateway outlier detection or behind an open breaker",
    "in_flight": "requests admitted and not yet ended",
    "burn_rate": "SLO burn rate over the last evaluation window",
}

OPS = (">", ">=", "<", "<=", "==", "!=")

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}

SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "ticket": 2, "page": 3, "critical": 4}
"""Order used to pick a group notification's severity; unknown severities rank below all."""

RESERVED_LABELS = ("name", "severity")

_EPS = 1e-9  # tolerance when comparing elapsed time with a duration

Labels = tuple[tuple[str, str], ...]


def _pairs(value: Mapping[Any, Any] | Iterable[Any], what: str) -> Labels:
    """Normalise a mapping or an iterable of pairs to a tuple of ``(str, str)`` pairs.

    The scenario parser may hand in a dict from YAML; the stored form is a tuple, so that rules
    stay hashable and their labels keep the order they were written in.
    """
    try:
        items = list(value.items()) if isinstance(value, Mapping) else list(value)
        pairs = tuple((str(k), str(v)) for k, v in items)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a mapping or (key, value) pairs, got {value!r}") from None
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{what} repeat a key: {keys}")
    return pairs


def _check_duration(value: float, what: str, *, positive: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{what} must be finite and {bound}, got {value!r}")


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} needs a non-empty name, got {name!r}")


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """Fire while ``metric op threshold`` has held for ``for_s`` seconds."""

    name: str
    metric: str
    op: str
    threshold: float
    for_s: float = 0.0
    severity: str = "warning"
    labels: Labels = ()

    def __post_init__(self) -> None:
        _check_name(self.name, "threshold rule")
        if self.metric not in METRICS:
            raise ValueError(
                f"rule {self.name!r}: unknown metric {self.metric!r}; allowed: {', '.join(METRICS)}"
            )
        if self.op not in OPS:
            raise ValueError(
                f"rule {self.name!r}: unknown op {self.op!r}; allowed: {', '.join(OPS)}"
            )
        if not isinstance(self.threshold, int | float) or math.isnan(self.threshold):
            raise ValueError(
                f"rule {self.name!r}: threshold must be a number, got {self.threshold!r}"
            )
        _check_duration(self.for_s, f"rule {self.name!r}: for_s")
        _check_name(self.severity, f"rule {self.name!r}: severity")
        _set_labels(self, self.name)

    def condition(self, value: float) -> bool:
        """``value op threshold``; false for NaN (no data)."""
        return not math.isnan(value) and _COMPARE[self.op](value, self.threshold)

    @property
    def peak_is_min(self) -> bool:
        """For ``<``/``<=`` the worst value while firing is the smallest; otherwise the largest."""
        return self.op in ("<", "<=")


@dataclass(frozen=True, slots=True)
class BurnRateRule:
    """Fire while the SLO burn rate exceeds ``factor`` over both windows (SRE workbook)."""

    name: str
    long_window_s: float
    short_window_s: float
    factor: float
    for_s: float = 0.0
    severity: str = "page"
    labels: Labels = ()

    def __post_init__(self) -> None:
        _check_name(self.name, "burn-rate rule")
        _check_duration(self.long_window_s, f"rule {self.name!r}: long_window_s", positive=True)
        _check_duration(self.short_window_s, f"rule {self.name!r}: short_window_s", positive=True)
        if self.short_window_s >= self.long_window_s:
            raise ValueError(
                f"rule {self.name!r}: short_window_s ({self.short_window_s}) must be < "
                f"long_window_s ({self.long_window_s})"
            )
        if not math.isfinite(self.factor) or self.factor <= 0:
            raise ValueError(f"rule {self.name!r}: factor must be finite and > 0")
        _check_duration(self.for_s, f"rule {self.name!r}: for_s")
        _check_name(self.severity, f"rule {self.name!r}: severity")
        _set_labels(self, self.name)

    @property
    def peak_is_min(self) -> bool:
        return False


Rule = ThresholdRule | BurnRateRule


def _set_labels(rule: Rule, name: str) -> None:
    labels = _pairs(rule.labels, f"rule {name!r}: labels")
    for key, _ in labels:
        if key in RESERVED_LABELS:
            raise ValueError(f"rule {name!r}: label {key!r} is reserved (set by the rule itself)")
    object.__setattr__(rule, "labels", labels)


@dataclass(frozen=True, slots=True)
class Silence:
    """Mute alerts whose labels equal every matcher while ``from_s <= now < to_s``."""

    matchers: Labels
    from_s: float
    to_s: float

    def __post_init__(self) -> None:
        matchers = _pairs(self.matchers, "silence matchers")
        if not matchers:
            raise ValueError("a silence needs at least one matcher")
        object.__setattr__(self, "matchers", matchers)
        if math.isnan(self.from_s) or math.isnan(self.to_s) or self.to_s < self.from_s:
            raise ValueError(f"silence needs from_s <= to_s, got {self.from_s}..{self.to_s}")

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        if not self.from_s <= now < self.to_s:
            return False
        return all(labels.get(k) == v for k, v in self.matchers)


@dataclass(frozen=True, slots=True)
class Escalation:
    """An alert of ``severity`` still firing ``after_s`` after it fired escalates to ``to``."""

    severity: str
    after_s: float
    to: str

    def __post_init__(self) -> None:
        _check_name(self.severity, "escalation")
        _check_name(self.to, "escalation target")
        _check_duration(self.after_s, f"escalation of {self.severity!r}: after_s")
        if self.to == self.severity:
            raise ValueError(f"escalation of {self.severity!r} escalates to itself")


@dataclass(frozen=True)
class AlertConfig:
    """Rules plus the Alertmanager side: dedup, silences, escalations and grouping.

    ``evaluation_interval_s`` is for the driver (how often to call ``evaluate``); the manager
    itself only ever uses the ``now`` it is given.
    """

    rules: tuple[Rule, ...]
    evaluation_interval_s: float = 1.0
    dedup_window_s: float = 300.0
    dedup_tolerance: float = 0.10
    silences: tuple[Silence, ...] = ()
    escalations: tuple[Escalation, ...] = ()
    group_by: tuple[str, ...] = ("name",)
    group_wait_s: float = 0.0
    group_interval_s: float = 0.0
    send_resolved: bool = True

    def __post_init__(self) -> None:
        # a parser may hand in lists; store tuples so the config stays hashable and immutable
        for attr in ("rules", "silences", "escalations", "group_by"):
            value = getattr(self, attr)
            if isinstance(value, str):
                raise ValueError(f"alerts {attr} must be a sequence, not the string {value!r}")
            object.__setattr__(self, attr, tuple(value))
        seen: set[str] = set()
        for rule in self.rules:
            if not isinstance(rule, ThresholdRule | BurnRateRule):
                raise TypeError(f"not an alert rule: {rule!r}")
            if rule.name in seen:
                raise ValueError(f"duplicate alert rule name {rule.name!r}")
            seen.add(rule.name)
        for silence in self.silences:
            if not isinstance(silence, Silence):
                raise TypeError(f"not a Silence: {silence!r}")
        severities: set[str] = set()
        for escalation in self.escalations:
            if not isinstance(escalation, Escalation):
                raise TypeError(f"not an Escalation: {escalation!r}")
            if escalation.severity in severities:
                raise ValueError(f"two escalations for severity {escalation.severity!r}")
            severities.add(escalation.severity)
        _check_duration(self.evaluation_interval_s, "evaluation_interval_s", positive=True)
        _check_duration(self.dedup_window_s, "dedup_window_s")
        _check_duration(self.dedup_tolerance, "dedup_tolerance")
        _check_duration(self.group_wait_s, "group_wait_s")
        _check_duration(self.group_interval_s, "group_interval_s")
        for label in self.group_by:
            if not isinstance(label, str) or not label:
                raise ValueError(f"group_by entries must be label names, got {label!r}")

    def group_key(self, labels: Mapping[str, str]) -> str:
        """The group an alert with these labels belongs to, e.g. ``"name=HighP99"``."""
        if "..." in self.group_by:
            return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        return ",".join(f"{k}={labels.get(k, '')}" for k in self.group_by)


@dataclass(frozen=True, slots=True)
class Sample:
    """One evaluation's input: metric values now, and requests finished since the last one."""

    values: Mapping[str, float]
    events: int = 0
    bad_events: int = 0

    def __post_init__(self) -> None:
        if self.events < 0 or not 0 <= self.bad_events <= self.events:
            raise ValueError(
                f"need 0 <= bad_events <= events, got bad_events={self.bad_events}, "
                f"events={self.events}"
            )


@dataclass(frozen=True, slots=True)
class Notification:
    at: float
    kind: str  # "firing" | "resolved" | "escalated"
    group: str
    alerts: tuple[str, ...]
    severity: str
    value: float


class _WindowSum:
    """Events and bad events over ``(now - window_s, now]``: running sums over a deque."""

    __slots__ = ("_entries", "bad", "events", "window_s")

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._entries: deque[tuple[float, int, int]] = deque()
        self.events = 0
        self.bad = 0

    def add(self, now: float, events: int, bad: int) -> None:
        if events:
            self._entries.append((now, events, bad))
            self.events += events
            self.bad += bad
        cutoff = now - self.window_s + _EPS
        entries = self._entries
        while entries and entries[0][0] <= cutoff:
            _, old_events, old_bad = entries.popleft()
            self.events -= old_events
            self.bad -= old_bad

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(slots=True)
class _Instance:
    """One firing of one rule: a timeline row plus its notification bookkeeping."""

    name: str
    severity: str
    group: str
    pending_since: float
    fired_at: float
    value: float
    peak: float
    last_value: float
    resolved_at: float = math.nan
    escalated: bool = False
    escalated_at: float = math.nan
    silenced: bool = False
    duplicate: bool = False
    notified: bool = False
    escalation_sent: bool = False

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "severity": self.severity,
            "group": self.group,
            "fired_at": self.fired_at,
            "resolved_at": self.resolved_at,
            "value": self.value,
            "peak": self.peak,
            "escalated": self.escalated,
            "escalated_at": self.escalated_at,
            "silenced": self.silenced,
            "duplicate": self.duplicate,
            "notified": self.notified,
            "pending_since": self.pending_since,
        }


@dataclass(slots=True)
class _RuleState:
    index: int
    rule: Rule
    labels: dict[str, str]
    group: str
    escalation: Escalation | None
    pending_since: float | None = None
    current: _Instance | None = None
    last_notified: _Instance | None = None  # the dedup reference


@dataclass(slots=True)
class _Group:
    created_at: float
    firing: int = 0
    last_sent_at: float | None = None


@dataclass(slots=True)
class _Batch:
    """Instances of one group going out in one notification."""

    members: list[tuple[_RuleState, _Instance]] = field(default_factory=list)


class AlertManager:
    """Evaluates the rules of ``config`` on each ``Sample`` and decides who gets told what."""

    def __init__(self, config: AlertConfig, slo: SloConfig | None = None) -> None:
        needs_slo = [r.name for r in config.rules if isinstance(r, BurnRateRule)]
        if needs_slo and slo is None:
            raise ValueError(f"burn-rate rules {needs_slo} need an SLO, but slo is None")
        self.config = config
        self.slo = slo
        self.notifications: list[Notification] = []
        escalations = {e.severity: e for e in config.escalations}
        self._states: list[_RuleState] = []
        for index, rule in enumerate(config.rules):
            labels = {"name": rule.name, "severity": rule.severity, **dict(rule.labels)}
            self._states.append(
                _RuleState(
                    index=index,
                    rule=rule,
                    labels=labels,
                    group=config.group_key(labels),
                    escalation=escalations.get(rule.severity),
                )
            )
        self._windows: dict[float, _WindowSum] = {}
        for rule in config.rules:
            if isinstance(rule, BurnRateRule):
                for window in (rule.long_window_s, rule.short_window_s):
                    self._windows.setdefault(window, _WindowSum(window))
        self._groups: dict[str, _Group] = {}
        self._rows: list[_Instance] = []
        self._last_now: float | None = None

    # -- inputs -------------------------------------------------------------------------------
    def window_burn_rate(self, window_s: float) -> float:
        """The burn rate over a window some burn-rate rule uses, as of the last evaluation."""
        window = self._windows.get(window_s)
        if window is None:
            raise KeyError(f"no burn-rate rule uses a {window_s} s window")
        assert self.slo is not None
        return self.slo.burn_rate(window.bad, window.events)

    def _observe(self, state: _RuleState, sample: Sample) -> tuple[bool, float]:
        rule = state.rule
        if isinstance(rule, ThresholdRule):
            value = float(sample.values.get(rule.metric, math.nan))
            return rule.condition(value), value
        long_burn = self.window_burn_rate(rule.long_window_s)
        short_burn = self.window_burn_rate(rule.short_window_s)
        return long_burn > rule.factor and short_burn > rule.factor, long_burn

    def _silenced(self, state: _RuleState, now: float) -> bool:
        return any(s.mutes(state.labels, now) for s in self.config.silences)

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self, now: float, sample: Sample) -> list[Notification]:
        """Advance every rule to ``now`` and return the notifications sent at ``now``."""
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, got {now!r}")
        if self._last_now is not None and now < self._last_now:
            raise ValueError(f"time went backwards: {now} after {self._last_now}")
        self._last_now = now
        for window in self._windows.values():
            window.add(now, sample.events, sample.bad_events)

        resolved: dict[str, _Batch] = {}
        for state in self._states:
            holds, value = self._observe(state, sample)
            if holds:
                self._hold(state, value, now)
            else:
                state.pending_since = None
                instance = state.current
                if instance is not None:
                    self._resolve(state, instance, now, resolved)

        sent: list[Notification] = []
        for group, batch in resolved.items():
            sent.append(self._notification(now, "resolved", group, batch))
        self._send_firing(now, sent)
        self._escalate(now, sent)
        self.notifications.extend(sent)
        return sent

    def _hold(self, state: _RuleState, value: float, now: float) -> None:
        """The condition is true at ``now``: track the firing, or move pending along."""
        instance = state.current
        if instance is not None:
            instance.last_value = value
            if state.rule.peak_is_min:
                instance.peak = min(instance.peak, value)
            else:
                instance.peak = max(instance.peak, value)
            return
        if state.pending_since is None:
            state.pending_since = now
        if now - state.pending_since < state.rule.for_s - _EPS:
            return
        instance = _Instance(
            name=state.rule.name,
            severity=state.rule.severity,
            group=state.group,
            pending_since=state.pending_since,
            fired_at=now,
            value=value,
            peak=value,
            last_value=value,
            duplicate=self._is_duplicate(state, value, now),
        )
        state.pending_since = None
        state.current = instance
        self._rows.append(instance)
        group = self._groups.get(state.group)
        if group is None:
            group = self._groups[state.group] = _Group(created_at=now)
        group.firing += 1

    def _is_duplicate(self, state: _RuleState, value: float, now: float) -> bool:
        ref = state.last_notified
        if ref is None or now - ref.fired_at > self.config.dedup_window_s + _EPS:
            return False
        return abs(value - ref.value) <= self.config.dedup_tolerance * abs(ref.value)

    def _resolve(
        self, state: _RuleState, instance: _Instance, now: float, resolved: dict[str, _Batch]
    ) -> None:
        instance.resolved_at = now
        state.current = None
        group = self._groups[instance.group]
        group.firing -= 1
        if group.firing == 0:
            del self._groups[instance.group]
        if instance.notified and self.config.send_resolved:
            resolved.setdefault(instance.group, _Batch()).members.append((state, instance))

    def _send_firing(self, now: float, sent: list[Notification]) -> None:
        due: dict[str, _Batch] = {}
        for state in self._states:
            instance = state.current
            if instance is None or instance.notified:
                continue
            if self._silenced(state, now):
                instance.silenced = True
                continue
            if instance.duplicate:
                continue
            due.setdefault(instance.group, _Batch()).members.append((state, instance))
        for key, batch in due.items():
            group = self._groups[key]
            if group.last_sent_at is None:
                ready = now - group.created_at >= self.config.group_wait_s - _EPS
            else:
                ready = now - group.last_sent_at >= self.config.group_interval_s - _EPS
            if not ready:
                continue
            group.last_sent_at = now
            for state, instance in batch.members:
                instance.notified = True
                state.last_notified = instance
            sent.append(self._notification(now, "firing", key, batch))

    def _escalate(self, now: float, sent: list[Notification]) -> None:
        for state in self._states:
            instance = state.current
            escalation = state.escalation
            if instance is None or escalation is None:
                continue
            if not instance.escalated and now - instance.fired_at >= escalation.after_s - _EPS:
                instance.escalated = True
                instance.escalated_at = now
            if (
                instance.escalated
                and not instance.escalation_sent
                and instance.notified
                and not self._silenced(state, now)
            ):
                instance.escalation_sent = True
                sent.append(
                    Notification(
                        at=now,
                        kind="escalated",
                        group=instance.group,
                        alerts=(instance.name,),
                        severity=escalation.to,
                        value=instance.last_value,
                    )
                )

    @staticmethod
    def _notification(now: float, kind: str, group: str, batch: _Batch) -> Notification:
        # the most severe member speaks for the group; max() keeps the first of equals
        _, top = max(batch.members, key=lambda m: SEVERITY_RANK.get(m[1].severity, -1))
        return Notification(
            at=now,
            kind=kind,
            group=group,
            alerts=tuple(instance.name for _, instance in batch.members),
            severity=top.severity,
            value=top.last_value,
        )

    def finish(self, now: float) -> None:
        """End of the run. Nothing is resolved: rows still firing keep ``resolved_at = nan``."""
        if self._last_now is not None and now < self._last_now:
            raise ValueError(f"time went backwards: {now} after {self._last_now}")

    # -- outputs ------------------------------------------------------------------------------
    def active(self, now: float | None = None) -> list[str]:
        """Names of the rules firing as of the last evaluation (``now`` is accepted for symmetry
        with the rest of the core; state only changes in ``evaluate``)."""
        return [s.rule.name for s in self._states if s.current is not None]

    def timeline(self) -> list[dict[str, Any]]:
        """One row per firing instance, in firing order (rule order within one evaluation)."""
        return [instance.row() for instance in self._rows]

    def counts(self) -> dict[str, Any]:
        """JSON-ready totals; ``by_rule``/``by_severity`` count firings per rule and severity."""
        rows = self._rows
        by_rule = {s.rule.name: 0 for s in self._states}
        by_severity = {s.rule.severity: 0 for s in self._states}
        for row in rows:
            by_rule[row.name] += 1
            by_severity[row.severity] += 1
        return {
            "fired": len(rows),
            "resolved": sum(not math.isnan(r.resolved_at) for r in rows),
            "escalated": sum(r.escalated for r in rows),
            "silenced": sum(r.silenced for r in rows),
            "deduplicated": sum(r.duplicate for r in rows),
            "notifications": len(self.notifications),
            "by_rule": by_rule,
            "by_severity": by_severity,
        }
