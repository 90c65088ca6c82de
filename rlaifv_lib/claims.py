"""Claim decomposition, the "divide" step of RLAIF-V (Sec. 3.2, divide-and-conquer feedback).

A response is split into atomic claims, and each claim becomes a polar (yes/no) question that a
labeler can answer while looking at the image ("conquer", in ``feedback.py``). Three
decomposers share one interface (:class:`Decomposer`):

- :class:`ToyDecomposer`: exact, for the toy world's closed language (one existence claim per
  object mention, one claim per stated colour, size and position).
- :class:`RuleBasedDecomposer`: sentence and conjunction splitting plus a few question
  patterns, for free English when no LLM is at hand; approximate.
- :class:`LLMDecomposer`: any chat causal LM is prompted twice, as the paper prompts an
  instruction-tuned Llama-3-8B: (a) list the response's facts as self-contained sentences,
  (b) rewrite each fact as a yes/no question keeping negations and tense.

Questions carry no "Please answer yes or no." suffix; ``FeedbackConfig.question_suffix`` adds it.
Every claim records ``span``, the [start, end) characters of the response it came from (the toy
sentence, the rule-based clause, or the response sentence an LLM fact matches best), so a widget can
mark exactly that text.
A response with no claims yields ``[]``; the feedback step then gives it no score.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from . import distributed
from .errors import ChatTemplateError, ConfigError, EmptyResponseError, check_finite
from .models import tokenizer_of
from .records import Candidate, Claim
from .toyworld.grammar import PLACE_PHRASES, attribute_question, existence_question, parse_description

__all__ = [
    "FACT_PROMPT",
    "QUESTION_PROMPT",
    "ClaimsConfig",
    "Decomposer",
    "ToyDecomposer",
    "RuleBasedDecomposer",
    "LLMDecomposer",
    "make_decomposer",
    "toy_sentence_spans",
    "sentence_spans",
    "split_sentences",
    "split_conjunctions",
    "rule_question",
    "parse_fact_list",
    "parse_question_output",
]

FACT_PROMPT = (
    "You are given a response that describes an image. List every fact that the response states "
    "about the image as a self-contained sentence: replace pronouns with the nouns they refer to, "
    "keep one fact per sentence, and keep negations. Leave out opinions, feelings and guesses. "
    "Write one fact per line, numbered 1., 2., 3., and nothing else. If the response states no "
    "fact, write None.\n\nResponse: {response}"
)
QUESTION_PROMPT = (
    "Rewrite the following statement as one yes/no question whose answer is yes exactly when the "
    "statement is true. Keep every negation word and keep the tense. Write only the question.\n\n"
    "Statement: {fact}"
)
_ATTRIBUTES = ("colour", "size", "position")


@dataclass
class ClaimsConfig:
    """Settings of the divide step.

    Args:
        decomposer (str, defaults to "toy"): "toy" (exact, toy language), "rules" (free English,
            no model) or "llm" (a prompted chat LM, as in the paper).
        max_claims (int or None, defaults to None): keep at most this many claims per response
            (the first ones); None keeps all, as the official code does.
        attributes (tuple of str, defaults to ("colour", "size", "position")): the toy attributes
            that become claims besides existence; () checks objects only (like CHAIR).
        max_new_tokens (int, defaults to 256): generation cap of each LLM pass.
        batch_size (int, defaults to 16): prompts per ``generate`` call of the LLM decomposer.
        fact_prompt (str, defaults to FACT_PROMPT): pass (a) prompt; must contain "{response}".
        question_prompt (str, defaults to QUESTION_PROMPT): pass (b) prompt; must contain "{fact}".
    """

    decomposer: str = "toy"
    max_claims: int | None = None
    attributes: tuple[str, ...] = _ATTRIBUTES
    max_new_tokens: int = 256
    batch_size: int = 16
    fact_prompt: str = FACT_PROMPT
    question_prompt: str = QUESTION_PROMPT

    def __post_init__(self) -> None:
        check_finite(self)
        if self.decomposer not in ("toy", "rules", "llm"):
            raise ConfigError(f"decomposer must be 'toy', 'rules' or 'llm', got {self.decomposer!r}")
        if self.max_claims is not None and self.max_claims < 1:
            raise ConfigError(f"max_claims must be None or >= 1, got {self.max_claims}")
        self.attributes = tuple(self.attributes)
        if bad := [a for a in self.attributes if a not in _ATTRIBUTES]:
            raise ConfigError(f"attributes must be among {_ATTRIBUTES}, got {bad}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError("max_new_tokens and batch_size must be >= 1")
        if "{response}" not in self.fact_prompt or "{fact}" not in self.question_prompt:
            raise ConfigError("fact_prompt needs a '{response}' slot and question_prompt a '{fact}' slot")


class Decomposer(ABC):
    """Response -> atomic claims, each with its polar question.

    ``decompose`` raises ``EmptyResponseError`` on an empty or whitespace-only response;
    ``decompose_all`` records zero claims for it instead, so one bad response never stops a batch.
    """

    def __init__(self, cfg: ClaimsConfig | None = None):
        self.cfg = cfg or ClaimsConfig()

    @abstractmethod
    def _raw_claims(self, text: str) -> list[dict]:
        """Claim fields (text, question, kind, target, sentence, value, span) of one non-empty response."""

    def decompose(self, candidate: Candidate) -> list[Claim]:
        """The claims of one candidate; ``EmptyResponseError`` if its text is empty."""
        if not candidate.text or not candidate.text.strip():
            raise EmptyResponseError(
                f"candidate {candidate.id} has an empty response, so it has no claims to check. "
                "Use decompose_all (which records zero claims for it) or drop the candidate."
            )
        return self._to_claims(candidate, self._raw_claims(candidate.text))

    def decompose_all(self, candidates: Sequence[Candidate], progress: bool = True) -> list[Claim]:
        """The claims of every candidate, in order; empty responses give zero claims."""
        bar = tqdm(total=distributed.share(len(candidates)), desc="decomposing claims", disable=not progress or not distributed.is_main(), unit="resp")

        def one(cand: Candidate) -> list[Claim]:
            bar.update()
            return self.decompose(cand) if cand.text and cand.text.strip() else []

        out = [claim for claims in distributed.map_shards(one, candidates) for claim in claims]  # split over processes
        bar.close()
        return out

    def _to_claims(self, candidate: Candidate, raw: list[dict]) -> list[Claim]:
        """Cap at ``max_claims`` and number the claims ``candidate_id/k<index>``."""
        raw = raw[: self.cfg.max_claims] if self.cfg.max_claims else raw
        return [Claim(candidate_id=candidate.id, index=i, **r) for i, r in enumerate(raw)]


class ToyDecomposer(Decomposer):
    """Exact decomposition of the toy language.

    Each object mention gives an existence claim ("there is a circle" -> "is there a circle ?")
    and one claim per attribute the sentence states ("the circle is red" -> "is the circle red ?",
    kind "colour", value "red"; likewise size and position). A shape mentioned twice gives its
    claims twice: CHAIR_i counts repeated mentions, and so does the score (a repeated
    hallucination is rejected twice). Sentences naming no shape give no claim; a sentence naming
    two shapes is read for its first one only (``grammar.parse_description``).

    Example:
        >>> [c.question for c in ToyDecomposer().decompose(Candidate("p", 0, "there is a red circle ."))]
        ['is there a circle ?', 'is the circle red ?']
    """

    def _raw_claims(self, text: str) -> list[dict]:
        """Existence and attribute claims of every mention, in reading order; each spans its sentence."""
        out: list[dict] = []
        spans = toy_sentence_spans(text)  # numbered as parse_description numbers sentences
        for m in parse_description(text.lower()):
            sp = spans[m.sentence]
            out.append(_raw(f"there is a {m.shape}", existence_question(m.shape), "existence", m.shape, m.sentence, span=sp))
            for kind in self.cfg.attributes:
                value = getattr(m, kind)
                if value is not None:
                    said = PLACE_PHRASES[value] if kind == "position" else value
                    question = attribute_question(m.shape, kind, value)
                    out.append(_raw(f"the {m.shape} is {said}", question, kind, m.shape, m.sentence, value, sp))
        return out


Span = tuple[int, int]


def _raw(text: str, question: str, kind: str, target: str | None, sentence: int, value: str | None = None, span: Span | None = None) -> dict:
    """The fields of one claim, without its ids."""
    return dict(text=text, question=question, kind=kind, target=target, sentence=sentence, value=value, span=span)


def _stripped(text: str, start: int, end: int, chars: str | None = None) -> Span | None:
    """[start, end) of ``text`` without leading and trailing ``chars`` (whitespace by default); None if empty."""
    piece = text[start:end]
    a, b = start + len(piece) - len(piece.lstrip(chars)), end - (len(piece) - len(piece.rstrip(chars)))
    return (a, b) if b > a else None


def toy_sentence_spans(text: str) -> list[Span]:
    """Spans of the sentences of a toy text, numbered as ``grammar.toy_sentences`` (and ``Mention.sentence``) count them."""
    return [sp for m in re.finditer(r"[^.?]+", text) if (sp := _stripped(text, m.start(), m.end()))]


# ---------------------------------------------------------------- rule-based (free English)

_VERBS = ("is", "are", "was", "were", "has", "have", "had", "can", "could", "will", "does", "do")
_DETERMINERS = {"the", "a", "an", "this", "that", "these", "those", "its", "his", "her", "their", "some", "two", "three"}
_PRONOUNS = {"there", "it", "they", "he", "she", "we"}
_AUX_Q = {"is": "Is", "are": "Are", "was": "Was", "were": "Were", "can": "Can", "could": "Could", "will": "Will"}
_HAVE_Q = {"has": "Does", "have": "Do", "had": "Did"}


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
# a "." after these ends no sentence: titles, Latin short forms, single initials ("J. Smith")
_ABBREVIATION = re.compile(r"(?:^|[^\w.])(?:(?i:mr|mrs|ms|dr|prof|st|vs|approx|fig|e\.g|i\.e)|[A-Z])\.$")


def sentence_spans(text: str) -> list[Span]:
    """Spans of the sentences of free text: a sentence ends at . ! ? before a space (not after "Dr.", "e.g.", "J.") or at a newline."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if "\n" not in m.group() and _ABBREVIATION.search(text[max(0, m.start() - 8) : m.start()]):
            continue
        if sp := _stripped(text, start, m.start()):
            spans.append(sp)
        start = m.end()
    if sp := _stripped(text, start, len(text)):
        spans.append(sp)
    return spans


