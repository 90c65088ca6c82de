"""Tests of the divide step: toy, rule-based and LLM-prompted claim decomposition."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from rlaifv_lib.claims import (
    FACT_PROMPT,
    QUESTION_PROMPT,
    ClaimsConfig,
    LLMDecomposer,
    RuleBasedDecomposer,
    ToyDecomposer,
    make_decomposer,
    parse_fact_list,
    parse_question_output,
    rule_question,
    split_conjunctions,
    split_sentences,
)
from rlaifv_lib.errors import ChatTemplateError, ConfigError, EmptyResponseError
from rlaifv_lib.records import Candidate, Claim

TWO_OBJECTS = "there is a large red circle at the top left . there is a small blue square in the center ."


def cand(text: str, prompt_id: str = "p0", index: int = 0) -> Candidate:
    """A candidate with the given text."""
    return Candidate(prompt_id=prompt_id, seed=0, text=text, index=index)


# ---------------------------------------------------------------- config and factory


def test_config_checks():
    with pytest.raises(ConfigError):
        ClaimsConfig(decomposer="magic")
    with pytest.raises(ConfigError):
        ClaimsConfig(max_claims=0)
    with pytest.raises(ConfigError):
        ClaimsConfig(attributes=("shape",))
    with pytest.raises(ConfigError):
        ClaimsConfig(fact_prompt="no slot here")
    with pytest.raises(ConfigError):
        ClaimsConfig(batch_size=0)


def test_factory():
    assert isinstance(make_decomposer(), ToyDecomposer)
    assert isinstance(make_decomposer(ClaimsConfig(decomposer="rules")), RuleBasedDecomposer)
    with pytest.raises(ConfigError, match="model"):
        make_decomposer(ClaimsConfig(decomposer="llm"))


# ---------------------------------------------------------------- toy decomposer


def test_toy_counts_questions_and_fields():
    claims = ToyDecomposer().decompose(cand(TWO_OBJECTS))
    assert Counter(c.kind for c in claims) == {"existence": 2, "colour": 2, "size": 2, "position": 2}
    assert [c.question for c in claims[:4]] == [
        "is there a circle ?",
        "is the circle red ?",
        "is the circle large ?",
        "is the circle at the top left ?",
    ]
    assert claims[7].question == "is the square in the center ?"
    assert [c.index for c in claims] == list(range(8))
    assert claims[5].id == "p0/c0/k5" and claims[5].candidate_id == "p0/c0"
    assert (claims[5].kind, claims[5].target, claims[5].value, claims[5].sentence) == ("colour", "square", "blue", 1)
    assert claims[3].text == "the circle is at the top left" and claims[3].value == "top left"
    assert claims[0].value is None and claims[0].text == "there is a circle"


def test_toy_hallucinated_object_is_a_claim():
    # the scene has a circle only; the description adds its co-occurring partner, a square
    claims = ToyDecomposer().decompose(cand("there is a small green circle on the left . there is a large green square on the right ."))
    assert [c.question for c in claims if c.kind == "existence"] == ["is there a circle ?", "is there a square ?"]
    assert {c.target for c in claims if c.sentence == 1} == {"square"}


def test_toy_repeated_mentions_give_repeated_claims():
    claims = ToyDecomposer().decompose(cand("there is a star . there is a star ."))
    assert [c.question for c in claims] == ["is there a star ?", "is there a star ?"]
    assert [c.sentence for c in claims] == [0, 1]


def test_toy_malformed_text():
    text = "there is a red blob . red circle circle at the moon . THERE IS A BLUE RING . is there"
    claims = ToyDecomposer().decompose(cand(text))
    # sentence 0 names no shape; 1: the first shape, its colour, no valid place; 2: upper case; 3: no shape
    assert [(c.sentence, c.kind, c.value) for c in claims] == [
        (1, "existence", None),
        (1, "colour", "red"),
        (2, "existence", None),
        (2, "colour", "blue"),
    ]
    assert ToyDecomposer().decompose(cand("hello world .")) == []


def test_toy_attributes_and_max_claims():
    only_objects = ToyDecomposer(ClaimsConfig(attributes=())).decompose(cand(TWO_OBJECTS))
    assert [c.kind for c in only_objects] == ["existence", "existence"]
    capped = ToyDecomposer(ClaimsConfig(max_claims=3)).decompose(cand(TWO_OBJECTS))
    assert [c.index for c in capped] == [0, 1, 2]


def test_empty_response():
    with pytest.raises(EmptyResponseError, match="empty"):
        ToyDecomposer().decompose(cand("   \n "))
    with pytest.raises(EmptyResponseError):
        RuleBasedDecomposer().decompose(cand(""))
    batch = [cand(TWO_OBJECTS, index=0), cand(" ", index=1), cand("there is a bar .", index=2)]
    claims = ToyDecomposer().decompose_all(batch, progress=False)
    assert Counter(c.candidate_id for c in claims) == {"p0/c0": 8, "p0/c2": 1}


# ---------------------------------------------------------------- rule-based decomposer


def test_rule_sentences_and_conjunctions():
    assert split_sentences("A cat sits. Is it sunny?\nThe dog runs!") == ["A cat sits.", "Is it sunny?", "The dog runs!"]
    assert split_conjunctions("There is a cat and a dog") == ["There is a cat", "There is a dog"]
    assert split_conjunctions("The cat is black, and the dog is brown") == ["The cat is black", "the dog is brown"]
    assert split_conjunctions("salt and pepper") == ["salt and pepper"]  # no verb: not split


@pytest.mark.parametrize(
    "clause, question",
    [
        ("There is a red car.", "Is there a red car?"),
        ("There are two dogs", "Are there two dogs?"),
        ("There's a tree", "Is there a tree?"),
        ("The sky is blue", "Is the sky blue?"),
        ("The cat is not black", "Is the cat not black?"),
        ("Two dogs are sleeping on the sofa", "Are two dogs sleeping on the sofa?"),
        ("The man has a red hat", "Does the man have a red hat?"),
        ("The children have kites", "Do the children have kites?"),
        ("It was raining", "Was it raining?"),
        ("A man rides a horse", "Is it true that a man rides a horse?"),
    ],
)
def test_rule_question(clause, question):
    assert rule_question(clause) == question


def test_rule_decomposer():
    text = "There is a cat and a dog. Is it sunny? The man has a red hat."
    claims = RuleBasedDecomposer(ClaimsConfig(decomposer="rules")).decompose(cand(text))
    assert [c.question for c in claims] == ["Is there a cat?", "Is there a dog?", "Does the man have a red hat?"]
    assert [c.sentence for c in claims] == [0, 0, 2]  # the question (sentence 1) is skipped
    assert all(c.kind == "fact" and c.target is None for c in claims)
    assert not any("Please answer" in c.question for c in claims)


# ---------------------------------------------------------------- LLM output parsers


def test_parse_fact_list_numbered_with_junk():
    out = "Here are the facts:\n\n1. The cat is black.\n2) There is a dog\n\n- There is a dog.\n* The sky is blue\nNote: I hope this helps!"
    assert parse_fact_list(out) == ["The cat is black.", "There is a dog", "The sky is blue"]


def test_parse_fact_list_plain_lines_and_truncation():
    out = "**Facts:**\nThe cat is black.\n\nthe cat is black\nThe dog is brown.\nThe dog is bro"
    assert parse_fact_list(out) == ["The cat is black.", "The dog is brown.", "The dog is bro"]
    assert parse_fact_list(out, truncated=True) == ["The cat is black.", "The dog is brown."]


@pytest.mark.parametrize("out", ["", "   \n\n", "None", "None.", "1.\n2.\n", "Facts:"])
def test_parse_fact_list_empty(out):
    assert parse_fact_list(out) == []


@pytest.mark.parametrize(
    "out, question",
    [
        ("Is the cat black?", "Is the cat black?"),
        ("Question: Is the cat black\nAnswer: yes", "Is the cat black?"),
        ('\n1. "Is there a dog?" Yes, there is.', "Is there a dog?"),
        ("Q: Was the man not smiling.", "Was the man not smiling?"),
        ("Here is the question:\nIs it raining?", "Is it raining?"),
    ],
)
def test_parse_question_output(out, question):
    assert parse_question_output(out) == question


@pytest.mark.parametrize("out", ["", "\n  \n", "?", "Question:"])
def test_parse_question_output_none(out):
    assert parse_question_output(out) is None


# ---------------------------------------------------------------- LLM decomposer mechanics


def _tiny_chat_lm(with_template: bool = True):
    """A randomly initialised tiny Llama and a word-level tokenizer (optionally with a chat template)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = sorted({w for t in (FACT_PROMPT, QUESTION_PROMPT, TWO_OBJECTS, "user assistant : yes no is the a cat dog ?") for w in t.split()})
    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<s>", "</s>"] + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if with_template:
        fast.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}assistant :{% endif %}"
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512, bos_token_id=2, eos_token_id=3, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval(), fast


