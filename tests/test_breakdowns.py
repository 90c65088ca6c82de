"""Hallucination breakdowns on hand-made scenes and responses, values worked out by hand."""

from __future__ import annotations

import pytest

from rlaifv_lib.breakdowns import breakdown_all, by_claim_kind, by_length, by_object, by_position, cooccurrence_matrix, mark_hallucinations, unclaimed_sentences
from rlaifv_lib.claims import ToyDecomposer
from rlaifv_lib.records import Candidate
from rlaifv_lib.toyworld.grammar import describe, parse_description
from rlaifv_lib.toyworld.scenes import PARTNERS, SHAPES, Scene, ToyObject, sample_scenes

# scene A: large red circle top left (cell 0), small blue triangle in the center (cell 4)
A = Scene("A", [ToyObject("circle", "red", "large", 0), ToyObject("triangle", "blue", "small", 4)])
# scene B: small green star at the bottom right (cell 8)
B = Scene("B", [ToyObject("star", "green", "small", 8)])

TEXTS = [
    # circle: all right; triangle: wrong colour; square: absent (its partner circle is present). 11+10+10 = 31 words
    "there is a large red circle at the top left . there is a small green triangle in the center . "
    "there is a large red square at the bottom .",
    # star: all right; diamond: absent (its partner star is present). 11+10 = 21 words
    "there is a small green star at the bottom right . there is a small green diamond at the top .",
    # star: wrong size and position; ring: absent (its partner bar is absent too). 10+9 = 19 words
    "there is a large green star on the left . there is a red ring at the top .",
    # empty response: no mention, 0 words
    "",
]
SCENES = [A, B, B, A]


def test_by_position():
    rows = by_position(TEXTS, SCENES)
    # sentence 1: circle, star, star -> 0 of 3; sentence 2: triangle, diamond, ring -> 2 of 3; sentence 3: square -> 1 of 1
    assert [(r["position"], r["n_mentions"], r["n_hallucinated"]) for r in rows] == [(1, 3, 0), (2, 3, 2), (3, 1, 1)]
    assert rows[1]["rate"] == pytest.approx(2 / 3)


def test_by_object():
    out = by_object(TEXTS, SCENES)
    # hallucinated: square (partner circle present), diamond (partner star present), ring (partner bar absent)
    assert out["n_hallucinated"] == 3
    assert out["partner_present_share"] == pytest.approx(2 / 3)
    # chance: in A, 2 of the 6 absent shapes (square, cross) have a present partner -> 1/3;
    # in B, 1 of 7 (diamond) -> 1/7. Mentions: square in A, diamond and ring in B:
    # (1/3 + 1/7 + 1/7) / 3 = (7/21 + 6/21) / 3 = 13/63
    assert out["partner_present_chance"] == pytest.approx(13 / 63)
    per = out["per_shape"]
    assert (per["star"]["n_mentions"], per["star"]["n_hallucinated"]) == (2, 0)
    assert (per["square"]["n_hallucinated"], per["square"]["n_partner_present"]) == (1, 1)
    assert (per["ring"]["n_hallucinated"], per["ring"]["partner_present_share"]) == (1, 0.0)
    assert per["cross"] == {"n_mentions": 0, "n_hallucinated": 0, "n_partner_present": 0, "rate": 0.0, "partner_present_share": 0.0}


def test_by_claim_kind():
    out = by_claim_kind(TEXTS, SCENES)
    # existence: 3 + 2 + 2 = 7 mentions, 3 absent
    assert (out["existence"]["n_claims"], out["existence"]["n_wrong"]) == (7, 3)
    # attributes are checked only on the 4 existing objects (circle, triangle, star, star):
    # colour wrong once (green triangle), size once (large star), position once (star on the left)
    for kind in ("colour", "size", "position"):
        assert (out[kind]["n_claims"], out[kind]["n_wrong"]) == (4, 1)
        assert out[kind]["rate"] == pytest.approx(1 / 4)


