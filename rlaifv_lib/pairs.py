"""Preference pair construction from self-feedback scores (RLAIF-V, Sec. 3.2, and the official code).

Within one prompt, a candidate whose score is higher by at least ``min_margin`` (1 in the
official code) is *chosen* over the other; ties, pairs of identical texts and candidates with no
score (no claims) give no pair. At most ``max_pairs_per_prompt`` pairs (2 officially) are kept per
prompt, picked at random. Then *length balancing* runs over all the pairs at once, as the
official ``utils/get_pairs_filter_shorten.py`` does: for r = 0, 0.02, ..., 0.98 drop the pairs
whose chosen response is shorter than the rejected one by more than a share r of the rejected
length, and keep the r whose pairs have the closest mean chosen and rejected lengths (whitespace
words). Without it, "say less" wins: the shortest responses make the fewest claims, so the
fewest rejected claims.

The pairs are returned with per-prompt reason codes (why a prompt gave no pair) and converted
to TRL's conversational vision preference format by :func:`to_trl_dataset`.
"""

from __future__ import annotations

import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Iterator, Sequence

from datasets import Dataset

from .errors import ConfigError, DatasetSchemaError, NoPairsError, check_finite
from .images import load_image
from .records import PreferencePair, ScoredCandidate, read_jsonl, write_jsonl

__all__ = [
    "REASONS",
    "PairConfig",
    "PromptPairing",
    "PairResult",
    "build_pairs",
    "length_balance",
    "require_pairs",
    "pair_stats",
    "to_trl_dataset",
    "save_pairs",
    "load_pairs",
    "word_length",
]

# per-prompt reason codes, and what each one means (for notebooks and error messages)
REASONS: dict[str, str] = {
    "paired": "gave at least one pair and lost none to the cap",
    "capped": "gave pairs; more were eligible than max_pairs_per_prompt allows",
    "no_candidates": "has no scored candidates at all",
    "no_claims": "no candidate made a checkable claim (every score is None)",
    "one_scored": "only one candidate made claims, so there is nothing to compare it with",
    "all_tied": "every candidate with claims got the same score",
    "below_margin": "scores differ, but by less than min_margin",
    "identical_texts": "the only pairs with a large enough margin had identical texts",
    "no_coverage": "every eligible pair failed require_claim_coverage",
    "length_filtered": "its pairs were all dropped by length balancing",
}


@dataclass
class PairConfig:
    """Settings of pair construction (defaults follow the official RLAIF-V code).

    Args:
        min_margin (float, defaults to 1.0): two candidates form a pair when their scores differ
            by at least this; the higher-scored one is chosen (official: 1).
        max_pairs_per_prompt (int or None, defaults to 2): keep at most this many pairs per prompt,
            a seeded random choice among the eligible ones (official: 2); None keeps all.
        length_balance (bool, defaults to True): run the official length balancing over all pairs
            (see :func:`length_balance`).
        length_step (float, defaults to 0.02): step of the searched shortening threshold r.
        length_max (float, defaults to 0.98): largest r searched (r runs 0, step, ..., length_max).
        require_claim_coverage (bool, defaults to False): keep a pair only if the chosen response
            makes at least as many checkable claims as the rejected one. A guard against the
            "say less" collapse (a response that says little has few claims to reject); not in the
            official code, so off by default. It is applied before the cap.
        seed (int, defaults to 0): seed of the random choice among a prompt's eligible pairs.
    """

    min_margin: float = 1.0
    max_pairs_per_prompt: int | None = 2
    length_balance: bool = True
    length_step: float = 0.02
    length_max: float = 0.98
    require_claim_coverage: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_finite(self)
        if self.min_margin <= 0:
            raise ConfigError(f"min_margin must be > 0 (ties never make a pair; official 1), got {self.min_margin}")
        if self.max_pairs_per_prompt is not None and self.max_pairs_per_prompt < 1:
            raise ConfigError(f"max_pairs_per_prompt must be None or >= 1 (official 2), got {self.max_pairs_per_prompt}")
        if not 0 < self.length_step <= 1:
            raise ConfigError(f"length_step must be in (0, 1], got {self.length_step}")
        if not 0 <= self.length_max < 1:
            raise ConfigError(f"length_max must be in [0, 1) (official 0.98), got {self.length_max}")

    def ratios(self) -> list[float]:
        """The searched thresholds r: 0, length_step, ..., up to length_max (rounded, no float drift)."""
        n = int(self.length_max / self.length_step + 1e-9)
        return [round(k * self.length_step, 10) for k in range(n + 1)]


