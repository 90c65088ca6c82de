"""Load a policy, labeler or claim decomposer and build its chat prompts (RLAIF-V, Sec. 3 and 4.1).

The toy policy and labeler live under ``data/toy/``; any Hugging Face image-text-to-text model id or
local path goes through ``AutoModelForImageTextToText`` + ``AutoProcessor``, with the options of
:class:`LoadOptions` (4-bit NF4, device map, image-size cap). :data:`PRESETS` names the real models
worth trying — LLaVA-1.5-7B (the paper's policy), Qwen2.5-VL and SmolVLM (Idefics3) — with their LoRA
targets, DPO settings, labeler question suffix and a memory hint, plus the instruction-tuned LLMs that
:class:`rlaifv_lib.claims.LLMDecomposer` can prompt; ``rlaifv_lib.memory.estimate_memory`` sizes a
DPO run from a preset's architecture without downloading anything.

The image-size cap (``LoadOptions.max_pixels``) maps onto each family's processor:
Qwen2-VL / Qwen2.5-VL resize so that ``height x width <= max_pixels`` (``size["longest_edge"]``, which
these processors count in pixels); Idefics3 / SmolVLM resize the longest side to
``sqrt(max_pixels)`` rounded down to whole tiles (``size={"longest_edge": ...}``); LLaVA-1.5 always
sees 336x336, so there the cap only bounds what ``images.load_image`` hands over.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer, BitsAndBytesConfig, PreTrainedModel, ProcessorMixin
from safetensors import SafetensorError, safe_open
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from . import distributed
from .errors import ChatTemplateError, ConfigError, ModelLoadError, QuantizationUnavailableError, check_finite

__all__ = [
    "DATA_DIR",
    "TOY_POLICY",
    "TOY_LABELER",
    "LANGUAGE_LORA_TARGETS",
    "YES_NO_SUFFIX",
    "DPO_BETA",
    "LoadOptions",
    "ModelPreset",
    "PRESETS",
    "get_preset",
    "resolve_model",
    "load_model",
    "load_causal_lm",
    "check_model_folder",
    "load_kwargs",
    "bnb_available",
    "bnb_cpu_packable",
    "bnb_unpackable_layers",
    "bnb_4bit_config",
    "meta_model",
    "language_model_linear_layers",
    "count_parameters",
    "quiet_loading",
    "local_device_map",
    "available_locally",
    "load_processor",
    "set_max_pixels",
    "image_only_processor",
    "chat_prompt",
    "tokenizer_of",
]

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
TOY_POLICY = DATA_DIR / "toy" / "policy"
TOY_LABELER = DATA_DIR / "toy" / "labeler"
_TOY_NAMES = {"toy-policy": TOY_POLICY, "toy-labeler": TOY_LABELER}
YES_NO_SUFFIX = " Please answer yes or no."
DPO_BETA = 0.1  # the official DPO β: ModelPreset's and DPOSettings' default
# attention and MLP projections of the language-model decoder only (never the vision tower, which
# uses the same q_proj/k_proj/v_proj names in CLIP and SigLIP, nor the projector or lm_head)
LANGUAGE_LORA_TARGETS = r".*(language_model|text_model)\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


@dataclass
class LoadOptions:
    """How to load a model.

    Args:
        load_in_4bit (bool, defaults to False): quantise the weights to 4-bit NF4 while loading (bitsandbytes,
            double quantisation, compute dtype ``dtype``); raises ``QuantizationUnavailableError`` where
            bitsandbytes cannot run.
        double_quant (bool, defaults to True): also quantise the quantisation constants (QLoRA).
        dtype (torch.dtype | str | None, defaults to None): weight (or 4-bit compute) dtype; None means bfloat16
            on a GPU that has it, float16 on other GPUs, float32 on CPU and for the toy models.
        device_map (str | dict | None, defaults to None): passed to ``from_pretrained`` ("auto" spreads a big model
            over the GPUs); None keeps the model on CPU, except 4-bit on a GPU, which goes to GPU 0. Under a
            multi-process launch on GPUs (``rlaifv_lib.distributed``), None puts each process's copy on its own GPU
            (``LOCAL_RANK``) and "auto" spreads it over that process's share of the node's GPUs only.
        max_pixels (int | None, defaults to None): cap on height x width of the images the processor makes
            (see the module docstring for what each family does with it); None keeps the processor's own.
        trust_remote_code (bool, defaults to False): run modelling code shipped with the checkpoint (off: only
            architectures that transformers itself implements load).
    """

    load_in_4bit: bool = False
    double_quant: bool = True
    dtype: torch.dtype | str | None = None
    device_map: str | dict | None = None
    max_pixels: int | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        check_finite(self)
        if self.max_pixels is not None and self.max_pixels < 28 * 28:
            raise ConfigError(f"max_pixels must be None or >= 784 (one 28x28 image), got {self.max_pixels}")
        if isinstance(self.dtype, str):
            if not isinstance(getattr(torch, self.dtype, None), torch.dtype):
                raise ConfigError(f"dtype {self.dtype!r} is not a torch dtype (use e.g. 'bfloat16', 'float32')")
            self.dtype = getattr(torch, self.dtype)


@dataclass(frozen=True)
class ModelPreset:
    """A named model with the settings this tutorial recommends for it.

    Args:
        name (str): the preset's name, e.g. "llava-1.5-7b".
        model_id (str): Hugging Face id, or a local folder for the toy models.
        role (str): "policy" (an image-text-to-text model, also usable as labeler) or "decomposer" (a chat LLM).
        family (str): "toy", "llava", "qwen2_5_vl", "idefics3" or "causal_lm".
        lora_target_modules (str | None, defaults to LANGUAGE_LORA_TARGETS): regex of the layers that get LoRA
            adapters; None lets ``rlaifv_lib.dpo`` pick every decoder linear layer.
        dpo_beta (float, defaults to 0.1): DPO beta (official 0.1).
        dpo_learning_rate (float, defaults to 1e-5): LoRA learning rate (official LoRA run on a 7B model).
        dpo_epochs (float, defaults to 2.0): passes over each round's pairs (official: 4 per round).
        dpo_sft_weight (float, defaults to 0.0): weight of the SFT term on the chosen responses (official 0).
        lora_r (int, defaults to 64): LoRA rank (official LoRA run).
        lora_alpha (int, defaults to 16): LoRA alpha (official LoRA run).
        question_suffix (str, defaults to YES_NO_SUFFIX): appended to every labeler question.
        max_pixels (int | None, defaults to None): recommended image-size cap for ``LoadOptions``.
        memory_hint (str, defaults to ""): parameters and rough GPU memory, for people choosing a preset.
        arch (dict, defaults to {}): config.json fields (``model_type`` + sub-configs) from which
            ``rlaifv_lib.memory.estimate_memory`` rebuilds the architecture offline.
    """

    name: str
    model_id: str
    role: str
    family: str
    lora_target_modules: str | None = LANGUAGE_LORA_TARGETS
    dpo_beta: float = DPO_BETA
    dpo_learning_rate: float = 1e-5
    dpo_epochs: float = 2.0
    dpo_sft_weight: float = 0.0
    lora_r: int = 64
    lora_alpha: int = 16
    question_suffix: str = YES_NO_SUFFIX
    max_pixels: int | None = None
    memory_hint: str = ""
    arch: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_finite(self)
        if self.role not in ("policy", "decomposer"):
            raise ConfigError(f"preset role must be 'policy' or 'decomposer', got {self.role!r}")

    def load_options(self, **overrides: Any) -> LoadOptions:
        """``LoadOptions`` with this preset's image cap, updated with ``overrides``."""
        return LoadOptions(**{"max_pixels": self.max_pixels, **overrides})

    def dpo_overrides(self) -> dict[str, Any]:
        """The ``rlaifv_lib.dpo.DPOSettings`` fields this preset sets: β, learning rate, epochs, SFT weight and LoRA shape
        (``DPOSettings.from_preset`` builds the settings)."""
        return dict(beta=self.dpo_beta, learning_rate=self.dpo_learning_rate, epochs=self.dpo_epochs, sft_weight=self.dpo_sft_weight,
                    lora_r=self.lora_r, lora_alpha=self.lora_alpha, target_modules=self.lora_target_modules)  # fmt: skip


