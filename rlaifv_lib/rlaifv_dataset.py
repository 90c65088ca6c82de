"""The released RLAIF-V preference data (``openbmb/RLAIF-V-Dataset``, paper Sec. 4.1) in the library's format.

The release holds 83,132 pairs in parquet files with columns ``ds_name``, ``image`` ({bytes, path}),
``question``, ``chosen``, ``rejected``, ``origin_dataset``, ``origin_split`` (a JSON string naming the
generating and labelling models and the question type), ``idx`` and ``image_path``. This module reads
such files from disk (download them first, e.g. ``huggingface-cli download openbmb/RLAIF-V-Dataset
--repo-type dataset``), turns rows into ``records.PreferencePair`` (PIL image, instruction = question;
every other column kept in ``extra``), builds TRL's vision preference dataset, and writes pairs back
in the release's schema, so pairs made by this tutorial can be mixed with the released ones.

The released files were written by ``datasets``: their parquet metadata declares ``image`` an ``Image``
feature and ``idx`` a string. :data:`RLAIFV_FEATURES` is that declaration; exports carry it, so
``datasets.load_dataset("parquet", data_files=...)`` sees the image column as images, and files written
by ``datasets`` (or by older versions of this module, ``idx`` int64) load here.

Row checks when reading (each names the file and row):

- errors: a null or non-string ``question``/``chosen``/``rejected``; an image that does not decode or is
  too large to decode safely (PIL's decompression-bomb limit); a missing column; a mistyped column.
- counted skips, reported once per load as a :class:`SkippedRowsWarning` (its ``.skipped`` maps each
  reason to the rows skipped): an empty (or whitespace-only) ``chosen``/``rejected``, ``chosen`` identical
  to ``rejected`` (no preference to learn), and a repeated ``(ds_name, idx)`` (the first row is kept).

When writing: a pair whose image file is missing, or two pairs with one ``(ds_name, idx)``, are errors.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, DatasetInfo, Features, Value
from datasets import Image as ImageFeature
from datasets.table import InMemoryTable
from PIL import Image

from .errors import DatasetSchemaError
from .records import PreferencePair

__all__ = [
    "COLUMNS",
    "RLAIFV_FEATURES",
    "SkippedRowsWarning",
    "load_rlaifv_dataset",
    "rows_to_pairs",
    "load_rlaifv_pairs",
    "rlaifv_trl_dataset",
    "pairs_to_rows",
    "export_rlaifv_parquet",
]

COLUMNS = ("ds_name", "image", "question", "chosen", "rejected", "origin_dataset", "origin_split", "idx", "image_path")
_TEXT_COLUMNS = ("ds_name", "question", "chosen", "rejected", "origin_dataset", "origin_split", "image_path")
# the release's features, as its dataset card and parquet metadata declare them (idx a string; image an Image)
RLAIFV_FEATURES = Features({c: ImageFeature() if c == "image" else Value("string") for c in COLUMNS})
_SCHEMA = RLAIFV_FEATURES.arrow_schema  # with the "huggingface" metadata that datasets reads back
_READ_FEATURES = Features({**RLAIFV_FEATURES, "image": ImageFeature(decode=False)})  # images stay {bytes, path}


class SkippedRowsWarning(UserWarning):
    """Rows left out while reading RLAIF-V data; ``skipped`` maps each reason to the rows (file:row) it dropped."""

    def __init__(self, message: str, skipped: dict[str, list[str]]):
        super().__init__(message)
        self.skipped = skipped


def _files(path: str | os.PathLike) -> list[Path]:
    """The parquet files at ``path`` (a file, or a folder searched recursively)."""
    path = Path(path)
    if not path.exists():
        raise DatasetSchemaError(f"{path} does not exist; download the data set first (huggingface-cli download openbmb/RLAIF-V-Dataset --repo-type dataset).")
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise DatasetSchemaError(f"no *.parquet file under {path}.")
    return files


def _check_schema(file: Path) -> pa.Schema:
    """The schema of ``file``; DatasetSchemaError naming the first missing or mistyped column."""
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
    for col in _TEXT_COLUMNS:
        t = schema.field(col).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
            raise DatasetSchemaError(f"{file}: column {col!r} must hold text, got {t}; this is not an RLAIF-V file.")
    t = schema.field("idx").type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t) or pa.types.is_null(t)):
        raise DatasetSchemaError(f"{file}: column 'idx' must be a string (or an integer), got {t}.")
    return schema


def _read_table(file: Path) -> pa.Table:
    """The RLAIF-V columns of ``file`` in the release's types (an integer idx becomes a string)."""
    _check_schema(file)
    table = pq.read_table(file, columns=list(COLUMNS))
    image = table.column("image")
    if "path" not in {f.name for f in image.type}:  # bytes only: add an empty path
        structs = [pa.StructArray.from_arrays([c.field("bytes"), pa.nulls(len(c), pa.string())], ["bytes", "path"]) for c in image.chunks]
        table = table.set_column(table.schema.get_field_index("image"), "image", pa.chunked_array(structs, _SCHEMA.field("image").type))
    try:
        return table.cast(_SCHEMA.remove_metadata())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise DatasetSchemaError(f"{file}: its columns do not convert to the RLAIF-V types ({e}).") from None


