"""End-to-end miniature RLAIF-V round on the committed toy policy; completed stages are skipped on re-run."""

from __future__ import annotations

import json

import pytest

from rlaifv_lib.claims import ClaimsConfig
from rlaifv_lib.dpo import DPOSettings
from rlaifv_lib.errors import ConfigError, RunVersionError
from rlaifv_lib.feedback import FeedbackConfig
from rlaifv_lib.pipeline import RLAIFVConfig, RLAIFVRun, SUMMARY_KEYS
from rlaifv_lib.sampling import SamplingConfig

STAGES = ["prompts.jsonl", "candidates.jsonl", "claims.jsonl", "verdicts.jsonl", "scored.jsonl", "pairs.jsonl",
          "pair_stats.json", "eval.json"]  # fmt: skip


def tiny_config(**kw) -> RLAIFVConfig:
    """A miniature run: a handful of prompts, short DPO, small evaluation."""
    base = dict(
        rounds=1,
        prompts_per_round=12,
        sampling=SamplingConfig(n=4, max_new_tokens=48, batch_size=48),
        claims=ClaimsConfig(),
        feedback=FeedbackConfig(batch_size=128),
        dpo=DPOSettings(max_steps=2, batch_size=4, progress=False),
        eval_scenes=10,
        best_of_n=2,
        best_of_n_prompts=4,
    )
    base.update(kw)
    return RLAIFVConfig(**base)


@pytest.mark.slow
def test_miniature_round_writes_every_artifact_and_skips_done_stages(tmp_path):
    run = RLAIFVRun(tmp_path / "run", tiny_config(), progress=False)
    summary = run.run()
    rd = tmp_path / "run" / "round_1"
    for name in STAGES:
        assert (rd / name).exists(), name
    assert (rd / "model" / "model.safetensors").exists()
    assert len(summary["rounds"]) == 2
    for row in summary["rounds"]:
        assert set(SUMMARY_KEYS) <= set(row)
    assert {"chair_i", "random_chair_i", "loglik_chair_i"} <= set(summary["best_of_n"])
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["rounds"][1]["n_pairs"] == summary["rounds"][1]["n_pairs"]

    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    again = RLAIFVRun(tmp_path / "run", tiny_config(), progress=False).run()
    assert again["rounds"] == summary["rounds"]
    changed = [p for p, t in mtimes.items() if p.exists() and p.stat().st_mtime_ns != t and p.name != "summary.json"]
    assert changed == []  # every completed stage was read back, none recomputed


def test_resuming_with_other_settings_is_refused(tmp_path):
    RLAIFVRun(tmp_path / "run", tiny_config(), progress=False)
    with pytest.raises(ConfigError, match="different configuration"):
        RLAIFVRun(tmp_path / "run", tiny_config(prompts_per_round=13), progress=False)


def test_run_from_an_incompatible_version_is_refused(tmp_path):
    RLAIFVRun(tmp_path / "run", tiny_config(), progress=False)
    header = tmp_path / "run" / "run.json"
    data = json.loads(header.read_text())
    data["format"] = 0
    header.write_text(json.dumps(data))
    with pytest.raises(RunVersionError, match="Start a new run directory"):
        RLAIFVRun(tmp_path / "run", tiny_config(), progress=False)


@pytest.mark.parametrize("bad", [dict(rounds=0), dict(sampling=SamplingConfig(n=1)), dict(best_of_n=1)])
def test_impossible_settings(bad):
    with pytest.raises(ConfigError):
        tiny_config(**bad)


# ---------------------------------------------------------------- reusing runs (notebook 06)


def test_latest_policy_and_base_and_tuned_reuse_a_finished_run(tmp_path):
    from rlaifv_lib.models import TOY_POLICY
    from rlaifv_lib.pipeline import base_and_tuned, latest_policy, quick_config

    run = tmp_path / "demo"
    assert latest_policy(run) is None
    for k in (1, 2, 10):
        (run / f"round_{k}" / "model").mkdir(parents=True)
    (run / "round_0").mkdir()
    for k in (1, 2):
        (run / f"round_{k}" / "model" / "config.json").write_text("{}")
    assert latest_policy(run) == run / "round_2" / "model"  # round_10 has no finished model
    (run / "run.json").write_text(json.dumps({"config": {"policy": "toy-policy"}}))
    base, tuned = base_and_tuned(run, tmp_path / "never-used")
    assert (base, tuned) == (str(TOY_POLICY), run / "round_2" / "model")
    assert not (tmp_path / "never-used").exists()
    cfg = quick_config(prompts_per_round=30)
    assert (cfg.rounds, cfg.prompts_per_round, cfg.sampling.n, cfg.best_of_n) == (1, 30, 6, 0)


