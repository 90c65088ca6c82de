"""Memory estimates of a (Q)LoRA DPO run from parameter counts and from preset architectures (rlaifv_lib.memory)."""

from __future__ import annotations

import pytest

from rlaifv_lib.errors import ConfigError
from rlaifv_lib.memory import estimate_memory, image_tokens, weights_memory
from rlaifv_lib.models import get_preset


def test_weights_memory_4bit_vs_bf16():
    q = weights_memory(7_000_000_000, 40_000_000, load_in_4bit=True)
    full = weights_memory(7_000_000_000, 40_000_000, load_in_4bit=False)
    assert 3 < q["total_gib"] < 5 < full["total_gib"]
    # 40M LoRA parameters: fp32 weights + gradients (4 + 4 bytes) and two AdamW moments (8 bytes)
    assert q["optimizer_gib"] == pytest.approx(40_000_000 * 8 / 1024**3)
    assert q["total_gib"] == pytest.approx(sum(v for k, v in q.items() if k != "total_gib"))


def test_memory_estimates_from_presets():
    llava = estimate_memory("llava-1.5-7b")
    assert 6.9e9 < llava["total_params"] < 7.2e9 and llava["image_tokens"] == 576
    assert llava["base_weights_gib"] < llava["bf16_weights_gib"] / 3  # 4-bit
    full = estimate_memory("llava-1.5-7b", load_in_4bit=False)
    assert full["base_weights_gib"] > 12
    qwen = get_preset("qwen2.5-vl-3b")
    assert 3.6e9 < estimate_memory(qwen)["total_params"] < 3.9e9
    big = estimate_memory(qwen, image_size=(896, 896), max_pixels=896 * 896, batch_size=2)
    assert big["activations_gib"] > estimate_memory(qwen)["activations_gib"]
    assert image_tokens("qwen2.5-vl-3b", 448, 448, max_pixels=448 * 448) == 256
    assert image_tokens("smolvlm", 384, 384, max_pixels=384 * 384) == 81
    with pytest.raises(ConfigError):
        estimate_memory("qwen2.5-7b-instruct")
