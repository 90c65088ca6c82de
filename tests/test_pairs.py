"""Tests of rlaifv_lib.pairs: pair rules, per-prompt cap, length balancing, TRL format, storage."""

from __future__ import annotations

import random

import pytest
from PIL import Image

from rlaifv_lib.dpo import TRL_COLUMNS
from rlaifv_lib.errors import ConfigError, DatasetSchemaError, NoPairsError
from rlaifv_lib.pairs import (
    PairConfig,
    build_pairs,
    length_balance,
    load_pairs,
    pair_stats,
    require_pairs,
    save_pairs,
    to_trl_dataset,
)
from rlaifv_lib.records import ScoredCandidate

RAW = PairConfig(max_pairs_per_prompt=None, length_balance=False)  # the pair rule alone


def _sc(pid: str, idx: int, score: float | None, text: str | None = None, n_claims: int = 3) -> ScoredCandidate:
    """A hand-made scored candidate ``<pid>/c<idx>``."""
    n_rejected = 0 if score is None else int(-score)
    return ScoredCandidate(f"{pid}/c{idx}", pid, text or f"response {idx} of {pid} .", score, n_claims, n_rejected)


def _ids(result) -> set[tuple[str, str]]:
    return {(p.chosen_id, p.rejected_id) for p in result.pairs}


def test_config_is_checked():
    assert PairConfig().ratios()[:3] == [0.0, 0.02, 0.04] and PairConfig().ratios()[-1] == 0.98
    assert len(PairConfig().ratios()) == 50  # 0, 0.02, ..., 0.98 as np.arange(0, 1, 0.02)
    for bad in (dict(min_margin=0), dict(max_pairs_per_prompt=0), dict(length_step=0), dict(length_max=1.0)):
        with pytest.raises(ConfigError):
            PairConfig(**bad)


def test_margin_rule_higher_score_is_chosen():
    scored = [_sc("p", 0, -1.0), _sc("p", 1, 0.0), _sc("p", 2, -3.0)]
    result = build_pairs(scored, RAW)
    assert _ids(result) == {("p/c1", "p/c0"), ("p/c1", "p/c2"), ("p/c0", "p/c2")}
    assert all(p.margin == p.chosen_score - p.rejected_score >= 1 for p in result.pairs)
    wide = build_pairs(scored, PairConfig(min_margin=2, max_pairs_per_prompt=None, length_balance=False))
    assert _ids(wide) == {("p/c1", "p/c2"), ("p/c0", "p/c2")}  # margin 1 is no longer enough


def test_ties_dropped_and_reasons():
    result = build_pairs([_sc("p", 0, 0.0), _sc("p", 1, 0.0), _sc("p", 2, -1.0)], RAW)
    assert _ids(result) == {("p/c0", "p/c2"), ("p/c1", "p/c2")}
    tied = build_pairs([_sc("t", 0, -1.0), _sc("t", 1, -1.0)], RAW)
    assert len(tied) == 0 and tied.prompts["t"].reason == "all_tied"
    close = build_pairs([_sc("m", 0, -1.0), _sc("m", 1, -2.0)], PairConfig(min_margin=2))
    assert close.prompts["m"].reason == "below_margin"


def test_identical_texts_dropped():
    same = [_sc("p", 0, 0.0, "there is a red circle ."), _sc("p", 1, -1.0, " there is a red circle . ")]
    result = build_pairs(same, RAW)
    assert len(result) == 0 and result.prompts["p"].reason == "identical_texts"


def test_none_scores_never_paired():
    result = build_pairs([_sc("p", 0, None, n_claims=0), _sc("p", 1, 0.0), _sc("p", 2, -2.0)], RAW)
    assert _ids(result) == {("p/c1", "p/c2")}
    none = build_pairs([_sc("a", 0, None, n_claims=0), _sc("a", 1, None, n_claims=0)], RAW)
    one = build_pairs([_sc("b", 0, None, n_claims=0), _sc("b", 1, -1.0)], RAW)
    assert none.prompts["a"].reason == "no_claims" and one.prompts["b"].reason == "one_scored"