@dataclass
class PromptPairing:
    """What happened to one prompt's candidates: counts at each stage and a reason code."""

    prompt_id: str
    n_candidates: int
    n_scored: int
    n_eligible: int = 0  # pairs passing margin, identical-text and coverage rules
    n_capped: int = 0  # pairs left after the per-prompt cap
    n_kept: int = 0  # pairs left after length balancing
    reason: str = "paired"  # a key of REASONS


@dataclass
class PairResult:
    """The pairs, the same pairs before length balancing, per-prompt outcomes and the chosen r."""

    pairs: list[PreferencePair]
    before_balance: list[PreferencePair]
    prompts: dict[str, PromptPairing]
    length_ratio: float | None = None  # the r kept by length balancing; None when it did not run
    config: PairConfig = field(default_factory=PairConfig)

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[PreferencePair]:
        return iter(self.pairs)

    def reason_counts(self) -> dict[str, int]:
        """How many prompts ended with each reason code."""
        return dict(Counter(p.reason for p in self.prompts.values()))

    @property
    def reason(self) -> str | None:
        """Why there are no pairs at all (a sentence), or None when there are some."""
        if self.pairs:
            return None
        if not self.prompts:
            return "no scored candidates were given"
        parts = [f"{n} prompt(s): {REASONS[code]}" for code, n in sorted(self.reason_counts().items())]
        return "no prompt gave a pair — " + "; ".join(parts)


def word_length(text: str) -> int:
    """Length of a response in whitespace-separated words (the official length measure)."""
    return len(text.split())


def _pair(a: ScoredCandidate, b: ScoredCandidate, prompt_id: str, images: dict, instructions: dict) -> PreferencePair:
    """The pair of two scored candidates, the higher-scored one chosen."""
    chosen, rejected = (a, b) if a.score >= b.score else (b, a)
    return PreferencePair(
        prompt_id=prompt_id,
        chosen=chosen.text,
        rejected=rejected.text,
        margin=float(chosen.score - rejected.score),
        chosen_id=chosen.candidate_id,
        rejected_id=rejected.candidate_id,
        chosen_score=float(chosen.score),
        rejected_score=float(rejected.score),
        instruction=instructions.get(prompt_id, ""),
        image=images.get(prompt_id),
        extra={"chosen_claims": chosen.n_claims, "rejected_claims": rejected.n_claims},
    )


def _prompt_pairs(pid: str, cands: list[ScoredCandidate], cfg: PairConfig, images: dict, instructions: dict) -> tuple[list[PreferencePair], PromptPairing]:
    """Eligible pairs of one prompt, capped; with the prompt's outcome."""
    scored = [c for c in cands if c.score is not None]
    info = PromptPairing(pid, len(cands), len(scored))
    if not cands:
        info.reason = "no_candidates"
        return [], info
    if not scored:
        info.reason = "no_claims"
        return [], info
    if len(scored) == 1:
        info.reason = "one_scored"
        return [], info
    if len({c.score for c in scored}) == 1:
        info.reason = "all_tied"
        return [], info
    margin_ok = [(a, b) for a, b in combinations(scored, 2) if abs(a.score - b.score) >= cfg.min_margin]
    if not margin_ok:
        info.reason = "below_margin"
        return [], info
    distinct = [(a, b) for a, b in margin_ok if a.text.strip() != b.text.strip()]
    if not distinct:
        info.reason = "identical_texts"
        return [], info
    # sorted by ids, so the seeded choice below does not depend on the order candidates came in
    pairs = sorted((_pair(a, b, pid, images, instructions) for a, b in distinct), key=lambda p: (p.chosen_id, p.rejected_id))
    if cfg.require_claim_coverage:
        pairs = [p for p in pairs if p.extra["chosen_claims"] >= p.extra["rejected_claims"]]
        if not pairs:
            info.reason = "no_coverage"
            return [], info
    info.n_eligible = len(pairs)
    cap = cfg.max_pairs_per_prompt
    if cap is not None and len(pairs) > cap:
        rng = random.Random(f"{cfg.seed}/{pid}")  # per prompt: independent of prompt order
        keep = sorted(rng.sample(range(len(pairs)), cap))
        pairs = [pairs[i] for i in keep]
        info.reason = "capped"
    info.n_capped = len(pairs)
    return pairs, info


