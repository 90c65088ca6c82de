"""Deconfounded sampling: same seed, same candidates, at any batch size."""

from __future__ import annotations

import pytest

from rlaifv_lib.errors import ConfigError
from rlaifv_lib.records import Prompt
from rlaifv_lib.sampling import SamplingConfig, candidate_seed, sample_candidates
from rlaifv_lib.toyworld import evaluation_scenes, render_scene


def _prompts(n: int = 3) -> list[Prompt]:
    return [Prompt(s.id, render_scene(s), "describe the image .") for s in evaluation_scenes(n)]


def test_candidate_seed_is_stable_and_distinct():
    assert candidate_seed(0, "p", 1) == candidate_seed(0, "p", 1)
    assert len({candidate_seed(0, "p", k) for k in range(10)}) == 10
    assert candidate_seed(0, "p", 0) != candidate_seed(1, "p", 0)


def test_same_seed_same_candidates_at_any_batch_size(tiny_toy):
    model, proc = tiny_toy
    prompts = _prompts()
    a = sample_candidates(model, proc, prompts, SamplingConfig(n=4, batch_size=12, max_new_tokens=12), progress=False)
    b = sample_candidates(model, proc, prompts, SamplingConfig(n=4, batch_size=5, max_new_tokens=12), progress=False)
    assert [c.text for c in a] == [c.text for c in b]
    assert [c.id for c in a] == [f"{p.id}/c{k}" for p in prompts for k in range(4)]


def test_candidates_differ_only_by_seed(tiny_toy):
    model, proc = tiny_toy
    cands = sample_candidates(model, proc, _prompts(1), SamplingConfig(n=8, max_new_tokens=12), progress=False)
    assert len({c.seed for c in cands}) == 8
    assert len({c.text for c in cands}) > 1  # a random model at temperature 0.7 rarely repeats itself
    other = sample_candidates(model, proc, _prompts(1), SamplingConfig(n=8, max_new_tokens=12, seed=1), progress=False)
    assert [c.text for c in other] != [c.text for c in cands]


@pytest.mark.parametrize("bad", [dict(n=0), dict(temperature=0.0), dict(temperature=-1), dict(top_p=0), dict(batch_size=0)])
def test_config_rejects_impossible_values(bad):
    with pytest.raises(ConfigError):
        SamplingConfig(**bad)