def _llama(hidden: int, inter: int, layers: int, heads: int, kv: int, vocab: int, **kw: Any) -> dict:
    return dict(model_type="llama", hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab, **kw)


def _qwen_vl(hidden: int, inter: int, layers: int, heads: int, kv: int, vocab: int, tie: bool) -> dict:
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=hidden, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31])
    text = dict(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab, tie_word_embeddings=tie, rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
    return dict(model_type="qwen2_5_vl", vision_config=vision, text_config=text, tie_word_embeddings=tie)


_PRESET_LIST = [
    ModelPreset("toy-policy", str(TOY_POLICY), "policy", "toy", None, dpo_learning_rate=1e-3, dpo_sft_weight=1.0, lora_r=16, lora_alpha=16, question_suffix="", memory_hint="0.8M params; any CPU"),
    ModelPreset("toy-labeler", str(TOY_LABELER), "policy", "toy", None, dpo_learning_rate=1e-3, dpo_sft_weight=1.0, lora_r=16, lora_alpha=16, question_suffix="", memory_hint="toy size; any CPU"),
    ModelPreset(
        "llava-1.5-7b", "llava-hf/llava-1.5-7b-hf", "policy", "llava",
        memory_hint="7.1B params; weights ~13 GiB in bf16, ~3.5 GiB in 4-bit; QLoRA DPO ~7 GiB at batch 1 (+CUDA overhead)",
        arch=dict(
            model_type="llava", image_token_index=32000, image_seq_length=576, vision_feature_layer=-2,
            vision_config=dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768),
            text_config=_llama(4096, 11008, 32, 32, 32, 32064),
        ),
    ),  # fmt: skip
    ModelPreset(
        "qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", "policy", "qwen2_5_vl", max_pixels=448 * 448,
        memory_hint="3.8B params; weights ~7 GiB in bf16, ~2 GiB in 4-bit; QLoRA DPO ~5 GiB at 448x448, batch 1",
        arch=_qwen_vl(2048, 11008, 36, 16, 2, 151936, True),
    ),  # fmt: skip
    ModelPreset(
        "qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", "policy", "qwen2_5_vl", max_pixels=448 * 448,
        memory_hint="8.3B params; weights ~15.5 GiB in bf16, ~4 GiB in 4-bit; QLoRA DPO ~8 GiB at 448x448, batch 1",
        arch=_qwen_vl(3584, 18944, 28, 28, 4, 152064, False),
    ),  # fmt: skip
    ModelPreset(
        "smolvlm", "HuggingFaceTB/SmolVLM-Instruct", "policy", "idefics3", max_pixels=768 * 768,
        memory_hint="2.2B params; weights ~4.2 GiB in bf16, ~1.1 GiB in 4-bit; QLoRA DPO ~3 GiB at 448x448, batch 1",
        arch=dict(
            model_type="idefics3", scale_factor=3, image_token_id=49190,
            vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16, image_size=384, patch_size=14),
            text_config=_llama(2048, 8192, 24, 32, 32, 49155),
        ),
    ),  # fmt: skip
    ModelPreset(
        "smolvlm-256m", "HuggingFaceTB/SmolVLM-256M-Instruct", "policy", "idefics3", max_pixels=512 * 512,
        memory_hint="0.26B params; weights ~0.5 GiB in bf16; QLoRA DPO ~0.7 GiB; runs (slowly) on CPU",
        arch=dict(
            model_type="idefics3", scale_factor=4, image_token_id=49190,
            vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=512, patch_size=16),
            text_config=_llama(576, 1536, 30, 9, 3, 49280),
        ),
    ),  # fmt: skip
    ModelPreset("qwen2.5-1.5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct", "decomposer", "causal_lm", None, memory_hint="1.5B params; ~3 GiB in bf16; CPU possible"),
    ModelPreset("qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct", "decomposer", "causal_lm", None, memory_hint="7.6B params; ~15 GiB in bf16, ~5.5 GiB in 4-bit"),
    ModelPreset("llama-3-8b-instruct", "meta-llama/Meta-Llama-3-8B-Instruct", "decomposer", "causal_lm", None, memory_hint="8.0B params (the paper's decomposer); ~16 GiB in bf16, ~6 GiB in 4-bit; gated on the hub"),
]
PRESETS: dict[str, ModelPreset] = {p.name: p for p in _PRESET_LIST}


