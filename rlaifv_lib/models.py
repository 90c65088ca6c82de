"""Load a policy or labeler and build its chat prompts.

The toy policy and labeler live under ``data/toy/``; any Hugging Face image-text-to-text model
id or local path goes through ``AutoModelForImageTextToText`` + ``AutoProcessor``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel, ProcessorMixin

from .errors import ChatTemplateError, ModelLoadError

__all__ = ["DATA_DIR", "TOY_POLICY", "TOY_LABELER", "load_model", "chat_prompt", "tokenizer_of"]

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
TOY_POLICY = DATA_DIR / "toy" / "policy"
TOY_LABELER = DATA_DIR / "toy" / "labeler"
_TOY_NAMES = {"toy-policy": TOY_POLICY, "toy-labeler": TOY_LABELER}


def tokenizer_of(processor: Any) -> Any:
    """The tokenizer inside a processor (or the tokenizer itself)."""
    return getattr(processor, "tokenizer", processor)


def load_model(name_or_path: str | Path = "toy-policy", trust_remote_code: bool = False, dtype: torch.dtype | None = None) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load (model, processor) from a toy name, a local path or a Hugging Face id (safetensors only)."""
    path = _TOY_NAMES.get(str(name_or_path), name_or_path)
    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(
            path, trust_remote_code=trust_remote_code, use_safetensors=True, dtype=dtype or torch.float32
        )
    except OSError as e:
        raise ModelLoadError(
            f"cannot load model {name_or_path!r}: {e}. Give a local folder holding config.json and "
            "*.safetensors, a toy name (toy-policy, toy-labeler), or a Hugging Face id reachable from here."
        ) from None
    model.eval()
    return model, processor


def chat_prompt(processor: Any, text: str, with_image: bool = True) -> str:
    """The chat-formatted user turn (one image, then ``text``) ending with the generation prompt."""
    if getattr(processor, "chat_template", None) is None and getattr(tokenizer_of(processor), "chat_template", None) is None:
        raise ChatTemplateError(
            f"{type(processor).__name__} has no chat template, so prompts cannot be formatted for it. "
            "Use an instruction-tuned checkpoint, or set `processor.chat_template` to a Jinja template."
        )
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
