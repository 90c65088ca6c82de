"""Deconfounded sampling: same seed, same candidates, at any batch size."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from rlaifv_lib import sampling
from rlaifv_lib.errors import ConfigError
from rlaifv_lib.records import Prompt
from rlaifv_lib.sampling import SamplingConfig, candidate_seed, sample_candidates
from rlaifv_lib.toyworld import evaluation_scenes, render_scene

from tiny_models import build_tiny

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from bench_sampling import PerRowMultinomial  # noqa: E402  (the old sampler, the one the benchmark times)


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


def _count_prefills(monkeypatch) -> list[int]:
    """Record the number of prompts of every shared prefill."""
    calls: list[int] = []
    real = sampling._prefill

    def spy(model, inputs):
        calls.append(int(inputs["input_ids"].shape[0]))
        return real(model, inputs)

    monkeypatch.setattr(sampling, "_prefill", spy)
    return calls


def test_shared_prefill_gives_todays_candidates_on_the_toy_policy(toy_policy, monkeypatch):
    model, proc = toy_policy
    prompts = _prompts(4)
    today = sample_candidates(model, proc, prompts, SamplingConfig(n=3, batch_size=5, shared_prefill=False), progress=False)
    calls = _count_prefills(monkeypatch)
    shared = sample_candidates(model, proc, prompts, SamplingConfig(n=3, batch_size=5), progress=False)
    assert calls == [2, 3, 1]  # rows 0-4, 5-9, 10-11 hold prompts 0-1, 1-3, 3: a prompt may straddle two batches
    assert [c.text for c in shared] == [c.text for c in today]
    assert len({c.text for c in today}) > 1


@pytest.mark.parametrize("arch", ["llava", "idefics3", "qwen2_vl"])
def test_shared_prefill_gives_todays_candidates_on_tiny_architectures(arch, monkeypatch):
    model, proc = build_tiny(arch, init_std=0.3)
    torch.manual_seed(0)
    prompts = [Prompt(f"p{k}", Image.new("RGB", (40 + 8 * k, 32), (200, 30 * k, 30)), "Describe the image.") for k in range(2)]
    cfg = dict(n=3, max_new_tokens=6)
    today = sample_candidates(model, proc, prompts, SamplingConfig(**cfg, shared_prefill=False), progress=False)
    calls = _count_prefills(monkeypatch)
    shared = sample_candidates(model, proc, prompts, SamplingConfig(**cfg), progress=False)
    assert calls == ([] if arch == "qwen2_vl" else [2])  # Qwen's M-RoPE families prefill every row
    assert [c.text for c in shared] == [c.text for c in today]
    assert len({c.text for c in today}) > 1


@pytest.mark.parametrize("top_p", [1.0, 0.8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_exponential_race_draws_what_per_row_multinomial_drew_on_cpu(top_p, dtype):
    seeds = [candidate_seed(0, f"p{k % 3}", k) for k in range(8)]
    new, old = sampling.SeededSampler(seeds, 0.7, top_p), PerRowMultinomial(seeds, 0.7, top_p)
    gen = torch.Generator().manual_seed(0)
    for step in range(30):  # peaked and flat distributions over a Llama-sized and a toy-sized vocabulary
        scores = (torch.randn(8, 32064 if step % 2 else 37, generator=gen) * (1 + step % 5)).to(dtype)
        a, b = new(None, scores), old(None, scores)
        assert torch.equal(a, b)
        assert a.dtype == scores.dtype and int((a == 0).sum()) == 8
    assert all(g.device.type == "cpu" for g in new.generators)


def test_toy_policy_candidates_are_those_of_per_row_multinomial(toy_policy, monkeypatch):
    model, proc = toy_policy
    cfg = SamplingConfig(n=4, batch_size=8, top_p=0.95)
    now = sample_candidates(model, proc, _prompts(3), cfg, progress=False)
    monkeypatch.setattr(sampling, "SeededSampler", PerRowMultinomial)
    before = sample_candidates(model, proc, _prompts(3), cfg, progress=False)
    assert [c.text for c in now] == [c.text for c in before]
    assert len({c.text for c in now}) > 1


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"))])
def test_same_candidates_at_batch_1_and_8_with_generators_on_the_model_device(tiny_toy, device):
    model, proc = tiny_toy
    model = model.to(device)
    try:
        one = sample_candidates(model, proc, _prompts(2), SamplingConfig(n=4, batch_size=1, max_new_tokens=10), progress=False)
        eight = sample_candidates(model, proc, _prompts(2), SamplingConfig(n=4, batch_size=8, max_new_tokens=10), progress=False)
    finally:
        model.to("cpu")
    assert [c.text for c in one] == [c.text for c in eight]
    assert len({c.text for c in one}) > 1
    sampler = sampling.SeededSampler([1, 2], 0.7)
    sampler(None, torch.zeros(2, 5, device=device))
    assert {g.device.type for g in sampler.generators} == {device}
