"""Toy world: scenes, rendering, grammar, tokenizer/processor, tiny model, short pre-training."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest

from rlaifv_lib.errors import ConfigError
from rlaifv_lib.toyworld import (
    PARTNERS,
    PretrainConfig,
    Scene,
    ToyObject,
    WorldConfig,
    build_processor,
    build_tokenizer,
    describe,
    evaluation_scenes,
    noisy_caption,
    parse_description,
    parse_question,
    render_scene,
    sample_scenes,
    training_scenes,
    true_answer,
)
from rlaifv_lib.toyworld.grammar import clean_questions


def test_scenes_have_distinct_shapes_and_cells():
    for s in sample_scenes(300, seed=1, prior=True):
        assert 1 <= len(s.objects) <= 4
        assert len(s.shapes) == len(s.objects)
        assert len({o.cell for o in s.objects}) == len(s.objects)


def test_cooccurrence_prior_only_in_pretraining_distribution():
    def partner_rate(scenes):
        pairs = [(o.shape, s) for s in scenes for o in s.objects if len(s.objects) > 1]
        return sum(PARTNERS[sh] in s.shapes for sh, s in pairs) / len(pairs)

    prior = partner_rate(sample_scenes(2000, seed=2, prior=True))
    flat = partner_rate(sample_scenes(2000, seed=2, prior=False))
    assert prior > flat + 0.25


def test_evaluation_set_is_fixed_and_disjoint_from_training_seeds():
    a, b = evaluation_scenes(200), evaluation_scenes(200)
    assert [s.truth() for s in a] == [s.truth() for s in b]
    assert len(a) >= 200
    train = training_scenes(50, seed=7)
    assert not {s.id for s in train} & {s.id for s in a}
    with pytest.raises(ConfigError):
        training_scenes(5, seed=20240527)


def test_render_is_deterministic_rgb_48px():
    s = sample_scenes(1, seed=3)[0]
    a, b = np.asarray(render_scene(s)), np.asarray(render_scene(s))
    assert a.shape == (48, 48, 3) and (a == b).all()


def test_describe_and_parse_round_trip():
    s = Scene("x", [ToyObject("circle", "red", "large", 0), ToyObject("star", "blue", "small", 8)])
    text = describe(s)
    assert text == "there is a large red circle at the top left . there is a small blue star at the bottom right ."
    m = parse_description(text)
    assert [(x.shape, x.colour, x.size, x.position, x.sentence) for x in m] == [
        ("circle", "red", "large", "top left", 0),
        ("star", "blue", "small", "bottom right", 1),
    ]


def test_caption_noise_names_absent_partners():
    cfg = WorldConfig(p_add=0.5, p_substitute=0.3, p_size_flip=0.0)
    rng = random.Random(0)
    s = Scene("x", [ToyObject("circle", "red", "large", 4)])
    mentioned = [tuple(m.shape for m in parse_description(noisy_caption(s, rng, cfg))) for _ in range(400)]
    subs = sum(m == ("square",) for m in mentioned) / 400
    adds = sum(m == ("circle", "square") for m in mentioned) / 400
    assert 0.2 < subs < 0.4 and 0.4 < adds < 0.6
    assert all(set(m) <= {"circle", "square"} for m in mentioned)


def test_questions_and_true_answers():
    s = Scene("x", [ToyObject("circle", "red", "large", 0)])
    assert parse_question("is there a circle ?") == ("existence", "circle", None)
    assert true_answer(s, "is there a circle ?") and not true_answer(s, "is there a square ?")
    assert true_answer(s, "is the circle red ?") and not true_answer(s, "is the circle blue ?")
    assert true_answer(s, "is the circle at the top left ?") and not true_answer(s, "is the circle small ?")
    assert not true_answer(s, "is the square red ?")
    qs = clean_questions(s, random.Random(0), 200)
    assert all(true_answer(s, q) == a for q, a in qs)
    assert 0.2 < sum(a for _, a in qs) / len(qs) < 0.8


def test_tokenizer_and_processor_expand_the_image():
    tok = build_tokenizer()
    ids = tok("is there a Circle ?", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    proc = build_processor(tok)
    text = proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe the image ."}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text == "<s>user : <image> describe the image . assistant :"
    enc = proc(images=[render_scene(sample_scenes(1, seed=0)[0])], text=[text], return_tensors="pt")
    image_id = tok.convert_tokens_to_ids("<image>")
    assert int((enc["input_ids"] == image_id).sum()) == 9
    assert tuple(enc["pixel_values"].shape) == (1, 3, 48, 48)


def test_pretrain_config_checks():
    with pytest.raises(ConfigError):
        PretrainConfig(role="teacher")
    with pytest.raises(ConfigError):
        PretrainConfig(lr=0)
    with pytest.raises(ConfigError):
        WorldConfig(max_objects=9)


@pytest.mark.slow
def test_pretrain_toy_cli_short_run_is_reproducible(tmp_path):
    """`rlaifv pretrain-toy` (shortened) trains, saves safetensors, and the same seed gives the same weights."""
    from safetensors.torch import load_file

    for out in ("a", "b"):
        cmd = [sys.executable, "-m", "rlaifv_lib.cli", "pretrain-toy", "--role", "policy", "--out", str(tmp_path / out),
               "--steps", "3", "--vision-steps", "3"]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    wa = load_file(tmp_path / "a" / "policy" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "policy" / "model.safetensors")
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    assert (tmp_path / "a" / "policy" / "tokenizer.json").exists()
    assert not list((tmp_path / "a" / "policy").glob("*.bin"))
