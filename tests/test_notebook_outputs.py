"""nbmake only proves a notebook runs; this proves the quickstart shows its table and plots."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_quickstart.ipynb"


def test_quickstart_notebook_renders_summary_and_plots(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LABKIT_QUICK", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # as in Jupyter: the inline backend
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    tables = [o for o in outputs if "p99" in o.get("data", {}).get("text/html", "")]
    assert len(pngs) >= 4, "each plot cell must display a figure"
    assert tables, "the summary table must be displayed"
    assert os.environ.get("LABKIT_QUICK") == "1"
