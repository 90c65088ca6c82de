"""Tiny, randomly initialised models of real architectures, built offline: stand-ins for real checkpoints.

Each ``build_*`` function returns ``(model, processor)`` for one architecture the library's presets name —
LLaVA-1.5, Qwen2-VL, Qwen2.5-VL and Idefics3 (SmolVLM) — with a byte-level BPE tokenizer trained here on a
small corpus (so "yes"/"no" are single tokens with and without a leading space, as in real vocabularies),
the model family's special tokens and an approximation of its chat template, and the family's PIL image
processor (torchvision is not needed). :func:`save_tiny` writes a model folder that
``rlaifv_lib.models.load_model`` reads as it would read a downloaded checkpoint, and :func:`build_chat_lm`
gives a tiny chat causal LM for ``claims.LLMDecomposer``. Weights are random: these models exercise the
code path a real model takes (notebook 08, ``tests/test_conformance.py``), not its quality.

Example: ``model, processor = load_model(save_tiny("llava", "runs/tiny-llava"))``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from .models import image_only_processor, quiet_loading

__all__ = [
    "ARCHITECTURES",
    "CORPUS",
    "HIDDEN",
    "LLAVA_TEMPLATE",
    "QWEN_TEMPLATE",
    "IDEFICS3_TEMPLATE",
    "CHAT_LM_TEMPLATE",
    "bpe_tokenizer",
    "llava_processor",
    "build_llava",
    "build_qwen2_vl",
    "build_qwen2_5_vl",
    "build_idefics3",
    "build_tiny",
    "redraw_weights",
    "build_chat_lm",
    "save_tiny",
]

CORPUS = [
    "There is a red cat on the table. The cat is small and the dog is brown.",
    "Is there a cat in the image? Please answer yes or no. Yes. No. yes no YES NO",
    "A man is riding a bicycle next to a blue car. The sky is clear.",
    "Describe the image in detail. What is in the picture? The image shows two people.",
] * 8
HIDDEN = 32  # decoder width of the tiny models (``hidden`` of the builders); attention heads of 16 dimensions


def _dim(hidden: int) -> dict:
    """Decoder sizes of width ``hidden`` (a multiple of 16): one layer, heads of 16 dimensions."""
    if hidden < 16 or hidden % 16:
        raise ValueError(f"hidden must be a multiple of 16, got {hidden}")
    return dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1, num_attention_heads=hidden // 16, num_key_value_heads=hidden // 16)

LLAVA_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() + ': ' }}"
    "{% if m['content'] is string %}{{ m['content'] + ' ' }}{% else %}"
    "{% for c in m['content'] if c['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for c in m['content'] if c['type'] == 'text' %}{{ c['text'] + ' ' }}{% endfor %}{% endif %}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
QWEN_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}"
    "{% if m['content'] is string %}{{ ': ' + m['content'] }}{% else %}"
    "{% if m['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}{{ '<image>' }}"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<end_of_utterance>\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# a Qwen2.5-Instruct-like template for a text-only chat model (string contents)
CHAT_LM_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def bpe_tokenizer(specials: list[str], bos: str | None, eos: str, pad: str, chat_template: str, vocab_size: int = 400, **extra: Any) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on :data:`CORPUS`, with ``specials`` as special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, model_max_length=2048, **extra)
    fast.chat_template = chat_template
    return fast


def _llama(tok: PreTrainedTokenizerFast, hidden: int = HIDDEN, **dims: int) -> LlamaConfig:
    return LlamaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, max_position_embeddings=2048, **{**_dim(hidden), **dims})


def llava_processor(image_size: int = 28) -> LlavaProcessor:
    """LLaVA-1.5's processor layout (CLIP crop, 14 px patches) at ``image_size`` px: 336 gives LLaVA-1.5's 576 image tokens."""
    tok = bpe_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], "<s>", "</s>", "<pad>", LLAVA_TEMPLATE, unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}, do_center_crop=True, do_convert_rgb=True)
    return LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)


def build_llava(hidden: int = HIDDEN, image_size: int = 28, vision_hidden: int = 32, vision_layers: int = 2, **text_dims: int) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """LLaVA-1.5 layout: CLIP ViT (14 px patches; 28 px -> 4 image tokens), MLP projector, Llama decoder of width ``hidden``.

    The defaults are the tiny test model; ``image_size=336`` gives LLaVA-1.5's 576 image tokens in front of the
    text (``benchmarks/bench_feedback.py --real-shape``); ``text_dims`` override the decoder's LlamaConfig sizes.
    """
    processor = llava_processor(image_size)
    tok = processor.tokenizer
    vision = CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, num_hidden_layers=vision_layers, num_attention_heads=2, image_size=image_size, patch_size=14, projection_dim=vision_hidden)
    config = LlavaConfig(vision_config=vision, text_config=_llama(tok, hidden, **text_dims), image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=(image_size // 14) ** 2, vision_feature_layer=-2)
    return LlavaForConditionalGeneration(config).eval(), processor


_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def _qwen_parts(hidden: int) -> tuple[PreTrainedTokenizerFast, Qwen2VLImageProcessorPil, dict]:
    tok = bpe_tokenizer(_QWEN_SPECIALS, None, "<|im_end|>", "<|endoftext|>", QWEN_TEMPLATE)
    # 28x28..56x56 px: 4 to 16 patches of 14 px, merged 2x2 -> 1 to 4 image tokens
    image_processor = Qwen2VLImageProcessorPil(size={"shortest_edge": 28 * 28, "longest_edge": 56 * 56}, patch_size=14, merge_size=2, temporal_patch_size=2)
    ids = {k: tok.convert_tokens_to_ids(t) for k, t in (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"), ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = dict(vocab_size=len(tok), max_position_embeddings=2048, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}, bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **_dim(hidden))
    return tok, image_processor, {"text": text, **ids}


def build_qwen2_vl(hidden: int = HIDDEN) -> tuple[Qwen2VLForConditionalGeneration, Qwen2VLProcessor]:
    """Qwen2-VL layout: native-resolution ViT with 2x2 patch merging and M-RoPE in the decoder."""
    tok, image_processor, parts = _qwen_parts(hidden)
    processor = image_only_processor(Qwen2VLProcessor, image_processor, tok, QWEN_TEMPLATE)
    vision = dict(depth=1, embed_dim=32, hidden_size=hidden, num_heads=2, mlp_ratio=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    text = parts.pop("text")
    config = Qwen2VLConfig(vision_config=vision, text_config=text, **parts)
    return Qwen2VLForConditionalGeneration(config).eval(), processor


def build_qwen2_5_vl(hidden: int = HIDDEN) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor]:
    """Qwen2.5-VL layout: as Qwen2-VL with window attention and a SwiGLU ViT."""
    tok, image_processor, parts = _qwen_parts(hidden)
    processor = image_only_processor(Qwen2_5_VLProcessor, image_processor, tok, QWEN_TEMPLATE)
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])
    text = parts.pop("text")
    config = Qwen2_5_VLConfig(vision_config=vision, text_config=text, **parts)
    return Qwen2_5_VLForConditionalGeneration(config).eval(), processor


def build_idefics3(hidden: int = HIDDEN) -> tuple[Idefics3ForConditionalGeneration, Idefics3Processor]:
    """Idefics3 / SmolVLM layout: SigLIP-style ViT, pixel-shuffle connector (scale 2), Llama decoder."""
    specials = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>"]
    tok = bpe_tokenizer(specials, "<|im_start|>", "<end_of_utterance>", "<|endoftext|>", IDEFICS3_TEMPLATE)
    # one 28 px tile per image (no splitting): 2x2 patches of 14 px, pixel-shuffled by 2 -> 1 image token
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 28}, max_image_size={"longest_edge": 28}, do_image_splitting=False)
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=1, chat_template=IDEFICS3_TEMPLATE)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14)
    config = Idefics3Config(vision_config=vision, text_config=_llama(tok, hidden), image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2, pad_token_id=tok.pad_token_id)
    return Idefics3ForConditionalGeneration(config).eval(), processor


ARCHITECTURES: dict[str, Callable[[int], tuple[Any, Any]]] = {
    "llava": build_llava,
    "qwen2_vl": build_qwen2_vl,
    "qwen2_5_vl": build_qwen2_5_vl,
    "idefics3": build_idefics3,
}


def build_tiny(arch: str, seed: int = 0, init_std: float | None = None, hidden: int = HIDDEN) -> tuple[Any, Any]:
    """A fresh tiny ``arch`` model (a key of :data:`ARCHITECTURES`) and its processor, weights seeded by ``seed``.

    Args:
        arch: "llava", "qwen2_vl", "qwen2_5_vl" or "idefics3".
        seed: seed of the random weights.
        init_std: if given, every weight matrix is re-drawn from N(0, init_std^2). With the default
            initialisation (std 0.02) a random model's next-token distribution barely depends on its
            input, so a self-feedback labeler answers every question alike and every candidate ties;
            ~0.1 makes the answers vary, as a trained model's do (no claim about their quality).
        hidden: width of the decoder (a multiple of 16; attention heads have 16 dimensions).
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    torch.manual_seed(seed)
    model, processor = ARCHITECTURES[arch](hidden)
    if init_std is not None:
        redraw_weights(model, init_std)
    return model, processor


