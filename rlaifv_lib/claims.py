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
A response with no claims yields ``[]``; the feedback step then gives it no score.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

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
        """Claim fields (text, question, kind, target, sentence, value) of one non-empty response."""

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
        out: list[Claim] = []
        for cand in tqdm(candidates, desc="decomposing claims", disable=not progress, unit="resp"):
            if cand.text and cand.text.strip():
                out += self.decompose(cand)
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
        """Existence and attribute claims of every mention, in reading order."""
        out: list[dict] = []
        for m in parse_description(text.lower()):
            out.append(_raw(f"there is a {m.shape}", existence_question(m.shape), "existence", m.shape, m.sentence))
            for kind in self.cfg.attributes:
                value = getattr(m, kind)
                if value is not None:
                    said = PLACE_PHRASES[value] if kind == "position" else value
                    question = attribute_question(m.shape, kind, value)
                    out.append(_raw(f"the {m.shape} is {said}", question, kind, m.shape, m.sentence, value))
        return out


def _raw(text: str, question: str, kind: str, target: str | None, sentence: int, value: str | None = None) -> dict:
    """The fields of one claim, without its ids."""
    return dict(text=text, question=question, kind=kind, target=target, sentence=sentence, value=value)


# ---------------------------------------------------------------- rule-based (free English)

_VERBS = ("is", "are", "was", "were", "has", "have", "had", "can", "could", "will", "does", "do")
_DETERMINERS = {"the", "a", "an", "this", "that", "these", "those", "its", "his", "her", "their", "some", "two", "three"}
_PRONOUNS = {"there", "it", "they", "he", "she", "we"}
_AUX_Q = {"is": "Is", "are": "Are", "was": "Was", "were": "Were", "can": "Can", "could": "Could", "will": "Will"}
_HAVE_Q = {"has": "Does", "have": "Do", "had": "Did"}


def split_sentences(text: str) -> list[str]:
    """Sentences of a text, split after . ! ? followed by a space or the end (also at newlines)."""
    parts = re.split(r"(?<=[.!?])\s+|\n+", text.strip())
    return [p.strip() for p in parts if p.strip()]


def split_conjunctions(clause: str) -> list[str]:
    """Split "A and B" into clauses; a part without a verb borrows the first part's "subject verb" prefix."""
    parts = [p.strip(" ,;") for p in re.split(r",?\s+and\s+|;\s*", clause) if p.strip(" ,;")]
    if len(parts) < 2:
        return parts
    words = parts[0].split()
    verb_at = next((i for i, w in enumerate(words) if w.lower() in _VERBS), None)
    if verb_at is None:  # no recognisable verb: too risky to split
        return [clause.strip(" ,;")]
    prefix = " ".join(words[: verb_at + 1])
    return [parts[0]] + [p if any(w.lower() in _VERBS for w in p.split()) else f"{prefix} {p}" for p in parts[1:]]


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
        """One "fact" claim per clause of every declarative sentence."""
        out: list[dict] = []
        for i, sent in enumerate(split_sentences(text)):
            if sent.endswith("?"):
                continue
            for clause in split_conjunctions(sent.rstrip(".!;: ")):
                if len(clause.split()) >= 2:
                    out.append(_raw(clause, rule_question(clause), "fact", None, i))
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


class LLMDecomposer(Decomposer):
    """Decomposition by a prompted chat causal LM (Hugging Face model + tokenizer), greedy, batched.

    Pass (a) turns each response into a list of facts (``FACT_PROMPT``); pass (b) turns each
    fact into a yes/no question (``QUESTION_PROMPT``), one prompt per fact so that facts and
    questions never lose their alignment. If pass (b) gives nothing usable, the question comes
    from :func:`rule_question`. Claims have kind "fact", no target; ``sentence`` is the fact's
    line number in pass (a), as the LLM does not say which response sentence a fact came from.
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
        out: list[tuple[str, bool]] = []
        eos = torch.tensor(sorted(self._eos_ids()))
        for start in tqdm(range(0, len(prompts), self.cfg.batch_size), desc=desc, disable=not progress, unit="batch"):
            chunk = [[{"role": "user", "content": p}] for p in prompts[start : start + self.cfg.batch_size]]
            texts = self.tokenizer.apply_chat_template(chunk, add_generation_prompt=True, tokenize=False)
            inputs = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
            inputs = {k: v.to(self.model.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
            with torch.no_grad():
                gen = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.cfg.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
            new = gen[:, inputs["input_ids"].shape[1] :].cpu()
            finished = torch.isin(new, eos).any(-1) if len(eos) else torch.zeros(len(new), dtype=torch.bool)
            decoded = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            out += [(t.strip(), bool(not f and new.shape[1] >= self.cfg.max_new_tokens)) for t, f in zip(decoded, finished)]
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
        return [[_raw(f, next(questions), "fact", None, j) for j, f in enumerate(fs)] for fs in facts]

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
