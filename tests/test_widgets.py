"""Tests of rlaifv_lib.widgets: the inspectors driven from Python (buttons, filters) and HTML escaping."""

from __future__ import annotations

import html
import io
import re
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
from PIL import Image

from rlaifv_lib import records
from rlaifv_lib.audit import claim_truth, pair_audit
from rlaifv_lib.claims import ClaimsConfig, LLMDecomposer, RuleBasedDecomposer, ToyDecomposer
from rlaifv_lib.records import Candidate, Claim, PreferencePair, Verdict
from rlaifv_lib.toyworld import Scene, ToyObject, render_scene
from rlaifv_lib.widgets import ClaimInspector, PairInspector, png_bytes

HOSTILE = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>")
SCENE = Scene("p0", [ToyObject("circle", "red", "large", 0), ToyObject("square", "blue", "small", 8)])
TRUE_TEXT = "there is a large red circle at the top left . there is a small blue square at the bottom right ."
HALL_TEXT = "there is a large red circle at the top left . there is a small green star at the top right ."


def _claim_setup(texts: list[str], reject_false: bool = True):
    """Candidates of prompt p0, their toy claims, and verdicts that reject false claims (or accept all)."""
    cands = [Candidate("p0", 10 + k, t, k) for k, t in enumerate(texts)]
    claims = ToyDecomposer().decompose_all(cands, progress=False)
    verdicts = []
    for c in claims:
        ok = bool(claim_truth(c, {"p0": SCENE})) or not reject_false
        verdicts.append(Verdict(c.id, 0.9 if ok else 0.1, 0.1 if ok else 0.9, ok))
    return cands, claims, verdicts


def _claim_inspector(texts: list[str], reject_false: bool = True) -> ClaimInspector:
    cands, claims, verdicts = _claim_setup(texts, reject_false)
    return ClaimInspector.from_records(cands, claims, verdicts, images={"p0": render_scene(SCENE)}, scenes={"p0": SCENE})


def _no_live_tags(html: str) -> None:
    """No executable tag survived: no <script or <img element in the HTML."""
    assert not re.search(r"<\s*script", html, re.I)
    assert not re.search(r"<\s*img", html, re.I)


def test_png_bytes_upscales_nearest():
    png = png_bytes(render_scene(SCENE), size=192)
    im = Image.open(io.BytesIO(png))
    assert im.size == (192, 192)
    small = render_scene(SCENE)
    assert im.getpixel((5, 5)) == small.getpixel((1, 1))  # each toy pixel became a 4x4 block


class _Marked(HTMLParser):
    """The response's text pieces in an inspector's HTML, with the classes of the span around each."""

    def __init__(self, html_text: str):
        super().__init__(convert_charrefs=True)
        self.pieces: list[tuple[str, str]] = []
        self._depth, self._cls = 0, []
        self.feed(html_text)

    def handle_starttag(self, tag, attrs):
        cls = dict(attrs).get("class") or ""
        if "rlaifv-response" in cls.split():
            self._depth = 1
        elif self._depth:
            self._depth += 1
        self._cls.append(cls)

    def handle_endtag(self, tag):
        self._depth = max(0, self._depth - 1) if self._depth else 0
        self._cls.pop()

    def handle_data(self, data):
        if self._depth > 1:
            self.pieces.append((self._cls[-1], data))

    def text(self, cls: str) -> list[str]:
        """The pieces whose span has class ``cls``."""
        return [d for c, d in self.pieces if cls in c.split()]


FREE_TEXT = "A red car is parked near the house.\nThe car has two doors and a dog sits on the roof. Dr. Smith owns the car.\n\nThe sky is green."


def _verdicts_rejecting(claims: list[Claim], bad: set[str], text: str | None = None) -> list[Verdict]:
    """Verdicts rejecting the claims whose text (or, given the response ``text``, whose source span) is in ``bad``."""
    said = [text[c.span[0] : c.span[1]] if text else c.text for c in claims]
    return [Verdict(c.id, 0.1, 0.9, False) if t in bad else Verdict(c.id, 0.9, 0.1, True) for c, t in zip(claims, said)]


def test_claim_inspector_marks_exactly_the_rule_claims_text():
    """Free English (newlines, an abbreviation): each clause's own words carry its verdict; a rejected one is red."""
    cand = Candidate("p0", 0, FREE_TEXT, 0)
    claims = RuleBasedDecomposer().decompose(cand)
    assert [FREE_TEXT[a:b] for a, b in (c.span for c in claims)] == [
        "A red car is parked near the house", "The car has two doors", "a dog sits on the roof", "Dr. Smith owns the car", "The sky is green",
    ]  # fmt: skip
    assert claims[2].text == "The car has a dog sits on the roof"  # the clause borrowed "The car has"; its span did not
    verdicts = _verdicts_rejecting(claims, {"a dog sits on the roof", "The sky is green"}, FREE_TEXT)
    marked = _Marked(ClaimInspector.from_records([cand], claims, verdicts).html)
    assert marked.text("rlaifv-rejected") == ["a dog sits on the roof", "The sky is green"]
    assert marked.text("rlaifv-accepted") == ["A red car is parked near the house", "The car has two doors", "Dr. Smith owns the car"]
    assert "".join(d for _, d in marked.pieces) == FREE_TEXT  # every character shown once, in order, newlines kept