def test_notebook_config_is_the_demos_rounds_and_rounds_is_checked(tmp_path):
    from rlaifv_lib.pipeline import RLAIFVConfig, base_and_tuned, notebook_config

    cfg, demo = notebook_config(), RLAIFVConfig()
    assert (cfg.rounds, cfg.eval_scenes, cfg.best_of_n) == (2, 60, 4)
    assert (cfg.prompts_per_round, cfg.sampling, cfg.dpo, cfg.seed) == (demo.prompts_per_round, demo.sampling, demo.dpo, demo.seed)
    for rounds in (0, 3):
        with pytest.raises(ConfigError, match="rounds must be between 1 and the config's 2"):
            base_and_tuned(tmp_path / "missing", tmp_path / "fallback", cfg, progress=False, rounds=rounds)
    assert not (tmp_path / "fallback").exists()  # checked before anything is written


@pytest.mark.slow
def test_base_and_tuned_runs_the_fallback_round(tmp_path):
    from rlaifv_lib.pipeline import base_and_tuned

    base, tuned = base_and_tuned(tmp_path / "missing", tmp_path / "quick", tiny_config(), progress=False)
    assert (tuned / "config.json").exists() and tuned == tmp_path / "quick" / "round_1" / "model"


def test_config_files_and_flags_build_one_validated_config(tmp_path):
    """config_from_dict: the preset fills its defaults, the dict wins, unknown keys and bad final values are errors."""
    from pathlib import Path

    from rlaifv_lib.cli import build_parser, run_values
    from rlaifv_lib.models import YES_NO_SUFFIX
    from rlaifv_lib.pipeline import config_from_dict

    assert config_from_dict({}) == RLAIFVConfig()  # the demo
    configs = Path(__file__).resolve().parent.parent / "configs"
    assert config_from_dict(run_values(build_parser().parse_args(["run", "--out", "x", "--config", str(configs / "toy_demo.yaml")]))) == RLAIFVConfig()
    qwen = config_from_dict({"policy": "qwen2.5-vl-3b", "dpo": {"learning_rate": 2e-5}, "prompts": "p.jsonl"})
    assert qwen.feedback.question_suffix == YES_NO_SUFFIX and qwen.load.max_pixels == 448 * 448 and qwen.dpo.lora_r == 64
    assert qwen.dpo.learning_rate == 2e-5 and qwen.claims.decomposer == "rules"
    for name in ("llava15_7b_separate_labeler", "qwen25_vl_3b_self_feedback"):
        args = build_parser().parse_args(["run", "--out", "x", "--config", str(configs / f"{name}.yaml"), "--prompts", "p.jsonl", "--n", "3"])
        cfg = config_from_dict(run_values(args))
        assert cfg.sampling.n == 3 and cfg.load.load_in_4bit and cfg.prompts == "p.jsonl"
    with pytest.raises(ConfigError, match="unknown run setting"):
        config_from_dict({"round": 2})
    with pytest.raises(ConfigError, match="unknown sampling setting"):
        config_from_dict({"sampling": {"temp": 2}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: 0\n")
    with pytest.raises(ConfigError, match="rounds"):  # validated on the final values ...
        config_from_dict(run_values(build_parser().parse_args(["run", "--out", "x", "--config", str(bad)])))
    fixed = build_parser().parse_args(["run", "--out", "x", "--config", str(bad), "--rounds", "2"])
    assert config_from_dict(run_values(fixed)).rounds == 2  # ... so a flag can repair a file's value
    with pytest.raises(ConfigError, match="rounds"):
        config_from_dict(run_values(build_parser().parse_args(["demo", "--rounds", "0"])))
    with pytest.raises(ConfigError, match="toy decomposer"):
        config_from_dict({"prompts": "p.jsonl", "claims": {"decomposer": "toy"}})
