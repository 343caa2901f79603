"""Widget panels for the notebooks: tune a scenario, run it, see the plots — never stale.

A panel is built on a scenario and turns its widgets into ``--set`` style overrides, so what a
slider does is exactly what ``labkit run --set`` would do and nothing lives only in the notebook.
The widgets' choices come from the schema (strategies, consistency models, conflict policies,
fault kinds and the keys each kind takes, detectors) and their starting values from the
scenario as loaded, so a panel on any scenario starts where the file does.

Changing any widget marks the plots "out of date" until the next run (a run takes seconds, so
it is not automatic: dragging a slider must not start ten simulations). Every change is also
validated at once by the scenario loader, so an impossible setting (strong consistency with
r + w ≤ n, a fault after the end of the run) is named before Run is pressed, not after.
A panel can pin a run as "A" and show every later run side by side with it: the latency plots
overlay both and a table puts their headline figures and differing settings next to each other.

Panels are groups of *controls* (``BalancingControls``, ``LoadControls``,
``ConsistencyControls``, ``BatchingControls``, ``FaultControls``) over one scenario; the named
panels pick the groups and plots for one question, and ``Panel(scenario)`` picks every group
the scenario has a section for.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import ipywidgets as w
import matplotlib.pyplot as plt
import yaml
from IPython.display import Image, display

from labkit.core.balancing import DEFAULT_WEIGHTS, STRATEGIES, normalise_weights
from labkit.core.detectors import DETECTORS
from labkit.core.faults import CONNECTION_MODES, FAULT_KINDS
from labkit.core.state import CONFLICT_POLICIES, STATE_MODELS
from labkit.errors import ScenarioError
from labkit.notebook import QUICK_OVERRIDES, load
from labkit.results import Results
from labkit.scenario import Scenario
from labkit.scenario.failure import FAULT_KEYS
from labkit.scenario.schema import CONSISTENCY_MODELS
from labkit.sim import simulate

STALE = "out of date: press Run"
FRESH = "up to date"
INVALID = "invalid setting"
#: strategies whose picks the adaptive weights change
WEIGHTED = ("adaptive",)
#: plots that take several runs and so show A and B in one picture
OVERLAY_PLOTS = ("latency_percentiles", "latency_cdf")

_STYLE = {"description_width": "130px"}
_WIDTH = "440px"


def _layout() -> w.Layout:
    return w.Layout(width=_WIDTH)


def _flow(value: Any) -> str:
    """A value as one line of YAML flow style, as ``--set KEY=VALUE`` takes it."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, sort_keys=False)
    return text.strip().removesuffix("...").strip()


def _number(value: float) -> str:
    return f"{value:.6g}"


def _show(widget: w.Widget, visible: bool) -> None:
    widget.layout.display = None if visible else "none"


# -- controls: one group of widgets, one part of the scenario ------------------------------------


class Controls:
    """A group of widgets over one part of a scenario, turned into ``--set`` overrides."""

    title: ClassVar[str] = ""
    #: report plots (``labkit.report`` stems) that show what this group changes
    plots: ClassVar[tuple[str, ...]] = ()

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._listeners: list[Callable[[], None]] = []

    def inputs(self) -> list[w.ValueWidget]:
        """Widgets whose value is part of the configuration."""
        return []

    def view(self) -> w.Widget:
        return w.VBox(self.inputs())

    def overrides(self) -> list[str]:
        return []

    def refresh(self) -> None:
        """Update derived displays (normalised weights, enabled widgets) after a change."""

    def on_change(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)
        for widget in self.inputs():
            widget.observe(lambda _change: callback(), names="value")

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()


