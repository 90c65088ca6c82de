"""POPE probing: the metric math by hand, the three ways of drawing absent objects, and the mechanics."""

from __future__ import annotations

import random

import pytest

from rlaifv_lib.errors import ConfigError
from rlaifv_lib.pope import (
    SETTINGS,
    POPEConfig,
    PriorStats,
    absent_shapes,
    binary_metrics,
    parse_yes_no,
    noisy_image,
    pope_all,
    pope_answers,
    pope_images,
    pope_items,
    pope_noise_sweep,
    prior_stats,
)
from rlaifv_lib.toyworld.scenes import PARTNERS, SHAPES, Scene, ToyObject, evaluation_scenes


def _scene(*shapes: str) -> Scene:
    return Scene("t", [ToyObject(s, "red", "small", c) for c, s in enumerate(shapes)])


# hand-made stats: frequency falls along SHAPES order, except 'bar' is the most popular;
# co-occurrence with 'circle': square 50 (its partner), then ring 30, star 20, the rest 1
_FREQ = {s: 100 - 10 * i for i, s in enumerate(SHAPES)} | {"bar": 500}
_CO = {a: {b: 1 for b in SHAPES if b != a} for a in SHAPES}
_CO["circle"] |= {"square": 50, "ring": 30, "star": 20}
STATS = PriorStats(_FREQ, _CO)


def test_binary_metrics_by_hand():
    preds = [True, True, True, False, False, True, False, False]
    truths = [True, True, False, False, True, True, False, False]
    m = binary_metrics(preds, truths)
    # tp: rows 0,1,5 = 3; fp: row 2 = 1; fn: row 4 = 1; tn: rows 3,6,7 = 3
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 1, 1, 3)
    assert m["accuracy"] == pytest.approx(6 / 8)  # (3 + 3) / 8
    assert m["precision"] == pytest.approx(3 / 4)  # 3 / (3 + 1)
    assert m["recall"] == pytest.approx(3 / 4)  # 3 / (3 + 1)
    assert m["f1"] == pytest.approx(0.75)  # 2 * .75 * .75 / 1.5
    assert m["yes_ratio"] == pytest.approx(4 / 8)  # 4 yes answers of 8


def test_binary_metrics_always_yes_and_always_no():
    truths = [True, False, False, False]
    yes = binary_metrics([True] * 4, truths)
    # tp 1, fp 3: precision 1/4, recall 1, F1 = 2*(1/4)*1/(5/4) = 0.4
    assert yes["precision"] == pytest.approx(0.25) and yes["recall"] == 1.0 and yes["f1"] == pytest.approx(0.4)
    assert yes["yes_ratio"] == 1.0 and yes["accuracy"] == pytest.approx(0.25)
    no = binary_metrics([False] * 4, truths)
    # no yes at all: precision, recall and F1 are 0 by convention; accuracy 3/4
    assert no["precision"] == 0.0 and no["recall"] == 0.0 and no["f1"] == 0.0 and no["accuracy"] == pytest.approx(0.75)
    with pytest.raises(ValueError):
        binary_metrics([True], [])


@pytest.mark.parametrize(
    "text,yes",
    [
        ("yes .", True),
        ("Yes, there is a dog in the image.", True),
        ("no .", False),
        ("No, there is not.", False),
        ("There is not a dog.", False),
        ("There is a dog. No other animal.", True),  # only the text before the first full stop counts
        ("nothing", True),  # "nothing" is not the word "no"
        ("", True),
    ],
)
def test_parse_yes_no(text, yes):
    assert parse_yes_no(text) is yes


def test_absent_shapes_by_setting():
    scene = _scene("circle", "triangle")
    rng = random.Random(0)
    absent = set(SHAPES) - {"circle", "triangle"}
    # random: k distinct absent shapes
    r = absent_shapes(scene, "random", 2, STATS, rng)
    assert len(set(r)) == 2 and set(r) <= absent
    # popular: the most frequent absent shapes: bar (500), then square (90)
    assert absent_shapes(scene, "popular", 2, STATS, rng) == ["bar", "square"]
    # adversarial: the partners first (square for circle, cross for triangle, ranked by co-occurrence:
    # square 50+1=51 > cross 1+1=2), then by co-occurrence with present shapes: ring 30+1 = 31
    assert absent_shapes(scene, "adversarial", 3, STATS, rng) == ["square", "cross", "ring"]
    with pytest.raises(ValueError):
        absent_shapes(scene, "sideways", 1, STATS, rng)


def test_absent_shapes_capped_by_what_is_absent():
    scene = _scene(*SHAPES[:6])
    assert sorted(absent_shapes(scene, "random", 6, STATS, random.Random(0))) == sorted(SHAPES[6:])


