"""POPE-style yes/no probing of object hallucination on toy scenes (Li et al. 2023, "POPE").

For each scene, the policy is asked "is there a {shape} ?" about every present shape and about
as many absent ones, drawn three ways (POPE's settings): ``random`` among the absent shapes,
``popular`` (the shapes most frequent in the pre-training distribution) and ``adversarial``
(the shapes that co-occur most with the present ones under the pre-training prior: their
``PARTNERS`` first, then by co-occurrence counts). Answers are read two ways: (a) POPE's text
rule on a greedy generation — the text before the first full stop is "no" if it contains the
word "no" or "not", "yes" otherwise — and (b) from the next-token logits, P(yes) > P(no), as
the labeler reads them (``feedback.yes_no_probs``). Metrics: accuracy, precision, recall, F1
(positive = yes) and the yes-ratio.

In the toy world every shape is equally likely under the prior (only *pairs* are tied), so
``popular`` is close to ``random``; ``adversarial`` is the setting that tests the prior.

On clean toy images the policy answers almost every question right, so the probe sits at its ceiling.
``POPEConfig.noise`` adds seeded Gaussian pixel noise to every image and :func:`pope_noise_sweep` reads
the logit answers at several noise levels: an uncertain model that leaned on the co-occurrence prior
would then say "yes" to a present shape's partner more often than to a random absent shape.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from .errors import ConfigError, check_finite
from .feedback import FeedbackConfig, yes_no_probs
from .images import load_image
from .models import chat_prompt, tokenizer_of
from .toyworld.render import render_scene
from .toyworld.scenes import PARTNERS, SHAPES, Scene, WorldConfig, sample_scenes

__all__ = [
    "SETTINGS",
    "POPEConfig",
    "PriorStats",
    "ProbeItem",
    "prior_stats",
    "absent_shapes",
    "pope_items",
    "parse_yes_no",
    "binary_metrics",
    "greedy_generate",
    "pope_answers",
    "pope_probe",
    "pope_all",
    "noisy_image",
    "pope_images",
    "pope_noise_sweep",
]

SETTINGS: tuple[str, ...] = ("random", "popular", "adversarial")


@dataclass
class POPEConfig:
    """Settings of the POPE probe.

    Args:
        template (str, defaults to "is there a {shape} ?"): the question; POPE's own wording is
            "Is there a {object} in the image?", the toy grammar's is the default.
        seed (int, defaults to 0): seed of the ``random`` setting's draws.
        prior_scenes (int, defaults to 5000): pre-training scenes sampled to estimate shape
            popularity and co-occurrence.
        prior_seed (int, defaults to 1): seed of those scenes.
        max_new_tokens (int, defaults to 4): generation length of a text answer.
        batch_size (int, defaults to 64): questions per ``generate`` / forward call.
        noise (float, defaults to 0.0): standard deviation, in 0-255 pixel units, of the Gaussian noise added to
            every rendered image (0 = clean images); seeded per scene by ``noise_seed``.
        noise_seed (int, defaults to 0): seed of the noise.
    """

    template: str = "is there a {shape} ?"
    seed: int = 0
    prior_scenes: int = 5000
    prior_seed: int = 1
    max_new_tokens: int = 4
    batch_size: int = 64
    noise: float = 0.0
    noise_seed: int = 0

    def __post_init__(self) -> None:
        check_finite(self)
        if self.noise < 0:
            raise ConfigError(f"noise (a standard deviation) must be >= 0, got {self.noise}")
        if "{shape}" not in self.template:
            raise ConfigError(f"template must contain '{{shape}}', got {self.template!r}")
        if self.prior_scenes < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError("prior_scenes, max_new_tokens and batch_size must be >= 1")


@dataclass
class PriorStats:
    """Shape frequencies and pairwise co-occurrence counts in the pre-training scene distribution."""

    frequency: dict[str, int]
    cooccur: dict[str, dict[str, int]]


@dataclass(frozen=True)
class ProbeItem:
    """One POPE question: the scene it is about, the shape asked, the question and the true answer."""

    scene_index: int
    shape: str
    question: str
    truth: bool


def prior_stats(n_scenes: int = 5000, seed: int = 1, world: WorldConfig | None = None) -> PriorStats:
    """Count shapes and co-occurring shape pairs over scenes drawn with the co-occurrence prior."""
    freq: Counter[str] = Counter()
    co: dict[str, Counter[str]] = {s: Counter() for s in SHAPES}
    for scene in sample_scenes(n_scenes, seed, world, prior=True):
        shapes = scene.shapes
        freq.update(shapes)
        for a in shapes:
            co[a].update(b for b in shapes if b != a)
    return PriorStats({s: freq[s] for s in SHAPES}, {a: {b: co[a][b] for b in SHAPES if b != a} for a in SHAPES})


def absent_shapes(scene: Scene, setting: str, k: int, stats: PriorStats, rng: random.Random) -> list[str]:
    """``k`` absent shapes of a scene drawn by a POPE setting (fewer if fewer are absent)."""
    absent = [s for s in SHAPES if s not in scene.shapes]
    k = min(k, len(absent))
    if setting == "random":
        return rng.sample(absent, k)
    if setting == "popular":
        return sorted(absent, key=lambda s: -stats.frequency[s])[:k]
    if setting == "adversarial":
        present = [o.shape for o in scene.in_reading_order()]
        partners = {PARTNERS[p] for p in present}

        def score(s: str) -> tuple[int, int]:
            return (s not in partners, -sum(stats.cooccur[p].get(s, 0) for p in present))

        return sorted(absent, key=score)[:k]
    raise ValueError(f"unknown POPE setting {setting!r}; choose one of {SETTINGS}")


def pope_items(scenes: Sequence[Scene], setting: str, cfg: POPEConfig | None = None, stats: PriorStats | None = None) -> list[ProbeItem]:
    """Every present shape of every scene (answer yes) and as many absent ones (answer no)."""
    cfg = cfg or POPEConfig()
    stats = stats or prior_stats(cfg.prior_scenes, cfg.prior_seed)
    rng = random.Random(f"{cfg.seed}/{setting}")
    items: list[ProbeItem] = []
    for i, scene in enumerate(scenes):
        present = [o.shape for o in scene.in_reading_order()]
        for s in present:
            items.append(ProbeItem(i, s, cfg.template.format(shape=s), True))
        for s in absent_shapes(scene, setting, len(present), stats, rng):
            items.append(ProbeItem(i, s, cfg.template.format(shape=s), False))
    return items


def parse_yes_no(text: str) -> bool:
    """POPE's rule: the text before the first full stop is 'no' if it has the word no/not, else 'yes'."""
    words = re.findall(r"[a-z]+", text.split(".")[0].lower())
    return not ("no" in words or "not" in words)