def get_preset(name: str) -> ModelPreset:
    """The preset called ``name``; ``ConfigError`` listing the known ones otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"no preset called {name!r}; known presets: {sorted(PRESETS)}")
    return PRESETS[name]


def resolve_model(name_or_path: str | os.PathLike) -> str | Path:
    """A preset name -> its model id or folder; anything else is returned as given."""
    preset = PRESETS.get(str(name_or_path))
    if preset is None:
        return name_or_path
    return Path(preset.model_id) if preset.family == "toy" else preset.model_id


def tokenizer_of(processor: Any) -> Any:
    """The tokenizer inside a processor (or the tokenizer itself)."""
    return getattr(processor, "tokenizer", processor)


def _is_toy(name_or_path: Any) -> bool:
    return str(name_or_path) in _TOY_NAMES or Path(str(name_or_path)).resolve() in (TOY_POLICY, TOY_LABELER)


def _torch_dtype(options: LoadOptions, toy: bool) -> torch.dtype:
    """The dtype of the weights (or of the 4-bit compute)."""
    if options.dtype is not None:
        return options.dtype
    if torch.cuda.is_available() and not toy:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


# ---- 4-bit NF4 loading (bitsandbytes) and the layers LoRA adapts -------------------------------------------
#
# The shape rule, read in bitsandbytes 0.50's source: on a CPU with AVX512-BF16, ``nn.Linear4bit.forward`` repacks
# its weight on the first forward in eval mode without gradients (``functional._convert_weight_packed_for_cpu``,
# pure torch). The repack asserts ``out_features % 32 == 0`` (it tiles rows in blocks of ``block_n=32``) and
# reshapes ``absmax`` -- one scale per 64 consecutive weights of the row-major weight (the blocksize of
# ``Params4bit``) -- to ``(out_features, in_features // 64)``, which has that many elements only when
# ``in_features % 64 == 0``. Any other shape raises (a 32-wide layer: "shape '[32, 0]' is invalid for input of
# size 16"). CPUs without AVX512-BF16 never repack, so the failure hides on them. The library therefore keeps
# every linear layer that breaks the rule in full precision when a 4-bit model is loaded for the CPU; a model
# whose widths are multiples of 64 (LLaVA-1.5-7B: 4096, 11008, 1024) loses nothing.
_BNB_BLOCKSIZE = 64  # weights per absmax scale: bitsandbytes' Params4bit default, which transformers keeps
_BNB_CPU_BLOCK_N = 32  # output rows per tile of bitsandbytes' AVX512-BF16 CPU layout
_NOT_LANGUAGE = ("vision_tower", "vision_model", "visual", "multi_modal_projector", "mm_projector", "connector", "lm_head")
# bitsandbytes logs this at import on AVX512-BF16 CPUs: the optional `kernels` package is absent, so it uses its
# own built-in CPU kernel instead, which gives the same results. The message means nothing for a learner.
_HARMLESS_BNB_LOG = "Failed to load CPU gemm_4bit_forward"


class _DropHarmlessBnbLog(logging.Filter):
    """Drop the one bitsandbytes log line above; every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_HARMLESS_BNB_LOG)


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropHarmlessBnbLog())


