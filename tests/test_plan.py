"""The work planner: its counts against a real smoke round's artifacts, and the paper's setting from local configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlaifv_lib.cli import _run_config, build_parser, main
from rlaifv_lib.errors import ConfigError
from rlaifv_lib.models import chat_prompt, load_processor, tokenizer_of
from rlaifv_lib.pipeline import RLAIFVRun
from rlaifv_lib.plan import PlanAssumptions, PlanLayout, architecture, count_image_tokens, measure_run, plan_run
from rlaifv_lib.prefix import prefill_tokens
from rlaifv_lib.records import prompt_of, read_jsonl_marked
from rlaifv_lib.sources import open_source


def _smoke_config():
    return _run_config(build_parser().parse_args(["demo", "--smoke", "--rounds", "1", "--out", "unused"]))


@pytest.fixture(scope="module")
def smoke_round(tmp_path_factory) -> Path:
    """Round 1 of ``rlaifv demo --smoke`` really run (sampling, claims, scoring, pairs, 2 DPO steps, merge, evaluation)."""
    run_dir = tmp_path_factory.mktemp("plan") / "run"
    run = RLAIFVRun(run_dir, _smoke_config(), progress=False)
    run.run_round(1)
    run.rd.close()
    return run_dir


def _rows(plan: dict) -> dict[str, dict]:
    return {r["stage"]: r for r in plan["rows"] if r["round"] == 1}


def test_plan_counts_match_a_smoke_rounds_artifacts(smoke_round):
    cfg = _smoke_config()
    rd = smoke_round / "round_1"
    prompts_rows, _ = read_jsonl_marked(rd / "prompts.jsonl")
    cands, _ = read_jsonl_marked(rd / "candidates.jsonl")
    claims, _ = read_jsonl_marked(rd / "claims.jsonl")
    processor = load_processor(cfg.policy)
    source = open_source(None, None, cfg.eval_scenes, cfg.instructions)
    prompts = [source.restore(r) for r in prompts_rows]
    first = processor(images=[prompts[0].image], text=[chat_prompt(processor, prompts[0].instruction)], return_tensors="pt")
    image_id = tokenizer_of(processor).convert_tokens_to_ids("<image>")

    # before the run: exact counts from the configuration and the architecture alone
    ahead = _rows(plan_run(cfg, PlanLayout(image_size=prompts[0].image.size[::-1])))
    assert ahead["sample"]["responses"] == len(cands) == cfg.prompts_per_round * cfg.sampling.n
    assert ahead["sample"]["image_tokens"] == len(prompts) * int((first["input_ids"] == image_id).sum())  # shared prefill: one image per prompt
    assert ahead["sample"]["tokens_generated"] is None and ahead["sample"]["tokens_bound"] == len(cands) * cfg.sampling.max_new_tokens

    # from the artifacts: measured counts, checked against the processor and prefix.py on the real images
    m = measure_run(smoke_round, processor, cfg)
    got = _rows(plan_run(cfg, measured=m))
    assert got["sample"]["source"] == "measured" and got["score"]["claims"] == len(claims) > 0
    assert 0 < got["sample"]["tokens_generated"] <= got["sample"]["tokens_bound"]
    assert got["sample"]["prefill_whole"] == len(cands) * first["input_ids"].shape[1]  # every row's whole prompt
    index = {p.id: k for k, p in enumerate(prompts)}
    questions = [c["question"] + cfg.feedback.question_suffix for c in claims]
    whole, shared = prefill_tokens(processor, [p.image for p in prompts], questions, [index[prompt_of(c["candidate_id"])] for c in claims])
    assert got["score"]["prefill_whole"] == pytest.approx(whole * len(claims))
    assert got["score"]["prefill_shared"] == pytest.approx(shared * len(claims))
    assert got["score"]["prefill_shared"] < got["score"]["prefill_whole"]
    # DPO: the log's optimiser steps x batch pairs, two sequences each
    assert m[1]["dpo_steps"] == cfg.dpo.max_steps
    assert got["dpo"]["dpo_sequences"] == 2 * m[1]["dpo_steps"] * cfg.dpo.batch_size * cfg.dpo.grad_accum


def test_paper_setting_from_local_configs_and_its_layouts():
    cfg = _run_config(build_parser().parse_args(["plan", "--config", "configs/llava15_7b_separate_labeler.yaml"]))
    one = plan_run(cfg, labeler_arch="llava-next-34b")
    eight = plan_run(cfg, PlanLayout(processes=8, labeler_gpus=2), labeler_arch="llava-next-34b")
    assert one["image_tokens"]["policy"] == 576  # LLaVA-1.5: 336 px / 14 px patches, squared
    assert 34e9 < one["params"]["labeler"] < 35.5e9 and 6.9e9 < one["params"]["policy"] < 7.2e9
    assert len(one["rows"]) == 4 * cfg.rounds
    r1, r8 = _rows(one), _rows(eight)
    assert r1["sample"]["responses"] == 1000 * 10 and r8["sample"]["responses"] == 1000 * 10 / 8
    assert r1["dpo"]["dpo_sequences"] == 2 * 1000 * 2 * cfg.dpo.epochs  # at most 2 pairs per prompt, 4 epochs
    assert r8["score"]["memory_gib"] < r1["score"]["memory_gib"]  # the labeler split over two devices


def test_llava_next_image_tokens_follow_its_processor():
    from transformers import LlavaNextImageProcessor, LlavaNextProcessor

    config = architecture("llava-next-34b")
    ns = LlavaNextProcessor.__new__(LlavaNextProcessor)
    ns.image_processor = LlavaNextImageProcessor(image_grid_pinpoints=config.image_grid_pinpoints)
    ns.patch_size, ns.num_additional_image_tokens = 14, 0
    for h, w in [(480, 640), (640, 480), (336, 336), (1000, 300), (375, 500)]:
        assert count_image_tokens(config, h, w) == ns._get_number_of_features(h, w, 336, 336)


@pytest.mark.parametrize("bad", [dict(processes=0), dict(labeler_gpus=0), dict(image_size=(0, 10)), dict(processes=float("nan"))])
def test_layout_rejects_impossible_values(bad):
    with pytest.raises(ConfigError):
        PlanLayout(**bad)


def test_assumptions_reject_negative_and_nonfinite_values():
    for bad in (dict(claims_per_response=-1), dict(question_tokens=-1), dict(claims_per_response=float("inf"))):
        with pytest.raises(ConfigError):
            PlanAssumptions(**bad)


def test_cli_plan_prints_the_table(capsys):
    assert main(["plan", "--smoke", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "sample" in out and "dpo" in out and "assumed" in out
    assert main(["plan", "--smoke", "--processes", "0", "--threads", "1"]) == 1