def test_prior_stats_partners_cooccur_most():
    stats = prior_stats(400, seed=3)
    for a in SHAPES:
        assert max(stats.cooccur[a], key=stats.cooccur[a].get) == PARTNERS[a]
    assert sum(stats.frequency.values()) > 400


def test_pope_items_balanced_and_adversarial_picks_partners():
    scenes = evaluation_scenes(20)
    stats = prior_stats(300, seed=1)
    for setting in SETTINGS:
        items = pope_items(scenes, setting, POPEConfig(), stats)
        assert sum(it.truth for it in items) == sum(len(s.objects) for s in scenes)
        assert sum(not it.truth for it in items) == sum(len(s.objects) for s in scenes)  # <= 4 of 8 shapes present
        for it in items:
            assert (it.shape in scenes[it.scene_index].shapes) is it.truth
            assert it.question == f"is there a {it.shape} ?"
    adv = pope_items(scenes, "adversarial", POPEConfig(), stats)
    for i, s in enumerate(scenes):
        asked = {it.shape for it in adv if it.scene_index == i and not it.truth}
        absent_partners = {PARTNERS[x] for x in s.shapes} - s.shapes
        assert absent_partners <= asked  # every absent partner is asked about


def test_config_checks():
    with pytest.raises(ConfigError):
        POPEConfig(template="is there a thing ?")
    with pytest.raises(ConfigError):
        POPEConfig(batch_size=0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError):
            POPEConfig(noise=bad)


def test_noise_is_seeded_per_image_and_zero_leaves_the_renders():
    import numpy as np

    from rlaifv_lib.toyworld import render_scene

    scenes = evaluation_scenes(3)
    clean = pope_images(scenes)
    assert all(np.array_equal(np.asarray(a), np.asarray(render_scene(s))) for a, s in zip(clean, scenes))
    noisy = pope_images(scenes, POPEConfig(noise=60))
    again = pope_images(scenes, POPEConfig(noise=60))
    other = pope_images(scenes, POPEConfig(noise=60, noise_seed=1))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(noisy, again))
    assert not np.array_equal(np.asarray(noisy[0]), np.asarray(other[0]))
    assert not np.array_equal(np.asarray(noisy[0]) - np.asarray(clean[0]), np.asarray(noisy[1]) - np.asarray(clean[1]))
    diff = np.asarray(noisy[0], dtype=float) - np.asarray(clean[0], dtype=float)
    assert 40 < diff.std() < 60  # clipping at 0/255 shrinks it a little below 60
    flat = noisy_image(clean[0], 0.0, 5)
    assert np.array_equal(np.asarray(flat), np.asarray(clean[0]))


def test_pope_on_tiny_model(tiny_toy):
    model, processor = tiny_toy
    scenes = evaluation_scenes(2)
    cfg = POPEConfig(prior_scenes=100, max_new_tokens=2, batch_size=8)
    rows = pope_answers(model, processor, scenes, "adversarial", cfg)
    n_present = sum(len(s.objects) for s in scenes)
    assert len(rows) == 2 * n_present
    assert all(0.0 <= r["p_yes"] <= 1.0 and 0.0 <= r["p_no"] <= 1.0 for r in rows)
    assert all(r["text_yes"] == parse_yes_no(r["text"]) and r["logit_yes"] == (r["p_yes"] > r["p_no"]) for r in rows)
    res = pope_all(model, processor, scenes, cfg)
    assert set(res) == set(SETTINGS)
    for setting in SETTINGS:
        for mode in ("text", "logits"):
            m = res[setting][mode]
            assert m["n"] == 2 * n_present and 0.0 <= m["accuracy"] <= 1.0


def test_noise_sweep_on_tiny_model(tiny_toy):
    model, processor = tiny_toy
    scenes = evaluation_scenes(2)
    cfg = POPEConfig(prior_scenes=100, batch_size=8)
    sweep = pope_noise_sweep(model, processor, scenes, [0, 80], cfg)
    n = 2 * sum(len(s.objects) for s in scenes)
    assert list(sweep) == [0.0, 80.0] and all(set(row) == set(SETTINGS) for row in sweep.values())
    assert all(m["n"] == n for row in sweep.values() for m in row.values())
    clean = pope_all(model, processor, scenes, cfg)
    assert all(sweep[0.0][s] == clean[s]["logits"] for s in SETTINGS)  # noise 0 is the ordinary probe
    with pytest.raises(ConfigError):
        pope_noise_sweep(model, processor, scenes, [], cfg)
    with pytest.raises(ConfigError):
        pope_noise_sweep(model, processor, scenes, [-5], cfg)