def _load(path: str | os.PathLike) -> tuple[Dataset, list[tuple[Path, int]]]:
    """All rows at ``path`` as one Dataset (images as {bytes, path}), and each file with its row count."""
    tables = [(f, _read_table(f)) for f in _files(path)]
    table = pa.concat_tables([t for _, t in tables])
    return Dataset(InMemoryTable(table), info=DatasetInfo(features=_READ_FEATURES)), [(f, len(t)) for f, t in tables]


def load_rlaifv_dataset(path: str | os.PathLike) -> Dataset:
    """The RLAIF-V rows of every parquet file at ``path`` as a ``datasets.Dataset`` (images stay {bytes, path})."""
    return _load(path)[0]


def _locator(files: list[tuple[Path, int]]) -> Callable[[int], str]:
    """Global row number -> "file.parquet row k" (the row within its file)."""

    def where(i: int) -> str:
        for f, n in files:
            if i < n:
                return f"{f} row {i}"
            i -= n
        return f"row {i}"

    return where


def _image(cell: Any, where: str) -> Image.Image:
    """A PIL image from an ``image`` cell ({bytes, path} or an already decoded PIL image)."""
    if isinstance(cell, Image.Image):
        return cell
    data = cell.get("bytes") if isinstance(cell, dict) else None
    if not data:
        raise DatasetSchemaError(f"{where}: column 'image' holds no bytes.")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.copy()
    except Image.DecompressionBombError as e:  # not an OSError: would escape as a raw PIL error
        raise DatasetSchemaError(
            f"{where}: the image is too large to decode safely ({e}). Remove the row, or, if you trust the file, "
            "raise PIL.Image.MAX_IMAGE_PIXELS."
        ) from None
    except (OSError, SyntaxError) as e:
        raise DatasetSchemaError(f"{where}: column 'image' does not decode as an image ({e}).") from None


def _skip_reason(r: dict, where: str, seen: set) -> str | None:
    """Why row ``r`` is skipped (None: keep it); DatasetSchemaError for a row that is broken, not just useless."""
    for col in ("question", "chosen", "rejected"):
        if not isinstance(r[col], str):
            got = "null" if r[col] is None else f"a {type(r[col]).__name__} ({str(r[col])[:40]!r})"
            raise DatasetSchemaError(f"{where}: column {col!r} is {got}, not text; fix or remove the row.")
    if not r["chosen"].strip() or not r["rejected"].strip():
        return "empty chosen or rejected"
    if r["chosen"].strip() == r["rejected"].strip():
        return "chosen identical to rejected"
    key = (r["ds_name"], str(r["idx"]))
    if key in seen:
        return "repeated (ds_name, idx)"
    seen.add(key)
    return None


def _warn_skipped(skipped: dict[str, list[str]], total: int) -> None:
    """One SkippedRowsWarning counting the skipped rows per reason (nothing when none was skipped)."""
    if skipped:
        n = sum(len(v) for v in skipped.values())
        parts = "; ".join(f"{len(v)} {reason} (first: {v[0]})" for reason, v in skipped.items())
        warnings.warn(SkippedRowsWarning(f"skipped {n} of {total} RLAIF-V rows: {parts}.", dict(skipped)), stacklevel=3)


def _to_pairs(rows: Dataset | Sequence[dict], decode_images: bool, where: Callable[[int], str]) -> list[PreferencePair]:
    """Rows -> pairs, checking each row (errors name the row; skips are counted and warned about once)."""
    out, seen, skipped, n = [], set(), defaultdict(list), 0
    for i, r in enumerate(rows):
        n += 1
        missing = [c for c in COLUMNS if c not in r]
        if missing:
            raise DatasetSchemaError(f"{where(i)} lacks column {missing[0]!r}; an RLAIF-V row needs {list(COLUMNS)}.")
        if reason := _skip_reason(r, where(i), seen):
            skipped[reason].append(where(i))
            continue
        out.append(_pair(r, where(i), decode_images))
    _warn_skipped(skipped, n)
    return out


def _pair(r: dict, where: str, decode_images: bool) -> PreferencePair:
    """One checked row as a PreferencePair (every column but the texts kept in ``extra``)."""
    try:
        origin = json.loads(r["origin_split"]) if r["origin_split"] else {}
    except (json.JSONDecodeError, TypeError):
        raise DatasetSchemaError(f"{where}: column 'origin_split' is not a JSON string: {str(r['origin_split'])[:80]!r}") from None
    image = r["image"] if r["image"] is not None else {}
    cell = image if isinstance(image, dict) else {}
    idx = str(r["idx"])
    extra = {c: r[c] for c in ("ds_name", "origin_dataset", "origin_split", "image_path")}
    extra.update(idx=idx, origin=origin, image_bytes=cell.get("bytes"), image_file=cell.get("path"))
    pid = f"{r['ds_name']}/{idx}"
    return PreferencePair(
        prompt_id=pid, chosen=r["chosen"], rejected=r["rejected"], margin=1.0, chosen_id=f"{pid}/chosen", rejected_id=f"{pid}/rejected",
        instruction=r["question"], image=_image(image, where) if decode_images else None, extra=extra,
    )  # fmt: skip