class BalancingControls(Controls):
    """Strategy and the adaptive weights, shown normalised to sum 1 as the balancer uses them."""

    title = "Balancing"
    plots = ("latency_percentiles", "worker_load")

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario)
        balancer = scenario.balancer
        self.strategy = w.Dropdown(
            options=list(STRATEGIES),
            value=balancer.strategy,
            description="strategy",
            style=_STYLE,
            layout=_layout(),
        )
        self.weights = {
            name: w.FloatSlider(
                value=balancer.weights.get(name, 0.0),
                min=0.0,
                max=1.0,
                step=0.05,
                description=name,
                style=_STYLE,
                layout=_layout(),
                continuous_update=False,
            )
            for name in DEFAULT_WEIGHTS
        }
        self.weights_used = w.HTML()
        #: the sliders as the scenario set them: left there, the scenario's weights stand
        self._start_weights = {name: s.value for name, s in self.weights.items()}

    def inputs(self) -> list[w.ValueWidget]:
        return [self.strategy, *self.weights.values()]

    def view(self) -> w.Widget:
        return w.VBox([self.strategy, *self.weights.values(), self.weights_used])

    def normalised_weights(self) -> dict[str, float]:
        raw = {name: s.value for name, s in self.weights.items()}
        if sum(raw.values()) <= 0:
            return dict(DEFAULT_WEIGHTS)
        return normalise_weights(raw)

    def overrides(self) -> list[str]:
        sets = [f"balancer.strategy={self.strategy.value}"]
        # only once a slider moved: written back, the scenario's weights would be normalised
        # again by the loader and drift in the last bits (an unwritten default, 0.3, becomes
        # 0.30000000000000004), and the panel's run would not be ``labkit run``'s
        if {name: s.value for name, s in self.weights.items()} != self._start_weights:
            weights = {k: float(_number(v)) for k, v in self.normalised_weights().items()}
            sets.append(f"balancer.weights={_flow(weights)}")
        return sets

    def refresh(self) -> None:
        used = self.normalised_weights()
        shares = " · ".join(f"{k} {v:.2f}" for k, v in used.items())
        active = self.strategy.value in WEIGHTED
        for slider in self.weights.values():
            slider.disabled = not active
        note = "" if active else f" (only {', '.join(WEIGHTED)} uses them)"
        self.weights_used.value = f"weights used (sum 1): {shares}{note}"


class LoadControls(Controls):
    """Offered load (for Poisson arrivals) and fleet size."""

    title = "Load and fleet"
    plots = ("latency_percentiles",)

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario)
        arrival = scenario.workload.arrival
        self.poisson = arrival.process == "poisson"
        rate = arrival.rate_rps or 1.0
        self.rate = w.FloatSlider(
            value=rate,
            min=rate / 4,
            max=rate * 1.5,
            step=rate / 40,
            description="load req/s",
            style=_STYLE,
            layout=_layout(),
            continuous_update=False,
            readout_format=".0f",
        )
        _show(self.rate, self.poisson)
        self.workers = w.IntSlider(
            value=scenario.workers.count,
            min=1,
            max=max(2, scenario.workers.count * 2),
            description="workers",
            style=_STYLE,
            layout=_layout(),
            continuous_update=False,
        )

    def inputs(self) -> list[w.ValueWidget]:
        return [self.rate, self.workers]

    def overrides(self) -> list[str]:
        sets = [f"workers.count={self.workers.value}"]
        if self.poisson:
            sets.append(f"workload.arrival.rate_rps={_number(self.rate.value)}")
        return sets


