"""Tests of rlaifv_lib.audit: the labeler, the scores and the pairs against exact toy ground truth."""

from __future__ import annotations

import math

import pytest

from rlaifv_lib.audit import (
    PAIR_OUTCOMES,
    compare_with_perfect_labeler,
    full_audit,
    labeler_audit,
    pair_audit,
    pair_outcome,
    pearson,
    prompt_of,
    score_audit,
)
from rlaifv_lib.claims import ToyDecomposer
from rlaifv_lib.pairs import PairConfig
from rlaifv_lib.records import Candidate, Claim, PreferencePair, ScoredCandidate, Verdict
from rlaifv_lib.toyworld.scenes import Scene, ToyObject

# scene p0: a large red circle at the top left, a small blue square in the center
SCENES = {"p0": Scene("p0", [ToyObject("circle", "red", "large", 0), ToyObject("square", "blue", "small", 4)])}
TEXTS = {
    "p0/c0": "there is a large red circle at the top left . there is a blue triangle .",
    "p0/c1": "there is a green square .",
    "p0/c2": "there is a red circle .",
}
# (candidate, question, kind, labeler accepts?)   truth            outcome (positive = rejected)
CLAIMS = [
    ("p0/c0", "is there a circle ?", "existence", True),  # true   TN
    ("p0/c0", "is the circle red ?", "colour", False),  # true      FP
    ("p0/c0", "is there a triangle ?", "existence", False),  # false TP
    ("p0/c0", "is the triangle blue ?", "colour", True),  # false  FN
    ("p0/c1", "is there a square ?", "existence", True),  # true   TN
    ("p0/c1", "is the square green ?", "colour", False),  # false  TP
    ("p0/c2", "is there a circle ?", "existence", True),  # true   TN
    ("p0/c2", "is the circle red ?", "colour", False),  # true      FP
]


def _records() -> tuple[list[Claim], list[Verdict], list[ScoredCandidate]]:
    claims, verdicts, counters = [], [], {}
    for cid, question, kind, accepted in CLAIMS:
        k = counters[cid] = counters.get(cid, -1) + 1
        claims.append(Claim(cid, k, question, question, kind))
        verdicts.append(Verdict(claims[-1].id, 0.9 if accepted else 0.1, 0.1 if accepted else 0.9, accepted))
    # scores = -(rejected): c0 -2 (2 truly false), c1 -1 (1 truly false), c2 -1 (0 truly false); c3 has no claims
    scored = [ScoredCandidate(cid, "p0", TEXTS[cid], s, n, -s) for cid, s, n in (("p0/c0", -2.0, 4), ("p0/c1", -1.0, 2), ("p0/c2", -1.0, 2))]
    scored.append(ScoredCandidate("p0/c3", "p0", "", None, 0, 0))
    return claims, verdicts, scored


def test_prompt_of():
    assert prompt_of("p0/c3") == "p0" and prompt_of("coco/123/c0") == "coco/123"


def test_labeler_audit_hand_worked():
    claims, verdicts, _ = _records()
    extra = [Claim("p0/c0", 9, "it is nice", "Is it nice?", "fact"), Claim("p0/c1", 9, "x", "is there a star ?", "existence")]
    audit = labeler_audit(claims + extra, verdicts + [Verdict("p0/c0/k9", 0.5, 0.4, True)], SCENES)
    # tp 2, fp 2, fn 1, tn 3: accuracy 5/8, precision 2/4, recall 2/3, F1 = 2 * 1/2 * 2/3 / (1/2 + 2/3) = 4/7
    assert (audit["tp"], audit["fp"], audit["fn"], audit["tn"]) == (2, 2, 1, 3)
    assert audit["n"] == 8 and audit["n_skipped"] == 2  # a non-toy question, and a claim with no verdict
    assert audit["accuracy"] == 5 / 8 and audit["precision_reject"] == 0.5 and audit["recall_reject"] == 2 / 3
    assert math.isclose(audit["f1_reject"], 4 / 7)
    ex, col = audit["per_kind"]["existence"], audit["per_kind"]["colour"]
    assert (ex["n"], ex["accuracy"], ex["precision_reject"], ex["recall_reject"]) == (4, 1.0, 1.0, 1.0)
    assert (col["tp"], col["fp"], col["fn"], col["tn"]) == (1, 2, 1, 0)
    assert col["accuracy"] == 1 / 4 and col["precision_reject"] == 1 / 3 and col["recall_reject"] == 1 / 2


def test_score_audit_hand_worked():
    claims, _, scored = _records()
    audit = score_audit(scored, claims, SCENES)
    assert audit["points"] == [(-2.0, 2), (-1.0, 1), (-1.0, 0)]  # the no-claim response is left out
    # x = -2, -1, -1 (mean -4/3); y = 2, 1, 0 (mean 1): sxy = -1, sxx = 2/3, syy = 2 -> r = -sqrt(3)/2
    assert math.isclose(audit["correlation"], -math.sqrt(3) / 2)
    assert audit["exact_share"] == 2 / 3
    assert pearson([1, 1], [2, 3]) is None and pearson([1], [2]) is None


def _pair(chosen: str, rejected: str) -> PreferencePair:
    return PreferencePair("p0", TEXTS[chosen], TEXTS[rejected], 1.0, chosen, rejected)


