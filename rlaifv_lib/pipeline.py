"""The RLAIF-V loop: one round = sample -> decompose -> score -> pairs -> DPO -> evaluate; k rounds.

Each round samples fresh candidates from the newest policy (on-policy, as the paper insists:
one offline DPO pass on a fixed set is what users who fail to reproduce it do). Every stage
writes one artifact to the run directory, atomically; a stage whose complete artifact exists is
not recomputed, so an interrupted run resumes where it stopped and ends with the same files.

    run_dir/
      run.json                     version + configuration (checked on resume; see rlaifv_lib.rundir)
      round_0/eval.json            the baseline, before any training
      round_k/prompts.jsonl        the round's (scene, instruction) prompts
              candidates.jsonl     N deconfounded candidates per prompt
              claims.jsonl         atomic claims with their polar questions
              verdicts.jsonl       labeler P(yes)/P(no) per claim
              scored.jsonl         response scores = -(rejected claims)
              pairs.jsonl          chosen/rejected pairs (+ pair_stats.json)
              dpo/                 LoRA adapters + dpo_log.json (trainer log)
              model/               the merged policy the next round samples from
              eval.json            held-out metrics of round_k/model
      best_of_n.json               inference-time guidance with the final DPO reward
      summary.json                 one row per round + best-of-N
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from . import __version__
from .audit import labeler_audit
from .claims import ClaimsConfig, make_decomposer
from .dpo import DPOSettings, merge_adapters, toy_dpo_settings, train_dpo
from .errors import ConfigError, check_finite
from .feedback import FeedbackConfig, score_candidates, score_claims
from .guidance import GuidanceConfig, compare_selections, score_for_guidance
from .hallucination import EvalConfig, chair, evaluate_policy
from .models import load_model, resolve_model
from .pairs import PairConfig, build_pairs, pair_stats, to_trl_dataset
from .records import Candidate, Claim, PreferencePair, Prompt, ScoredCandidate, Verdict, read_json
from .rundir import RunDirectory
from .sampling import SamplingConfig, sample_candidates
from .toyworld.grammar import INSTRUCTIONS
from .toyworld.render import render_scene
from .toyworld.scenes import Scene, evaluation_scenes, training_scenes

__all__ = ["RUN_FORMAT", "RLAIFVConfig", "RLAIFVRun", "SUMMARY_KEYS", "latest_policy", "quick_config", "notebook_config", "base_and_tuned"]

RUN_FORMAT = 2  # bump when the layout or the meaning of an artifact changes (2: artifacts record their configuration)
SUMMARY_KEYS = ("chair_i", "chair_s", "coverage", "mean_words", "labeler_accuracy", "n_pairs", "seconds")


@dataclass
class RLAIFVConfig:
    """Settings of a k-round RLAIF-V run on the toy world.

    Args:
        rounds (int, defaults to 3): on-policy rounds (official: 4).
        prompts_per_round (int, defaults to 100): fresh training prompts per round.
        policy (str, defaults to "toy-policy"): starting policy (toy name or model folder).
        labeler (str | None, defaults to None): None = self-feedback (the current policy labels
            its own candidates); else a separate labeler (toy name or model folder).
        sampling (SamplingConfig): candidates per prompt, temperature, ...
        claims (ClaimsConfig): the divide step.
        feedback (FeedbackConfig): the conquer step.
        pairs (PairConfig): pair construction (margin, cap per prompt, length balancing).
        dpo (DPOSettings): QLoRA DPO settings of every round (``dpo.toy_dpo_settings()``: lr 1e-3,
            2 epochs, SFT weight 1.0).
        eval_scenes (int, defaults to 200): size of the fixed held-out evaluation set.
        best_of_n (int, defaults to 8): candidates per prompt for inference-time guidance (0 = skip).
        best_of_n_prompts (int, defaults to 100): held-out prompts used for best-of-N.
        seed (int, defaults to 0): seed of everything random in the run.
    """

    rounds: int = 3
    prompts_per_round: int = 100
    policy: str = "toy-policy"
    labeler: str | None = None
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(n=8, batch_size=200))
    claims: ClaimsConfig = field(default_factory=ClaimsConfig)
    feedback: FeedbackConfig = field(default_factory=lambda: FeedbackConfig(batch_size=256))
    pairs: PairConfig = field(default_factory=PairConfig)
    dpo: DPOSettings = field(default_factory=toy_dpo_settings)
    eval_scenes: int = 200
    best_of_n: int = 8
    best_of_n_prompts: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        check_finite(self)
        if self.rounds < 1:
            raise ConfigError(f"rounds (k) must be >= 1, got {self.rounds}")
        for name in ("prompts_per_round", "eval_scenes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 (a round or an evaluation over no prompt measures nothing), got {getattr(self, name)}")
        if self.sampling.n < 2:
            raise ConfigError(f"sampling.n must be >= 2: pairs need two candidates of one prompt, got {self.sampling.n}")
        if self.best_of_n == 1 or self.best_of_n < 0:
            raise ConfigError(f"best_of_n must be 0 (skip) or >= 2, got {self.best_of_n}")
        if self.best_of_n and self.best_of_n_prompts < 1:
            raise ConfigError(f"best_of_n_prompts must be >= 1 when best_of_n is on (a best-of-N over no prompt measures nothing), got {self.best_of_n_prompts}")

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return json.loads(json.dumps(asdict(self), default=str))


def _round_seed(seed: int, k: int, what: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{k}/{what}".encode()).digest()[:4], "little")


class RLAIFVRun:
    """A resumable RLAIF-V run in ``run_dir``; ``run()`` does every round that is not yet done.

    ``on_written`` (optional) is called with the path of each artifact right after it is complete.
    """

    def __init__(self, run_dir: str | Path, cfg: RLAIFVConfig | None = None, progress: bool = True, on_written: Callable[[Path], None] | None = None):
        self.dir = Path(run_dir)
        self.cfg = cfg or RLAIFVConfig()
        self.progress = progress
        header = {"format": RUN_FORMAT, "version": __version__, "config": self.cfg.to_dict()}
        self.rd = RunDirectory(self.dir, header, on_written, unrecorded_formats=(1,))  # locked, header checked, stale temporaries gone
        self._eval = evaluation_scenes(self.cfg.eval_scenes)
        self._loaded: dict[str, tuple[Any, Any]] = {}
        self._labeler = None

    def round_dir(self, k: int) -> Path:
        """Folder of round k (0 = baseline)."""
        return self.dir / f"round_{k}"

    def policy_path(self, k: int) -> str:
        """The policy round k+1 samples from: the start policy for k = 0, else round k's merged model."""
        return str(resolve_model(self.cfg.policy)) if k == 0 else str(self.round_dir(k) / "model")

    def _model(self, path: str) -> tuple[Any, Any]:
        if path not in self._loaded:
            self._loaded.clear()
            self._loaded[path] = load_model(path)
        return self._loaded[path]

    def _labeler_for(self, policy_path: str) -> tuple[Any, Any]:
        if self.cfg.labeler is None:
            return self._model(policy_path)
        if self._labeler is None:
            self._labeler = load_model(self.cfg.labeler)
        return self._labeler

    # ----- stages --------------------------------------------------------------------------
    def _prompts(self, k: int) -> tuple[list[Prompt], dict[str, Scene]]:
        path = self.round_dir(k) / "prompts.jsonl"

        def compute() -> list[dict]:
            scenes = training_scenes(self.cfg.prompts_per_round, seed=_round_seed(self.cfg.seed, k, "prompts"))
            return [{"id": s.id, "instruction": INSTRUCTIONS[0], "truth": s.truth(), "seed": s.seed} for s in scenes]

        rows = self.rd.jsonl(path, compute)
        scenes = {r["id"]: Scene.from_truth(r["id"], r["truth"], r["seed"]) for r in rows}
        prompts = [Prompt(r["id"], render_scene(scenes[r["id"]]), r["instruction"], r["truth"]) for r in rows]
        return prompts, scenes

    def run_round(self, k: int) -> dict:
        """Run (or resume) round k >= 1 and return its held-out metrics."""
        rd = self.round_dir(k)
        if self.rd.done(rd / "eval.json"):
            return self.rd.read_json(rd / "eval.json")
        t0 = time.perf_counter()
        start = self.policy_path(k - 1)
        prompts, scenes = self._prompts(k)
        images = {p.id: p.image for p in prompts}
        scfg = SamplingConfig(**{**asdict(self.cfg.sampling), "seed": _round_seed(self.cfg.seed, k, "sampling")})
        cands = self.rd.jsonl(rd / "candidates.jsonl", lambda: sample_candidates(*self._model(start), prompts, scfg, self.progress), Candidate)
        decomposer = make_decomposer(self.cfg.claims)
        claims = self.rd.jsonl(rd / "claims.jsonl", lambda: decomposer.decompose_all(cands, progress=self.progress), Claim)
        owner = {c.id: c.prompt_id for c in cands}
        verdicts = self.rd.jsonl(
            rd / "verdicts.jsonl",
            lambda: score_claims(*self._labeler_for(start), claims, images, owner, self.cfg.feedback, self.progress),
            Verdict,
        )
        scored = self.rd.jsonl(rd / "scored.jsonl", lambda: score_candidates(cands, claims, verdicts), ScoredCandidate)
        pairs = self._pairs(k, scored, prompts)
        self._train_and_merge(k, start, pairs, prompts)
        metrics = self._evaluate(k, self.policy_path(k))
        audit = labeler_audit(claims, verdicts, scenes)
        metrics.update(n_pairs=len(pairs), train_labeler_accuracy=audit["accuracy"], seconds=time.perf_counter() - t0)
        self.rd.write_json(rd / "eval.json", metrics)
        return metrics

    def _pairs(self, k: int, scored: list[ScoredCandidate], prompts: list[Prompt]) -> list[PreferencePair]:
        rd = self.round_dir(k)
        path = rd / "pairs.jsonl"
        if self.rd.done(path):
            return self.rd.read_jsonl(path, PreferencePair)
        pcfg = PairConfig(**{**asdict(self.cfg.pairs), "seed": _round_seed(self.cfg.seed, k, "pairs")})
        result = build_pairs(scored, pcfg, instructions={p.id: p.instruction for p in prompts})
        self.rd.write_json(rd / "pair_stats.json", pair_stats(result), report=False)
        self.rd.write_jsonl(path, result.pairs)
        return self.rd.read_jsonl(path, PreferencePair)

    def _train_and_merge(self, k: int, start: str, pairs: list[PreferencePair], prompts: list[Prompt]) -> None:
        rd = self.round_dir(k)
        model_dir = rd / "model"
        if self.rd.done(model_dir):
            return
        if not pairs:  # nothing to learn from: the next round starts from the same policy
            tqdm.write(f"round {k}: no preference pairs (see pair_stats.json); the policy is carried over unchanged")
            with self.rd.directory(model_dir) as tmp:
                shutil.copytree(start, tmp, dirs_exist_ok=True)
            return
        if not self.rd.done(rd / "dpo"):
            by_id = {p.id: p for p in prompts}
            for pair in pairs:
                pair.image = by_id[pair.prompt_id].image
                pair.instruction = by_id[pair.prompt_id].instruction
            self._loaded.clear()  # free the fp32 policy before training
            settings = DPOSettings(**{**asdict(self.cfg.dpo), "seed": _round_seed(self.cfg.seed, k, "dpo"), "progress": self.progress})
            train_dpo(start, None, to_trl_dataset(pairs), settings, rd / "dpo")
            self.rd.mark_done(rd / "dpo")
        merge_adapters(start, rd / "dpo" / "adapter", model_dir)
        self.rd.mark_done(model_dir)

    def _evaluate(self, k: int, policy: str) -> dict:
        model, processor = self._model(policy)
        labeler = None if self.cfg.labeler is None else self._labeler_for(policy)
        m = evaluate_policy(model, processor, self._eval, EvalConfig(seed=self.cfg.seed), labeler=labeler, progress=self.progress)
        m.pop("texts", None)
        return m

    def baseline(self) -> dict:
        """Held-out metrics of the starting policy (round 0)."""
        path = self.round_dir(0) / "eval.json"
        if self.rd.done(path):
            return self.rd.read_json(path)
        t0 = time.perf_counter()
        m = self._evaluate(0, self.policy_path(0))
        m.update(n_pairs=0, seconds=time.perf_counter() - t0)
        self.rd.write_json(path, m)
        return m

    def best_of_n(self) -> dict | None:
        """Best-of-N over the base policy's candidates, ranked by the final DPO implicit reward."""
        n = self.cfg.best_of_n
        if not n:
            return None
        path = self.dir / "best_of_n.json"
        if self.rd.done(path):
            return self.rd.read_json(path)
        scenes = self._eval[: self.cfg.best_of_n_prompts]
        prompts = [Prompt(s.id, render_scene(s), INSTRUCTIONS[0]) for s in scenes]
        base_path, final_path = self.policy_path(0), self.policy_path(self.cfg.rounds)
        scfg = SamplingConfig(**{**asdict(self.cfg.sampling), "n": n, "seed": _round_seed(self.cfg.seed, 0, "best_of_n")})
        base, processor = self._model(base_path)
        cands = sample_candidates(base, processor, prompts, scfg, self.progress)
        base_model = base
        self._loaded.clear()
        final, _ = load_model(final_path)
        gcfg = GuidanceConfig(beta=self.cfg.dpo.beta, n=n, seed=self.cfg.seed)
        scores = score_for_guidance(final, base_model, processor, prompts, cands, gcfg, self.progress)
        picks = compare_selections(cands, scores, seed=self.cfg.seed)
        truth = {s.id: s.shapes for s in scenes}
        out: dict[str, Any] = {"n": n, "prompts": len(prompts)}
        for sel, chosen in picks.items():
            texts = [chosen[s.id].text for s in scenes]
            m = chair(texts, [truth[s.id] for s in scenes])
            prefix = "" if sel == "reward" else f"{sel}_"
            out.update({f"{prefix}{key}": m[key] for key in ("chair_i", "chair_s", "coverage", "mean_words")})
        self.rd.write_json(path, out)
        return out

    def next_round(self) -> int | None:
        """The first round k (1..rounds) without a finished ``eval.json``; None when every round is done."""
        return next((k for k in range(1, self.cfg.rounds + 1) if not self.rd.done(self.round_dir(k) / "eval.json")), None)

    def run(self) -> dict:
        """Baseline, every round, best-of-N; writes and returns ``summary.json``."""
        rounds = [self.baseline()]
        for k in tqdm(range(1, self.cfg.rounds + 1), desc="RLAIF-V rounds", disable=not self.progress):
            rounds.append(self.run_round(k))
        summary = {"rounds": rounds, "best_of_n": self.best_of_n(), "config": self.cfg.to_dict()}
        self.rd.write_if_changed(self.dir / "summary.json", summary)  # unchanged: not rewritten (read-only storage works)
        return summary