def test_by_length():
    rows = by_length(TEXTS, SCENES, edges=(0, 20, 30))
    assert [r["label"] for r in rows] == ["0-19", "20-29", "30+"]
    # [0, 20): the empty response (0 words) and the 19-word one: mean 9.5 words; 1 of 2 hallucinates;
    # mentions 0 + 2, 1 hallucinated
    assert rows[0]["n_responses"] == 2 and rows[0]["mean_words"] == pytest.approx(9.5)
    assert rows[0]["chair_s"] == pytest.approx(1 / 2) and rows[0]["chair_i"] == pytest.approx(1 / 2)
    # [20, 30): the 21-word response, 1 of its 2 mentions hallucinated
    assert (rows[1]["n_responses"], rows[1]["chair_s"], rows[1]["chair_i"]) == (1, 1.0, 0.5)
    # [30, inf): the 31-word response, 1 of its 3 mentions hallucinated
    assert rows[2]["chair_i"] == pytest.approx(1 / 3) and rows[2]["mean_words"] == 31
    with pytest.raises(ValueError):
        by_length(TEXTS, SCENES, edges=(10, 5))


def test_breakdown_all_and_checks():
    out = breakdown_all(TEXTS, SCENES)
    assert set(out) == {"position", "object", "kind", "length"}
    assert sum(r["n_responses"] for r in out["length"]) == 4
    with pytest.raises(ValueError):
        by_position(TEXTS, SCENES[:2])
    assert by_position([], []) == [] and by_object([], [])["partner_present_share"] == 0.0


def test_cooccurrence_matrix_by_hand():
    # A has circle + triangle, B has star: P(triangle | circle) = 1, P(circle | star) = 0, P(x | square) = 0 (never seen)
    m = cooccurrence_matrix([A, B, A], shapes=("circle", "triangle", "star", "square"))
    assert m[0] == [1.0, 1.0, 0.0, 0.0]
    assert m[2] == [0.0, 0.0, 1.0, 0.0]
    assert m[3] == [0.0, 0.0, 0.0, 0.0]


def test_cooccurrence_matrix_shows_the_prior():
    def partner_rate(m):
        return sum(m[i][SHAPES.index(PARTNERS[s])] for i, s in enumerate(SHAPES)) / len(SHAPES)

    with_prior = cooccurrence_matrix(sample_scenes(1500, seed=1, prior=True))
    without = cooccurrence_matrix(sample_scenes(1500, seed=1, prior=False))
    assert partner_rate(with_prior) > partner_rate(without) + 0.2


def test_mark_hallucinations():
    assert mark_hallucinations(TEXTS[0], A) == TEXTS[0].replace("red square", "red [square]")
    assert mark_hallucinations(TEXTS[2], B) == "there is a large green star on the left . there is a red [ring] at the top ."
    assert mark_hallucinations(describe(A), A) == describe(A)  # a clean description is left as it is
    assert mark_hallucinations("", A) == ""
    # only the first shape word of a sentence is a mention (as parse_description counts), and only whole words
    assert mark_hallucinations("a square circle . squares", A, "<", ">") == "a <square> circle . squares"
    marked = mark_hallucinations(TEXTS[1] + " is there a ring ? the bar", B)
    assert marked.count("[") == sum(m.shape not in B.shapes for m in parse_description(TEXTS[1] + " is there a ring ? the bar"))


def test_unclaimed_sentences_are_the_ones_without_claims():
    texts = ["there is a red circle . there is a large blue at the bottom right .", "there is a star ? it is nice .", "", describe(A)]
    out = unclaimed_sentences(texts, max_examples=1)
    assert (out["n_sentences"], out["n_unclaimed"], out["responses_with_one"], out["n_responses"]) == (4 + len(parse_description(describe(A))), 2, 2, 4)
    assert out["rate"] == 2 / out["n_sentences"] and out["examples"] == ["there is a large blue at the bottom right"]
    # exactly the sentences the toy decomposer draws no claim from
    claimed = {c.sentence for c in ToyDecomposer().decompose(Candidate("p", 0, texts[0]))}
    assert claimed == {0}
    assert unclaimed_sentences([])["rate"] is None and unclaimed_sentences([describe(A)])["n_unclaimed"] == 0