class ConsistencyControls(Controls):
    """The registry view's model and, when the scenario keeps agent state, the store's."""

    title = "Consistency"
    plots = ("latency_percentiles", "t_visibility", "state_latency")

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario)
        registry = scenario.registry
        self.registry_model = w.Dropdown(
            options=list(CONSISTENCY_MODELS),
            value=registry.consistency,
            description="registry view",
            style=_STYLE,
            layout=_layout(),
        )
        self.ttl = w.FloatSlider(
            value=registry.cache_ttl_ms,
            min=0.0,
            max=max(10_000.0, registry.cache_ttl_ms * 2),
            step=100.0,
            description="view TTL ms",
            style=_STYLE,
            layout=_layout(),
            continuous_update=False,
            readout_format=".0f",
        )
        # the slider is the delay's mean; the scenario's own distribution (constant, lognormal,
        # ...) stands until the slider moves, then it is exponential with the slider's mean
        watch = registry.watch_delay
        watch_ms = float(watch.mean) if watch is not None else 20.0
        self.watch_delay = w.FloatSlider(
            value=watch_ms,
            min=0.0,
            max=max(500.0, watch_ms * 2),
            step=5.0,
            description="watch delay ms",
            style=_STYLE,
            layout=_layout(),
            continuous_update=False,
            readout_format=".0f",
        )
        self._watch_start = self.watch_delay.value
        self.has_state = scenario.state is not None
        state = scenario.state.config if scenario.state is not None else None
        self.state_model = w.Dropdown(
            options=list(STATE_MODELS),
            value=state.model if state else "eventual",
            description="state model",
            style=_STYLE,
            layout=_layout(),
        )
        n = state.n if state else 3
        self.n = w.IntSlider(
            value=n,
            min=1,
            max=max(7, n),
            description="replicas n",
            style=_STYLE,
            layout=_layout(),
            continuous_update=False,
        )
        written = scenario.resolved.get("state") or {}
        self.r = w.Dropdown(description="read quorum r", style=_STYLE, layout=_layout())
        self.w = w.Dropdown(description="write quorum w", style=_STYLE, layout=_layout())
        self._quorum_options(n)
        # start on the scenario's own values; "auto" only when they are the model's default
        for dropdown, value in ((self.r, written.get("r")), (self.w, written.get("w"))):
            if value is not None and value != self._auto_quorum():
                dropdown.value = int(value)
        self.conflict = w.Dropdown(
            options=list(CONFLICT_POLICIES),
            value=state.conflict if state else CONFLICT_POLICIES[0],
            description="conflicts",
            style=_STYLE,
            layout=_layout(),
        )
        self.quorum_note = w.HTML()
        self.n.observe(lambda change: self._quorum_options(change["new"]), names="value")

    def _auto_quorum(self) -> int:
        return self.n.value // 2 + 1 if self.state_model.value == "strong" else 1

    def _quorum_options(self, n: int) -> None:
        for dropdown in (self.r, self.w):
            keep = dropdown.value if isinstance(dropdown.value, int) else 0
            options: list[tuple[str, int]] = [("auto", 0)] + [(str(i), i) for i in range(1, n + 1)]
            dropdown.options = options
            dropdown.value = keep if 0 <= keep <= n else 0

    def quorums(self) -> tuple[int, int]:
        """(r, w) as the store will use them, "auto" resolved as the schema resolves it."""
        auto = self._auto_quorum()
        return (self.r.value or auto, self.w.value or auto)

    def inputs(self) -> list[w.ValueWidget]:
        widgets: list[w.ValueWidget] = [self.registry_model, self.ttl, self.watch_delay]
        if self.has_state:
            widgets += [self.state_model, self.n, self.r, self.w, self.conflict]
        return widgets

    def view(self) -> w.Widget:
        parts: list[w.Widget] = [self.registry_model, self.ttl, self.watch_delay]
        if self.has_state:
            parts += [self.state_model, self.n, self.r, self.w, self.quorum_note, self.conflict]
        return w.VBox(parts)

    def overrides(self) -> list[str]:
        model = self.registry_model.value
        sets = [f"registry.consistency={model}", f"registry.cache_ttl_ms={_number(self.ttl.value)}"]
        if self.watch_delay.value != self._watch_start:
            delay = {"dist": "exponential", "mean_ms": float(_number(self.watch_delay.value))}
            if delay["mean_ms"] <= 0:
                delay = {"dist": "constant", "value_ms": 0.0}
            sets.append(f"registry.watch_delay={_flow(delay)}")
        if self.has_state:
            r, w_ = self.quorums()
            sets += [
                f"state.model={self.state_model.value}",
                f"state.n={self.n.value}",
                f"state.r={r}",
                f"state.w={w_}",
                f"state.conflict={self.conflict.value}",
            ]
        return sets

    def refresh(self) -> None:
        model = self.registry_model.value
        self.ttl.disabled = model != "eventual"
        self.watch_delay.disabled = model != "watch"
        if not self.has_state:
            return
        r, w_ = self.quorums()
        n = self.n.value
        if r + w_ > n:
            note = f"r + w = {r + w_} > n = {n}: a read overlaps the last commit's replicas"
        else:
            note = f"r + w = {r + w_} ≤ n = {n}: a read can miss the last commit (stale reads)"
        self.quorum_note.value = f"<small>{html.escape(note)}</small>"