def test_cap_is_seeded_and_deterministic():
    scored = [_sc(f"p{k}", i, -float(i)) for k in range(6) for i in range(5)]  # 10 eligible pairs per prompt
    cfg = PairConfig(max_pairs_per_prompt=2, length_balance=False, seed=3)
    first = build_pairs(scored, cfg)
    assert len(first) == 12 and all(p.n_capped == 2 and p.n_eligible == 10 for p in first.prompts.values())
    assert all(p.reason == "capped" for p in first.prompts.values())
    shuffled = scored[:]
    random.Random(0).shuffle(shuffled)
    assert _ids(build_pairs(shuffled, cfg)) == _ids(first)  # same seed, any input order: same pairs
    picks = {frozenset(_ids(build_pairs(scored, PairConfig(max_pairs_per_prompt=2, length_balance=False, seed=s)))) for s in range(5)}
    assert len(picks) > 1  # the seed matters


def _w(n: int, tag: str) -> str:
    """A text of exactly n whitespace words."""
    return " ".join([tag] * n)


def test_length_balancing_hand_worked():
    # five prompts, one pair each (chosen words, rejected words) and shortening s = (Lr - Lc) / Lr:
    #   A (5, 10) s=0.5   B (12, 10) s=-0.2   C (14, 10) s=-0.4   D (9, 10) s=0.1   E (2, 10) s=0.8
    # a pair is dropped when s > r; gap(r) = |mean chosen - mean rejected| / mean rejected:
    #   r = 0           keeps B, C        -> |13 - 10| / 10 = 0.3
    #   r = 0.1 .. 0.48 keeps B, C, D     -> |35/3 - 10| / 10 = 0.167
    #   r = 0.5 .. 0.78 keeps A, B, C, D  -> |40/4 - 10| / 10 = 0     <- smallest, first at r = 0.5
    #   r = 0.8 .. 0.98 keeps all five    -> |42/5 - 10| / 10 = 0.16
    lengths = {"A": 5, "B": 12, "C": 14, "D": 9, "E": 2}
    scored = [s for pid, lc in lengths.items() for s in (_sc(pid, 0, 0.0, _w(lc, "c")), _sc(pid, 1, -1.0, _w(10, "r")))]
    result = build_pairs(scored, PairConfig())
    assert result.length_ratio == 0.5
    assert sorted(p.prompt_id for p in result.pairs) == ["A", "B", "C", "D"]
    assert len(result.before_balance) == 5 and result.prompts["E"].reason == "length_filtered"
    stats = pair_stats(result)
    assert stats["length_before"] == {"mean_chosen_words": 42 / 5, "mean_rejected_words": 10.0}
    assert stats["length_after"] == {"mean_chosen_words": 10.0, "mean_rejected_words": 10.0}
    assert stats["length_ratio"] == 0.5 and stats["pairs_per_prompt"] == {0: 1, 1: 4}
    assert stats["share_prompts_with_pair"] == 4 / 5 and stats["reasons"] == {"length_filtered": 1, "paired": 4}
    # equal lengths everywhere: every r ties at gap 0 and the first one (r = 0) is kept
    same = build_pairs([_sc("x", 0, 0.0, _w(4, "a")), _sc("x", 1, -1.0, _w(4, "b"))], PairConfig())
    assert same.length_ratio == 0.0 and len(same) == 1
    assert length_balance([]) == ([], None)


def test_require_claim_coverage():
    scored = [
        _sc("short", 0, 0.0, "there is a circle .", n_claims=1),  # says less, so rejects less
        _sc("short", 1, -1.0, "there is a large red circle at the top left .", n_claims=4),
        _sc("full", 0, 0.0, "there is a large red circle at the top left .", n_claims=4),
        _sc("full", 1, -1.0, "there is a star .", n_claims=1),
    ]
    assert {p.prompt_id for p in build_pairs(scored, RAW).pairs} == {"short", "full"}  # official: both
    guarded = build_pairs(scored, PairConfig(require_claim_coverage=True, max_pairs_per_prompt=None, length_balance=False))
    assert [p.prompt_id for p in guarded.pairs] == ["full"]
    assert guarded.prompts["short"].reason == "no_coverage"
    assert guarded.pairs[0].extra == {"chosen_claims": 4, "rejected_claims": 1}


