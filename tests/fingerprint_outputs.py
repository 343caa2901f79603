"""Print a fingerprint of the simulator's outputs for every shipped scenario, as JSON.

Run as a script (``python tests/fingerprint_outputs.py [SCENARIO_DIR]``) by
``tests/test_compiled.py``, once
against the pure-Python package and once against the compiled build, which must agree bit for
bit: records, every frame with its dtypes and categories, and the summary without wall-clock
figures. Each scenario runs shortened to 20 s when its own events allow, else whole. Both runs
must read the same directory: the summary names the scenario's file.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHORT = ("duration_s=20", "warmup_s=5")
WALL_CLOCK = {"wall_s", "requests_per_wall_s"}
FRAMES = (
    "records",
    "timeseries",
    "workers",
    "samples",
    "faults",
    "events",
    "health",
    "alerts",
    "recovery",
    "state_ops",
    "cache",
    "batching",
    "load_reports",
)


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in WALL_CLOCK}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _bits(values: pd.Series) -> bytes:
    """A column's exact content: numbers and times as their bits, categories as codes and
    labels, anything else (strings, tuples, dicts) as its text."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return repr(list(values.cat.categories)).encode() + values.cat.codes.to_numpy().tobytes()
    array = values.to_numpy()
    if array.dtype.kind in "biufcmM":  # bool, int, float, complex, times: not pointers
        return array.tobytes()
    return repr(values.tolist()).encode()


def frame_hash(frame: pd.DataFrame | None) -> str:
    if frame is None or len(frame.columns) == 0:
        return "empty"
    h = hashlib.sha256(str(list(frame.columns)).encode())
    h.update(str(list(frame.dtypes.astype(str))).encode())
    h.update(_bits(frame.index.to_series()))
    for column in frame.columns:
        h.update(_bits(frame[column]))
    return h.hexdigest()[:16]


def main() -> int:
    from labkit._compiled import is_compiled
    from labkit.errors import ScenarioError
    from labkit.scenario import load_scenario
    from labkit.sim import simulate

    out: dict[str, Any] = {"compiled": is_compiled(), "scenarios": {}}
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "scenarios"
    for path in sorted(folder.glob("*.yaml")):
        try:
            scenario = load_scenario(path, list(SHORT))
        except ScenarioError:  # events at set times past 20 s: the whole run
            scenario = load_scenario(path)
        # what Dask does to a sweep's scenarios (compiled frozen dataclasses once failed here)
        scenario = pickle.loads(pickle.dumps(scenario))
        results = simulate(scenario)
        summary = json.dumps(_strip(results.summary), sort_keys=True, default=str)
        parts = {"summary": hashlib.sha256(summary.encode()).hexdigest()[:16]}
        parts.update({name: frame_hash(getattr(results, name, None)) for name in FRAMES})
        out["scenarios"][path.stem] = parts
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