def split_sentences(text: str) -> list[str]:
    """Sentences of a text, as :func:`sentence_spans` delimits them."""
    return [text[a:b] for a, b in sentence_spans(text)]


def _conjunction_parts(clause: str) -> list[tuple[str, Span]]:
    """Clauses of "A and B" with the span of each one's own words in ``clause`` (see :func:`split_conjunctions`)."""
    bounds, start = [], 0
    for m in re.finditer(r",?\s+and\s+|;\s*", clause):
        bounds.append((start, m.start()))
        start = m.end()
    spans = [sp for a, b in [*bounds, (start, len(clause))] if (sp := _stripped(clause, a, b, " ,;"))]
    texts = [clause[a:b] for a, b in spans]
    if len(spans) < 2:
        return list(zip(texts, spans))
    words = texts[0].split()
    verb_at = next((i for i, w in enumerate(words) if w.lower() in _VERBS), None)
    if verb_at is None:  # no recognisable verb: too risky to split
        whole = _stripped(clause, 0, len(clause), " ,;")
        return [(clause[whole[0] : whole[1]], whole)] if whole else []
    prefix = " ".join(words[: verb_at + 1])
    rest = [(t if any(w.lower() in _VERBS for w in t.split()) else f"{prefix} {t}", sp) for t, sp in zip(texts[1:], spans[1:])]
    return [(texts[0], spans[0]), *rest]


