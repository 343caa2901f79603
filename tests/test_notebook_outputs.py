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


NOTEBOOKS = sorted(NOTEBOOK.parent.glob("*.ipynb"))


def test_no_notebook_cell_hides_its_figure() -> None:
    """labkit's plots build figures outside pyplot (no global state), so a notebook shows one
    only as a cell's value: a trailing ``;`` would hide it, and nbmake would not notice."""
    hidden = []
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            lines = [line for line in cell.source.splitlines() if line.strip()]
            if cell.cell_type == "code" and lines and lines[-1].rstrip().endswith(";"):
                hidden.append(f"{path.name} cell {i}: {lines[-1].strip()}")
    assert len(NOTEBOOKS) >= 5
    assert not hidden, "\n".join(hidden)
