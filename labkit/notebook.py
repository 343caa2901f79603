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


def load(name_or_path: str | Path, *overrides: str) -> Scenario:
    """Load a shipped scenario by name (``"quickstart"``) or path, at quick size under CI."""
    path = Path(name_or_path)
    if not path.suffix:
        path = scenarios_dir() / f"{path}.yaml"
    extra = list(QUICK_OVERRIDES) if quick_mode() else []
    return load_scenario(path, [*extra, *overrides])
