"""Hallucination metrics: CHAIR, coverage, yes/no probing and the labeler's self-check.

CHAIR (Rohrbach et al. 2018): CHAIR_i = hallucinated object mentions / all object mentions
(repeats counted); CHAIR_s = responses with >= 1 hallucinated mention / all responses.
Coverage = sum |mentioned ∩ truth| / sum |truth|. In the toy world an object is a shape, and
ground truth is exact.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

from .errors import EmptyEvaluationError, check_finite
from .breakdowns import unclaimed_sentences
from .claims import ToyDecomposer
from .engine import EngineSettings, label, run_pass
from .feedback import FeedbackConfig, yes_no_probs
from .records import Prompt, Verdict, prompt_of
from .sampling import SamplingConfig
from .toyworld.grammar import INSTRUCTIONS, existence_question, parse_description, true_answer
from .toyworld.render import render_scene
from .toyworld.scenes import PARTNERS, SHAPES, Scene

__all__ = [
    "toy_mentions",
    "chair",
    "existence_probe",
    "yes_no_accuracy",
    "EvalConfig",
    "evaluate_policy",
]


def toy_mentions(text: str) -> list[str]:
    """Object (shape) mentions of a toy description, in order, repeats kept."""
    return [m.shape for m in parse_description(text)]


def chair(texts: Sequence[str], truths: Sequence[set[str]], mentions_fn=toy_mentions) -> dict[str, float | None]:
    """CHAIR_i, CHAIR_s, coverage and mean words of responses against ground-truth object sets."""
    if len(texts) == 0:
        raise EmptyEvaluationError("CHAIR of no responses: a rate over nothing has no value; give at least one response.")
    n_mentions = n_hall = n_hall_resp = covered = n_truth = words = 0
    for text, truth in zip(texts, truths, strict=True):
        mentions = mentions_fn(text)
        hall = [m for m in mentions if m not in truth]
        n_mentions += len(mentions)
        n_hall += len(hall)
        n_hall_resp += bool(hall)
        covered += len(set(mentions) & set(truth))
        n_truth += len(truth)
        words += len(text.split())
    n = max(1, len(texts))
    return {
        "chair_i": n_hall / n_mentions if n_mentions else None,  # no mention: a rate over nothing is absent, not 0
        "chair_s": n_hall_resp / n,
        "coverage": covered / n_truth if n_truth else None,
        "mean_words": words / n,
        "n_mentions": n_mentions,
        "n_hallucinated": n_hall,
    }


def existence_probe(scenes: Sequence[Scene], seed: int = 0) -> list[tuple[int, str, bool]]:
    """(scene index, question, true answer): each present shape, and as many absent ones, adversarial first.

    Absent shapes are drawn first among the co-occurrence partners of present shapes (POPE's
    adversarial split), then at random among the other absent shapes.
    """
    rng = random.Random(seed)
    rows = []
    for i, s in enumerate(scenes):
        present = [o.shape for o in s.in_reading_order()]
        partners = [PARTNERS[p] for p in present if PARTNERS[p] not in s.shapes]
        others = [x for x in SHAPES if x not in s.shapes and x not in partners]
        rng.shuffle(partners)
        rng.shuffle(others)
        absent = partners + others
        for k, p in enumerate(present):
            rows.append((i, existence_question(p), True))
            rows.append((i, existence_question(absent[k]), False))
    return rows


def yes_no_accuracy(model: Any, processor: Any, scenes: Sequence[Scene], images: Sequence[Any] | None = None, cfg: FeedbackConfig | None = None) -> float:
    """Accuracy of the model's P(yes) > P(no) answers on the adversarial existence probe."""
    images = list(images) if images is not None else [render_scene(s) for s in scenes]
    probe = existence_probe(scenes)
    probs = yes_no_probs(model, processor, images, [q for _, q, _ in probe], [i for i, _, _ in probe], cfg)
    return sum((py > pn) == truth for (py, pn), (_, _, truth) in zip(probs, probe)) / max(1, len(probe))


