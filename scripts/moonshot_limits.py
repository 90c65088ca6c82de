"""What limits best-of-N on the tuned policy: the same N samples picked by five rules, checked against the truth.

For each finished run (e.g. the seeds of ``rlaifv run --config configs/moonshot.yaml --seeds 3``) this
re-draws the tuned policy's best-of-N candidates exactly as the run did (same sampling seed; the reward pick's
metrics are checked against ``tuned_best_of_n.json``), then picks one per held-out scene by

- ``reward``: the final policy's DPO implicit reward against the starting policy (what the run reports),
- ``loglik``: the final policy's length-normalised log-likelihood,
- ``random``: a seeded random pick (what sampling once gives),
- ``labeler``: the run's own feedback at inference — toy claims, the final policy labelling them (self-feedback),
  fewest rejected claims (ties: implicit reward),
- ``oracle``: the truth — fewest hallucinated objects, then most true objects named (the ceiling at this N),

and prints CHAIR_i (and its cut from the run's baseline), coverage and words per rule, how often each rule's pick
has the scene's fewest hallucinated objects (on scenes whose candidates differ), the mean within-scene rank
correlation of each score with -(hallucinated objects), and the labeler's recall/precision on false claims.

    python scripts/moonshot_limits.py runs/moonshot runs/moonshot-seed1 runs/moonshot-seed2 [--threads 1] [--out limits.json]
    python scripts/moonshot_limits.py --results seed0.json seed1.json seed2.json   # print saved analyses together
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rlaifv_lib.audit import labeler_audit
from rlaifv_lib.claims import ToyDecomposer
from rlaifv_lib.engine import label
from rlaifv_lib.feedback import score_candidates
from rlaifv_lib.guidance import GuidanceConfig, best_of_n, score_for_guidance
from rlaifv_lib.hallucination import chair, toy_mentions
from rlaifv_lib.models import load_model, resolve_model
from rlaifv_lib.pipeline import config_from_dict
from rlaifv_lib.records import read_json
from rlaifv_lib.sampling import SamplingConfig, sample_candidates
from rlaifv_lib.sources import open_source, round_seed

RULES = ("reward", "loglik", "random", "labeler", "oracle")


def _ranks(values: list[float]) -> list[float]:
    """Average ranks (ties share their mean rank)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman rank correlation; None when either side is constant."""
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def analyse(run_dir: Path, progress: bool = True) -> dict:
    """The five picks of one finished run's tuned best-of-N candidates, and the ranking diagnostics."""
    cfg = config_from_dict(read_json(run_dir / "run.json")["config"])
    if not cfg.tuned_best_of_n or not cfg.toy:
        raise SystemExit(f"{run_dir}: needs a toy-world run with tuned_best_of_n (e.g. configs/moonshot.yaml)")
    reported = read_json(run_dir / "tuned_best_of_n.json")
    baseline = read_json(run_dir / "round_0" / "eval.json")
    source = open_source(None, None, cfg.eval_scenes, cfg.instructions)
    prompts = source.evaluation()[: cfg.best_of_n_prompts]
    scenes = source.scenes
    final, processor = load_model(str(run_dir / f"round_{cfg.rounds}" / "model"), options=cfg.load)
    base, _ = load_model(str(resolve_model(cfg.policy)), options=cfg.load)
    scfg = SamplingConfig(**{**asdict(cfg.sampling), "n": cfg.tuned_best_of_n, "seed": round_seed(cfg.seed, 0, "tuned_best_of_n")})
    cands = sample_candidates(final, processor, prompts, scfg, progress)
    scores = score_for_guidance(final, base, processor, prompts, cands, GuidanceConfig(beta=cfg.dpo.beta), progress)
    claims = ToyDecomposer().decompose_all(cands, progress=False)
    verdicts = label((final, processor), claims, prompts, cfg.feedback, progress)
    scored = score_candidates(cands, claims, verdicts)

    halluc = [len(set(toy_mentions(c.text)) - scenes[c.prompt_id].shapes) for c in cands]
    named_true = [len(set(toy_mentions(c.text)) & scenes[c.prompt_id].shapes) for c in cands]
    reward = [s.reward for s in scores]
    loglik = [s.loglik for s in scores]
    feedback = [(-1e9 if s.score is None else s.score) + 1e-3 * math.tanh(r) for s, r in zip(scored, reward)]  # ties: reward
    oracle = [-h + 1e-3 * t for h, t in zip(halluc, named_true)]
    pids = [c.prompt_id for c in cands]
    picks = {
        "reward": best_of_n(pids, reward), "loglik": best_of_n(pids, loglik), "random": best_of_n(pids, None, "random", cfg.seed),
        "labeler": best_of_n(pids, feedback), "oracle": best_of_n(pids, oracle),
    }  # fmt: skip
    truths = [scenes[p.id].shapes for p in prompts]
    out: dict = {"run": str(run_dir), "n": cfg.tuned_best_of_n, "prompts": len(prompts), "baseline_chair_i": baseline["chair_i"], "rules": {}}
    groups = {p.id: [i for i, pid in enumerate(pids) if pid == p.id] for p in prompts}
    varied = [idx for idx in groups.values() if len({halluc[i] for i in idx}) > 1]
    for rule, pick in picks.items():
        m = chair([cands[pick[p.id]].text for p in prompts], truths)
        hits = [halluc[pick[cands[idx[0]].prompt_id]] == min(halluc[i] for i in idx) for idx in varied]
        out["rules"][rule] = {
            "chair_i": m["chair_i"], "coverage": m["coverage"], "mean_words": m["mean_words"],
            "cut": None if m["chair_i"] is None or not baseline["chair_i"] else 1 - m["chair_i"] / baseline["chair_i"],
            "picks_fewest_hallucinated": statistics.fmean(hits) if hits else None,
        }  # fmt: skip
    out["chance_fewest_hallucinated"] = statistics.fmean(sum(halluc[i] == min(halluc[j] for j in idx) for i in idx) / len(idx) for idx in varied) if varied else None
    out["scenes_where_candidates_differ"] = len(varied)
    out["scenes_with_a_clean_candidate"] = sum(min(halluc[i] for i in idx) == 0 for idx in groups.values()) / len(groups)
    out["candidate_hallucination_rate"] = sum(h > 0 for h in halluc) / len(halluc)
    for name, values in (("reward", reward), ("loglik", loglik), ("labeler", [s.score for s in scored])):
        rhos = [spearman([values[i] if values[i] is not None else -1e9 for i in idx], [-halluc[i] for i in idx]) for idx in varied]
        rhos = [r for r in rhos if r is not None]
        out[f"spearman_{name}"] = statistics.fmean(rhos) if rhos else None
    audit = labeler_audit(claims, verdicts, scenes)
    out["labeler"] = {k: audit[k] for k in ("accuracy", "precision_reject", "recall_reject", "tp", "fn", "fp")}
    out["labeler_per_kind_recall"] = {k: v["recall_reject"] for k, v in audit["per_kind"].items()}
    out["check_reward_pick_matches_run"] = all(
        math.isclose(out["rules"]["reward"][k], reported[k]) for k in ("chair_i", "coverage", "mean_words") if reported.get(k) is not None
    )
    return out


