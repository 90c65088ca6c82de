"""engine.run_pass: the one chain sample -> claims -> verdicts -> scores -> pairs, in memory and through a store."""

from __future__ import annotations

import pytest

from rlaifv_lib.claims import ToyDecomposer
from rlaifv_lib.engine import EngineSettings, label, run_pass
from rlaifv_lib.feedback import FeedbackConfig, score_candidates, score_claims
from rlaifv_lib.models import load_model
from rlaifv_lib.pairs import PairConfig, build_pairs
from rlaifv_lib.records import prompt_of, read_jsonl, write_jsonl
from rlaifv_lib.sampling import SamplingConfig, sample_candidates
from rlaifv_lib.sources import ToySource


@pytest.fixture(scope="module")
def policy():
    return load_model("toy-policy")


def _settings() -> EngineSettings:
    return EngineSettings(sampling=SamplingConfig(n=4, max_new_tokens=40, seed=3), feedback=FeedbackConfig(batch_size=64), pairs=PairConfig(seed=1))


def test_run_pass_equals_the_steps_called_by_hand(policy):
    prompts = ToySource(4).training(1, 5, seed=0)
    got = run_pass(prompts, policy, None, ToyDecomposer(), _settings(), progress=False)
    cands = sample_candidates(*policy, prompts, _settings().sampling, progress=False)
    claims = ToyDecomposer().decompose_all(cands, progress=False)
    owner = {c.id: c.prompt_id for c in cands}  # the hand-built map the engine makes unnecessary
    verdicts = score_claims(*policy, claims, {p.id: p.image for p in prompts}, owner, FeedbackConfig(batch_size=64), progress=False)
    scored = score_candidates(cands, claims, verdicts)
    pairs = build_pairs(scored, PairConfig(seed=1), instructions={p.id: p.instruction for p in prompts}).pairs
    assert got.candidates == cands and got.claims == claims and got.verdicts == verdicts and got.scored == scored
    assert [(p.chosen_id, p.rejected_id) for p in got.pairs] == [(p.chosen_id, p.rejected_id) for p in pairs]
    assert got.pair_stats["n_pairs"] == len(pairs)
    assert all(prompt_of(c.candidate_id) in {p.id for p in prompts} for c in got.claims)


def test_a_separate_labeler_is_asked_and_loaders_run_only_when_needed(policy):
    prompts = ToySource(4).training(1, 3, seed=0)
    calls = []

    def labeler():
        calls.append(1)
        return load_model("toy-labeler")

    got = run_pass(prompts, policy, labeler, ToyDecomposer(), _settings(), progress=False, pairs=False)
    assert calls == [1] and got.pairs == [] and got.pair_stats is None
    assert got.verdicts == label(load_model("toy-labeler"), got.claims, prompts, FeedbackConfig(batch_size=64), progress=False)


class _Folder:
    """A store writing JSONL artifacts to a folder, counting computations."""

    def __init__(self, folder):
        self.folder, self.computed, self.json = folder, [], {}

    def stage(self, name, compute, cls):
        path = self.folder / name
        if not path.exists():
            self.computed.append(name)
            write_jsonl(path, compute())
        return read_jsonl(path, cls)

    def write_json(self, name, obj):
        self.json[name] = obj


def test_a_store_caches_every_stage_and_a_second_pass_loads_no_model(policy, tmp_path):
    prompts = ToySource(4).training(1, 3, seed=0)
    store = _Folder(tmp_path)
    first = run_pass(prompts, policy, None, ToyDecomposer(), _settings(), store, progress=False)
    assert store.computed == ["candidates.jsonl", "claims.jsonl", "verdicts.jsonl", "scored.jsonl", "pairs.jsonl"]
    assert store.json["pair_stats.json"]["n_pairs"] == len(first.pairs)

    def no_model():
        raise AssertionError("a finished pass must not load a model")

    store.computed.clear()
    again = run_pass(prompts, no_model, no_model, ToyDecomposer(), _settings(), store, progress=False)
    assert store.computed == [] and again.scored == first.scored and len(again.pairs) == len(first.pairs)
