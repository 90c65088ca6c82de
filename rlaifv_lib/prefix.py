"""Shared-prefix scoring: every question about one image reuses that image's cached prompt prefix.

The labeler's prompts for one image differ only after the image: ``<system text> <576 image tokens>
<question>``. Instead of running the whole prompt for each question, the prefix (up to where the
questions' token ids first differ, image tokens included) is run once with a key/value cache. A chunk of
that image's questions is then packed back to back into ONE row after the cached prefix and run in one
forward pass: a 4-D attention mask lets each question token see the whole prefix and the earlier tokens of
its own question only, its position ids continue after the prefix as if it were alone, and the logits are
read at each question's last token. The prefix's cache is never copied (repeating it per question would
copy the keys and values of all 576 image tokens once per question); memory grows only with the question
tokens of a chunk.

Supported families (others use the per-question path): LLaVA and Idefics3/SmolVLM (1-D positions: the
question continues at position ``len(prefix)``) and Qwen2-VL/Qwen2.5-VL (3-D M-RoPE positions: the model's
``get_rope_index`` gives the prefix's positions, and text after it continues on all three axes at
``max(prefix positions) + 1``, as the model's own ``get_rope_index`` numbers the full prompt).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from transformers import DynamicCache

from .errors import RLAIFVError
from .models import chat_prompt, tokenizer_of

__all__ = ["FAMILIES", "PlanError", "PrefixPlan", "unsupported_reason", "plan_prefix", "prefix_logits", "prefill_tokens"]

# model_type -> how positions continue after the prefix ("1d": token index; "mrope": Qwen's 3-D rope index)
FAMILIES = {"llava": "1d", "idefics3": "1d", "smolvlm": "1d", "qwen2_vl": "mrope", "qwen2_5_vl": "mrope"}


class PlanError(RLAIFVError, ValueError):
    """The prompts of one image cannot be split into a shared prefix and question suffixes (the caller falls back)."""


@dataclass
class PrefixPlan:
    """One image's prompts split into the shared prefix (with its image inputs) and per-question suffixes.

    Args:
        inputs (dict): the processor's tensors for the prefix alone (ids, mask, pixel values, ...).
        question_ids (list[list[int]]): the token ids after the prefix, one list per question.
    """

    inputs: dict[str, torch.Tensor]
    question_ids: list[list[int]]

    @property
    def prefix_len(self) -> int:
        """Tokens in the shared prefix."""
        return int(self.inputs["input_ids"].shape[1])


def _base(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def unsupported_reason(model: Any) -> str | None:
    """Why ``model`` cannot be scored from a shared prefix, or None if it can."""
    model_type = getattr(model.config, "model_type", "")
    if model_type not in FAMILIES:
        return f"model_type {model_type!r} is not one whose positions after a cached prefix are known here ({sorted(FAMILIES)})"
    if FAMILIES[model_type] == "mrope" and not hasattr(getattr(_base(model), "model", None), "get_rope_index"):
        return f"{type(model).__name__} has no model.get_rope_index for its 3-D positions"
    return None


def _common_prefix_len(rows: Sequence[Sequence[int]]) -> int:
    first, n = rows[0], min(len(r) for r in rows)
    for i in range(n):
        if any(r[i] != first[i] for r in rows):
            return i
    return n


def plan_prefix(processor: Any, image: Any, texts: Sequence[str]) -> PrefixPlan:
    """Split the chat prompts ``texts`` about ``image`` at their longest common token prefix.

    The image is processed once, with ``texts[0]``; the other prompts are tokenized without the image
    and their single image token stands for the span of tokens the processor puts in its place (read
    off the processor's own ids for ``texts[0]``). Raises ``PlanError`` when the split is not clean.
    """
    tok = tokenizer_of(processor)
    image_id = tok.convert_tokens_to_ids(getattr(processor, "image_token", None) or "<image>")
    full = processor(images=[image], text=[texts[0]], return_tensors="pt")
    ids0 = full["input_ids"][0].tolist()
    plain = [tok(t)["input_ids"] for t in texts]
    if any(r.count(image_id) != 1 for r in plain):
        raise PlanError("a prompt does not hold exactly one image token")
    at, tail = plain[0].index(image_id), len(plain[0]) - plain[0].index(image_id) - 1
    if len(ids0) <= at + tail or ids0[:at] != plain[0][:at] or ids0[len(ids0) - tail :] != plain[0][at + 1 :]:
        raise PlanError("the tokenizer alone does not reproduce the processor's ids around the image")
    span = len(ids0) - at - tail  # tokens the processor puts in place of the one image token
    cut = min(_common_prefix_len(plain), min(len(r) for r in plain) - 1)  # every question keeps >= 1 token
    if cut <= at:
        raise PlanError("the questions differ before the image ends")
    prefix_len, n_tokens = cut + span - 1, len(ids0)
    inputs = {k: (v[:, :prefix_len] if torch.is_tensor(v) and v.dim() >= 2 and v.shape[:2] == (1, n_tokens) else v) for k, v in full.items()}
    return PrefixPlan(inputs, [r[cut:] for r in plain])


def _start_position(model: Any, inputs: dict[str, torch.Tensor]) -> int:
    if FAMILIES[model.config.model_type] == "1d":
        return int(inputs["input_ids"].shape[1])
    keys = ("input_ids", "mm_token_type_ids", "image_grid_thw", "attention_mask")
    positions, _ = _base(model).model.get_rope_index(**{k: inputs[k] for k in keys if k in inputs})
    return int(positions.max()) + 1


def _packed_batch(question_ids: Sequence[Sequence[int]], prefix_len: int, start: int, mrope: bool, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One row holding the questions back to back; each sees the prefix and its own earlier tokens only."""
    lengths = [len(q) for q in question_ids]
    ends = torch.tensor(lengths).cumsum(0)
    owner = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    offset = torch.arange(int(ends[-1])) - (ends - torch.tensor(lengths))[owner]
    allowed = (owner[:, None] == owner[None, :]) & (offset[:, None] >= offset[None, :])
    allowed = torch.cat([torch.ones(len(owner), prefix_len, dtype=torch.bool), allowed], dim=1)
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    positions = (start + offset)[None, :]
    ids = torch.tensor([t for q in question_ids for t in q], dtype=torch.long)[None, :]
    return {"input_ids": ids, "attention_mask": mask[None, None], "position_ids": positions.expand(3, 1, -1) if mrope else positions, "logits_to_keep": ends - 1}


def prefix_logits(model: Any, processor: Any, plan: PrefixPlan, chunk: int) -> torch.Tensor:
    """Next-token logits after each question of ``plan``: the prefix runs once, the questions ``chunk`` at a time."""
    device = model.device
    inputs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in plan.inputs.items()}
    mrope = FAMILIES[model.config.model_type] == "mrope"
    dtype = model.get_input_embeddings().weight.dtype
    out = []
    with torch.no_grad():
        start = _start_position(model, plan.inputs)
        prefix = model(**inputs, use_cache=True, logits_to_keep=1).cache
        layers = [(k, v) for k, v, *_ in prefix]
        for lo in range(0, len(plan.question_ids), chunk):
            batch = _packed_batch(plan.question_ids[lo : lo + chunk], plan.prefix_len, start, mrope, dtype)
            batch = {k: v.to(device) for k, v in batch.items()}
            out.append(model(**batch, cache=DynamicCache(layers, config=model.config), use_cache=True).logits[0].float())
    return torch.cat(out)


def prefill_tokens(processor: Any, images: Sequence[Any], questions: Sequence[str], image_index: Sequence[int]) -> tuple[float, float]:
    """Language-model tokens run per question (mean): (whole prompt each time, shared prefix once per image).

    Tokenization only (no model): each image's prompts are split as ``plan_prefix`` splits them.
    """
    by_image: dict[int, list[str]] = {}
    for q, k in zip(questions, image_index):
        by_image.setdefault(k, []).append(chat_prompt(processor, q))
    whole = shared = 0
    for k, texts in by_image.items():
        plan = plan_prefix(processor, images[k], texts)
        lengths = [len(q) for q in plan.question_ids]
        whole += plan.prefix_len * len(texts) + sum(lengths)
        shared += plan.prefix_len + sum(lengths)
    return whole / len(questions), shared / len(questions)