def _pm(values: list[float | None], scale: float = 1.0, fmt: str = ".3f") -> str:
    have = [v * scale for v in values if v is not None]
    if not have:
        return "n/a"
    return format(statistics.fmean(have), fmt) + ("" if len(have) < 2 else "±" + format(statistics.stdev(have), fmt))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path, help="finished run directories made with tuned_best_of_n")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write every number as JSON here")
    ap.add_argument("--results", nargs="+", type=Path, default=[], help="also (or only) print the runs of earlier --out files")
    args = ap.parse_args()
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    results = [r for f in args.results for r in json.loads(f.read_text())] + [analyse(d) for d in tqdm(args.runs, desc="runs")]
    if not results:
        raise SystemExit("give run directories or --results files")
    n = results[0]["n"]
    print(f"\ntuned best-of-{n} on {results[0]['prompts']} held-out scenes, {len(results)} run(s); mean±std over runs")
    print(f"{'pick':<9}{'CHAIR_i':>14}{'cut %':>13}{'cover':>14}{'words':>12}{'fewest-hal':>13}")
    for rule in RULES:
        rows = [r["rules"][rule] for r in results]
        print(f"{rule:<9}{_pm([x['chair_i'] for x in rows]):>14}{_pm([x['cut'] for x in rows], 100, '.1f'):>13}{_pm([x['coverage'] for x in rows]):>14}"
              f"{_pm([x['mean_words'] for x in rows], 1, '.1f'):>12}{_pm([x['picks_fewest_hallucinated'] for x in rows]):>13}")  # fmt: skip
    for key, text in (
        ("chance_fewest_hallucinated", "chance that a random candidate has the fewest hallucinated objects"),
        ("spearman_reward", "within-scene Spearman(implicit reward, -hallucinated objects)"),
        ("spearman_loglik", "within-scene Spearman(log-likelihood, -hallucinated objects)"),
        ("spearman_labeler", "within-scene Spearman(-rejected claims, -hallucinated objects)"),
        ("scenes_with_a_clean_candidate", "share of scenes with a hallucination-free candidate"),
        ("candidate_hallucination_rate", "share of candidates naming an absent object"),
    ):
        print(f"  {text:<72} {_pm([r[key] for r in results])}")
    print(f"  {'scenes whose candidates differ in hallucinated objects':<72} {_pm([r['scenes_where_candidates_differ'] for r in results], 1, '.1f')}")
    print(f"  {'labeler (final policy, self-feedback) recall of false claims':<72} {_pm([r['labeler']['recall_reject'] for r in results])}")
    print(f"  {'labeler precision of rejections':<72} {_pm([r['labeler']['precision_reject'] for r in results])}")
    kinds = sorted({k for r in results for k in r["labeler_per_kind_recall"]})
    print("  labeler recall per claim kind: " + ", ".join(f"{k} {_pm([r['labeler_per_kind_recall'].get(k) for r in results])}" for k in kinds))
    print(f"  reward pick re-drawn = the run's tuned_best_of_n.json: {[r['check_reward_pick_matches_run'] for r in results]}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
