"""Tests of rlaifv_lib.guidance: teacher-forced log-probs, implicit reward, best-of-N."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

from rlaifv_lib.errors import ConfigError
from rlaifv_lib.guidance import (
    GuidanceConfig,
    best_of_n,
    compare_selections,
    completion_text,
    implicit_reward,
    score_for_guidance,
    sequence_logprobs,
)
from rlaifv_lib.models import chat_prompt
from rlaifv_lib.records import Candidate, Prompt

IMAGES = [Image.new("RGB", (48, 48), c) for c in ((200, 10, 10), (10, 10, 200), (10, 200, 10))]
INSTRUCTIONS = ["describe the image .", "describe the image .", "is there a red circle ?"]
RESPONSES = ["there is a red circle .", "there is a large blue square at the top left . there is a red circle .", "yes"]


def _manual_logprob(model, processor, image, instruction, response) -> tuple[float, int]:
    """Unbatched reference: one forward on prompt + completion, summed over the completion's tokens."""
    completion = completion_text(processor, instruction, response)
    enc = processor(images=[image], text=[chat_prompt(processor, instruction) + completion], return_tensors="pt")
    n = len(processor.tokenizer(completion, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logits = model(**enc).logits[0]
    lp = torch.log_softmax(logits[:-1], -1).gather(-1, enc["input_ids"][0, 1:, None]).squeeze(-1)
    return float(lp[-n:].sum()), n


def _prompts_and_candidates() -> tuple[list[Prompt], list[Candidate]]:
    prompts = [Prompt(id=f"p{i}", image=IMAGES[i], instruction=INSTRUCTIONS[i]) for i in range(2)]
    texts = ["there is a red circle .", "there is a blue square .", "there is a green triangle at the top ."]
    cands = [Candidate(prompt_id=p.id, seed=k, text=t, index=k) for p in prompts for k, t in enumerate(texts)]
    return prompts, cands


def test_completion_is_response_then_end_of_turn(tiny_toy):
    _, processor = tiny_toy
    text = completion_text(processor, "describe the image .", "there is a red circle .")
    assert text.strip() == "there is a red circle . </s>"


def test_sequence_logprobs_equal_manual_computation(tiny_toy):
    model, processor = tiny_toy
    batched = sequence_logprobs(model, processor, IMAGES, INSTRUCTIONS, RESPONSES, batch_size=3)
    for got, args in zip(batched, zip(IMAGES, INSTRUCTIONS, RESPONSES)):
        want = _manual_logprob(model, processor, *args)
        assert got[1] == want[1]
        assert got[0] == pytest.approx(want[0], abs=1e-4)
    assert [n for _, n in batched] == [6 + 1, 17 + 1, 1 + 1]  # words + end of turn


def test_reward_of_identical_policy_and_reference_is_zero(tiny_toy):
    model, processor = tiny_toy
    prompts, cands = _prompts_and_candidates()
    scores = score_for_guidance(model, model, processor, prompts, cands, GuidanceConfig(batch_size=4))
    assert [s.reward for s in scores] == [0.0] * len(cands)
    assert all(s.loglik < 0 for s in scores)


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # PEFT on transformers 5
def test_peft_policy_without_reference_uses_adapters_off(tiny_toy):
    from peft import LoraConfig, get_peft_model

    from rlaifv_lib.models import language_model_linear_layers

    model, processor = tiny_toy
    policy = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=language_model_linear_layers(model), init_lora_weights=False)).eval()
    prompts, cands = _prompts_and_candidates()
    implicit = score_for_guidance(policy, None, processor, prompts, cands)
    explicit = score_for_guidance(policy, model, processor, prompts, cands)
    assert [s.reward for s in implicit] == pytest.approx([s.reward for s in explicit], abs=1e-5)
    assert any(abs(s.reward) > 1e-4 for s in implicit)
    with pytest.raises(ConfigError, match="reference"):
        score_for_guidance(model, None, processor, prompts, cands)


def test_length_normalisation():
    assert implicit_reward(-10.0, -14.0, 8, beta=0.1) == pytest.approx(0.1 * 4 / 8)
    assert implicit_reward(-10.0, -14.0, 8, beta=0.1, length_normalise=False) == pytest.approx(0.4)
    # the same per-token log-ratio at two lengths: equal when normalised, the longer wins unnormalised
    short, long = (-5.0, -6.0, 4), (-10.0, -12.0, 8)
    assert implicit_reward(*short) == pytest.approx(implicit_reward(*long))
    assert implicit_reward(*long, length_normalise=False) > implicit_reward(*short, length_normalise=False)


def test_best_of_n_picks_argmax_per_prompt():
    ids = ["a", "a", "a", "b", "b"]
    assert best_of_n(ids, [0.1, 0.5, -1.0, 2.0, 3.0]) == {"a": 1, "b": 4}
    assert best_of_n(ids, [0.5, 0.5, 0.0, 1.0, 1.0]) == {"a": 0, "b": 3}  # ties go to the earliest
    rand = best_of_n(ids, None, selection="random", seed=3)
    assert rand == best_of_n(ids, None, selection="random", seed=3)
    assert rand["a"] in (0, 1, 2) and rand["b"] in (3, 4)
    with pytest.raises(ConfigError):
        best_of_n(ids, None, selection="best")
    with pytest.raises(ConfigError):
        GuidanceConfig(beta=0.0)


def test_compare_selections_uses_the_same_candidates(tiny_toy):
    model, processor = tiny_toy
    prompts, cands = _prompts_and_candidates()
    scores = score_for_guidance(model, model, processor, prompts, cands)
    picks = compare_selections(cands, scores, seed=0)
    assert set(picks) == {"reward", "loglik", "random"}
    for rule in picks.values():
        assert set(rule) == {"p0", "p1"} and all(c.prompt_id == pid for pid, c in rule.items())
    best = max((s for s in scores if s.prompt_id == "p0"), key=lambda s: s.loglik)
    assert picks["loglik"]["p0"].id == best.candidate_id