class BatchingControls(Controls):
    """Batching between gateway and workers: size limit, delay, per-batch cost, AIMD target."""

    title = "Batching"
    plots = ("latency_percentiles", "batch_sizes", "batch_limit")

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario)
        config = scenario.batching
        written = scenario.resolved.get("batching") or {}
        self.had_section = config is not None
        self.had_adaptive = bool(config is not None and config.adaptive is not None)
        self.enabled = w.Checkbox(value=self.had_section, description="batching on")
        self.max_batch = w.IntSlider(
            value=config.max_batch if config else 8,
            min=1,
            max=64,
            description="max batch" if not self.had_adaptive else "start limit",
            style=_STYLE,
            layout=_layout(),
            continuous_update=False,
        )
        self.max_delay = w.FloatSlider(
            value=written.get("max_delay_ms", 2.0),
            min=0.0,
            max=20.0,
            step=0.5,
            description="max delay ms",
            style=_STYLE,
            layout=_layout(),
            continuous_update=False,
        )
        self.batch_cost = w.FloatSlider(
            value=written.get("batch_cost_ms", 0.5),
            min=0.0,
            max=10.0,
            step=0.1,
            description="cost per batch ms",
            style=_STYLE,
            layout=_layout(),
            continuous_update=False,
        )
        adaptive = written.get("adaptive") or {}
        self.adaptive = w.Checkbox(value=self.had_adaptive, description="adaptive (AIMD on p99)")
        self.target = w.FloatSlider(
            value=adaptive.get("target_p99_ms", 30.0),
            min=1.0,
            max=500.0,
            step=1.0,
            description="target p99 ms",
            style=_STYLE,
            layout=_layout(),
            continuous_update=False,
            readout_format=".0f",
        )

    def inputs(self) -> list[w.ValueWidget]:
        return [
            self.enabled,
            self.max_batch,
            self.max_delay,
            self.batch_cost,
            self.adaptive,
            self.target,
        ]

    def overrides(self) -> list[str]:
        if not self.enabled.value:
            return ["batching=null"] if self.had_section else []
        sets = [
            f"batching.max_batch={self.max_batch.value}",
            f"batching.max_delay_ms={_number(self.max_delay.value)}",
            f"batching.batch_cost_ms={_number(self.batch_cost.value)}",
        ]
        if self.adaptive.value:
            target = _number(self.target.value)
            if self.had_adaptive:
                sets.append(f"batching.adaptive.target_p99_ms={target}")
            else:
                sets.append(f"batching.adaptive={{target_p99_ms: {target}}}")
        elif self.had_adaptive:
            sets.append("batching.adaptive=null")
        return sets

    def refresh(self) -> None:
        on = self.enabled.value
        for widget in (self.max_batch, self.max_delay, self.batch_cost, self.adaptive):
            widget.disabled = not on
        self.target.disabled = not (on and self.adaptive.value)
        self.max_batch.description = "start limit" if self.adaptive.value else "max batch"


#: fault keys the schema lets a fault leave out (a crash never restarted, a fault that lasts
#: to the end of the run): their field shows 0 for "left out", as the schema takes only > 0
_FAULT_OPTIONAL = ("restart_after_s", "for_s")
#: a starting value for each fault key when a row switches to a kind that takes it
_FAULT_DEFAULTS: dict[str, Any] = {
    "restart_after_s": 20.0,
    "connection": "reset",
    "factor": 4.0,
    "for_s": 20.0,
    "error_rate": 0.3,
    "extra_ms": 200.0,
    "mtbf_s": 60.0,
    "mttr_s": 10.0,
}


def _selector_text(workers: Any) -> str:
    """A fault's ``workers`` as the row's text field shows it: ``5``, ``25%``, ``all``, or
    ``w-3, w-7``."""
    if isinstance(workers, list | tuple):
        return ", ".join(str(name) for name in workers)
    return str(workers)


