"""How much memory a (Q)LoRA DPO run needs, worked out without downloading anything (the GPU path).

Two levels: :func:`weights_memory` counts what the optimiser holds for given parameter counts
(frozen base weights, 4-bit or not, LoRA weights, their gradients and AdamW states);
:func:`estimate_memory` rebuilds a preset's architecture on PyTorch's meta device for exact
parameter counts, adds the activations of one DPO step (chosen and rejected sequences, image
tokens from :func:`image_tokens`) and returns the total. Notebook 05 uses the first, notebook 08
the second; ``dpo.train_dpo`` logs the first for the model it trains.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import torch
from transformers import AutoConfig

from .errors import ConfigError
from .models import LANGUAGE_LORA_TARGETS, ModelPreset, get_preset, language_model_linear_layers, meta_model

__all__ = ["weights_memory", "lora_parameter_count", "image_tokens", "estimate_memory"]


def weights_memory(total_params: int, trainable_params: int, load_in_4bit: bool = True, weight_bytes: float = 2.0) -> dict[str, float]:
    """Rough training memory in GiB: frozen weights + LoRA weights, gradients and AdamW states (no activations).

    Args:
        total_params: parameters of the whole model (base + adapters).
        trainable_params: LoRA parameters.
        load_in_4bit: base weights at ~0.52 byte/param (NF4 + double-quantised constants) instead of ``weight_bytes``.
        weight_bytes: bytes per unquantised base weight (2 for bf16, 4 for fp32).

    Example: ``weights_memory(7_000_000_000, 40_000_000)["total_gib"]`` is about 4 GiB.
    """
    gib = 1024**3
    base = (total_params - trainable_params) * (0.516 if load_in_4bit else weight_bytes)
    adapters = trainable_params * 4.0  # fp32 (TRL keeps them bf16 on a 4-bit base: a slight overestimate)
    grads = trainable_params * 4.0
    adam = trainable_params * 8.0  # two fp32 moments
    parts = {"base_weights_gib": base / gib, "adapter_weights_gib": adapters / gib, "gradients_gib": grads / gib, "optimizer_gib": adam / gib}
    parts["total_gib"] = sum(parts.values())
    return parts


def _as_config(config: Any) -> Any:
    """A transformers config from a preset, a preset name, a config dict or a config."""
    if isinstance(config, str):
        config = get_preset(config)
    if isinstance(config, ModelPreset):
        if not config.arch:
            raise ConfigError(f"preset {config.name!r} carries no architecture to estimate from; pass its config instead.")
        config = config.arch
    if isinstance(config, dict):
        d = json.loads(json.dumps(config))
        return AutoConfig.for_model(d.pop("model_type"), **d)
    return config


def lora_parameter_count(model: torch.nn.Module, target_modules: str | list[str] | None = LANGUAGE_LORA_TARGETS, r: int = 64) -> int:
    """Parameters that rank-``r`` LoRA adds to the targeted linear layers (PEFT's matching rules)."""
    if target_modules is None:
        names = set(language_model_linear_layers(model))
    elif isinstance(target_modules, str):
        names = {n for n, _ in model.named_modules() if re.fullmatch(target_modules, n)}
    else:
        names = {n for n, _ in model.named_modules() if any(n == t or n.endswith("." + t) for t in target_modules)}
    return sum(r * (m.in_features + m.out_features) for n, m in model.named_modules() if n in names and isinstance(m, torch.nn.Linear))


def image_tokens(config: Any, height: int, width: int, max_pixels: int | None = None) -> int:
    """Tokens one image of ``height`` x ``width`` takes in the language model of ``config``'s family."""
    config = _as_config(config)
    vc = getattr(config, "vision_config", None)
    if config.model_type == "llava":
        return (vc.image_size // vc.patch_size) ** 2
    if config.model_type in ("qwen2_vl", "qwen2_5_vl"):
        unit = vc.patch_size * vc.spatial_merge_size
        scale = min(1.0, math.sqrt((max_pixels or 12845056) / (height * width)))
        return max(1, round(height * scale / unit)) * max(1, round(width * scale / unit))
    if config.model_type in ("idefics3", "smolvlm"):
        per_tile = (vc.image_size // vc.patch_size) ** 2 // config.scale_factor**2
        side = max(vc.image_size, int(math.sqrt(max_pixels)) // vc.image_size * vc.image_size) if max_pixels else 4 * vc.image_size
        scale = side / max(height, width)  # the longest side is resized to `side`, up or down
        tiles = math.ceil(height * scale / vc.image_size) * math.ceil(width * scale / vc.image_size)
        return per_tile * (tiles + (tiles > 1))  # + the downscaled global view when split
    raise ConfigError(f"no image-token rule for model type {config.model_type!r}")


def estimate_memory(config: Any, image_size: tuple[int, int] = (448, 448), batch_size: int = 1, text_tokens: int = 256, load_in_4bit: bool = True, lora_r: int = 64, target_modules: str | list[str] | None = LANGUAGE_LORA_TARGETS, gradient_checkpointing: bool = True, max_pixels: int | None = None) -> dict[str, float]:
    """Rough GPU memory (GiB) of one QLoRA DPO step, from the architecture alone (nothing downloaded).

    Weights, LoRA weights, gradients and AdamW states come from :func:`weights_memory` with the
    exact parameter counts of ``config`` (built on the meta device); activations add, per sequence (a pair
    is two), ~34 x hidden bytes per token per decoder layer (2 x hidden with gradient checkpointing) plus
    the fp32 logits, and the frozen vision tower's largest layer. Real runs differ by +-30%.

    Args:
        config: a preset name, a ``ModelPreset``, a config.json dict or a transformers config.
        image_size: (height, width) of the images before the processor.
        batch_size: pairs per step.
        text_tokens: prompt + response tokens besides the image.
        load_in_4bit: NF4 base weights (else bf16).
        lora_r, target_modules: the adapters (``target_modules=None``: every decoder linear layer).
        gradient_checkpointing: recompute decoder activations in the backward pass.
        max_pixels: the processor's image cap (Qwen-VL, Idefics3); None uses the preset's.

    Example: ``estimate_memory("llava-1.5-7b")["total_gib"]`` is about 7 GiB.
    """
    if max_pixels is None and isinstance(config, (str, ModelPreset)):
        max_pixels = (get_preset(config) if isinstance(config, str) else config).max_pixels
    cfg = _as_config(config)
    model = meta_model(cfg)
    total = sum(p.numel() for p in model.parameters())
    lora = lora_parameter_count(model, target_modules, lora_r)
    out = weights_memory(total + lora, lora, load_in_4bit=load_in_4bit, weight_bytes=2.0)
    text = getattr(cfg, "text_config", cfg)
    n_img = image_tokens(cfg, *image_size, max_pixels=max_pixels)
    seq = n_img + text_tokens
    rows = 2 * batch_size  # chosen and rejected
    per_token_layer = (2 if gradient_checkpointing else 34) * text.hidden_size
    decoder = rows * seq * text.num_hidden_layers * per_token_layer + (rows * seq * 34 * text.hidden_size if gradient_checkpointing else 0)
    logits = rows * seq * text.vocab_size * 4 * 2  # fp32 logits and their log-softmax
    vc = getattr(cfg, "vision_config", None)
    vision = rows * n_img * 4 * 34 * vc.hidden_size if vc is not None else 0  # one layer at a time, no grad
    gib = 1024**3
    out.update(activations_gib=(decoder + logits + vision) / gib, total_params=float(total), lora_params=float(lora), image_tokens=float(n_img), sequence_tokens=float(seq))
    out["total_gib"] = out["base_weights_gib"] + out["adapter_weights_gib"] + out["gradients_gib"] + out["optimizer_gib"] + out["activations_gib"]
    out["bf16_weights_gib"] = total * 2 / gib
    return out
