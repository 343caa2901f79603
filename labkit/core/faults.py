"""Fault plans: what breaks, where and when, decided before the run starts.

A scenario's ``faults:`` list is turned into concrete *fault instances* — a kind, a start, an end
(or none), the worker names hit and the parameters — by ``plan_faults``. Random processes
(``random_crashes``) are drawn here too, from the run's own random stream, so the plan is a pure
function of the scenario and its seed: the simulator schedules it on simulated time, the live
driver on the wall clock, and both hit the same workers at the same offsets.

How a driver applies each kind (the semantics, written once):

``crash``          the worker process dies: requests in service and queued are lost; with
                   ``connection: reset`` (a killed process: the OS closes its sockets) the gateway
                   learns of each lost attempt one network hop later (``worker_lost``) and new
                   attempts sent to it are refused after one hop; with ``connection: hang`` (a
                   host that froze or lost power) nothing comes back and attempts wait for their
                   attempt timeout or deadline. Heartbeats stop. ``restart_after_s`` brings it
                   back empty and re-registered.
``slow``           service times on the worker are multiplied by ``factor``.
``flaky``          each request the worker finishes fails (``worker_error``) with probability
                   ``error_rate``.
``partition``      the worker is cut off from gateways and registry: requests to it and replies
                   from it are dropped, and so are its heartbeats. It keeps working on what it
                   had; replies that fall inside the partition are lost.
``latency_spike``  every gateway↔worker hop (to the listed workers; default all) takes
                   ``extra_ms`` longer.

Overlapping faults compose: a worker is down while any crash covering it lasts, slow by the
product of the factors in force, and flaky with the combined probability 1 − Π(1 − p).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

WorkerName = str

FAULT_KINDS = ("crash", "slow", "flaky", "partition", "latency_spike", "random_crashes")
#: kinds that act on individual workers (``latency_spike`` may be fleet-wide)
WORKER_FAULTS = ("crash", "slow", "flaky", "partition", "random_crashes")
CONNECTION_MODES = ("reset", "hang")


def worker_name(index: int) -> WorkerName:
    """The name of the ``index``-th worker of a fleet, shared by both drivers and the scenario."""
    return f"w-{index}"


@dataclass(frozen=True, slots=True)
class WorkerSelector:
    """Which workers a fault hits: ``count`` of them, a ``fraction``, the listed ``names``, or
    every worker when all three are None. Counts and fractions pick at random (seeded)."""

    count: int | None = None
    fraction: float | None = None
    names: tuple[WorkerName, ...] | None = None

    def resolve(self, fleet: Sequence[WorkerName], rng: np.random.Generator) -> tuple[str, ...]:
        if self.names is not None:
            return self.names
        if self.count is None and self.fraction is None:
            return tuple(fleet)
        # "7%" of 100 is 7, though 0.07 * 100 is 7.000000000000001 in floats
        fraction = self.fraction or 0.0
        n = self.count if self.count is not None else math.ceil(fraction * len(fleet) - 1e-9)
        n = max(0, min(len(fleet), n))
        chosen = rng.choice(len(fleet), size=n, replace=False)
        return tuple(fleet[i] for i in sorted(chosen))

    def describe(self) -> str:
        if self.names is not None:
            return ",".join(self.names)
        if self.count is not None:
            return str(self.count)
        if self.fraction is not None:
            return f"{self.fraction:.0%}"
        return "all"


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One entry of the scenario's ``faults:`` list, validated."""

    kind: str
    at_s: float | None = None  # None only for random_crashes
    workers: WorkerSelector = field(default_factory=WorkerSelector)
    for_s: float | None = None  # slow, flaky, partition, latency_spike; None = to the end
    restart_after_s: float | None = None  # crash: None = stays down
    factor: float = 1.0  # slow
    error_rate: float = 0.0  # flaky
    extra_ms: float = 0.0  # latency_spike
    mtbf_s: float = 0.0  # random_crashes: mean time between failures per worker
    mttr_s: float = 0.0  # random_crashes: mean time to repair
    connection: str = "reset"  # crash, random_crashes


@dataclass(frozen=True, slots=True)
class FaultInstance:
    """One concrete fault in a run: ``end_s`` None means it outlasts the run."""

    fault: int
    kind: str  # crash | slow | flaky | partition | latency_spike
    origin: str  # "schedule" | "random"
    start_s: float
    end_s: float | None
    workers: tuple[WorkerName, ...]  # empty: fleet-wide
    params: dict[str, Any]

    def label(self) -> str:
        who = f"×{len(self.workers)}" if self.workers else "all"
        return f"{self.kind} {who}"


