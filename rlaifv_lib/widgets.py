"""Notebook inspectors for the records of RLAIF-V: claims with verdicts, and preference pairs.

:class:`ClaimInspector` walks through scored candidates (divide-and-conquer feedback, Sec. 3.2):
the image, the response with the text of each claim coloured by the labeler's verdict, and a table
of claims with their polar question, P(yes) and, in the toy world, the ground truth.
:class:`PairInspector` walks through preference pairs (Sec. 3.2, pair construction): chosen and
rejected side by side, their scores, margin and lengths, and the claims made by one and not the
other. Both are ``ipywidgets.VBox`` subclasses with previous/next buttons and a filter dropdown;
their current HTML (``.html``), position (``.index``) and filter (``.filter``) can be read and set
from Python. Every piece of model text is HTML-escaped, so a response is always shown as text, and
bidirectional-text controls (U+202A-U+202E, U+2066-U+2069, U+200E/U+200F, U+061C) are shown as visible
``[U+202E]`` marks, so they cannot reorder what the learner reads.
"""

from __future__ import annotations

import html
import io
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import ipywidgets as widgets
from PIL import Image

from .audit import claim_truth, pair_audit
from .claims import Decomposer, ToyDecomposer, toy_sentence_spans
from .feedback import score_candidates
from .hallucination import toy_mentions
from .images import load_image
from .pairs import word_length
from .records import Candidate, Claim, PreferencePair, ScoredCandidate, Verdict
from .toyworld.scenes import Scene

__all__ = ["IMAGE_PX", "png_bytes", "claim_span", "ClaimItem", "ClaimInspector", "PairInspector"]

IMAGE_PX = 192  # shown size of the image; 48x48 toy images are upscaled 4x, pixel for pixel
_GREEN, _RED, _GREY, _YELLOW = "#c8f0c8", "#f6c6c6", "#e4e4e4", "#fff0a8"
_RESPONSE_STYLE = "font-family:monospace;margin:6px 0;line-height:1.7;white-space:pre-wrap"  # newlines shown
# look of a piece of response text by rank: -1 no claim, 0 accepted, 1 unscored, 2 rejected
_CLAIM_LOOK = {
    -1: (None, "rlaifv-text"),
    0: (_GREEN, "rlaifv-claim rlaifv-accepted", "all claims accepted"),
    1: (_GREY, "rlaifv-claim rlaifv-unscored", "not scored"),
    2: (_RED, "rlaifv-claim rlaifv-rejected", "a claim was rejected"),
}
_STYLE = "<style>.rlaifv-claims td,.rlaifv-claims th{padding:2px 6px;border-bottom:1px solid #ddd;text-align:left}</style>"


_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _e(text: Any) -> str:
    """HTML-escaped ``str(text)``, quotes included, bidi controls shown as visible "[U+202E]" marks."""
    return _BIDI.sub(lambda m: f"[U+{ord(m.group()):04X}]", html.escape(str(text), quote=True))


def png_bytes(image: Any, size: int = IMAGE_PX) -> bytes:
    """PNG bytes of an image (path or PIL), upscaled by a whole factor with NEAREST (or shrunk) to ``size``."""
    im = load_image(image)
    k = size // max(im.size)
    if k >= 1:
        im = im.resize((im.width * k, im.height * k), Image.NEAREST)
    else:
        im = im.copy()
        im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def claim_span(claim: Claim, text: str, toy_spans: list[tuple[int, int]] | None = None) -> tuple[int, int] | None:
    """The [start, end) of ``text`` a claim came from: its recorded span, else (older files) its toy sentence's; None if unknown."""
    if claim.span is not None:
        return max(0, claim.span[0]), min(len(text), claim.span[1])
    spans = toy_sentence_spans(text) if toy_spans is None else toy_spans
    return spans[claim.sentence] if 0 <= claim.sentence < len(spans) else None


