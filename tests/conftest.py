from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"


def pytest_sessionstart(session: pytest.Session) -> None:
    """tests/test_compiled.py runs suites against the compiled build with this set: a run that
    silently imported the sources instead would prove nothing."""
    if os.environ.get("LABKIT_EXPECT_COMPILED") == "1":
        from labkit._compiled import is_compiled

        if not is_compiled():
            import labkit

            raise pytest.UsageError(f"expected the compiled build, imported {labkit.__file__}")


@pytest.fixture
def scenarios_dir() -> Path:
    return SCENARIOS