def plan_faults(
    specs: Sequence[FaultSpec],
    fleet: Sequence[WorkerName],
    duration_s: float,
    rng: np.random.Generator,
) -> list[FaultInstance]:
    """Concrete fault instances ordered by start time (ties keep scenario order)."""
    planned: list[tuple[float, int, int, FaultInstance]] = []
    for order, spec in enumerate(specs):
        if spec.kind == "random_crashes":
            targets = spec.workers.resolve(fleet, rng)
            for sub, (start, end, name) in enumerate(
                _random_crashes(targets, spec.mtbf_s, spec.mttr_s, duration_s, rng)
            ):
                inst = FaultInstance(
                    0,
                    "crash",
                    "random",
                    start,
                    end,
                    (name,),
                    {"connection": spec.connection, "restart_after_s": _round(end - start)}
                    if end is not None
                    else {"connection": spec.connection},
                )
                planned.append((start, order, sub, inst))
            continue
        assert spec.at_s is not None
        fleet_wide = spec.kind == "latency_spike" and spec.workers == WorkerSelector()
        workers = () if fleet_wide else spec.workers.resolve(fleet, rng)
        start = spec.at_s
        params: dict[str, Any]
        if spec.kind == "crash":
            length = spec.restart_after_s
            params = {"connection": spec.connection}
            if length is not None:
                params["restart_after_s"] = length
        else:
            length = spec.for_s
            params = {
                "slow": {"factor": spec.factor},
                "flaky": {"error_rate": spec.error_rate},
                "partition": {},
                "latency_spike": {"extra_ms": spec.extra_ms},
            }[spec.kind]
        end = start + length if length is not None else None
        planned.append(
            (start, order, 0, FaultInstance(0, spec.kind, "schedule", start, end, workers, params))
        )
    planned.sort(key=lambda p: (p[0], p[1], p[2]))
    return [
        FaultInstance(i, f.kind, f.origin, f.start_s, f.end_s, f.workers, f.params)
        for i, (_, _, _, f) in enumerate(planned)
    ]


def _random_crashes(
    targets: Sequence[WorkerName],
    mtbf_s: float,
    mttr_s: float,
    duration_s: float,
    rng: np.random.Generator,
) -> list[tuple[float, float | None, WorkerName]]:
    """Alternating exponential up (mean ``mtbf_s``) and down (mean ``mttr_s``) times per worker,
    each worker independently, over ``[0, duration_s)``."""
    out: list[tuple[float, float | None, WorkerName]] = []
    for name in targets:
        t = 0.0
        while True:
            t += float(rng.exponential(mtbf_s))
            if t >= duration_s:
                break
            down = float(rng.exponential(mttr_s)) if mttr_s > 0 else 0.0
            end = t + down
            out.append((_round(t), _round(end) if end < duration_s else None, name))
            t = end
    return out


def _round(x: float) -> float:
    # microsecond resolution keeps plans readable in summary.json and identical across drivers
    return round(x, 6)


@dataclass(slots=True)
class WorkerFaultState:
    """The faults in force on one worker, composed (see module docstring).

    Drivers keep one per worker and ask it the questions that matter on their paths.
    """

    crashed: int = 0
    partitioned: int = 0
    slow_factors: list[float] = field(default_factory=list)
    error_rates: list[float] = field(default_factory=list)
    extra_ms: list[float] = field(default_factory=list)
    hang: int = 0  # crashes in force whose connection mode is "hang"

    @property
    def alive(self) -> bool:
        return self.crashed == 0

    @property
    def reachable(self) -> bool:
        return self.crashed == 0 and self.partitioned == 0

    @property
    def slowdown(self) -> float:
        return math.prod(self.slow_factors) if self.slow_factors else 1.0

    @property
    def error_rate(self) -> float:
        if not self.error_rates:
            return 0.0
        return 1.0 - math.prod(1.0 - p for p in self.error_rates)

    @property
    def extra_s(self) -> float:
        return sum(self.extra_ms) / 1000.0

    @property
    def actual(self) -> str:
        """The truth about this worker, for the health timeline (worst first)."""
        if self.crashed:
            return "crashed"
        if self.partitioned:
            return "partitioned"
        if self.slow_factors:
            return "slow"
        if self.error_rates:
            return "flaky"
        return "up"

    def apply(self, inst: FaultInstance, starting: bool) -> None:
        """Add (``starting``) or remove the effect of ``inst`` on this worker."""
        sign = 1 if starting else -1
        kind = inst.kind
        if kind == "crash":
            self.crashed += sign
            if inst.params.get("connection") == "hang":
                self.hang += sign
        elif kind == "partition":
            self.partitioned += sign
        elif kind == "slow":
            _toggle(self.slow_factors, inst.params["factor"], starting)
        elif kind == "flaky":
            _toggle(self.error_rates, inst.params["error_rate"], starting)
        elif kind == "latency_spike":
            _toggle(self.extra_ms, inst.params["extra_ms"], starting)
        else:  # pragma: no cover - plan_faults never emits other kinds
            raise ValueError(f"unknown fault kind {kind!r}")


def _toggle(values: list[float], value: float, add: bool) -> None:
    if add:
        values.append(value)
    else:
        values.remove(value)


ACTUAL_STATES = ("up", "slow", "flaky", "partitioned", "crashed")
