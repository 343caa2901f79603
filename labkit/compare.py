"""Run one scenario several ways and put the headline figures side by side.

The question this lab answers is usually comparative — eventual or watched registry, batches of
1 or 16, strong or session state — so ``compare`` runs every combination of the varied keys
(a small grid, serially, in this process) and returns one tidy row per run. Every run uses the
scenario's seed: the variants see the same arrivals, keys and service times (common random
numbers), so differences come from the knob, not from luck. Big grids, repeats with derived
seeds and clusters belong to sweeps.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from labkit.errors import ScenarioError
from labkit.scenario import load_scenario
from labkit.sim import simulate

#: runs a comparison may have before it asks for a sweep instead
MAX_RUNS = 64


def parse_vary(items: Sequence[str], *, option: str = "--vary") -> dict[str, list[str]]:
    """``["a.b=1,2,3", "c=x,y"]`` → ``{"a.b": ["1","2","3"], "c": ["x","y"]}``.

    Commas inside brackets or braces belong to the value (``workers.agent_types=[a,b],[c]``).
    ``option`` is the flag errors name (``labkit sweep`` parses its ``--grid`` here too).
    """
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ScenarioError(f"{option} needs KEY=V1,V2,..., got {item!r}")
        if key in out:
            raise ScenarioError(f"{option} names {key!r} twice")
        parts = _split_top_level(values)
        if not parts or any(not p for p in parts):
            raise ScenarioError(f"{option} {key}: empty value in {values!r}")
        out[key] = parts
    return out


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return parts


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The figures a comparison shows, flat (absent sections give no columns)."""
    lat = summary["latency_ms"]
    row: dict[str, Any] = {
        "throughput_rps": summary["throughput_rps"],
        "error_rate": summary["error_rate"],
        "p50_ms": lat["p50"],
        "p95_ms": lat["p95"],
        "p99_ms": lat["p99"],
    }
    registry = summary.get("registry")
    if registry:
        row["misroutes"] = registry["misroutes"]
        row["sent_to_unreachable"] = registry["sent_to_unreachable"]
    resilience = summary.get("resilience")
    if resilience:
        row["retries"] = resilience["retries"]
    state = summary.get("state")
    if state:
        row["state_stale_fraction"] = state["stale_fraction"]
        row["state_read_p99_ms"] = state["read_ms"]["p99"]
        row["state_write_p99_ms"] = state["write_ms"]["p99"]
        row["state_conflicts"] = sum(state["conflicts"].values())
        row["state_session_retries"] = state["session_retries"]
    cache = summary.get("cache")
    if cache:
        row["cache_hit_rate"] = cache["hit_rate"]
        row["cache_stale_fraction"] = cache["stale_fraction"]
    batching = summary.get("batching")
    if batching:
        row["batch_mean_size"] = batching["served"]["mean_size"]
    return row


def compare(
    scenario: str | Path,
    vary: dict[str, list[str]],
    *,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    on_run: Callable[[int, int, dict[str, str]], None] | None = None,
) -> pd.DataFrame:
    """One row per combination of ``vary`` values: the varied keys (as given) + ``headline``.

    Every combination is validated before the first run, so a bad value fails fast.
    """
    if not vary:
        raise ScenarioError("nothing to compare: give at least one --vary KEY=V1,V2")
    keys = list(vary)
    combos = list(itertools.product(*(vary[k] for k in keys)))
    if len(combos) > MAX_RUNS:
        raise ScenarioError(
            f"{len(combos)} runs is more than a comparison should do ({MAX_RUNS}); "
            "narrow the grid or use a sweep"
        )
    scenarios = []
    for combo in combos:
        sets = [f"{k}={v}" for k, v in zip(keys, combo, strict=True)]
        scenarios.append(load_scenario(scenario, [*overrides, *sets], seed=seed))
    rows = []
    for i, (combo, sc) in enumerate(zip(combos, scenarios, strict=True)):
        values = dict(zip(keys, combo, strict=True))
        if on_run is not None:
            on_run(i, len(combos), values)
        results = simulate(sc)
        rows.append({**{k: _typed(v) for k, v in values.items()}, **headline(results.summary)})
    return pd.DataFrame(rows)


def _typed(value: str) -> Any:
    """Numbers as numbers (so plots sort 2 before 16), everything else as given."""
    try:
        number = float(value)
    except ValueError:
        return value
    if math.isfinite(number) and number.is_integer() and "." not in value:
        return int(number)
    return number


#: keys whose values are an offered load: varied together with another key, they make a curve
LOAD_KEYS = ("workload.arrival.rate_rps", "workload.arrival.mean_rps", "workload.arrival.clients")


def save_comparison(frame: pd.DataFrame, keys: Sequence[str], path: str | Path) -> Path:
    """The comparison's picture: throughput vs p99, one curve per setting, when a load key is
    varied; grouped latency bars per setting otherwise."""
    import matplotlib.pyplot as plt

    from labkit.plots_data import comparison_bars, tradeoff

    loads = [k for k in keys if k in LOAD_KEYS]
    others = [k for k in keys if k not in LOAD_KEYS]
    if len(others) > 1:
        # several knobs: one curve (or bar group) per combination of them
        frame = frame.assign(
            setting=frame[others]
            .astype(str)
            .agg(
                lambda r: ", ".join(
                    f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(others, r, strict=True)
                ),
                axis=1,
            )
        )
        others = ["setting"]
    if loads:
        by = others[0] if others else None
        fig = tradeoff(frame, by=by, label_points=loads[0])
    else:
        fig = comparison_bars(frame, others[0])
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
