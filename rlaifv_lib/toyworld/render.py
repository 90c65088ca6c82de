"""Render toy scenes to small RGB images with PIL (48x48, one 16-px cell per grid position)."""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw

from .scenes import GRID, Scene, ToyObject

__all__ = ["IMAGE_SIZE", "CELL", "RGB", "render_scene"]

CELL = 16
IMAGE_SIZE = CELL * GRID
RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
    "purple": (160, 60, 200),
}
_RADIUS = {"small": 3.5, "large": 6.5}


def _draw(d: ImageDraw.ImageDraw, o: ToyObject, rng: random.Random) -> None:
    r = _RADIUS[o.size]
    row, col = divmod(o.cell, GRID)
    cx = col * CELL + CELL / 2 + rng.uniform(-0.8, 0.8)
    cy = row * CELL + CELL / 2 + rng.uniform(-0.8, 0.8)
    fill = tuple(int(np.clip(c + rng.randint(-20, 20), 0, 255)) for c in RGB[o.colour])
    box = (cx - r, cy - r, cx + r, cy + r)
    w = max(1, round(r / 2.5))
    if o.shape == "circle":
        d.ellipse(box, fill=fill)
    elif o.shape == "ring":
        d.ellipse(box, outline=fill, width=w)
    elif o.shape == "square":
        d.rectangle(box, fill=fill)
    elif o.shape == "bar":
        d.rectangle((cx - r, cy - r / 3, cx + r, cy + r / 3), fill=fill)
    elif o.shape == "triangle":
        d.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif o.shape == "diamond":
        d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif o.shape == "cross":
        d.rectangle((cx - r, cy - r / 3, cx + r, cy + r / 3), fill=fill)
        d.rectangle((cx - r / 3, cy - r, cx + r / 3, cy + r), fill=fill)
    elif o.shape == "star":
        pts = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5
            rr = r if k % 2 == 0 else r * 0.45
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        d.polygon(pts, fill=fill)
    else:
        raise ValueError(f"unknown shape {o.shape!r}")


def render_scene(scene: Scene, seed: int | None = None) -> Image.Image:
    """Render a scene to a 48x48 RGB image; the same scene and seed give the same pixels."""
    rng = random.Random(f"{scene.id}/{scene.seed}" if seed is None else seed)
    noise = np.random.default_rng(rng.getrandbits(32)).integers(-6, 7, (IMAGE_SIZE, IMAGE_SIZE, 1))
    base = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 30, dtype=np.int16) + noise.astype(np.int16)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for o in scene.in_reading_order():
        _draw(d, o, rng)
    return img
