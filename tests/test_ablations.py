"""Ablations (``rlaifv ablate``): each variant changes one setting; the confounded and whole-response settings;
a smoke sweep through the command (its numbers are not asserted: at smoke size they are noise)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from rlaifv_lib.ablations import VARIANTS, AblationConfig, ablation_table, quick_ablation, variant_config
from rlaifv_lib.errors import ConfigError
from rlaifv_lib.feedback import FeedbackConfig, response_scores
from rlaifv_lib.pairs import PairConfig
from rlaifv_lib.pipeline import RLAIFVConfig
from rlaifv_lib.records import Candidate, Claim, Prompt, Verdict, read_jsonl
from rlaifv_lib.sampling import SamplingConfig, sample_candidates
from rlaifv_lib.toyworld import render_scene
from rlaifv_lib.toyworld.scenes import training_scenes


def _leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _changed(variant: str, cfg: AblationConfig) -> set[str]:
    paper, other = _leaves(asdict(variant_config(cfg, "paper", 0))), _leaves(asdict(variant_config(cfg, variant, 0, dpo_steps=7)))
    return {k for k in paper if paper[k] != other[k]}


def test_each_variant_changes_only_its_own_settings():
    cfg = AblationConfig()
    assert _changed("confounded", cfg) == {"sampling.second_temperature"}
    assert _changed("whole-response", cfg) == {"feedback.unit", "feedback.response_question", "pairs.min_margin"}
    assert _changed("offline", cfg) == {"rounds", "prompts_per_round", "dpo.max_steps"}
    assert _changed("no-length-balance", cfg) == {"pairs.length_balance"}
    assert _changed("separate-labeler", cfg) == {"labeler"}
    assert _changed("sft-0", cfg) == {"dpo.sft_weight"}
    offline = variant_config(cfg, "offline", 0, dpo_steps=7)
    assert offline.rounds * offline.prompts_per_round == cfg.rounds * cfg.prompts_per_round and offline.dpo.max_steps == 7
    assert variant_config(cfg, "paper", 0).dpo.sft_weight == 1.0 and variant_config(cfg, "paper", 3).seed == 3
    with pytest.raises(ConfigError, match="trained 0"):  # a paper run without pairs leaves the offline round no budget
        variant_config(cfg, "offline", 0, dpo_steps=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"variants": ("paper", "nope")}, "unknown variant"),
        ({"variants": ()}, "non-empty"),
        ({"seeds": (0, 0)}, "without repeats"),
        ({"response_margin": 0.0}, "response_margin"),
        ({"response_margin": float("nan")}, "finite"),
        ({"second_temperature": -1.0}, "second_temperature"),
        ({"n": 1}, "n must be >= 2"),
        ({"rounds": 0}, "rounds"),
    ],
)
def test_ablation_config_rejects_bad_values(kwargs: dict, match: str):
    with pytest.raises(ConfigError, match=match):
        AblationConfig(**kwargs)


def test_new_settings_are_validated_and_default_off():
    assert SamplingConfig().second_temperature is None and FeedbackConfig().unit == "claim"
    for bad in (0.0, -0.5, float("inf")):
        with pytest.raises(ConfigError, match="second_temperature"):
            SamplingConfig(second_temperature=bad)
    with pytest.raises(ConfigError, match="n >= 2"):
        SamplingConfig(n=1, second_temperature=1.0)
    with pytest.raises(ConfigError, match="unit"):
        FeedbackConfig(unit="sentence")
    with pytest.raises(ConfigError, match="response_question"):
        FeedbackConfig(unit="response", response_question="is this right ?")
    with pytest.raises(ConfigError, match="min_margin"):
        RLAIFVConfig(feedback=FeedbackConfig(unit="response"))  # the official margin 1 cannot pair P(yes) scores
    RLAIFVConfig(feedback=FeedbackConfig(unit="response"), pairs=PairConfig(min_margin=0.1))


def test_second_temperature_samples_the_second_half_at_it(tiny_toy):
    model, processor = tiny_toy
    prompts = [Prompt(s.id, render_scene(s), "describe the image .") for s in training_scenes(2, seed=5)]
    base = SamplingConfig(n=4, max_new_tokens=8, batch_size=3, seed=1)
    mixed = sample_candidates(model, processor, prompts, SamplingConfig(**{**base.__dict__, "second_temperature": 1.5}), progress=False)
    plain = sample_candidates(model, processor, prompts, base, progress=False)
    hot = sample_candidates(model, processor, prompts, SamplingConfig(**{**base.__dict__, "temperature": 1.5}), progress=False)
    assert [c.id for c in mixed] == [c.id for c in plain]  # same order, same seeds
    for m, p, h in zip(mixed, plain, hot):
        assert m.seed == p.seed and m.text == (p.text if m.index < 2 else h.text)
    assert base.temperature_of(3) == 0.7 and SamplingConfig(n=4, second_temperature=1.5).temperature_of(2) == 1.5


def test_response_scores_are_p_yes_among_yes_and_no():
    cands = [Candidate("p", 1, "there is a circle .", 0), Candidate("p", 2, "there is a bar .", 1), Candidate("p", 3, "", 2)]
    claims = [Claim("p/c0", 0, "a circle", "is there a circle ?"), Claim("p/c1", 0, "a bar", "is there a bar ?")]
    verdicts = [Verdict("p/c0/response", 0.6, 0.2, True), Verdict("p/c1/response", 0.1, 0.3, False), Verdict("p/c2/response", 0.0, 0.0, False)]
    scored = response_scores(cands, claims, verdicts)
    assert scored[0].score == pytest.approx(0.75) and scored[1].score == pytest.approx(0.25) and scored[2].score is None
    assert [s.n_claims for s in scored] == [1, 1, 0] and [s.n_rejected for s in scored] == [0, 1, 1]


def test_table_shows_mean_and_std_and_absent_values():
    stat = lambda m, s: {"mean": m, "std": s, "n": 2}  # noqa: E731
    summary = {"baseline": {"chair_i": stat(0.2, None)}, "variants": {"paper": {"chair_i": stat(0.1, 0.02), "n_pairs": stat(30.0, 4.0)}}}
    lines = ablation_table(summary).splitlines()
    assert "0.200" in lines[2] and "0.100 ± 0.020" in lines[3] and "30 ± 4" in lines[3] and "n/a" in lines[3]


def test_claim_checks_unpaired_and_paired_by_seed():
    def stat(vals):
        import statistics

        return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals), "n": len(vals)}

    paper, conf = [0.10, 0.12, 0.14], [0.11, 0.13, 0.15]  # +0.01 on every seed, spread 0.02 between seeds
    runs = [{"variant": v, "seed": s, "chair_i": x, "share_fewer_false_claims": 0.9} for v, xs in (("paper", paper), ("confounded", conf)) for s, x in enumerate(xs)]
    summary = {"runs": runs, "variants": {v: {"chair_i": stat(xs), "share_fewer_false_claims": stat([0.9, 0.9, 0.9])} for v, xs in (("paper", paper), ("confounded", conf))}}
    from rlaifv_lib.ablations import claim_checks, claim_report

    row = next(r for r in claim_checks(summary) if r["metric"] == "chair_i")
    assert row["outcome"] == "no difference beyond noise"  # 0.01 against a between-seed spread of 0.02
    assert row["paired_diff"] == pytest.approx(0.01) and row["seeds_favouring_paper"] == 3
    assert row["paired_outcome"] == "paper's choice better"  # the same +0.01 on every seed: no spread in the differences
    report = claim_report(summary)
    assert "unpaired: not reproduced" in report and "4.30" in report


@pytest.mark.slow
def test_rlaifv_ablate_quick_smoke(tmp_path: Path, capsys):
    """``rlaifv ablate --quick`` (fewer prompts and scenes, 2 seeds) runs every variant, writes table, JSON and plot."""
    from rlaifv_lib.cli import main

    threads = torch.get_num_threads()
    out = tmp_path / "ablate"
    args = ["ablate", "--quick", "--seeds", "2", "--prompts", "3", "--eval-scenes", "4", "--out", str(out), "--threads", "1"]
    try:
        assert main(args) == 0
        first = capsys.readouterr().out
        summary = json.loads((out / "ablations.json").read_text())
        assert main(args) == 0  # resumed: every run is read back
        again = capsys.readouterr().out
    finally:
        torch.set_num_threads(threads)
    table = first.split("(mean ± std over seeds)")[1].split("chosen truer:")[0]
    assert table == again.split("(mean ± std over seeds)")[1].split("chosen truer:")[0]
    assert all(v in table for v in VARIANTS) and "baseline (start)" in table and "wall time" in first
    assert (out / "ablations.png").stat().st_size > 0
    assert set(summary["variants"]) == set(VARIANTS) and len(summary["runs"]) == 2 * len(VARIANTS)
    assert all(summary["variants"][v]["chair_i"]["n"] == 2 for v in VARIANTS)
    steps = {(r["variant"], r["seed"]): r["dpo_steps"] for r in summary["runs"]}
    assert all(steps["offline", s] == steps["paper", s] for s in (0, 1))  # the offline round gets the paper's DPO budget
    paper = read_jsonl(out / "paper" / "seed_0" / "round_1" / "candidates.jsonl", Candidate)
    mixed = read_jsonl(out / "confounded" / "seed_0" / "round_1" / "candidates.jsonl", Candidate)
    cfg = quick_ablation()
    assert [c.text for c in mixed if c.index < cfg.n // 2] == [c.text for c in paper if c.index < cfg.n // 2]  # same start policy, same seeds
    assert [c.text for c in mixed if c.index >= cfg.n // 2] != [c.text for c in paper if c.index >= cfg.n // 2]
    whole = read_jsonl(out / "whole-response" / "seed_0" / "round_1" / "verdicts.jsonl", Verdict)
    assert len(whole) == quick_ablation().n * 3 and all(v.claim_id.endswith("/response") for v in whole)


def test_new_settings_are_recorded_only_when_changed():
    """Runs made before these settings existed keep their run.json (and fingerprints): the default demo's files stay the same."""
    from rlaifv_lib.pipeline import config_from_dict

    d = RLAIFVConfig().to_dict()
    assert "second_temperature" not in d["sampling"] and not {"unit", "response_question"} & set(d["feedback"])
    assert config_from_dict(d).to_dict() == d
    mixed = variant_config(AblationConfig(), "confounded", 0).to_dict()
    assert mixed["sampling"]["second_temperature"] == 1.3 and config_from_dict(mixed).sampling.second_temperature == 1.3
    whole = config_from_dict(variant_config(AblationConfig(), "whole-response", 0).to_dict())
    assert whole.feedback.unit == "response" and whole.feedback.response_question == "{response} ?"


def test_ablation_bars_follow_the_sweep_order():
    import math

    import matplotlib

    matplotlib.use("Agg")
    from rlaifv_lib.plots import ablation_bars

    stat = lambda m: {"mean": m, "std": 0.01 if m is not None else None, "n": 3}  # noqa: E731
    summary = {  # as read back from JSON: keys sorted, the sweep's order only in the config
        "config": {"variants": ["paper", "confounded"]},
        "variants": {"confounded": {"chair_i": stat(0.2), "coverage": stat(None)}, "paper": {"chair_i": stat(0.1), "coverage": stat(0.9)}},
        "baseline": {"chair_i": stat(0.3)},
    }
    fig = ablation_bars(summary, keys=("chair_i", "coverage"))
    first, second = fig.axes[:2]
    assert [t.get_text() for t in first.get_xticklabels()] == ["paper", "confounded"]
    assert [p.get_height() for p in first.patches] == pytest.approx([0.1, 0.2])
    heights = [p.get_height() for p in second.patches]
    assert heights[0] == pytest.approx(0.9) and math.isnan(heights[1])  # no value: no bar
    assert first.get_legend() is not None and second.get_legend() is None  # the start line only where the baseline has it
