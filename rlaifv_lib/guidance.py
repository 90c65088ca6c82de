"""Inference-time self-feedback guidance: best-of-N ranked by the DPO implicit reward (RLAIF-V paper
v2, Sec. "Inference-time Scaling").

A DPO-tuned policy pi_theta and the model it started from, pi_ref, define a reward without any
labeler: r(y) = (beta / |y|) * sum_t [log pi_theta(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)].
Sample N responses, score each with r, keep the best. Length normalisation (divide by the number
of response tokens |y|) matters: the summed log-ratio favours short answers. The demo compares
that pick with a random pick and with the policy's own log-likelihood on the same candidates.
"""

from __future__ import annotations

import contextlib
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from . import distributed
from .dpo import DPOSettings
from .errors import ConfigError, check_finite
from .images import load_image
from .models import chat_prompt, tokenizer_of
from .records import Candidate, Prompt
from .sampling import candidate_seed

__all__ = [
    "SELECTIONS",
    "GuidanceConfig",
    "CandidateScore",
    "completion_text",
    "sequence_logprobs",
    "implicit_reward",
    "score_for_guidance",
    "best_of_n",
    "select_candidates",
    "compare_selections",
]

SELECTIONS = ("reward", "loglik", "random")


@dataclass
class GuidanceConfig:
    """Settings of best-of-N guidance.

    Args:
        beta (float, defaults to DPOSettings' β): the DPO beta of the implicit reward (use the one the policy was
            trained with).
        length_normalise (bool, defaults to True): divide the summed log-ratio (and log-likelihood) by the
            number of response tokens, as in paper v2.
        batch_size (int, defaults to 32): sequences per teacher-forced forward pass.

    How many candidates to sample is the sampler's ``SamplingConfig.n``; which rule picks among them is
    :func:`best_of_n`'s ``selection``.
    """

    beta: float = DPOSettings.beta
    length_normalise: bool = True
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_finite(self)
        if not self.beta > 0 or self.beta == float("inf"):
            raise ConfigError(f"beta must be a finite number > 0 (the DPO beta, official 0.1), got {self.beta}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class CandidateScore:
    """Everything guidance knows about one candidate."""

    candidate_id: str
    prompt_id: str
    policy_logprob: float  # summed over response tokens
    ref_logprob: float
    n_tokens: int
    reward: float  # implicit reward (length-normalised if configured)
    loglik: float  # policy log-likelihood (per token if length-normalised)


def completion_text(processor: Any, instruction: str, response: str) -> str:
    """The assistant turn as the chat template renders it after the prompt (response + end of turn)."""
    prompt = chat_prompt(processor, instruction)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]},
        {"role": "assistant", "content": [{"type": "text", "text": response}]},
    ]
    full = processor.apply_chat_template(messages, tokenize=False)
    if full.startswith(prompt):
        return full[len(prompt) :]
    return " " + response + (tokenizer_of(processor).eos_token or "")  # template re-renders the prompt differently