def test_llm_decomposer_end_to_end_tiny_model():
    model, tokenizer = _tiny_chat_lm()
    cfg = ClaimsConfig(decomposer="llm", max_new_tokens=4, batch_size=2, max_claims=3)
    dec = make_decomposer(cfg, model=model, tokenizer=tokenizer)
    assert isinstance(dec, LLMDecomposer)
    batch = [cand(TWO_OBJECTS, index=0), cand("", index=1), cand("there is a cat .", index=2)]
    claims = dec.decompose_all(batch, progress=False)
    assert all(isinstance(c, Claim) for c in claims)
    assert all(c.question.endswith("?") and c.text for c in claims)
    assert not any(c.candidate_id == "p0/c1" for c in claims)
    for cid in ("p0/c0", "p0/c2"):
        mine = [c for c in claims if c.candidate_id == cid]
        assert len(mine) <= 3 and [c.index for c in mine] == list(range(len(mine)))
    single = dec.decompose(cand("there is a cat .", index=2))
    assert [c.question for c in single] == [c.question for c in claims if c.candidate_id == "p0/c2"]  # greedy
    with pytest.raises(EmptyResponseError):
        dec.decompose(cand(" "))


class _Scripted(LLMDecomposer):
    """An LLM decomposer whose model answers from a script, to check the two passes' plumbing."""

    def __init__(self, facts: dict[str, str], questions: dict[str, str], cfg: ClaimsConfig | None = None):
        model, tokenizer = _tiny_chat_lm()
        super().__init__(model, tokenizer, cfg)
        self.facts, self.questions, self.calls = facts, questions, []

    def generate(self, prompts, progress=False, desc="llm"):
        self.calls.append(len(prompts))
        out = []
        for p in prompts:
            slot = p.rsplit(": ", 1)[-1]
            out.append((self.facts.get(slot, "") if "Response:" in p else self.questions.get(slot, ""), False))
        return out


