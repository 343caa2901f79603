"""Scenario sections about failure: ``faults``, ``slo``, ``alerts`` and ``recovery``.

They build the policy core's own config objects, so what the scenario says is exactly what the
core enforces; every bad value is reported with its key path like the rest of the scenario.
"""

from __future__ import annotations

import math
import re
from typing import Any

from labkit.core.alerts import (
    METRICS,
    OPS,
    AlertConfig,
    BurnRateRule,
    Escalation,
    Rule,
    Silence,
    ThresholdRule,
)
from labkit.core.faults import (
    CONNECTION_MODES,
    FAULT_KINDS,
    FaultSpec,
    WorkerSelector,
    worker_name,
)
from labkit.core.slo import RecoveryConfig, SloConfig
from labkit.errors import ScenarioError
from labkit.scenario.section import Section

_FRACTION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")

#: keys each fault kind accepts besides ``kind`` (and ``at_s``, except for random processes)
FAULT_KEYS: dict[str, tuple[str, ...]] = {
    "crash": ("workers", "restart_after_s", "connection"),
    "slow": ("workers", "factor", "for_s"),
    "flaky": ("workers", "error_rate", "for_s"),
    "partition": ("workers", "for_s"),
    "latency_spike": ("workers", "extra_ms", "for_s"),
    "random_crashes": ("workers", "mtbf_s", "mttr_s", "connection"),
}


def parse_faults(raw: Any, worker_count: int, duration_s: float, out: dict[str, Any]) -> tuple:
    if raw is None:
        out["faults"] = []
        return ()
    if not isinstance(raw, list):
        raise ScenarioError("must be a list of faults", path="faults")
    specs: list[FaultSpec] = []
    resolved: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        s = Section(item, f"faults.{i}")
        kind = s.string("kind", choices=FAULT_KINDS)
        allowed = ["kind", *FAULT_KEYS[kind]]
        at_s: float | None = None
        if kind != "random_crashes":
            allowed.append("at_s")
            at_s = s.number("at_s", min=0)
            if at_s >= duration_s:
                raise ScenarioError(
                    f"starts at or after the end of the run (duration_s {duration_s:g})",
                    path=s.key("at_s"),
                )
        needs_workers = kind in ("crash", "slow", "flaky", "partition")
        workers = _selector(s, worker_count, required=needs_workers)
        spec = FaultSpec(kind=kind, at_s=at_s, workers=workers)
        if kind == "crash":
            spec = _replace(
                spec,
                restart_after_s=s.number("restart_after_s", None, min=0, min_exclusive=True),
                connection=s.string("connection", "reset", choices=CONNECTION_MODES),
            )
        elif kind == "random_crashes":
            spec = _replace(
                spec,
                mtbf_s=s.number("mtbf_s", min=0, min_exclusive=True),
                mttr_s=s.number("mttr_s", min=0, min_exclusive=True),
                connection=s.string("connection", "reset", choices=CONNECTION_MODES),
            )
        else:
            for_s = s.number("for_s", None, min=0, min_exclusive=True)
            spec = _replace(spec, for_s=for_s)
            if kind == "slow":
                spec = _replace(spec, factor=s.number("factor", min=1, min_exclusive=True))
            elif kind == "flaky":
                spec = _replace(
                    spec, error_rate=s.number("error_rate", min=0, max=1, min_exclusive=True)
                )
            elif kind == "latency_spike":
                spec = _replace(spec, extra_ms=s.number("extra_ms", min=0, min_exclusive=True))
        resolved.append(s.done(allowed_hint=allowed))
        specs.append(spec)
    out["faults"] = resolved
    return tuple(specs)


def _replace(spec: FaultSpec, **changes: Any) -> FaultSpec:
    from dataclasses import replace

    return replace(spec, **changes)


