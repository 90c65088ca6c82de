"""Tests of rlaifv_lib.dpo: QLoRA DPO with TRL on a tiny random toy LLaVA."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from datasets import Dataset
from PIL import Image

from rlaifv_lib import dpo, models
from rlaifv_lib.pairs import to_trl_dataset
from rlaifv_lib.dpo import (
    TRL_COLUMNS,
    DPOSettings,
    build_dpo_trainer,
    merge_adapters,
    train_dpo,
)
from rlaifv_lib.models import count_parameters, language_model_linear_layers
from rlaifv_lib.errors import ConfigError, NoPairsError, QuantizationUnavailableError
from rlaifv_lib.records import PreferencePair

UPSTREAM_DEPRECATION = "`is_gradient_checkpointing` is deprecated"  # TRL 1.16 / PEFT on transformers 5

FAST = dict(batch_size=2, max_steps=2, learning_rate=1e-2, warmup_ratio=0.0, lr_scheduler_type="constant", logging_steps=1, progress=False)


def _pairs(n: int = 4) -> list[PreferencePair]:
    colours = [(200, 10, 10), (10, 10, 200), (10, 200, 10), (200, 200, 10)]
    return [
        PreferencePair(
            prompt_id=f"p{i}",
            chosen="there is a red circle .",
            rejected="there is a blue square at the top left .",
            margin=1.0,
            instruction="describe the image .",
            image=Image.new("RGB", (48, 48), colours[i % 4]),
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def toy_dir(tiny_toy, tmp_path_factory):
    """The tiny toy model and processor saved to a folder."""
    model, processor = tiny_toy
    path = tmp_path_factory.mktemp("tiny_toy")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _has_lora(model: torch.nn.Module) -> bool:
    return any("lora_" in n for n, _ in model.named_modules())


def test_settings_are_checked():
    assert DPOSettings().beta == 0.1
    with pytest.raises(ConfigError):
        DPOSettings(beta=0)
    with pytest.raises(ConfigError):
        DPOSettings(batch_size=0)
    with pytest.raises(ConfigError):
        DPOSettings(load_in_4bit=False, require_4bit=True)


def test_empty_pair_set_raises(tiny_toy):
    model, processor = tiny_toy
    for empty in ([], Dataset.from_dict({c: [] for c in TRL_COLUMNS})):
        with pytest.raises(NoPairsError, match="SamplingConfig.n"):
            train_dpo(model, processor, empty, DPOSettings(**FAST), "unused")


def test_to_trl_dataset_format():
    ds = to_trl_dataset(_pairs(2))
    assert set(TRL_COLUMNS) <= set(ds.column_names) and "prompt_id" in ds.column_names
    row = ds[0]
    assert isinstance(row["images"][0], Image.Image)
    assert row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"][1]["text"] == "describe the image ."
    assert row["chosen"][0]["content"][0]["text"] == "there is a red circle ."
    assert dpo._as_dataset(ds).column_names == list(TRL_COLUMNS)  # extra columns dropped before training


def test_targets_are_decoder_linears_only(tiny_toy):
    names = language_model_linear_layers(tiny_toy[0])
    assert len(names) == 7  # q k v o gate up down of the one decoder layer
    assert all("language_model" in n for n in names)
    assert not any("vision_tower" in n or "projector" in n or n == "lm_head" for n in names)


@pytest.mark.skipif(not models.bnb_available(), reason="bitsandbytes cannot run 4-bit here")
@pytest.mark.filterwarnings(f"ignore:{UPSTREAM_DEPRECATION}:FutureWarning")  # trainer.train() called directly
def test_qlora_step_changes_only_lora_weights(toy_dir, tiny_toy):
    from bitsandbytes.nn import Linear4bit

    ds = to_trl_dataset(_pairs(4))  # a Dataset with extra columns, as pairs.py writes it
    trainer = build_dpo_trainer(toy_dir, tiny_toy[1], ds, DPOSettings(**FAST), toy_dir / "run")
    model = trainer.model
    assert any(isinstance(m, Linear4bit) for m in model.modules()), "the 4-bit path was not used"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        if param.requires_grad:
            assert "lora_" in name and "language_model" in name, name
            assert changed, f"trainable {name} did not change"
        else:
            assert not changed, f"frozen {name} changed"
    assert not any("lora_" in n for n, _ in model.named_modules() if "vision_tower" in n or "projector" in n)
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= logged


@pytest.mark.skipif(not models.bnb_available(), reason="bitsandbytes cannot run 4-bit here")
def test_train_dpo_saves_adapters_and_log(toy_dir, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train_dpo(str(toy_dir), None, _pairs(2), DPOSettings(**{**FAST, "max_steps": 1}), tmp_path)
    assert not [w for w in caught if UPSTREAM_DEPRECATION in str(w.message)], "the library's own path shows the upstream warning"
    assert result.quantized and 0 < result.trainable_params < result.total_params
    assert (result.adapter_dir / "adapter_model.safetensors").exists()
    saved = json.loads((tmp_path / "dpo_log.json").read_text())
    assert saved["quantized"] is True and saved["log_history"] and saved["memory"]["total_gib"] > 0


def test_fallback_to_full_precision(monkeypatch, capsys, tiny_toy, tmp_path):
    monkeypatch.setattr(models, "bnb_available", lambda: False)
    model, processor = tiny_toy
    with pytest.warns(RuntimeWarning, match="full-precision LoRA"):
        result = train_dpo(model, processor, _pairs(2), DPOSettings(**{**FAST, "max_steps": 1}), tmp_path)
    out = capsys.readouterr().out
    assert "falls back to full-precision LoRA" in out
    assert "'loss'" not in out and result.log_history[0]["loss"] is not None  # the log is kept, not printed per step
    assert not result.quantized
    assert not any(type(m).__name__ == "Linear4bit" for m in result.model.modules())
    assert not _has_lora(model), "the caller's model was modified"


def test_require_4bit_raises_when_unavailable(monkeypatch, tiny_toy):
    monkeypatch.setattr(models, "bnb_available", lambda: False)
    with pytest.raises(QuantizationUnavailableError, match="require_4bit=False"):
        build_dpo_trainer(tiny_toy[0], tiny_toy[1], _pairs(2), DPOSettings(require_4bit=True), "unused")


@pytest.mark.filterwarnings(f"ignore:{UPSTREAM_DEPRECATION}:FutureWarning")  # get_peft_model called directly
def test_merge_matches_peft_model(toy_dir, tiny_toy, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    from rlaifv_lib.models import load_model

    model, processor = tiny_toy
    targets = language_model_linear_layers(model)
    adapted = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=targets, init_lora_weights=False))
    adapted.save_pretrained(tmp_path / "adapter")
    out = merge_adapters(toy_dir, tmp_path / "adapter", tmp_path / "merged")
    merged, merged_processor = load_model(out)
    assert not _has_lora(merged) and merged_processor.chat_template

    base, _ = load_model(toy_dir)
    peft_model = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    inputs = processor(images=[Image.new("RGB", (48, 48), (200, 10, 10))], text=["<s>user : <image> describe the image . assistant : there"], return_tensors="pt")
    with torch.no_grad():
        want, got = peft_model(**inputs).logits, merged(**inputs).logits
        plain = model(**inputs).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3), "the adapters had no effect; the test proves nothing"


def test_parameter_count_and_memory_estimate(tiny_toy):
    trainable, total = count_parameters(tiny_toy[0])
    assert trainable == total == sum(p.numel() for p in tiny_toy[0].parameters())
