"""Prompt sources: the toy world unchanged, prompt files validated, rounds seeded and never repeated, a fixed eval set."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from rlaifv_lib.errors import ConfigError, DatasetSchemaError
from rlaifv_lib.sources import ImageFolderSource, JsonlSource, ListSource, ToySource, open_source, read_prompt_file, round_seed
from rlaifv_lib.toyworld.scenes import evaluation_scenes, training_scenes


def _file(tmp_path, rows, name="p.jsonl"):
    (tmp_path / "img").mkdir(exist_ok=True)
    for r in rows:
        if isinstance(r, dict) and isinstance(r.get("image"), str) and r["image"].startswith("img/"):
            Image.new("RGB", (8, 8), "red").save(tmp_path / r["image"])
    path = tmp_path / name
    path.write_text("".join((json.dumps(r) if not isinstance(r, str) else r) + "\n" for r in rows))
    return path


def _rows(n, start=0):
    return [{"id": f"p{i}", "image": f"img/{i}.png", "instruction": "Describe.", "objects": ["cat"]} for i in range(start, start + n)]


def test_toy_source_is_todays_prompts():
    src = ToySource(5)
    train = src.training(2, 4, seed=0)
    assert [p.id for p in train] == [s.id for s in training_scenes(4, seed=round_seed(0, 2, "prompts"))]
    assert [p.id for p in src.evaluation()] == [s.id for s in evaluation_scenes(5)]
    row = src.record(train[0])
    assert set(row) == {"id", "instruction", "truth", "seed"}
    again = ToySource(5).restore(row)
    assert again.truth == train[0].truth and again.image.tobytes() == train[0].image.tobytes()


def test_prompt_file_paths_are_relative_to_the_file_and_rounds_never_repeat(tmp_path):
    src = JsonlSource(_file(tmp_path, _rows(12)), _file(tmp_path, _rows(3, 100), "e.jsonl"))
    rounds = [src.training(k, 4, seed=7) for k in (1, 2, 3)]
    ids = [p.id for r in rounds for p in r]
    assert len(set(ids)) == 12 and all(p.image.startswith(str(tmp_path)) for r in rounds for p in r)
    assert [p.id for p in src.training(2, 4, seed=7)] == [p.id for p in rounds[1]]  # seeded
    assert [p.id for p in src.training(1, 4, seed=8)] != [p.id for p in rounds[0]]
    assert [p.id for p in src.evaluation()] == ["p100", "p101", "p102"] and src.evaluation()[0].objects == ["cat"]
    with pytest.raises(ConfigError, match="never repeated"):
        src.training(4, 4, seed=7)
    assert src.restore(src.record(rounds[0][0])) == rounds[0][0]


def test_without_eval_prompts_a_fixed_split_is_held_out(tmp_path):
    path = _file(tmp_path, _rows(10))
    a, b = JsonlSource(path, eval_size=3), JsonlSource(path, eval_size=3)
    assert [p.id for p in a.evaluation()] == [p.id for p in b.evaluation()] and len(a.evaluation()) == 3
    assert not {p.id for p in a.evaluation()} & {p.id for p in a.pool}


@pytest.mark.parametrize(
    "row, match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not an object"),
        ({"id": "a", "image": "img/missing.png", "instruction": "x"}, "is not a file"),
        ({"id": "a", "image": "img/0.png", "instruction": ""}, "'instruction' must be a non-empty string"),
        ({"id": "a", "image": "img/0.png", "instruction": "x", "objects": "cat"}, "'objects' must be a list"),
    ],
)
def test_bad_prompt_rows_name_file_line_and_problem(tmp_path, row, match):
    Image.new("RGB", (8, 8)).save((tmp_path / "img").mkdir() or tmp_path / "img" / "0.png")
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(_rows(1)[0] | {"image": "img/0.png"}) + "\n" + (row if isinstance(row, str) else json.dumps(row)) + "\n")
    with pytest.raises(DatasetSchemaError, match=match) as e:
        read_prompt_file(path)
    assert "line 2" in str(e.value)


def test_duplicate_ids_and_empty_pools_are_errors(tmp_path):
    with pytest.raises(DatasetSchemaError, match="appears twice"):
        read_prompt_file(_file(tmp_path, _rows(2) + _rows(1)))
    with pytest.raises(ConfigError, match="at least one training"):
        ListSource(read_prompt_file(_file(tmp_path, _rows(1), "one.jsonl")))


def test_open_source_picks_by_path(tmp_path):
    assert isinstance(open_source(None), ToySource)
    assert isinstance(open_source(_file(tmp_path, _rows(4))), JsonlSource)
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8)).save(folder / f"{i}.jpg")
    src = open_source(folder, instructions=["Describe.", "What is here?"])
    assert isinstance(src, ImageFolderSource) and len(src.pool) + len(src.evaluation()) == 4
    with pytest.raises(DatasetSchemaError, match="does not exist"):
        open_source(tmp_path / "nothing.jsonl")
    with pytest.raises(ConfigError, match="needs prompts"):
        open_source(None, tmp_path / "e.jsonl")


def test_rlaifv_parquet_questions_are_prompts(tmp_path):
    from rlaifv_lib.records import PreferencePair
    from rlaifv_lib.rlaifv_dataset import export_rlaifv_parquet

    im = Image.new("RGB", (12, 10), "blue")
    pairs = [PreferencePair(f"q{i}", "a", "b", 1.0, instruction=f"What is {i}?", image=im) for i in range(6)]
    path = export_rlaifv_parquet(pairs, tmp_path / "rlaifv.parquet")
    src = open_source(path, eval_size=2)
    train = src.training(1, 4, seed=0)
    assert len(train) == 4 and all(p.image.size == (12, 10) for p in train)
    assert src.restore(src.record(train[0])).instruction == train[0].instruction
