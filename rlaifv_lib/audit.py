"""Auditing the AI feedback against the toy world's exact ground truth (RLAIF-V, Sec. 3.2 and 4.3).

The paper can only estimate how often its labeler is right (by human checks of a sample); the
toy world knows every answer. Three audits, pure Python, no model:

- :func:`labeler_audit`: every verdict against the true answer of its claim's question. The
  positive class is "claim rejected" against "claim truly false", so precision of rejections =
  how many rejected claims were really false, recall = how many false claims were caught.
- :func:`score_audit`: each response's score against its true number of false claims
  (a perfect labeler gives score = -true_false_claims, correlation -1).
- :func:`pair_audit`: how often the chosen response really hallucinates less than the rejected
  one — in objects (a mentioned shape absent from the scene, repeats counted as in CHAIR_i)
  and in false claims of any kind — and what each pair teaches (:data:`PAIR_OUTCOMES`).

:func:`compare_with_perfect_labeler` builds the pairs a perfect labeler would build from the same
candidates and audits both sets side by side: the control that separates the labeler's errors
from what the pairing rule and the world's mix of hallucinations allow.

Scenes are given as a dict prompt id -> ``toyworld.scenes.Scene``; a candidate id is
``<prompt_id>/c<index>`` (``records.Candidate.id``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Sequence

from .feedback import score_candidates
from .hallucination import toy_mentions
from .pairs import PairConfig, build_pairs, pair_stats
from .records import Candidate, Claim, PreferencePair, ScoredCandidate, Verdict, prompt_of
from .toyworld.grammar import parse_question, true_answer
from .toyworld.scenes import Scene

__all__ = [
    "PAIR_OUTCOMES",
    "truth_verdicts",
    "prompt_of",
    "claim_truth",
    "audit_rows",
    "rejection_metrics",
    "labeler_audit",
    "score_audit",
    "pair_audit",
    "full_audit",
    "pair_outcome",
    "compare_with_perfect_labeler",
    "pearson",
]

# what a pair teaches, judged against the truth (pair_audit's "outcomes"), and what each means
PAIR_OUTCOMES: dict[str, str] = {
    "fewer_objects": "the chosen response names fewer absent objects than the rejected one",
    "fewer_attribute_errors": "as many absent objects; the chosen makes fewer false claims (size, colour, position)",
    "no_true_difference": "as many absent objects and as many false claims: the margin came from labeler errors",
    "wrong_way": "the chosen names more absent objects, or as many and makes more false claims",
}


def _scene(scenes: dict[str, Scene], prompt_id: str) -> Scene:
    """The scene of a prompt; a clear ``KeyError`` when it was not given."""
    if prompt_id not in scenes:
        raise KeyError(f"no scene for prompt {prompt_id!r}; pass scenes keyed by prompt id (Prompt.id).")
    return scenes[prompt_id]


def claim_truth(claim: Claim, scenes: dict[str, Scene]) -> bool | None:
    """Whether a claim is true in its scene; None when its question is not a toy-world question."""
    if parse_question(claim.question) is None:
        return None
    return true_answer(_scene(scenes, prompt_of(claim.candidate_id)), claim.question)


def truth_verdicts(claims: Sequence[Claim], scenes: dict[str, Scene]) -> list[Verdict]:
    """Verdicts of a perfect labeler: each claim accepted iff it is true in its scene (p_yes = 1 or 0)."""
    out = []
    for c in claims:
        t = bool(claim_truth(c, scenes))
        out.append(Verdict(c.id, float(t), 1.0 - float(t), t))
    return out


def audit_rows(claims: Sequence[Claim], verdicts: Sequence[Verdict], scenes: dict[str, Scene]) -> list[dict[str, Any]]:
    """One row per judged toy claim: ids, kind, question, truth, the labeler's verdict and P(yes)."""
    by_claim = {v.claim_id: v for v in verdicts}
    rows = []
    for c in claims:
        v = by_claim.get(c.id)
        truth = claim_truth(c, scenes)
        if v is None or truth is None:
            continue
        rows.append({
            "claim_id": c.id, "candidate_id": c.candidate_id, "prompt_id": prompt_of(c.candidate_id),
            "kind": c.kind, "question": c.question, "truth": truth, "accepted": v.accepted, "p_yes": v.p_yes,
        })  # fmt: skip
    return rows


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def rejection_metrics(rows: Sequence[dict]) -> dict[str, Any]:
    """Accuracy, and precision/recall/F1 of rejections (positive = rejected vs truly false), with counts."""
    tp = sum(not r["accepted"] and not r["truth"] for r in rows)  # rejected, truly false
    fp = sum(not r["accepted"] and r["truth"] for r in rows)  # rejected, truly true
    fn = sum(r["accepted"] and not r["truth"] for r in rows)  # accepted, truly false
    tn = sum(r["accepted"] and r["truth"] for r in rows)  # accepted, truly true
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = None if precision is None or recall is None else (2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return {
        "n": len(rows), "accuracy": _ratio(tp + tn, len(rows)),
        "precision_reject": precision, "recall_reject": recall, "f1_reject": f1,
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }  # fmt: skip


def labeler_audit(claims: Sequence[Claim], verdicts: Sequence[Verdict], scenes: dict[str, Scene]) -> dict[str, Any]:
    """The labeler's verdicts against ground truth: overall metrics, per claim kind, and skipped counts.

    Claims without a verdict, or whose question is not a toy-world question (e.g. from the
    rule-based decomposer), are not audited; ``n_skipped`` counts them. Metrics with an empty
    denominator are None.
    """
    rows = audit_rows(claims, verdicts, scenes)
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_kind[r["kind"]].append(r)
    return {
        **rejection_metrics(rows),
        "n_skipped": len(claims) - len(rows),
        "per_kind": {k: rejection_metrics(v) for k, v in sorted(by_kind.items())},
    }


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson correlation; None with fewer than two points or a constant variable."""
    n = len(xs)
    if n < 2 or n != len(ys):
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def _false_claims(claims: Sequence[Claim], scenes: dict[str, Scene]) -> dict[str, int]:
    """Candidate id -> number of its toy claims that are truly false."""
    out: dict[str, int] = defaultdict(int)
    for c in claims:
        out[c.candidate_id] += claim_truth(c, scenes) is False
    return out


def score_audit(scored: Sequence[ScoredCandidate], claims: Sequence[Claim], scenes: dict[str, Scene]) -> dict[str, Any]:
    """Each scored response's score vs its true number of false claims, and their Pearson correlation.

    Responses with no score (no claims) are left out. ``exact_share`` is the share whose score
    equals -(true false claims), i.e. the labeler rejected exactly as many claims as were false.
    """
    false = _false_claims(claims, scenes)
    points = [(float(s.score), int(false.get(s.candidate_id, 0))) for s in scored if s.score is not None]
    return {
        "points": points,
        "n": len(points),
        "correlation": pearson([p[0] for p in points], [p[1] for p in points]),
        "exact_share": _ratio(sum(s == -f for s, f in points), len(points)),
    }


def _hallucinated_objects(text: str, scene: Scene) -> int:
    """Mentions of shapes absent from the scene (repeats counted, as CHAIR_i does)."""
    return sum(m not in scene.shapes for m in toy_mentions(text))


def _shares(rows: Sequence[dict], chosen: str, rejected: str) -> dict[str, float | None]:
    """Shares of rows where the chosen value is lower, equal or higher than the rejected one."""
    n = len(rows)
    return {
        "fewer": _ratio(sum(r[chosen] < r[rejected] for r in rows), n),
        "equal": _ratio(sum(r[chosen] == r[rejected] for r in rows), n),
        "more": _ratio(sum(r[chosen] > r[rejected] for r in rows), n),
    }


def pair_outcome(row: dict[str, Any]) -> str:
    """The :data:`PAIR_OUTCOMES` key of one ``pair_audit`` row (it needs the false-claim counts)."""
    objects = row["rejected_hall_objects"] - row["chosen_hall_objects"]
    false = row["rejected_false_claims"] - row["chosen_false_claims"]
    if objects > 0:
        return "fewer_objects"
    if objects < 0 or false < 0:
        return "wrong_way"
    return "fewer_attribute_errors" if false > 0 else "no_true_difference"


def pair_audit(pairs: Sequence[PreferencePair], scenes: dict[str, Scene], claims: Sequence[Claim] | None = None) -> dict[str, Any]:
    """How often the chosen response truly hallucinates less than the rejected one.

    ``objects``: shares of pairs whose chosen text has fewer / as many / more hallucinated object
    mentions than the rejected text. ``claims`` (only when ``claims`` are given, matched through
    ``chosen_id``/``rejected_id``): the same for truly false claims of any kind, and
    ``outcomes``: the share of pairs with each :data:`PAIR_OUTCOMES` key. ``rows`` holds the
    per-pair counts (and each pair's outcome).
    """
    false = _false_claims(claims, scenes) if claims is not None else None
    rows = []
    for p in pairs:
        scene = _scene(scenes, p.prompt_id)
        row = {
            "prompt_id": p.prompt_id, "chosen_id": p.chosen_id, "rejected_id": p.rejected_id, "margin": p.margin,
            "chosen_hall_objects": _hallucinated_objects(p.chosen, scene),
            "rejected_hall_objects": _hallucinated_objects(p.rejected, scene),
        }  # fmt: skip
        if false is not None:
            row["chosen_false_claims"] = false.get(p.chosen_id, 0)
            row["rejected_false_claims"] = false.get(p.rejected_id, 0)
            row["outcome"] = pair_outcome(row)
        rows.append(row)
    out: dict[str, Any] = {"n": len(rows), "objects": _shares(rows, "chosen_hall_objects", "rejected_hall_objects")}
    out["share_fewer_hallucinated_objects"] = out["objects"]["fewer"]
    if false is not None:
        out["claims"] = _shares(rows, "chosen_false_claims", "rejected_false_claims")
        out["share_fewer_false_claims"] = out["claims"]["fewer"]
        out["outcomes"] = {k: _ratio(sum(r["outcome"] == k for r in rows), len(rows)) for k in PAIR_OUTCOMES}
    out["rows"] = rows
    return out


def full_audit(claims: Sequence[Claim], verdicts: Sequence[Verdict], scored: Sequence[ScoredCandidate], pairs: Sequence[PreferencePair], scenes: dict[str, Scene]) -> dict[str, Any]:
    """The three audits of one round at once: ``labeler``, ``scores`` and ``pairs``."""
    return {
        "labeler": labeler_audit(claims, verdicts, scenes),
        "scores": score_audit(scored, claims, scenes),
        "pairs": pair_audit(pairs, scenes, claims),
    }


def _pairing_summary(candidates: Sequence[Candidate], claims: Sequence[Claim], verdicts: Sequence[Verdict], scenes: dict[str, Scene], cfg: PairConfig) -> dict[str, Any]:
    """Pairs built from one set of verdicts, with their yield, lengths and truth audit."""
    result = build_pairs(score_candidates(candidates, claims, verdicts), cfg)
    stats, audit = pair_stats(result), pair_audit(result.pairs, scenes, claims)
    return {
        "n_pairs": stats["n_pairs"],
        "share_prompts_with_pair": stats["share_prompts_with_pair"],
        "share_fewer_hallucinated_objects": audit["share_fewer_hallucinated_objects"],
        "share_fewer_false_claims": audit["share_fewer_false_claims"],
        "outcomes": audit["outcomes"],
        "length_ratio": stats["length_ratio"],
        **stats["length_after"],
    }


def compare_with_perfect_labeler(candidates: Sequence[Candidate], claims: Sequence[Claim], verdicts: Sequence[Verdict], scenes: dict[str, Scene], cfg: PairConfig | None = None) -> dict[str, dict[str, Any]]:
    """The pairs of ``verdicts`` and of a perfect labeler on the same candidates, audited side by side.

    Returns ``{"labeler": summary, "perfect labeler": summary}``; each summary holds the pair
    count, the share of prompts with a pair, the shares of pairs whose chosen response has fewer
    hallucinated objects / fewer false claims, the :data:`PAIR_OUTCOMES` shares, the length
    balancing threshold and the mean chosen and rejected lengths after it.
    """
    cfg = cfg or PairConfig()
    return {
        "labeler": _pairing_summary(candidates, claims, verdicts, scenes, cfg),
        "perfect labeler": _pairing_summary(candidates, claims, truth_verdicts(claims, scenes), scenes, cfg),
    }
