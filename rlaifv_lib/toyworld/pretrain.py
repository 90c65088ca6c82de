"""Pre-train the tiny LLaVA from scratch on the toy world, the way real MLLMs are built.

Stage 1 trains the vision tower alone to recognise what is in each grid cell (shape, colour,
size), as CLIP-style pre-training gives real MLLMs a grounded encoder. Stage 2 freezes it and
trains the projector and decoder on noisy web-like captions (which carry the co-occurrence
prior's hallucinations) plus clean yes/no questions (which teach perception).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from ..errors import ConfigError, check_finite
from .grammar import INSTRUCTIONS, clean_questions, noisy_caption
from .model import LABELER_SIZE, POLICY_SIZE, ToyModelConfig, build_toy_model
from .render import render_scene
from .scenes import COLOURS, GRID, SHAPES, SIZES, Scene, WorldConfig, sample_scene
from .tokenizer import build_processor

__all__ = ["PretrainConfig", "pretrain_toy", "user_prompt"]


@dataclass
class PretrainConfig:
    """Settings of toy pre-training.

    Args:
        role (str, defaults to "policy"): "policy" or "labeler" (a larger decoder, ``LABELER_SIZE``).
        seed (int, defaults to 0): seed of every random choice (same seed, same weights).
        vision_steps (int, defaults to 400): stage-1 steps (vision tower alone).
        vision_batch (int, defaults to 64): images per stage-1 step.
        vision_lr (float, defaults to 1e-3): stage-1 learning rate.
        steps (int | None, defaults to None): stage-2 steps (projector + decoder); None means 1200 for
            the policy and 1000 for the (larger, slower) labeler.
        batch (int, defaults to 32): captions per stage-2 step.
        qa_batch (int, defaults to 64): yes/no questions per stage-2 step.
        lr (float, defaults to 2e-3): stage-2 peak learning rate (cosine decay, warm-up 5%).
        world (WorldConfig): scene distribution and caption noise.
        size (ToyModelConfig | None, defaults to None): model size; None picks by role.
    """

    role: str = "policy"
    seed: int = 0
    vision_steps: int = 400
    vision_batch: int = 64
    vision_lr: float = 1e-3
    steps: int | None = None
    batch: int = 32
    qa_batch: int = 64
    lr: float = 2e-3
    world: WorldConfig = field(default_factory=WorldConfig)
    size: ToyModelConfig | None = None

    def __post_init__(self) -> None:
        check_finite(self)
        if self.role not in ("policy", "labeler"):
            raise ConfigError(f"role must be 'policy' or 'labeler', got {self.role!r}")
        if self.steps is None:
            self.steps = 1200 if self.role == "policy" else 1000
        if min(self.vision_steps, self.steps) < 0 or min(self.batch, self.qa_batch, self.vision_batch) < 1:
            raise ConfigError("steps must be >= 0 and batch sizes >= 1")
        if self.lr <= 0 or self.vision_lr <= 0:
            raise ConfigError("learning rates must be > 0")
        if self.size is None:
            self.size = POLICY_SIZE if self.role == "policy" else LABELER_SIZE


def user_prompt(processor: LlavaProcessor, text: str) -> str:
    """Chat-formatted single-image user turn, ending with the generation prompt."""
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def _scenes(rng: random.Random, world: WorldConfig, n: int) -> list[Scene]:
    return [sample_scene(rng, world, prior=True, id=f"pt{rng.getrandbits(40)}") for _ in range(n)]


def _cell_targets(scenes: list[Scene]) -> torch.Tensor:
    """Per-cell labels (shape+1, colour+1, size+1; 0 = empty) of shape [B, 9, 3]."""
    t = torch.zeros(len(scenes), GRID * GRID, 3, dtype=torch.long)
    for b, s in enumerate(scenes):
        for o in s.objects:
            t[b, o.cell] = torch.tensor([SHAPES.index(o.shape) + 1, COLOURS.index(o.colour) + 1, SIZES.index(o.size) + 1])
    return t


def _pretrain_vision(model: LlavaForConditionalGeneration, proc: LlavaProcessor, cfg: PretrainConfig, rng: random.Random) -> float:
    """Stage 1: per-patch object classification; returns the final batch accuracy."""
    tower = model.model.vision_tower
    d = tower.config.hidden_size
    heads = nn.ModuleList([nn.Linear(d, len(SHAPES) + 1), nn.Linear(d, len(COLOURS) + 1), nn.Linear(d, len(SIZES) + 1)])
    opt = torch.optim.AdamW(list(tower.parameters()) + list(heads.parameters()), lr=cfg.vision_lr)
    acc = 0.0
    bar = tqdm(range(cfg.vision_steps), desc=f"{cfg.role}: vision tower", leave=False)
    for _ in bar:
        scenes = _scenes(rng, cfg.world, cfg.vision_batch)
        pix = proc.image_processor([render_scene(s) for s in scenes], return_tensors="pt")["pixel_values"]
        feats = tower(pixel_values=pix).last_hidden_state[:, 1:, :]
        target = _cell_targets(scenes)
        logits = [h(feats) for h in heads]
        loss = sum(nn.functional.cross_entropy(lg.flatten(0, 1), target[..., k].flatten()) for k, lg in enumerate(logits))
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc = float(torch.stack([lg.argmax(-1) == target[..., k] for k, lg in enumerate(logits)]).all(0).float().mean())
        bar.set_postfix(loss=f"{loss.item():.3f}", cell_acc=f"{acc:.3f}")
    return acc


def _lm_batch(proc: LlavaProcessor, prompts: list[str], completions: list[str], images: list) -> dict:
    """Tokenise prompt+completion pairs; labels only on the completion (the assistant's turn)."""
    tok = proc.tokenizer
    enc = proc(images=images, text=prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    comp = tok(completions, add_special_tokens=False)["input_ids"]
    rows, labels = [], []
    for ids, mask, c in zip(enc["input_ids"], enc["attention_mask"], comp):
        p = ids[mask.bool()].tolist()
        rows.append(p + c)
        labels.append([-100] * len(p) + c)
    width = max(map(len, rows))
    pad = tok.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    label_t = torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": label_t, "pixel_values": enc["pixel_values"]}


def _pretrain_language(model: LlavaForConditionalGeneration, proc: LlavaProcessor, cfg: PretrainConfig, rng: random.Random) -> None:
    """Stage 2: captions + yes/no questions, vision tower frozen."""
    eos = proc.tokenizer.eos_token
    model.model.vision_tower.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / max(1, cfg.steps)))
    )
    bar = tqdm(range(cfg.steps), desc=f"{cfg.role}: captions + yes/no", leave=False)
    for _ in bar:
        scenes = _scenes(rng, cfg.world, cfg.batch)
        images = [render_scene(s) for s in scenes]
        cap = _lm_batch(
            proc,
            [user_prompt(proc, rng.choice(INSTRUCTIONS)) for _ in scenes],
            [f" {noisy_caption(s, rng, cfg.world)} {eos}" for s in scenes],
            images,
        )
        qa_idx = [rng.randrange(len(scenes)) for _ in range(cfg.qa_batch)]
        qas = [clean_questions(scenes[i], rng, 1)[0] for i in qa_idx]
        qa = _lm_batch(
            proc,
            [user_prompt(proc, q) for q, _ in qas],
            [f" {'yes' if a else 'no'} {eos}" for _, a in qas],
            [images[i] for i in qa_idx],
        )
        loss_cap = model(**cap).loss
        loss_qa = model(**qa).loss
        loss = loss_cap + loss_qa
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(caption=f"{loss_cap.item():.3f}", yes_no=f"{loss_qa.item():.3f}")
    model.model.vision_tower.requires_grad_(True)


def pretrain_toy(cfg: PretrainConfig, out: str | Path | None = None) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """Train a tiny LLaVA from scratch on the toy world; save it (safetensors) to ``out`` if given."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    proc = build_processor()
    model = build_toy_model(cfg.size)
    model.train()
    t0 = time.time()
    vision_acc = _pretrain_vision(model, proc, cfg, rng)
    _pretrain_language(model, proc, cfg, rng)
    model.eval()
    if out is not None:
        out = Path(out)
        model.save_pretrained(out, safe_serialization=True)
        proc.save_pretrained(out)
    tqdm.write(f"{cfg.role}: vision cell accuracy {vision_acc:.3f}, trained in {time.time() - t0:.0f}s")
    return model, proc
