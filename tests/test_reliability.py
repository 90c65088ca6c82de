"""Bad inputs get clear errors and lose nothing: one test per kind of input.

Each test checks the error class, that its message names the problem *and* the fix, and that what existed
or was computed before the failure is intact (the caller's objects, the other files of a run directory,
the records computed before the failing item).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from rlaifv_lib import dpo, models, pipeline
from rlaifv_lib.claims import ToyDecomposer
from rlaifv_lib.dpo import FALLBACK_MESSAGE, DPOSettings, build_dpo_trainer, train_dpo
from rlaifv_lib.errors import (
    ArtifactError,
    ChatTemplateError,
    ConfigError,
    EmptyResponseError,
    ImageError,
    ModelLoadError,
    NoPairsError,
    QuantizationUnavailableError,
    RLAIFVError,
    RunVersionError,
    YesNoTokenError,
)
from rlaifv_lib.feedback import FeedbackConfig, score_candidates, score_claims, yes_no_token_ids
from rlaifv_lib.images import MAX_PIXELS, load_image
from rlaifv_lib.models import LoadOptions, chat_prompt, load_model
from rlaifv_lib.pairs import PairConfig, build_pairs, pair_stats, require_pairs
from rlaifv_lib.pipeline import RLAIFVRun
from rlaifv_lib.records import Candidate, PreferencePair, ScoredCandidate, Verdict, read_jsonl, write_jsonl
from rlaifv_lib.sampling import SamplingConfig, generate_texts
from rlaifv_lib.toyworld import evaluation_scenes, render_scene

from test_pipeline import tiny_config

TEXT = "there is a large red circle at the top left . there is a small blue square at the bottom right ."


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {p.relative_to(folder).as_posix(): _digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _png(path: Path, image: Image.Image) -> Path:
    image.save(path)
    return path


# ----------------------------------------------------------------------------------------- images


def test_corrupt_image_file_is_an_image_error_and_files_are_kept(tmp_path):
    good = _png(tmp_path / "good.png", render_scene(evaluation_scenes(1)[0]))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not the rest of a png")
    truncated = tmp_path / "truncated.png"
    full = tmp_path / "full.png"
    Image.effect_noise((96, 96), 64).convert("RGB").save(full)
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    before = _snapshot(tmp_path)

    loaded = [load_image(good)]  # an image loaded before the bad one stays usable
    for bad in (corrupt, truncated):
        with pytest.raises(ImageError) as err:
            load_image(bad)
        msg = str(err.value)
        assert str(bad) in msg and "cannot be decoded" in msg and "Replace or remove it" in msg
    with pytest.raises(ImageError, match="does not exist; check the path"):
        load_image(tmp_path / "missing.png")
    assert loaded[0].size == (48, 48) and loaded[0].mode == "RGB"
    assert _snapshot(tmp_path) == before  # nothing deleted or rewritten


def test_decompression_bomb_is_an_image_error_not_a_raw_pil_error(tmp_path, monkeypatch):
    path = _png(tmp_path / "bomb.png", Image.new("RGB", (100, 100)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10_000 px > 2 x limit: PIL refuses to decode it
    with pytest.raises(ImageError, match="too large to decode safely.*MAX_IMAGE_PIXELS"):
        load_image(path)


def test_grayscale_image_is_converted_to_rgb(tmp_path):
    gray = Image.new("L", (40, 30), 77)
    for source in (gray, _png(tmp_path / "gray.png", gray), Image.new("I;16", (40, 30), 65535)):
        out = load_image(source)
        assert out.mode == "RGB" and out.size == (40, 30)
        assert len(set(out.getpixel((3, 3)))) == 1  # grey stays grey
    assert gray.mode == "L"  # the caller's image is not modified


def test_rgba_image_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))  # fully transparent
    rgba.putpixel((2, 2), (200, 0, 0, 255))  # one opaque red pixel
    for source in (rgba, _png(tmp_path / "rgba.png", rgba)):
        out = load_image(source)
        assert out.mode == "RGB" and out.size == (10, 10)
        assert out.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white, not black
        assert out.getpixel((2, 2)) == (200, 0, 0)
    assert rgba.mode == "RGBA"


def test_very_large_image_is_downscaled_keeping_its_aspect_ratio():
    big = Image.new("RGB", (3000, 1500), (10, 20, 30))
    out = load_image(big)
    assert out.width * out.height <= MAX_PIXELS
    assert abs(out.width / out.height - 2.0) < 0.01
    assert out.getpixel((0, 0)) == (10, 20, 30)
    assert big.size == (3000, 1500)
    assert load_image(big, max_pixels=None).size == (3000, 1500)  # the cap can be turned off


# ----------------------------------------------------------------------------------------- claims


def test_empty_response_raises_in_decompose_and_gives_zero_claims_in_decompose_all():
    cands = [Candidate("p0", 1, TEXT, 0), Candidate("p0", 2, "   \n", 1), Candidate("p0", 3, TEXT, 2)]
    with pytest.raises(EmptyResponseError) as err:
        ToyDecomposer().decompose(cands[1])
    assert "p0/c1" in str(err.value) and "empty response" in str(err.value) and "decompose_all" in str(err.value)
    claims = ToyDecomposer().decompose_all(cands, progress=False)
    per = {c.id: [k for k in claims if k.candidate_id == c.id] for c in cands}
    assert len(per["p0/c0"]) == len(per["p0/c2"]) > 0  # the claims before and after the empty one are all kept
    assert per["p0/c1"] == []
    scored = score_candidates(cands, claims, [Verdict(c.id, 0.9, 0.1, True) for c in claims])
    assert [s.score for s in scored] == [0.0, None, 0.0]


def test_response_with_no_claims_gets_no_score_and_is_never_paired():
    texts = ["hello there .", TEXT, "there is a small green star at the top right ."]
    cands = [Candidate("p0", k, t, k) for k, t in enumerate(texts)]
    claims = ToyDecomposer().decompose_all(cands, progress=False)
    assert not [c for c in claims if c.candidate_id == "p0/c0"]
    verdicts = [Verdict(c.id, 0.1, 0.9, False) if "star" in c.question else Verdict(c.id, 0.9, 0.1, True) for c in claims]
    scored = score_candidates(cands, claims, verdicts)
    assert scored[0].score is None and scored[0].n_claims == 0
    result = build_pairs(scored, PairConfig(length_balance=False))
    assert len(result.pairs) == 1 and "p0/c0" not in {result.pairs[0].chosen_id, result.pairs[0].rejected_id}
    only_none = build_pairs([scored[0], ScoredCandidate("p0/c9", "p0", "nothing", None, 0, 0)])
    assert only_none.pairs == [] and only_none.prompts["p0"].reason == "no_claims"


# ----------------------------------------------------------------------------------------- feedback


def test_labeler_without_yes_no_tokens_is_refused_before_any_forward(tiny_toy, monkeypatch):
    from rlaifv_lib.toyworld import tokenizer as toy_tokenizer

    model, _ = tiny_toy
    words = toy_tokenizer.vocabulary()
    monkeypatch.setattr(toy_tokenizer, "vocabulary", lambda: [w for w in words if w not in ("yes", "no")])
    processor = toy_tokenizer.build_processor()
    with pytest.raises(YesNoTokenError) as err:
        yes_no_token_ids(processor.tokenizer)
    msg = str(err.value)
    assert "'yes' and 'no'" in msg and "Use a labeler whose vocabulary has them" in msg

    monkeypatch.setattr(toy_tokenizer, "vocabulary", lambda: [w for w in words if w != "no"])
    only_yes = toy_tokenizer.build_processor()
    calls = []
    monkeypatch.setattr(type(model), "__call__", lambda *a, **k: calls.append(1))
    cands = [Candidate("p0", 1, TEXT, 0)]
    claims = ToyDecomposer().decompose_all(cands, progress=False)
    kept = copy.deepcopy(claims)
    with pytest.raises(YesNoTokenError, match="no single token for 'no'"):
        score_claims(model, only_yes, claims, {"p0": render_scene(evaluation_scenes(1)[0])}, {"p0/c0": "p0"}, FeedbackConfig(), progress=False)
    assert calls == [] and claims == kept  # refused up front: no forward pass wasted, the claims untouched


# ----------------------------------------------------------------------------------------- pairs


def _tied(prompt: str, n: int = 3) -> list[ScoredCandidate]:
    return [ScoredCandidate(f"{prompt}/c{k}", prompt, f"there is a circle . {'there is a red circle . ' * k}", -1.0, 2, 1) for k in range(n)]


def test_all_tied_prompt_gives_no_pair_with_a_reason_and_require_pairs_explains():
    result = build_pairs(_tied("p0") + _tied("p1"))
    assert result.pairs == [] and result.reason_counts() == {"all_tied": 2}
    assert "same score" in result.reason
    assert pair_stats(result)["reasons"] == {"all_tied": 2}
    with pytest.raises(NoPairsError) as err:
        require_pairs(result)
    msg = str(err.value)
    assert "no preference pairs" in msg and "tied" in msg and "SamplingConfig.n" in msg and "temperature" in msg
    mixed = _tied("p0") + [ScoredCandidate("p1/c0", "p1", "there is a star .", 0.0, 1, 0), ScoredCandidate("p1/c1", "p1", "there is a bar .", -1.0, 1, 1)]
    kept = build_pairs(mixed, PairConfig(length_balance=False))
    assert [p.prompt_id for p in kept.pairs] == ["p1"] and kept.prompts["p0"].reason == "all_tied"


def test_pipeline_round_with_all_ties_carries_the_policy_over(tmp_path, monkeypatch):
    """RLAIFVRun._train_and_merge: no pairs -> no DPO, round k's model is a copy of its start policy, n_pairs = 0."""
    real = pipeline.score_candidates

    def all_tied(cands, claims, verdicts):
        return [ScoredCandidate(s.candidate_id, s.prompt_id, s.text, -1.0, max(s.n_claims, 1), 1) for s in real(cands, claims, verdicts)]

    def no_training(*a, **k):
        raise AssertionError("DPO must not run without pairs")

    monkeypatch.setattr(pipeline, "score_candidates", all_tied)
    monkeypatch.setattr(pipeline, "train_dpo", no_training)
    monkeypatch.setattr(pipeline, "merge_adapters", no_training)
    cfg = tiny_config(prompts_per_round=2, sampling=SamplingConfig(n=2, max_new_tokens=24, batch_size=8), eval_scenes=2, best_of_n=0)
    run = RLAIFVRun(tmp_path / "run", cfg, progress=False)
    metrics = run.run_round(1)
    rd = tmp_path / "run" / "round_1"
    assert metrics["n_pairs"] == 0 and json.loads((rd / "eval.json").read_text())["n_pairs"] == 0
    assert read_jsonl(rd / "pairs.jsonl") == []
    assert json.loads((rd / "pair_stats.json").read_text())["reasons"] == {"all_tied": 2}
    assert not (rd / "dpo").exists()
    start = Path(models.TOY_POLICY)
    assert _digest(rd / "model" / "model.safetensors") == _digest(start / "model.safetensors")
    assert len(read_jsonl(rd / "candidates.jsonl")) == 4 and len(read_jsonl(rd / "scored.jsonl")) == 4
    assert not list(rd.glob(".*tmp*"))


