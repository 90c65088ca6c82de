"""Audit one pass of the RLAIF-V data engine against the toy world's ground truth.

Samples N candidates for held-out prompts from the committed policy, decomposes them into toy
claims, lets the policy label itself (or a separate labeler), builds pairs with the official
rules, and prints the labeler audit, pair yield, pair correctness and length balance.

    python scripts/data_engine_audit.py [--prompts 100] [--n 10] [--labeler toy-labeler]
"""

from __future__ import annotations

import argparse
import json

import torch

from rlaifv_lib.audit import full_audit
from rlaifv_lib.claims import ToyDecomposer
from rlaifv_lib.feedback import score_candidates, score_claims
from rlaifv_lib.models import load_model
from rlaifv_lib.pairs import PairConfig, build_pairs, pair_stats
from rlaifv_lib.records import Prompt
from rlaifv_lib.sampling import SamplingConfig, sample_candidates
from rlaifv_lib.toyworld import INSTRUCTIONS, evaluation_scenes, render_scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="toy-policy")
    ap.add_argument("--labeler", default=None, help="default: the policy labels itself")
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    policy = load_model(args.policy)
    labeler = policy if args.labeler is None else load_model(args.labeler)
    scenes = {s.id: s for s in evaluation_scenes(args.prompts)}
    prompts = [Prompt(s.id, render_scene(s), INSTRUCTIONS[0]) for s in scenes.values()]
    cands = sample_candidates(*policy, prompts, SamplingConfig(n=args.n, batch_size=200))
    claims = ToyDecomposer().decompose_all(cands)
    owner = {c.id: c.prompt_id for c in cands}
    verdicts = score_claims(*labeler, claims, {p.id: p.image for p in prompts}, owner)
    scored = score_candidates(cands, claims, verdicts)
    result = build_pairs(scored, PairConfig(), instructions={p.id: INSTRUCTIONS[0] for p in prompts})
    audit = full_audit(claims, verdicts, scored, result.pairs, scenes)
    stats = pair_stats(result)
    lab, pairs = audit["labeler"], audit["pairs"]
    report = {
        "labeler_accuracy": lab["accuracy"],
        "rejection_precision": lab["precision_reject"],
        "rejection_recall": lab["recall_reject"],
        "share_prompts_with_pair": stats["share_prompts_with_pair"],
        "n_pairs": stats["n_pairs"],
        "share_pairs_chosen_fewer_hallucinated_objects": pairs["share_fewer_hallucinated_objects"],
        "share_pairs_chosen_fewer_false_claims": pairs.get("share_fewer_false_claims"),
        "pairs_by_hallucinated_objects": pairs["objects"],
        "length_ratio_r": stats["length_ratio"],
        "mean_chosen_words": stats["length_after"]["mean_chosen_words"],
        "mean_rejected_words": stats["length_after"]["mean_rejected_words"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