def _selector_value(text: str) -> Any:
    """The text field back as the scenario writes ``workers``: a count, a percentage, ``all``
    or a list of names (anything else goes to the loader as names, which names the error)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if text == "all" or text.endswith("%"):
        return text
    return [name for name in re.split(r"[\s,]+", text.strip("[]")) if name]


class FaultRow:
    """One fault of the schedule: its kind decides which fields show (the schema's keys).

    ``workers`` is a text field taking every selector the schema does (a count ``5``, a share
    ``25%``, ``all``, names ``w-3, w-7``), so a scenario's fault is shown as written. For the
    keys a fault may leave out (``restart_after_s``, ``for_s``) 0 means "left out".
    """

    def __init__(self, fault: dict[str, Any], worker_count: int, duration_s: float) -> None:
        fault = dict(fault)
        kind = fault.get("kind", "crash")
        self.kind = w.Dropdown(
            options=list(FAULT_KINDS), value=kind, layout=w.Layout(width="150px")
        )

        # one Layout per widget: fields are shown and hidden one by one
        def short() -> w.Layout:
            return w.Layout(width="190px")

        style = {"description_width": "95px"}
        self.at_s = w.BoundedFloatText(
            value=fault.get("at_s", round(duration_s * 0.4)),
            min=0.0,
            max=1e9,
            description="at s",
            style=style,
            layout=short(),
        )
        self.workers = w.Text(
            value=_selector_text(fault.get("workers", max(1, worker_count // 4))),
            placeholder="5, 25%, all or w-1, w-3",
            continuous_update=False,  # validated on Enter or leaving the field, not per key
            description="workers",
            style=style,
            layout=short(),
        )
        self.params: dict[str, w.ValueWidget] = {}
        for key, default in _FAULT_DEFAULTS.items():
            value = fault.get(key, default)
            if value is None:  # left out in the scenario (never restarted, to the end)
                value = 0.0
            if key == "connection":
                self.params[key] = w.Dropdown(
                    options=list(CONNECTION_MODES),
                    value=value,
                    description=key,
                    style=style,
                    layout=short(),
                )
            else:
                self.params[key] = w.BoundedFloatText(
                    value=value, min=0.0, max=1e9, description=key, style=style, layout=short()
                )
        self.remove = w.Button(description="remove", icon="trash", layout=w.Layout(width="90px"))
        self.kind.observe(lambda _change: self.refresh(), names="value")
        self.refresh()

    def inputs(self) -> list[w.ValueWidget]:
        return [self.kind, self.at_s, self.workers, *self.params.values()]

    def view(self) -> w.Widget:
        fields = w.HBox(
            [self.at_s, self.workers, *self.params.values()],
            layout=w.Layout(flex_flow="row wrap", width="600px"),
        )
        return w.HBox([self.kind, fields, self.remove])

    def refresh(self) -> None:
        keys = FAULT_KEYS[self.kind.value]
        _show(self.at_s, self.kind.value != "random_crashes")
        _show(self.workers, "workers" in keys)
        for key, widget in self.params.items():
            _show(widget, key in keys)

    def spec(self) -> dict[str, Any]:
        """The fault as the scenario file would write it."""
        kind = self.kind.value
        keys = FAULT_KEYS[kind]
        out: dict[str, Any] = {"kind": kind}
        if kind != "random_crashes":
            out["at_s"] = float(_number(self.at_s.value))
        if "workers" in keys:
            out["workers"] = _selector_value(self.workers.value)
        for key in keys:
            if key in self.params:
                value = self.params[key].value
                if key in _FAULT_OPTIONAL and value == 0:
                    continue
                out[key] = value if isinstance(value, str) else float(_number(value))
        return out


class FaultControls(Controls):
    """The fault schedule (add, edit, remove faults) and the registry's failure detector."""

    title = "Faults"
    plots = ("recovery_timeline", "latency_percentiles")

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario)
        self.detector = w.Dropdown(
            options=list(DETECTORS),
            value=scenario.registry.detector,
            description="detector",
            style=_STYLE,
            layout=_layout(),
        )
        self.rows: list[FaultRow] = []
        self.box = w.VBox()
        self.add_button = w.Button(description="Add fault", icon="plus")
        self.add_button.on_click(lambda _b: self.add({}))
        for fault in scenario.resolved.get("faults") or []:
            self.add(fault, notify=False)

    def add(self, fault: dict[str, Any], *, notify: bool = True) -> FaultRow:
        row = FaultRow(fault, self.scenario.workers.count, self.scenario.duration_s)
        row.remove.on_click(lambda _b: self.remove(row))
        for widget in row.inputs():
            widget.observe(lambda _change: self._notify(), names="value")
        self.rows.append(row)
        self.box.children = [r.view() for r in self.rows]
        if notify:
            self._notify()
        return row

    def remove(self, row: FaultRow) -> None:
        self.rows.remove(row)
        self.box.children = [r.view() for r in self.rows]
        self._notify()

    def inputs(self) -> list[w.ValueWidget]:
        return [self.detector]

    def view(self) -> w.Widget:
        return w.VBox([self.detector, self.box, self.add_button])

    def overrides(self) -> list[str]:
        return [
            f"registry.detector={self.detector.value}",
            f"faults={_flow([row.spec() for row in self.rows])}",
        ]