# ----------------------------------------------------------------------------------------- DPO


def test_empty_pair_set_to_dpo_is_refused_and_the_output_folder_untouched(tmp_path):
    from datasets import Dataset

    out = tmp_path / "dpo"
    out.mkdir()
    (out / "dpo_log.json").write_text('{"earlier": "run"}\n')
    before = _snapshot(out)
    for empty in ([], Dataset.from_dict({c: [] for c in dpo.TRL_COLUMNS})):
        with pytest.raises(NoPairsError) as err:
            train_dpo(models.TOY_POLICY, None, empty, DPOSettings(max_steps=1, progress=False), out)
        msg = str(err.value)
        assert "no preference pairs to train on" in msg and "SamplingConfig.n" in msg
    assert _snapshot(out) == before


def _pairs(n: int = 2) -> list[PreferencePair]:
    scene = evaluation_scenes(1)[0]
    return [PreferencePair(f"p{i}", "there is a red circle .", "there is a blue square at the top left .", 1.0,
                           instruction="describe the image .", image=render_scene(scene)) for i in range(n)]  # fmt: skip


def test_4bit_required_where_bitsandbytes_cannot_run(tiny_toy, monkeypatch, tmp_path):
    model, processor = tiny_toy
    monkeypatch.setattr(models, "bnb_available", lambda: False)
    with pytest.raises(QuantizationUnavailableError) as err:
        build_dpo_trainer(model, processor, _pairs(), DPOSettings(require_4bit=True, progress=False), tmp_path / "out")
    msg = str(err.value)
    assert "bitsandbytes cannot run" in msg and "require_4bit=False" in msg
    assert not (tmp_path / "out").exists()
    with pytest.raises(QuantizationUnavailableError, match="load_in_4bit=False"):
        load_model("toy-policy", options=LoadOptions(load_in_4bit=True))