def split_conjunctions(clause: str) -> list[str]:
    """Split "A and B" into clauses; a part without a verb borrows the first part's "subject verb" prefix."""
    return [t for t, _ in _conjunction_parts(clause)]


def _lower_first(text: str) -> str:
    """Lower-case the first word when it is a determiner or pronoun (keeps proper nouns)."""
    first, _, rest = text.partition(" ")
    return (first.lower() if first.lower() in _DETERMINERS | _PRONOUNS else first) + (" " + rest if rest else "")


def rule_question(clause: str) -> str:
    """A polar question for a simple clause: "There is a X" -> "Is there a X?", "The X is Y" -> "Is the X Y?"."""
    s = clause.strip().rstrip(".!?;:, ").strip()
    words = s.split()
    low = [w.lower() for w in words]
    if len(words) >= 3 and low[0] in ("there", "there's") and (low[0] == "there's" or low[1] in _AUX_Q):
        aux, rest = ("Is", words[1:]) if low[0] == "there's" else (_AUX_Q[low[1]], words[2:])
        return f"{aux} there {' '.join(rest)}?"
    verb_at = next((i for i, w in enumerate(low) if w in _AUX_Q or w in _HAVE_Q), None)
    if verb_at and verb_at < len(words) - 1:
        subject, verb, rest = _lower_first(" ".join(words[:verb_at])), low[verb_at], " ".join(words[verb_at + 1 :])
        if verb in _HAVE_Q:
            return f"{_HAVE_Q[verb]} {subject} have {rest}?"
        return f"{_AUX_Q[verb]} {subject} {rest}?"
    return f"Is it true that {_lower_first(s)}?"