def redraw_weights(model: Any, init_std: float) -> Any:
    """Re-draw every weight matrix of ``model`` from N(0, init_std^2), in place (see :func:`build_tiny`)."""
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, init_std)
    return model


def build_chat_lm(seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A tiny random Llama chat LM and its tokenizer (Qwen-style chat template): a stand-in claim decomposer.

    Example: ``claims.LLMDecomposer(*build_chat_lm(), ClaimsConfig(decomposer="llm", max_new_tokens=8))``.
    """
    tok = bpe_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>", "<|endoftext|>", CHAT_LM_TEMPLATE)
    torch.manual_seed(seed)
    return LlamaForCausalLM(_llama(tok)).eval(), tok


@functools.lru_cache(maxsize=None)
def _seeded(arch: str, init_std: float | None, hidden: int) -> tuple[Any, Any]:
    return build_tiny(arch, seed=0, init_std=init_std, hidden=hidden)


def save_tiny(arch: str, folder: str | Path, init_std: float | None = None, hidden: int = HIDDEN) -> Path:
    """Save the tiny ``arch`` model (seed 0, see :func:`build_tiny`) and its processor to ``folder``.

    The folder is a checkpoint that ``rlaifv_lib.models.load_model`` reads like a downloaded one.
    """
    model, processor = _seeded(arch, init_std, hidden)
    folder = Path(folder)
    with quiet_loading():
        model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
