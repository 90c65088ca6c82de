"""The RLAIF-V release loader, on a small parquet file written here in the release's schema."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rlaifv_lib.errors import DatasetSchemaError
from rlaifv_lib.records import PreferencePair
from rlaifv_lib.rlaifv_dataset import (
    COLUMNS,
    RLAIFV_FEATURES,
    export_rlaifv_parquet,
    load_rlaifv_dataset,
    load_rlaifv_pairs,
    rlaifv_trl_dataset,
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
         "origin_split": json.dumps({**origin, "i": i}), "idx": 100 + i, "image_path": f"./coco/img_{i}.png"}
        for i in range(3)
    ]  # fmt: skip


@pytest.fixture
def release_file(tmp_path):
    """A parquet file with three rows in the schema of openbmb/RLAIF-V-Dataset."""
    path = tmp_path / "RLAIF-V-Dataset_000.parquet"
    pq.write_table(pa.Table.from_pylist(_rows(), schema=RLAIFV_FEATURES), path)
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
    assert set(COLUMNS) == set(pq.read_schema(out).names)


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
    pq.write_table(pa.Table.from_pylist(rows, schema=RLAIFV_FEATURES), tmp_path / "img.parquet")
    with pytest.raises(DatasetSchemaError, match="row 1: column 'image'"):
        load_rlaifv_pairs(tmp_path / "img.parquet")