@functools.lru_cache(maxsize=None)
def _probe_bnb() -> bool:
    """Whether bitsandbytes imports and runs a 4-bit NF4 matmul on this machine's training device."""
    try:
        import bitsandbytes as bnb
        import bitsandbytes.functional as bnbf

        device = "cuda" if torch.cuda.is_available() else "cpu"
        w = torch.linspace(-1, 1, 64 * 64, device=device).reshape(64, 64)  # no torch.randn: leave the RNG alone
        x = torch.linspace(-1, 1, 2 * 64, device=device).reshape(2, 64)
        q, state = bnbf.quantize_4bit(w, quant_type="nf4", compress_statistics=True)
        y = bnb.matmul_4bit(x, q.t(), quant_state=state)
        return bool(torch.isfinite(y).all()) and tuple(y.shape) == (2, 64)
    except Exception:  # any import error or missing kernel means "cannot run"
        return False


def bnb_available() -> bool:
    """True when bitsandbytes can quantise to 4-bit NF4 and multiply here (probed once, then cached)."""
    return _probe_bnb()


def bnb_cpu_packable(out_features: int, in_features: int) -> bool:
    """Whether bitsandbytes' CPU paths can run a 4-bit linear layer of this shape (the rule stated above)."""
    return out_features % _BNB_CPU_BLOCK_N == 0 and in_features % _BNB_BLOCKSIZE == 0


def bnb_unpackable_layers(model: torch.nn.Module) -> dict[str, int]:
    """``{name: weight parameters}`` of the ``nn.Linear`` layers of ``model`` that break :func:`bnb_cpu_packable`."""
    return {name: m.weight.numel() for name, m in model.named_modules() if type(m) is torch.nn.Linear and not bnb_cpu_packable(m.out_features, m.in_features)}


