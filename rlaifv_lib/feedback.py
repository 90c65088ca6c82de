"""Self-feedback scoring, the "conquer" step of RLAIF-V (Sec. 3.2).

The labeler (the policy itself by default, or a separate model) sees the image and each claim's
polar question. From the softmax of the *next-token* logits of one batched forward pass, a claim
is accepted iff P(yes)+P(Yes) > P(no)+P(No) — no text is generated. A response's score is
-(number of rejected claims); a response with no claims gets no score and is never paired.
Each image's prompt prefix (chat text and image tokens) runs once for all of its questions
(``rlaifv_lib.prefix``); models of other families run every question's whole prompt. Under a multi-process launch
the images (or question batches) are dealt to the processes and the verdicts gathered in order
(``rlaifv_lib.distributed``).
"""

from __future__ import annotations

import inspect
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm
from transformers.modeling_outputs import BaseModelOutputWithPooling

from . import distributed
from .errors import ConfigError, YesNoTokenError, check_finite
from .images import load_image
from .models import chat_prompt, tokenizer_of
from .prefix import PlanError, PrefixPlan, plan_prefix, prefix_logits, unsupported_reason
from .records import Candidate, Claim, ScoredCandidate, Verdict

__all__ = ["UNITS", "FeedbackConfig", "yes_no_token_ids", "yes_no_probs", "score_claims", "score_candidates", "score_responses", "response_scores"]

UNITS = ("claim", "response")  # what the labeler judges: each atomic claim (RLAIF-V), or the whole response

log = logging.getLogger(__name__)

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
            Used by the per-question path only (the shared-prefix path encodes each image once anyway).
        shared_prefix (bool, defaults to True): run each image's common prompt prefix (image tokens
            included) once and only the question tokens per question (``rlaifv_lib.prefix``), for the
            families listed in ``prefix.FAMILIES``; other models use the per-question path.
        prefix_batch_size (int, defaults to 16): questions of one image packed into one forward pass after
            its cached prefix. The cache is shared, not copied; a chunk's attention mask has (question
            tokens) x (prefix + question tokens) entries.
        unit (str, defaults to "claim"): what the labeler judges. "claim" is RLAIF-V's divide-and-conquer: one
            yes/no question per atomic claim, score = -(rejected claims). "response" is the alternative the paper
            argues against (for ``rlaifv ablate``): one question about the whole response
            (``response_question``), score = P(yes) / (P(yes) + P(no)) in [0, 1]; pair it with a
            ``PairConfig.min_margin`` below 1.
        response_question (str, defaults to "{response}\nIs this description accurate?"): the whole-response
            question of ``unit="response"``; ``{response}`` is replaced by the response text (the toy world's closed
            grammar has no word for "accurate": ``ablations`` asks it "{response} ?").
    """

    batch_size: int = 64
    question_suffix: str = ""
    reuse_image_features: bool = True
    shared_prefix: bool = True
    prefix_batch_size: int = 16
    unit: str = "claim"
    response_question: str = "{response}\nIs this description accurate?"

    def __post_init__(self) -> None:
        check_finite(self)
        for name in ("batch_size", "prefix_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.unit not in UNITS:
            raise ConfigError(f"unit must be one of {UNITS} (claim = divide-and-conquer, official), got {self.unit!r}")
        if "{response}" not in self.response_question:
            raise ConfigError(f"response_question must contain '{{response}}' (where the response goes), got {self.response_question!r}")


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


def _yes_no(logits: torch.Tensor, yes: list[int], no: list[int]) -> list[tuple[float, float]]:
    """(P(yes), P(no)) of each row of next-token ``logits``."""
    probs = torch.softmax(logits, -1)
    return list(zip(probs[:, yes].sum(-1).tolist(), probs[:, no].sum(-1).tolist()))


def _per_question(model: Any, processor: Any, loaded: list, questions: list[str], image_index: list[int], cfg: FeedbackConfig, yes_no: tuple[list[int], list[int]], progress: bool) -> list[tuple[float, float]]:
    """(P(yes), P(no)) of each question, running its whole prompt (the reference path)."""
    reuse = cfg.reuse_image_features and _can_reuse_features(model)
    # group questions of the same image into the same batch so its features are computed once
    order = sorted(range(len(questions)), key=lambda i: image_index[i])
    batches = [order[start : start + cfg.batch_size] for start in range(0, len(order), cfg.batch_size)]
    bar = tqdm(total=distributed.share(len(batches)), desc="labeler scoring", disable=not progress or not distributed.is_main(), unit="batch")

    def batch(idx: list[int]) -> list[tuple[float, float]]:
        logits = _next_token_logits(model, processor, loaded, [questions[i] for i in idx], [image_index[i] for i in idx], reuse)
        bar.update()
        return _yes_no(logits, *yes_no)

    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(questions)
    for idx, probs in zip(batches, distributed.map_shards(batch, batches)):  # whole batches split over processes
        for i, p in zip(idx, probs):
            out[i] = p
    bar.close()
    return out


def _plans(processor: Any, loaded: list, questions: list[str], image_index: list[int]) -> list[tuple[list[int], PrefixPlan]] | None:
    """(question positions, plan) for every image asked about, or None if one image's prompts do not split."""
    by_image: dict[int, list[int]] = defaultdict(list)
    for i, k in enumerate(image_index):
        by_image[k].append(i)
    try:
        return [(rows, plan_prefix(processor, loaded[k], [chat_prompt(processor, questions[i]) for i in rows])) for k, rows in sorted(by_image.items())]
    except PlanError as e:
        log.info("shared-prefix scoring off: %s; each question runs its whole prompt", e)
        return None


