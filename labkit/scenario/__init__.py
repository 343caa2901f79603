"""Scenario files: load, override, validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labkit.errors import ScenarioError
from labkit.scenario.loader import apply_overrides, line_for, load_yaml
from labkit.scenario.schema import Scenario, parse_scenario

__all__ = ["Scenario", "ScenarioError", "load_scenario", "parse_scenario", "scenario_from_dict"]


def load_scenario(
    path: str | Path, overrides: list[str] | None = None, *, seed: int | None = None
) -> Scenario:
    """Read, override (``--set`` style ``a.b=V``) and validate a scenario file.

    Every problem raises one ``ScenarioError`` naming the file, line and key path.
    """
    path = Path(path)
    source = str(path)
    data, marks = load_yaml(path)
    try:
        if overrides:
            data = apply_overrides(data, overrides)
        if seed is not None:
            data = {**data, "seed": seed}
        return parse_scenario(data, source=source, base_dir=path.resolve().parent)
    except ScenarioError as exc:
        raise exc.located(source, line_for(marks, exc.path)) from None


def scenario_from_dict(
    data: dict[str, Any], overrides: list[str] | None = None, base_dir: Path | None = None
) -> Scenario:
    if overrides:
        data = apply_overrides(data, overrides)
    return parse_scenario(data, base_dir=base_dir)