# -- panels --------------------------------------------------------------------------------------


def controls_for(scenario: Scenario) -> list[type[Controls]]:
    """Every group a scenario has something for: balancing and load always; the rest by section."""
    groups: list[type[Controls]] = [BalancingControls, LoadControls, ConsistencyControls]
    if scenario.batching is not None:
        groups.append(BatchingControls)
    if scenario.faults:
        groups.append(FaultControls)
    return groups


class Panel:
    """Controls over one scenario, a Run button with progress, plots that never go stale, A/B."""

    #: what a named panel is about; ``Panel`` itself picks controls and plots by scenario
    default_scenario: ClassVar[str] = "quickstart"
    default_controls: ClassVar[tuple[type[Controls], ...] | None] = None
    default_plots: ClassVar[tuple[str, ...] | None] = None
    default_quick: ClassVar[tuple[str, ...]] = QUICK_OVERRIDES

    def __init__(
        self,
        scenario: str | Path | None = None,
        *overrides: str,
        controls: Sequence[type[Controls]] | None = None,
        plots: Sequence[str] | None = None,
        runner: Callable[..., Results] = simulate,
        quick: tuple[str, ...] | None = None,
    ) -> None:
        scenario = self.default_scenario if scenario is None else scenario
        self.base_name = scenario
        self.base_overrides = list(overrides)
        self.quick = tuple(self.default_quick if quick is None else quick)
        self.runner = runner
        sc = load(scenario, *overrides, quick=self.quick)
        self.scenario: Scenario = sc
        controls = controls or self.default_controls or controls_for(sc)
        self.sections: list[Controls] = [cls(sc) for cls in controls]
        plots = plots or self.default_plots
        if plots is None:
            plots = list(dict.fromkeys(stem for s in self.sections for stem in s.plots))
        self.plots = list(plots)
        self.results: Results | None = None
        self.pinned: Results | None = None
        self.ran_with: list[str] = []
        self.pinned_with: list[str] = []
        self.stale = True
        self.error: str | None = None
        self.runs = 0
        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.pin_button = w.Button(description="Pin as A", icon="thumb-tack")
        self.status = w.HTML(_dom_classes=["labkit-status"])
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, layout=_layout())
        self.comparison = w.HTML()
        self.output = w.Output()
        self.run_button.on_click(lambda _b: self._clicked_run())
        self.pin_button.on_click(lambda _b: self.pin())
        for section in self.sections:
            section.on_change(self._changed)
            section.refresh()
        self._validate()
        self._set_status()

    # -- what the widgets mean -----------------------------------------------------------------
    def overrides(self) -> list[str]:
        """The widgets as ``--set`` overrides on the base scenario."""
        return [s for section in self.sections for s in section.overrides()]

    def configured(self) -> Scenario:
        """The scenario the next run will simulate; raises ``ScenarioError`` naming a bad key."""
        return load(self.base_name, *self.base_overrides, *self.overrides(), quick=self.quick)

    def section(self, kind: type[Controls]) -> Any:
        for section in self.sections:
            if isinstance(section, kind):
                return section
        raise KeyError(f"this panel has no {kind.__name__}")

    # -- actions -------------------------------------------------------------------------------
    def run(self) -> Results:
        """Simulate the panel's configuration and redraw the plots in place."""
        sc = self.configured()
        self.status.value = "<b>running…</b>"
        self.progress.value = 0.0
        results = self.runner(sc, progress=self._progress)
        self.progress.value = 1.0
        self.results = results
        self.ran_with = self.overrides()
        self.runs += 1
        self.stale = False
        self._set_status()
        self._draw()
        return results

    def pin(self) -> None:
        """Keep the latest run as "A": later runs are shown next to it."""
        if self.results is not None:
            self.pinned = self.results
            self.pinned_with = list(self.ran_with)
            self._draw()

    def unpin(self) -> None:
        self.pinned = None
        self.pinned_with = []
        if self.results is not None:
            self._draw()

    @property
    def widget(self) -> w.Widget:
        parts: list[w.Widget] = []
        for section in self.sections:
            if section.title:
                parts.append(w.HTML(f"<b>{html.escape(section.title)}</b>"))
            parts.append(section.view())
        parts += [
            w.HBox([self.run_button, self.pin_button]),
            self.progress,
            self.status,
        ]
        # stable classes for tests and user CSS: the panel and its status line
        return w.VBox([w.VBox(parts), self.comparison, self.output], _dom_classes=["labkit-panel"])

    def _ipython_display_(self) -> None:
        display(self.widget)

    # -- internals -----------------------------------------------------------------------------
    def _clicked_run(self) -> None:
        """Run from the button: errors go on screen (a callback's exception would be lost)."""
        try:
            self.run()
        except ScenarioError:
            self._set_status()
        except Exception as exc:  # the widget must say a run failed, whatever failed
            self.status.value = (
                f"<span style='color:#b00'><b>run failed:</b> {html.escape(repr(exc))}</span>"
            )
            raise

    def _progress(self, fraction: float) -> None:
        self.progress.value = fraction

    def _changed(self) -> None:
        self.stale = True
        for section in self.sections:
            section.refresh()
        self._validate()
        self._set_status()

    def _validate(self) -> None:
        try:
            self.configured()
        except ScenarioError as exc:
            self.error = str(exc)
        else:
            self.error = None
        self.run_button.disabled = self.error is not None

    def _set_status(self) -> None:
        if self.error is not None:
            text = f"<span style='color:#b00'><b>{INVALID}:</b> {html.escape(self.error)}</span>"
        elif self.results is None:
            text = "not run yet: press Run"
        elif self.stale:
            text = f"<span style='color:#b35900'><b>{STALE}</b></span> (plots show the last run)"
        else:
            text = f"{FRESH} (run {self.runs})"
        self.status.value = text

    def _ab(self) -> bool:
        return self.pinned is not None and self.pinned is not self.results

    def _draw(self) -> None:
        from labkit import plots
        from labkit.report import draw_plot, plot_applies

        assert self.results is not None
        self.comparison.value = self._comparison_html() if self._ab() else ""
        figures = []
        for stem in self.plots:
            if not plot_applies(stem, self.results):
                continue
            if stem in OVERLAY_PLOTS and self._ab():
                runs = [("A (pinned)", self.pinned), ("B (this run)", self.results)]
                figures.append(getattr(plots, stem)(runs))
            else:
                figures.append(draw_plot(stem, self.results))
        # figures go in as PNGs replacing the old ones: the same in a notebook, in a browser
        # and in a test without a kernel (the inline backend is not needed)
        self.output.outputs = ()
        for fig in figures:
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
            plt.close(fig)
            self.output.append_display_data(Image(data=buffer.getvalue(), format="png"))

    def _comparison_html(self) -> str:
        """A and B's headline figures side by side, with the settings that differ."""
        from labkit.compare import headline

        assert self.pinned is not None and self.results is not None
        a, b = headline(self.pinned.summary), headline(self.results.summary)
        rows = []
        for key in [k for k in a if k in b]:
            va, vb = a[key], b[key]
            change = ""
            if isinstance(va, int | float) and isinstance(vb, int | float) and va:
                change = f"{(vb - va) / abs(va):+.0%}"
            cells = [_cell(va), _cell(vb), change]
            rows.append(
                f"<tr><td{_PAD}>{html.escape(key)}</td>"
                + "".join(f"<td{_NUM}>{c}</td>" for c in cells)
                + "</tr>"
            )
        settings = ", ".join(html.escape(s) for s in _differing(self.pinned_with, self.ran_with))
        settings = settings or "none (same settings)"
        return (
            "<b>A (pinned) vs B (this run)</b>"
            f"<div><small>B differs in: {settings}</small></div>"
            "<table style='border-collapse:collapse'>"
            f"<tr><th{_PAD}>figure</th><th{_NUM}>A</th><th{_NUM}>B</th><th{_NUM}>B vs A</th></tr>"
            f"{''.join(rows)}</table>"
        )


