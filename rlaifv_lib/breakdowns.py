"""Where hallucinations come from: exact breakdowns of toy-world responses (RLAIF-V analysis, Sec. 4).

Because the toy world knows every scene's objects, each mention of a response can be checked
exactly. The breakdowns follow the CHAIR mention-level definition (Rohrbach et al. 2018): a
mention is hallucinated when its shape is absent from the scene. They split that rate by the
sentence a mention is in, by the shape named (and whether the co-occurrence prior ties it to a
present shape: its ``PARTNERS`` partner is in the scene), by the kind of claim (existence,
colour, size, position) and by response length. All functions are pure: (texts, scenes) in,
plain dicts and lists out, ready for ``plots.breakdown_bars`` or a table.

Two helpers show *why* (notebook 00): :func:`cooccurrence_matrix` measures the co-occurrence
prior of a set of scenes, and :func:`mark_hallucinations` brackets the absent objects a
response names. :func:`unclaimed_sentences` counts the sentences that name no shape: they give
the decomposer no claim, so the feedback can never reject them (notebook 06).
"""

from __future__ import annotations

import re
from typing import Sequence

from .toyworld.grammar import Mention, parse_description, toy_sentences
from .toyworld.scenes import PARTNERS, SHAPES, Scene

__all__ = [
    "CLAIM_KINDS",
    "LENGTH_EDGES",
    "by_position",
    "by_object",
    "by_claim_kind",
    "by_length",
    "breakdown_all",
    "unclaimed_sentences",
    "cooccurrence_matrix",
    "mark_hallucinations",
]

CLAIM_KINDS: tuple[str, ...] = ("existence", "colour", "size", "position")
LENGTH_EDGES: tuple[int, ...] = (0, 10, 20, 30, 40, 50)  # whitespace words; the last bin is open


def _rate(bad: int, n: int) -> float:
    return bad / n if n else 0.0


def _pairs(texts: Sequence[str], scenes: Sequence[Scene]) -> list[tuple[str, Scene, list[Mention]]]:
    if len(texts) != len(scenes):
        raise ValueError(f"got {len(texts)} texts but {len(scenes)} scenes; give one scene per response")
    return [(t, s, parse_description(t)) for t, s in zip(texts, scenes)]


def by_position(texts: Sequence[str], scenes: Sequence[Scene]) -> list[dict]:
    """Per sentence position (1 = first sentence): mentions, hallucinated mentions and their rate."""
    counts: dict[int, list[int]] = {}
    for _, scene, mentions in _pairs(texts, scenes):
        for m in mentions:
            c = counts.setdefault(m.sentence + 1, [0, 0])
            c[0] += 1
            c[1] += m.shape not in scene.shapes
    return [{"position": p, "n_mentions": n, "n_hallucinated": h, "rate": _rate(h, n)} for p, (n, h) in sorted(counts.items())]


def by_object(texts: Sequence[str], scenes: Sequence[Scene]) -> dict:
    """Per shape: mentions, hallucinations and how many of those had their prior partner present.

    Returns ``{"per_shape": {shape: {...}}, "n_hallucinated", "partner_present_share",
    "partner_present_chance"}``; the chance value is the share expected if each hallucinated
    shape had been picked uniformly among the scene's absent shapes.
    """
    per = {s: {"n_mentions": 0, "n_hallucinated": 0, "n_partner_present": 0} for s in SHAPES}
    n_hall = n_partner = 0
    chance = 0.0
    for _, scene, mentions in _pairs(texts, scenes):
        absent = [s for s in SHAPES if s not in scene.shapes]
        tied = sum(PARTNERS[s] in scene.shapes for s in absent) / len(absent) if absent else 0.0
        for m in mentions:
            row = per[m.shape]
            row["n_mentions"] += 1
            if m.shape in scene.shapes:
                continue
            partner = PARTNERS[m.shape] in scene.shapes
            row["n_hallucinated"] += 1
            row["n_partner_present"] += partner
            n_hall += 1
            n_partner += partner
            chance += tied
    for row in per.values():
        row["rate"] = _rate(row["n_hallucinated"], row["n_mentions"])
        row["partner_present_share"] = _rate(row["n_partner_present"], row["n_hallucinated"])
    return {
        "per_shape": per,
        "n_hallucinated": n_hall,
        "partner_present_share": _rate(n_partner, n_hall),
        "partner_present_chance": chance / n_hall if n_hall else 0.0,
    }


def by_claim_kind(texts: Sequence[str], scenes: Sequence[Scene]) -> dict[str, dict]:
    """Per claim kind: claims checked, wrong claims and their rate.

    Every mention is an existence claim (wrong if the shape is absent). A colour, size or
    position claim is checked only when the object exists (an absent object's attributes are
    already counted as one existence error) and is wrong when the attribute differs.
    """
    out = {k: {"n_claims": 0, "n_wrong": 0} for k in CLAIM_KINDS}
    for _, scene, mentions in _pairs(texts, scenes):
        for m in mentions:
            obj = scene.find(m.shape)
            out["existence"]["n_claims"] += 1
            out["existence"]["n_wrong"] += obj is None
            if obj is None:
                continue
            for kind, claimed, true in (("colour", m.colour, obj.colour), ("size", m.size, obj.size), ("position", m.position, obj.position)):
                if claimed is not None:
                    out[kind]["n_claims"] += 1
                    out[kind]["n_wrong"] += claimed != true
    for row in out.values():
        row["rate"] = _rate(row["n_wrong"], row["n_claims"])
    return out


