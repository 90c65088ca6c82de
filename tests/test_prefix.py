"""Shared-prefix labeler scoring agrees with running every question's whole prompt (the reference path)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rlaifv_lib import prefix
from rlaifv_lib.claims import ToyDecomposer
from rlaifv_lib.errors import ConfigError
from rlaifv_lib.feedback import FeedbackConfig, yes_no_probs
from rlaifv_lib.models import chat_prompt
from rlaifv_lib.records import Prompt
from rlaifv_lib.sampling import SamplingConfig, sample_candidates
from rlaifv_lib.toyworld import INSTRUCTIONS, evaluation_scenes, render_scene

from tiny_models import ARCHITECTURES, build_tiny

QUESTIONS = ["Is there a red cat?", "Is the dog brown?", "Is there a man?", "Is the sky clear?", "Is there a car on the table?", "Is there a cat?"]
INDEX = [0, 0, 1, 2, 2, 2]  # image 1 has a single question: its prefix stops one token short of the prompt
SUFFIX = " Please answer yes or no."


def _max_delta(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    return max(abs(x - y) for r, s in zip(a, b) for x, y in zip(r, s))


def _images() -> list[Image.Image]:
    """Three random images of different sizes (native-resolution families see different token counts)."""
    rng = np.random.default_rng(0)
    return [Image.fromarray((rng.random((40 + 8 * i, 48, 3)) * 255).astype("uint8")) for i in range(3)]


def _count_prefix_runs(monkeypatch) -> list[int]:
    """Record the question count of every ``prefix_logits`` call (so a silent fallback fails the test)."""
    calls: list[int] = []
    real = prefix.prefix_logits

    def spy(model, processor, plan, chunk):
        calls.append(len(plan.question_ids))
        return real(model, processor, plan, chunk)

    monkeypatch.setattr("rlaifv_lib.feedback.prefix_logits", spy)
    return calls


def test_toy_policy_claims_agree_with_the_per_question_path(toy_policy, monkeypatch):
    model, proc = toy_policy
    scenes = evaluation_scenes(4)
    prompts = [Prompt(s.id, render_scene(s), INSTRUCTIONS[0]) for s in scenes]
    cands = sample_candidates(model, proc, prompts, SamplingConfig(n=3, seed=0), progress=False)
    claims = ToyDecomposer().decompose_all(cands, progress=False)
    where = {p.id: k for k, p in enumerate(prompts)}
    owner = {c.id: c.prompt_id for c in cands}
    index = [where[owner[c.candidate_id]] for c in claims]
    questions = [c.question for c in claims]
    images = [p.image for p in prompts]
    calls = _count_prefix_runs(monkeypatch)
    shared = yes_no_probs(model, proc, images, questions, index, FeedbackConfig(prefix_batch_size=5))
    reference = yes_no_probs(model, proc, images, questions, index, FeedbackConfig(shared_prefix=False, batch_size=7))
    assert sum(calls) == len(questions) and len(calls) == len(set(index))
    assert _max_delta(shared, reference) <= 1e-4
    assert [py > pn for py, pn in shared] == [py > pn for py, pn in reference]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_tiny_architectures_agree_with_the_per_question_path(arch, monkeypatch):
    model, proc = build_tiny(arch, init_std=0.3)  # 0.3: answers depend on the input, so a wrong position shows
    assert prefix.unsupported_reason(model) is None
    calls = _count_prefix_runs(monkeypatch)
    shared = yes_no_probs(model, proc, _images(), QUESTIONS, INDEX, FeedbackConfig(question_suffix=SUFFIX, prefix_batch_size=2))
    reference = yes_no_probs(model, proc, _images(), QUESTIONS, INDEX, FeedbackConfig(question_suffix=SUFFIX, shared_prefix=False, batch_size=1))
    assert calls == [2, 1, 3]
    assert _max_delta(shared, reference) <= 1e-4


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_positions_off_by_two_break_the_agreement(arch, monkeypatch):
    """Negative control: the agreement test above would see question positions that do not continue the prefix."""
    model, proc = build_tiny(arch, init_std=0.3)
    real = prefix._start_position
    monkeypatch.setattr(prefix, "_start_position", lambda m, inputs: real(m, inputs) + 2)
    shared = yes_no_probs(model, proc, _images(), QUESTIONS, INDEX, FeedbackConfig(question_suffix=SUFFIX))
    reference = yes_no_probs(model, proc, _images(), QUESTIONS, INDEX, FeedbackConfig(question_suffix=SUFFIX, shared_prefix=False))
    assert _max_delta(shared, reference) > 1e-3


def test_plan_splits_after_the_image_and_keeps_every_question(tiny_toy):
    _, proc = tiny_toy
    image = render_scene(evaluation_scenes(1)[0])
    texts = [chat_prompt(proc, q) for q in ["is there a circle ?", "is the star red ?"]]
    plan = prefix.plan_prefix(proc, image, texts)
    full = [proc(images=[image], text=[t])["input_ids"][0] for t in texts]
    prefix_ids = plan.inputs["input_ids"][0].tolist()
    for ids, q in zip(full, plan.question_ids):
        assert list(ids) == prefix_ids + q and len(q) >= 1
    assert proc.tokenizer.convert_tokens_to_ids("<image>") in prefix_ids
    assert proc.tokenizer.decode(plan.question_ids[0]).split()[0] == "there"  # "is" is shared, so in the prefix


def test_unsupported_families_and_unsplittable_prompts_use_the_per_question_path(tiny_toy, monkeypatch):
    model, proc = tiny_toy
    images = [render_scene(s) for s in evaluation_scenes(2)]
    questions, index = ["is there a circle ?", "is the star red ?", "is there a bar ?"], [0, 0, 1]
    reference = yes_no_probs(model, proc, images, questions, index, FeedbackConfig(shared_prefix=False))
    calls = _count_prefix_runs(monkeypatch)
    with monkeypatch.context() as m:
        m.setattr(prefix, "FAMILIES", {})
        assert "'llava'" in prefix.unsupported_reason(model)
        assert yes_no_probs(model, proc, images, questions, index) == reference

    def unsplittable(*args):
        raise prefix.PlanError("the questions differ before the image ends")

    monkeypatch.setattr("rlaifv_lib.feedback.plan_prefix", unsplittable)
    assert yes_no_probs(model, proc, images, questions, index) == reference
    assert calls == []


def test_unsupported_family_is_named():
    class Config:
        model_type = "gemma3"

    class Model:
        config = Config()

    assert "gemma3" in prefix.unsupported_reason(Model())


def test_prefix_batch_size_is_validated():
    with pytest.raises(ConfigError, match="prefix_batch_size"):
        FeedbackConfig(prefix_batch_size=0)