def _shortening(pair: PreferencePair) -> float:
    """(len_rejected - len_chosen) / len_rejected in words; 0 when the rejected text is empty."""
    lr = word_length(pair.rejected)
    return (lr - word_length(pair.chosen)) / lr if lr else 0.0


def _length_gap(pairs: Sequence[PreferencePair]) -> float:
    """|mean chosen length - mean rejected length| / mean rejected length (inf when undefined)."""
    if not pairs:
        return float("inf")
    mean_c = sum(word_length(p.chosen) for p in pairs) / len(pairs)
    mean_r = sum(word_length(p.rejected) for p in pairs) / len(pairs)
    return abs(mean_c - mean_r) / mean_r if mean_r else float("inf")


def length_balance(pairs: Sequence[PreferencePair], cfg: PairConfig | None = None) -> tuple[list[PreferencePair], float | None]:
    """Official length balancing over all pairs: (kept pairs, chosen r).

    For each r in ``cfg.ratios()``, drop pairs whose chosen response is shorter than the rejected
    one by more than a share r of its length; keep the r with the smallest relative gap between
    the mean chosen and mean rejected lengths (the smallest such r on ties, as pandas' idxmin).
    An r that leaves no pair is skipped (the official script would divide by zero there). Returns
    ``([], None)`` when every r leaves no pair.

    Example:
        chosen/rejected word lengths (4, 10), (10, 10), (12, 10): at r = 0 only the last two
        stay (gap |11 - 10| / 10 = 0.1); from r = 0.6 all three stay (gap |26/3 - 10| / 10 = 0.13),
        so r = 0 is kept.
    """
    cfg = cfg or PairConfig()
    best: tuple[float, float, list[PreferencePair]] | None = None
    short = [_shortening(p) for p in pairs]
    for r in cfg.ratios():
        kept = [p for p, s in zip(pairs, short) if s <= r + 1e-12]
        gap = _length_gap(kept)
        if gap != float("inf") and (best is None or gap < best[0]):
            best = (gap, r, kept)
    return ([], None) if best is None else (best[2], best[1])


def build_pairs(scored: Sequence[ScoredCandidate], cfg: PairConfig | None = None, images: dict[str, Any] | None = None, instructions: dict[str, str] | None = None) -> PairResult:
    """Preference pairs from scored candidates, in the official order: pair, cap per prompt, balance lengths.

    Within each prompt: every two candidates whose scores differ by >= ``min_margin`` (the higher
    is chosen); candidates with score None never paired; identical texts dropped (the official
    code drops them inside length balancing, which is the same pairs); optionally the
    claim-coverage rule; then at most ``max_pairs_per_prompt`` pairs at random (seeded per prompt).
    Then :func:`length_balance` runs over all prompts' pairs together. An empty result is not an
    error here; :func:`require_pairs` turns it into one.

    Args:
        scored: scored candidates of any number of prompts (``feedback.score_candidates``).
        cfg: the settings; defaults to the official ones.
        images: prompt id -> image (PIL image or path), attached to each pair for training.
        instructions: prompt id -> instruction text, attached to each pair.
    """
    cfg = cfg or PairConfig()
    images, instructions = images or {}, instructions or {}
    by_prompt: dict[str, list[ScoredCandidate]] = defaultdict(list)
    for s in scored:
        by_prompt[s.prompt_id].append(s)
    capped: list[PreferencePair] = []
    prompts: dict[str, PromptPairing] = {}
    for pid, cands in by_prompt.items():
        pairs, prompts[pid] = _prompt_pairs(pid, cands, cfg, images, instructions)
        capped += pairs
    kept, ratio = length_balance(capped, cfg) if cfg.length_balance and capped else (list(capped), None)
    per_prompt = Counter(p.prompt_id for p in kept)
    for pid, info in prompts.items():
        info.n_kept = per_prompt.get(pid, 0)
        if info.n_capped and not info.n_kept:
            info.reason = "length_filtered"
    return PairResult(kept, list(capped), prompts, ratio, cfg)