def by_length(texts: Sequence[str], scenes: Sequence[Scene], edges: Sequence[int] = LENGTH_EDGES) -> list[dict]:
    """Per bin of response length (whitespace words): responses, mean words, CHAIR_s and CHAIR_i.

    Bins are ``[edges[k], edges[k+1])`` and a last open bin ``[edges[-1], inf)``; empty bins are kept.
    """
    if list(edges) != sorted(set(edges)) or not edges:
        raise ValueError(f"edges must be strictly increasing, got {edges}")
    bins = [{"lo": lo, "hi": hi, "n_responses": 0, "words": 0, "n_hall_responses": 0, "n_mentions": 0, "n_hallucinated": 0}
            for lo, hi in zip(edges, list(edges[1:]) + [None])]  # fmt: skip
    for text, scene, mentions in _pairs(texts, scenes):
        n_words = len(text.split())
        b = next((b for b in reversed(bins) if n_words >= b["lo"]), None)
        if b is None:
            continue
        hall = sum(m.shape not in scene.shapes for m in mentions)
        b["n_responses"] += 1
        b["words"] += n_words
        b["n_hall_responses"] += hall > 0
        b["n_mentions"] += len(mentions)
        b["n_hallucinated"] += hall
    return [
        {"label": f"{b['lo']}-{b['hi'] - 1}" if b["hi"] is not None else f"{b['lo']}+", "lo": b["lo"], "hi": b["hi"],
         "n_responses": b["n_responses"], "mean_words": _rate(b["words"], b["n_responses"]),
         "chair_s": _rate(b["n_hall_responses"], b["n_responses"]), "chair_i": _rate(b["n_hallucinated"], b["n_mentions"]),
         "n_mentions": b["n_mentions"]}
        for b in bins
    ]  # fmt: skip


def breakdown_all(texts: Sequence[str], scenes: Sequence[Scene], edges: Sequence[int] = LENGTH_EDGES) -> dict:
    """All four breakdowns: ``{"position", "object", "kind", "length"}``."""
    return {
        "position": by_position(texts, scenes),
        "object": by_object(texts, scenes),
        "kind": by_claim_kind(texts, scenes),
        "length": by_length(texts, scenes, edges),
    }


def unclaimed_sentences(texts: Sequence[str], max_examples: int = 3) -> dict:
    """Sentences naming no shape (no claim to check, so never rejected): counts, rate, responses with one, examples."""
    n_sentences, unclaimed, responses = 0, [], 0
    for text in texts:
        sentences = toy_sentences(text.lower())
        claimed = {m.sentence for m in parse_description(text.lower())}  # the sentences with a mention
        bare = [s for i, s in enumerate(sentences) if i not in claimed]
        n_sentences += len(sentences)
        unclaimed += bare
        responses += bool(bare)
    return {"n_sentences": n_sentences, "n_unclaimed": len(unclaimed), "rate": len(unclaimed) / n_sentences if n_sentences else None,
            "n_responses": len(texts), "responses_with_one": responses, "examples": unclaimed[:max_examples]}  # fmt: skip


def cooccurrence_matrix(scenes: Sequence[Scene], shapes: Sequence[str] = SHAPES) -> list[list[float]]:
    """``m[i][j]`` = share of the scenes containing ``shapes[i]`` that also contain ``shapes[j]``.

    The diagonal is 1.0 for a shape that occurs; a row is all zeros for a shape that never occurs.
    Under the pre-training prior (``sample_scenes(..., prior=True)``) the ``PARTNERS`` cells stand out.

    Example: ``cooccurrence_matrix([Scene("a", [ToyObject("circle", "red", "small", 0)])])[0][0] == 1.0``.
    """
    sets = [scene.shapes for scene in scenes]
    out = []
    for a in shapes:
        with_a = [s for s in sets if a in s]
        out.append([_rate(sum(b in s for s in with_a), len(with_a)) for b in shapes])
    return out


_SHAPE_WORD = re.compile(r"(?<!\S)(" + "|".join(SHAPES) + r")(?!\S)")


def mark_hallucinations(text: str, scene: Scene, left: str = "[", right: str = "]") -> str:
    """The response with every hallucinated object mention wrapped, e.g. ``[square]``.

    A mention is the first shape word of a sentence (as ``parse_description`` and CHAIR count
    them); it is hallucinated when that shape is absent from ``scene``. Wrong colours, sizes or
    positions are not marked. Example: ``"there is a red square ."`` in a scene without a square
    becomes ``"there is a red [square] ."``.
    """
    parts = re.split(r"([.?])", text)
    for k in range(0, len(parts), 2):  # even parts are sentences, odd ones their end marks
        m = _SHAPE_WORD.search(parts[k])
        if m is not None and m.group(1) not in scene.shapes:
            parts[k] = parts[k][: m.start()] + left + m.group(1) + right + parts[k][m.end() :]
    return "".join(parts)
