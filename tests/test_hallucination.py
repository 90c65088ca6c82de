"""hallucination: CHAIR and coverage worked by hand, the adversarial existence probe, and evaluate_policy."""

from __future__ import annotations

import pytest

from rlaifv_lib.errors import EmptyEvaluationError
from rlaifv_lib.breakdowns import unclaimed_sentences
from rlaifv_lib.hallucination import EvalConfig, chair, evaluate_policy, existence_probe, toy_mentions, yes_no_accuracy
from rlaifv_lib.toyworld.grammar import existence_question
from rlaifv_lib.toyworld.scenes import PARTNERS, Scene, ToyObject, evaluation_scenes

# circle and star present; the partners of both (square, diamond) absent
SCENE = Scene("s", [ToyObject("circle", "red", "small", 0), ToyObject("star", "blue", "large", 4)])
EVAL_KEYS = {"chair_i", "chair_s", "coverage", "mean_words", "n_mentions", "n_hallucinated", "unclaimed_rate",
             "yes_no_accuracy", "self_check_accuracy", "labeler_accuracy", "n_claims", "texts"}  # fmt: skip


def test_chair_by_hand():
    texts = ["there is a red circle . there is a blue square .", "there is a green star ."]
    m = chair(texts, [{"circle"}, {"star", "ring"}])
    # 3 mentions, the square absent; 1 of 2 responses hallucinates; circle and star of 3 true objects named
    assert m == {"chair_i": 1 / 3, "chair_s": 1 / 2, "coverage": 2 / 3, "mean_words": 9.0, "n_mentions": 3, "n_hallucinated": 1}


def test_chair_counts_repeats_and_refuses_empty_input():
    m = chair(["there is a square . there is a square ."], [{"circle"}])
    assert (m["chair_i"], m["n_hallucinated"], m["chair_s"], m["coverage"]) == (1.0, 2, 1.0, 0.0)
    assert chair([""], [{"circle"}]) == {"chair_i": None, "chair_s": 0.0, "coverage": 0.0, "mean_words": 0.0, "n_mentions": 0, "n_hallucinated": 0}  # no mention: CHAIR_i absent
    with pytest.raises(EmptyEvaluationError, match="CHAIR of no responses"):
        chair([], [])  # a rate over nothing has no value, not 0
    with pytest.raises(ValueError):
        chair(["there is a circle ."], [])  # one truth per response
    assert toy_mentions("there is a circle . the ring ? nothing .") == ["circle", "ring"]


def test_existence_probe_is_balanced_and_adversarial_first():
    rows = existence_probe([SCENE], seed=0)
    assert [truth for _, _, truth in rows] == [True, False, True, False]
    assert {q for _, q, t in rows if t} == {existence_question("circle"), existence_question("star")}
    assert {q for _, q, t in rows if not t} == {existence_question(PARTNERS["circle"]), existence_question(PARTNERS["star"])}
    assert existence_probe([SCENE], seed=0) == rows  # seeded
    scenes = evaluation_scenes(20)
    rows = existence_probe(scenes, seed=3)
    assert sum(t for *_, t in rows) * 2 == len(rows) == 2 * sum(len(s.objects) for s in scenes)
    for i, q, truth in rows:
        shape = q.split()[-2]
        assert (shape in scenes[i].shapes) == truth


def test_evaluate_policy_on_a_tiny_model(tiny_toy):
    model, processor = tiny_toy
    scenes = evaluation_scenes(3)
    cfg = EvalConfig(seed=1, max_new_tokens=12)
    m = evaluate_policy(model, processor, scenes, cfg)
    assert set(m) == EVAL_KEYS and len(m["texts"]) == 3
    ref = chair(m["texts"], [s.shapes for s in scenes])
    assert all(m[k] == ref[k] for k in ref)
    assert m["unclaimed_rate"] == unclaimed_sentences(m["texts"])["rate"]
    assert all(0.0 <= m[k] <= 1.0 for k in ("chair_i", "chair_s", "coverage", "unclaimed_rate", "yes_no_accuracy", "self_check_accuracy", "labeler_accuracy"))
    assert evaluate_policy(model, processor, scenes, cfg)["texts"] == m["texts"]  # the same seed, the same descriptions


def test_committed_policy_answers_the_adversarial_probe(toy_policy):
    model, processor = toy_policy
    assert yes_no_accuracy(model, processor, evaluation_scenes(20)) > 0.9  # README: 0.998 on 200 scenes


def test_accuracies_over_no_claim_are_absent_not_zero():
    from rlaifv_lib.hallucination import _agree

    assert _agree([], [], []) is None  # a share of nothing has no value
    assert chair(["there is a circle ."], [set()])["coverage"] is None  # no true object: nothing to cover