@dataclass
class EvalConfig:
    """Settings of the held-out evaluation.

    Args:
        temperature (float, defaults to SamplingConfig's): sampling temperature of the descriptions.
        seed (int, defaults to 0): sampling seed.
        max_new_tokens (int, defaults to SamplingConfig's): response length cap.
        batch_size (int, defaults to 100): rows per generate / forward call.
        question_suffix (str, defaults to ""): appended to every yes/no question (``FeedbackConfig.question_suffix``;
            real models: " Please answer yes or no.").
    """

    temperature: float = SamplingConfig.temperature
    seed: int = 0
    max_new_tokens: int = SamplingConfig.max_new_tokens
    batch_size: int = 100
    question_suffix: str = ""

    def engine_settings(self) -> EngineSettings:
        """One description per prompt, the judge's batches: the data-engine settings of an evaluation."""
        return EngineSettings(
            sampling=SamplingConfig(n=1, temperature=self.temperature, seed=self.seed, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size),
            feedback=FeedbackConfig(batch_size=self.batch_size, question_suffix=self.question_suffix),
        )

    def __post_init__(self) -> None:
        check_finite(self)
        self.sampling()  # checks temperature, max_new_tokens and batch_size

    def sampling(self) -> SamplingConfig:
        """The decoding settings of the descriptions: one sample per scene."""
        return SamplingConfig(n=1, temperature=self.temperature, seed=self.seed, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)


def evaluate_policy(model: Any, processor: Any, scenes: Sequence[Scene], cfg: EvalConfig | None = None, labeler: tuple[Any, Any] | None = None, progress: bool = False) -> dict[str, Any]:
    """Held-out metrics of a policy: CHAIR_i, CHAIR_s, coverage, mean words, yes/no, self-check and labeler accuracy.

    ``self_check_accuracy``: the policy's own verdicts on the object (existence) claims of its own
    descriptions, against the truth. ``labeler_accuracy``: the labeler's verdicts (the policy
    itself unless ``labeler`` is given) on *every* toy claim of those descriptions.
    ``unclaimed_rate``: the share of their sentences that name no shape, which no claim checks
    (``breakdowns.unclaimed_sentences``).
    """
    if not scenes:
        raise EmptyEvaluationError("no evaluation scenes: metrics over nothing have no value. Evaluate on at least one scene (e.g. rlaifv eval --n 200).")
    cfg = cfg or EvalConfig()
    images = [render_scene(s) for s in scenes]
    prompts = [Prompt(s.id, im, INSTRUCTIONS[0]) for s, im in zip(scenes, images)]
    settings = cfg.engine_settings()
    own = run_pass(prompts, (model, processor), None, ToyDecomposer(), settings, progress=progress, pairs=False)
    texts = [c.text for c in own.candidates]
    metrics: dict[str, Any] = chair(texts, [s.shapes for s in scenes])
    metrics["unclaimed_rate"] = unclaimed_sentences(texts)["rate"]
    metrics["yes_no_accuracy"] = yes_no_accuracy(model, processor, scenes, images, settings.feedback)
    by_id = {s.id: s for s in scenes}
    truth = [true_answer(by_id[prompt_of(c.candidate_id)], c.question) for c in own.claims]
    exist = [k for k, c in enumerate(own.claims) if c.kind == "existence"]
    metrics["self_check_accuracy"] = _agree(own.verdicts, truth, exist)
    judge = own.verdicts if labeler is None else label(labeler, own.claims, prompts, settings.feedback, progress=False)
    metrics["labeler_accuracy"] = _agree(judge, truth, range(len(own.claims)))
    metrics["n_claims"] = len(own.claims)
    metrics["texts"] = texts
    return metrics


def _agree(verdicts: Sequence[Verdict], truth: Sequence[bool], idx: Sequence[int]) -> float | None:
    """Share of verdicts (accepted = P(yes) > P(no)) equal to the truth, over the given indices; None over none."""
    idx = list(idx)
    return sum(verdicts[k].accepted == truth[k] for k in idx) / len(idx) if idx else None