_PAD = " style='padding:1px 12px 1px 0;text-align:left'"
_NUM = " style='padding:1px 0 1px 16px;text-align:right;font-variant-numeric:tabular-nums'"


def _differing(a: Sequence[str], b: Sequence[str]) -> list[str]:
    """B's overrides that A did not have, and the keys A set that B leaves as the scenario has
    them (a group turned off, a slider moved back): a panel writes only what it changes."""
    a_sets = dict(o.split("=", 1) for o in a)
    b_sets = dict(o.split("=", 1) for o in b)
    out = []
    for key in dict.fromkeys([*b_sets, *a_sets]):
        if key not in b_sets:
            out.append(f"{key} as in the scenario (A: {a_sets[key]})")
        elif a_sets.get(key) != b_sets[key]:
            out.append(f"{key}={b_sets[key]}")
    return out


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}"
    return html.escape(f"{value:,}" if isinstance(value, int) else str(value))


class BalancingPanel(Panel):
    """Strategy, adaptive weights (shown normalised to sum 1), load and fleet size."""

    default_scenario = "heterogeneous_fleet"
    default_controls = (BalancingControls, LoadControls)
    default_plots = ("latency_percentiles", "worker_load")

    def __init__(self, scenario: str | Path | None = None, *overrides: str, **kwargs: Any) -> None:
        super().__init__(scenario, *overrides, **kwargs)
        balancing: BalancingControls = self.section(BalancingControls)
        load_: LoadControls = self.section(LoadControls)
        self.strategy = balancing.strategy
        self.weights = balancing.weights
        self.weights_used = balancing.weights_used
        self.rate = load_.rate
        self.workers = load_.workers

    def normalised_weights(self) -> dict[str, float]:
        return self.section(BalancingControls).normalised_weights()


class ConsistencyPanel(Panel):
    """Registry view and state store models: staleness against latency."""

    default_scenario = "state_consistency"
    default_controls = (ConsistencyControls, LoadControls)
    default_plots = ("latency_percentiles", "t_visibility", "state_latency")


class BatchingPanel(Panel):
    """Batch limit, delay, per-batch cost and the AIMD target, against load."""

    default_scenario = "batching"
    default_controls = (BatchingControls, LoadControls)
    default_plots = ("latency_percentiles", "batch_sizes", "batch_limit")


class FaultPanel(Panel):
    """A fault schedule and the failure detector; the recovery timeline shows the cost.

    Faults happen at set times, so quick mode keeps the scenario's length (no quick
    overrides); pass a lighter load as an override to make it cheaper.
    """

    default_scenario = "failure_crash"
    default_controls = (FaultControls, LoadControls)
    default_plots = ("recovery_timeline", "latency_percentiles", "utilization_heatmap")
    default_quick = ()