class _ScriptedLLM(LLMDecomposer):
    """The LLM decomposer with a scripted model: the facts an instruction-tuned LLM would list."""

    def __init__(self, facts: str):
        super().__init__(None, SimpleNamespace(chat_template="{{ x }}", pad_token="<pad>"), ClaimsConfig(decomposer="llm"))
        self.facts = facts

    def generate(self, prompts, progress=False, desc="llm"):
        return [(self.facts if "Response:" in p else "", False) for p in prompts]


def test_claim_inspector_marks_the_llm_facts_source_sentence():
    """LLM facts are rewritten text; each is placed on the response sentence it best matches (pronouns resolved)."""
    facts = "1. A red car is parked near a house.\n2. The car has two doors.\n3. A dog sits on the roof.\n4. Dr. Smith owns the car.\n5. The sky is green.\n6. Zebras fly."
    cand = Candidate("p0", 0, FREE_TEXT, 0)
    claims = _ScriptedLLM(facts).decompose(cand)
    assert [c.sentence for c in claims] == [0, 1, 1, 2, 3, -1]
    assert claims[-1].span is None  # shares no word with the response: not placed
    verdicts = _verdicts_rejecting(claims, {"The sky is green."})
    ins = ClaimInspector.from_records([cand], claims, verdicts)
    marked = _Marked(ins.html)
    assert marked.text("rlaifv-rejected") == ["The sky is green."]  # the sentence after the blank line, not its neighbour
    assert marked.text("rlaifv-accepted") == ["A red car is parked near the house.", "The car has two doors and a dog sits on the roof.", "Dr. Smith owns the car."]
    assert "1 not located in the text" in ins.html


def test_claim_inspector_marks_toy_sentences_and_old_claims_without_span():
    text = "there is a red circle .\nthere is a green star at the top right ."
    cands, claims, verdicts = _claim_setup([text])
    assert sorted(text[a:b] for a, b in {c.span for c in claims}) == ["there is a green star at the top right", "there is a red circle"]
    marked = _Marked(ClaimInspector.from_records(cands, claims, verdicts).html)
    assert marked.text("rlaifv-rejected") == ["there is a green star at the top right"]
    assert marked.text("rlaifv-accepted") == ["there is a red circle"]
    old = [Claim(**{**vars(c), "span": None}) for c in claims]  # as read from a claims.jsonl written before spans
    assert _Marked(ClaimInspector.from_records(cands, old, verdicts).html).text("rlaifv-rejected") == ["there is a green star at the top right"]


def test_claim_span_survives_jsonl_and_old_files_read(tmp_path):
    claims = RuleBasedDecomposer().decompose(Candidate("p0", 0, FREE_TEXT, 0))
    records.write_jsonl(tmp_path / "claims.jsonl", claims)
    assert records.read_jsonl(tmp_path / "claims.jsonl", Claim) == claims
    old = [{k: v for k, v in vars(c).items() if k != "span"} for c in claims]  # written by an older version
    records.write_jsonl(tmp_path / "old.jsonl", old)
    back = records.read_jsonl(tmp_path / "old.jsonl", Claim)
    assert [c.span for c in back] == [None] * len(claims) and [c.text for c in back] == [c.text for c in claims]


BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f"


def test_bidi_controls_never_reach_the_html_raw():
    text = f"there is a red circle \u202eelcric der a si ereht . {BIDI} there is a star ."
    cands, claims, verdicts = _claim_setup([text])
    pair = PreferencePair("p0\u202e", text, "there is a star \u2067.", 1.0, "p0/c0", "p0/c1", 0.0, -1.0, "describe \u202d")
    for shown in (ClaimInspector.from_records(cands, claims, verdicts).html, PairInspector([pair]).html):
        assert not re.search("[\u202a-\u202e\u2066-\u2069\u200e\u200f]", shown)
        assert "[U+202E]" in shown
    assert all(f"[U+{ord(ch):04X}]" in ClaimInspector.from_records(cands, claims, verdicts).html for ch in BIDI)


