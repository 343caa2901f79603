"""Helpers notebooks share, so no logic lives only in a notebook.

Notebooks run at a meaningful size for people and at a documented *quick* size under CI
(``LABKIT_QUICK=1``, set by ``make test``), so nbmake stays well under a minute per notebook.
"""

from __future__ import annotations

import os
from pathlib import Path

import labkit
from labkit.scenario import Scenario, load_scenario

#: overrides applied in quick mode: shorter runs, same fleet and load
QUICK_OVERRIDES = ("duration_s=20", "warmup_s=5")


def quick_mode() -> bool:
    return os.environ.get("LABKIT_QUICK", "").strip().lower() not in ("", "0", "false", "no")


def scenarios_dir() -> Path:
    """The repository's ``scenarios/`` (labkit installed in development mode), else ./scenarios."""
    here = Path(labkit.__file__).resolve().parents[1] / "scenarios"
    return here if here.is_dir() else Path.cwd() / "scenarios"


def scenario_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    return scenarios_dir() / f"{path}.yaml" if not path.suffix else path


def load(
    name_or_path: str | Path, *overrides: str, quick: tuple[str, ...] = QUICK_OVERRIDES
) -> Scenario:
    """Load a shipped scenario by name (``"quickstart"``) or path, at quick size under CI.

    ``quick`` are the overrides quick mode adds; scenarios whose events happen at set times
    (faults, cache node failures) keep their length and pass a lighter load instead.
    """
    extra = list(quick) if quick_mode() else []
    return load_scenario(scenario_path(name_or_path), [*extra, *overrides])


def quick(*overrides: str) -> list[str]:
    """``overrides`` in quick mode, nothing otherwise (for ``labkit.compare`` calls)."""
    return list(overrides) if quick_mode() else []
