"""Architecture conformance: the notebooks' library functions on tiny random LLaVA, Qwen2-VL, Qwen2.5-VL
and Idefics3 models, saved to disk and loaded back with ``load_model`` as a real checkpoint would be.

Every stage of the loop runs through the same function the notebooks call: sampling
(``sample_candidates``), the divide step (``RuleBasedDecomposer``), the conquer step (``yes_no_probs`` /
``score_claims`` / ``score_candidates``), pairing (``pairs.build_pairs`` / ``pairs.to_trl_dataset``), one
QLoRA DPO step (``dpo.train_dpo``) and best-of-N guidance (``guidance``). Weights are random, so the
tests check shapes, types, determinism and that training moves only the adapters — not quality.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from PIL import Image

from rlaifv_lib.claims import RuleBasedDecomposer
from rlaifv_lib.dpo import DPOSettings, train_dpo
from rlaifv_lib.feedback import FeedbackConfig, score_candidates, score_claims, yes_no_probs, yes_no_token_ids
from rlaifv_lib.guidance import GuidanceConfig, best_of_n, score_for_guidance, select_candidates
from rlaifv_lib.models import LANGUAGE_LORA_TARGETS, YES_NO_SUFFIX, chat_prompt, load_model, tokenizer_of
from rlaifv_lib.pairs import PairConfig, build_pairs, to_trl_dataset
from rlaifv_lib.records import Candidate, Prompt, ScoredCandidate
from rlaifv_lib.sampling import SamplingConfig, sample_candidates

from tiny_models import ARCHITECTURES, save_tiny

ARCHS = sorted(ARCHITECTURES)
RESPONSES = [
    "There is a red cat on the table. The dog is brown.",
    "The cat is small and the sky is clear.",
    "A man is riding a bicycle. The car is blue and the table is red.",
]


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, tmp_path_factory):
    """(arch, folder, model, processor): a tiny model of one architecture, loaded back from disk."""
    torch.set_num_threads(1)
    folder = save_tiny(request.param, tmp_path_factory.mktemp(request.param))
    model, processor = load_model(folder)
    return request.param, folder, model, processor


def _prompts() -> list[Prompt]:
    """Two prompts with differently sized images (native-resolution families see different token counts)."""
    return [
        Prompt("p0", Image.new("RGB", (40, 32), (200, 30, 30)), "Describe the image."),
        Prompt("p1", Image.new("RGB", (28, 56), (30, 30, 200)), "What is in the picture?"),
    ]


def test_loads_as_image_text_model(tiny):
    """load_model gives the right classes, a chat prompt with the image slot, and yes/no token ids."""
    arch, _, model, processor = tiny
    assert model.config.model_type == arch and not model.training
    prompt = chat_prompt(processor, "Is there a cat?")
    assert prompt.endswith(("ASSISTANT:", "<|im_start|>assistant\n", "Assistant:"))
    yes, no = yes_no_token_ids(tokenizer_of(processor))
    assert yes and no and not set(yes) & set(no)


def test_sampling_is_seeded_and_batch_independent(tiny):
    """sample_candidates: N candidates per prompt; the same seed gives the same texts at any batch size."""
    _, _, model, processor = tiny
    cfg = SamplingConfig(n=3, max_new_tokens=6, batch_size=6, seed=1)
    first = sample_candidates(model, processor, _prompts(), cfg, progress=False)
    again = sample_candidates(model, processor, _prompts(), SamplingConfig(n=3, max_new_tokens=6, batch_size=2, seed=1), progress=False)
    assert [c.id for c in first] == [f"p{p}/c{k}" for p in range(2) for k in range(3)]
    assert [c.text for c in first] == [c.text for c in again]
    assert all(isinstance(c.text, str) for c in first)


def test_feedback_scores_claims(tiny):
    """yes_no_probs and score_claims: one (P(yes), P(no)) per claim, batch size does not change it."""
    _, _, model, processor = tiny
    prompts = _prompts()
    cands = [Candidate(p.id, seed=k, text=RESPONSES[(i + k) % 3], index=k) for i, p in enumerate(prompts) for k in range(2)]
    claims = RuleBasedDecomposer().decompose_all(cands, progress=False)
    assert len(claims) >= 4
    images = {p.id: p.image for p in prompts}
    verdicts = score_claims(model, processor, claims, images, {c.id: c.prompt_id for c in cands}, FeedbackConfig(batch_size=3, question_suffix=YES_NO_SUFFIX), progress=False)
    small = yes_no_probs(model, processor, [images["p0"]], [claims[0].question + YES_NO_SUFFIX], [0], FeedbackConfig(batch_size=1))
    assert len(verdicts) == len(claims)
    assert all(0 < v.p_yes < 1 and 0 < v.p_no < 1 and v.accepted == (v.p_yes > v.p_no) for v in verdicts)
    first_p0 = next(v for v, c in zip(verdicts, claims) if c.candidate_id.startswith("p0"))
    assert math.isclose(first_p0.p_yes, small[0][0], rel_tol=1e-3, abs_tol=1e-6)
    scored = score_candidates(cands, claims, verdicts)
    assert all(s.score is not None and s.score <= 0 for s in scored)


def _pairs_dataset(model, processor, prompts):
    """Candidates sampled by the model, scored (fixed scores: random weights rarely disagree enough), paired."""
    cands = sample_candidates(model, processor, prompts, SamplingConfig(n=2, max_new_tokens=5, seed=0), progress=False)
    scored = [ScoredCandidate(c.id, c.prompt_id, (c.text or "nothing") + f" {c.index}", float(-c.index), 1, c.index) for c in cands]
    result = build_pairs(scored, PairConfig(length_balance=False), images={p.id: p.image for p in prompts}, instructions={p.id: p.instruction for p in prompts})
    assert len(result.pairs) == len(prompts)
    return cands, to_trl_dataset(result)


def test_qlora_dpo_step_and_guidance(tiny, tmp_path):
    """One QLoRA (or fallback LoRA) DPO step moves only the adapters; guidance ranks with the trained policy."""
    _, folder, model, processor = tiny
    prompts = _prompts()
    cands, dataset = _pairs_dataset(model, processor, prompts)
    settings = DPOSettings(max_steps=1, batch_size=2, lora_r=4, lora_alpha=8, learning_rate=1e-2, warmup_ratio=0.0, target_modules=LANGUAGE_LORA_TARGETS, logging_steps=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the 4-bit -> full-precision fallback message on CPU
        result = train_dpo(folder, processor, dataset, settings, tmp_path / "dpo")
    peft_model = result.model
    lora_b = {n: p for n, p in peft_model.named_parameters() if "lora_B" in n}
    assert lora_b and all(p.requires_grad for p in lora_b.values())
    assert any(p.abs().sum() > 0 for p in lora_b.values()), "the DPO step did not move the adapters"
    assert all(("language_model" in n or "text_model" in n) for n in lora_b), "adapters must sit in the decoder only"
    assert result.trainable_params < result.total_params and (result.adapter_dir / "adapter_config.json").exists()
    base = dict(model.named_parameters())
    for n, p in peft_model.get_base_model().named_parameters():
        if "lora_" in n:
            continue
        assert not p.requires_grad, f"{n} should be frozen"
        name = n.replace(".base_layer", "")
        if p.__class__.__name__ != "Params4bit" and name in base and p.shape == base[name].shape:  # not re-quantised
            assert torch.allclose(p.detach().float().cpu(), base[name].detach().float().cpu()), n
    scores = score_for_guidance(peft_model, None, processor, prompts, cands, GuidanceConfig(batch_size=4))
    assert len(scores) == len(cands) and all(s.n_tokens > 0 and math.isfinite(s.reward) for s in scores)
    picks = best_of_n([c.prompt_id for c in cands], [s.reward for s in scores])
    assert set(picks) == {"p0", "p1"}
    assert set(select_candidates(cands, scores, "loglik")) == {"p0", "p1"}

