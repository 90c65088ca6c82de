"""The released RLAIF-V preference data (``openbmb/RLAIF-V-Dataset``, paper Sec. 4.1) in the library's format.

The release holds 83,132 pairs in parquet files with columns ``ds_name``, ``image`` ({bytes, path}),
``question``, ``chosen``, ``rejected``, ``origin_dataset``, ``origin_split`` (a JSON string naming the
generating and labelling models and the question type), ``idx`` and ``image_path``. This module reads
such files from disk (download them first, e.g. ``huggingface-cli download openbmb/RLAIF-V-Dataset
--repo-type dataset``), turns rows into ``records.PreferencePair`` (PIL image, instruction = question;
every other column kept in ``extra``), builds TRL's vision preference dataset, and writes pairs back
in the release's schema, so pairs made by this tutorial can be mixed with the released ones.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset
from datasets.table import InMemoryTable
from PIL import Image

from .errors import DatasetSchemaError
from .records import PreferencePair

__all__ = ["COLUMNS", "RLAIFV_FEATURES", "load_rlaifv_dataset", "rows_to_pairs", "load_rlaifv_pairs", "rlaifv_trl_dataset", "pairs_to_rows", "export_rlaifv_parquet"]

COLUMNS = ("ds_name", "image", "question", "chosen", "rejected", "origin_dataset", "origin_split", "idx", "image_path")
_TEXT_COLUMNS = ("ds_name", "question", "chosen", "rejected", "origin_dataset", "origin_split", "image_path")
# the release's arrow schema (idx is an int64; image a struct of raw file bytes and a path)
RLAIFV_FEATURES = pa.schema(
    [("ds_name", pa.string()), ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])), ("question", pa.string()),
     ("chosen", pa.string()), ("rejected", pa.string()), ("origin_dataset", pa.string()), ("origin_split", pa.string()),
     ("idx", pa.int64()), ("image_path", pa.string())]
)  # fmt: skip


def _files(path: str | os.PathLike) -> list[Path]:
    """The parquet files at ``path`` (a file, or a folder searched recursively)."""
    path = Path(path)
    if not path.exists():
        raise DatasetSchemaError(f"{path} does not exist; download the data set first (huggingface-cli download openbmb/RLAIF-V-Dataset --repo-type dataset).")
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise DatasetSchemaError(f"no *.parquet file under {path}.")
    return files


def _check_schema(file: Path) -> None:
    """DatasetSchemaError naming the first missing or mistyped column of ``file``."""
    try:
        schema = pq.read_schema(file)
    except (pa.ArrowInvalid, OSError) as e:
        raise DatasetSchemaError(f"{file} is not a readable parquet file ({e}); re-download it.") from None
    for col in COLUMNS:
        if col not in schema.names:
            raise DatasetSchemaError(f"{file} lacks column {col!r}; an RLAIF-V file needs {list(COLUMNS)}.")
    image = schema.field("image").type
    if not pa.types.is_struct(image) or {f.name for f in image} < {"bytes"}:
        raise DatasetSchemaError(f"{file}: column 'image' must be a struct with 'bytes' (and 'path'), got {image}.")


def load_rlaifv_dataset(path: str | os.PathLike) -> Dataset:
    """The RLAIF-V rows of every parquet file at ``path`` as a ``datasets.Dataset`` (images stay bytes)."""
    files = _files(path)
    for f in files:
        _check_schema(f)
    tables = [pq.read_table(f, columns=list(COLUMNS)) for f in files]
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise DatasetSchemaError(f"the parquet files at {path} do not share one schema: {e}") from None
    return Dataset(InMemoryTable(table))


def _image(cell: Any, row: int) -> Image.Image:
    """A PIL image from the ``image`` cell of row ``row``; DatasetSchemaError if it is not an image."""
    data = cell.get("bytes") if isinstance(cell, dict) else None
    if not data:
        raise DatasetSchemaError(f"row {row}: column 'image' holds no bytes.")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.copy()
    except (OSError, SyntaxError) as e:
        raise DatasetSchemaError(f"row {row}: column 'image' does not decode as an image ({e}).") from None


def rows_to_pairs(rows: Dataset | Sequence[dict], decode_images: bool = True) -> list[PreferencePair]:
    """RLAIF-V rows -> ``PreferencePair`` (image decoded, instruction = question, the rest in ``extra``).

    ``extra`` keeps ``ds_name``, ``origin_dataset``, ``origin_split`` (the JSON string, plus its parsed form
    under ``origin``), ``idx``, ``image_path`` and the image's original ``bytes``/``path``, so
    :func:`pairs_to_rows` writes the row back unchanged. The release has no scores: margin is 1.0.
    """
    out = []
    for i, r in enumerate(rows):
        missing = [c for c in COLUMNS if c not in r]
        if missing:
            raise DatasetSchemaError(f"row {i} lacks column {missing[0]!r}; an RLAIF-V row needs {list(COLUMNS)}.")
        try:
            origin = json.loads(r["origin_split"]) if r["origin_split"] else {}
        except json.JSONDecodeError:
            raise DatasetSchemaError(f"row {i}: column 'origin_split' is not a JSON string: {r['origin_split'][:80]!r}") from None
        image = r["image"] or {}
        extra = {c: r[c] for c in ("ds_name", "origin_dataset", "origin_split", "idx", "image_path")}
        extra.update(origin=origin, image_bytes=image.get("bytes"), image_file=image.get("path"))
        out.append(PreferencePair(
            prompt_id=f"{r['ds_name']}/{r['idx']}", chosen=r["chosen"], rejected=r["rejected"], margin=1.0,
            chosen_id=f"{r['ds_name']}/{r['idx']}/chosen", rejected_id=f"{r['ds_name']}/{r['idx']}/rejected",
            instruction=r["question"], image=_image(image, i) if decode_images else None, extra=extra,
        ))  # fmt: skip
    return out


def load_rlaifv_pairs(path: str | os.PathLike, limit: int | None = None) -> list[PreferencePair]:
    """The pairs in the RLAIF-V parquet files at ``path`` (the first ``limit`` rows when given)."""
    ds = load_rlaifv_dataset(path)
    return rows_to_pairs(ds.select(range(min(limit, len(ds)))) if limit is not None else ds)


def rlaifv_trl_dataset(path_or_pairs: str | os.PathLike | Sequence[PreferencePair], limit: int | None = None) -> Dataset:
    """TRL's vision preference dataset (images, prompt, chosen, rejected, ...) from RLAIF-V files or pairs."""
    from .pairs import to_trl_dataset

    pairs = load_rlaifv_pairs(path_or_pairs, limit) if isinstance(path_or_pairs, (str, os.PathLike)) else list(path_or_pairs)
    return to_trl_dataset(pairs)


