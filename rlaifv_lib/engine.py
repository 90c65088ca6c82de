"""One pass of the RLAIF-V data engine (paper Sec. 3): prompts -> candidates -> claims -> verdicts -> scores -> pairs.

    prompts ─► sample N candidates (policy) ─► divide: claims (decomposer) ─► conquer: verdicts (labeler)
            ─► scores = -(rejected claims) ─► pairs (margin, cap, length balancing)

:func:`run_pass` is the one place where these steps are chained: the k-round pipeline, the held-out
evaluation (``hallucination.evaluate_policy``), the labeler audit script, the feedback benchmark and the
notebooks all call it (or its :func:`label` step). The labeler is the policy itself unless a separate one
is given (self-feedback vs. a separate labeler). Models can be given as ``(model, processor)`` or as a
function that loads them, so a resumed pass loads nothing it does not need.

With a ``store`` (the run directory's stage cache, see ``pipeline.RLAIFVRun``) every step's artifact is
read when it already exists and written when it is computed: ``candidates.jsonl``, ``claims.jsonl``,
``verdicts.jsonl``, ``scored.jsonl``, ``pair_stats.json`` and ``pairs.jsonl``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, Union

from .claims import ClaimsConfig, Decomposer, make_decomposer
from .feedback import FeedbackConfig, response_scores, score_candidates, score_claims, score_responses
from .pairs import PairConfig, build_pairs, pair_stats
from .records import Candidate, Claim, PreferencePair, Prompt, ScoredCandidate, Verdict, prompt_of
from .sampling import SamplingConfig, sample_candidates

__all__ = ["ModelRef", "EngineSettings", "EnginePass", "Store", "models_of", "label", "run_pass"]

ModelRef = Union[tuple[Any, Any], Callable[[], tuple[Any, Any]]]  # (model, processor), or a function loading them


@dataclass
class EngineSettings:
    """Settings of one data-engine pass (the four steps' configs).

    Args:
        sampling (SamplingConfig): candidates per prompt, temperature, seed, ...
        claims (ClaimsConfig): the divide step (which decomposer).
        feedback (FeedbackConfig): the conquer step (batch size, question suffix).
        pairs (PairConfig): pair construction (margin, cap per prompt, length balancing, seed).
    """

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    claims: ClaimsConfig = field(default_factory=ClaimsConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    pairs: PairConfig = field(default_factory=PairConfig)


@dataclass
class EnginePass:
    """Everything one pass produced (``pairs`` and ``pair_stats`` empty when the pass stopped at the scores)."""

    prompts: list[Prompt]
    candidates: list[Candidate]
    claims: list[Claim]
    verdicts: list[Verdict]
    scored: list[ScoredCandidate]
    pairs: list[PreferencePair] = field(default_factory=list)
    pair_stats: dict | None = None


class Store(Protocol):
    """Where a pass keeps its artifacts: ``stage`` reads a finished artifact or computes and writes it."""

    def stage(self, name: str, compute: Callable[[], list], cls: type | None) -> list:
        """The records of artifact ``name``: read when finished, else ``compute()``d and written."""

    def write_json(self, name: str, obj: Any) -> None:
        """Write one JSON document ``name``."""


def models_of(ref: ModelRef) -> tuple[Any, Any]:
    """``(model, processor)`` of a model reference (calls the loader when it is one)."""
    return ref() if callable(ref) else ref


def label(labeler: ModelRef, claims: Sequence[Claim], prompts: Sequence[Prompt], cfg: FeedbackConfig | None = None, progress: bool = True) -> list[Verdict]:
    """The labeler's verdict on every claim, each asked about its own prompt's image (the conquer step)."""
    owner = {c.candidate_id: prompt_of(c.candidate_id) for c in claims}
    return score_claims(*models_of(labeler), claims, {p.id: p.image for p in prompts}, owner, cfg, progress)


class _Memory:
    """The store of a pass without a run directory: computes everything."""

    def stage(self, name: str, compute: Callable[[], list], cls: type | None) -> list:
        return compute()

    def write_json(self, name: str, obj: Any) -> None:
        pass


def run_pass(prompts: Sequence[Prompt], policy: ModelRef, labeler: ModelRef | None = None, decomposer: Decomposer | None = None,
             settings: EngineSettings | None = None, store: Store | None = None, progress: bool = True, pairs: bool = True) -> EnginePass:  # fmt: skip
    """One pass of the data engine over ``prompts``.

    Args:
        prompts: the (image, instruction) prompts.
        policy: the model that samples the candidates, as ``(model, processor)`` or a loader.
        labeler: the model that judges the claims; None = the policy (self-feedback).
        decomposer: the divide step; None = ``claims.make_decomposer(settings.claims)`` (toy or rules).
        settings: the four steps' settings (:class:`EngineSettings`).
        store: the run directory's stage cache; None keeps everything in memory.
        progress: show progress bars.
        pairs: build the preference pairs (False stops after the scores, e.g. for evaluation).
    """
    settings = settings or EngineSettings()
    store = store or _Memory()
    decomposer = decomposer or make_decomposer(settings.claims)
    prompts = list(prompts)
    cands = store.stage("candidates.jsonl", lambda: sample_candidates(*models_of(policy), prompts, settings.sampling, progress), Candidate)
    claims = store.stage("claims.jsonl", lambda: decomposer.decompose_all(cands, progress=progress), Claim)
    judge = policy if labeler is None else labeler
    if settings.feedback.unit == "response":  # the ablation's whole-response scoring; the claims are kept for audits
        images = {p.id: p.image for p in prompts}
        verdicts = store.stage("verdicts.jsonl", lambda: score_responses(*models_of(judge), cands, images, settings.feedback, progress), Verdict)
        scored = store.stage("scored.jsonl", lambda: response_scores(cands, claims, verdicts), ScoredCandidate)
    else:
        verdicts = store.stage("verdicts.jsonl", lambda: label(judge, claims, prompts, settings.feedback, progress), Verdict)
        scored = store.stage("scored.jsonl", lambda: score_candidates(cands, claims, verdicts), ScoredCandidate)
    out = EnginePass(prompts, cands, claims, verdicts, scored)
    if pairs:
        out.pairs, out.pair_stats = _pairs(scored, prompts, settings.pairs, store)
    return out


def _pairs(scored: list[ScoredCandidate], prompts: list[Prompt], cfg: PairConfig, store: Store) -> tuple[list[PreferencePair], dict | None]:
    """The pairs (and their statistics when computed now); image paths are kept on the pairs, images in memory not."""
    stats: list[dict] = []

    def compute() -> list[PreferencePair]:
        files = {p.id: str(p.image) for p in prompts if isinstance(p.image, (str, os.PathLike))}
        result = build_pairs(scored, cfg, images=files or None, instructions={p.id: p.instruction for p in prompts})
        stats.append(pair_stats(result))
        store.write_json("pair_stats.json", stats[0])
        return result.pairs

    pairs = store.stage("pairs.jsonl", compute, PreferencePair)
    return pairs, (stats[0] if stats else None)