def test_claim_inspector_shows_verdict_colours_and_truth():
    ins = _claim_inspector([TRUE_TEXT, HALL_TEXT])
    assert ins.position.value.startswith("1 / 2")
    assert ins.image.value[:4] == b"\x89PNG"
    assert "rlaifv-accepted" in ins.html and "rlaifv-rejected" not in ins.html
    assert "is there a circle ?" in ins.html and "0.900" in ins.html
    assert "in the image:" in ins.html
    ins.next_button.click()
    assert ins.index == 1 and ins.current.candidate.text == HALL_TEXT
    assert "rlaifv-rejected" in ins.html and "hallucinated objects:" in ins.html
    ins.next_button.click()  # wraps around
    assert ins.index == 0
    ins.prev_button.click()
    assert ins.index == 1


def test_claim_inspector_filters():
    ins = _claim_inspector([TRUE_TEXT, HALL_TEXT, TRUE_TEXT], reject_false=False)  # labeler accepts everything
    assert len(ins.visible) == 3
    ins.filter_dropdown.value = "has hallucination"
    assert ins.visible == [1] and ins.index == 0 and ins.current.candidate.index == 1
    ins.filter = "disagreements with truth"
    assert ins.visible == [1] and "labeler wrong" in ins.html
    ins.filter = "rejected only"
    assert ins.visible == [] and ins.current is None
    assert "no candidate matches" in ins.html and ins.image.layout.visibility == "hidden"
    ins.filter = "all"
    assert ins.image.layout.visibility == "visible"


def test_claim_inspector_without_verdicts_or_scenes():
    cands = [Candidate("p0", 0, TRUE_TEXT, 0), Candidate("p0", 1, "", 1)]
    claims = ToyDecomposer().decompose_all(cands, progress=False)
    ins = ClaimInspector.from_records(cands, claims)
    assert "rlaifv-unscored" in ins.html and "truth" not in ins.html
    assert ins.image.layout.visibility == "hidden"  # no image given
    ins.next()
    assert "no claims" in ins.html


@pytest.mark.parametrize("hostile", HOSTILE)
def test_claim_inspector_escapes_model_text(hostile):
    ins = _claim_inspector([f"there is a red circle {hostile} . {hostile}"])
    _no_live_tags(ins.html)
    assert "&lt;" in ins.html


def _pair(chosen: str, rejected: str, margin: float = 1.0, k: int = 0) -> PreferencePair:
    return PreferencePair("p0", chosen, rejected, margin, f"p0/c{k}", f"p0/c{k + 1}", 0.0, -margin, "describe the image .")


def test_pair_inspector_side_by_side_and_differences():
    pairs = [_pair(TRUE_TEXT, HALL_TEXT), _pair("there is a red circle .", TRUE_TEXT, 2.0, 2)]
    ins = PairInspector(pairs, images={"p0": render_scene(SCENE)}, scenes={"p0": SCENE})
    shown = ins.html
    assert "rlaifv-chosen" in shown and "rlaifv-rejected" in shown
    assert shown.count("rlaifv-only") == 8  # the square's 4 claims on one side, the star's 4 on the other
    assert shown.count("rlaifv-differs") == 2  # the sentence of each
    assert "there is a star" in shown and "there is a square" in shown
    assert "margin 1" in shown and "22 words" in shown
    assert ins.image.value[:4] == b"\x89PNG"
    ins.next_button.click()
    assert ins.current is pairs[1] and "margin 2" in ins.html


def test_pair_inspector_filters():
    pairs = [_pair(TRUE_TEXT, HALL_TEXT), _pair("there is a red circle .", TRUE_TEXT, 2.0, 2), _pair(HALL_TEXT + " there is a bar .", TRUE_TEXT, 1.0, 4)]
    ins = PairInspector(pairs, scenes={"p0": SCENE})
    assert "wrong by truth" in ins.filter_dropdown.options
    ins.filter = "margin >= 2"
    assert ins.visible == [1]
    ins.filter = "chosen shorter"
    assert ins.visible == [1]
    ins.filter = "chosen longer"
    assert ins.visible == [2]
    ins.filter = "wrong by truth"
    assert ins.visible == [2] and "star, bar" in ins.html
    assert "wrong by truth" not in PairInspector(pairs).filter_dropdown.options


def test_pair_inspector_uses_given_claims_and_verdicts():
    cands, claims, verdicts = _claim_setup([TRUE_TEXT, HALL_TEXT])
    ins = PairInspector([_pair(TRUE_TEXT, HALL_TEXT)], claims=claims, verdicts=verdicts)
    assert "✗ rejected" in ins.html and "✓" in ins.html


def test_pair_inspector_empty_shows_reason():
    ins = PairInspector([], empty="no prompt gave a pair — 3 prompt(s): every candidate tied")
    assert ins.current is None and "every candidate tied" in ins.html
    ins.next_button.click()
    assert ins.index == 0


