"""The toy world's closed language: descriptions, their parse, and polar (yes/no) questions.

A description is a list of sentences ``there is a <size> <colour> <shape> <place> .``; a polar
question asks about one fact: ``is there a circle ?``, ``is the circle red ?``,
``is the circle large ?``, ``is the circle at the top left ?``. Because the language is closed,
parsing is exact and every question has a ground-truth answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .scenes import COLOURS, PARTNERS, POSITIONS, SHAPES, SIZES, Scene, ToyObject, WorldConfig

__all__ = [
    "INSTRUCTIONS",
    "PLACE_PHRASES",
    "Mention",
    "describe",
    "noisy_caption",
    "parse_description",
    "toy_sentences",
    "existence_question",
    "where_question",
    "where_answer",
    "attribute_question",
    "parse_question",
    "true_answer",
    "clean_questions",
    "vocabulary",
]

INSTRUCTIONS: tuple[str, ...] = (
    "describe the image .",
    "what is in the image ?",
    "describe the image in detail .",
)
# position name -> the phrase a description uses for it
PLACE_PHRASES: dict[str, str] = {
    "top left": "at the top left",
    "top": "at the top",
    "top right": "at the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "at the bottom left",
    "bottom": "at the bottom",
    "bottom right": "at the bottom right",
}
_PHRASE_TO_POSITION = {v: k for k, v in PLACE_PHRASES.items()}


@dataclass(frozen=True)
class Mention:
    """An object named by one sentence of a description, with the attributes it claims."""

    shape: str
    colour: str | None
    size: str | None
    position: str | None
    sentence: int


def _sentence(shape: str, colour: str, size: str, position: str) -> str:
    return f"there is a {size} {colour} {shape} {PLACE_PHRASES[position]} ."


def describe(scene: Scene) -> str:
    """The clean description of a scene: one sentence per object, in reading order."""
    return " ".join(_sentence(o.shape, o.colour, o.size, o.position) for o in scene.in_reading_order())


def noisy_caption(scene: Scene, rng: random.Random, cfg: WorldConfig) -> str:
    """A pre-training caption with web-like noise tied to the co-occurrence prior.

    For an object whose partner shape is absent, the caption may name the partner instead of
    it (substitution) or name the partner as an extra object at the end (addition); a size word
    may be wrong.
    """
    present = scene.shapes
    named = set(present)
    body, extra = [], []
    free_cells = [c for c in range(len(POSITIONS)) if c not in {o.cell for o in scene.objects}]
    for o in scene.in_reading_order():
        shape, size = o.shape, o.size
        partner = PARTNERS[o.shape]
        u = rng.random()
        if partner not in named:
            if u < cfg.p_substitute:
                shape = partner
                named.add(partner)
            elif u < cfg.p_substitute + cfg.p_add and free_cells:
                cell = free_cells.pop(rng.randrange(len(free_cells)))
                extra.append(ToyObject(partner, o.colour, rng.choice(SIZES), cell))
                named.add(partner)
        if rng.random() < cfg.p_size_flip:
            size = SIZES[1 - SIZES.index(size)]
        body.append(_sentence(shape, o.colour, size, o.position))
    body += [_sentence(e.shape, e.colour, e.size, e.position) for e in sorted(extra, key=lambda e: e.cell)]
    return " ".join(body)


def toy_sentences(text: str) -> list[str]:
    """The non-empty sentences of a toy text, split at "." and "?", without their end marks."""
    return [s.strip() for s in text.replace("?", ".").split(".") if s.strip()]


def parse_description(text: str) -> list[Mention]:
    """Every object mention of a toy description; sentences naming no shape are skipped."""
    mentions = []
    for i, sent in enumerate(toy_sentences(text)):
        words = sent.split()
        idx = [j for j, w in enumerate(words) if w in SHAPES]
        if not idx:
            continue
        j = idx[0]
        before = words[:j]
        colour = next((w for w in before if w in COLOURS), None)
        size = next((w for w in before if w in SIZES), None)
        rest = " ".join(words[j + 1 :])
        position = _PHRASE_TO_POSITION.get(rest)
        mentions.append(Mention(words[j], colour, size, position, i))
    return mentions


def existence_question(shape: str) -> str:
    """Polar question asking whether a shape is in the image."""
    return f"is there a {shape} ?"


def attribute_question(shape: str, kind: str, value: str) -> str:
    """Polar question about one attribute (colour, size or position) of a shape."""
    if kind == "position":
        return f"is the {shape} {PLACE_PHRASES[value]} ?"
    if kind in ("colour", "size"):
        return f"is the {shape} {value} ?"
    raise ValueError(f"unknown attribute kind {kind!r}")


def where_question(shape: str) -> str:
    """Grounding question: where is a shape (answered with a place phrase, or 'nowhere')."""
    return f"where is the {shape} ?"


def where_answer(scene: Scene, shape: str) -> str:
    """Ground-truth answer of :func:`where_question`."""
    o = scene.find(shape)
    return PLACE_PHRASES[o.position] if o is not None else "nowhere"


def parse_question(question: str) -> tuple[str, str, str | None] | None:
    """(kind, shape, value) of a toy polar question, or None if it is not one."""
    words = question.replace("?", " ").split()
    if words[:3] == ["is", "there", "a"] and len(words) == 4 and words[3] in SHAPES:
        return ("existence", words[3], None)
    if words[:2] == ["is", "the"] and len(words) >= 4 and words[2] in SHAPES:
        rest = " ".join(words[3:])
        if rest in COLOURS:
            return ("colour", words[2], rest)
        if rest in SIZES:
            return ("size", words[2], rest)
        if rest in _PHRASE_TO_POSITION:
            return ("position", words[2], _PHRASE_TO_POSITION[rest])
    return None


def true_answer(scene: Scene, question: str) -> bool:
    """Ground-truth answer of a toy polar question for a scene."""
    parsed = parse_question(question)
    if parsed is None:
        raise ValueError(f"not a toy-world question: {question!r}")
    kind, shape, value = parsed
    o = scene.find(shape)
    if o is None:
        return False
    if kind == "existence":
        return True
    return {"colour": o.colour, "size": o.size, "position": o.position}[kind] == value


def clean_questions(scene: Scene, rng: random.Random, n: int) -> list[tuple[str, bool]]:
    """``n`` training questions with correct answers.

    Half ask about a shape drawn independently of the scene (so a shape's presence in the image
    alone predicts the answer, which lets a small model start learning to look); half are
    balanced yes/no pairs whose absent shapes are mostly the co-occurrence partners of present
    ones (POPE's adversarial split), about existence or one attribute.
    """
    out: list[tuple[str, bool]] = []
    for _ in range(n):
        if rng.random() < 0.5:
            q = _independent_question(scene, rng)
        else:
            q = _balanced_question(scene, rng, want_yes=rng.random() < 0.5)
        out.append((q, true_answer(scene, q)))
    return out


def _independent_question(scene: Scene, rng: random.Random) -> str:
    shape = rng.choice(SHAPES)
    kind = rng.choice(("existence", "existence", "colour", "size", "position"))
    o = scene.find(shape)
    if kind == "existence":
        return existence_question(shape)
    if o is not None and rng.random() < 0.5:
        return attribute_question(shape, kind, _value(o, kind))
    return attribute_question(shape, kind, rng.choice(_values(kind)))


def _balanced_question(scene: Scene, rng: random.Random, want_yes: bool) -> str:
    present = scene.in_reading_order()
    absent = [s for s in SHAPES if s not in scene.shapes]
    adversarial = [PARTNERS[o.shape] for o in present if PARTNERS[o.shape] in absent]
    kind = rng.choice(("existence", "existence", "colour", "size", "position"))
    if want_yes:
        o = rng.choice(present)
        return existence_question(o.shape) if kind == "existence" else attribute_question(o.shape, kind, _value(o, kind))
    if (kind == "existence" or rng.random() < 0.3) and absent:
        shape = rng.choice(adversarial if adversarial and rng.random() < 0.6 else absent)
        return existence_question(shape) if kind == "existence" else attribute_question(shape, kind, rng.choice(_values(kind)))
    o = rng.choice(present)
    kind = "colour" if kind == "existence" else kind
    return attribute_question(o.shape, kind, rng.choice([v for v in _values(kind) if v != _value(o, kind)]))


def _value(o: ToyObject, kind: str) -> str:
    return {"colour": o.colour, "size": o.size, "position": o.position}[kind]


def _values(kind: str) -> tuple[str, ...]:
    return {"colour": COLOURS, "size": SIZES, "position": POSITIONS}[kind]


def vocabulary() -> list[str]:
    """Every word the toy language uses (descriptions, questions, instructions, answers)."""
    words: list[str] = []
    texts = list(INSTRUCTIONS) + list(PLACE_PHRASES.values()) + ["there is a the yes no where nowhere"]
    texts += ["how many objects are", "zero one two three four five six seven eight nothing", "what shape"]
    texts += list(SHAPES) + list(COLOURS) + list(SIZES)
    for t in texts:
        for w in t.split():
            if w not in words:
                words.append(w)
    return words
