"""Nothing unsafe is loaded or rendered.

- Weights load from safetensors only: a folder holding only a pickled ``pytorch_model.bin`` (or an adapter
  folder holding only ``adapter_model.bin``) is refused with ``ModelLoadError`` and its pickle is never
  unpickled (the test's pickle would create a marker file if it were); every ``from_pretrained`` of a model
  passes ``use_safetensors=True``.
- ``trust_remote_code`` is False everywhere unless the user sets it (checked on the kwargs of monkeypatched
  ``from_pretrained`` calls), and no preset turns it on.
- Model text shown by the notebook inspectors is escaped: rendered with hostile responses, ids, claims and
  instructions, their HTML parses (``html.parser``) without any script/img element or on* attribute, and the
  hostile strings come back as plain text.
"""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from rlaifv_lib import dpo, models
from rlaifv_lib.claims import ToyDecomposer
from rlaifv_lib.dpo import DPOSettings, merge_adapters
from rlaifv_lib.errors import ConfigError, ModelLoadError
from rlaifv_lib.models import PRESETS, LoadOptions, load_causal_lm, load_model
from rlaifv_lib.records import Candidate, Claim, PreferencePair, Verdict
from rlaifv_lib.toyworld import Scene, ToyObject, render_scene
from rlaifv_lib.widgets import ClaimInspector, PairInspector

HOSTILE = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>")
SCENE_ID = 'p0"><script>alert(2)</script>'


class _Stop(Exception):
    """Raised by a recording ``from_pretrained`` once it has seen its arguments."""


class _Marker:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    path: Path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _pickle_only_copy(src: Path, dst: Path, weights: str, pickled: str, marker: Path) -> Path:
    """A copy of a checkpoint folder whose safetensors weights are replaced by a booby-trapped pickle."""
    shutil.copytree(src, dst)
    state = load_file(dst / weights)
    (dst / weights).unlink()
    trap = _Marker()
    trap.path = marker
    torch.save({**state, "trap": trap}, dst / pickled)
    return dst


# ----------------------------------------------------------------------------------------- safetensors only


def test_pickle_only_checkpoint_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "pickle_was_loaded"
    folder = _pickle_only_copy(Path(models.TOY_POLICY), tmp_path / "pickled", "model.safetensors", "pytorch_model.bin", marker)
    with pytest.raises(ModelLoadError) as err:
        load_model(folder)
    msg = str(err.value)
    assert "no *.safetensors" in msg and "pytorch_model.bin" in msg and "arbitrary code" in msg and "Convert" in msg
    with pytest.raises(ModelLoadError):
        dpo._load_base(folder, False, DPOSettings(load_in_4bit=False))  # the DPO base loader too
    assert not marker.exists()


def test_pickle_only_adapter_is_refused_by_merge(tmp_path):
    marker = tmp_path / "pickle_was_loaded"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    trap = _Marker()
    trap.path = marker
    torch.save({"trap": trap}, adapter / "adapter_model.bin")
    with pytest.raises(ModelLoadError, match="holds no adapter_model.safetensors.*arbitrary code"):
        merge_adapters(models.TOY_POLICY, adapter, tmp_path / "merged")
    assert not marker.exists() and not (tmp_path / "merged").exists()


@pytest.fixture
def recorded(monkeypatch):
    """Records the kwargs of every ``from_pretrained`` the library calls; model loads can be told to stop."""
    calls: dict[str, list[dict]] = {}
    stop_at: set[str] = set()

    def patch(owner, cls):
        original = cls.from_pretrained

        def record(*args, **kwargs):
            calls.setdefault(cls.__name__, []).append(kwargs)
            if cls.__name__ in stop_at:
                raise _Stop(cls.__name__)
            return original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", record)

    for cls in (models.AutoConfig, models.AutoProcessor, models.AutoModelForImageTextToText, models.AutoTokenizer, models.AutoModelForCausalLM):
        patch(models, cls)
    return calls, stop_at


def test_load_model_uses_safetensors_and_no_remote_code_by_default(recorded):
    calls, _ = recorded
    load_model("toy-policy")
    (model_kwargs,) = calls["AutoModelForImageTextToText"]
    assert model_kwargs["use_safetensors"] is True
    assert model_kwargs["trust_remote_code"] is False
    assert all(k.get("trust_remote_code", False) is False for name in ("AutoConfig", "AutoProcessor") for k in calls[name])


@pytest.mark.parametrize("how", ["argument", "options"])
def test_trust_remote_code_only_when_the_user_sets_it(recorded, how):
    calls, stop_at = recorded
    stop_at.add("AutoModelForImageTextToText")
    with pytest.raises(_Stop):
        if how == "argument":
            load_model("toy-policy", trust_remote_code=True)
        else:
            load_model("toy-policy", options=LoadOptions(trust_remote_code=True))
    assert calls["AutoConfig"][-1]["trust_remote_code"] is True
    assert calls["AutoModelForImageTextToText"][-1]["trust_remote_code"] is True
    assert calls["AutoModelForImageTextToText"][-1]["use_safetensors"] is True


def test_shortcut_arguments_that_contradict_options_are_refused(recorded):
    calls, _ = recorded
    with pytest.raises(ConfigError, match="trust_remote_code=True and options with trust_remote_code=False"):
        load_model("toy-policy", trust_remote_code=True, options=LoadOptions())
    with pytest.raises(ConfigError, match="dtype=torch.float16 and options with dtype=torch.float32"):
        load_model("toy-policy", dtype=torch.float16, options=LoadOptions(dtype="float32"))
    assert "AutoConfig" not in calls  # refused before anything was loaded
    model, _ = load_model("toy-policy", dtype=torch.float32, options=LoadOptions(dtype=torch.float32))  # agreeing is fine
    assert model.dtype == torch.float32


