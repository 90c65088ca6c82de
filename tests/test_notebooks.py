"""Every notebook in notebooks/ runs top to bottom without error (what nbmake checks), in its own folder.

Marked ``notebook``: ``python -m pytest -m notebook`` runs only these, ``-m "not notebook"`` skips
them. ``python -m pytest --nbmake notebooks/`` runs the same notebooks through nbmake.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
TIMEOUT_S = 600  # per cell, as nbmake's --nbmake-timeout


def execute_notebook(path: Path, timeout: int = TIMEOUT_S) -> nbformat.NotebookNode:
    """Run a notebook in its own folder with the python3 kernel; raises ``CellExecutionError`` on failure."""
    nb = nbformat.read(path, as_version=4)
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
    os.environ.update({k: os.environ.get(k, v) for k, v in env.items()})
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def test_notebooks_exist():
    assert PATHS, f"no notebooks found in {NOTEBOOKS}"


@pytest.mark.notebook
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs(path: Path):
    nb = execute_notebook(path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"