def _images() -> dict:
    return {"p0": Image.new("RGB", (16, 16), (200, 10, 10)), "p1": Image.new("RGB", (16, 16), (10, 10, 200))}


def _scored() -> list[ScoredCandidate]:
    return [_sc("p0", 0, 0.0, "there is a red circle ."), _sc("p0", 1, -2.0, "there is a red star ."),
            _sc("p1", 0, -1.0, "there is a blue bar ."), _sc("p1", 1, 0.0, "there is a blue ring .")]  # fmt: skip


def test_trl_dataset_format():
    instructions = {"p0": "describe the image .", "p1": "what is in the image ?"}
    result = build_pairs(_scored(), PairConfig(), _images(), instructions)
    ds = to_trl_dataset(result)
    assert set(TRL_COLUMNS) <= set(ds.column_names)
    assert {"prompt_id", "chosen_id", "rejected_id", "margin", "chosen_score", "rejected_score"} <= set(ds.column_names)
    row = ds[0]
    assert isinstance(row["images"][0], Image.Image) and len(row["images"]) == 1
    assert row["prompt"] == [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "describe the image ."}]}]
    assert row["chosen"][0]["role"] == "assistant" and row["chosen"][0]["content"][0]["text"] == "there is a red circle ."
    assert row["rejected"][0]["content"][0]["text"] == "there is a red star ."
    assert (row["chosen_id"], row["rejected_id"], row["margin"], row["chosen_score"]) == ("p0/c0", "p0/c1", 2.0, 0.0)
    with pytest.raises(DatasetSchemaError, match="no image"):
        to_trl_dataset(build_pairs(_scored(), PairConfig()))  # no images or instructions attached


def test_jsonl_round_trip(tmp_path):
    images, instructions = _images(), {"p0": "describe the image .", "p1": "describe the image ."}
    result = build_pairs(_scored(), PairConfig(), {**images, "p1": str(tmp_path / "p1.png")}, instructions)
    save_pairs(tmp_path / "pairs.jsonl", result)
    bare = load_pairs(tmp_path / "pairs.jsonl")
    assert [p.image for p in bare] == [None, str(tmp_path / "p1.png")]  # PIL images are not embedded
    loaded = load_pairs(tmp_path / "pairs.jsonl", images=images)
    assert [vars(p) for p in loaded] == [vars(p) for p in result.pairs if p.prompt_id == "p0"] + [
        {**vars(p), "image": images["p1"]} for p in result.pairs if p.prompt_id == "p1"
    ]


def test_all_tied_gives_empty_result_and_require_pairs_raises():
    scored = [_sc(f"p{k}", i, -1.0) for k in range(3) for i in range(4)] + [_sc("q", 0, None, n_claims=0)]
    result = build_pairs(scored, PairConfig())
    assert len(result) == 0 and result.length_ratio is None
    assert result.reason_counts() == {"all_tied": 3, "no_claims": 1} and "same score" in result.reason
    stats = pair_stats(result)
    assert stats["n_pairs"] == 0 and stats["share_prompts_with_pair"] == 0.0
    with pytest.raises(NoPairsError, match=r"all candidates of every prompt tied \(or had no claims\)"):
        require_pairs(result)
    with pytest.raises(NoPairsError, match="SamplingConfig.n"):
        to_trl_dataset(result)
    assert len(require_pairs(build_pairs(_scored(), PairConfig()))) == 2


def test_pair_stats_margins():
    result = build_pairs(_scored(), PairConfig())
    stats = pair_stats(result)
    assert sorted(stats["margins"]) == [1.0, 2.0] and stats["margin_hist"] == {1.0: 1, 2.0: 1}
    assert stats["n_prompts"] == 2 and stats["pairs_per_prompt"] == {1: 2} and stats["share_prompts_with_pair"] == 1.0
