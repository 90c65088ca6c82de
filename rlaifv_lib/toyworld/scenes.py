"""Scenes of the toy world: objects with shape, colour, size and grid position.

Two distributions: the *pre-training* one, with a co-occurrence prior (an object's partner
shape appears with it far more often than chance, as "fork" follows "table" in real captions),
and the *evaluation* one, where shapes are drawn independently. The model learns the prior from
pre-training and then meets scenes that break it, which is where it hallucinates.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from ..errors import ConfigError, check_finite

__all__ = [
    "SHAPES",
    "COLOURS",
    "SIZES",
    "POSITIONS",
    "PARTNERS",
    "GRID",
    "ToyObject",
    "Scene",
    "WorldConfig",
    "sample_scene",
    "sample_scenes",
    "evaluation_scenes",
    "training_scenes",
    "EVAL_SEED",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star", "diamond", "ring", "bar")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple")
SIZES: tuple[str, ...] = ("small", "large")
GRID = 3
# cell index (row-major) -> position name
POSITIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip
# the co-occurrence prior: each shape's partner (symmetric)
PARTNERS: dict[str, str] = {
    "circle": "square", "square": "circle",
    "triangle": "cross", "cross": "triangle",
    "star": "diamond", "diamond": "star",
    "ring": "bar", "bar": "ring",
}  # fmt: skip
EVAL_SEED = 20240527  # the fixed evaluation set; never used for training


@dataclass(frozen=True)
class ToyObject:
    """One object of a scene: a shape with its colour, size and grid cell."""

    shape: str
    colour: str
    size: str
    cell: int

    @property
    def position(self) -> str:
        """Position name of the object's grid cell, e.g. 'top left'."""
        return POSITIONS[self.cell]

    def to_dict(self) -> dict:
        """Plain-dict form (adds the position name)."""
        return {**asdict(self), "position": self.position}


@dataclass
class Scene:
    """A scene: its id and its ground-truth objects (distinct shapes, distinct cells)."""

    id: str
    objects: list[ToyObject]
    seed: int = 0

    @property
    def shapes(self) -> set[str]:
        """The set of shapes present."""
        return {o.shape for o in self.objects}

    def find(self, shape: str) -> ToyObject | None:
        """The object of a given shape, or None if absent."""
        return next((o for o in self.objects if o.shape == shape), None)

    def in_reading_order(self) -> list[ToyObject]:
        """Objects sorted by cell, top-left to bottom-right."""
        return sorted(self.objects, key=lambda o: o.cell)

    def truth(self) -> list[dict]:
        """Ground truth as a list of plain dicts (JSON-friendly)."""
        return [o.to_dict() for o in self.in_reading_order()]

    @classmethod
    def from_truth(cls, id: str, truth: list[dict], seed: int = 0) -> "Scene":
        """Rebuild a scene from :meth:`truth` output."""
        objs = [ToyObject(t["shape"], t["colour"], t["size"], int(t["cell"])) for t in truth]
        return cls(id=id, objects=objs, seed=seed)


@dataclass
class WorldConfig:
    """Settings of the toy world's scene and caption distributions.

    Args:
        min_objects (int, defaults to 1): fewest objects in a scene.
        max_objects (int, defaults to 4): most objects in a scene (at most 8).
        p_cooccur (float, defaults to 0.6): pre-training only; chance that a present shape's
            partner (``PARTNERS``) is added to the scene when there is room.
        p_add (float, defaults to 0.15): caption noise; chance that a caption also names the
            absent partner of a described object (an invented extra sentence at the end).
        p_substitute (float, defaults to 0.35): caption noise; chance that a caption names the
            absent partner *instead of* the true shape (same colour, size and place).
        p_size_flip (float, defaults to 0.1): caption noise; chance that a size word is wrong.
    """

    min_objects: int = 1
    max_objects: int = 4
    p_cooccur: float = 0.6
    p_add: float = 0.15
    p_substitute: float = 0.35
    p_size_flip: float = 0.1
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_finite(self)
        if not 1 <= self.min_objects <= self.max_objects <= len(SHAPES):
            raise ConfigError(
                f"need 1 <= min_objects <= max_objects <= {len(SHAPES)}, got "
                f"{self.min_objects}..{self.max_objects}"
            )
        for name in ("p_cooccur", "p_add", "p_substitute", "p_size_flip"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {v}")
        if self.p_add + self.p_substitute > 1.0:
            raise ConfigError("p_add + p_substitute must be <= 1")


def sample_scene(rng: random.Random, cfg: WorldConfig, prior: bool, id: str = "", seed: int = 0) -> Scene:
    """Draw one scene; with ``prior=True`` present shapes bring their partners along."""
    n = rng.randint(cfg.min_objects, cfg.max_objects)
    shapes: list[str] = []
    while len(shapes) < n:
        s = rng.choice([s for s in SHAPES if s not in shapes])
        shapes.append(s)
        partner = PARTNERS[s]
        if prior and len(shapes) < n and partner not in shapes and rng.random() < cfg.p_cooccur:
            shapes.append(partner)
    cells = rng.sample(range(GRID * GRID), n)
    objs = [ToyObject(s, rng.choice(COLOURS), rng.choice(SIZES), c) for s, c in zip(shapes, cells)]
    return Scene(id=id, objects=objs, seed=seed)


def sample_scenes(n: int, seed: int, cfg: WorldConfig | None = None, prior: bool = False, prefix: str = "s") -> list[Scene]:
    """Draw ``n`` scenes reproducibly from ``seed``; ids are ``<prefix><seed>-<i>``."""
    cfg = cfg or WorldConfig()
    rng = random.Random(seed)
    return [sample_scene(rng, cfg, prior, id=f"{prefix}{seed}-{i}", seed=seed) for i in range(n)]


def evaluation_scenes(n: int = 200, cfg: WorldConfig | None = None) -> list[Scene]:
    """The fixed, seeded held-out evaluation set (no co-occurrence prior; never trained on)."""
    return sample_scenes(n, EVAL_SEED, cfg, prior=False, prefix="eval")


def training_scenes(n: int, seed: int, cfg: WorldConfig | None = None) -> list[Scene]:
    """Prompts for RLAIF-V rounds: evaluation distribution, seeds disjoint from the eval set."""
    if seed == EVAL_SEED:
        raise ConfigError(f"seed {EVAL_SEED} is reserved for the evaluation set")
    return sample_scenes(n, seed, cfg, prior=False, prefix="train")
