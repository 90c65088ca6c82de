"""The RLAIF-V release loader, on small parquet files written here as the release was (by ``datasets``)."""

from __future__ import annotations

import io
import json
import warnings

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rlaifv_lib.errors import DatasetSchemaError
from rlaifv_lib.records import PreferencePair
from rlaifv_lib.rlaifv_dataset import (
    COLUMNS,
    RLAIFV_FEATURES,
    SkippedRowsWarning,
    export_rlaifv_parquet,
    load_rlaifv_dataset,
    load_rlaifv_pairs,
    rlaifv_trl_dataset,
    rows_to_pairs,
)


def _png(colour: tuple[int, int, int], size=(12, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _rows() -> list[dict]:
    origin = {"model": "OmniLMM-12B", "feedback_model": "llava-next-34b", "type": "detailed_description"}
    return [
        {"ds_name": "RLAIF-V", "image": {"bytes": _png((200, 0, 0)), "path": f"img_{i}.png"}, "question": f"Describe image {i}.",
         "chosen": "A red square.", "rejected": "A red square next to a dog.", "origin_dataset": "COCO",
         "origin_split": json.dumps({**origin, "i": i}), "idx": str(100 + i), "image_path": f"./coco/img_{i}.png"}
        for i in range(3)
    ]  # fmt: skip


def _write_like_release(rows: list[dict], path):
    """Write rows as the release's files were written: by ``datasets``, with its Image feature metadata."""
    datasets.Dataset.from_list(rows, features=RLAIFV_FEATURES).to_parquet(str(path))
    return path


def _write_plain(rows: list[dict], path, idx_type=pa.string()):
    """Write rows with pyarrow only (no feature metadata), ``idx`` of the given type."""
    schema = RLAIFV_FEATURES.arrow_schema.remove_metadata()
    schema = schema.set(schema.get_field_index("idx"), pa.field("idx", idx_type))
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


@pytest.fixture
def release_file(tmp_path):
    """A parquet file with three rows in the schema of openbmb/RLAIF-V-Dataset, written by ``datasets``."""
    path = _write_like_release(_rows(), tmp_path / "RLAIF-V-Dataset_000.parquet")
    assert b"huggingface" in pq.read_schema(path).metadata  # as in the released files
    return path


def test_load_gives_pairs_with_images(release_file):
    pairs = load_rlaifv_pairs(release_file)
    assert len(pairs) == 3 and all(isinstance(p, PreferencePair) for p in pairs)
    p = pairs[0]
    assert p.instruction == "Describe image 0." and p.chosen == "A red square." and p.prompt_id == "RLAIF-V/100"
    assert isinstance(p.image, Image.Image) and p.image.size == (12, 8)
    assert p.extra["origin"]["feedback_model"] == "llava-next-34b" and p.extra["origin_dataset"] == "COCO"
    assert len(load_rlaifv_pairs(release_file.parent, limit=2)) == 2  # a folder is searched for parquet files


def test_round_trip_preserves_every_column(release_file, tmp_path):
    out = export_rlaifv_parquet(load_rlaifv_pairs(release_file), tmp_path / "out" / "pairs.parquet")
    before, after = pq.read_table(release_file).to_pylist(), load_rlaifv_dataset(out).to_list()
    assert after == before
    assert pq.read_schema(out).remove_metadata() == pq.read_schema(release_file).remove_metadata()  # same column types
    assert set(COLUMNS) == set(pq.read_schema(out).names)


def test_export_is_read_by_datasets_with_the_image_feature(release_file, tmp_path):
    """The exported file carries the release's features: datasets decodes images, idx is a string."""
    pair = PreferencePair("scene-7", "a red cat.", "a blue dog.", 2.0, instruction="Describe.", image=Image.new("RGB", (8, 8), (0, 0, 255)),
                          extra={"idx": "abc-7"})  # fmt: skip
    out = export_rlaifv_parquet([pair], tmp_path / "mine.parquet")
    ds = datasets.load_dataset("parquet", data_files=str(out), split="train")
    assert ds.features == RLAIFV_FEATURES and isinstance(ds.features["image"], datasets.Image)
    assert isinstance(ds[0]["image"], Image.Image) and ds[0]["idx"] == "abc-7"
    both = datasets.load_dataset("parquet", data_files=[str(release_file), str(out)], split="train")  # one schema
    assert len(both) == 4 and both.features == RLAIFV_FEATURES


def test_export_beside_release_and_old_exports_loads_here(release_file, tmp_path):
    """A folder holding a released file, a new export and an old export (idx int64, no metadata) loads as one."""
    mine = PreferencePair("p0", "a red cat.", "a blue dog.", 2.0, instruction="Describe.", image=Image.new("RGB", (8, 8)))
    export_rlaifv_parquet([mine], release_file.parent / "mine.parquet", ds_name="tutorial")
    old = [{**r, "idx": 500 + k, "ds_name": "old"} for k, r in enumerate(_rows())]
    _write_plain(old, release_file.parent / "old_export.parquet", idx_type=pa.int64())
    pairs = load_rlaifv_pairs(release_file.parent)
    assert len(pairs) == 7 and {p.extra["idx"] for p in pairs} >= {"0", "100", "500"}
    assert all(isinstance(p.extra["idx"], str) for p in pairs)
    assert load_rlaifv_dataset(release_file.parent).features["idx"] == datasets.Value("string")


def test_rows_from_datasets_load_dataset_become_pairs(release_file):
    """Rows with decoded PIL images (datasets.load_dataset on a released file) convert too."""
    ds = datasets.load_dataset("parquet", data_files=str(release_file), split="train")
    assert isinstance(ds[0]["image"], Image.Image)
    pairs = rows_to_pairs(ds)
    assert len(pairs) == 3 and pairs[0].image.size == (12, 8) and pairs[0].prompt_id == "RLAIF-V/100"
    assert rlaifv_trl_dataset(pairs)[0]["prompt"][0]["content"][1]["text"] == "Describe image 0."


def test_tutorial_pairs_export_in_release_schema(tmp_path):
    pair = PreferencePair("p0", "a red cat.", "a blue dog.", 2.0, instruction="Describe the image.", image=Image.new("RGB", (8, 8), (0, 0, 255)))
    out = export_rlaifv_parquet([pair], tmp_path / "mine.parquet", origin={"model": "toy-policy"})
    back = load_rlaifv_pairs(out)[0]
    assert (back.instruction, back.chosen, back.rejected) == ("Describe the image.", "a red cat.", "a blue dog.")
    assert back.image.getpixel((0, 0)) == (0, 0, 255) and back.extra["origin"]["model"] == "toy-policy"


def test_trl_dataset(release_file):
    ds = rlaifv_trl_dataset(release_file)
    assert {"images", "prompt", "chosen", "rejected"} <= set(ds.column_names) and len(ds) == 3
    assert ds[0]["prompt"][0]["content"][1]["text"] == "Describe image 0."
    assert ds[0]["chosen"][0]["content"][0]["text"] == "A red square."


@pytest.mark.parametrize("column", ["question", "image", "origin_split"])
def test_missing_column_is_named(tmp_path, column):
    path = tmp_path / "bad.parquet"
    rows = [{k: v for k, v in r.items() if k != column} for r in _rows()]
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DatasetSchemaError, match=repr(column)):
        load_rlaifv_pairs(path)


def test_malformed_files(tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DatasetSchemaError, match="not a readable parquet"):
        load_rlaifv_dataset(bad)
    with pytest.raises(DatasetSchemaError, match="does not exist"):
        load_rlaifv_dataset(tmp_path / "nowhere")
    rows = _rows()
    rows[1]["image"] = {"bytes": b"garbage", "path": "x.png"}
    _write_plain(rows, tmp_path / "img.parquet")
    with pytest.raises(DatasetSchemaError, match="img.parquet row 1: column 'image'"):
        load_rlaifv_pairs(tmp_path / "img.parquet")


# ----------------------------------------------------------------------------------------- row checks


@pytest.mark.parametrize("column,value,got", [("chosen", None, "null"), ("rejected", None, "null"), ("question", None, "null")])
def test_null_text_is_an_error_naming_file_and_row(tmp_path, column, value, got):
    rows = _rows()
    rows[2][column] = value
    path = _write_like_release(rows, tmp_path / "nulls.parquet")
    with pytest.raises(DatasetSchemaError, match=f"nulls.parquet row 2: column {column!r} is {got}, not text"):
        load_rlaifv_pairs(path)


def test_non_string_question_is_an_error(tmp_path):
    rows = [{**r, "question": 7} for r in _rows()]  # an int column: the whole file is mistyped
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DatasetSchemaError, match="column 'question' must hold text, got int64"):
        load_rlaifv_pairs(path)
    rows = _rows()
    rows[1]["question"] = 7  # one bad row handed over in Python
    with pytest.raises(DatasetSchemaError, match="row 1: column 'question' is a int"):
        rows_to_pairs(rows)