def _selector(s: Section, worker_count: int, *, required: bool) -> WorkerSelector:
    path = s.key("workers")
    raw = s.raw_value("workers")
    if raw is None:
        if required:
            raise ScenarioError(
                'is required: a count (5), a fraction ("10%") or a list of names ([w-3, w-7])',
                path=path,
            )
        s.resolved["workers"] = "all"
        return WorkerSelector()
    if isinstance(raw, bool):
        raise ScenarioError(f"must be a count, a fraction or names, got {raw!r}", path=path)
    if isinstance(raw, int):
        if not 1 <= raw <= worker_count:
            raise ScenarioError(
                f"must be between 1 and the fleet size ({worker_count}), got {raw}", path=path
            )
        s.resolved["workers"] = raw
        return WorkerSelector(count=raw)
    if isinstance(raw, str):
        if raw == "all":
            s.resolved["workers"] = "all"
            return WorkerSelector()
        m = _FRACTION.match(raw)
        if not m or not 0 < float(m.group(1)) <= 100:
            raise ScenarioError(
                f'must be a count, a percentage such as "10%", "all" or a list of names, '
                f"got {raw!r}",
                path=path,
            )
        fraction = float(m.group(1)) / 100
        s.resolved["workers"] = raw
        if math.ceil(fraction * worker_count) < 1:  # pragma: no cover - ceil of > 0 is >= 1
            raise ScenarioError("selects no worker", path=path)
        return WorkerSelector(fraction=fraction)
    if isinstance(raw, list) and raw:
        known = {worker_name(i) for i in range(worker_count)}
        for j, name in enumerate(raw):
            if not isinstance(name, str) or name not in known:
                raise ScenarioError(
                    f"unknown worker {name!r} (workers are named "
                    f"{worker_name(0)} .. {worker_name(worker_count - 1)})",
                    path=f"{path}.{j}",
                )
        if len(set(raw)) != len(raw):
            raise ScenarioError("names a worker twice", path=path)
        s.resolved["workers"] = list(raw)
        return WorkerSelector(names=tuple(raw))
    raise ScenarioError(
        f"must be a count, a fraction or a non-empty list of names, got {raw!r}", path=path
    )


def parse_slo(s: Section, out: dict[str, Any]) -> SloConfig:
    latency = s.number("latency_ms", 500.0, min=0, min_exclusive=True)
    target = s.number("target", 0.999, min=0, max=1, min_exclusive=True)
    if target >= 1:
        raise ScenarioError(
            "must be below 1 (a 100 % target has no error budget)", path=s.key("target")
        )
    out["slo"] = s.done()
    return SloConfig(latency_ms=latency, target=target)


def parse_recovery(s: Section, out: dict[str, Any]) -> RecoveryConfig:
    cfg = RecoveryConfig(
        baseline_s=s.number("baseline_s", 30.0, min=0, min_exclusive=True),
        p99_tolerance=s.number("p99_tolerance", 0.25, min=0),
        p99_slack_ms=s.number("p99_slack_ms", 5.0, min=0),
        error_rate_tolerance=s.number("error_rate_tolerance", 0.01, min=0, max=1),
        hold_s=s.number("hold_s", 3.0, min=0, min_exclusive=True),
        bin_s=s.number("bin_s", 1.0, min=0, min_exclusive=True),
    )
    out["recovery"] = s.done()
    return cfg


_RULE_KEYS = {
    "threshold": ("name", "kind", "metric", "op", "threshold", "for_s", "severity", "labels"),
    "burn_rate": (
        "name",
        "kind",
        "long_window_s",
        "short_window_s",
        "factor",
        "for_s",
        "severity",
        "labels",
    ),
}


