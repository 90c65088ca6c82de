"""Model loading, presets, processor image caps and error messages (rlaifv_lib.models)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlaifv_lib import models
from rlaifv_lib.dpo import DPOSettings, toy_dpo_settings
from rlaifv_lib.errors import ChatTemplateError, ConfigError, ModelLoadError, QuantizationUnavailableError
from rlaifv_lib.memory import lora_parameter_count
from rlaifv_lib.models import (
    LANGUAGE_LORA_TARGETS,
    PRESETS,
    YES_NO_SUFFIX,
    LoadOptions,
    chat_prompt,
    get_preset,
    load_causal_lm,
    load_model,
    resolve_model,
    set_max_pixels,
)

from tiny_models import QWEN_TEMPLATE, bpe_tokenizer, save_tiny


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """Folders of the tiny LLaVA, Qwen2-VL and Idefics3 checkpoints."""
    return {a: save_tiny(a, tmp_path_factory.mktemp(a)) for a in ("llava", "qwen2_vl", "idefics3")}


def test_presets_cover_the_families():
    families = {p.family for p in PRESETS.values()}
    assert {"toy", "llava", "qwen2_5_vl", "idefics3", "causal_lm"} <= families
    assert PRESETS["llava-1.5-7b"].model_id == "llava-hf/llava-1.5-7b-hf"
    for p in PRESETS.values():
        assert p.memory_hint
        if p.role == "policy" and p.family != "toy":
            assert p.question_suffix == YES_NO_SUFFIX and p.lora_target_modules == LANGUAGE_LORA_TARGETS
    assert {p.name for p in PRESETS.values() if p.role == "decomposer"} >= {"qwen2.5-1.5b-instruct", "qwen2.5-7b-instruct", "llama-3-8b-instruct"}
    with pytest.raises(ConfigError, match="known presets"):
        get_preset("gpt-5-vision")


def test_preset_settings_feed_the_library_configs():
    preset = get_preset("qwen2.5-vl-3b")
    dpo = DPOSettings.from_preset(preset, max_steps=3)
    assert isinstance(dpo, DPOSettings) and dpo.beta == 0.1 and dpo.learning_rate == preset.dpo_learning_rate and dpo.max_steps == 3
    assert dpo.target_modules == LANGUAGE_LORA_TARGETS and dpo.sft_weight == 0.0  # official: no SFT term
    toy = DPOSettings.from_preset("toy-policy")  # the demo's recipe comes from the toy preset, one source
    assert toy == toy_dpo_settings() and (toy.learning_rate, toy.epochs, toy.sft_weight) == (1e-3, 2.0, 1.0)
    assert preset.question_suffix == " Please answer yes or no." and get_preset("toy-policy").question_suffix == ""
    assert preset.load_options().max_pixels == 448 * 448


def test_resolve_model_names():
    assert resolve_model("toy-policy") == models.TOY_POLICY
    assert resolve_model("smolvlm") == "HuggingFaceTB/SmolVLM-Instruct"
    assert resolve_model("some/other-model") == "some/other-model"


def test_load_options_are_checked():
    assert LoadOptions(dtype="bfloat16").dtype == torch.bfloat16
    with pytest.raises(ConfigError):
        LoadOptions(dtype="bfloat17")
    with pytest.raises(ConfigError):
        LoadOptions(max_pixels=10)


def test_load_tiny_checkpoints_with_image_cap(tiny_dirs):
    _, qwen = load_model(tiny_dirs["qwen2_vl"], options=LoadOptions(max_pixels=28 * 28 * 2))
    assert qwen.image_processor.size["longest_edge"] == 28 * 28 * 2
    _, idefics = load_model(tiny_dirs["idefics3"], options=LoadOptions(max_pixels=60 * 60))
    assert idefics.image_processor.size == {"longest_edge": 56}  # whole 28 px tiles
    model, llava = load_model(tiny_dirs["llava"], dtype=torch.float32)
    assert set_max_pixels(llava, 1000) is llava and model.dtype == torch.float32  # fixed-size family: unchanged


def test_missing_model_errors_name_the_path(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "no_such_model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="offline mode is on") as e:
        load_model("nobody/nonexistent-vlm")
    assert "nobody/nonexistent-vlm" in str(e.value)


def test_text_only_model_is_refused_and_loads_as_decomposer(tmp_path):
    tok = bpe_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>", "<|endoftext|>", QWEN_TEMPLATE)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="not an image-text-to-text model"):
        load_model(tmp_path)
    model, tokenizer = load_causal_lm(tmp_path)
    assert model.config.model_type == "llama" and tokenizer.chat_template
    with pytest.raises(ModelLoadError, match="load_causal_lm"):
        load_model("qwen2.5-7b-instruct")


def test_four_bit_without_bitsandbytes(monkeypatch, tiny_dirs):
    monkeypatch.setattr(models, "bnb_available", lambda: False)
    with pytest.raises(QuantizationUnavailableError, match="bitsandbytes"):
        load_model(tiny_dirs["llava"], options=LoadOptions(load_in_4bit=True))


@pytest.mark.skipif(not models.bnb_available(), reason="bitsandbytes cannot run here")
def test_four_bit_load(tiny_dirs):
    model, _ = load_model(tiny_dirs["llava"], options=LoadOptions(load_in_4bit=True))
    assert getattr(model, "is_loaded_in_4bit", False)


def test_chat_template_missing(tiny_dirs):
    _, processor = load_model(tiny_dirs["llava"])
    processor.chat_template = None
    processor.tokenizer.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat template"):
        chat_prompt(processor, "hi")


def test_lora_targets_are_decoder_only(tiny_dirs):
    from rlaifv_lib.models import language_model_linear_layers

    for arch, folder in tiny_dirs.items():
        model, _ = load_model(folder)
        n = lora_parameter_count(model, LANGUAGE_LORA_TARGETS, r=2)
        assert n == lora_parameter_count(model, None, r=2) > 0, arch  # the regex = dpo's decoder layers
        assert all("vision" not in name for name in language_model_linear_layers(model))


@pytest.mark.skipif(not models.TOY_POLICY.exists(), reason="toy checkpoints not built")
def test_toy_preset_still_loads():
    model, processor = load_model("toy-policy")
    assert model.dtype == torch.float32 and "<image>" in chat_prompt(processor, "describe the image .")


# ---------------------------------------------------------------- local availability, device map per process


def test_available_locally_checks_folders_and_the_cache_without_network(tmp_path):
    from rlaifv_lib.models import available_locally

    assert available_locally("toy-policy")
    assert not available_locally(tmp_path)  # a folder without config.json
    (tmp_path / "config.json").write_text("{}")
    assert available_locally(tmp_path)
    assert not available_locally("nobody-here/no-such-model-xyz")
    assert not available_locally("not a valid id!!")


def test_local_device_map_follows_local_rank(monkeypatch):
    from rlaifv_lib.models import local_device_map

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert local_device_map() == {"": 0}
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert local_device_map() == {"": 3}
