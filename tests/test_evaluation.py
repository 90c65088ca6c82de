"""Evaluation without a toy world: object metrics over the prompts' objects, the fixed judge, counts instead of rates over nothing."""

from __future__ import annotations

import pytest

from rlaifv_lib.evaluation import judge_metrics, object_metrics
from rlaifv_lib.metrics_coco import object_vocab
from rlaifv_lib.records import Candidate, Claim, Prompt, Verdict


def test_object_vocab_keeps_any_name_and_adds_coco_synonyms():
    vocab = object_vocab(["puppies", "Triangles", "red ball"])
    assert vocab["puppy"] == vocab["dog"] == "dog" and vocab["triangle"] == "triangle" and vocab["red ball"] == "red ball"
    assert "cat" not in vocab  # only the prompts' objects count


def test_object_metrics_by_hand():
    prompts = [Prompt("a", None, "d", objects=["dog", "kite"]), Prompt("b", None, "d", objects=["triangle"]), Prompt("c", None, "d")]
    texts = ["A puppy and a triangle.", "Two triangles.", "A dog."]
    m = object_metrics(prompts, texts)
    # a: dog (true), triangle (false); b: triangle (true); c has no objects, so it is left out
    assert m["n_responses_with_truth"] == 2 and m["n_mentions"] == 3 and m["n_hallucinated"] == 1
    assert m["chair_i"] == pytest.approx(1 / 3) and m["chair_s"] == 0.5 and m["chair_s_halbench"] == 0.5
    assert m["coverage"] == pytest.approx(2 / 3)


def test_no_mention_gives_counts_not_rates():
    m = object_metrics([Prompt("a", None, "d", objects=["dog"])], ["Nothing to see."])
    assert m["n_responses_with_objects"] == 0 and m["chair_i"] is None and m["chair_s_halbench"] is None and m["coverage"] == 0.0
    assert object_metrics([Prompt("a", None, "d")], ["A dog."]) == {}


def test_judge_metrics_name_the_judge_and_count():
    cands = [Candidate("a", 0, "one two three"), Candidate("b", 0, "four")]
    claims = [Claim("a/c0", 0, "x", "x?"), Claim("a/c0", 1, "y", "y?")]
    verdicts = [Verdict("a/c0/k0", 0.9, 0.1, True), Verdict("a/c0/k1", 0.2, 0.8, False)]
    m = judge_metrics(cands, claims, verdicts, "qwen2.5-vl-7b")
    assert m == {"judge": "qwen2.5-vl-7b", "judge_rejection_rate": 0.5, "n_claims": 2, "claims_per_response": 1.0, "mean_words": 2.0, "n_responses": 2}
    assert judge_metrics(cands, [], [], "j")["judge_rejection_rate"] is None
    with pytest.raises(ValueError):
        judge_metrics([], [], [], "j")