class RuleBasedDecomposer(Decomposer):
    """Free-English decomposition without a model: sentences -> "and"-clauses -> question patterns.

    Patterns: "There is/are X" -> "Is/Are there X?", "X is/are/was/can Y" -> "Is/Are/Was/Can X Y?",
    "X has/have Y" -> "Does/Do X have Y?", anything else -> "Is it true that ...?". Every claim
    has kind "fact" and no target.

    What it cannot do: resolve pronouns ("It is red" stays about "it"), tell a negation's scope
    ("no cat and a dog" splits wrongly), keep relations together ("a cup and a plate on a table"
    loses "on a table" for the cup), tell colour pairs from two claims ("black and white"),
    drop opinions or hedges ("I think ..."), or handle questions and commands (they are skipped
    when they end with "?"). Use the LLM decomposer for real responses when you can.
    """

    def _raw_claims(self, text: str) -> list[dict]:
        """One "fact" claim per clause of every declarative sentence; each spans its clause's own words."""
        out: list[dict] = []
        for i, (a, b) in enumerate(sentence_spans(text)):
            sent = text[a:b]
            if sent.endswith("?"):
                continue
            for clause, (ca, cb) in _conjunction_parts(sent.rstrip(".!;: ")):
                if len(clause.split()) >= 2:
                    out.append(_raw(clause, rule_question(clause), "fact", None, i, span=(a + ca, a + cb)))
        return out


# ---------------------------------------------------------------- LLM-prompted (the paper's way)

_BULLET = re.compile(r"^\s*(?:[-*\u2022\u2023>]+|\(?\d+[.):]|\(?[a-zA-Z][.)])\s*")
_LABEL = re.compile(r"^\s*(?:facts?|statement|question|q|answer)\s*\d*\s*:\s*", re.IGNORECASE)
_NONE = {"none", "none.", "no facts", "no facts.", "n/a", "nothing", "nothing."}


def _clean_line(line: str) -> str:
    """A line without bullet, number, "Question:" label, quotes or surrounding spaces."""
    line = _LABEL.sub("", _BULLET.sub("", line.strip(), count=1))
    return line.strip().strip("\"'`*").strip()


