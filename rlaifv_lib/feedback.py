"""Self-feedback scoring, the "conquer" step of RLAIF-V (Sec. 3.2).

The labeler (the policy itself by default, or a separate model) sees the image and each claim's
polar question. From the softmax of the *next-token* logits of one batched forward pass, a claim
is accepted iff P(yes)+P(Yes) > P(no)+P(No) — no text is generated. A response's score is
-(number of rejected claims); a response with no claims gets no score and is never paired.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .errors import ConfigError, YesNoTokenError, check_finite
from .images import load_image
from .models import chat_prompt, tokenizer_of
from .records import Candidate, Claim, ScoredCandidate, Verdict

__all__ = ["FeedbackConfig", "yes_no_token_ids", "yes_no_probs", "score_claims", "score_candidates"]

_YES = ("yes", "Yes", "YES")
_NO = ("no", "No", "NO")


@dataclass
class FeedbackConfig:
    """Settings of the labeler.

    Args:
        batch_size (int, defaults to 64): questions per forward pass.
        question_suffix (str, defaults to ""): appended to every question; the official code
            appends " Please answer yes or no." for real models (the toy grammar needs none).
        reuse_image_features (bool, defaults to True): encode each image once for all of its
            questions when the architecture allows it (LLaVA family); otherwise per question.
    """

    batch_size: int = 64
    question_suffix: str = ""
    reuse_image_features: bool = True

    def __post_init__(self) -> None:
        check_finite(self)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


def yes_no_token_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Single-token ids of every case/space variant of 'yes' and 'no' that the tokenizer has."""

    def ids(words: Sequence[str]) -> list[int]:
        found: list[int] = []
        for w in words:
            for variant in (w, " " + w):
                enc = tokenizer.encode(variant, add_special_tokens=False)
                if len(enc) == 1 and enc[0] != tokenizer.unk_token_id and enc[0] not in found:
                    found.append(enc[0])
        return found

    yes, no = ids(_YES), ids(_NO)
    if not yes or not no:
        missing = " and ".join(w for w, f in (("'yes'", yes), ("'no'", no)) if not f)
        raise YesNoTokenError(
            f"the labeler's tokenizer has no single token for {missing}, so P(yes)/P(no) cannot be read "
            "from the next-token logits. Use a labeler whose vocabulary has them (any chat MLLM does)."
        )
    if set(yes) & set(no):
        raise YesNoTokenError("the tokenizer maps 'yes' and 'no' to the same token id.")
    return yes, no


def _can_reuse_features(model: Any) -> bool:
    if getattr(model.config, "model_type", "") != "llava" or not hasattr(model, "get_image_features"):
        return False
    return "mm_encoder_outputs" in inspect.signature(model.forward).parameters


def _next_token_logits(model: Any, processor: Any, images: list, questions: list[str], rows: list[int], reuse: bool) -> torch.Tensor:
    texts = [chat_prompt(processor, q) for q in questions]
    row_images = [images[i] for i in rows]
    inputs = processor(images=row_images, text=texts, return_tensors="pt", padding=True, padding_side="left").to(model.device)
    with torch.no_grad():
        if reuse:
            uniq = sorted(set(rows))
            pix = processor.image_processor([images[i] for i in uniq], return_tensors="pt")["pixel_values"]
            feats = model.get_image_features(pixel_values=pix.to(model.device, model.dtype), return_dict=True).pooler_output
            where = {i: k for k, i in enumerate(uniq)}
            enc = BaseModelOutputWithPooling(pooler_output=[feats[where[i]] for i in rows])
            kwargs = {k: v for k, v in inputs.items() if k != "pixel_values"}
            logits = model(**kwargs, mm_encoder_outputs={"image": enc}, logits_to_keep=1).logits
        else:
            logits = model(**inputs, logits_to_keep=1).logits
    return logits[:, -1, :].float()


def yes_no_probs(model: Any, processor: Any, images: Sequence[Any], questions: Sequence[str], image_index: Sequence[int] | None = None, cfg: FeedbackConfig | None = None, progress: bool = False) -> list[tuple[float, float]]:
    """(P(yes), P(no)) for each question about ``images[image_index[i]]``, from next-token logits."""
    cfg = cfg or FeedbackConfig()
    image_index = list(range(len(questions))) if image_index is None else list(image_index)
    if len(image_index) != len(questions):
        raise ValueError("image_index must have one entry per question")
    yes, no = yes_no_token_ids(tokenizer_of(processor))
    loaded = [load_image(im) for im in images]
    reuse = cfg.reuse_image_features and _can_reuse_features(model)
    # group questions of the same image into the same batch so its features are computed once
    order = sorted(range(len(questions)), key=lambda i: image_index[i])
    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(questions)
    for start in tqdm(range(0, len(order), cfg.batch_size), desc="labeler scoring", disable=not progress, unit="batch"):
        idx = order[start : start + cfg.batch_size]
        qs = [questions[i] + cfg.question_suffix for i in idx]
        probs = torch.softmax(_next_token_logits(model, processor, loaded, qs, [image_index[i] for i in idx], reuse), -1)
        p_yes, p_no = probs[:, yes].sum(-1), probs[:, no].sum(-1)
        for j, i in enumerate(idx):
            out[i] = (float(p_yes[j]), float(p_no[j]))
    return out


def score_claims(model: Any, processor: Any, claims: Sequence[Claim], images: dict[str, Any], candidate_prompt: dict[str, str], cfg: FeedbackConfig | None = None, progress: bool = True) -> list[Verdict]:
    """A verdict for every claim; ``images`` maps prompt id -> image, ``candidate_prompt`` candidate id -> prompt id."""
    prompt_ids = sorted(images)
    where = {pid: k for k, pid in enumerate(prompt_ids)}
    index = [where[candidate_prompt[c.candidate_id]] for c in claims]
    probs = yes_no_probs(model, processor, [images[p] for p in prompt_ids], [c.question for c in claims], index, cfg, progress)
    return [Verdict(claim_id=c.id, p_yes=py, p_no=pn, accepted=py > pn) for c, (py, pn) in zip(claims, probs)]


def score_candidates(candidates: Sequence[Candidate], claims: Sequence[Claim], verdicts: Sequence[Verdict]) -> list[ScoredCandidate]:
    """Response score = -(rejected claims); None for a response with no claims."""
    by_claim = {v.claim_id: v for v in verdicts}
    per_cand: dict[str, list[Verdict]] = defaultdict(list)
    for c in claims:
        per_cand[c.candidate_id].append(by_claim[c.id])
    out = []
    for cand in candidates:
        vs = per_cand.get(cand.id, [])
        rejected = sum(not v.accepted for v in vs)
        out.append(ScoredCandidate(cand.id, cand.prompt_id, cand.text, float(-rejected) if vs else None, len(vs), rejected))
    return out
