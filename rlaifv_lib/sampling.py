"""Deconfounded candidate sampling (RLAIF-V, Sec. 3.1).

For each (image, instruction) prompt, N responses come from the *same* policy with the *same*
decoding settings; only the random stream differs. Pairs built from them then differ in
trustworthiness, not in style. Each candidate gets its own seed, derived from (seed, prompt id,
index), and its own random generator, so a candidate's text does not depend on which other
candidates share its ``generate`` batch: the same seed gives the same candidates at any batch size.

The N candidates of one prompt share its prefill (``SamplingConfig.shared_prefill``): the prompt runs
once with a key/value cache, the cache is repeated across the prompt's rows and ``generate`` continues
from it. Qwen2-VL/Qwen2.5-VL prefill each row as before: after a pre-filled cache, ``generate`` numbers
their 3-D positions from the model's stored ``rope_deltas`` (one per prefilled row), so rows repeated
after the prefill would need that internal state rewritten.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from . import distributed
from .errors import ConfigError, check_finite
from .images import load_image
from .models import chat_prompt, tokenizer_of
from .records import Candidate, Prompt

__all__ = ["SHARED_PREFILL_FAMILIES", "SamplingConfig", "candidate_seed", "SeededSampler", "generate_texts", "sample_candidates"]

# model types whose candidates can continue from a shared prefill (1-D positions, images only in the prompt)
SHARED_PREFILL_FAMILIES = ("llava", "idefics3", "smolvlm")


@dataclass
class SamplingConfig:
    """Decoding settings shared by every candidate.

    Args:
        n (int, defaults to 10): candidates per prompt (the official pipeline samples 10).
        temperature (float, defaults to 0.7): softmax temperature (official setting).
        top_p (float, defaults to 1.0): nucleus threshold; 1.0 leaves it off.
        max_new_tokens (int, defaults to 64): cap on response length in tokens (official: 512).
        batch_size (int, defaults to 64): rows (prompt x candidate) per ``generate`` call.
        seed (int, defaults to 0): base seed; candidate k of prompt p uses ``candidate_seed(seed, p, k)``.
        shared_prefill (bool, defaults to True): prefill each prompt once for all of its candidates in a
            ``generate`` batch (LLaVA and Idefics3/SmolVLM families; others prefill every row). The
            candidates are the same either way (tested).
        second_temperature (float | None, defaults to None): None keeps the candidates deconfounded (one
            setting for all). A number *confounds* them on purpose, for the ablation (``rlaifv ablate``): the
            candidates with index >= ``(n + 1) // 2`` of every prompt are sampled at this temperature, so a
            pair can differ in decoding style as well as in trustworthiness. Not an official setting.
    """

    n: int = 10
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 64
    batch_size: int = 64
    seed: int = 0
    shared_prefill: bool = True
    second_temperature: float | None = None

    def __post_init__(self) -> None:
        check_finite(self)
        if self.n < 1:
            raise ConfigError(f"n (candidates per prompt) must be >= 1, got {self.n}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0 for sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError("max_new_tokens and batch_size must be >= 1")
        if self.second_temperature is not None and not self.second_temperature > 0:
            raise ConfigError(f"second_temperature must be None (deconfounded, the default) or > 0, got {self.second_temperature}")
        if self.second_temperature is not None and self.n < 2:
            raise ConfigError(f"second_temperature needs n >= 2 (half the candidates use it), got n = {self.n}")

    def temperature_of(self, index: int) -> float:
        """The temperature of candidate ``index`` of a prompt (``second_temperature`` for the second half, when set)."""
        return self.second_temperature if self.second_temperature is not None and index >= (self.n + 1) // 2 else self.temperature


def candidate_seed(seed: int, prompt_id: str, index: int) -> int:
    """The seed of one candidate: a stable hash of (seed, prompt id, index)."""
    digest = hashlib.sha256(f"{seed}/{prompt_id}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class SeededSampler(LogitsProcessor):
    """Samples each row from its own ``torch.Generator`` on the scores' device; greedy decoding then keeps that token.

    Each row's token is the exponential race ``argmax(p / q)``, ``q ~ Exp(1)`` drawn from that row's generator:
    the rule ``torch.multinomial(p, 1)`` itself follows, so on CPU the draws are bit-for-bit those of
    ``torch.multinomial(probs[row], 1, generator=gen)`` (tested). The rows' draws go into one tensor on the
    model's device, and one ``argmax`` picks every row's token: no host round-trip per row or per token.
    Generators are made on the device of the first scores they see (the logits' device, also under a device
    map; ``device`` fixes it earlier). A CUDA generator's stream differs from a CPU one's: the same seed gives
    other, equally reproducible candidates there (same seed, same candidates at any batch size, on that device).
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float = 1.0, device: torch.device | str | None = None):
        self.seeds = [int(s) for s in seeds]
        self.temperature = temperature
        self.top_p = top_p
        self.generators = self._make(torch.device(device)) if device is not None else []

    def _make(self, device: torch.device) -> list[torch.Generator]:
        return [torch.Generator(device=device).manual_seed(s) for s in self.seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.generators:
            self.generators = self._make(scores.device)
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_p, idx = probs.sort(dim=-1, descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p > self.top_p
            probs = probs.scatter(-1, idx, sorted_p.masked_fill(drop, 0.0))
        q = torch.empty_like(probs)
        for row, gen in enumerate(self.generators):
            q[row].exponential_(1.0, generator=gen)  # what torch.multinomial(probs[row], 1, generator=gen) draws
        tokens = (probs / q).argmax(dim=-1, keepdim=True)
        return torch.full_like(scores, float("-inf")).scatter_(-1, tokens, 0.0)


def _prefill(model: Any, inputs: dict[str, torch.Tensor]) -> Any:
    """The key/value cache of every prompt but its last token, positions numbered as ``generate`` numbers them."""
    mask = inputs["attention_mask"]
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    short = {k: (v[:, :-1] if k in ("input_ids", "attention_mask") else v) for k, v in inputs.items()}
    with torch.no_grad():
        return model(**short, position_ids=positions[:, :-1], use_cache=True, logits_to_keep=1).cache


def _second_temperature(sample: Callable[..., list[Candidate]]) -> Callable[..., list[Candidate]]:
    """Lets ``sample_candidates`` honour ``SamplingConfig.second_temperature`` (the ablation's confounded candidates):
    the first half of each prompt's candidates at ``temperature``, the rest at ``second_temperature``, with the
    same per-candidate seeds and order. The second half is drawn from a full-``n`` pass at the second temperature
    (its first half discarded): 1.5x the sampling work, for the ablation only."""

    @functools.wraps(sample)
    def wrapper(model: Any, processor: Any, prompts: Sequence[Prompt], cfg: SamplingConfig | None = None, progress: bool = True) -> list[Candidate]:
        cfg = cfg or SamplingConfig()
        if cfg.second_temperature is None:
            return sample(model, processor, prompts, cfg, progress)
        half = (cfg.n + 1) // 2
        first = sample(model, processor, prompts, dataclasses.replace(cfg, n=half, second_temperature=None), progress)
        hot = sample(model, processor, prompts, dataclasses.replace(cfg, temperature=cfg.second_temperature, second_temperature=None), progress)
        by_key = {(c.prompt_id, c.index): c for c in first + [c for c in hot if c.index >= half]}
        return [by_key[p.id, k] for p in prompts for k in range(cfg.n)]

    return wrapper


def generate_texts(model: Any, processor: Any, images: list, instructions: list[str], seeds: list[int], cfg: SamplingConfig) -> list[str]:
    """One sampled response per (image, instruction, seed) row, in a single ``generate`` call."""
    shared = cfg.shared_prefill and getattr(model.config, "model_type", "") in SHARED_PREFILL_FAMILIES
    keys = [(id(im), ins) if shared else row for row, (im, ins) in enumerate(zip(images, instructions))]
    first = {k: row for row, k in reversed(list(enumerate(keys)))}  # each distinct prompt's first row
    prompt_rows = sorted(first.values())
    where = {row: i for i, row in enumerate(prompt_rows)}
    row_prompt = torch.tensor([where[first[k]] for k in keys])
    texts = [chat_prompt(processor, instructions[r]) for r in prompt_rows]
    inputs = processor(images=[load_image(images[r]) for r in prompt_rows], text=texts, return_tensors="pt", padding=True, padding_side="left")
    inputs = inputs.to(model.device)
    if shared:
        cache = _prefill(model, inputs)
        cache.batch_select_indices(row_prompt.to(model.device))
        inputs = {"input_ids": inputs["input_ids"][row_prompt], "attention_mask": inputs["attention_mask"][row_prompt], "cache": cache}
    tok = tokenizer_of(processor)
    with torch.no_grad():
        out = model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=cfg.max_new_tokens,
            logits_processor=LogitsProcessorList([SeededSampler(seeds, cfg.temperature, cfg.top_p)]),
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        )
    new = out[:, inputs["input_ids"].shape[1] :]
    return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]


