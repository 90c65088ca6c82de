"""The RLAIF-V loop: one round = sample -> decompose -> score -> pairs -> DPO -> evaluate; k rounds.

Each round samples fresh candidates from the newest policy (on-policy, as the paper insists:
one offline DPO pass on a fixed set is what users who fail to reproduce it do). Every stage
writes one artifact to the run directory, atomically; a stage whose complete artifact exists is
not recomputed, so an interrupted run resumes where it stopped and ends with the same files.

    run_dir/
      run.json                     version + configuration (checked on resume)
      round_0/eval.json            the baseline, before any training
      round_k/prompts.jsonl        the round's (image, instruction) prompts, from the run's prompt source
              candidates.jsonl     N deconfounded candidates per prompt
              claims.jsonl         atomic claims with their polar questions
              verdicts.jsonl       labeler P(yes)/P(no) per claim
              scored.jsonl         response scores = -(rejected claims)
              pairs.jsonl          chosen/rejected pairs (+ pair_stats.json)
              dpo/                 LoRA adapters + dpo_log.json (trainer log)
              model/               the merged policy the next round samples from
              eval.json            held-out metrics of round_k/model
      best_of_n.json               inference-time guidance with the final DPO reward (base policy's samples)
      tuned_best_of_n.json         the same on the final policy's own samples (only with tuned_best_of_n)
      summary.json                 one row per round + best-of-N

``candidates.jsonl`` to ``pairs.jsonl`` are one data-engine pass (``engine.run_pass``); the prompts come
from ``sources.open_source(cfg.prompts, ...)`` (the toy world by default).

The same code runs as one process or as N (``torchrun`` / ``accelerate launch``, see README "Scaling out"): every
process runs every stage; sampling, decomposition, scoring and evaluation split their batches over the processes
(``rlaifv_lib.distributed``), DPO trains under DDP, and rank 0 alone writes the run directory, so the artifacts
are the same bytes as a 1-process run's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from . import __version__, distributed
from .audit import labeler_audit
from .claims import ClaimsConfig, Decomposer, make_decomposer
from .dpo import DPOSettings, merge_adapters, toy_dpo_settings, train_dpo
from .engine import EngineSettings, run_pass
from .errors import ConfigError, check_finite
from .evaluation import evaluate_prompts, text_metrics
from .feedback import FeedbackConfig
from .guidance import GuidanceConfig, compare_selections, score_for_guidance
from .hallucination import EvalConfig, chair, evaluate_policy
from .models import PRESETS, LoadOptions, ModelPreset, get_preset, load_causal_lm, load_model, load_processor, resolve_model
from .pairs import PairConfig, to_trl_dataset
from .records import PreferencePair, Prompt, read_json
from .rundir import RunDirectory
from .sampling import SamplingConfig, sample_candidates
from .sources import DESCRIBE, ListSource, PromptSource, ToySource, open_source, round_seed

__all__ = ["RUN_FORMAT", "RLAIFVConfig", "RLAIFVRun", "SUMMARY_KEYS", "config_from_dict", "latest_policy", "quick_config", "notebook_config", "base_and_tuned", "guided_best_of_n"]

RUN_FORMAT = 2  # bump when the layout or the meaning of an artifact changes (2: artifacts record their configuration)
SUMMARY_KEYS = ("chair_i", "chair_s", "coverage", "mean_words", "labeler_accuracy", "n_pairs", "seconds")


# settings added for the ablations (rlaifv ablate), recorded in run.json only when they differ from their default
_RECORDED_WHEN_CHANGED = (("sampling", "second_temperature"), ("feedback", "unit"), ("feedback", "response_question"))
_NESTED = {"sampling": SamplingConfig, "claims": ClaimsConfig, "feedback": FeedbackConfig, "pairs": PairConfig, "dpo": DPOSettings, "load": LoadOptions}


@dataclass
class RLAIFVConfig:
    """Settings of a k-round RLAIF-V run (defaults: the toy world's demo).

    Args:
        rounds (int, defaults to 3): on-policy rounds (official: 4).
        prompts_per_round (int, defaults to 100): fresh training prompts per round.
        policy (str, defaults to "toy-policy"): starting policy (a preset name or a model folder).
        labeler (str | None, defaults to None): None = self-feedback (the current policy labels
            its own candidates); else a separate labeler (preset name or model folder).
        prompts (str | None, defaults to None): where the prompts come from (``sources.open_source``): None = the
            toy world; a ``.jsonl`` prompt file, an image folder, RLAIF-V parquet files or a saved ``datasets`` folder.
        eval_prompts (str | None, defaults to None): a ``.jsonl`` prompt file with the fixed evaluation set; None =
            the toy world's held-out scenes, or a held-out split of ``prompts``.
        instructions (tuple of str, defaults to (sources.DESCRIBE,)): the instructions of an image-folder source.
        judge (str | None, defaults to None): the fixed model whose rejection rate the evaluation reports on prompts
            without a toy world (preset or folder); None = the labeler, or the starting policy under self-feedback.
        decomposer_model (str | None, defaults to None): the chat LM of ``claims.decomposer == "llm"`` (preset or folder).
        preset (str | None, defaults to None): the preset whose question suffix, LoRA targets, DPO settings and image
            cap :func:`config_from_dict` fills in; None = the policy's own preset when ``policy`` names one.
        load (LoadOptions): how the policy, labeler, judge and decomposer are loaded (4-bit, dtype, device map,
            max_pixels).
        sampling (SamplingConfig): candidates per prompt, temperature, ...
        claims (ClaimsConfig): the divide step.
        feedback (FeedbackConfig): the conquer step.
        pairs (PairConfig): pair construction (margin, cap per prompt, length balancing).
        dpo (DPOSettings): QLoRA DPO settings of every round (``dpo.toy_dpo_settings()``: lr 1e-3,
            2 epochs, SFT weight 1.0).
        eval_scenes (int, defaults to 200): size of the fixed held-out evaluation set (toy scenes, or the split held
            out of ``prompts`` when there is no ``eval_prompts``).
        best_of_n (int, defaults to 8): candidates per prompt for inference-time guidance (0 = skip).
        best_of_n_prompts (int, defaults to 100): held-out prompts used for best-of-N.
        tuned_best_of_n (int, defaults to 0): candidates per prompt for best-of-N on the *final* policy's own samples
            (its implicit reward against the starting policy as reference, the paper's inference-time scaling applied
            to the RLAIF-V model), on the same ``best_of_n_prompts``; 0 = skip (then left out of ``run.json``, so
            runs made before this setting existed resume).
        seed (int, defaults to 0): seed of everything random in the run.
    """

    rounds: int = 3
    prompts_per_round: int = 100
    policy: str = "toy-policy"
    labeler: str | None = None
    prompts: str | None = None
    eval_prompts: str | None = None
    instructions: tuple[str, ...] = (DESCRIBE,)
    judge: str | None = None
    decomposer_model: str | None = None
    preset: str | None = None
    load: LoadOptions = field(default_factory=LoadOptions)
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(n=8, batch_size=200))
    claims: ClaimsConfig = field(default_factory=ClaimsConfig)
    feedback: FeedbackConfig = field(default_factory=lambda: FeedbackConfig(batch_size=256))
    pairs: PairConfig = field(default_factory=PairConfig)
    dpo: DPOSettings = field(default_factory=toy_dpo_settings)
    eval_scenes: int = 200
    best_of_n: int = 8
    best_of_n_prompts: int = 100
    tuned_best_of_n: int = 0
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
        if self.feedback.unit == "response" and self.pairs.min_margin >= 1:
            raise ConfigError(f"feedback.unit 'response' scores are P(yes) in [0, 1]: pairs.min_margin {self.pairs.min_margin} >= 1 pairs (almost) nothing (try 0.1)")
        if self.best_of_n == 1 or self.best_of_n < 0:
            raise ConfigError(f"best_of_n must be 0 (skip) or >= 2, got {self.best_of_n}")
        if self.tuned_best_of_n == 1 or self.tuned_best_of_n < 0:
            raise ConfigError(f"tuned_best_of_n must be 0 (skip) or >= 2, got {self.tuned_best_of_n}")
        if (self.best_of_n or self.tuned_best_of_n) and self.best_of_n_prompts < 1:
            raise ConfigError(f"best_of_n_prompts must be >= 1 when best_of_n or tuned_best_of_n is on, got {self.best_of_n_prompts}")
        self.instructions = tuple(self.instructions)
        if not self.instructions or not all(isinstance(i, str) and i.strip() for i in self.instructions):
            raise ConfigError("instructions must be a non-empty list of non-empty strings")
        if self.preset is not None:
            get_preset(self.preset)
        if self.prompts is not None and self.claims.decomposer == "toy":
            raise ConfigError(
                "the toy decomposer only reads the toy world's grammar; with your own prompts use "
                "claims.decomposer 'rules' or 'llm' (rlaifv run --decomposer rules)."
            )
        if self.eval_prompts is not None and self.prompts is None:
            raise ConfigError("eval_prompts needs prompts too (the toy world has its own held-out scenes)")
        if (self.claims.decomposer == "llm") != (self.decomposer_model is not None):
            raise ConfigError("claims.decomposer 'llm' needs decomposer_model (a chat LM preset or folder), and only it uses one")

    @property
    def toy(self) -> bool:
        """Whether the prompts come from the toy world."""
        return self.prompts is None

    def to_dict(self) -> dict:
        """JSON-ready form (what ``run.json`` records and :func:`config_from_dict` reads)."""
        d = asdict(self)
        if not d["tuned_best_of_n"]:
            del d["tuned_best_of_n"]  # off: the header of a run made before the setting existed still matches
        if d["load"]["dtype"] is not None:
            d["load"]["dtype"] = str(d["load"]["dtype"]).removeprefix("torch.")
        for step, name in _RECORDED_WHEN_CHANGED:  # so runs made before these settings existed still resume, same files
            if d[step][name] == _NESTED[step].__dataclass_fields__[name].default:
                del d[step][name]
        return json.loads(json.dumps(d, default=str))


def _preset_of(values: dict) -> ModelPreset:
    """The preset that fills a config's defaults: ``preset``, else the policy's when it names one, else the generic
    defaults of a model folder (``ModelPreset``'s own: the official β and LoRA shape, the yes/no question suffix)."""
    policy = values.get("policy", RLAIFVConfig.policy)
    name = values.get("preset") or (policy if policy in PRESETS else None)
    return get_preset(name) if name is not None else ModelPreset(str(policy), str(policy), "policy", "folder")


def config_from_dict(values: dict) -> RLAIFVConfig:
    """An ``RLAIFVConfig`` from a nested dict (a YAML config file, ``to_dict()`` output), validated once on the final values.

    The preset (``preset``, or the policy's when ``policy`` names one) fills the defaults it has an opinion on —
    ``feedback.question_suffix``, ``dpo`` (β, learning rate, epochs, SFT weight, LoRA r/alpha/targets) and
    ``load.max_pixels`` — and the dict's own values win over them. With your own ``prompts`` the decomposer
    defaults to "rules". Unknown keys are an error.
    """
    values = dict(values)
    known = {f for f in RLAIFVConfig.__dataclass_fields__}
    if unknown := sorted(set(values) - known):
        raise ConfigError(f"unknown run setting(s) {unknown}; known: {sorted(known)}")
    preset = _preset_of(values)
    base: dict[str, dict] = {name: {} for name in _NESTED}
    base["feedback"]["question_suffix"] = preset.question_suffix
    base["dpo"].update(preset.dpo_overrides())
    base["load"]["max_pixels"] = preset.max_pixels
    if values.get("prompts") is not None:
        base["claims"]["decomposer"] = "rules"
    defaults = RLAIFVConfig.__dataclass_fields__
    for name, cls in _NESTED.items():
        given = values.get(name) or {}
        if isinstance(given, cls):
            continue
        if not isinstance(given, dict):
            raise ConfigError(f"{name} must be a mapping of {cls.__name__} fields, got {type(given).__name__}")
        start = asdict(defaults[name].default_factory())  # type: ignore[misc]
        if unknown := sorted(set(given) - set(start)):
            raise ConfigError(f"unknown {name} setting(s) {unknown}; known: {sorted(start)}")
        values[name] = cls(**{**start, **base[name], **given})
    return RLAIFVConfig(**values)


class RLAIFVRun:
    """A resumable RLAIF-V run in ``run_dir``; ``run()`` does every round that is not yet done.

    ``on_written`` (optional) is called with the path of each artifact right after it is complete.
    """

    def __init__(self, run_dir: str | Path, cfg: RLAIFVConfig | None = None, progress: bool = True, on_written: Callable[[Path], None] | None = None):
        self.dir = Path(run_dir).absolute()
        self.cfg = cfg or RLAIFVConfig()
        self.progress = progress
        header = {"format": RUN_FORMAT, "version": __version__, "config": self.cfg.to_dict()}
        self.rd = RunDirectory(self.dir, header, on_written, unrecorded_formats=(1,))  # locked, header checked, stale temporaries gone
        self.source: PromptSource = open_source(self.cfg.prompts, self.cfg.eval_prompts, self.cfg.eval_scenes, self.cfg.instructions)
        capacity = len(self.source.pool) if isinstance(self.source, ListSource) else None
        if capacity is not None and self.cfg.rounds * self.cfg.prompts_per_round > capacity:
            raise ConfigError(
                f"{self.source.name} has {capacity} training prompts; {self.cfg.rounds} rounds x {self.cfg.prompts_per_round} "
                "prompts need more (prompts are never repeated across rounds). Give more prompts, or lower rounds or prompts_per_round."
            )
        self._eval = self.source.evaluation()
        self._loaded: dict[str, tuple[Any, Any]] = {}
        self._labeler: tuple[Any, Any] | None = None
        self._judge: tuple[Any, Any] | None = None
        self._decomposer: Decomposer | None = None

    def round_dir(self, k: int) -> Path:
        """Folder of round k (0 = baseline)."""
        return self.dir / f"round_{k}"

    def policy_path(self, k: int) -> str:
        """The policy round k+1 samples from: the start policy for k = 0, else round k's merged model."""
        return str(resolve_model(self.cfg.policy)) if k == 0 else str(self.round_dir(k) / "model")

    def _model(self, path: str) -> tuple[Any, Any]:
        if path not in self._loaded:
            self._loaded.clear()
            self._loaded[path] = load_model(path, options=self.cfg.load)
        return self._loaded[path]

    def _labeler_for(self, policy_path: str) -> tuple[Any, Any]:
        if self.cfg.labeler is None:
            return self._model(policy_path)
        if self._labeler is None:
            self._labeler = load_model(self.cfg.labeler, options=self.cfg.load)
        return self._labeler

    def judge_name(self) -> str:
        """The fixed judge of the evaluation on prompts without a toy world: ``judge``, else the labeler, else the start policy."""
        return self.cfg.judge or self.cfg.labeler or self.cfg.policy

    def _judge_model(self) -> tuple[Any, Any]:
        if self.judge_name() == self.cfg.labeler:
            return self._labeler_for(self.policy_path(0))
        if self._judge is None:
            self._judge = load_model(self.judge_name(), options=self.cfg.load)
        return self._judge

    def decomposer(self) -> Decomposer:
        """The divide step of every round (the LLM decomposer's chat model is loaded once, on first use)."""
        if self._decomposer is None:
            llm = load_causal_lm(self.cfg.decomposer_model, self.cfg.load) if self.cfg.decomposer_model else (None, None)
            self._decomposer = make_decomposer(self.cfg.claims, *llm)
        return self._decomposer

    # ----- stages --------------------------------------------------------------------------
    def _prompts(self, k: int) -> list[Prompt]:
        rows = self.rd.jsonl(self.round_dir(k) / "prompts.jsonl", lambda: [self.source.record(p) for p in self.source.training(k, self.cfg.prompts_per_round, self.cfg.seed)], None)
        return [self.source.restore(r) for r in rows]

    def engine_settings(self, k: int) -> EngineSettings:
        """The data-engine settings of round k (sampling and pairing seeded per round)."""
        return EngineSettings(
            sampling=SamplingConfig(**{**asdict(self.cfg.sampling), "seed": round_seed(self.cfg.seed, k, "sampling")}),
            claims=self.cfg.claims,
            feedback=self.cfg.feedback,
            pairs=PairConfig(**{**asdict(self.cfg.pairs), "seed": round_seed(self.cfg.seed, k, "pairs")}),
        )

    def run_round(self, k: int) -> dict:
        """Run (or resume) round k >= 1 and return its held-out metrics."""
        rd = self.round_dir(k)
        if self.rd.done(rd / "eval.json"):
            return self.rd.read_json(rd / "eval.json")
        t0 = time.perf_counter()
        start = self.policy_path(k - 1)
        prompts = self._prompts(k)
        data = run_pass(
            prompts, lambda: self._model(start), None if self.cfg.labeler is None else (lambda: self._labeler_for(start)),
            self.decomposer(), self.engine_settings(k), _RoundStore(self, rd), self.progress,
        )  # fmt: skip
        self._train_and_merge(k, start, data.pairs, prompts)
        metrics = self._evaluate(k, self.policy_path(k))
        metrics.update(n_pairs=len(data.pairs))
        if isinstance(self.source, ToySource):
            metrics.update(train_labeler_accuracy=labeler_audit(data.claims, data.verdicts, self.source.scenes)["accuracy"])
        metrics.update(seconds=time.perf_counter() - t0)
        self.rd.write_json(rd / "eval.json", metrics)
        return metrics

    def _train_and_merge(self, k: int, start: str, pairs: list[PreferencePair], prompts: list[Prompt]) -> None:
        rd = self.round_dir(k)
        model_dir = rd / "model"
        if self.rd.done(model_dir):
            return
        if not pairs:  # nothing to learn from: the next round starts from the same policy
            if distributed.is_main():
                tqdm.write(f"round {k}: no preference pairs (see pair_stats.json); the policy is carried over unchanged")
            self.rd.folder(model_dir, lambda tmp: shutil.copytree(start, tmp, dirs_exist_ok=True))
            return
        if not self.rd.done(rd / "dpo"):
            self._attach(pairs, prompts)
            self._loaded.clear()  # free the policy before training
            settings = DPOSettings(**{**asdict(self.cfg.dpo), "seed": round_seed(self.cfg.seed, k, "dpo"), "progress": self.progress})
            train_dpo(start, load_processor(start, self.cfg.load), to_trl_dataset(pairs), settings, rd / "dpo")  # DDP under a launch
            self.rd.mark_done(rd / "dpo")
        if self.rd.writer:  # one process merges and writes; the others wait in mark_done
            merge_adapters(start, rd / "dpo" / "adapter", model_dir)
        self.rd.mark_done(model_dir)

    @staticmethod
    def _attach(pairs: list[PreferencePair], prompts: list[Prompt]) -> None:
        """Give each pair its prompt's image and instruction."""
        by_id = {p.id: p for p in prompts}
        for pair in pairs:
            pair.image = by_id[pair.prompt_id].image
            pair.instruction = by_id[pair.prompt_id].instruction

    def round_pairs(self, k: int) -> list[PreferencePair]:
        """Round k's preference pairs with their images and instructions (e.g. for ``rlaifv_dataset.export_rlaifv_parquet``)."""
        pairs = self.rd.read_jsonl(self.round_dir(k) / "pairs.jsonl", PreferencePair)
        self._attach(pairs, self._prompts(k))
        return pairs

    def _evaluate(self, k: int, policy: str) -> dict:
        model, processor = self._model(policy)
        if isinstance(self.source, ToySource):
            labeler = None if self.cfg.labeler is None else self._labeler_for(policy)
            m = evaluate_policy(model, processor, self.source.eval_scenes, EvalConfig(seed=self.cfg.seed), labeler=labeler, progress=self.progress)
        else:
            judge = self._judge_model() if self.judge_name() != self.cfg.policy or k > 0 else None
            m = evaluate_prompts(model, processor, self._eval, judge, self.judge_name(), self.decomposer(), self._eval_config(), self.progress)
        m.pop("texts", None)
        return m

    def _eval_config(self) -> EvalConfig:
        s = self.cfg.sampling
        return EvalConfig(temperature=s.temperature, seed=self.cfg.seed, max_new_tokens=s.max_new_tokens, batch_size=min(s.batch_size, self.cfg.feedback.batch_size), question_suffix=self.cfg.feedback.question_suffix)

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
        return self._guided(self.cfg.best_of_n, self.policy_path(0), "best_of_n")

    def tuned_best_of_n(self) -> dict | None:
        """Best-of-N over the final policy's own candidates, ranked by its implicit reward against the base policy."""
        return self._guided(self.cfg.tuned_best_of_n, self.policy_path(self.cfg.rounds), "tuned_best_of_n")

    def _guided(self, n: int, sampler_path: str, name: str) -> dict | None:
        """``name.json``: N candidates per held-out prompt from ``sampler_path``, picked by the final policy's implicit
        reward (reference: the starting policy), at random, and by the final policy's log-likelihood."""
        if not n:
            return None
        path = self.dir / f"{name}.json"
        if self.rd.done(path):
            return self.rd.read_json(path)
        prompts = self._eval[: self.cfg.best_of_n_prompts]
        base_path, final_path = self.policy_path(0), self.policy_path(self.cfg.rounds)
        sampler, processor = self._model(sampler_path)
        self._loaded.clear()
        base = sampler if sampler_path == base_path else load_model(base_path, options=self.cfg.load)[0]
        final = sampler if sampler_path == final_path else load_model(final_path, options=self.cfg.load)[0]
        out = guided_best_of_n(sampler, base, final, processor, prompts, self.cfg.sampling, n, self.cfg.seed, name, self.cfg.dpo.beta, self._pick_metrics, self.progress)
        del final, base, sampler
        self.rd.write_json(path, out)
        return out

    def _pick_metrics(self, prompts: list[Prompt], picked: list) -> dict:
        """CHAIR and words of the picked responses (toy world), or the evaluation's text metrics."""
        if isinstance(self.source, ToySource):
            m = chair([c.text for c in picked], [self.source.scenes[p.id].shapes for p in prompts])
            return {key: m[key] for key in ("chair_i", "chair_s", "coverage", "mean_words")}
        m = text_metrics(prompts, picked, self._judge_model(), self.judge_name(), self.decomposer(), self._eval_config(), progress=False)
        return {key: v for key, v in m.items() if key != "texts"}

    def release(self) -> None:
        """Free the models this run has loaded (policy, labeler, judge); they are loaded again on the next use."""
        self._loaded.clear()
        self._labeler = self._judge = None

    def next_round(self) -> int | None:
        """The first round k (1..rounds) without a finished ``eval.json``; None when every round is done."""
        return next((k for k in range(1, self.cfg.rounds + 1) if not self.rd.done(self.round_dir(k) / "eval.json")), None)

    def run(self) -> dict:
        """Baseline, every round, best-of-N (and on the tuned policy, if configured); writes and returns ``summary.json``."""
        rounds = [self.baseline()]
        for k in tqdm(range(1, self.cfg.rounds + 1), desc="RLAIF-V rounds", disable=not self.progress or not distributed.is_main()):
            rounds.append(self.run_round(k))
        summary = {"rounds": rounds, "best_of_n": self.best_of_n(), "config": self.cfg.to_dict()}
        if self.cfg.tuned_best_of_n:
            summary["tuned_best_of_n"] = self.tuned_best_of_n()
        self.rd.write_if_changed(self.dir / "summary.json", summary)  # unchanged: not rewritten (read-only storage works)
        return summary


class _RoundStore:
    """The data engine's store for one round: its artifacts are stages of the run directory."""

    def __init__(self, run: RLAIFVRun, folder: Path):
        self.run, self.folder = run, folder

    def stage(self, name: str, compute: Callable[[], list], cls: type | None) -> list:
        """Read ``folder/name`` if it was made with this configuration, else compute and write it (``RunDirectory.jsonl``)."""
        return self.run.rd.jsonl(self.folder / name, compute, cls)

    def write_json(self, name: str, obj: Any) -> None:
        """Write ``folder/name`` (a side file of a stage: not reported as an artifact)."""
        self.run.rd.write_json(self.folder / name, obj, report=False)


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


def guided_best_of_n(sampler: Any, base: Any, final: Any, processor: Any, prompts: list[Prompt], sampling: SamplingConfig, n: int, seed: int, name: str,
                     beta: float, metrics: Callable[[list[Prompt], list], dict], progress: bool = True) -> dict:
    """N samples per prompt from ``sampler``, picked by ``final``'s implicit reward (reference ``base``), at random and by log-likelihood; ``metrics`` of each pick."""
    scfg = SamplingConfig(**{**asdict(sampling), "n": n, "seed": round_seed(seed, 0, name)})
    cands = sample_candidates(sampler, processor, prompts, scfg, progress)
    scores = score_for_guidance(final, base, processor, prompts, cands, GuidanceConfig(beta=beta), progress)
    out: dict[str, Any] = {"n": n, "prompts": len(prompts)}
    for sel, chosen in compare_selections(cands, scores, seed=seed).items():
        prefix = "" if sel == "reward" else f"{sel}_"
        out.update({f"{prefix}{key}": v for key, v in metrics(prompts, [chosen[p.id] for p in prompts]).items()})
    return out


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