def test_causal_lm_decomposer_loads_safetensors_without_remote_code(recorded):
    calls, stop_at = recorded
    stop_at.add("AutoModelForCausalLM")
    with pytest.raises(_Stop):
        load_causal_lm(models.TOY_POLICY)  # a folder with a tokenizer; the model load is stopped
    assert calls["AutoTokenizer"][-1]["trust_remote_code"] is False
    model_kwargs = calls["AutoModelForCausalLM"][-1]
    assert model_kwargs["use_safetensors"] is True and model_kwargs["trust_remote_code"] is False


def test_dpo_base_and_merge_load_safetensors_without_remote_code(recorded, tmp_path):
    calls, stop_at = recorded
    stop_at.add("AutoModelForImageTextToText")
    with pytest.raises(_Stop):
        dpo._load_base(models.TOY_POLICY, False, DPOSettings(load_in_4bit=False))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    save_file({"x": torch.zeros(1)}, adapter / "adapter_model.safetensors")
    with pytest.raises(_Stop):
        merge_adapters(models.TOY_POLICY, adapter, tmp_path / "merged")
    for kwargs in calls["AutoModelForImageTextToText"]:
        assert kwargs["use_safetensors"] is True and kwargs.get("trust_remote_code", False) is False
    assert len(calls["AutoModelForImageTextToText"]) == 2


def test_no_preset_turns_remote_code_on():
    for preset in PRESETS.values():
        assert preset.load_options().trust_remote_code is False, preset.name
    assert LoadOptions().trust_remote_code is False


# ----------------------------------------------------------------------------------------- escaped HTML


class _Elements(HTMLParser):
    """Every element and attribute of an HTML fragment, and its text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.data: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.data.append(data)


def _assert_inert(html: str, shown: tuple[str, ...] = HOSTILE) -> _Elements:
    parsed = _Elements(html)
    assert not {"script", "img", "iframe", "svg", "object"} & set(parsed.tags), parsed.tags
    assert not [name for name, _ in parsed.attrs if name.startswith("on")]
    assert not [v for name, v in parsed.attrs if name in ("src", "href")]
    text = "".join(parsed.data) + " ".join(v or "" for _, v in parsed.attrs)
    for s in shown:
        assert s in text, f"{s!r} is not shown as text"
    return parsed


def _scene() -> Scene:
    return Scene(SCENE_ID, [ToyObject("circle", "red", "large", 0)])


def test_claim_inspector_escapes_model_text():
    text = f"there is a red circle {HOSTILE[0]} . {HOSTILE[1]} there is a star ."
    cands = [Candidate(SCENE_ID, 1, text, 0), Candidate(SCENE_ID, 2, HOSTILE[1], 1)]
    claims = [
        Claim(cands[0].id, 0, f"the circle {HOSTILE[0]}", f"is there {HOSTILE[1]} ?", kind=HOSTILE[0], target="circle", sentence=0),
        Claim(cands[0].id, 1, "there is a star", "is there a star ?", kind="existence", target="star", sentence=1),
    ]
    verdicts = [Verdict(claims[0].id, 0.9, 0.1, True), Verdict(claims[1].id, 0.2, 0.8, False)]
    inspector = ClaimInspector.from_records(cands, claims, verdicts, images={SCENE_ID: render_scene(_scene())}, scenes={SCENE_ID: _scene()})
    for name in inspector._filters:
        inspector.filter = name
        for k in range(len(inspector.visible)):
            inspector.show(k)
            _assert_inert(inspector.html, shown=())
    inspector.filter = "all"
    inspector.show(0)
    _assert_inert(inspector.html, shown=HOSTILE + (SCENE_ID,))
    inspector.show(1)
    _assert_inert(inspector.html, shown=(HOSTILE[1],))


def test_pair_inspector_escapes_model_text():
    chosen = f"there is a red circle . {HOSTILE[0]}"
    rejected = f"there is a blue star . {HOSTILE[1]}"
    pair = PreferencePair(SCENE_ID, chosen, rejected, 1.0, chosen_id=f"{SCENE_ID}/c0", rejected_id=f"{SCENE_ID}/c1",
                          chosen_score=0.0, rejected_score=-1.0, instruction=f"describe {HOSTILE[1]}", image=render_scene(_scene()))  # fmt: skip
    given = [Claim(pair.chosen_id, 0, f"claim {HOSTILE[0]}", "q ?", sentence=1), Claim(pair.rejected_id, 0, f"claim {HOSTILE[1]}", "q ?", sentence=1)]
    for inspector in (
        PairInspector([pair], scenes={SCENE_ID: _scene()}),  # claims decomposed from the hostile texts
        PairInspector([pair], claims=given, verdicts=[Verdict(c.id, 0.1, 0.9, False) for c in given]),
    ):
        for name in inspector._filters:
            inspector.filter = name
            _assert_inert(inspector.html, shown=())
        inspector.filter = "all"
        _assert_inert(inspector.html, shown=HOSTILE + (SCENE_ID,))
    empty = PairInspector([], empty=f"no pairs {HOSTILE[0]}")
    _assert_inert(empty.html, shown=(HOSTILE[0],))


def test_decomposed_claims_of_hostile_text_stay_text():
    """The toy decomposer never turns markup into a claim that a widget would show raw (defence in depth)."""
    claims = ToyDecomposer().decompose(Candidate("p", 0, f"there is a red circle {HOSTILE[0]} ."))
    inspector = ClaimInspector.from_records([Candidate("p", 0, f"there is a red circle {HOSTILE[0]} .")], claims)
    _assert_inert(inspector.html, shown=(HOSTILE[0],))