@_second_temperature
def sample_candidates(model: Any, processor: Any, prompts: Sequence[Prompt], cfg: SamplingConfig | None = None, progress: bool = True) -> list[Candidate]:
    """N deconfounded candidates per prompt, batched over prompts x candidates (the batches split over the processes
    of a multi-process launch, see ``rlaifv_lib.distributed``)."""
    cfg = cfg or SamplingConfig()
    rows = [(p, k) for p in prompts for k in range(cfg.n)]
    chunks = [rows[start : start + cfg.batch_size] for start in range(0, len(rows), cfg.batch_size)]
    mine = sum(len(c) for c in chunks[distributed.rank() :: distributed.world_size()])
    bar = tqdm(total=mine, desc="sampling candidates", disable=not progress or not distributed.is_main(), unit="resp")

    def batch(chunk: list[tuple[Prompt, int]]) -> list[Candidate]:
        seeds = [candidate_seed(cfg.seed, p.id, k) for p, k in chunk]
        texts = generate_texts(model, processor, [p.image for p, _ in chunk], [p.instruction for p, _ in chunk], seeds, cfg)
        bar.update(len(chunk))
        return [Candidate(prompt_id=p.id, seed=s, text=t, index=k) for (p, k), s, t in zip(chunk, seeds, texts)]

    out = [c for cands in distributed.map_shards(batch, chunks) for c in cands]  # whole batches split over processes
    bar.close()
    return out