# ----- reusing runs (notebooks 06 and 07) --------------------------------------------------------


def latest_policy(run_dir: str | Path) -> Path | None:
    """``round_<k>/model`` of the largest k that holds a finished model in ``run_dir``; None if there is none."""
    found = []
    for d in Path(run_dir).glob("round_*"):
        k = d.name.partition("_")[2]
        if k.isdigit() and int(k) > 0 and (d / "model" / "config.json").exists():
            found.append((int(k), d / "model"))
    return max(found)[1] if found else None


def quick_config(**overrides: Any) -> RLAIFVConfig:
    """A one-round run small enough for a notebook on a laptop CPU: 60 prompts x 6 candidates, 20 evaluation
    scenes, no best-of-N; ``overrides`` replace any ``RLAIFVConfig`` field."""
    base: dict[str, Any] = dict(rounds=1, prompts_per_round=60, sampling=SamplingConfig(n=6, batch_size=120), eval_scenes=20, best_of_n=0)
    return RLAIFVConfig(**{**base, **overrides})


def notebook_config(**overrides: Any) -> RLAIFVConfig:
    """The run notebooks 06 and 07 make, in one shared folder, when no finished ``rlaifv demo`` is there: the
    demo's rounds (100 prompts x 8 candidates, same feedback and DPO) but two of them, 60 evaluation scenes
    and best-of-4 on 16 scenes; ``overrides`` replace any ``RLAIFVConfig`` field."""
    base: dict[str, Any] = dict(rounds=2, eval_scenes=60, best_of_n=4, best_of_n_prompts=16)
    return RLAIFVConfig(**{**base, **overrides})


