"""CHAIR on COCO-style vocabularies, checked against values worked out by hand."""

from __future__ import annotations

import pytest

from rlaifv_lib.errors import EmptyEvaluationError
from rlaifv_lib.metrics_coco import COCO_CATEGORIES, COCO_VOCAB, coco_chair, coco_mentions, make_vocab, normalise_truth, singular_forms

# (caption, ground truth, expected mentions in order, hallucinated mentions)
CASES = [
    # plain single words, nothing hallucinated
    ("A dog sits next to a cat.", {"dog", "cat"}, ["dog", "cat"], 0),
    # repeats are counted: dogs + dog = 2 dog mentions; the frisbee is absent
    ("Two dogs play. One dog has a frisbee.", {"dog"}, ["dog", "dog", "frisbee"], 1),
    # synonyms: man, woman -> person (twice)
    ("A man and a woman stand by a bus.", {"person", "bus"}, ["person", "person", "bus"], 0),
    # irregular plural children -> child -> person; horse is absent
    ("The children feed the sheep and a horse.", {"person", "sheep"}, ["person", "sheep", "horse"], 1),
    # two-word names first: "hot dog" is food (no dog), "teddy bear" no bear; the teddy bear is absent
    ("A hot dog and a teddy bear on a dining table.", {"hot dog", "dining table"}, ["hot dog", "teddy bear", "dining table"], 1),
    # plural of a two-word name, plain plural; the bicycle is absent
    ("Traffic lights over the street, with cars and a bicycle.", {"traffic light", "car"}, ["traffic light", "car", "bicycle"], 1),
    # names no object at all
    ("A beautiful sunny day in the park.", {"person"}, [], 0),
    # kitten -> cat, sofa -> couch; the cell phone is absent
    ("A kitten sleeps on a sofa beside a laptop and a cell phone.", {"cat", "couch", "laptop"}, ["cat", "couch", "laptop", "cell phone"], 1),
    # irregular plural mice -> mouse, which is absent
    ("Mice run under the refrigerator.", {"refrigerator"}, ["mouse", "refrigerator"], 1),
    # -ves, -es and -s plurals
    ("Knives, forks and spoons lie beside a bowl of oranges.", {"knife", "fork", "spoon", "bowl", "orange"}, ["knife", "fork", "spoon", "bowl", "orange"], 0),
    # no object, empty truth
    ("Nothing but a blue sky.", set(), [], 0),
    # a repeated correct object and one absent one
    ("A giraffe and a giraffe and a zebra.", {"giraffe"}, ["giraffe", "giraffe", "zebra"], 1),
]


@pytest.mark.parametrize("caption,truth,expected,n_hall", CASES)
def test_mentions_per_caption(caption, truth, expected, n_hall):
    got = coco_mentions(caption)
    assert got == expected
    assert sum(m not in truth for m in got) == n_hall


def test_coco_chair_on_hand_worked_captions():
    texts = [c[0] for c in CASES]
    truths = [c[1] for c in CASES]
    m = coco_chair(texts, truths)
    # mentions per caption: 2+3+3+3+3+3+0+4+2+5+0+3 = 31
    assert m["n_mentions"] == 31
    # hallucinated mentions: 0+1+0+1+1+1+0+1+1+0+0+1 = 7 -> CHAIR_i = 7/31
    assert m["n_hallucinated"] == 7
    assert m["chair_i"] == pytest.approx(7 / 31)
    # captions with >= 1 hallucination: #2,4,5,6,8,9,12 = 7 of 12 -> CHAIR_s = 7/12
    assert m["chair_s"] == pytest.approx(7 / 12)
    # Object HalBench: captions #7 and #11 name no object, so 7 of 10
    assert m["n_responses_with_objects"] == 10
    assert m["chair_s_halbench"] == pytest.approx(7 / 10)
    # coverage: truth sizes 2+1+2+2+2+2+1+3+1+5+0+1 = 22; covered 2+1+2+2+2+2+0+3+1+5+0+1 = 21
    assert m["coverage"] == pytest.approx(21 / 22)
    assert m["n_responses"] == 12


def test_truths_accept_synonyms_and_plurals():
    # truth "men" -> person, "sofas" -> couch; the response names 1 person + 1 couch + 1 dog (absent)
    m = coco_chair(["A guy on a couch with a dog."], [["men", "sofas"]])
    assert m["chair_i"] == pytest.approx(1 / 3)  # dog is the 1 hallucinated mention of 3
    assert m["coverage"] == pytest.approx(2 / 2)  # person and couch both covered
    assert normalise_truth(["People", "hot dogs", "lamp"]) == {"person", "hot dog", "lamp"}


def test_two_word_names_before_single_words():
    # "hot dog" must not yield a dog, "teddy bear" not a bear, "cell phone" one mention only
    assert coco_mentions("hot dogs and teddy bears and a cell phone") == ["hot dog", "teddy bear", "cell phone"]
    assert coco_mentions("a bear and a dog") == ["bear", "dog"]


def test_plural_rules():
    assert "person" in [COCO_VOCAB.get(w) for w in singular_forms("people")]
    assert "puppy" in singular_forms("puppies")
    assert "bench" in singular_forms("benches")
    assert "knife" in singular_forms("knives")
    assert "ski" not in singular_forms("skies")  # skies is not skis
    assert coco_mentions("buses, horses, vases and glasses") == ["bus", "horse", "vase"]


def test_vocab_covers_80_categories():
    assert len(COCO_CATEGORIES) == 80
    assert set(COCO_VOCAB.values()) == set(COCO_CATEGORIES)


def test_custom_vocab():
    vocab = make_vocab({"cone": ("traffic cone",), "lamp": ("street lamp",)})
    # the custom vocab replaces COCO: "dog" is not an object any more
    assert coco_mentions("Street lamps and a traffic cone near a dog.", vocab) == ["lamp", "cone"]
    m = coco_chair(["Street lamps and a traffic cone."], [{"lamp"}], vocab=vocab)
    assert m["chair_i"] == pytest.approx(1 / 2)


def test_empty_and_mismatched_inputs():
    with pytest.raises(EmptyEvaluationError):
        coco_chair([], [])  # no responses: no rate, not 0
    with pytest.raises(ValueError):
        coco_chair(["a dog"], [])