def parse_fact_list(output: str, truncated: bool = False) -> list[str]:
    """Facts from pass (a) output: one per line; bullets, numbers, headers, duplicates and "None" dropped.

    When some lines are list items (numbered or bulleted), only those are kept, so a preamble
    ("Here are the facts:") and trailing junk go. With ``truncated`` (generation hit
    ``max_new_tokens``), a last line that does not end a sentence is dropped.
    """
    lines = [ln for ln in output.splitlines() if ln.strip()]
    if truncated and lines and not lines[-1].rstrip().endswith((".", "!", "?")):
        lines = lines[:-1]
    rows = [(bool(_BULLET.match(ln)), _clean_line(ln)) for ln in lines]
    rows = [(item, f) for item, f in rows if _usable(f) and f.lower() not in _NONE]
    if any(item for item, _ in rows):
        rows = [(item, f) for item, f in rows if item]
    facts, seen = [], set()
    for _, fact in rows:
        key = fact.lower().rstrip(".!? ")
        if key not in seen:
            seen.add(key)
            facts.append(fact)
    return facts


def _usable(line: str) -> bool:
    """A cleaned line that can be a fact or question: two words or more, not a header."""
    return len(line.split()) >= 2 and not line.endswith(":")


def parse_question_output(output: str) -> str | None:
    """The question from pass (b) output: first usable line, cut after its "?" (added when missing)."""
    for line in output.splitlines():
        q = _clean_line(line)
        if not _usable(q):
            continue
        q = q[: q.index("?") + 1] if "?" in q else q.rstrip(".!;, ") + "?"
        return q
    return None


_FUNCTION_WORDS = set(_VERBS) | _DETERMINERS | _PRONOUNS | {"of", "in", "on", "at", "to", "with", "and", "or", "by", "for", "from", "not", "no"}


def _content_words(words: list[str]) -> set[str]:
    """Content words (function words left out), each cut to 5 letters so "sleeps" meets "sleeping"."""
    return {w[:5] for w in words if w not in _FUNCTION_WORDS}


def _content_sentences(text: str) -> list[tuple[Span, set[str]]]:
    """Each sentence span of a response with its content words."""
    return [((a, b), _content_words(re.findall(r"[a-z0-9]+", text[a:b].lower()))) for a, b in sentence_spans(text)]


def _locate(fact: str, sentences: list[tuple[Span, set[str]]]) -> tuple[int, Span | None]:
    """(index, span) of the sentence best matching ``fact``; (-1, None) when none shares a content word.

    A sentence scores one per content word it shares with the fact, two for a word after the fact's
    first verb (the predicate: "The cat is black" comes from "It is black", not from "A cat sleeps",
    whose subject the LLM copied in). The first sentence wins a tie.
    """
    words = re.findall(r"[a-z0-9]+", fact.lower())
    verb = next((i for i, w in enumerate(words) if w in _VERBS), -1)
    subject, predicate = _content_words(words[: verb + 1]), _content_words(words[verb + 1 :])
    scores = [len(subject & ws) + 2 * len(predicate & ws) for _, ws in sentences]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i), default=None)
    return (-1, None) if best is None or scores[best] == 0 else (best, sentences[best][0])