def base_and_tuned(run_dir: str | Path, fallback_dir: str | Path, cfg: RLAIFVConfig | None = None, progress: bool = True, rounds: int | None = None) -> tuple[str, Path]:
    """(starting policy, RLAIF-V-tuned policy) as model folders.

    The tuned policy is the last round of ``run_dir`` (e.g. ``runs/demo`` written by ``rlaifv demo``) when it
    has one; otherwise the first ``rounds`` rounds (default: all) of ``cfg`` (default :func:`quick_config`) are
    run, or resumed, in ``fallback_dir``. The starting policy is the one named in that run's ``run.json``.
    """
    tuned = latest_policy(run_dir)
    if tuned is not None:
        start = read_json(Path(run_dir) / "run.json")["config"]["policy"] if (Path(run_dir) / "run.json").exists() else "toy-policy"
        return str(resolve_model(start)), tuned
    cfg = cfg or quick_config()
    last = cfg.rounds if rounds is None else rounds
    if not 1 <= last <= cfg.rounds:
        raise ConfigError(f"rounds must be between 1 and the config's {cfg.rounds}, got {rounds}")
    run = RLAIFVRun(fallback_dir, cfg, progress=progress)
    for k in range(1, last + 1):
        run.run_round(k)
    return run.policy_path(0), Path(run.policy_path(last))