def test_pair_audit_hand_worked():
    claims, _, _ = _records()
    # hallucinated objects: c0 1 (triangle), c1 0, c2 0; truly false claims: c0 2, c1 1, c2 0
    pairs = [_pair("p0/c2", "p0/c0"), _pair("p0/c1", "p0/c0"), _pair("p0/c0", "p0/c1"), _pair("p0/c2", "p0/c1")]
    audit = pair_audit(pairs, SCENES, claims)
    assert audit["objects"] == {"fewer": 2 / 4, "equal": 1 / 4, "more": 1 / 4}
    assert audit["claims"] == {"fewer": 3 / 4, "equal": 0.0, "more": 1 / 4}
    assert audit["share_fewer_hallucinated_objects"] == 0.5 and audit["share_fewer_false_claims"] == 0.75
    assert [r["chosen_hall_objects"] for r in audit["rows"]] == [0, 0, 1, 0]
    assert [r["outcome"] for r in audit["rows"]] == ["fewer_objects", "fewer_objects", "wrong_way", "fewer_attribute_errors"]
    assert audit["outcomes"] == {"fewer_objects": 0.5, "fewer_attribute_errors": 0.25, "no_true_difference": 0.0, "wrong_way": 0.25}
    repeated = PreferencePair("p0", "there is a circle .", "there is a star . there is a star .", 2.0)
    only_objects = pair_audit([repeated], SCENES)
    assert only_objects["rows"][0]["rejected_hall_objects"] == 2 and "claims" not in only_objects  # repeats counted
    with pytest.raises(KeyError, match="no scene for prompt 'p9'"):
        pair_audit([PreferencePair("p9", "a", "b", 1.0)], SCENES)


def test_full_audit_has_three_parts():
    claims, verdicts, scored = _records()
    audit = full_audit(claims, verdicts, scored, [_pair("p0/c2", "p0/c0")], SCENES)
    assert set(audit) == {"labeler", "scores", "pairs"} and audit["pairs"]["n"] == 1


def test_truth_verdicts_accept_exactly_the_true_claims():
    from rlaifv_lib.audit import labeler_audit, truth_verdicts
    from rlaifv_lib.records import Claim
    from rlaifv_lib.toyworld import Scene, ToyObject

    scenes = {"p": Scene("p", [ToyObject("circle", "red", "large", 0)])}
    claims = [Claim("p/c0", 0, "there is a circle", "is there a circle ?"),
              Claim("p/c0", 1, "there is a square", "is there a square ?"),
              Claim("p/c0", 2, "the circle is small", "is the circle small ?")]  # fmt: skip
    verdicts = truth_verdicts(claims, scenes)
    assert [v.accepted for v in verdicts] == [True, False, False]
    assert labeler_audit(claims, verdicts, scenes)["accuracy"] == 1.0


def _row(chosen_objects: int, rejected_objects: int, chosen_false: int, rejected_false: int) -> dict:
    return {"chosen_hall_objects": chosen_objects, "rejected_hall_objects": rejected_objects,
            "chosen_false_claims": chosen_false, "rejected_false_claims": rejected_false}  # fmt: skip


def test_pair_outcome_each_case():
    assert pair_outcome(_row(0, 1, 3, 2)) == "fewer_objects"  # objects decide first, even with more false claims
    assert pair_outcome(_row(1, 1, 0, 1)) == "fewer_attribute_errors"
    assert pair_outcome(_row(1, 1, 2, 2)) == "no_true_difference"
    assert pair_outcome(_row(1, 0, 0, 3)) == "wrong_way"  # more absent objects named
    assert pair_outcome(_row(0, 0, 2, 1)) == "wrong_way"
    assert set(PAIR_OUTCOMES) == {"fewer_objects", "fewer_attribute_errors", "no_true_difference", "wrong_way"}


def test_compare_with_perfect_labeler_hand_worked():
    cands = [Candidate("p0", i, TEXTS[f"p0/c{i}"], i) for i in range(3)]
    claims = ToyDecomposer().decompose_all(cands)
    # the labeler wrongly rejects "is the circle red ?" of c2 and accepts everything else: scores c0 0, c1 0, c2 -1
    verdicts = [Verdict(c.id, 0.1, 0.9, False) if (c.candidate_id, c.question) == ("p0/c2", "is the circle red ?") else Verdict(c.id, 0.9, 0.1, True) for c in claims]
    cfg = PairConfig(max_pairs_per_prompt=None, length_balance=False)
    side = compare_with_perfect_labeler(cands, claims, verdicts, SCENES, cfg)
    lab, perfect = side["labeler"], side["perfect labeler"]
    # labeler: c0 over c2 (c0 names the absent triangle) and c1 over c2 (c1's square is not green): both wrong
    assert lab["n_pairs"] == 2 and lab["outcomes"]["wrong_way"] == 1.0 and lab["share_fewer_false_claims"] == 0.0
    # truth: c0 -2, c1 -1, c2 0 -> c2 over c0, c1 over c0 (fewer objects), c2 over c1 (fewer attribute errors)
    assert perfect["n_pairs"] == 3 and perfect["share_prompts_with_pair"] == 1.0
    assert perfect["outcomes"] == {"fewer_objects": 2 / 3, "fewer_attribute_errors": 1 / 3, "no_true_difference": 0.0, "wrong_way": 0.0}
    assert perfect["share_fewer_hallucinated_objects"] == 2 / 3 and perfect["share_fewer_false_claims"] == 1.0
    assert perfect["length_ratio"] is None  # balancing off
    assert perfect["mean_chosen_words"] == 6 and perfect["mean_rejected_words"] == 40 / 3