def meta_model(config: Any, auto_class: type | None = None) -> torch.nn.Module:
    """The architecture of ``config`` on the meta device (shapes only, no memory)."""
    if auto_class is None:
        auto_class = AutoModelForImageTextToText if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES else AutoModelForCausalLM
    with torch.device("meta"):
        return auto_class.from_config(config)


def bnb_4bit_config(config: Any, compute_dtype: torch.dtype, double_quant: bool = True, on_cpu: bool = True, auto_class: type | None = None) -> BitsAndBytesConfig:
    """The library's one 4-bit NF4 ``BitsAndBytesConfig`` (QLoRA); on CPU, layers that break the shape rule stay full precision.

    Args:
        config: the model's ``PretrainedConfig`` (its layers are listed on the meta device); needed when ``on_cpu``.
        compute_dtype: dtype of the 4-bit matmuls.
        double_quant: also quantise the quantisation constants.
        on_cpu: the model will run on the CPU, where bitsandbytes' AVX512-BF16 path needs the shape rule.
        auto_class: the ``AutoModel*`` class that will load it (picked from ``config`` when None).
    """
    skip = None
    if on_cpu:
        from transformers.quantizers.base import get_keys_to_not_convert
        from transformers.quantizers.quantizers_utils import should_convert_module

        meta = meta_model(config, auto_class)
        default = get_keys_to_not_convert(meta)  # what transformers keeps in full precision anyway (lm_head, tied weights)
        narrow = [name for name in bnb_unpackable_layers(meta) if should_convert_module(name, default)]
        if narrow:  # an explicit list replaces transformers' default one: keep both
            skip = sorted(set(default) | {re.escape(name) for name in narrow})
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant, bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=skip)


def language_model_linear_layers(model: torch.nn.Module) -> list[str]:
    """Full names of the linear layers of the language-model decoder (not vision tower, projector, lm_head)."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not any(part in name.split(".") for part in _NOT_LANGUAGE):
            out.append(name)
    return out


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit packed weights count as two parameters per byte."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":
            n *= 2 * p.element_size()  # two 4-bit values per byte of storage
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide transformers' per-call "Loading weights" / "Writing model shards" bars (the caller shows its own progress)."""
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    was_enabled, hub_was_disabled = hf_logging.is_progress_bar_enabled(), hub_utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # transformers' switch (it turns huggingface_hub's bars off with its own)
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
        if hub_was_disabled:
            hub_utils.disable_progress_bars()


