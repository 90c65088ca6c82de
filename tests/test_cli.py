"""The ``rlaifv`` command as a user runs it: ``round`` steps a run one round at a time, ``demo`` finishes it.

Subprocesses in smoke mode (``--smoke``: tiny settings, seconds per round). ``pretrain-toy`` has its
own subprocess test in test_toyworld.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlaifv_lib.cli import _table, build_parser


def _rlaifv(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "rlaifv_lib.cli", *args, "--threads", "1"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_every_documented_command_exists():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {"pretrain-toy", "demo", "round", "run", "eval", "plan", "ablate"}


def test_table_names_rows_by_round_number():
    row = {"chair_i": 0.1, "chair_s": 0.2, "coverage": 0.9, "mean_words": 20.0, "labeler_accuracy": 0.95, "n_pairs": 3, "seconds": 1.0}
    lines = _table([row, row], None, numbers=[0, 2]).splitlines()
    assert lines[2].startswith("baseline") and lines[3].startswith("round 2") and len(lines) == 4


@pytest.mark.slow
def test_round_steps_a_run_then_demo_finishes_it_without_recomputing(tmp_path: Path):
    run = str(tmp_path / "run")
    first = _rlaifv("round", "--smoke", "--out", run)
    assert "round 1 of 2" in first and "round 1 " in first and "baseline" in first
    assert (tmp_path / "run" / "round_1" / "eval.json").exists() and not (tmp_path / "run" / "round_2").exists()
    assert "round 2 of 2" in _rlaifv("round", "--smoke", "--out", run)
    assert "all 2 rounds" in _rlaifv("round", "--smoke", "--out", run)
    evals = {k: (tmp_path / "run" / f"round_{k}" / "eval.json").stat().st_mtime_ns for k in (0, 1, 2)}
    table = _rlaifv("demo", "--smoke", "--out", run)
    assert all(f"round {k}" in table for k in (1, 2)) and "best-of-2" in table
    assert {k: (tmp_path / "run" / f"round_{k}" / "eval.json").stat().st_mtime_ns for k in (0, 1, 2)} == evals  # read back, not rerun
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["rounds"]) == 3 and summary["best_of_n"]["n"] == 2
    assert (tmp_path / "run" / "metrics_per_round.png").exists()