class LLMDecomposer(Decomposer):
    """Decomposition by a prompted chat causal LM (Hugging Face model + tokenizer), greedy, batched.

    Pass (a) turns each response into a list of facts (``FACT_PROMPT``); pass (b) turns each
    fact into a yes/no question (``QUESTION_PROMPT``), one prompt per fact so that facts and
    questions never lose their alignment. If pass (b) gives nothing usable, the question comes
    from :func:`rule_question`. Claims have kind "fact", no target. The LLM does not say which
    response sentence a fact came from, so ``sentence``/``span`` are those of the response sentence
    (:func:`sentence_spans`) that best matches the fact (shared content words, the predicate's
    counting double); a fact sharing no content word gets ``sentence`` -1 and no span.
    The pad token is set to the EOS token when the tokenizer has none.

    Args:
        model: a causal LM (``generate``-capable), e.g. an instruction-tuned Llama-3-8B.
        tokenizer: its tokenizer (or a processor holding one), with a chat template.
        cfg: the settings (``max_new_tokens``, ``batch_size``, prompts, ``max_claims``).
    """

    def __init__(self, model: Any, tokenizer: Any, cfg: ClaimsConfig | None = None):
        super().__init__(cfg or ClaimsConfig(decomposer="llm"))
        self.model, self.tokenizer = model, tokenizer_of(tokenizer)
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ChatTemplateError(
                f"{type(self.tokenizer).__name__} has no chat template, so the decomposition prompts cannot "
                "be formatted. Use an instruction-tuned (chat) checkpoint, or set `tokenizer.chat_template` "
                "to a Jinja template."
            )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def _eos_ids(self) -> set[int]:
        """Every token id that ends generation (tokenizer and generation config)."""
        ids = {self.tokenizer.eos_token_id}
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids |= set(gen_eos) if isinstance(gen_eos, (list, tuple)) else {gen_eos}
        return {i for i in ids if i is not None}

    def generate(self, prompts: Sequence[str], progress: bool = False, desc: str = "llm") -> list[tuple[str, bool]]:
        """(output text, truncated) for each user prompt: chat-formatted, left-padded, greedy."""
        eos = torch.tensor(sorted(self._eos_ids()))
        starts = range(0, len(prompts), self.cfg.batch_size)
        bar = tqdm(total=distributed.share(len(starts)), desc=desc, disable=not progress or not distributed.is_main(), unit="batch")

        def batch(start: int) -> list[tuple[str, bool]]:
            chunk = [[{"role": "user", "content": p}] for p in prompts[start : start + self.cfg.batch_size]]
            texts = self.tokenizer.apply_chat_template(chunk, add_generation_prompt=True, tokenize=False)
            inputs = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
            inputs = {k: v.to(self.model.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
            with torch.no_grad():
                gen = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.cfg.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
            new = gen[:, inputs["input_ids"].shape[1] :].cpu()
            finished = torch.isin(new, eos).any(-1) if len(eos) else torch.zeros(len(new), dtype=torch.bool)
            decoded = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            bar.update()
            return [(t.strip(), bool(not f and new.shape[1] >= self.cfg.max_new_tokens)) for t, f in zip(decoded, finished)]

        out = [row for rows in distributed.map_shards(batch, starts) for row in rows]  # whole batches split over processes
        bar.close()
        return out

    def _raw_claims(self, text: str) -> list[dict]:
        """Both passes for one response."""
        return self._raw_batch([text], progress=False)[0]

    def _raw_batch(self, texts: Sequence[str], progress: bool) -> list[list[dict]]:
        """Both passes for many responses, each pass batched across all of them."""
        fact_out = self.generate([self.cfg.fact_prompt.format(response=t) for t in texts], progress, "divide: facts")
        facts = [parse_fact_list(o, truncated=tr)[: self.cfg.max_claims or None] for o, tr in fact_out]
        flat = [f for fs in facts for f in fs]
        q_out = self.generate([self.cfg.question_prompt.format(fact=f) for f in flat], progress, "divide: questions")
        questions = iter(parse_question_output(o) or rule_question(f) for f, (o, _) in zip(flat, q_out))
        out = []
        for text, fs in zip(texts, facts):
            sentences, claims = _content_sentences(text), []
            for f in fs:
                sentence, span = _locate(f, sentences)
                claims.append(_raw(f, next(questions), "fact", None, sentence, span=span))
            out.append(claims)
        return out

    def decompose_all(self, candidates: Sequence[Candidate], progress: bool = True) -> list[Claim]:
        """The claims of every candidate, both passes batched; empty responses give zero claims."""
        keep = [c for c in candidates if c.text and c.text.strip()]
        raws = self._raw_batch([c.text for c in keep], progress) if keep else []
        return [claim for c, raw in zip(keep, raws) for claim in self._to_claims(c, raw)]


def make_decomposer(cfg: ClaimsConfig | None = None, model: Any = None, tokenizer: Any = None) -> Decomposer:
    """The decomposer ``cfg.decomposer`` names; "llm" needs a chat ``model`` and ``tokenizer``."""
    cfg = cfg or ClaimsConfig()
    if cfg.decomposer == "toy":
        return ToyDecomposer(cfg)
    if cfg.decomposer == "rules":
        return RuleBasedDecomposer(cfg)
    if model is None or tokenizer is None:
        raise ConfigError("the 'llm' decomposer needs a chat causal LM: pass model= and tokenizer= to make_decomposer.")
    return LLMDecomposer(model, tokenizer, cfg)
