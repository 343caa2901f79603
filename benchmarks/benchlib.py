"""Small pieces the live benchmarks share: medians over repeats, table cells, the JSON line.

Benchmarks run as scripts (``python benchmarks/bench_x.py``), so this module is imported from
the script's own directory, not from the labkit package: it is benchmark-only code.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any


def median(values: list[Any]) -> float | None:
    """The median of the values that were measured (None for a failed repeat is skipped)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def write_json(payload: dict[str, Any], dest: str) -> None:
    """One JSON line on stdout (``dest == "-"``) or into the file ``dest``."""
    line = json.dumps(payload)
    if dest == "-":
        print(line)
        return
    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(line + "\n", encoding="utf-8")
    print(f"wrote {path}")