def _batch_inputs(processor: Any, images: list, prompts: list[str], completions: list[str]) -> tuple[dict, torch.Tensor]:
    """Model inputs [prompt | completion | right padding] per row (as TRL's collator) and the completion mask."""
    tok = tokenizer_of(processor)
    enc = processor(images=images, text=prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    comp = tok(completions, add_special_tokens=False)["input_ids"]
    keep = enc["attention_mask"].bool()
    token_keys = [k for k, v in enc.items() if torch.is_tensor(v) and v.shape == enc["input_ids"].shape and k != "attention_mask"]
    rows = [{k: enc[k][i][keep[i]] for k in token_keys} for i in range(len(prompts))]
    width = max(len(r["input_ids"]) + len(c) for r, c in zip(rows, comp))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out = {k: torch.zeros(len(rows), width, dtype=enc[k].dtype) for k in token_keys}
    out["input_ids"].fill_(pad)
    attention, completion = torch.zeros(len(rows), width, dtype=torch.long), torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (r, c) in enumerate(zip(rows, comp)):
        p = len(r["input_ids"])
        for k in token_keys:
            out[k][i, :p] = r[k]
        out["input_ids"][i, p : p + len(c)] = torch.tensor(c, dtype=out["input_ids"].dtype)
        attention[i, : p + len(c)] = 1
        completion[i, p : p + len(c)] = True
    out["attention_mask"] = attention
    out.update({k: v for k, v in enc.items() if k not in out})  # pixel_values, image sizes, ...
    return out, completion


def sequence_logprobs(model: Any, processor: Any, images: Sequence[Any], instructions: Sequence[str], responses: Sequence[str], batch_size: int = 32, progress: bool = False) -> list[tuple[float, int]]:
    """(sum of log p(response token), number of response tokens) per row, teacher-forced, one forward per batch.

    The response tokens are those the chat template renders after the prompt: the text, then end of turn.
    """
    if not len(images) == len(instructions) == len(responses):
        raise ValueError("images, instructions and responses must have the same length")
    starts = range(0, len(responses), batch_size)
    bar = tqdm(total=distributed.share(len(starts)), desc="teacher-forced log-probs", disable=not progress or not distributed.is_main(), unit="batch")

    def batch(start: int) -> list[tuple[float, int]]:
        sl = slice(start, start + batch_size)
        prompts = [chat_prompt(processor, ins) for ins in instructions[sl]]
        comps = [completion_text(processor, ins, r) for ins, r in zip(instructions[sl], responses[sl])]
        inputs, mask = _batch_inputs(processor, [load_image(im) for im in images[sl]], prompts, comps)
        inputs = {k: (v.to(model.device) if torch.is_tensor(v) else v) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with torch.no_grad():
            logits = model(**inputs, use_cache=False).logits[:, :-1]
        target = mask[:, 1:].to(logits.device)  # position t predicts token t+1
        labels = inputs["input_ids"][:, 1:][target]
        token_lp = torch.log_softmax(logits[target].float(), -1).gather(-1, labels[:, None]).squeeze(-1)
        row = torch.arange(target.shape[0], device=target.device)[:, None].expand_as(target)[target]
        sums = torch.zeros(target.shape[0], device=logits.device).index_add_(0, row, token_lp)
        bar.update()
        return [(float(s), int(n)) for s, n in zip(sums, target.sum(1))]

    out = [row for rows in distributed.map_shards(batch, starts) for row in rows]  # batches split over processes
    bar.close()
    return out


def implicit_reward(policy_logprob: float, ref_logprob: float, n_tokens: int, beta: float = DPOSettings.beta, length_normalise: bool = True) -> float:
    """DPO implicit reward beta * (log pi(y) - log pi_ref(y)), divided by |y| when length-normalised."""
    ratio = policy_logprob - ref_logprob
    return beta * ratio / max(n_tokens, 1) if length_normalise else beta * ratio


def _reference_context(policy: Any, reference: Any) -> tuple[Any, Any]:
    """(reference model, context): the given reference, or the PEFT policy with its adapters off."""
    if reference is not None:
        return reference, contextlib.nullcontext()
    if hasattr(policy, "disable_adapter"):
        return policy, policy.disable_adapter()
    raise ConfigError(
        "no reference model: pass `reference` (the model the policy was trained from), or pass the policy as a "
        "PEFT model so that its adapters can be switched off."
    )


def score_for_guidance(policy: Any, reference: Any, processor: Any, prompts: Sequence[Prompt], candidates: Sequence[Candidate], cfg: GuidanceConfig | None = None, progress: bool = False) -> list[CandidateScore]:
    """Implicit reward and policy log-likelihood of every candidate (one pass of each model)."""
    cfg = cfg or GuidanceConfig()
    by_id = {p.id: p for p in prompts}
    images = [by_id[c.prompt_id].image for c in candidates]
    instructions = [by_id[c.prompt_id].instruction for c in candidates]
    texts = [c.text for c in candidates]
    pol = sequence_logprobs(policy, processor, images, instructions, texts, cfg.batch_size, progress)
    ref_model, ctx = _reference_context(policy, reference)
    with ctx:
        ref = sequence_logprobs(ref_model, processor, images, instructions, texts, cfg.batch_size, progress)
    out = []
    for c, (lp, n), (lr, _) in zip(candidates, pol, ref):
        reward = implicit_reward(lp, lr, n, cfg.beta, cfg.length_normalise)
        loglik = lp / max(n, 1) if cfg.length_normalise else lp
        out.append(CandidateScore(c.id, c.prompt_id, lp, lr, n, reward, loglik))
    return out


def best_of_n(prompt_ids: Sequence[str], scores: Sequence[float] | None, selection: str = "reward", seed: int = 0) -> dict[str, int]:
    """Index (into the flat candidate list) of the pick for each prompt: argmax of ``scores``, or random.

    Ties go to the earliest candidate. Example: ``best_of_n(["a", "a", "b"], [0.1, 0.5, -1.0])`` is
    ``{"a": 1, "b": 2}``.
    """
    if selection not in SELECTIONS:
        raise ConfigError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    if selection != "random" and (scores is None or len(scores) != len(prompt_ids)):
        raise ValueError("scores must give one value per candidate unless selection='random'")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, pid in enumerate(prompt_ids):
        groups[pid].append(i)
    if selection == "random":
        return {pid: random.Random(candidate_seed(seed, pid, 0)).choice(idx) for pid, idx in groups.items()}
    return {pid: max(idx, key=lambda i: (scores[i], -i)) for pid, idx in groups.items()}


def select_candidates(candidates: Sequence[Candidate], scores: Sequence[CandidateScore], selection: str = "reward", seed: int = 0) -> dict[str, Candidate]:
    """The picked candidate per prompt under one selection rule."""
    values = [s.reward if selection == "reward" else s.loglik for s in scores]
    picks = best_of_n([c.prompt_id for c in candidates], values, selection, seed)
    return {pid: candidates[i] for pid, i in picks.items()}


def compare_selections(candidates: Sequence[Candidate], scores: Sequence[CandidateScore], seed: int = 0) -> dict[str, dict[str, Candidate]]:
    """Picks of every selection rule on the same candidates: {"reward": ..., "loglik": ..., "random": ...}."""
    return {sel: select_candidates(candidates, scores, sel, seed) for sel in SELECTIONS}