def _shared_prefix(model: Any, processor: Any, plans: list[tuple[list[int], PrefixPlan]], n: int, cfg: FeedbackConfig, yes_no: tuple[list[int], list[int]], progress: bool) -> list[tuple[float, float]]:
    """(P(yes), P(no)) of each question, from its image's cached prefix."""
    bar = tqdm(total=distributed.share(len(plans)), desc="labeler scoring", disable=not progress or not distributed.is_main(), unit="image")

    def image(plan: PrefixPlan) -> list[tuple[float, float]]:
        probs = _yes_no(prefix_logits(model, processor, plan, cfg.prefix_batch_size), *yes_no)
        bar.update()
        return probs

    out: list[tuple[float, float]] = [(0.0, 0.0)] * n
    for (rows, _), probs in zip(plans, distributed.map_shards(image, [plan for _, plan in plans])):  # images split over processes
        for i, p in zip(rows, probs):
            out[i] = p
    bar.close()
    return out


def yes_no_probs(model: Any, processor: Any, images: Sequence[Any], questions: Sequence[str], image_index: Sequence[int] | None = None, cfg: FeedbackConfig | None = None, progress: bool = False) -> list[tuple[float, float]]:
    """(P(yes), P(no)) for each question about ``images[image_index[i]]``, from next-token logits."""
    cfg = cfg or FeedbackConfig()
    image_index = list(range(len(questions))) if image_index is None else list(image_index)
    if len(image_index) != len(questions):
        raise ValueError("image_index must have one entry per question")
    yes_no = yes_no_token_ids(tokenizer_of(processor))
    loaded = [load_image(im) for im in images]
    asked = [q + cfg.question_suffix for q in questions]
    plans = _plans(processor, loaded, asked, image_index) if cfg.shared_prefix and questions and unsupported_reason(model) is None else None
    if plans is None:
        return _per_question(model, processor, loaded, asked, image_index, cfg, yes_no, progress)
    return _shared_prefix(model, processor, plans, len(asked), cfg, yes_no, progress)


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


def score_responses(model: Any, processor: Any, candidates: Sequence[Candidate], images: dict[str, Any], cfg: FeedbackConfig | None = None, progress: bool = True) -> list[Verdict]:
    """One verdict per candidate on ``cfg.response_question`` about the whole response (id ``<candidate id>/response``)."""
    cfg = cfg or FeedbackConfig(unit="response")
    prompt_ids = sorted(images)
    where = {pid: k for k, pid in enumerate(prompt_ids)}
    questions = [cfg.response_question.replace("{response}", c.text) for c in candidates]
    probs = yes_no_probs(model, processor, [images[p] for p in prompt_ids], questions, [where[c.prompt_id] for c in candidates], cfg, progress)
    return [Verdict(claim_id=f"{c.id}/response", p_yes=py, p_no=pn, accepted=py > pn) for c, (py, pn) in zip(candidates, probs)]


def response_scores(candidates: Sequence[Candidate], claims: Sequence[Claim], verdicts: Sequence[Verdict]) -> list[ScoredCandidate]:
    """Whole-response score = P(yes) / (P(yes) + P(no)) of its one verdict (None if the labeler gave neither any
    mass); ``n_claims`` counts its atomic claims (for the audit), ``n_rejected`` is 1 when the verdict is no."""
    by_id = {v.claim_id: v for v in verdicts}
    n_claims: dict[str, int] = defaultdict(int)
    for c in claims:
        n_claims[c.candidate_id] += 1
    out = []
    for cand in candidates:
        v = by_id[f"{cand.id}/response"]
        mass = v.p_yes + v.p_no
        out.append(ScoredCandidate(cand.id, cand.prompt_id, cand.text, v.p_yes / mass if mass > 0 else None, n_claims[cand.id], int(not v.accepted)))
    return out