def _pieces(n: int, marks: Sequence[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """(start, end, rank) pieces covering 0..n: the highest rank of the marks covering each piece, -1 where none does.

    One sweep over the sorted mark ends: O(k log k) for k marks, whatever the text's length.
    """
    marks = [(a, b, r) for a, b, r in marks if a < b]
    events = sorted([(a, 1, r) for a, _, r in marks] + [(b, -1, r) for _, b, r in marks] + [(n, 0, -1)])
    live: Counter = Counter()
    out: list[tuple[int, int, int]] = []
    pos = 0
    for x, delta, rank in events:
        if x > pos:
            top = max((r for r, c in live.items() if c > 0), default=-1)
            if out and out[-1][2] == top:  # same look as the piece before: extend it
                out[-1] = (out[-1][0], x, top)
            else:
                out.append((pos, x, top))
            pos = x
        live[rank] += delta
    return out


def _span(text: str, colour: str | None, cls: str, title: str = "") -> str:
    """An escaped text in a coloured span (no colour: plain)."""
    style = f"background:{colour};border-radius:3px;padding:0 2px" if colour else ""
    return f'<span class="{cls}" style="{style}" title="{_e(title)}">{_e(text)}</span>'


def _scene_line(scene: Scene | None) -> str:
    """The ground-truth objects of a scene as one escaped line."""
    if scene is None:
        return ""
    objs = ", ".join(f"{o.size} {o.colour} {o.shape} ({o.position})" for o in scene.in_reading_order())
    return f'<div class="rlaifv-truth"><b>in the image:</b> {_e(objs)}</div>'


def _count(n: int, singular: str, plural: str) -> str:
    """``n`` with the singular or plural form: "1 verdict contradicts", "2 verdicts contradict"."""
    return f"{n} {singular if n == 1 else plural}"


def _hallucinated(text: str, scene: Scene | None) -> list[str]:
    """Object mentions of a toy text absent from its scene (repeats kept); [] without a scene."""
    return [] if scene is None else [m for m in toy_mentions(text) if m not in scene.shapes]


@dataclass
class ClaimItem:
    """One candidate as :class:`ClaimInspector` shows it: its claims, verdicts, truths and image."""

    candidate: Candidate
    claims: list[Claim]
    verdicts: list[Verdict | None]
    truths: list[bool | None]
    image: Any = None
    score: float | None = None
    scene: Scene | None = None

    def disagrees(self, k: int) -> bool:
        """Whether claim k's verdict contradicts the ground truth (False when either is unknown)."""
        v, t = self.verdicts[k], self.truths[k]
        return v is not None and t is not None and v.accepted != t

    @property
    def n_disagreements(self) -> int:
        """Verdicts that contradict the truth."""
        return sum(self.disagrees(k) for k in range(len(self.claims)))

    @property
    def n_rejected(self) -> int:
        """Claims the labeler rejected."""
        return sum(v is not None and not v.accepted for v in self.verdicts)

    @property
    def hallucinated(self) -> list[str]:
        """Mentioned shapes absent from the scene (needs the scene)."""
        return _hallucinated(self.candidate.text, self.scene)


class _Inspector(widgets.VBox):
    """Image + HTML view of one item at a time, with previous/next buttons and a filter dropdown.

    Subclasses define ``_image_of(item) -> bytes | None`` (PNG bytes) and ``_render(item) -> str`` (HTML).
    """

    CSS_CLASS = "rlaifv-inspector"

    def __init__(self, items: Sequence[Any], filters: dict[str, Callable[[Any], bool]], empty: str = "nothing to show"):
        self.items, self._filters, self._empty = list(items), filters, empty
        px = f"{IMAGE_PX}px"  # a fixed box: flex rows would otherwise stretch the image to the text's height
        self.image = widgets.Image(format="png", layout=widgets.Layout(width=px, height=px, min_width=px, align_self="flex-start", flex="0 0 auto"))
        self.image.add_class("rlaifv-image")
        self.view = widgets.HTML()
        self.view.add_class("rlaifv-view")
        self.prev_button = widgets.Button(description="◀ previous", layout=widgets.Layout(width="110px"))
        self.next_button = widgets.Button(description="next ▶", layout=widgets.Layout(width="110px"))
        self.filter_dropdown = widgets.Dropdown(options=list(filters), value=next(iter(filters)), description="show:")
        self.position = widgets.Label()
        self.position.add_class("rlaifv-position")
        self.prev_button.on_click(lambda _: self.previous())
        self.next_button.on_click(lambda _: self.next())
        self.filter_dropdown.observe(lambda _: self.show(0), names="value")
        nav = widgets.HBox([self.prev_button, self.next_button, self.filter_dropdown, self.position])
        super().__init__([nav, widgets.HBox([self.image, self.view])])
        self.add_class(self.CSS_CLASS)
        self._index = 0
        self.show(0)

    @property
    def filter(self) -> str:
        """The name of the active filter."""
        return self.filter_dropdown.value

    @filter.setter
    def filter(self, name: str) -> None:
        self.filter_dropdown.value = name

    @property
    def visible(self) -> list[int]:
        """Indices (into ``items``) of the items passing the active filter."""
        keep = self._filters[self.filter]
        return [i for i, it in enumerate(self.items) if keep(it)]

    @property
    def index(self) -> int:
        """Position of the shown item within the filtered items."""
        return self._index

    @property
    def current(self) -> Any:
        """The shown item, or None when no item passes the filter."""
        vis = self.visible
        return self.items[vis[self._index]] if vis else None

    @property
    def html(self) -> str:
        """The HTML currently shown next to the image."""
        return self.view.value

    def show(self, index: int) -> None:
        """Show the filtered item at ``index`` (wrapping around)."""
        vis = self.visible
        self._index = index % len(vis) if vis else 0
        self.position.value = f"{self._index + 1} / {len(vis)} (of {len(self.items)})" if vis else f"0 / 0 (of {len(self.items)})"
        item = self.current
        if item is None:
            self.image.value, self.image.layout.visibility = b"", "hidden"
            self.view.value = f'<div class="rlaifv-empty"><i>{_e(self._empty)}</i></div>'
            return
        png = self._image_of(item)
        self.image.value, self.image.layout.visibility = (png or b""), ("visible" if png else "hidden")
        self.view.value = self._render(item)

    def next(self) -> None:
        """Show the next filtered item."""
        self.show(self._index + 1)

    def previous(self) -> None:
        """Show the previous filtered item."""
        self.show(self._index - 1)


class ClaimInspector(_Inspector):
    """Scored candidates one by one: image, response coloured by verdict, claims table, truth.

    The text each claim came from (``Claim.span``, for every decomposer) is green when the labeler
    accepted every claim made from it, red when it rejected one, grey when one is unscored. With scenes, a "truth" column shows the real answer and marks verdicts that
    contradict it. Filters: all / disagreements with truth / rejected only / has hallucination.

    Example:
        >>> ClaimInspector.from_records(cands, claims, verdicts, images=images, scenes=scenes)  # doctest: +SKIP
    """

    CSS_CLASS = "rlaifv-claim-inspector"

    def __init__(self, items: Sequence[ClaimItem]):
        filters = {
            "all": lambda it: True,
            "disagreements with truth": lambda it: it.n_disagreements > 0,
            "rejected only": lambda it: it.n_rejected > 0,
            "has hallucination": lambda it: bool(it.hallucinated),
        }
        super().__init__(items, filters, "no candidate matches this filter")

    @classmethod
    def from_records(cls, candidates: Sequence[Candidate], claims: Sequence[Claim], verdicts: Sequence[Verdict] | None = None, images: dict[str, Any] | None = None, scenes: dict[str, Scene] | None = None, scored: Sequence[ScoredCandidate] | None = None) -> "ClaimInspector":
        """An inspector over candidates, with their claims, verdicts, images and scenes (all keyed by id)."""
        images, scenes = images or {}, scenes or {}
        by_cand: dict[str, list[Claim]] = defaultdict(list)
        for c in claims:
            by_cand[c.candidate_id].append(c)
        by_claim = {v.claim_id: v for v in verdicts or []}
        if scored is None and verdicts:
            scored = score_candidates(candidates, claims, verdicts)
        score = {s.candidate_id: s.score for s in scored or []}
        items = []
        for cand in candidates:
            cs, scene = by_cand.get(cand.id, []), scenes.get(cand.prompt_id)
            truths = [claim_truth(c, scenes) if scene is not None else None for c in cs]
            items.append(ClaimItem(cand, cs, [by_claim.get(c.id) for c in cs], truths, images.get(cand.prompt_id), score.get(cand.id), scene))
        return cls(items)

    def _image_of(self, item: ClaimItem) -> bytes | None:
        return png_bytes(item.image) if item.image is not None else None

    def _render(self, item: ClaimItem) -> str:
        cand = item.candidate
        toy = toy_sentence_spans(cand.text) if any(c.span is None for c in item.claims) else []
        marks, unplaced = [], 0
        for c, v in zip(item.claims, item.verdicts):
            span = claim_span(c, cand.text, toy)
            unplaced += span is None
            if span is not None:
                marks.append((*span, 1 if v is None else (0 if v.accepted else 2)))  # rejected > unscored > accepted
        spans = [_span(cand.text[a:b], *_CLAIM_LOOK[r]) for a, b, r in _pieces(len(cand.text), marks)]
        score = "no claims, no score" if item.score is None else f"score {item.score:g}"
        hall = item.hallucinated
        head = (f"<div><b>{_e(cand.id)}</b> &middot; seed {_e(cand.seed)} &middot; {score} &middot; "
                f"{_count(len(item.claims), 'claim', 'claims')}, {item.n_rejected} rejected"
                + (f" &middot; {_count(item.n_disagreements, 'verdict contradicts', 'verdicts contradict')} the truth" if item.scene else "")
                + (f" &middot; {unplaced} not located in the text" if unplaced else "") + "</div>")  # fmt: skip
        hall_line = f'<div class="rlaifv-hallucinated"><b>hallucinated objects:</b> {_e(", ".join(hall))}</div>' if hall else ""
        body = f'<div class="rlaifv-response" style="{_RESPONSE_STYLE}">{"".join(spans) or "<i>(empty)</i>"}</div>'
        return f'<div style="margin-left:12px">{head}{body}{_scene_line(item.scene)}{hall_line}{self._table(item)}</div>'

    def _table(self, item: ClaimItem) -> str:
        """The claims table of one item."""
        truth_col = item.scene is not None
        head = "".join(f"<th>{h}</th>" for h in ["#", "claim", "kind", "question", "P(yes)", "verdict"] + (["truth"] if truth_col else []))
        rows = []
        for k, c in enumerate(item.claims):
            v = item.verdicts[k]
            verdict = "—" if v is None else ("accepted" if v.accepted else "rejected")
            colour = _GREY if v is None else (_GREEN if v.accepted else _RED)
            cells = [str(k), _e(c.text), _e(c.kind), _e(c.question), "—" if v is None else f"{v.p_yes:.3f}", f'<span style="background:{colour};padding:0 3px">{verdict}</span>']
            if truth_col:
                wrong = item.disagrees(k)
                cells.append({None: "?", True: "yes", False: "no"}[item.truths[k]] + (' <b class="rlaifv-disagree" style="color:#b00">✗ labeler wrong</b>' if wrong else ""))
            rows.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
        if not rows:
            return "<div><i>no claims: nothing to check</i></div>"
        return _STYLE + f'<table class="rlaifv-claims" style="border-collapse:collapse;font-size:90%"><tr>{head}</tr>{"".join(rows)}</table>'


class PairInspector(_Inspector):
    """Preference pairs one by one: image, chosen and rejected side by side, and what differs.

    Each side shows its score, length in words, its claims (those the other response does not
    make are highlighted) and, with scenes, its truly hallucinated objects. Filters: all /
    margin >= 2 / chosen longer / chosen shorter, and with scenes "wrong by truth": the pairs that
    ``audit.pair_audit`` calls "wrong way" (the chosen names more absent objects, or as many and makes
    more false claims). With scenes, every claim shows its truth next to its verdict. When the two
    responses share no claim, nothing is highlighted (every claim differs) and the header says so.

    Args:
        pairs: the pairs (``pairs.build_pairs(...).pairs``).
        images: prompt id -> image, for pairs that carry none.
        scenes: prompt id -> toy scene, for ground truth.
        claims: the claims of the candidates (matched by ``chosen_id``/``rejected_id``); when None,
            each text is decomposed with ``decomposer``.
        verdicts: the verdicts of those claims, to mark the rejected ones.
        decomposer: used when ``claims`` is None (defaults to ``ToyDecomposer()``).
        empty: the message shown when there is no pair (e.g. ``PairResult.reason``).
    """

    CSS_CLASS = "rlaifv-pair-inspector"

    def __init__(self, pairs: Sequence[PreferencePair], images: dict[str, Any] | None = None, scenes: dict[str, Scene] | None = None, claims: Sequence[Claim] | None = None, verdicts: Sequence[Verdict] | None = None, decomposer: Decomposer | None = None, empty: str | None = None):
        self.images, self.scenes = images or {}, scenes or {}
        self._claims: dict[str, list[Claim]] = defaultdict(list)
        for c in claims or []:
            self._claims[c.candidate_id].append(c)
        self._from_claims, self._decomposer = claims is not None, decomposer or ToyDecomposer()
        self._verdicts = {v.claim_id: v for v in verdicts or []}
        filters: dict[str, Callable[[PreferencePair], bool]] = {
            "all": lambda p: True,
            "margin >= 2": lambda p: p.margin >= 2,
            "chosen longer": lambda p: word_length(p.chosen) > word_length(p.rejected),
            "chosen shorter": lambda p: word_length(p.chosen) < word_length(p.rejected),
        }
        if self.scenes:
            filters["wrong by truth"] = lambda p: self.outcome(p) == "wrong_way"
        super().__init__(pairs, filters, empty or "no pair matches this filter")

    def _hall(self, text: str, pair: PreferencePair) -> list[str]:
        """Hallucinated objects of one side of a pair."""
        return _hallucinated(text, self.scenes.get(pair.prompt_id))

    def outcome(self, pair: PreferencePair) -> str | None:
        """The ``audit.PAIR_OUTCOMES`` key of a pair, by the truth of both sides' claims (None without its scene)."""
        if pair.prompt_id not in self.scenes:
            return None
        claims = [replace(c, candidate_id=f"{pair.prompt_id}/{side}") for side, cid, text in (("chosen", pair.chosen_id, pair.chosen), ("rejected", pair.rejected_id, pair.rejected)) for c in self.claims_of(cid, text)]
        named = replace(pair, chosen_id=f"{pair.prompt_id}/chosen", rejected_id=f"{pair.prompt_id}/rejected")
        return pair_audit([named], {pair.prompt_id: self.scenes[pair.prompt_id]}, claims)["rows"][0]["outcome"]

    def _truth(self, claim: Claim, pair: PreferencePair) -> bool | None:
        """Whether a claim of the pair is true in its scene (None without the scene or for a non-toy question)."""
        scene = self.scenes.get(pair.prompt_id)
        return None if scene is None else claim_truth(replace(claim, candidate_id=f"{pair.prompt_id}/c"), {pair.prompt_id: scene})

    def _truth_marker(self, claim: Claim, verdict: Verdict | None, pair: PreferencePair) -> str:
        """The claim's truth beside its verdict, and a warning when the verdict contradicts it ("" without a scene)."""
        truth = self._truth(claim, pair)
        if truth is None:
            return ""
        wrong = verdict is not None and verdict.accepted != truth
        warn = f' <b class="rlaifv-disagree" style="color:#b00">{"wrongly rejected" if truth else "wrongly accepted"}</b>' if wrong else ""
        return f' <span class="rlaifv-claim-truth" style="color:#555">· truly {"true" if truth else "false"}</span>{warn}'

    def claims_of(self, candidate_id: str, text: str) -> list[Claim]:
        """The claims of one side: given ones by candidate id, else decomposed from the text."""
        if self._from_claims:
            return self._claims.get(candidate_id, [])
        return self._decomposer.decompose(Candidate(candidate_id or "pair", 0, text)) if text.strip() else []

    def _image_of(self, pair: PreferencePair) -> bytes | None:
        image = pair.image if pair.image is not None else self.images.get(pair.prompt_id)
        return png_bytes(image) if image is not None else None

    def _render(self, pair: PreferencePair) -> str:
        sides = [("chosen", pair.chosen_id, pair.chosen, pair.chosen_score, "#2a7"), ("rejected", pair.rejected_id, pair.rejected, pair.rejected_score, "#c33")]
        claims = [self.claims_of(cid, text) for _, cid, text, _, _ in sides]
        texts = [{c.text for c in cs} for cs in claims]  # a set: one lookup per claim, never a scan
        cols = [self._side(pair, *side, claims[j], texts[1 - j]) for j, side in enumerate(sides)]
        instruction = f" &middot; instruction: <i>{_e(pair.instruction)}</i>" if pair.instruction else ""
        head = f"<div><b>{_e(pair.prompt_id)}</b> &middot; margin {pair.margin:g}{instruction}</div>"
        return (f'<div style="margin-left:12px">{head}{_scene_line(self.scenes.get(pair.prompt_id))}'
                f'<div style="display:flex;gap:12px;margin-top:6px">{"".join(cols)}</div></div>')  # fmt: skip

    def _side(self, pair: PreferencePair, label: str, cid: str, text: str, score: float, colour: str, claims: list[Claim], other: set[str]) -> str:
        """One column: header, response, and its claims with the ones the other side lacks highlighted."""
        only = [c.text not in other for c in claims]
        apart = bool(claims) and bool(other) and all(only)  # no claim in common: highlighting all says nothing
        only = [False] * len(claims) if apart else only
        toy = toy_sentence_spans(text) if any(c.span is None for c in claims) else []
        marks = [(*span, 0) for c, o in zip(claims, only) if o and (span := claim_span(c, text, toy)) is not None]
        look = {-1: (None, "rlaifv-text"), 0: (_YELLOW, "rlaifv-differs")}
        sentences = "".join(_span(text[a:b], *look[r]) for a, b, r in _pieces(len(text), marks))
        items = []
        for c, o in zip(claims, only):
            v = self._verdicts.get(c.id)
            note = "" if v is None else (" ✓" if v.accepted else " ✗ rejected")
            cls = "rlaifv-claim rlaifv-only" if o else "rlaifv-claim"
            items.append(f"<li>{_span(c.text + note, _YELLOW if o else None, cls)}{self._truth_marker(c, v, pair)}</li>")
        hall = self._hall(text, pair)
        hall_line = f'<div class="rlaifv-hallucinated">hallucinated objects: {_e(", ".join(hall)) or "none"}</div>' if self.scenes else ""
        return (f'<div class="rlaifv-{label}" style="flex:1;border-top:4px solid {colour};padding:4px">'
                f"<div><b>{label}</b> &middot; score {score:g} &middot; {_count(word_length(text), 'word', 'words')} &middot; {_count(len(claims), 'claim', 'claims')}, "
                f"{'no claim in common with the other' if apart else f'{sum(only)} not in the other'}</div>"
                f'<div class="rlaifv-response" style="{_RESPONSE_STYLE}">{sentences or "<i>(empty)</i>"}</div>'
                f'{hall_line}<ul class="rlaifv-claim-list" style="margin:2px 0;padding-left:18px;font-size:90%;max-height:16em;overflow-y:auto">{"".join(items)}</ul></div>')  # fmt: skip
