"""The RLAIF-V loop: one round = sample -> decompose -> score -> pairs -> DPO -> evaluate; k rounds.

Each round samples fresh candidates from the newest policy (on-policy, as the paper insists:
one offline DPO pass on a fixed set is what users who fail to reproduce it do). Every stage
writes one artifact to the run directory, atomically; a stage whose complete artifact exists is
not recomputed, so an interrupted run resumes where it stopped and ends with the same files.

    run_dir/
      run.json                     version + configuration (checked on resume)
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
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from . import __version__
from .audit import labeler_audit
from .claims import ClaimsConfig, make_decomposer
from .dpo import DPOSettings, merge_adapters, toy_dpo_settings, train_dpo
from .errors import ArtifactError, ConfigError, RunVersionError
from .feedback import FeedbackConfig, score_candidates, score_claims
from .guidance import GuidanceConfig, compare_selections, score_for_guidance
from .hallucination import EvalConfig, chair, evaluate_policy
from .models import load_model, resolve_model
from .pairs import PairConfig, build_pairs, pair_stats, to_trl_dataset
from .records import Candidate, Claim, PreferencePair, Prompt, ScoredCandidate, Verdict, read_json, read_jsonl, remove_stale_temporaries, write_json, write_jsonl
from .sampling import SamplingConfig, sample_candidates
from .toyworld.grammar import INSTRUCTIONS
from .toyworld.render import render_scene
from .toyworld.scenes import Scene, evaluation_scenes, training_scenes

__all__ = ["RUN_FORMAT", "RLAIFVConfig", "RLAIFVRun", "SUMMARY_KEYS", "KILL_AFTER_ENV", "latest_policy", "quick_config", "notebook_config", "base_and_tuned"]

RUN_FORMAT = 1  # bump when the layout or the meaning of an artifact changes
SUMMARY_KEYS = ("chair_i", "chair_s", "coverage", "mean_words", "labeler_accuracy", "n_pairs", "seconds")
# Test hook (tests/test_resume.py): when set to an artifact path relative to the run directory (e.g.
# "round_1/claims.jsonl", "round_1/model"), the process SIGKILLs itself right after writing it.
KILL_AFTER_ENV = "RLAIFV_KILL_AFTER"


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
        if self.rounds < 1:
            raise ConfigError(f"rounds (k) must be >= 1, got {self.rounds}")
        if self.prompts_per_round < 1 or self.eval_scenes < 1:
            raise ConfigError("prompts_per_round and eval_scenes must be >= 1")
        if self.sampling.n < 2:
            raise ConfigError(f"sampling.n must be >= 2: pairs need two candidates of one prompt, got {self.sampling.n}")
        if self.best_of_n == 1 or self.best_of_n < 0:
            raise ConfigError(f"best_of_n must be 0 (skip) or >= 2, got {self.best_of_n}")

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return json.loads(json.dumps(asdict(self), default=str))


def _round_seed(seed: int, k: int, what: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{k}/{what}".encode()).digest()[:4], "little")


class RLAIFVRun:
    """A resumable RLAIF-V run in ``run_dir``; ``run()`` does every round that is not yet done."""

    def __init__(self, run_dir: str | Path, cfg: RLAIFVConfig | None = None, progress: bool = True):
        self.dir = Path(run_dir)
        self.cfg = cfg or RLAIFVConfig()
        self.progress = progress
        self._check_or_write_header()
        remove_stale_temporaries(self.dir)  # what a killed run's atomic writes left behind; never read
        self._eval = evaluation_scenes(self.cfg.eval_scenes)
        self._loaded: dict[str, tuple[Any, Any]] = {}
        self._labeler = None

    # ----- run directory -------------------------------------------------------------------
    def _check_or_write_header(self) -> None:
        header = self.dir / "run.json"
        want = {"format": RUN_FORMAT, "version": __version__, "config": self.cfg.to_dict()}
        if header.exists():
            have = read_json(header)
            if not isinstance(have, dict):
                raise ArtifactError(f"{header} is not a run header (a JSON object); restore it from a copy or start a new run directory.")
            if have.get("format") != RUN_FORMAT:
                raise RunVersionError(
                    f"{self.dir} was written by run format {have.get('format')!r} (rlaifv_lib "
                    f"{have.get('version')}); this is format {RUN_FORMAT}. Start a new run directory."
                )
            if have.get("config") != want["config"]:
                raise ConfigError(
                    f"{self.dir} was started with a different configuration; resume it with the same "
                    "settings or start a new run directory."
                )
        else:
            write_json(header, want)
            self._written(header)

    def _written(self, path: Path) -> None:
        """Called after each artifact is written: the ``RLAIFV_KILL_AFTER`` test hook (a no-op unless set)."""
        target = os.environ.get(KILL_AFTER_ENV)
        if target and Path(path).relative_to(self.dir).as_posix() == target:
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))

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

    def _stage(self, path: Path, compute: Callable[[], list], cls: type | None) -> list:
        """Read a finished artifact, or compute it and write it atomically."""
        if path.exists():
            return read_jsonl(path, cls)
        records = compute()
        write_jsonl(path, records)
        self._written(path)
        return read_jsonl(path, cls) if cls is not None else records

    # ----- stages --------------------------------------------------------------------------
    def _prompts(self, k: int) -> tuple[list[Prompt], dict[str, Scene]]:
        path = self.round_dir(k) / "prompts.jsonl"

        def compute() -> list[dict]:
            scenes = training_scenes(self.cfg.prompts_per_round, seed=_round_seed(self.cfg.seed, k, "prompts"))
            return [{"id": s.id, "instruction": INSTRUCTIONS[0], "truth": s.truth(), "seed": s.seed} for s in scenes]

        rows = self._stage(path, compute, None)
        scenes = {r["id"]: Scene.from_truth(r["id"], r["truth"], r["seed"]) for r in rows}
        prompts = [Prompt(r["id"], render_scene(scenes[r["id"]]), r["instruction"], r["truth"]) for r in rows]
        return prompts, scenes

    def run_round(self, k: int) -> dict:
        """Run (or resume) round k >= 1 and return its held-out metrics."""
        rd = self.round_dir(k)
        if (rd / "eval.json").exists():
            return read_json(rd / "eval.json")
        t0 = time.perf_counter()
        start = self.policy_path(k - 1)
        prompts, scenes = self._prompts(k)
        images = {p.id: p.image for p in prompts}
        scfg = SamplingConfig(**{**asdict(self.cfg.sampling), "seed": _round_seed(self.cfg.seed, k, "sampling")})
        cands = self._stage(rd / "candidates.jsonl", lambda: sample_candidates(*self._model(start), prompts, scfg, self.progress), Candidate)
        decomposer = make_decomposer(self.cfg.claims)
        claims = self._stage(rd / "claims.jsonl", lambda: decomposer.decompose_all(cands, progress=self.progress), Claim)
        owner = {c.id: c.prompt_id for c in cands}
        verdicts = self._stage(
            rd / "verdicts.jsonl",
            lambda: score_claims(*self._labeler_for(start), claims, images, owner, self.cfg.feedback, self.progress),
            Verdict,
        )
        scored = self._stage(rd / "scored.jsonl", lambda: score_candidates(cands, claims, verdicts), ScoredCandidate)
        pairs = self._pairs(k, scored, prompts)
        self._train_and_merge(k, start, pairs, prompts)
        metrics = self._evaluate(k, self.policy_path(k))
        audit = labeler_audit(claims, verdicts, scenes)
        metrics.update(n_pairs=len(pairs), train_labeler_accuracy=audit["accuracy"], seconds=time.perf_counter() - t0)
        write_json(rd / "eval.json", metrics)
        self._written(rd / "eval.json")
        return metrics

    def _pairs(self, k: int, scored: list[ScoredCandidate], prompts: list[Prompt]) -> list[PreferencePair]:
        rd = self.round_dir(k)
        path = rd / "pairs.jsonl"
        if path.exists():
            return read_jsonl(path, PreferencePair)
        pcfg = PairConfig(**{**asdict(self.cfg.pairs), "seed": _round_seed(self.cfg.seed, k, "pairs")})
        result = build_pairs(scored, pcfg, instructions={p.id: p.instruction for p in prompts})
        write_json(rd / "pair_stats.json", pair_stats(result))
        write_jsonl(path, result.pairs)
        self._written(path)
        return read_jsonl(path, PreferencePair)

    def _train_and_merge(self, k: int, start: str, pairs: list[PreferencePair], prompts: list[Prompt]) -> None:
        rd = self.round_dir(k)
        model_dir = rd / "model"
        if model_dir.exists():
            return
        if not pairs:  # nothing to learn from: the next round starts from the same policy
            tqdm.write(f"round {k}: no preference pairs (see pair_stats.json); the policy is carried over unchanged")
            tmp = model_dir.with_name(".model.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(start, tmp)
            os.replace(tmp, model_dir)
            self._written(model_dir)
            return
        log = rd / "dpo" / "dpo_log.json"
        if not log.exists():
            by_id = {p.id: p for p in prompts}
            for pair in pairs:
                pair.image = by_id[pair.prompt_id].image
                pair.instruction = by_id[pair.prompt_id].instruction
            self._loaded.clear()  # free the fp32 policy before training
            settings = DPOSettings(**{**asdict(self.cfg.dpo), "seed": _round_seed(self.cfg.seed, k, "dpo"), "progress": self.progress})
            train_dpo(start, None, to_trl_dataset(pairs), settings, rd / "dpo")
            self._written(log)
        merge_adapters(start, rd / "dpo" / "adapter", model_dir)
        self._written(model_dir)

    def _evaluate(self, k: int, policy: str) -> dict:
        model, processor = self._model(policy)
        labeler = None if self.cfg.labeler is None else self._labeler_for(policy)
        m = evaluate_policy(model, processor, self._eval, EvalConfig(seed=self.cfg.seed), labeler=labeler, progress=self.progress)
        m.pop("texts", None)
        return m

    def baseline(self) -> dict:
        """Held-out metrics of the starting policy (round 0)."""
        path = self.round_dir(0) / "eval.json"
        if path.exists():
            return read_json(path)
        t0 = time.perf_counter()
        m = self._evaluate(0, self.policy_path(0))
        m.update(n_pairs=0, seconds=time.perf_counter() - t0)
        write_json(path, m)
        self._written(path)
        return m

    def best_of_n(self) -> dict | None:
        """Best-of-N over the base policy's candidates, ranked by the final DPO implicit reward."""
        n = self.cfg.best_of_n
        if not n:
            return None
        path = self.dir / "best_of_n.json"
        if path.exists():
            return read_json(path)
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
        write_json(path, out)
        self._written(path)
        return out

    def next_round(self) -> int | None:
        """The first round k (1..rounds) without a finished ``eval.json``; None when every round is done."""
        return next((k for k in range(1, self.cfg.rounds + 1) if not (self.round_dir(k) / "eval.json").exists()), None)

    def run(self) -> dict:
        """Baseline, every round, best-of-N; writes and returns ``summary.json``."""
        rounds = [self.baseline()]
        for k in tqdm(range(1, self.cfg.rounds + 1), desc="RLAIF-V rounds", disable=not self.progress):
            rounds.append(self.run_round(k))
        summary = {"rounds": rounds, "best_of_n": self.best_of_n(), "config": self.cfg.to_dict()}
        write_json(self.dir / "summary.json", summary)
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
