"""rlaifv_lib.tiny: tiny random stand-ins of real architectures (notebook 08, conformance tests)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from rlaifv_lib.claims import ClaimsConfig, LLMDecomposer
from rlaifv_lib.feedback import yes_no_probs
from rlaifv_lib.models import chat_prompt, load_model
from rlaifv_lib.records import Candidate
from rlaifv_lib.tiny import ARCHITECTURES, build_chat_lm, build_tiny, llava_processor, save_tiny


def test_build_tiny_is_seeded_and_checks_the_name():
    a, _ = build_tiny("llava", seed=3)
    b, _ = build_tiny("llava", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="unknown tiny architecture"):
        build_tiny("gpt2")
    assert set(ARCHITECTURES) == {"llava", "qwen2_vl", "qwen2_5_vl", "idefics3"}


def test_init_std_redraws_matrices_and_makes_answers_depend_on_the_question():
    from PIL import Image

    default, processor = build_tiny("llava")
    wide, _ = build_tiny("llava", init_std=0.1)
    w = wide.model.language_model.layers[0].self_attn.q_proj.weight
    assert 0.07 < float(w.detach().std()) < 0.13 and float(default.model.language_model.layers[0].self_attn.q_proj.weight.detach().std()) < 0.05
    image = Image.new("RGB", (28, 28), (200, 30, 30))
    questions = ["Is there a cat?", "Is the sky clear?", "Is a man riding a bicycle?", "Is the dog brown?"]
    probs = yes_no_probs(wide, processor, [image], questions, [0] * len(questions))
    assert len({round(py - pn, 4) for py, pn in probs}) > 1


def test_save_tiny_loads_back_like_a_checkpoint(tmp_path):
    folder = save_tiny("llava", tmp_path / "m", init_std=0.1)
    model, processor = load_model(folder)
    ref, _ = build_tiny("llava", init_std=0.1)
    assert model.config.model_type == "llava"
    assert all(torch.allclose(p, q) for p, q in zip(model.parameters(), ref.parameters()))


def test_build_chat_lm_runs_the_llm_decomposer():
    lm, tok = build_chat_lm()
    dec = LLMDecomposer(lm, tok, ClaimsConfig(decomposer="llm", max_new_tokens=6, batch_size=2))
    claims = dec.decompose_all([Candidate("p", 0, "There is a red cat on the table.")], progress=False)
    assert all(c.question.endswith("?") for c in claims)
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False).endswith("assistant\n")


def test_llava_processor_at_336_px_gives_llava_15s_576_image_tokens():
    processor = llava_processor(336)
    ids = processor(images=[Image.new("RGB", (500, 400))], text=[chat_prompt(processor, "Is there a cat?")])["input_ids"][0]
    assert ids.count(processor.tokenizer.convert_tokens_to_ids("<image>")) == 576