def test_useless_rows_are_skipped_counted_and_reported(tmp_path):
    rows = _rows() + [{**r, "idx": str(200 + k)} for k, r in enumerate(_rows())]
    rows[1]["chosen"] = "   "  # empty
    rows[3]["rejected"] = rows[3]["chosen"]  # identical: nothing to prefer
    rows[4]["idx"] = "100"  # repeats row 0's idx
    path = _write_like_release(rows, tmp_path / "mixed.parquet")
    with pytest.warns(SkippedRowsWarning, match="skipped 3 of 6 RLAIF-V rows") as rec:
        pairs = load_rlaifv_pairs(path)
    assert [p.extra["idx"] for p in pairs] == ["100", "102", "202"]
    skipped = rec[0].message.skipped
    assert skipped == {
        "empty chosen or rejected": [f"{path} row 1"],
        "chosen identical to rejected": [f"{path} row 3"],
        "repeated (ds_name, idx)": [f"{path} row 4"],
    }


def test_clean_rows_give_no_warning(release_file):
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkippedRowsWarning)
        assert len(load_rlaifv_pairs(release_file)) == 3


def test_decompression_bomb_names_row_and_file(tmp_path, monkeypatch):
    rows = _rows()
    rows[2]["image"] = {"bytes": _png((1, 2, 3), size=(100, 100)), "path": "big.png"}
    path = _write_like_release(rows, tmp_path / "bomb.parquet")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 px > 2 x limit: PIL refuses to decode it
    with pytest.raises(DatasetSchemaError, match="bomb.parquet row 2: the image is too large to decode safely"):
        load_rlaifv_pairs(path)


def test_export_errors_name_the_pair(tmp_path):
    missing = PreferencePair("p3", "a cat.", "a dog.", 1.0, instruction="Describe.", image=tmp_path / "gone.png")
    with pytest.raises(DatasetSchemaError, match=r"pair 'p3': its image file .*gone.png does not exist"):
        export_rlaifv_parquet([missing], tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()
    img = Image.new("RGB", (4, 4))
    twins = [PreferencePair(f"p{k}", "a cat.", "a dog.", 1.0, instruction="D.", image=img, extra={"idx": "x"}) for k in range(2)]
    with pytest.raises(DatasetSchemaError, match="pairs 0 and 1 .* share ds_name/idx rlaifv_tutorial/x"):
        export_rlaifv_parquet(twins, tmp_path / "out.parquet")