def rows_to_pairs(rows: Dataset | Sequence[dict], decode_images: bool = True) -> list[PreferencePair]:
    """RLAIF-V rows -> ``PreferencePair`` (image decoded, instruction = question, the rest in ``extra``).

    ``extra`` keeps ``ds_name``, ``origin_dataset``, ``origin_split`` (the JSON string, plus its parsed form
    under ``origin``), ``idx`` (a string), ``image_path`` and the image's original ``bytes``/``path``, so
    :func:`pairs_to_rows` writes the row back unchanged. The release has no scores: margin is 1.0. Rows
    may come from :func:`load_rlaifv_dataset` or from ``datasets.load_dataset`` (decoded images). Rows are
    checked as the module docstring lists: broken ones raise, useless ones are skipped and counted.
    """
    return _to_pairs(rows, decode_images, lambda i: f"row {i}")


def load_rlaifv_pairs(path: str | os.PathLike, limit: int | None = None) -> list[PreferencePair]:
    """The pairs in the RLAIF-V parquet files at ``path`` (from the first ``limit`` rows when given)."""
    ds, files = _load(path)
    return _to_pairs(ds.select(range(min(limit, len(ds)))) if limit is not None else ds, True, _locator(files))


def rlaifv_trl_dataset(path_or_pairs: str | os.PathLike | Sequence[PreferencePair], limit: int | None = None) -> Dataset:
    """TRL's vision preference dataset (images, prompt, chosen, rejected, ...) from RLAIF-V files or pairs."""
    from .pairs import to_trl_dataset

    pairs = load_rlaifv_pairs(path_or_pairs, limit) if isinstance(path_or_pairs, (str, os.PathLike)) else list(path_or_pairs)
    return to_trl_dataset(pairs)


def _image_cell(pair: PreferencePair) -> dict:
    """The {bytes, path} cell of a pair: the original bytes when kept, else the file's or the image encoded as PNG."""
    if pair.extra.get("image_bytes"):
        return {"bytes": pair.extra["image_bytes"], "path": pair.extra.get("image_file")}
    if isinstance(pair.image, (str, os.PathLike)):
        file = Path(pair.image)
        if not file.is_file():
            raise DatasetSchemaError(
                f"pair {pair.prompt_id!r}: its image file {file} does not exist (relative paths start from {Path.cwd()}); "
                "restore the file or attach the image (pair.image = PIL image) before exporting."
            )
        return {"bytes": file.read_bytes(), "path": file.name}
    if isinstance(pair.image, Image.Image):
        buf = io.BytesIO()
        pair.image.save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}
    raise DatasetSchemaError(f"pair {pair.prompt_id!r} has no image to export.")


def pairs_to_rows(pairs: Sequence[PreferencePair], ds_name: str = "rlaifv_tutorial", origin: dict | None = None) -> list[dict]:
    """Pairs -> rows in the RLAIF-V schema (``idx`` a string); pairs that came from the release keep all their fields."""
    rows, owner = [], {}
    for k, p in enumerate(pairs):
        e = p.extra or {}
        split = e.get("origin_split") or json.dumps({**(origin or {}), "prompt_id": p.prompt_id})
        image_path = e.get("image_path") or (str(p.image) if isinstance(p.image, (str, os.PathLike)) else f"{p.prompt_id}.png")
        row = {
            "ds_name": e.get("ds_name", ds_name), "image": _image_cell(p), "question": p.instruction, "chosen": p.chosen,
            "rejected": p.rejected, "origin_dataset": e.get("origin_dataset", ds_name), "origin_split": split,
            "idx": str(e.get("idx", k)), "image_path": image_path,
        }  # fmt: skip
        key = (row["ds_name"], row["idx"])
        if key in owner:
            raise DatasetSchemaError(f"pairs {owner[key]} and {k} ({p.prompt_id!r}) share ds_name/idx {key[0]}/{key[1]}; give each pair its own extra['idx'].")
        owner[key] = k
        rows.append(row)
    return rows


def export_rlaifv_parquet(pairs: Sequence[PreferencePair], path: str | os.PathLike, ds_name: str = "rlaifv_tutorial", origin: dict | None = None) -> Path:
    """Write pairs as one parquet file in the release's schema and features (readable by ``datasets`` and here)."""
    path = Path(path)
    table = pa.Table.from_pylist(pairs_to_rows(pairs, ds_name, origin), schema=_SCHEMA)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)  # a half-written file is never taken for a finished one
    return path