def _image_cell(pair: PreferencePair) -> dict:
    """The {bytes, path} cell of a pair: the original bytes when kept, else the image encoded as PNG."""
    if pair.extra.get("image_bytes"):
        return {"bytes": pair.extra["image_bytes"], "path": pair.extra.get("image_file")}
    if isinstance(pair.image, (str, os.PathLike)):
        return {"bytes": Path(pair.image).read_bytes(), "path": Path(pair.image).name}
    if isinstance(pair.image, Image.Image):
        buf = io.BytesIO()
        pair.image.save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}
    raise DatasetSchemaError(f"pair {pair.prompt_id!r} has no image to export.")


def pairs_to_rows(pairs: Sequence[PreferencePair], ds_name: str = "rlaifv_tutorial", origin: dict | None = None) -> list[dict]:
    """Pairs -> rows in the RLAIF-V schema; pairs that came from the release keep all their fields."""
    rows = []
    for k, p in enumerate(pairs):
        e = p.extra or {}
        split = e.get("origin_split") or json.dumps({**(origin or {}), "prompt_id": p.prompt_id})
        image_path = e.get("image_path") or (str(p.image) if isinstance(p.image, (str, os.PathLike)) else f"{p.prompt_id}.png")
        rows.append({
            "ds_name": e.get("ds_name", ds_name), "image": _image_cell(p), "question": p.instruction, "chosen": p.chosen,
            "rejected": p.rejected, "origin_dataset": e.get("origin_dataset", ds_name), "origin_split": split,
            "idx": int(e.get("idx", k)), "image_path": image_path,
        })  # fmt: skip
    return rows


def export_rlaifv_parquet(pairs: Sequence[PreferencePair], path: str | os.PathLike, ds_name: str = "rlaifv_tutorial", origin: dict | None = None) -> Path:
    """Write pairs as one parquet file in the RLAIF-V schema (readable by :func:`load_rlaifv_dataset`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(pairs_to_rows(pairs, ds_name, origin), schema=RLAIFV_FEATURES)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)  # a half-written file is never taken for a finished one
    return path
