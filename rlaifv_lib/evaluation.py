"""Evaluating a policy on any prompts, without a toy world's truth (Object HalBench-style, plus a fixed judge).

Two kinds of numbers, always with their counts:

- **Object hallucination**, when the prompts carry ``objects`` (the names of what is in each image):
  CHAIR_i, CHAIR_s, Object HalBench's response-level rate over the responses that mention an object
  (``chair_s_halbench``) and coverage, through ``metrics_coco.coco_chair`` over a vocabulary made of every
  object name of the prompts (``metrics_coco.object_vocab``: COCO synonyms where a name is a COCO category).
  When no response mentions any object, the rates are None and ``n_responses_with_objects`` says 0.
- **The fixed judge**: every response is split into claims (the run's decomposer) and a *fixed* model — the
  same for every round, named in ``judge`` — answers each claim's yes/no question; ``judge_rejection_rate``
  is the share it rejects (None when there are no claims). Also ``claims_per_response`` and ``mean_words``.
"""

from __future__ import annotations

from typing import Any, Sequence

from .claims import Decomposer
from .engine import ModelRef, label, run_pass
from .hallucination import EvalConfig
from .metrics_coco import coco_chair, object_vocab
from .records import Candidate, Claim, Prompt, Verdict

__all__ = ["OBJECT_KEYS", "object_metrics", "judge_metrics", "text_metrics", "evaluate_prompts"]

OBJECT_KEYS = ("chair_i", "chair_s", "chair_s_halbench", "coverage")


def object_metrics(prompts: Sequence[Prompt], texts: Sequence[str]) -> dict[str, Any]:
    """CHAIR_i, CHAIR_s, CHAIR_s over responses with objects, coverage and counts, over the prompts with ``objects``.

    Empty when no prompt has ``objects``; the rates are None when no response mentions an object.
    """
    known = [(p, t) for p, t in zip(prompts, texts, strict=True) if p.objects]
    if not known:
        return {}
    vocab = object_vocab(name for p, _ in known for name in p.objects or [])
    m = coco_chair([t for _, t in known], [p.objects for p, _ in known], vocab)
    out = {k: m[k] for k in ("chair_i", "chair_s", "chair_s_halbench", "coverage", "n_mentions", "n_hallucinated", "n_responses_with_objects")}
    out["n_responses_with_truth"] = len(known)
    if m["n_mentions"] == 0:  # a rate over nothing: say that nothing was mentioned instead
        out.update(chair_i=None, chair_s=None, chair_s_halbench=None)
    return out


def judge_metrics(candidates: Sequence[Candidate], claims: Sequence[Claim], verdicts: Sequence[Verdict], judge: str) -> dict[str, Any]:
    """The fixed judge's rejection rate over all claims, claims and words per response."""
    if not candidates:
        raise ValueError("no responses to evaluate")
    rejected = sum(not v.accepted for v in verdicts)
    return {
        "judge": judge,
        "judge_rejection_rate": rejected / len(verdicts) if verdicts else None,
        "n_claims": len(claims),
        "claims_per_response": len(claims) / len(candidates),
        "mean_words": sum(len(c.text.split()) for c in candidates) / len(candidates),
        "n_responses": len(candidates),
    }


def text_metrics(prompts: Sequence[Prompt], candidates: Sequence[Candidate], judge: ModelRef, judge_name: str, decomposer: Decomposer, cfg: EvalConfig | None = None, progress: bool = False) -> dict[str, Any]:
    """Object and judge metrics of one response per prompt (``candidates[i]`` answers ``prompts[i]``)."""
    cfg = cfg or EvalConfig()
    claims = decomposer.decompose_all(candidates, progress=progress)
    verdicts = label(judge, claims, prompts, cfg.engine_settings().feedback, progress)
    return _all_metrics(prompts, candidates, claims, verdicts, judge_name)


def _all_metrics(prompts: Sequence[Prompt], candidates: Sequence[Candidate], claims: Sequence[Claim], verdicts: Sequence[Verdict], judge_name: str) -> dict[str, Any]:
    texts = [c.text for c in candidates]
    return {**object_metrics(prompts, texts), **judge_metrics(candidates, claims, verdicts, judge_name), "texts": texts}


def evaluate_prompts(model: Any, processor: Any, prompts: Sequence[Prompt], judge: ModelRef | None, judge_name: str, decomposer: Decomposer, cfg: EvalConfig | None = None, progress: bool = False) -> dict[str, Any]:
    """Held-out metrics of a policy on any prompts: one sampled description each, object metrics where the prompts
    name their objects, and the fixed ``judge``'s rejection rate (None = the policy judges itself)."""
    cfg = cfg or EvalConfig()
    data = run_pass(prompts, (model, processor), judge, decomposer, cfg.engine_settings(), progress=progress, pairs=False)
    return _all_metrics(prompts, data.candidates, data.claims, data.verdicts, judge_name)