def test_4bit_falls_back_with_a_message_where_bitsandbytes_cannot_run(tiny_toy, monkeypatch, tmp_path, capsys):
    model, processor = tiny_toy
    monkeypatch.setattr(models, "bnb_available", lambda: False)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(RuntimeWarning, match="falls back to full-precision LoRA"):
        trainer = build_dpo_trainer(model, processor, _pairs(), DPOSettings(max_steps=1, batch_size=2, progress=False), tmp_path / "out")
    assert FALLBACK_MESSAGE in capsys.readouterr().out
    assert "install a bitsandbytes build" in FALLBACK_MESSAGE.lower()
    assert not getattr(trainer.model, "is_loaded_in_4bit", False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())  # the caller's model untouched


# ----------------------------------------------------------------------------------------- models


def test_model_without_chat_template_is_a_chat_template_error(tiny_toy):
    model, processor = tiny_toy
    bare = copy.deepcopy(processor)
    bare.chat_template = None
    bare.tokenizer.chat_template = None
    with pytest.raises(ChatTemplateError) as err:
        chat_prompt(bare, "describe the image .")
    msg = str(err.value)
    assert "no chat template" in msg and "processor.chat_template" in msg
    with pytest.raises(ChatTemplateError):
        generate_texts(model, bare, [render_scene(evaluation_scenes(1)[0])], ["describe the image ."], [0], SamplingConfig(n=1))
    assert processor.chat_template is not None  # the shared processor was not changed