def require_pairs(result: PairResult | Sequence[PreferencePair]) -> list[PreferencePair]:
    """The pairs of ``result``; ``NoPairsError`` explaining why when there are none."""
    pairs = list(result.pairs if isinstance(result, PairResult) else result)
    if pairs:
        return pairs
    why = result.reason if isinstance(result, PairResult) else "the pair list is empty"
    counts = result.reason_counts() if isinstance(result, PairResult) else {}
    if counts and set(counts) <= {"all_tied", "no_claims", "one_scored", "below_margin", "identical_texts"}:
        fix = (
            "all candidates of every prompt tied (or had no claims): sample more candidates per prompt "
            "(raise SamplingConfig.n) or raise the temperature so that candidates differ"
        )
    else:
        fix = (
            "raise SamplingConfig.n or the temperature, use more prompts, lower PairConfig.min_margin, or "
            "turn off require_claim_coverage / length_balance"
        )
    raise NoPairsError(f"no preference pairs could be built ({why}). Fix: {fix}.")


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _lengths(pairs: Sequence[PreferencePair]) -> dict[str, float | None]:
    return {
        "mean_chosen_words": _mean([word_length(p.chosen) for p in pairs]),
        "mean_rejected_words": _mean([word_length(p.rejected) for p in pairs]),
    }


def pair_stats(result: PairResult) -> dict[str, Any]:
    """JSON-friendly summary: pairs per prompt, margins, lengths before/after balancing, r, reasons."""
    per_prompt = [info.n_kept for info in result.prompts.values()]
    margins = [p.margin for p in result.pairs]
    n = len(per_prompt)
    return {
        "n_prompts": n,
        "n_pairs": len(result.pairs),
        "n_eligible": sum(i.n_eligible for i in result.prompts.values()),
        "n_before_balance": len(result.before_balance),
        "pairs_per_prompt": dict(sorted(Counter(per_prompt).items())),
        "share_prompts_with_pair": sum(k > 0 for k in per_prompt) / n if n else 0.0,
        "margins": margins,
        "margin_hist": dict(sorted(Counter(margins).items())),
        "length_before": _lengths(result.before_balance),
        "length_after": _lengths(result.pairs),
        "length_ratio": result.length_ratio,
        "reasons": dict(sorted(result.reason_counts().items())),
    }


def to_trl_dataset(pairs: PairResult | Sequence[PreferencePair]) -> Dataset:
    """Pairs -> a ``datasets.Dataset`` in TRL's conversational vision preference format.

    Columns ``images`` ([PIL image]), ``prompt`` (user turn: image + instruction), ``chosen`` and
    ``rejected`` (assistant turns), plus ``prompt_id``, ``chosen_id``, ``rejected_id``, ``margin``,
    ``chosen_score``, ``rejected_score`` (``dpo`` keeps only the first four for training).

    Example:
        ``to_trl_dataset(build_pairs(scored, images=images, instructions=instructions))[0]["chosen"]`` is
        ``[{"role": "assistant", "content": [{"type": "text", "text": "there is a red circle ."}]}]``.
    """
    pairs = list(pairs.pairs if isinstance(pairs, PairResult) else pairs)
    if not pairs:
        require_pairs(pairs)
    rows = []
    for p in pairs:
        if p.image is None or not p.instruction:
            raise DatasetSchemaError(
                f"pair of prompt {p.prompt_id!r} has no image or no instruction; DPO needs both. Pass images= and "
                "instructions= to build_pairs (or load_pairs), keyed by prompt id."
            )
        rows.append({
            "images": [load_image(p.image)],
            "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p.instruction}]}],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": p.chosen}]}],
            "rejected": [{"role": "assistant", "content": [{"type": "text", "text": p.rejected}]}],
            "prompt_id": p.prompt_id,
            "chosen_id": p.chosen_id,
            "rejected_id": p.rejected_id,
            "margin": float(p.margin),
            "chosen_score": float(p.chosen_score),
            "rejected_score": float(p.rejected_score),
        })  # fmt: skip
    return Dataset.from_list(rows)


def save_pairs(path: str | os.PathLike, pairs: PairResult | Sequence[PreferencePair]) -> None:
    """Write pairs as JSON Lines (atomically); an image is kept only as a path, else re-attached by prompt id."""
    pairs = pairs.pairs if isinstance(pairs, PairResult) else pairs
    rows = []
    for p in pairs:
        image = str(p.image) if isinstance(p.image, (str, os.PathLike)) else None
        rows.append(PreferencePair(**{**vars(p), "image": image}))
    write_jsonl(path, rows)


def load_pairs(path: str | os.PathLike, images: dict[str, Any] | None = None, instructions: dict[str, str] | None = None) -> list[PreferencePair]:
    """Read pairs written by :func:`save_pairs`, re-attaching images and instructions by prompt id."""
    pairs = read_jsonl(path, PreferencePair)
    for p in pairs:
        if images and p.prompt_id in images:
            p.image = images[p.prompt_id]
        if instructions and p.prompt_id in instructions:
            p.instruction = instructions[p.prompt_id]
    return pairs
