"""Bad inputs get clear errors and lose nothing: one test per kind of input.

Each test checks the error class, that its message names the problem *and* the fix, and that what existed
or was computed before the failure is intact (the caller's objects, the other files of a run directory,
the records computed before the failing item).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from rlaifv_lib import dpo, engine, models, pipeline
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
    NonFiniteWeightsError,
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
    real = engine.score_candidates

    def all_tied(cands, claims, verdicts):
        return [ScoredCandidate(s.candidate_id, s.prompt_id, s.text, -1.0, max(s.n_claims, 1), 1) for s in real(cands, claims, verdicts)]

    def no_training(*a, **k):
        raise AssertionError("DPO must not run without pairs")

    monkeypatch.setattr(engine, "score_candidates", all_tied)
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
    prompts = run._prompts(1)
    cands = [Candidate(p.id, k, TEXT, k) for p in prompts for k in range(2)]
    rd = run.round_dir(1)
    run.rd.write_jsonl(rd / "candidates.jsonl", cands)
    claims = ToyDecomposer().decompose_all(cands, progress=False)
    run.rd.write_jsonl(rd / "claims.jsonl", claims)
    run.rd.write_jsonl(rd / "verdicts.jsonl", [Verdict(c.id, 0.9, 0.1, True) for c in claims])
    run.rd.close()
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


# ----------------------------------------------------------------------------------------- non-finite values


def _config_classes() -> list:
    from rlaifv_lib.claims import ClaimsConfig
    from rlaifv_lib.guidance import GuidanceConfig
    from rlaifv_lib.hallucination import EvalConfig
    from rlaifv_lib.models import ModelPreset
    from rlaifv_lib.pipeline import RLAIFVConfig
    from rlaifv_lib.pope import POPEConfig
    from rlaifv_lib.toyworld.model import ToyModelConfig
    from rlaifv_lib.toyworld.pretrain import PretrainConfig
    from rlaifv_lib.toyworld.scenes import WorldConfig

    preset = dict(name="p", model_id="m", role="policy", family="llava")
    return [
        (SamplingConfig, {}), (ClaimsConfig, {}), (FeedbackConfig, {}), (PairConfig, {}), (DPOSettings, {}),
        (LoadOptions, {}), (GuidanceConfig, {}), (EvalConfig, {}), (RLAIFVConfig, {}), (POPEConfig, {}),
        (ToyModelConfig, {}), (PretrainConfig, {}), (WorldConfig, {}), (ModelPreset, preset),
    ]  # fmt: skip


def _float_settings() -> list:
    """(class, required args, field) for every float-valued setting of every config dataclass."""
    from dataclasses import MISSING, fields

    out = []
    for cls, required in _config_classes():
        for f in fields(cls):
            default = f.default if f.default is not MISSING else None
            if isinstance(default, float):
                out.append(pytest.param(cls, required, f.name, id=f"{cls.__name__}.{f.name}"))
    return out


@pytest.mark.parametrize("cls,required,name", _float_settings())
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_every_float_setting_rejects_non_finite_values_naming_it(cls, required, name, value):
    with pytest.raises(ConfigError, match=rf"^{cls.__name__}\.{name} must be a finite number, got {value}$"):
        cls(**required, **{name: value})


def test_the_float_settings_are_all_found():
    """The parametrisation above is not empty by accident: the settings the issue names are in it."""
    found = {p.id for p in _float_settings()}
    assert {"SamplingConfig.temperature", "SamplingConfig.top_p", "PairConfig.min_margin", "DPOSettings.beta", "DPOSettings.learning_rate",
            "GuidanceConfig.beta", "EvalConfig.temperature", "ModelPreset.dpo_beta"} <= found  # fmt: skip
    assert len(found) >= 20


@pytest.mark.parametrize("make", [lambda: tiny_config(rounds=float("inf")), lambda: SamplingConfig(max_new_tokens=float("nan")), lambda: LoadOptions(max_pixels=float("nan"))])
def test_integer_settings_given_non_finite_floats_are_rejected(make):
    with pytest.raises(ConfigError, match="must be a finite number"):
        make()


def test_training_that_diverges_saves_nothing_and_keeps_earlier_files(tiny_toy, tmp_path, monkeypatch):
    from test_dpo import FAST, _pairs

    monkeypatch.setattr(models, "bnb_available", lambda: False)  # the full-precision path: seconds
    (tmp_path / "dpo_log.json").write_text('{"earlier": "run"}\n')
    before = _snapshot(tmp_path)
    diverging = DPOSettings(**{**FAST, "learning_rate": 1e38, "max_steps": 3})  # finite, but the weights overflow
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteWeightsError, match=rf"nothing was saved to {tmp_path}.*lower the learning rate"):
        train_dpo(tiny_toy[0], tiny_toy[1], _pairs(4), diverging, tmp_path)
    assert _snapshot(tmp_path) == before and not (tmp_path / "adapter").exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_merging_non_finite_adapters_saves_nothing_and_keeps_the_old_model(tiny_toy, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, processor = tiny_toy
    model.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    adapted = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=dpo.language_model_linear_layers(model), init_lora_weights=False))
    with torch.no_grad():
        next(p for n, p in adapted.named_parameters() if "lora_B" in n).fill_(float("nan"))
    adapted.save_pretrained(tmp_path / "adapter")
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "keep.txt").write_text("the previous merge")
    with pytest.raises(NonFiniteWeightsError, match=r"non-finite weights, so nothing was saved to .*merged"):
        dpo.merge_adapters(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged")
    assert [p.name for p in (tmp_path / "merged").iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ----------------------------------------------------------------------------------------- empty evaluations


def test_evaluations_over_nothing_are_errors_not_zeros(tiny_toy):
    from rlaifv_lib.errors import EmptyEvaluationError
    from rlaifv_lib.hallucination import chair, evaluate_policy

    with pytest.raises(EmptyEvaluationError, match="no evaluation scenes"):
        evaluate_policy(*tiny_toy, [])
    with pytest.raises(EmptyEvaluationError, match="CHAIR of no responses"):
        chair([], [])
    with pytest.raises(ConfigError, match="best_of_n_prompts must be >= 1 when best_of_n or tuned_best_of_n is on"):
        tiny_config(best_of_n_prompts=0)
    assert tiny_config(best_of_n=0, best_of_n_prompts=0).best_of_n == 0  # off: nothing is measured


# ----------------------------------------------------------------------------------------- model folders


@pytest.fixture
def model_dir(tiny_toy, tmp_path):
    model, processor = tiny_toy
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def _truncate(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _empty(folder: Path) -> None:
    for p in folder.iterdir():
        p.unlink()


def _edit_config(**change):
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        for key, value in change.items():
            *path, last = key.split(".")
            node = config
            for part in path:
                node = node[part]
            node[last] = value(node[last]) if callable(value) else value
        (folder / "config.json").write_text(json.dumps(config))

    return edit


def _no_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()


MODEL_FOLDER_CASES = {
    "truncated model.safetensors": (_truncate, r"model\.safetensors is damaged or incomplete.*Delete {folder} and save the model"),
    "empty folder": (_empty, r"{folder} holds no config\.json, so it is not a saved model"),
    "no config.json": (lambda f: (f / "config.json").unlink(), r"{folder} holds no config\.json"),
    "no tokenizer files": (_no_tokenizer, r"{folder} holds no tokenizer files.*processor\.save_pretrained"),
    "shape mismatch": (_edit_config(**{"text_config.intermediate_size": lambda v: v + 8}), r"the weights in {folder} do not fit its config\.json"),
    "auto_map, unknown type": (_edit_config(model_type="my_vlm", auto_map={"AutoModelForImageTextToText": "modeling_x.X"}), r"{folder} needs modelling code shipped with the checkpoint"),
}


@pytest.mark.parametrize("case", list(MODEL_FOLDER_CASES))
def test_broken_model_folder_is_a_model_load_error_naming_the_folder_and_the_fix(model_dir, case):
    damage, pattern = MODEL_FOLDER_CASES[case]
    damage(model_dir)
    before = _snapshot(model_dir)
    with pytest.raises(ModelLoadError, match=pattern.format(folder=re.escape(str(model_dir)))) as err:
        load_model(model_dir)
    msg = str(err.value)
    assert "trust_remote_code" not in msg and "remote code" not in msg  # never suggests running shipped code
    assert "sentencepiece" not in msg and "tiktoken" not in msg
    assert _snapshot(model_dir) == before


def test_damaged_merged_model_in_a_run_directory_names_it_and_deleting_it_redoes_the_merge(model_dir, tmp_path):
    """The advice for a truncated model.safetensors, followed: deleting the folder leaves the stage unfinished."""
    run = RLAIFVRun(tmp_path / "run", tiny_config(prompts_per_round=2), progress=False)
    model = run.round_dir(1) / "model"
    with run.rd.directory(model) as tmp:
        shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
    _truncate(model)
    with pytest.raises(ModelLoadError, match=rf"{re.escape(str(model))}/model\.safetensors is damaged.*Delete {re.escape(str(model))}"):
        load_model(run.policy_path(1))
    shutil.rmtree(model)
    assert not run.rd.done(model)  # the merge stage is redone on the next run


# ----------------------------------------------------------------------------------------- one clear line


@pytest.mark.parametrize(
    "argv,words",
    [
        (["demo", "--smoke", "--rounds", "0"], "rounds (k) must be >= 1, got 0"),
        (["demo", "--smoke", "--rounds", "-1"], "rounds (k) must be >= 1, got -1"),
        (["round", "--smoke", "--prompts", "0"], "prompts_per_round must be >= 1"),
        (["eval", "--n", "0"], "no evaluation scenes"),
        (["eval", "--threads", "0"], "--threads must be >= 1"),
        (["demo", "--threads", "0"], "--threads must be >= 1"),
    ],
)
def test_cli_errors_are_one_line_and_nothing_is_run(argv, words, tmp_path, capsys):
    from rlaifv_lib.cli import main

    out = ["--out", str(tmp_path / "run")] if argv[0] != "eval" else []
    assert main([*argv, *out]) == 1
    captured = capsys.readouterr()
    last = captured.err.strip().splitlines()[-1]
    assert "Traceback" not in captured.err and captured.err.count("error:") == 1
    assert last.startswith(f"rlaifv {argv[0]}: error: ") and words in last and "--debug" in last
    assert not (tmp_path / "run").exists() and "CHAIR" not in captured.out


def test_cli_error_exit_code_and_debug_traceback(tmp_path):
    import subprocess
    import sys

    missing = tmp_path / "no-model"
    missing.mkdir()
    plain = subprocess.run([sys.executable, "-m", "rlaifv_lib.cli", "eval", "--model", str(missing)], capture_output=True, text=True, timeout=300)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    line = plain.stderr.strip().splitlines()[-1]
    assert line.startswith("rlaifv eval: error: ") and str(missing) in line and "holds no config.json" in line
    debug = subprocess.run([sys.executable, "-m", "rlaifv_lib.cli", "eval", "--model", str(missing), "--debug"], capture_output=True, text=True, timeout=300)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ModelLoadError" in debug.stderr