def parse_alerts(s: Section, raw_present: bool, out: dict[str, Any]) -> AlertConfig | None:
    if not raw_present:
        out["alerts"] = None
        return None
    interval = s.number("evaluation_interval_s", 1.0, min=0, min_exclusive=True)
    raw_rules = s.raw_value("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise ScenarioError("must be a non-empty list of rules", path=s.key("rules"))
    rules: list[Rule] = []
    resolved_rules = []
    names: set[str] = set()
    for i, item in enumerate(raw_rules):
        r = Section(item, f"{s.key('rules')}.{i}")
        name = r.string("name")
        if name in names:
            raise ScenarioError(f"duplicate rule name {name!r}", path=r.key("name"))
        names.add(name)
        kind = r.string("kind", "threshold", choices=tuple(_RULE_KEYS))
        labels = _labels(r)
        for_s = r.number("for_s", 0.0, min=0)
        rule: Rule
        try:
            rule = _rule(r, kind, name, labels, for_s)
        except ValueError as exc:
            raise ScenarioError(str(exc), path=r.path) from None
        resolved_rules.append(r.done(allowed_hint=_RULE_KEYS[kind]))
        rules.append(rule)
    silences = []
    raw_silences = s.raw_value("silences")
    if raw_silences is None:
        raw_silences = []
    if not isinstance(raw_silences, list):
        raise ScenarioError("must be a list of silences", path=s.key("silences"))
    resolved_silences = []
    for i, item in enumerate(raw_silences):
        q = Section(item, f"{s.key('silences')}.{i}")
        matchers = _labels(q, "matchers", required=True)
        start = q.number("from_s", 0.0, min=0)
        end = q.number("to_s", min=0)
        if end <= start:
            raise ScenarioError(f"must be after from_s ({start:g})", path=q.key("to_s"))
        silences.append(Silence(matchers=matchers, from_s=start, to_s=end))
        resolved_silences.append(q.done())
    escalations = []
    raw_esc = s.raw_value("escalation")
    if raw_esc is None:
        raw_esc = {}
    if not isinstance(raw_esc, dict):
        raise ScenarioError("must map a severity to {after_s, to}", path=s.key("escalation"))
    resolved_esc = {}
    for severity, item in raw_esc.items():
        e = Section(item, f"{s.key('escalation')}.{severity}")
        try:
            escalations.append(
                Escalation(
                    severity=str(severity),
                    after_s=e.number("after_s", min=0, min_exclusive=True),
                    to=e.string("to"),
                )
            )
        except ValueError as exc:
            raise ScenarioError(str(exc), path=e.path) from None
        resolved_esc[severity] = e.done()
    group_by = s.string_list("group_by", ["name"])
    try:
        cfg = AlertConfig(
            rules=tuple(rules),
            evaluation_interval_s=interval,
            dedup_window_s=s.number("dedup_window_s", 300.0, min=0),
            dedup_tolerance=s.number("dedup_tolerance", 0.10, min=0),
            silences=tuple(silences),
            escalations=tuple(escalations),
            group_by=tuple(group_by),
            group_wait_s=s.number("group_wait_s", 0.0, min=0),
            group_interval_s=s.number("group_interval_s", 0.0, min=0),
            send_resolved=True,
        )
    except ValueError as exc:
        raise ScenarioError(str(exc), path=s.path) from None
    out["alerts"] = {
        **s.done(),
        "rules": resolved_rules,
        "silences": resolved_silences,
        "escalation": resolved_esc,
    }
    return cfg


def _rule(
    r: Section, kind: str, name: str, labels: tuple[tuple[str, str], ...], for_s: float
) -> Rule:
    if kind == "threshold":
        metric = r.string("metric", choices=tuple(METRICS))
        return ThresholdRule(
            name=name,
            metric=metric,
            op=r.string("op", choices=OPS),
            threshold=r.number("threshold"),
            for_s=for_s,
            severity=r.string("severity", "warning"),
            labels=labels,
        )
    long_w = r.number("long_window_s", min=0, min_exclusive=True)
    short_w = r.number("short_window_s", min=0, min_exclusive=True)
    if short_w >= long_w:
        raise ScenarioError(
            f"must be shorter than long_window_s ({long_w:g})", path=r.key("short_window_s")
        )
    return BurnRateRule(
        name=name,
        long_window_s=long_w,
        short_window_s=short_w,
        factor=r.number("factor", min=0, min_exclusive=True),
        for_s=for_s,
        severity=r.string("severity", "page"),
        labels=labels,
    )


def _labels(
    s: Section, name: str = "labels", *, required: bool = False
) -> tuple[tuple[str, str], ...]:
    raw = s.raw_value(name)
    if raw is None:
        if required:
            raise ScenarioError("is required (a mapping of label to value)", path=s.key(name))
        s.resolved[name] = {}
        return ()
    if not isinstance(raw, dict) or (required and not raw):
        raise ScenarioError("must be a mapping of label to value", path=s.key(name))
    pairs = []
    for k, v in raw.items():
        if not isinstance(v, str | int | float) or isinstance(v, bool):
            raise ScenarioError(f"must be a string, got {v!r}", path=f"{s.key(name)}.{k}")
        pairs.append((str(k), str(v)))
    s.resolved[name] = dict(pairs)
    return tuple(sorted(pairs))
