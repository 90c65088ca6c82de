"""Every notebook in notebooks/ and notebooks/solutions/ runs top to bottom without error, executed by nbmake in its own
folder, and every cell that calls a ``rlaifv_lib.plots`` helper shows its figure as an image.

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

from rlaifv_lib import plots

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb")) + sorted((NOTEBOOKS / "solutions").glob("*.ipynb"))
TIMEOUT_S = 600  # per cell, as nbmake's --nbmake-timeout
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colours of IPython's tracebacks
_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
PLOT_HELPERS = sorted(n for n in plots.__all__ if n not in ("DEFAULT_METRICS", "NotebookFigure", "save_figure"))
_PLOT_CALL = re.compile(rf"\b(?:{'|'.join(PLOT_HELPERS)})\s*\(")
_IMAGES = ("image/png", "image/svg+xml")


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


def cells_missing_a_figure(nb: nbformat.NotebookNode) -> list[int]:
    """Indices of the executed code cells that call a plot helper but show no image."""
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and _PLOT_CALL.search(c.source)
            and not any(kind in o.get("data", {}) for o in c.get("outputs", []) for kind in _IMAGES)]  # fmt: skip


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
    assert not cells_missing_a_figure(nb), f"{path.name}: cells {cells_missing_a_figure(nb)} call a plot helper but show no image"


def test_a_plot_cell_without_an_image_is_reported():
    cells = [nbformat.v4.new_code_cell("dpo_curves(log);"), nbformat.v4.new_code_cell("fig = scene_grid(images)"), nbformat.v4.new_code_cell("x = 1")]
    cells[1].outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})]
    assert cells_missing_a_figure(nbformat.v4.new_notebook(cells=cells)) == [0]