def load_kwargs(options: LoadOptions, config: Any = None, auto_class: type = AutoModelForImageTextToText, toy: bool = False, training: bool = False) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for ``options``; 4-bit loading needs the model's ``config``.

    Under a multi-process launch on GPUs a model for inference goes to this process's own GPU(s); a full-precision
    model for ``training`` is left where the trainer (DDP, DeepSpeed, FSDP) wants to place it.

    Every 4-bit load of the library (``load_model``, ``load_causal_lm``, the DPO base) goes through here, so
    :func:`bnb_4bit_config` is the one place where a ``BitsAndBytesConfig`` is built.
    """
    dtype = _torch_dtype(options, toy)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": options.trust_remote_code, "use_safetensors": True}
    if options.load_in_4bit:
        if not bnb_available():
            raise QuantizationUnavailableError(
                "4-bit loading was requested (LoadOptions(load_in_4bit=True)) but bitsandbytes cannot run a 4-bit NF4 "
                "matmul on this machine. Load in full precision (load_in_4bit=False), or install a bitsandbytes build "
                "for this device (a CUDA GPU, or bitsandbytes >= 0.48 for CPU)."
            )
        on_cpu = not torch.cuda.is_available() or options.device_map in ("cpu", {"": "cpu"})
        kwargs["quantization_config"] = bnb_4bit_config(config, dtype, options.double_quant, on_cpu, auto_class)
        if options.device_map is None and torch.cuda.is_available():
            kwargs["device_map"] = local_device_map()
    if options.device_map is not None:
        kwargs["device_map"] = options.device_map
    if distributed.launched() and torch.cuda.is_available() and not training:  # N processes on a node's GPUs: each its own
        if options.device_map is None:
            kwargs["device_map"] = local_device_map()  # policy-per-GPU
        elif options.device_map == "auto":  # labeler-over-GPUs: spread over this process's share of the GPUs only
            kwargs["max_memory"] = {g: torch.cuda.get_device_properties(g).total_memory for g in distributed.shard_devices()}
    return kwargs


def local_device_map() -> dict[str, int]:
    """``{"": k}``: the whole model on this process's GPU, k = ``LOCAL_RANK`` (0 outside ``accelerate launch`` / torchrun).

    A 4-bit model cannot be moved after loading, so under data parallelism each process must load it onto its
    own GPU; ``{"": 0}`` would put every copy on GPU 0.
    """
    return {"": int(os.environ.get("LOCAL_RANK", "0"))}


def available_locally(name_or_path: str | os.PathLike) -> bool:
    """Whether a preset, hub id or folder loads without the network: a folder with config.json, or a hub id
    whose config.json is already in the local Hugging Face cache (nothing is downloaded or asked online)."""
    path = resolve_model(name_or_path)
    folder = Path(str(path)).expanduser()
    if folder.is_dir():
        return (folder / "config.json").exists()
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(str(path), "config.json"), str)
    except ValueError:  # not a valid repo id (huggingface_hub's HFValidationError)
        return False


def _not_found(name_or_path: Any, error: Exception) -> ModelLoadError:
    """A ModelLoadError saying where the model was looked for and what to do."""
    text = str(name_or_path)
    looks_local = text.startswith((".", "/", "~")) or text.count("/") > 1
    if _is_toy(name_or_path) and not Path(resolve_model(text)).exists():
        hint = "the toy checkpoints are missing: build them with `rlaifv pretrain-toy` (see the README)."
    elif looks_local and not Path(text).expanduser().exists():
        hint = f"the folder {text} does not exist; give a folder holding config.json and *.safetensors."
    elif Path(text).expanduser().is_dir() and not any(Path(text).expanduser().glob("*.safetensors")):
        pickles = sorted(p.name for p in Path(text).expanduser().iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
        hint = (f"the folder {text} holds no *.safetensors weights"
                + (f" (only {', '.join(pickles)}: pickle files, which can run arbitrary code when loaded, so they are never loaded)" if pickles else "")
                + ". Convert the checkpoint to safetensors on a machine you trust (load it there and call save_pretrained), "
                "or download the safetensors version.")  # fmt: skip
    elif os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True") or os.environ.get("TRANSFORMERS_OFFLINE") in ("1", "true"):
        hint = ("offline mode is on (HF_HUB_OFFLINE=1) and it is not in the local cache: download it on a machine with "
                "network (`huggingface-cli download ID`) or unset HF_HUB_OFFLINE.")  # fmt: skip
    else:
        hint = ("give a local folder holding config.json and *.safetensors, a preset name "
                f"({', '.join(sorted(PRESETS))}), or a Hugging Face id reachable from here (gated models need `hf auth login`).")  # fmt: skip
    return ModelLoadError(f"cannot load model {text!r}: {type(error).__name__}: {str(error)[:300]}. Fix: {hint}")


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")


def check_model_folder(path: str | os.PathLike, trust_remote_code: bool = False, tokenizer: bool = True) -> None:
    """``ModelLoadError`` naming the folder and the fix when a local model folder cannot load; no-op for hub ids.

    Checks, without loading anything: config.json is there and names an architecture transformers
    implements (unless ``trust_remote_code``), the tokenizer files are there (when ``tokenizer``), and every
    ``*.safetensors`` file is complete.
    """
    folder = Path(str(path)).expanduser()
    if not folder.is_dir():
        return
    redo = f"Delete {folder} and save the model there again (in a run directory, re-running redoes the stage that wrote it)."
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} holds no config.json, so it is not a saved model (empty, or its save was cut short). Give the folder save_pretrained wrote, or: {redo}")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{folder}/config.json is not valid JSON ({e}). {redo}") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not trust_remote_code and isinstance(config, dict) and config.get("auto_map") and model_type not in CONFIG_MAPPING_NAMES:
        raise ModelLoadError(
            f"{folder} needs modelling code shipped with the checkpoint (config.json has auto_map for model_type {model_type!r}, "
            "which transformers does not implement); rlaifv_lib only loads architectures transformers implements. Use a "
            f"checkpoint of a supported architecture (presets: {', '.join(sorted(PRESETS))})."
        )
    if tokenizer and not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"{folder} holds no tokenizer files (none of {', '.join(_TOKENIZER_FILES)}). Save the processor next to the "
            f"weights (processor.save_pretrained({str(folder)!r})) from the model it belongs to, or: {redo}"
        )
    for weights in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(weights), "pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise ModelLoadError(f"{weights} is damaged or incomplete ({e}). {redo}") from None


def _check_image_text(config: Any, name_or_path: Any) -> None:
    """ModelLoadError unless ``config`` is an image-text-to-text architecture."""
    model_type = getattr(config, "model_type", "")
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES and not getattr(config, "auto_map", None):
        raise ModelLoadError(
            f"{str(name_or_path)!r} is a {model_type!r} model, not an image-text-to-text model: it cannot take "
            "images, so it cannot be the policy or the labeler. Use an MLLM (see rlaifv_lib.models.PRESETS); a "
            "text-only chat model can serve as claim decomposer through load_causal_lm."
        )


def _torchvision_missing() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return True
    return False


def image_only_processor(processor_cls: type, image_processor: Any, tokenizer: Any, chat_template: str | None = None, **kwargs: Any) -> ProcessorMixin:
    """A processor whose optional video processor is left out (Qwen2-VL family without torchvision).

    In transformers 5.23 the Qwen-VL processors insist on a video processor, and video processors need
    torchvision; images alone need neither, so this builds the processor with ``video_processor=None``.
    """
    from transformers.processing_utils import ProcessorMixin as _Mixin

    proc = processor_cls.__new__(processor_cls)
    proc.check_argument_for_proper_class = lambda name, arg: None if (name == "video_processor" and arg is None) else _Mixin.check_argument_for_proper_class(proc, name, arg)  # type: ignore[method-assign]
    processor_cls.__init__(proc, image_processor=image_processor, tokenizer=tokenizer, video_processor=None, chat_template=chat_template, **kwargs)
    del proc.check_argument_for_proper_class
    proc.get_attributes = lambda: [a for a in processor_cls.get_attributes() if a != "video_processor"]  # save/load without it
    return proc


def _processor_class_name(path: Path) -> str | None:
    for file in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        if (path / file).exists():
            name = json.loads((path / file).read_text(encoding="utf-8")).get("processor_class")
            if name:
                return name
    return None


def _load_processor(path: str | Path, options: LoadOptions) -> ProcessorMixin:
    """``AutoProcessor``, or an image-only processor where the video half needs the missing torchvision."""
    try:
        return AutoProcessor.from_pretrained(path, trust_remote_code=options.trust_remote_code)
    except (OSError, AttributeError, ImportError, ValueError, TypeError):
        import transformers

        cls = getattr(transformers, _processor_class_name(Path(path)) or "", None) if Path(path).is_dir() else None
        if not (_torchvision_missing() and cls is not None and "video_processor" in cls.get_attributes()):
            raise
    template = Path(path) / "chat_template.jinja"
    chat_template = template.read_text(encoding="utf-8") if template.exists() else None
    return image_only_processor(cls, AutoImageProcessor.from_pretrained(path), AutoTokenizer.from_pretrained(path), chat_template)


def load_processor(name_or_path: str | os.PathLike, options: LoadOptions | None = None) -> ProcessorMixin:
    """The processor of a preset, folder or hub id, as :func:`load_model` loads it (image-only where torchvision is
    missing, ``options.max_pixels`` applied); for DPO and merging, which need no model."""
    options = options or LoadOptions()
    path = resolve_model(name_or_path)
    try:
        processor = _load_processor(path, options)
    except OSError as e:
        raise _not_found(name_or_path, e) from None
    return set_max_pixels(processor, options.max_pixels)


def set_max_pixels(processor: Any, max_pixels: int | None) -> Any:
    """Cap the images ``processor`` makes at about ``max_pixels`` pixels (no-op for fixed-size families)."""
    ip = getattr(processor, "image_processor", None)
    if max_pixels is None or ip is None:
        return processor
    size = dict(getattr(ip, "size", None) or {})
    if hasattr(ip, "merge_size") and "longest_edge" in size:  # Qwen2-VL family: size counts pixels
        size["longest_edge"] = int(max_pixels)
        size["shortest_edge"] = min(int(size.get("shortest_edge") or 0), int(max_pixels))
        ip.size = size
    elif hasattr(ip, "max_image_size"):  # Idefics3 / SmolVLM: longest side, in whole tiles
        tile = int(dict(ip.max_image_size)["longest_edge"])
        ip.size = {"longest_edge": max(tile, int(math.sqrt(max_pixels)) // tile * tile)}
    return processor


def _merge_shortcuts(options: LoadOptions | None, trust_remote_code: bool, dtype: torch.dtype | None) -> LoadOptions:
    """``options``, or one built from the shortcut arguments; ``ConfigError`` when both say different things."""
    if options is None:
        return LoadOptions(trust_remote_code=trust_remote_code, dtype=dtype)
    if trust_remote_code and not options.trust_remote_code:
        raise ConfigError("load_model got trust_remote_code=True and options with trust_remote_code=False; set it in LoadOptions only.")
    if dtype is not None and LoadOptions(dtype=dtype).dtype != options.dtype:
        raise ConfigError(f"load_model got dtype={dtype} and options with dtype={options.dtype}; set it in LoadOptions only.")
    return options


def load_model(name_or_path: str | os.PathLike = "toy-policy", trust_remote_code: bool = False, dtype: torch.dtype | None = None, options: LoadOptions | None = None) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load (model, processor) from a preset name, a local path or a Hugging Face id (safetensors only).

    Args:
        name_or_path: a preset (``PRESETS``), a folder with config.json + *.safetensors, or a hub id.
        trust_remote_code: shortcut for ``LoadOptions.trust_remote_code``; with ``options``, set it there.
        dtype: shortcut for ``LoadOptions.dtype``; with ``options``, set it there.
        options: a ``LoadOptions``; a preset's recommended ``max_pixels`` applies when it leaves it None.

    Example: ``model, processor = load_model("qwen2.5-vl-3b", options=LoadOptions(load_in_4bit=True))``.
    """
    options = _merge_shortcuts(options, trust_remote_code, dtype)
    preset = PRESETS.get(str(name_or_path))
    if preset is not None and preset.role != "policy":
        raise ModelLoadError(f"preset {preset.name!r} is a text-only claim decomposer; load it with load_causal_lm.")
    if preset is not None and options.max_pixels is None:
        options = replace(options, max_pixels=preset.max_pixels)
    path = resolve_model(name_or_path)
    toy = _is_toy(name_or_path)
    check_model_folder(path, options.trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=options.trust_remote_code)
        _check_image_text(config, name_or_path)
        kwargs = load_kwargs(options, config, AutoModelForImageTextToText, toy)
        processor = _load_processor(path, options)
        with quiet_loading():
            model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except OSError as e:
        if isinstance(e, ModelLoadError):
            raise
        raise _not_found(name_or_path, e) from None
    except RuntimeError as e:
        if "mismatch" not in str(e):
            raise
        raise ModelLoadError(
            f"the weights in {path} do not fit its config.json (tensor shapes differ; transformers' load report above lists "
            "them): config.json and *.safetensors come from different models. Save the model again with save_pretrained, "
            "so that both come from the same model."
        ) from None
    model.eval()
    return model, set_max_pixels(processor, options.max_pixels)


