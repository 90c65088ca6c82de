"""Self-feedback scoring: P(yes)/P(no) from next-token logits, batched, with image features reused."""

from __future__ import annotations

import pytest
import torch

from rlaifv_lib.errors import ConfigError, YesNoTokenError
from rlaifv_lib.feedback import FeedbackConfig, score_candidates, yes_no_probs, yes_no_token_ids
from rlaifv_lib.models import chat_prompt
from rlaifv_lib.records import Candidate, Claim, Verdict
from rlaifv_lib.toyworld import evaluation_scenes, render_scene


def test_yes_no_ids_cope_with_a_lowercase_only_vocabulary(tiny_toy):
    _, proc = tiny_toy
    yes, no = yes_no_token_ids(proc.tokenizer)
    assert yes == [proc.tokenizer.convert_tokens_to_ids("yes")]
    assert no == [proc.tokenizer.convert_tokens_to_ids("no")]


def test_missing_yes_token_is_a_clear_error():
    class Tok:
        unk_token_id = 0

        def encode(self, text, add_special_tokens=False):
            return [0] if "yes" in text.lower() else [5]

    with pytest.raises(YesNoTokenError, match="'yes'"):
        yes_no_token_ids(Tok())


def test_probs_equal_a_manual_forward_and_do_not_depend_on_batching(tiny_toy):
    model, proc = tiny_toy
    scenes = evaluation_scenes(3)
    images = [render_scene(s) for s in scenes]
    questions = ["is there a circle ?", "is the star red ?", "is there a bar ?", "is there a ring ?"]
    index = [0, 0, 1, 2]
    reuse = yes_no_probs(model, proc, images, questions, index, FeedbackConfig(batch_size=3))
    plain = yes_no_probs(model, proc, images, questions, index, FeedbackConfig(batch_size=1, reuse_image_features=False))
    assert [x for r in reuse for x in r] == pytest.approx([x for r in plain for x in r], abs=1e-5)
    enc = proc(images=[images[0]], text=[chat_prompt(proc, questions[1])], return_tensors="pt")
    with torch.no_grad():
        p = torch.softmax(model(**enc).logits[0, -1], -1)
    yes, no = yes_no_token_ids(proc.tokenizer)
    assert list(reuse[1]) == pytest.approx([float(p[yes].sum()), float(p[no].sum())], abs=1e-5)


def test_score_is_minus_rejected_and_none_without_claims():
    cands = [Candidate("p", 1, "a", 0), Candidate("p", 2, "b", 1)]
    claims = [Claim("p/c0", 0, "x", "q0"), Claim("p/c0", 1, "y", "q1")]
    verdicts = [Verdict("p/c0/k0", 0.9, 0.1, True), Verdict("p/c0/k1", 0.2, 0.7, False)]
    scored = score_candidates(cands, claims, verdicts)
    assert (scored[0].score, scored[0].n_claims, scored[0].n_rejected) == (-1.0, 2, 1)
    assert scored[1].score is None and scored[1].n_claims == 0


def test_config_checks():
    with pytest.raises(ConfigError):
        FeedbackConfig(batch_size=0)