def test_model_path_that_does_not_exist(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(ModelLoadError) as err:
        load_model(missing)
    msg = str(err.value)
    assert str(missing) in msg and "does not exist" in msg and "config.json and *.safetensors" in msg
    with pytest.raises(ModelLoadError, match="Fix: "):
        load_model("no-such-org/no-such-model")
    assert not missing.exists()


# ----------------------------------------------------------------------------------------- run directories


@pytest.fixture
def run_dir(tmp_path):
    """A run directory whose round 1 holds prompts, candidates, claims and verdicts (no model involved)."""
    run = RLAIFVRun(tmp_path / "run", tiny_config(prompts_per_round=2), progress=False)
    prompts, _ = run._prompts(1)
    cands = [Candidate(p.id, k, TEXT, k) for p in prompts for k in range(2)]
    rd = run.round_dir(1)
    write_jsonl(rd / "candidates.jsonl", cands)
    claims = ToyDecomposer().decompose_all(cands, progress=False)
    write_jsonl(rd / "claims.jsonl", claims)
    write_jsonl(rd / "verdicts.jsonl", [Verdict(c.id, 0.9, 0.1, True) for c in claims])
    return tmp_path / "run"


CORRUPTIONS = {
    "truncated": lambda b: b[: len(b) * 2 // 3],
    "end marker lost": lambda b: b"\n".join(b.split(b"\n")[:-2]) + b"\n",
    "garbage line": lambda b: b.replace(b"\n", b"\n{not json\n", 1),
    "binary": lambda b: b"\xff\xfe\x00\x01" + b,
    "not a record": lambda b: b"[1, 2]\n" + b.split(b"\n", 1)[1],  # same record count, wrong shape
}


@pytest.mark.parametrize("artifact", ["claims.jsonl", "verdicts.jsonl"])
@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_malformed_artifact_names_the_file_and_touches_nothing(run_dir, artifact, how):
    path = run_dir / "round_1" / artifact
    path.write_bytes(CORRUPTIONS[how](path.read_bytes()))
    before = _snapshot(run_dir)
    with pytest.raises(ArtifactError) as err:
        RLAIFVRun(run_dir, tiny_config(prompts_per_round=2), progress=False).run_round(1)
    msg = str(err.value)
    assert str(path) in msg and "Delete it and re-run the stage" in msg
    assert _snapshot(run_dir) == before  # the bad file is kept for inspection, the good ones untouched


def test_malformed_run_header_or_eval_is_an_artifact_error(run_dir):
    cfg = tiny_config(prompts_per_round=2)
    (run_dir / "round_1" / "eval.json").write_text('{"chair_i": 0.1, ')
    before = _snapshot(run_dir)
    with pytest.raises(ArtifactError, match=r"eval\.json is not valid JSON.*delete it"):
        RLAIFVRun(run_dir, cfg, progress=False).run_round(1)
    for header in ("[1, 2]\n", "{oops"):
        (run_dir / "run.json").write_text(header)
        with pytest.raises(ArtifactError, match=r"run\.json"):
            RLAIFVRun(run_dir, cfg, progress=False)
    after = _snapshot(run_dir)
    assert {k: v for k, v in after.items() if k != "run.json"} == {k: v for k, v in before.items() if k != "run.json"}


@pytest.mark.parametrize("header", [{"format": 0}, {"version": "0.0.1"}, {"format": 99, "version": "9.0"}])
def test_run_directory_from_an_incompatible_version(run_dir, header):
    path = run_dir / "run.json"
    data = json.loads(path.read_text())
    data.pop("format")
    path.write_text(json.dumps({**data, **header}))
    before = _snapshot(run_dir)
    with pytest.raises(RunVersionError) as err:
        RLAIFVRun(run_dir, tiny_config(prompts_per_round=2), progress=False)
    msg = str(err.value)
    assert "run format" in msg and f"this is format {pipeline.RUN_FORMAT}" in msg and "Start a new run directory" in msg
    assert isinstance(err.value, ArtifactError)
    assert _snapshot(run_dir) == before  # nothing overwritten: the old run stays readable by its own version


# ----------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "make,words",
    [
        (lambda: SamplingConfig(n=0), "n (candidates per prompt) must be >= 1"),
        (lambda: tiny_config(sampling=SamplingConfig(n=1)), "sampling.n must be >= 2: pairs need two candidates"),
        (lambda: SamplingConfig(temperature=0.0), "temperature must be > 0"),
        (lambda: SamplingConfig(temperature=-0.5), "temperature must be > 0"),
        (lambda: tiny_config(rounds=0), "rounds (k) must be >= 1"),
        (lambda: tiny_config(best_of_n=1), "best_of_n must be 0 (skip) or >= 2"),
        (lambda: PairConfig(min_margin=0), "min_margin must be > 0"),
        (lambda: DPOSettings(beta=0), "beta must be > 0"),
        (lambda: FeedbackConfig(batch_size=0), "batch_size must be >= 1"),
        (lambda: LoadOptions(max_pixels=10), "max_pixels must be None or >= 784"),
    ],
)
def test_impossible_config_value(make, words, tmp_path):
    with pytest.raises(ConfigError) as err:
        make()
    assert words in str(err.value)
    assert isinstance(err.value, (RLAIFVError, ValueError))


def test_resuming_with_changed_settings_is_refused_and_the_run_kept(run_dir):
    before = _snapshot(run_dir)
    with pytest.raises(ConfigError, match="different configuration.*same settings or start a new run directory"):
        RLAIFVRun(run_dir, tiny_config(prompts_per_round=3), progress=False)
    assert _snapshot(run_dir) == before