def binary_metrics(preds: Sequence[bool], truths: Sequence[bool]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (positive = yes), yes-ratio and the confusion counts."""
    if len(preds) != len(truths):
        raise ValueError(f"got {len(preds)} predictions but {len(truths)} truths")
    tp = sum(p and t for p, t in zip(preds, truths))
    fp = sum(p and not t for p, t in zip(preds, truths))
    fn = sum(t and not p for p, t in zip(preds, truths))
    tn = len(preds) - tp - fp - fn
    n = len(preds)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / n if n else 0.0,
        "n": n, "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }  # fmt: skip


def greedy_generate(model: Any, processor: Any, images: Sequence[Any], questions: Sequence[str], max_new_tokens: int = 4) -> list[str]:
    """Greedy answers, one per (image, question) row, in one ``generate`` call."""
    texts = [chat_prompt(processor, q) for q in questions]
    inputs = processor(images=[load_image(im) for im in images], text=texts, return_tensors="pt", padding=True, padding_side="left")
    inputs = inputs.to(model.device)
    tok = tokenizer_of(processor)
    with torch.no_grad():
        out = model.generate(
            **inputs, do_sample=False, max_new_tokens=max_new_tokens,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        )  # fmt: skip
    return [t.strip() for t in tok.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)]


def pope_answers(model: Any, processor: Any, scenes: Sequence[Scene], setting: str, cfg: POPEConfig | None = None, stats: PriorStats | None = None, images: Sequence[Any] | None = None) -> list[dict]:
    """Per question: scene id, shape, question, truth, generated text, its yes/no, P(yes), P(no)."""
    cfg = cfg or POPEConfig()
    images = list(images) if images is not None else [render_scene(s) for s in scenes]
    items = pope_items(scenes, setting, cfg, stats)
    texts: list[str] = []
    for start in range(0, len(items), cfg.batch_size):
        chunk = items[start : start + cfg.batch_size]
        texts += greedy_generate(model, processor, [images[it.scene_index] for it in chunk], [it.question for it in chunk], cfg.max_new_tokens)
    probs = yes_no_probs(model, processor, images, [it.question for it in items], [it.scene_index for it in items], FeedbackConfig(batch_size=cfg.batch_size))
    return [
        {"scene_id": scenes[it.scene_index].id, "shape": it.shape, "question": it.question, "truth": it.truth,
         "text": t, "text_yes": parse_yes_no(t), "p_yes": py, "p_no": pn, "logit_yes": py > pn}
        for it, t, (py, pn) in zip(items, texts, probs)
    ]  # fmt: skip


def pope_probe(model: Any, processor: Any, scenes: Sequence[Scene], setting: str, cfg: POPEConfig | None = None, stats: PriorStats | None = None, images: Sequence[Any] | None = None) -> dict[str, dict[str, float]]:
    """POPE metrics of one setting: ``{"text": metrics, "logits": metrics}``."""
    rows = pope_answers(model, processor, scenes, setting, cfg, stats, images)
    truths = [r["truth"] for r in rows]
    return {
        "text": binary_metrics([r["text_yes"] for r in rows], truths),
        "logits": binary_metrics([r["logit_yes"] for r in rows], truths),
    }


def pope_all(model: Any, processor: Any, scenes: Sequence[Scene], cfg: POPEConfig | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """POPE metrics of every setting: ``{setting: {"text": metrics, "logits": metrics}}``."""
    cfg = cfg or POPEConfig()
    stats = prior_stats(cfg.prior_scenes, cfg.prior_seed)
    images = pope_images(scenes, cfg)
    return {s: pope_probe(model, processor, scenes, s, cfg, stats, images) for s in SETTINGS}


def noisy_image(image: Image.Image, sigma: float, seed: int) -> Image.Image:
    """``image`` with seeded Gaussian pixel noise of standard deviation ``sigma`` (0-255 units), clipped."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    pixels = pixels + np.random.default_rng(seed).normal(0.0, sigma, pixels.shape)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def pope_images(scenes: Sequence[Scene], cfg: POPEConfig | None = None) -> list[Image.Image]:
    """The rendered scenes the probe asks about, with ``cfg.noise`` added (scene i's noise seeded by (noise_seed, i))."""
    cfg = cfg or POPEConfig()
    images = [render_scene(s) for s in scenes]
    if not cfg.noise:
        return images
    return [noisy_image(im, cfg.noise, _image_seed(cfg.noise_seed, i)) for i, im in enumerate(images)]


def _image_seed(seed: int, index: int) -> int:
    """A per-image seed from (seed, index)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def pope_noise_sweep(model: Any, processor: Any, scenes: Sequence[Scene], noises: Sequence[float], cfg: POPEConfig | None = None) -> dict[float, dict[str, dict[str, float]]]:
    """Logit-answer POPE metrics per noise level and setting: ``{noise: {setting: metrics}}``."""
    cfg = cfg or POPEConfig()
    if not noises:
        raise ConfigError("pope_noise_sweep needs at least one noise level")
    stats = prior_stats(cfg.prior_scenes, cfg.prior_seed)
    items = {s: pope_items(scenes, s, cfg, stats) for s in SETTINGS}
    out: dict[float, dict[str, dict[str, float]]] = {}
    for noise in noises:
        images = pope_images(scenes, replace(cfg, noise=float(noise)))
        out[float(noise)] = {}
        for s, its in items.items():
            probs = yes_no_probs(model, processor, images, [it.question for it in its], [it.scene_index for it in its], FeedbackConfig(batch_size=cfg.batch_size))
            out[float(noise)][s] = binary_metrics([py > pn for py, pn in probs], [it.truth for it in its])
    return out