@pytest.mark.parametrize("hostile", HOSTILE)
def test_pair_inspector_escapes_model_text(hostile):
    pair = PreferencePair("p0<b>", f"there is a circle {hostile} .", f"{hostile} there is a star .", 1.0, "a", "b", 0.0, -1.0, hostile)
    ins = PairInspector([pair])
    _no_live_tags(ins.html)
    assert html.escape(hostile) in ins.html and "p0&lt;b&gt;" in ins.html


def _calls_to_render(n_sentences: int) -> tuple[int, int]:
    """(Python function calls, Claim.__eq__ calls) while a PairInspector renders two responses of n sentences."""
    import sys

    chosen = " ".join(f"there is a red circle at the top left . there is a small blue square {k} ." for k in range(n_sentences // 2))
    rejected = " ".join(f"there is a large green star at the top right . there is a red circle {k} ." for k in range(n_sentences // 2))
    calls, eqs = [0], [0]
    original_eq = records.Claim.__eq__

    def counting_eq(self, other):
        eqs[0] += 1
        return original_eq(self, other)

    def profile(frame, event, arg):
        if event == "call":
            calls[0] += 1

    records.Claim.__eq__ = counting_eq
    sys.setprofile(profile)
    try:
        PairInspector([_pair(chosen, rejected)])
    finally:
        sys.setprofile(None)
        records.Claim.__eq__ = original_eq
    return calls[0], eqs[0]


def test_pair_inspector_is_linear_in_the_response_length():
    """Structural, not timed: 4x the text costs about 4x the Python calls and no claim-by-claim comparisons."""
    small, small_eq = _calls_to_render(600)  # ~12,500 characters per response
    big, big_eq = _calls_to_render(2400)  # ~50,000 characters per response, ~9,600 claims
    assert small_eq == 0 and big_eq == 0  # claims are never compared pairwise (the old `c in only` list scan)
    assert big / small < 4.4, (small, big)  # linear; a quadratic step would make this ~16


def test_pair_inspector_shows_truth_beside_verdict():
    cands, claims, verdicts = _claim_setup([TRUE_TEXT, HALL_TEXT])
    flipped = [Verdict(v.claim_id, 0.1, 0.9, False) if v.claim_id.startswith("p0/c0") else v for v in verdicts]  # the chosen's true claims rejected
    ins = PairInspector([_pair(TRUE_TEXT, HALL_TEXT)], scenes={"p0": SCENE}, claims=claims, verdicts=flipped)
    shown = ins.html
    assert shown.count("rlaifv-claim-truth") == len(claims)  # every claim, both sides
    assert shown.count("wrongly rejected") == sum(c.candidate_id == "p0/c0" for c in claims)
    assert "truly false" in shown and "wrongly accepted" not in shown
    assert "rlaifv-claim-truth" not in PairInspector([_pair(TRUE_TEXT, HALL_TEXT)]).html  # no scene, no truth


def test_pair_inspector_wrong_by_truth_counts_the_audits_wrong_way():
    wrong_colour = "there is a large green circle at the top left . there is a small blue square at the bottom right ."
    texts = [TRUE_TEXT, wrong_colour, HALL_TEXT, HALL_TEXT + " there is a bar ."]
    cands, claims, verdicts = _claim_setup(texts)
    pairs = [PreferencePair("p0", wrong_colour, TRUE_TEXT, 1.0, "p0/c1", "p0/c0", 0.0, -1.0), _pair(TRUE_TEXT, HALL_TEXT),
             PreferencePair("p0", texts[3], TRUE_TEXT, 1.0, "p0/c3", "p0/c0", 0.0, -1.0)]
    audit = pair_audit(pairs, {"p0": SCENE}, claims)
    wrong_way = [i for i, r in enumerate(audit["rows"]) if r["outcome"] == "wrong_way"]
    assert wrong_way == [0, 2]  # the same objects but a false colour counts too, not only more absent objects
    for given in (claims, None):  # given claims, or decomposed from the texts
        ins = PairInspector(pairs, scenes={"p0": SCENE}, claims=given)
        ins.filter = "wrong by truth"
        assert ins.visible == wrong_way


def test_pair_inspector_no_common_claim_highlights_nothing():
    ins = PairInspector([_pair(TRUE_TEXT, "there is a small green star at the top right .")], scenes={"p0": SCENE})
    assert "rlaifv-only" not in ins.html and "rlaifv-differs" not in ins.html
    assert ins.html.count("no claim in common with the other") == 2


def test_inspectors_plurals_and_scrolling_claim_list():
    ins = PairInspector([_pair("there is a circle .", "circle")], scenes={"p0": SCENE})
    assert "1 claim," in ins.html and "1 word " in ins.html and "max-height" in ins.html and "overflow-y:auto" in ins.html
    one = _claim_inspector(["there is a large green circle at the top left ."], reject_false=False)  # one false claim accepted
    assert "1 verdict contradicts the truth" in one.html
    assert "0 verdicts contradict the truth" in _claim_inspector([TRUE_TEXT]).html
