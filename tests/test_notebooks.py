"""Every notebook in notebooks/ and notebooks/solutions/ runs top to bottom without error, executed by nbmake in its own folder.

The tests call nbmake's runner (``nbmake.nb_run.NotebookRun``, what ``pytest --nbmake`` runs for
each notebook) so that they keep the ``notebook`` marker: ``python -m pytest -m notebook`` runs
only these, ``-m "not notebook"`` skips them. ``python -m pytest --nbmake notebooks/`` runs the
same notebooks through nbmake's own collector. Nothing is written back to the notebooks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbmake.nb_run import NotebookRun

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb")) + sorted((NOTEBOOKS / "solutions").glob("*.ipynb"))
TIMEOUT_S = 600  # per cell, as nbmake's --nbmake-timeout
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colours of IPython's tracebacks
_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}


class NotebookFailed(AssertionError):
    """A notebook cell raised, or the kernel could not run it; the message has nbmake's summary and trace."""


def execute_notebook(path: Path, timeout: int = TIMEOUT_S) -> nbformat.NotebookNode:
    """Run a notebook with nbmake (python3 kernel, its own folder); raises ``NotebookFailed`` on an error."""
    os.environ.update({k: os.environ.get(k, v) for k, v in _ENV.items()})
    result = NotebookRun(Path(path), timeout, kernel="python3").execute()
    if result.error is not None:
        err = result.error
        raise NotebookFailed(_ANSI.sub("", f"{Path(path).name}, cell {err.failing_cell_index}: {err.summary}\n{err.trace}"))
    return result.nb


def test_notebooks_exist():
    assert PATHS, f"no notebooks found in {NOTEBOOKS}"


def test_every_notebook_has_its_solutions():
    lessons = {p.stem[:2] for p in PATHS if p.parent == NOTEBOOKS}
    solved = {p.stem[:2] for p in PATHS if p.parent.name == "solutions"}
    assert lessons and lessons == solved, f"notebooks without solutions: {sorted(lessons - solved)}"


def test_a_failing_cell_is_reported(tmp_path: Path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "broken.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(NotebookFailed, match="broken.ipynb, cell 1: ValueError: broken on purpose"):
        execute_notebook(path, timeout=60)


@pytest.mark.notebook
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs(path: Path):
    nb = execute_notebook(path)
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code"), f"{path.name}: a code cell did not run"
