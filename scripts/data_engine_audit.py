"""Audit one pass of the RLAIF-V data engine against the toy world's ground truth.

Samples N candidates for held-out prompts from the committed policy, decomposes them into toy
claims, lets the policy label itself (or a separate labeler), builds pairs with the official
rules, and prints the labeler audit, pair yield, pair correctness and length balance — next to
the same pairing done by a perfect labeler on the same candidates (the control: what the
pairing rule and the world's mix of hallucinations allow).

    python scripts/data_engine_audit.py [--prompts 100] [--n 10] [--seed 0] [--labeler toy-labeler] [--plot outcomes.png]
"""

from __future__ import annotations

import argparse
import json

import torch

from rlaifv_lib.audit import PAIR_OUTCOMES, compare_with_perfect_labeler, labeler_audit
from rlaifv_lib.claims import ToyDecomposer
from rlaifv_lib.engine import EngineSettings, run_pass
from rlaifv_lib.models import load_model
from rlaifv_lib.plots import pair_outcome_bars, save_figure
from rlaifv_lib.records import Prompt
from rlaifv_lib.sampling import SamplingConfig
from rlaifv_lib.toyworld import INSTRUCTIONS, evaluation_scenes, render_scene

_ROWS = (
    ("pairs", "n_pairs", "{:d}"),
    ("share of prompts with a pair", "share_prompts_with_pair", "{:.3f}"),
    ("chosen: fewer hallucinated objects", "share_fewer_hallucinated_objects", "{:.3f}"),
    ("chosen: fewer false claims", "share_fewer_false_claims", "{:.3f}"),
    *((f"outcome: {k.replace('_', ' ')}", ("outcomes", k), "{:.3f}") for k in PAIR_OUTCOMES),
    ("length balancing r", "length_ratio", "{:.2f}"),
    ("mean chosen words", "mean_chosen_words", "{:.1f}"),
    ("mean rejected words", "mean_rejected_words", "{:.1f}"),
)


def _cell(summary: dict, key: str | tuple[str, str], fmt: str) -> str:
    value = summary[key[0]][key[1]] if isinstance(key, tuple) else summary[key]
    return "-" if value is None else fmt.format(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="toy-policy")
    ap.add_argument("--labeler", default=None, help="default: the policy labels itself")
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="sampling seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plot", default=None, help="write the pair-outcome figure here (.png, .svg, .pdf)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    labeler = None if args.labeler is None else load_model(args.labeler)
    scenes = {s.id: s for s in evaluation_scenes(args.prompts)}
    prompts = [Prompt(s.id, render_scene(s), INSTRUCTIONS[0]) for s in scenes.values()]
    settings = EngineSettings(sampling=SamplingConfig(n=args.n, batch_size=200, seed=args.seed))
    data = run_pass(prompts, load_model(args.policy), labeler, ToyDecomposer(), settings, pairs=False)
    cands, claims, verdicts = data.candidates, data.claims, data.verdicts
    lab = labeler_audit(claims, verdicts, scenes)
    side = compare_with_perfect_labeler(cands, claims, verdicts, scenes)
    report = {
        "labeler_accuracy": lab["accuracy"],
        "rejection_precision": lab["precision_reject"],
        "rejection_recall": lab["recall_reject"],
        "per_kind_accuracy": {k: v["accuracy"] for k, v in lab["per_kind"].items()},
        **side,
    }
    print(json.dumps(report, indent=2))
    name = "self-feedback" if args.labeler is None else args.labeler
    print(f"\n{args.prompts} held-out prompts x {args.n} candidates; labeler accuracy {lab['accuracy']:.3f}, "
          f"rejection precision {lab['precision_reject']:.3f}, recall {lab['recall_reject']:.3f}\n")  # fmt: skip
    print(f"{'':36} {name:>14} {'perfect labeler':>16}")
    for label, key, fmt in _ROWS:
        print(f"{label:36} {_cell(side['labeler'], key, fmt):>14} {_cell(side['perfect labeler'], key, fmt):>16}")
    if args.plot:
        print("wrote", save_figure(pair_outcome_bars({name: side["labeler"], "perfect labeler": side["perfect labeler"]}), args.plot))


if __name__ == "__main__":
    main()