def test_llm_decomposer_two_passes_aligned():
    facts = {
        "A cat sleeps. It is black.": "Sure! Facts:\n1. A cat is sleeping.\n2. The cat is black.\n3. The cat is black.\nHope this helps.",
        "Lovely.": "None",
    }
    questions = {"A cat is sleeping.": "Question: Is a cat sleeping", "The cat is black.": "???"}
    dec = _Scripted(facts, questions, ClaimsConfig(decomposer="llm"))
    batch = [cand("A cat sleeps. It is black.", index=0), cand("Lovely.", index=1), cand("", index=2)]
    claims = dec.decompose_all(batch, progress=False)
    assert dec.calls == [2, 2]  # pass (a) on the two non-empty responses, pass (b) on the two unique facts
    assert [(c.id, c.text, c.question) for c in claims] == [
        ("p0/c0/k0", "A cat is sleeping.", "Is a cat sleeping?"),
        ("p0/c0/k1", "The cat is black.", "Is the cat black?"),  # unusable pass (b) output: rule fallback
    ]
    capped = _Scripted(facts, questions, ClaimsConfig(decomposer="llm", max_claims=1))
    assert len(capped.decompose(batch[0])) == 1 and capped.calls == [1, 1]


def test_llm_decomposer_generate_reports_truncation():
    model, tokenizer = _tiny_chat_lm()
    dec = LLMDecomposer(model, tokenizer, ClaimsConfig(decomposer="llm", max_new_tokens=4))
    outs = dec.generate(["is the cat black ?", "there is a dog ."])
    assert len(outs) == 2 and all(isinstance(t, str) and isinstance(tr, bool) for t, tr in outs)


def test_llm_decomposer_needs_chat_template():
    model, tokenizer = _tiny_chat_lm(with_template=False)
    with pytest.raises(ChatTemplateError, match="chat template"):
        LLMDecomposer(model, tokenizer)


# ---------------------------------------------------------------- source spans


def test_toy_spans_match_the_grammar_sentence_numbering():
    from rlaifv_lib.claims import toy_sentence_spans
    from rlaifv_lib.toyworld.grammar import toy_sentences

    for text in (TWO_OBJECTS, "  there is a circle ?. . there is a STAR .\nthe star is red", "", "İ there is a circle . x"):
        spans = toy_sentence_spans(text)
        assert [text[a:b].lower() for a, b in spans] == toy_sentences(text.lower())
    claims = ToyDecomposer().decompose(cand(TWO_OBJECTS))
    assert {TWO_OBJECTS[a:b] for a, b in (c.span for c in claims)} == {
        "there is a large red circle at the top left", "there is a small blue square in the center"}  # fmt: skip
    assert all(c.span == claims[0].span for c in claims if c.target == "circle")


def test_sentence_spans_of_free_english():
    from rlaifv_lib.claims import sentence_spans

    text = "Dr. Smith, e.g. the owner, sees J. Doe.  It rains!\nA cat\n\nsleeps. Is it late? Yes."
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "Dr. Smith, e.g. the owner, sees J. Doe.", "It rains!", "A cat", "sleeps.", "Is it late?", "Yes."]  # fmt: skip
    assert split_sentences(text)[0] == "Dr. Smith, e.g. the owner, sees J. Doe."


def test_rule_claims_span_their_own_words():
    text = "  The table has a cup, a plate and a fork.\nIt is wooden; the chair is red. What is this?"
    claims = RuleBasedDecomposer().decompose(cand(text))
    assert [(c.text, text[c.span[0] : c.span[1]], c.sentence) for c in claims] == [
        ("The table has a cup, a plate", "The table has a cup, a plate", 0),
        ("The table has a fork", "a fork", 0),
        ("It is wooden", "It is wooden", 1),
        ("the chair is red", "the chair is red", 1),
    ]


def test_llm_claims_are_placed_on_their_best_matching_sentence():
    facts = {"A cat sleeps. It is black.": "1. A cat is sleeping.\n2. The cat is black.\n3. A zebra flies."}
    claims = _Scripted(facts, {}, ClaimsConfig(decomposer="llm")).decompose(cand("A cat sleeps. It is black."))
    assert [(c.sentence, c.span) for c in claims] == [(0, (0, 13)), (1, (14, 26)), (-1, None)]
