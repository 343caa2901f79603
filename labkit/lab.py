"""Widget panels for the notebooks: tune a scenario, run it, see the plots — never stale.

A panel is built on a scenario and turns its widgets into ``--set`` style overrides, so what a
slider does is exactly what ``labkit run --set`` would do and nothing lives only in the notebook.
Changing any widget marks the plots "out of date" until the next run (a run takes seconds, so
it is not automatic: dragging a slider must not start ten simulations). A panel can pin a run
as "A" and show every later run side by side with it.

The first panel is ``BalancingPanel`` (strategy, adaptive weights, load, fleet size); the
others (consistency, batching, faults) follow the same pattern.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as w
import matplotlib.pyplot as plt
from IPython.display import Image, display

from labkit.core.balancing import DEFAULT_WEIGHTS, STRATEGIES, normalise_weights
from labkit.notebook import load
from labkit.results import Results
from labkit.scenario import Scenario
from labkit.sim import simulate

STALE = "out of date: press Run"
FRESH = "up to date"
#: strategies whose picks the adaptive weights change
WEIGHTED = ("adaptive",)


class BalancingPanel:
    """Strategy, adaptive weights (shown normalised to sum 1), load and fleet size."""

    def __init__(
        self,
        scenario: str | Path = "heterogeneous_fleet",
        *overrides: str,
        runner: Callable[..., Results] = simulate,
    ) -> None:
        self.base_name = scenario
        self.base_overrides = list(overrides)
        self.runner = runner
        sc = load(scenario, *overrides)
        self.scenario: Scenario = sc
        self.results: Results | None = None
        self.pinned: Results | None = None
        self.stale = True
        self.runs = 0
        style = {"description_width": "110px"}
        layout = w.Layout(width="420px")
        self.strategy = w.Dropdown(
            options=list(STRATEGIES),
            value=sc.balancer.strategy,
            description="strategy",
            style=style,
            layout=layout,
        )
        self.weights = {
            name: w.FloatSlider(
                value=sc.balancer.weights.get(name, 0.0),
                min=0.0,
                max=1.0,
                step=0.05,
                description=name,
                style=style,
                layout=layout,
                continuous_update=False,
            )
            for name in DEFAULT_WEIGHTS
        }
        self.weights_used = w.HTML()
        rate = sc.workload.arrival.rate_rps or 1.0
        self.rate = w.FloatSlider(
            value=rate,
            min=rate / 4,
            max=rate * 1.5,
            step=rate / 40,
            description="load req/s",
            style=style,
            layout=layout,
            continuous_update=False,
            readout_format=".0f",
        )
        self.workers = w.IntSlider(
            value=sc.workers.count,
            min=1,
            max=max(2, sc.workers.count * 2),
            description="workers",
            style=style,
            layout=layout,
            continuous_update=False,
        )
        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.pin_button = w.Button(description="Pin as A", icon="thumb-tack")
        self.status = w.HTML()
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, layout=w.Layout(width="420px"))
        self.output = w.Output()
        self.run_button.on_click(lambda _: self.run())
        self.pin_button.on_click(lambda _: self.pin())
        for widget in (self.strategy, self.rate, self.workers, *self.weights.values()):
            widget.observe(self._changed, names="value")
        self._refresh_weights()
        self._set_status()

    # -- what the widgets mean -----------------------------------------------------------------
    def normalised_weights(self) -> dict[str, float]:
        raw = {name: s.value for name, s in self.weights.items()}
        if sum(raw.values()) <= 0:
            return dict(DEFAULT_WEIGHTS)
        return normalise_weights(raw)

    def overrides(self) -> list[str]:
        """The widgets as ``--set`` overrides on the base scenario."""
        weights = self.normalised_weights()
        flow = ", ".join(f"{k}: {v:.6g}" for k, v in weights.items())
        sets = [
            f"balancer.strategy={self.strategy.value}",
            f"workers.count={self.workers.value}",
            "balancer.weights={" + flow + "}",
        ]
        if self.scenario.workload.arrival.process == "poisson":
            sets.append(f"workload.arrival.rate_rps={self.rate.value:.6g}")
        return sets

    # -- actions -------------------------------------------------------------------------------
    def run(self) -> Results:
        """Simulate the panel's configuration and redraw the plots in place."""
        self.status.value = "<b>running…</b>"
        self.progress.value = 0.0
        sc = load(self.base_name, *self.base_overrides, *self.overrides())
        results = self.runner(sc, progress=self._progress)
        self.progress.value = 1.0
        self.results = results
        self.runs += 1
        self.stale = False
        self._set_status()
        self._draw()
        return results

    def pin(self) -> None:
        """Keep the latest run as "A": later runs are shown next to it."""
        if self.results is not None:
            self.pinned = self.results
            self._draw()

    @property
    def widget(self) -> w.Widget:
        controls = w.VBox(
            [
                self.strategy,
                *self.weights.values(),
                self.weights_used,
                self.rate,
                self.workers,
                w.HBox([self.run_button, self.pin_button]),
                self.progress,
                self.status,
            ]
        )
        return w.VBox([controls, self.output])

    def _ipython_display_(self) -> None:
        display(self.widget)

    # -- internals -----------------------------------------------------------------------------
    def _progress(self, fraction: float) -> None:
        self.progress.value = fraction

    def _changed(self, change: Any) -> None:
        self.stale = True
        self._refresh_weights()
        self._set_status()

    def _refresh_weights(self) -> None:
        used = self.normalised_weights()
        shares = " · ".join(f"{k} {v:.2f}" for k, v in used.items())
        active = self.strategy.value in WEIGHTED
        for slider in self.weights.values():
            slider.disabled = not active
        note = "" if active else f" (only {', '.join(WEIGHTED)} uses them)"
        self.weights_used.value = f"weights used (sum 1): {shares}{note}"

    def _set_status(self) -> None:
        if self.results is None:
            text = "not run yet: press Run"
        elif self.stale:
            text = f"<span style='color:#b35900'><b>{STALE}</b></span> (plots show the last run)"
        else:
            text = f"{FRESH} (run {self.runs})"
        self.status.value = text

    def _draw(self) -> None:
        from labkit import plots

        assert self.results is not None
        runs: Any = self.results
        if self.pinned is not None and self.pinned is not self.results:
            runs = [("A (pinned)", self.pinned), ("B (this run)", self.results)]
        # figures go in as PNGs replacing the old ones: the same in a notebook, in a browser
        # and in a test without a kernel (the inline backend is not needed)
        self.output.outputs = ()
        for fig in (plots.latency_percentiles(runs), plots.worker_load(self.results)):
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
            plt.close(fig)
            self.output.append_display_data(Image(data=buffer.getvalue(), format="png"))
