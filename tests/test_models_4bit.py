"""4-bit NF4 loading of rlaifv_lib.models: the bitsandbytes CPU shape rule, and every 4-bit model of the suite.

On a CPU with AVX512-BF16, bitsandbytes repacks each ``Linear4bit`` weight on its first forward in eval mode
without gradients (``functional._convert_weight_packed_for_cpu``); CPUs without it never do, so a layer the
repack cannot take only fails on some machines. The repack is pure torch, so these tests run it on every CPU.
"""

from __future__ import annotations

import copy

import pytest
import torch

from rlaifv_lib import models
from rlaifv_lib.dpo import DPOSettings, _load_base
from rlaifv_lib.memory import _as_config
from rlaifv_lib.models import LoadOptions, bnb_4bit_config, bnb_cpu_packable, bnb_unpackable_layers, load_model, meta_model

from tiny_models import ARCHITECTURES, save_tiny

pytestmark = pytest.mark.skipif(not models.bnb_available(), reason="bitsandbytes cannot run 4-bit here")

# every model the suite (tests and notebooks) loads in 4-bit: the committed toy checkpoints (notebooks 05, 07, the
# demo), the tiny toy LLaVA of conftest (test_dpo, test_pipeline) and the tiny model of each architecture
# (test_conformance, test_models, notebook 08)
FOUR_BIT_SOURCES = ["toy-policy", "toy-labeler", "tiny-toy", *ARCHITECTURES]


def _quantized(out_features: int, in_features: int) -> torch.nn.Module:
    """A bitsandbytes ``Linear4bit`` (NF4, double quantisation) holding a seeded random weight."""
    from bitsandbytes.nn import Linear4bit, Params4bit

    torch.manual_seed(0)
    dense = torch.nn.Linear(in_features, out_features)
    layer = Linear4bit(in_features, out_features, bias=True, compute_dtype=torch.float32, compress_statistics=True, quant_type="nf4")
    layer.weight = Params4bit(dense.weight.data.clone(), requires_grad=False, compress_statistics=True, quant_type="nf4")._quantize("cpu")
    layer.bias = torch.nn.Parameter(dense.bias.data.clone(), requires_grad=False)
    return layer


def _packed_cpu_forward(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the AVX512-BF16 path computes, in pure torch: repack a copy of the weight as ``Linear4bit.forward`` does
    there, read the 4-bit codes back out of the packed layout, scale them by the repacked (bf16) absmax, multiply."""
    import bitsandbytes.functional as bnbf

    state = copy.deepcopy(layer.weight.quant_state)
    packed, state = bnbf._convert_weight_packed_for_cpu(layer.weight.data.clone(), state)
    absmax = state.absmax.float().T  # (out_features, in_features // blocksize), as the kernel reads it
    codes, state = bnbf._convert_weight_packed_for_cpu_inverse(packed, state)
    nibbles = codes.reshape(-1).view(torch.uint8)
    index = torch.stack([nibbles >> 4, nibbles & 15], dim=-1).reshape(layer.out_features, layer.in_features).long()
    weight = state.code.float()[index] * absmax.repeat_interleave(state.blocksize, dim=1)
    return x @ weight.T + (layer.bias.float() if layer.bias is not None else 0.0)


def _plain_forward(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's output on the path every CPU takes (training mode never repacks), on a copy."""
    with torch.no_grad():
        return copy.deepcopy(layer).train()(x)


@pytest.mark.parametrize("shape", [(32, 64), (64, 64), (96, 192), (160, 128), (32, 32), (64, 32), (32, 96), (48, 64), (61, 128), (64, 160)])
def test_the_shape_rule_is_the_repack_rule(shape):
    """``bnb_cpu_packable`` says yes exactly for the shapes bitsandbytes' CPU repack takes."""
    layer, x = _quantized(*shape), torch.randn(2, shape[1])
    try:
        _packed_cpu_forward(layer, x)
        repacks = True
    except (RuntimeError, AssertionError):
        repacks = False
    assert bnb_cpu_packable(*shape) == repacks


def test_a_4096_wide_model_loses_nothing():
    """LLaVA-1.5-7B's widths are multiples of 64: every linear layer stays 4-bit (only transformers' own skips)."""
    config = _as_config("llava-1.5-7b")
    assert bnb_unpackable_layers(meta_model(config)) == {}
    assert bnb_4bit_config(config, torch.bfloat16).llm_int8_skip_modules is None


def test_the_rule_applies_to_cpu_loads_only(tmp_path):
    config = _as_config("smolvlm")  # its vision MLP (4304 wide) breaks the rule
    skipped = bnb_4bit_config(config, torch.float32, on_cpu=True).llm_int8_skip_modules
    assert skipped and "lm_head" in skipped  # transformers' default skip survives the explicit list
    assert bnb_4bit_config(config, torch.bfloat16, on_cpu=False).llm_int8_skip_modules is None


def _load_4bit(source: str, tiny_toy, tmp_path) -> torch.nn.Module:
    """``source`` loaded in 4-bit the way the suite loads it."""
    if source == "tiny-toy":
        return _load_base(tiny_toy[0], True, DPOSettings())  # the DPO loader, as test_dpo / test_pipeline use it
    folder = source if source.startswith("toy-") else save_tiny(source, tmp_path / source)
    return load_model(folder, options=LoadOptions(load_in_4bit=True))[0]


@pytest.mark.parametrize("source", FOUR_BIT_SOURCES)
def test_every_4bit_layer_computes_the_same_after_the_cpu_repack(source, tiny_toy, tmp_path):
    """For each ``Linear4bit`` of each 4-bit model of the suite: the repack succeeds and the layer's output holds."""
    from bitsandbytes.functional import has_avx512bf16
    from bitsandbytes.nn import Linear4bit

    model = _load_4bit(source, tiny_toy, tmp_path)
    layers = {name: m for name, m in model.named_modules() if isinstance(m, Linear4bit)}
    assert layers, f"{source}: no layer was quantised, so this test would check nothing"
    torch.manual_seed(0)
    broken = []
    for name, layer in layers.items():
        x = torch.randn(3, layer.in_features)
        before = _plain_forward(layer, x)
        try:
            after = _packed_cpu_forward(layer, x)
        except (RuntimeError, AssertionError) as e:
            broken.append(f"{name} ({layer.out_features}x{layer.in_features}): {type(e).__name__}: {e}")
            continue
        scale = before.abs().max().item()
        torch.testing.assert_close(after, before, rtol=0, atol=1e-2 * scale, msg=f"{source} {name}")  # absmax in bf16
        if has_avx512bf16():  # this CPU takes the path for real: run bitsandbytes' own kernel too
            with torch.no_grad():
                kernel = copy.deepcopy(layer).eval()(x)
            torch.testing.assert_close(kernel, before, rtol=0, atol=3e-2 * scale, msg=f"{source} {name} (kernel)")  # bf16 compute
    assert not broken, f"{source}: {len(broken)} of {len(layers)} 4-bit layers break bitsandbytes' CPU repack:\n" + "\n".join(broken)