def load_causal_lm(name_or_path: str | os.PathLike, options: LoadOptions | None = None) -> tuple[PreTrainedModel, Any]:
    """Load (model, tokenizer) of a chat LLM for ``rlaifv_lib.claims.LLMDecomposer`` (preset or id/path)."""
    options = options or LoadOptions()
    path = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=options.trust_remote_code)
        config = AutoConfig.from_pretrained(path, trust_remote_code=options.trust_remote_code) if options.load_in_4bit else None
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(path, **load_kwargs(options, config, AutoModelForCausalLM))
    except OSError as e:
        if isinstance(e, ModelLoadError):
            raise
        raise _not_found(name_or_path, e) from None
    if getattr(tokenizer, "chat_template", None) is None:
        raise ChatTemplateError(f"{str(name_or_path)!r} has no chat template; the decomposer needs an instruction-tuned model.")
    return model.eval(), tokenizer


def chat_prompt(processor: Any, text: str, with_image: bool = True) -> str:
    """The chat-formatted user turn (one image, then ``text``) ending with the generation prompt."""
    if getattr(processor, "chat_template", None) is None and getattr(tokenizer_of(processor), "chat_template", None) is None:
        raise ChatTemplateError(
            f"{type(processor).__name__} has no chat template, so prompts cannot be formatted for it. "
            "Use an instruction-tuned checkpoint, or set `processor.chat_template` to a Jinja template."
        )
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
