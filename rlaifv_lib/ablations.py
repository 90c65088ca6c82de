"""Ablations: the paper's design choices, each tested against its alternative on the toy world (``rlaifv ablate``).

RLAIF-V argues for a handful of choices; the toy world, where every verdict can be checked, tests each one
exactly. Every variant changes one setting of the same run (same seed, same prompts per round, same DPO
settings; the offline round is given exactly the paper variant's total DPO steps), over several seeds:

    paper               deconfounded candidates, claim-level self-feedback, k on-policy rounds, length balancing,
                        SFT weight 1.0 (the toy's calibrated DPO recipe)
    confounded          half of each prompt's candidates at a second temperature (``SamplingConfig.second_temperature``)
    whole-response      one yes/no question about the whole response, score = P(yes) (``FeedbackConfig.unit``)
    offline             one round of k x P prompts sampled from the starting policy instead of k on-policy rounds
    no-length-balance   ``PairConfig.length_balance = False``
    separate-labeler    the toy labeler model judges instead of the policy itself
    sft-0               DPO without the SFT term (the official weight 0)

Each run is an ordinary resumable :class:`pipeline.RLAIFVRun` in ``out/<variant>/seed_<s>``; an interrupted sweep
resumes where it stopped. For each run the table reports the final policy's held-out metrics, the number of
pairs and the pair audit (by the truth: the share of pairs whose chosen response has fewer truly false claims,
and the share that teaches the wrong way, ``audit.pair_outcome``), then the mean ± sample std over seeds.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .audit import claim_truth, pair_audit
from .dpo import toy_dpo_settings
from .errors import ConfigError, check_finite
from .feedback import FeedbackConfig
from .pairs import PairConfig
from .pipeline import RLAIFVConfig, RLAIFVRun
from .records import Claim, PreferencePair, Verdict, read_json, read_jsonl, write_json
from .sampling import SamplingConfig

__all__ = ["VARIANTS", "TABLE_KEYS", "CLAIMS", "AblationConfig", "quick_ablation", "variant_config", "run_ablations", "ablation_table", "claim_checks", "claim_report", "changed_settings", "variant_order"]

# variant -> what it changes (the first one is the paper's recipe every other is compared with)
VARIANTS: dict[str, str] = {
    "paper": "RLAIF-V: deconfounded candidates, claim-level self-feedback, k on-policy rounds, length balancing, SFT weight 1.0",
    "confounded": "half of each prompt's candidates sampled at a second temperature (pairs differ in style too)",
    "whole-response": "one yes/no question about the whole response, score = P(yes), pairs by score difference >= a margin",
    "offline": "one round of k x P prompts from the starting policy, the paper run's total DPO steps",
    "no-length-balance": "pairs kept without the official length balancing",
    "separate-labeler": "the separate toy labeler model judges the claims instead of the policy itself",
    "sft-0": "DPO without the SFT term (the official weight 0) instead of the calibrated 1.0",
}
# columns of the table: key, header, width, format
TABLE_KEYS: tuple[tuple[str, str, int, str], ...] = (
    ("chair_i", "CHAIR_i", 15, ".3f"),
    ("chair_s", "CHAIR_s", 15, ".3f"),
    ("coverage", "coverage", 15, ".3f"),
    ("mean_words", "words", 13, ".1f"),
    ("labeler_accuracy", "labeler acc", 15, ".3f"),
    ("n_pairs", "pairs", 13, ".0f"),
    ("share_fewer_false_claims", "chosen truer", 15, ".3f"),
    ("wrong_way", "wrong-way", 15, ".3f"),
)
# the paper's (or the project's) claim each variant tests: variant -> (claim, [(metric, +1 if higher is better else -1)]);
# the first metric decides; "separate-labeler" claims parity (reproduced unless the alternative is better), the others superiority
_PARITY = ("separate-labeler",)
CLAIMS: dict[str, tuple[str, list[tuple[str, int]]]] = {
    "confounded": ("deconfounded candidates (one decoding setting) beat candidates from mixed settings", [("chair_i", -1), ("share_fewer_false_claims", +1)]),
    "whole-response": ("divide-and-conquer (claim-level) feedback beats one whole-response question", [("chair_i", -1), ("share_fewer_false_claims", +1)]),
    "offline": ("k on-policy rounds beat one offline round of the same prompts and DPO steps", [("chair_i", -1), ("coverage", +1)]),
    "no-length-balance": ("length balancing keeps 'say less' from winning", [("mean_words", +1), ("coverage", +1)]),
    "separate-labeler": ("self-feedback works as well as a separate labeler", [("chair_i", -1), ("coverage", +1)]),
    "sft-0": ("the toy needs the SFT term (weight 1.0; official 0) to keep its text intact", [("coverage", +1), ("chair_i", -1)]),
}
_RUN_KEYS = ("chair_i", "chair_s", "coverage", "mean_words", "labeler_accuracy", "train_labeler_accuracy", "n_pairs", "share_fewer_false_claims", "wrong_way", "dpo_steps", "seconds")


@dataclass
class AblationConfig:
    """Size and settings of an ablation sweep (defaults: the full sweep of the README).

    Args:
        variants (tuple of str, defaults to every key of VARIANTS): the variants to run, in this order.
        seeds (tuple of int, defaults to (0, 1, 2)): one run per variant and seed (>= 2 for a std).
        rounds (int, defaults to 3): on-policy rounds k of every variant but "offline".
        prompts_per_round (int, defaults to 20): fresh training prompts per round P.
        n (int, defaults to 8): candidates per prompt.
        eval_scenes (int, defaults to 80): held-out scenes of every evaluation.
        max_new_tokens (int, defaults to 64): response length cap of the candidates.
        second_temperature (float, defaults to 1.3): the "confounded" variant's temperature of the second half of
            the candidates (the first half keeps the usual 0.7).
        response_margin (float, defaults to 0.1): the "whole-response" variant's ``PairConfig.min_margin``
            (scores are P(yes) in [0, 1], so the official margin of 1 would pair nothing).
        response_question (str, defaults to "{response} ?"): the "whole-response" question; the toy grammar
            has no word for "accurate", so the toy labeler is asked the response itself as a question.
        labeler (str, defaults to "toy-labeler"): the "separate-labeler" variant's labeler.
        dpo_epochs (float, defaults to the toy recipe's 2.0): DPO passes over each round's pairs.
    """

    variants: tuple[str, ...] = tuple(VARIANTS)
    seeds: tuple[int, ...] = (0, 1, 2)
    rounds: int = 3
    prompts_per_round: int = 20
    n: int = 8
    eval_scenes: int = 80
    max_new_tokens: int = 64
    second_temperature: float = 1.3
    response_margin: float = 0.1
    response_question: str = "{response} ?"
    labeler: str = "toy-labeler"
    dpo_epochs: float = field(default_factory=lambda: toy_dpo_settings().epochs)

    def __post_init__(self) -> None:
        check_finite(self)
        self.variants, self.seeds = tuple(self.variants), tuple(int(s) for s in self.seeds)
        if unknown := [v for v in self.variants if v not in VARIANTS]:
            raise ConfigError(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
        if not self.variants or len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"variants must be a non-empty list without repeats, got {list(self.variants)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be a non-empty list without repeats, got {list(self.seeds)}")
        if not 0 < self.response_margin < 1:
            raise ConfigError(f"response_margin must be in (0, 1) (whole-response scores are P(yes) in [0, 1]), got {self.response_margin}")
        if self.dpo_epochs <= 0:
            raise ConfigError(f"dpo_epochs must be > 0, got {self.dpo_epochs}")
        for name in ("rounds", "prompts_per_round", "eval_scenes", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n < 2:
            raise ConfigError(f"n must be >= 2: pairs need two candidates of one prompt, got {self.n}")
        for v in self.variants:  # every variant's run configuration is validated now, not mid-sweep
            variant_config(self, v, self.seeds[0])

    def runs(self) -> list[tuple[str, int]]:
        """(variant, seed) of every run, seed-major so that "paper" runs before "offline" of the same seed."""
        return [(v, s) for s in self.seeds for v in self.variants]


def quick_ablation(**overrides: Any) -> AblationConfig:
    """A sweep small enough for a notebook (and the test suite's smoke run): 3 seeds, 2 rounds of 8 prompts x 4
    candidates, 16 held-out scenes; the numbers are noisy at this size; ``overrides`` replace any field."""
    base: dict[str, Any] = dict(seeds=(0, 1, 2), rounds=2, prompts_per_round=8, n=4, eval_scenes=16, max_new_tokens=48)
    return AblationConfig(**{**base, **overrides})


def variant_config(cfg: AblationConfig, variant: str, seed: int, dpo_steps: int | None = None) -> RLAIFVConfig:
    """The ``RLAIFVConfig`` of one run: the paper's recipe at the sweep's size, with ``variant``'s one change.

    ``dpo_steps`` (offline only): the total DPO steps to give the single round (the paper run's, same seed).
    """
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; known: {list(VARIANTS)}")
    sampling = SamplingConfig(n=cfg.n, batch_size=200, max_new_tokens=cfg.max_new_tokens)
    feedback = FeedbackConfig(batch_size=256)
    pairs = PairConfig()
    dpo = replace(toy_dpo_settings(), epochs=cfg.dpo_epochs)
    values: dict[str, Any] = dict(rounds=cfg.rounds, prompts_per_round=cfg.prompts_per_round, eval_scenes=cfg.eval_scenes, best_of_n=0, seed=seed)
    if variant == "confounded":
        sampling = replace(sampling, second_temperature=cfg.second_temperature)
    elif variant == "whole-response":
        feedback = replace(feedback, unit="response", response_question=cfg.response_question)
        pairs = replace(pairs, min_margin=cfg.response_margin)
    elif variant == "offline":
        values.update(rounds=1, prompts_per_round=cfg.rounds * cfg.prompts_per_round)
        if dpo_steps is not None:
            if dpo_steps < 1:
                raise ConfigError(
                    f"the offline round gets the paper run's total DPO steps, and that run of seed {seed} trained {dpo_steps} "
                    "(it made no preference pairs): give the sweep more prompts per round or candidates."
                )
            dpo = replace(dpo, max_steps=dpo_steps)
    elif variant == "no-length-balance":
        pairs = replace(pairs, length_balance=False)
    elif variant == "separate-labeler":
        values["labeler"] = cfg.labeler
    elif variant == "sft-0":
        dpo = replace(dpo, sft_weight=0.0)
    return RLAIFVConfig(**values, sampling=sampling, feedback=feedback, pairs=pairs, dpo=dpo)


def _leaves(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested dict flattened to dotted keys."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def changed_settings(cfg: AblationConfig, variant: str) -> dict[str, tuple[Any, Any]]:
    """The run settings ``variant`` changes, as {dotted name: (paper value, variant value)} (offline: its DPO steps
    are the paper run's, known only once that run is done, shown as "paper's")."""
    paper, other = _leaves(asdict(variant_config(cfg, "paper", 0))), _leaves(asdict(variant_config(cfg, variant, 0)))
    out = {k: (paper[k], other[k]) for k in paper if paper[k] != other[k]}
    if variant == "offline":
        out["dpo.max_steps"] = (paper["dpo.max_steps"], "paper's")
    return out


def _dpo_steps(run: RLAIFVRun) -> int:
    """Optimiser steps of every round's DPO (0 for a round without pairs)."""
    total = 0
    for k in range(1, run.cfg.rounds + 1):
        log = run.round_dir(k) / "dpo" / "dpo_log.json"
        if log.exists():
            total += max((int(e.get("step", 0)) for e in read_json(log)["log_history"]), default=0)
    return total


def _run_metrics(run: RLAIFVRun, final: dict) -> dict[str, Any]:
    """The table's numbers of one finished run: final held-out metrics, pairs, the pair audit, DPO steps."""
    pairs: list[PreferencePair] = []
    claims: list[Claim] = []
    train_acc = []
    for k in range(1, run.cfg.rounds + 1):
        rd = run.round_dir(k)
        pairs += run.round_pairs(k)  # reads the round's prompts too, so a resumed run knows their scenes
        claims += read_jsonl(rd / "claims.jsonl", Claim)
        train_acc.append(read_json(rd / "eval.json").get("train_labeler_accuracy"))
    audit = pair_audit(pairs, run.source.scenes, claims) if pairs else None
    train_acc = [a for a in train_acc if a is not None]
    out = {key: final.get(key) for key in ("chair_i", "chair_s", "coverage", "mean_words", "labeler_accuracy")}
    out.update(
        train_labeler_accuracy=statistics.fmean(train_acc) if train_acc else None,  # None: whole-response verdicts judge no claim
        n_pairs=len(pairs),
        share_fewer_false_claims=audit["share_fewer_false_claims"] if audit else None,
        wrong_way=audit["outcomes"]["wrong_way"] if audit else None,
        dpo_steps=_dpo_steps(run),
    )
    if run.cfg.feedback.unit == "response":
        out["response_verdict_accuracy"] = _response_accuracy(run)
    return out


def _response_accuracy(run: RLAIFVRun) -> float | None:
    """Whole-response verdicts against the truth: "yes" is right iff the response has no truly false claim."""
    right = total = 0
    for k in range(1, run.cfg.rounds + 1):
        rd = run.round_dir(k)
        false: dict[str, int] = {}
        for c in read_jsonl(rd / "claims.jsonl", Claim):
            false[c.candidate_id] = false.get(c.candidate_id, 0) + (claim_truth(c, run.source.scenes) is False)
        for v in read_jsonl(rd / "verdicts.jsonl", Verdict):
            cand = v.claim_id.removesuffix("/response")
            right += v.accepted == (false.get(cand, 0) == 0)
            total += 1
    return right / total if total else None


def _aggregate(rows: list[dict], keys: tuple[str, ...] = _RUN_KEYS) -> dict[str, dict[str, Any]]:
    """Mean, sample std (None under 2 values) and count of each key over the runs that have a value."""
    out = {}
    for key in keys:
        vals = [float(r[key]) for r in rows if r.get(key) is not None]
        out[key] = {"mean": statistics.fmean(vals) if vals else None, "std": statistics.stdev(vals) if len(vals) > 1 else None, "n": len(vals)}
    return out


def run_ablations(cfg: AblationConfig, out_dir: str | Path, progress: bool = True, only_finished: bool = False) -> dict[str, Any]:
    """Run (or resume) every (variant, seed) run in ``out_dir`` and write ``out_dir/ablations.json``.

    Returns ``{"config", "runs": [{variant, seed, metrics}], "variants": {variant: {key: {mean, std, n}}},
    "baseline": {key: {mean, std, n}}, "wall_seconds"}``; one progress bar counts the runs. ``only_finished``
    summarises the runs already finished and runs nothing (e.g. while a sweep is still going); ``wall_seconds``
    is then that summary's own time.
    """
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    baselines: list[dict] = []
    paper_steps: dict[int, int] = {}
    bar = tqdm(cfg.runs(), desc="ablation runs", disable=not progress, unit="run")
    for variant, seed in bar:
        bar.set_postfix_str(f"{variant}, seed {seed}")
        last = 1 if variant == "offline" else cfg.rounds
        if only_finished and not (out_dir / variant / f"seed_{seed}" / f"round_{last}" / "eval.json").exists():
            continue
        steps = paper_steps.get(seed) if variant == "offline" else None
        run = RLAIFVRun(out_dir / variant / f"seed_{seed}", variant_config(cfg, variant, seed, steps), progress=False)
        if variant == "paper":
            baselines.append(run.baseline())
        t = time.perf_counter()
        final = {}
        for k in range(1, run.cfg.rounds + 1):
            final = run.run_round(k)
        metrics = _run_metrics(run, final)
        metrics["seconds"] = sum(read_json(run.round_dir(k) / "eval.json")["seconds"] for k in range(1, run.cfg.rounds + 1))
        metrics["sweep_seconds"] = time.perf_counter() - t  # 0-ish when the run was already finished
        if variant == "paper":
            paper_steps[seed] = metrics["dpo_steps"]
        rows.append({"variant": variant, "seed": seed, **metrics})
        run.rd.close()  # release the run directory's lock now, not when the object is collected
    bar.close()
    summary = {
        "config": asdict(cfg),
        "runs": rows,
        "variants": {v: _aggregate([r for r in rows if r["variant"] == v]) for v in cfg.variants},
        "baseline": _aggregate(baselines, ("chair_i", "chair_s", "coverage", "mean_words", "labeler_accuracy")) if baselines else None,
        "wall_seconds": time.perf_counter() - t0,
        "torch_threads": torch.get_num_threads(),
    }
    summary["config"]["descriptions"] = {v: VARIANTS[v] for v in cfg.variants}
    write_json(out_dir / "ablations.json", json.loads(json.dumps(summary)))
    return summary


def _cell(stat: dict[str, Any] | None, width: int, fmt: str) -> str:
    """'mean ± std' (or 'mean' with one value, 'n/a' with none), right-aligned."""
    if not stat or stat["mean"] is None:
        text = "n/a"
    elif stat["std"] is None:
        text = format(stat["mean"], fmt)
    else:
        text = f"{format(stat['mean'], fmt)} ± {format(stat['std'], fmt)}"
    return f"{text:>{width}}"


def variant_order(summary: dict[str, Any]) -> list[str]:
    """The summary's variants in the sweep's order (a JSON file written with sorted keys loses it)."""
    order = summary.get("config", {}).get("variants") or list(summary["variants"])
    return [v for v in order if v in summary["variants"]]


def ablation_table(summary: dict[str, Any]) -> str:
    """The sweep as one text table: a row per variant (mean ± std over seeds), the baseline first."""
    head = f"{'variant':<18}" + "".join(f"{h:>{w}}" for _, h, w, _ in TABLE_KEYS)
    lines = [head, "-" * len(head)]
    if summary.get("baseline"):
        lines.append(f"{'baseline (start)':<18}" + "".join(_cell(summary["baseline"].get(k), w, f) for k, _, w, f in TABLE_KEYS))
    for variant in variant_order(summary):
        stats = summary["variants"][variant]
        lines.append(f"{variant:<18}" + "".join(_cell(stats.get(k), w, f) for k, _, w, f in TABLE_KEYS))
    return "\n".join(lines)


_T95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}  # t(0.975, n - 1) for n seeds


def _outcome(diff: float, se: float | None, sign: int, z: float) -> str | None:
    """Which side a difference (variant - paper) favours beyond ``z`` standard errors; None without a standard error."""
    if se is None:
        return None
    if -sign * diff > z * se:
        return "paper's choice better"
    if sign * diff > z * se:
        return "alternative better"
    return "no difference beyond noise"


def claim_checks(summary: dict[str, Any], z: float = 2.0) -> list[dict[str, Any]]:
    """For each variant's claim and metric: paper and variant mean, their difference and the outcome, two ways.

    Unpaired: the standard error is sqrt(std_p²/n_p + std_v²/n_v) over seeds. Paired by seed (runs of one seed share
    the training prompts, except offline's, and the evaluation's sampling seed): the mean and standard error of the
    per-seed differences. Each outcome is "paper's choice better" / "alternative better" beyond ``z`` standard
    errors, else "no difference beyond noise" (None under 2 seeds). ``seeds_favouring_paper`` counts the seeds
    whose difference favours the paper's choice.
    """
    paper = summary["variants"].get("paper")
    by_run = {(r["variant"], r["seed"]): r for r in summary.get("runs", [])}
    rows = []
    for variant, (claim, metrics) in CLAIMS.items():
        if paper is None or variant not in summary["variants"]:
            continue
        for key, sign in metrics:
            p, v = paper.get(key) or {}, summary["variants"][variant].get(key) or {}
            if p.get("mean") is None or v.get("mean") is None:
                continue
            diff = v["mean"] - p["mean"]
            se = (p["std"] ** 2 / p["n"] + v["std"] ** 2 / v["n"]) ** 0.5 if p.get("std") is not None and v.get("std") is not None else None
            seeds = sorted(s for (name, s) in by_run if name == variant and (("paper", s) in by_run))
            diffs = [by_run[variant, s][key] - by_run["paper", s][key] for s in seeds if by_run[variant, s].get(key) is not None and by_run["paper", s].get(key) is not None]
            paired = statistics.fmean(diffs) if diffs else None
            paired_se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else None
            rows.append({
                "variant": variant, "claim": claim, "metric": key, "paper": p["mean"], "variant_mean": v["mean"], "diff": diff, "se": se,
                "outcome": _outcome(diff, se, sign, z), "paired_diff": paired, "paired_se": paired_se,
                "paired_outcome": _outcome(paired, paired_se, sign, z) if paired is not None else None,
                "seeds_favouring_paper": sum(-sign * d > 0 for d in diffs), "n_seeds": len(diffs),
            })  # fmt: skip
    return rows


def _verdict(variant: str, outcomes: list[str | None]) -> str:
    """Whether the toy reproduces a claim, from the outcomes of its metrics (the first one decides)."""
    if any(o is None for o in outcomes):
        return "not decidable (needs >= 2 seeds)"
    if variant in _PARITY and outcomes[0] != "alternative better":
        return "reproduced (no worse on the main metric; with few seeds, parity is weak evidence)"
    if outcomes[0] == "paper's choice better":
        return "REPRODUCED"
    if outcomes[0] == "alternative better":
        return "CONTRADICTED"
    return "not reproduced (no difference beyond noise on the main metric)"


def claim_report(summary: dict[str, Any], z: float = 2.0) -> str:
    """:func:`claim_checks` as text: per claim, whether the toy reproduces it (unpaired and paired by seed), and one
    line per metric."""
    rows = claim_checks(summary, z)
    lines = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        lines.append(f"{variant} vs paper: {mine[0]['claim']}")
        lines.append(f"    unpaired: {_verdict(variant, [r['outcome'] for r in mine])}")
        lines.append(f"    paired by seed: {_verdict(variant, [r['paired_outcome'] for r in mine])}")
        for r in mine:
            se = "n/a" if r["se"] is None else f"{r['se']:.3f}"
            pse = "n/a" if r["paired_se"] is None else f"{r['paired_se']:.3f}"
            lines.append(
                f"    {r['metric']:<25} paper {r['paper']:.3f}  {variant} {r['variant_mean']:.3f}  diff {r['diff']:+.3f} (se {se}; "
                f"paired se {pse}); seeds favouring paper {r['seeds_favouring_paper']}/{r['n_seeds']}"
            )
    n = max((r["n_seeds"] for r in rows), default=0)
    if n in _T95:
        lines.append(f"(beyond noise = over {z:g} standard errors; a two-sided 95% t-test over {n} seeds would need {_T95[n]:.2f}: read these as indications)")
    return "\n".join(lines)
