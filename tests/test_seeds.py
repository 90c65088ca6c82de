"""Several seeds of one run (``seeds.py``, ``--seeds K``) and best-of-N on the tuned policy (``tuned_best_of_n``)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from rlaifv_lib.cli import _table
from rlaifv_lib.errors import ConfigError
from rlaifv_lib.pipeline import RLAIFVConfig, config_from_dict
from rlaifv_lib.seeds import aggregate, chair_i_cut, mean_std, seed_dirs

ROOT = Path(__file__).resolve().parents[1]


def _summary(base: float, last: float, tuned: float | None = None) -> dict:
    """A two-row summary.json with a best-of-N entry (and a tuned one when ``tuned`` is given)."""
    rows = [{"chair_i": base, "coverage": 0.8, "n_pairs": 0}, {"chair_i": last, "coverage": 0.9, "n_pairs": 10}]
    best = {"n": 4, "prompts": 10, "chair_i": last / 2, "random_chair_i": base, "loglik_chair_i": last}
    out = {"rounds": rows, "best_of_n": best}
    if tuned is not None:
        out["tuned_best_of_n"] = {"n": 16, "prompts": 10, "chair_i": tuned, "random_chair_i": last, "loglik_chair_i": tuned}
    return out


def test_seed_dirs_keep_the_first_seed_in_out(tmp_path):
    assert seed_dirs(tmp_path / "demo", 0, 3) == [(0, tmp_path / "demo"), (1, tmp_path / "demo-seed1"), (2, tmp_path / "demo-seed2")]
    assert seed_dirs("runs/x", 5, 1) == [(5, Path("runs/x"))]
    with pytest.raises(ConfigError, match="--seeds"):
        seed_dirs("runs/x", 0, 0)


def test_mean_std_is_over_the_values_that_exist():
    m = mean_std([0.1, None, 0.3])
    assert m["n"] == 2 and math.isclose(m["mean"], 0.2) and math.isclose(m["std"], math.sqrt(0.02))
    assert mean_std([0.5]) == {"mean": 0.5, "std": None, "n": 1}
    assert mean_std([None, None]) is None


def test_aggregate_gives_mean_std_per_row_and_chair_i_cuts():
    agg = aggregate([_summary(0.2, 0.05, 0.02), _summary(0.1, 0.05, 0.01)])
    assert math.isclose(agg["rounds"][0]["chair_i"]["mean"], 0.15) and math.isclose(agg["rounds"][1]["n_pairs"]["mean"], 10)
    assert math.isclose(agg["tuned_best_of_n"]["chair_i"]["mean"], 0.015)
    cuts = agg["chair_i_cut"]
    assert math.isclose(cuts["round 1"]["mean"], (0.75 + 0.5) / 2)  # each seed against its own baseline
    assert math.isclose(cuts["tuned bo16"]["mean"], 0.9) and math.isclose(cuts["tuned bo16"]["std"], 0.0, abs_tol=1e-12)
    assert set(cuts) == {"round 1", "best-of-4", "random", "loglik", "tuned bo16", "tuned rand", "tuned ll"}
    assert chair_i_cut({"chair_i": 0.0}, {"chair_i": 0.1}) is None  # no baseline hallucination: a cut is undefined
    with pytest.raises(ValueError, match="rounds"):
        aggregate([_summary(0.2, 0.1), {**_summary(0.2, 0.1), "rounds": [{"chair_i": 0.2}]}])
    with pytest.raises(ValueError, match="tuned_best_of_n"):
        aggregate([_summary(0.2, 0.1, 0.01), _summary(0.2, 0.1)])


def test_table_prints_mean_std_and_the_tuned_rows_after_the_existing_ones():
    agg = aggregate([_summary(0.2, 0.05, 0.02), _summary(0.1, 0.05, 0.01)])
    lines = _table(agg["rounds"], agg["best_of_n"], tuned=agg["tuned_best_of_n"]).splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["baseline", "round", "best-of-4", "random", "loglik", "tuned", "tuned", "tuned"]
    assert lines[2].split()[1] == "0.150±0.071" and lines[-3].startswith("tuned bo16") and "0.015±0.007" in lines[-3]
    single = _summary(0.2, 0.05, 0.02)
    plain = _table(single["rounds"], single["best_of_n"]).splitlines()
    assert _table(single["rounds"], single["best_of_n"], tuned=single["tuned_best_of_n"]).splitlines()[: len(plain)] == plain


@pytest.mark.parametrize("bad", [1, -2])
def test_tuned_best_of_n_is_validated(bad):
    with pytest.raises(ConfigError, match="tuned_best_of_n"):
        RLAIFVConfig(tuned_best_of_n=bad)


def test_tuned_best_of_n_off_leaves_the_run_header_as_before():
    assert "tuned_best_of_n" not in RLAIFVConfig().to_dict()  # runs made before the setting existed still resume
    on = RLAIFVConfig(tuned_best_of_n=16)
    assert on.to_dict()["tuned_best_of_n"] == 16 and config_from_dict(on.to_dict()) == on
    import yaml

    assert config_from_dict(yaml.safe_load((ROOT / "configs" / "moonshot.yaml").read_text())).tuned_best_of_n == 16


@pytest.mark.slow
def test_run_with_seeds_writes_each_seed_and_the_mean_std_table(tmp_path):
    out = tmp_path / "moon"
    args = ["run", "--config", str(ROOT / "configs" / "moonshot.yaml"), "--smoke", "--rounds", "1", "--seeds", "2", "--out", str(out), "--threads", "1"]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "rlaifv_lib.cli", *args], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tuned bo16" in done.stdout and "tuned ll" in done.stdout and "±" in done.stdout and "CHAIR_i cut" in done.stdout
    agg = json.loads((out / "seeds_summary.json").read_text())
    assert agg["seeds"] == [0, 1] and agg["runs"] == [str(out), str(tmp_path / "moon-seed1")]
    first, second = (json.loads((d / "summary.json").read_text()) for d in (out, tmp_path / "moon-seed1"))
    assert first["config"]["seed"] == 0 and second["config"]["seed"] == 1
    assert (out / "tuned_best_of_n.json").exists() and first["tuned_best_of_n"]["n"] == 16
    assert agg["tuned_best_of_n"]["chair_i"]["n"] == 2
    assert math.isclose(agg["rounds"][1]["chair_i"]["mean"], (first["rounds"][1]["chair_i"] + second["rounds"][1]["chair_i"]) / 2)
    bad = subprocess.run([sys.executable, "-m", "rlaifv_lib.cli", "demo", "--smoke", "--seeds", "0", "--out", str(tmp_path / "x")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert bad.returncode == 1 and "--seeds must be >= 1" in bad.stderr
