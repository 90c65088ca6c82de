"""Where a run's prompts come from: the toy world, your own images, or the released RLAIF-V questions.

Every source implements one small protocol (:class:`PromptSource`): ``training(k, n, seed)`` gives the
``n`` fresh training prompts of round ``k`` (seeded; never repeated across the rounds of one run),
``evaluation()`` the fixed held-out evaluation set, and ``record``/``restore`` turn a prompt into the
JSON row stored in ``round_k/prompts.jsonl`` and back. Sources:

- :class:`ToySource`: the toy world (fresh scenes each round, the fixed held-out scenes; today's behaviour).
- :class:`JsonlSource`: a JSON Lines file, one ``{"id", "image", "instruction", "objects"?}`` per line; image
  paths are relative to the file, ``objects`` lists the names of the objects in the image (ground truth for
  CHAIR, optional).
- :class:`ImageFolderSource`: every image of a folder, each with one of a list of instructions.
- :class:`RLAIFVQuestionSource`: the (image, question) prompts of RLAIF-V-Dataset parquet files, for
  on-policy generation from the released prompts.
- :class:`DatasetSource`: any ``datasets.Dataset`` with an image column and a question column.

:func:`open_source` picks one from a path (what ``rlaifv run --prompts`` takes).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, DatasetSchemaError
from .records import Prompt
from .toyworld.grammar import INSTRUCTIONS
from .toyworld.render import render_scene
from .toyworld.scenes import Scene, evaluation_scenes, training_scenes

__all__ = [
    "DESCRIBE",
    "IMAGE_SUFFIXES",
    "round_seed",
    "PromptSource",
    "ToySource",
    "ListSource",
    "JsonlSource",
    "ImageFolderSource",
    "RLAIFVQuestionSource",
    "DatasetSource",
    "read_prompt_file",
    "open_source",
]

DESCRIBE = "Describe the image in detail."  # the instruction of a real-image prompt without one
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_HOLDOUT_SEED = 0  # the held-out split of a source without its own evaluation set (the same for every run seed)


def round_seed(seed: int, k: int, what: str) -> int:
    """The seed of one part (``what``) of round ``k`` of a run with seed ``seed``: a stable hash."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{k}/{what}".encode()).digest()[:4], "little")


class PromptSource(ABC):
    """Training prompts per round (seeded, not repeated across rounds) and a fixed evaluation set."""

    name: str = "prompts"

    @abstractmethod
    def training(self, k: int, n: int, seed: int) -> list[Prompt]:
        """The ``n`` training prompts of round ``k`` (1, 2, ...) of a run seeded ``seed``."""

    @abstractmethod
    def evaluation(self) -> list[Prompt]:
        """The fixed evaluation prompts (the same for every round and every run seed)."""

    @abstractmethod
    def record(self, prompt: Prompt) -> dict:
        """The JSON row of ``prompt`` in ``prompts.jsonl``."""

    @abstractmethod
    def restore(self, row: dict) -> Prompt:
        """The prompt of a row written by :meth:`record`."""

    def has_objects(self) -> bool:
        """Whether the evaluation prompts carry ground-truth object names."""
        return any(p.objects for p in self.evaluation())


class ToySource(PromptSource):
    """The toy world: ``n`` fresh scenes per round, the fixed held-out scenes for evaluation."""

    name = "toy world"

    def __init__(self, eval_size: int = 200):
        self.eval_scenes = evaluation_scenes(eval_size)
        self.scenes: dict[str, Scene] = {s.id: s for s in self.eval_scenes}  # every scene handed out, by prompt id

    def _prompt(self, scene: Scene) -> Prompt:
        self.scenes[scene.id] = scene
        return Prompt(scene.id, render_scene(scene), INSTRUCTIONS[0], scene.truth(), [o.shape for o in scene.in_reading_order()])

    def training(self, k: int, n: int, seed: int) -> list[Prompt]:
        """Fresh scenes drawn with the round's own seed, the toy instruction."""
        return [self._prompt(s) for s in training_scenes(n, seed=round_seed(seed, k, "prompts"))]

    def evaluation(self) -> list[Prompt]:
        """The held-out scenes (no co-occurrence prior), rendered."""
        return [self._prompt(s) for s in self.eval_scenes]

    def record(self, prompt: Prompt) -> dict:
        """Id, instruction, the scene's objects and its seed (the image is re-rendered from them)."""
        return {"id": prompt.id, "instruction": prompt.instruction, "truth": prompt.truth, "seed": self.scenes[prompt.id].seed}

    def restore(self, row: dict) -> Prompt:
        """The prompt with its scene re-rendered."""
        return self._prompt(Scene.from_truth(row["id"], row["truth"], row["seed"]))

    def has_objects(self) -> bool:
        """Toy scenes always know their objects."""
        return True


class ListSource(PromptSource):
    """A fixed pool of prompts: each round takes the next ``n`` of one seeded order, so no prompt repeats.

    The evaluation set is ``eval_prompts`` when given; otherwise a seeded split of ``eval_size`` prompts is
    held out of the pool (the same split for every run seed).
    """

    def __init__(self, prompts: Sequence[Prompt], eval_prompts: Sequence[Prompt] | None = None, eval_size: int = 200, name: str = "prompts"):
        self.name = name
        prompts = list(prompts)
        _check_unique(prompts, name)
        if eval_prompts is None:
            order = list(range(len(prompts)))
            random.Random(_HOLDOUT_SEED).shuffle(order)
            held = set(order[: min(eval_size, len(prompts) // 2)])
            eval_prompts = [p for i, p in enumerate(prompts) if i in held]
            prompts = [p for i, p in enumerate(prompts) if i not in held]
        self.pool = prompts
        self.eval_prompts = list(eval_prompts)
        if not self.pool or not self.eval_prompts:
            raise ConfigError(f"{name}: needs at least one training and one evaluation prompt (has {len(self.pool)} and {len(self.eval_prompts)}).")
        self._by_id = {p.id: p for p in self.pool + self.eval_prompts}

    def training(self, k: int, n: int, seed: int) -> list[Prompt]:
        """Prompts ``(k-1)*n .. k*n`` of the pool in the run's seeded order."""
        if k < 1 or n < 1:
            raise ConfigError(f"round k and n must be >= 1, got k={k}, n={n}")
        if k * n > len(self.pool):
            raise ConfigError(
                f"{self.name} has {len(self.pool)} training prompts; round {k} with {n} prompts per round needs {k * n} "
                "(prompts are never repeated across rounds). Give more prompts, fewer prompts per round or fewer rounds."
            )
        order = list(range(len(self.pool)))
        random.Random(round_seed(seed, 0, "prompt order")).shuffle(order)
        return [self.pool[i] for i in order[(k - 1) * n : k * n]]

    def evaluation(self) -> list[Prompt]:
        """The fixed evaluation prompts."""
        return list(self.eval_prompts)

    def record(self, prompt: Prompt) -> dict:
        """Id, instruction, objects, and the image path when the image is a file."""
        image = str(prompt.image) if isinstance(prompt.image, (str, os.PathLike)) else None
        return {"id": prompt.id, "instruction": prompt.instruction, "objects": prompt.objects, "image": image}

    def restore(self, row: dict) -> Prompt:
        """The pool's prompt with this id (the source is rebuilt from the same files on resume)."""
        if row["id"] not in self._by_id:
            raise DatasetSchemaError(f"prompt {row['id']!r} of this run is no longer in {self.name}; resume with the prompt files the run started with.")
        return self._by_id[row["id"]]


def _check_unique(prompts: Sequence[Prompt], name: str) -> None:
    """DatasetSchemaError naming the first prompt id that appears twice."""
    seen: set[str] = set()
    for p in prompts:
        if p.id in seen:
            raise DatasetSchemaError(f"{name}: prompt id {p.id!r} appears twice; ids must be unique.")
        seen.add(p.id)


def _row_error(path: Path, line: int, text: str) -> DatasetSchemaError:
    return DatasetSchemaError(f"{path} line {line}: {text}. Each line is a JSON object {{\"id\", \"image\", \"instruction\", \"objects\"?}}.")


def _prompt_row(obj: Any, path: Path, line: int) -> Prompt:
    """One validated prompt from a JSON Lines row; image paths are relative to the file."""
    if not isinstance(obj, dict):
        raise _row_error(path, line, f"a JSON {type(obj).__name__}, not an object")
    for key in ("id", "image", "instruction"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise _row_error(path, line, f"{key!r} must be a non-empty string, got {obj.get(key)!r}")
    objects = obj.get("objects")
    if objects is not None and (not isinstance(objects, list) or not all(isinstance(o, str) and o.strip() for o in objects)):
        raise _row_error(path, line, f"'objects' must be a list of object names (strings), got {objects!r}")
    image = (path.parent / obj["image"]).resolve()
    if not image.is_file():
        raise _row_error(path, line, f"image {obj['image']!r} is not a file (looked for {image})")
    return Prompt(obj["id"], str(image), obj["instruction"], None, objects)


def read_prompt_file(path: str | os.PathLike) -> list[Prompt]:
    """The prompts of a JSON Lines prompt file, validated (unique ids, existing images)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetSchemaError(f"prompt file {path} does not exist.")
    prompts = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise _row_error(path, line, f"not valid JSON ({e.msg})") from None
        prompts.append(_prompt_row(obj, path, line))
    if not prompts:
        raise DatasetSchemaError(f"prompt file {path} holds no prompt.")
    _check_unique(prompts, str(path))
    return prompts


class JsonlSource(ListSource):
    """Prompts from a JSON Lines file (and, optionally, the evaluation prompts from a second one)."""

    def __init__(self, path: str | os.PathLike, eval_path: str | os.PathLike | None = None, eval_size: int = 200):
        evals = read_prompt_file(eval_path) if eval_path is not None else None
        super().__init__(read_prompt_file(path), evals, eval_size, name=str(path))


class ImageFolderSource(ListSource):
    """Every image under a folder (id = its relative path), each with one instruction of ``instructions``."""

    def __init__(self, folder: str | os.PathLike, instructions: Sequence[str] = (DESCRIBE,), eval_prompts: Sequence[Prompt] | None = None, eval_size: int = 200):
        folder = Path(folder)
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DatasetSchemaError(f"no image ({', '.join(IMAGE_SUFFIXES)}) under {folder}.")
        if not instructions or not all(isinstance(i, str) and i.strip() for i in instructions):
            raise ConfigError("instructions must be a non-empty list of non-empty strings.")
        prompts = []
        for f in files:
            pid = f.relative_to(folder).as_posix()
            pick = int.from_bytes(hashlib.sha256(pid.encode()).digest()[:4], "little") % len(instructions)
            prompts.append(Prompt(pid, str(f.resolve()), instructions[pick]))
        super().__init__(prompts, eval_prompts, eval_size, name=str(folder))


class RLAIFVQuestionSource(ListSource):
    """The distinct (image, question) prompts of RLAIF-V-Dataset parquet files; images decoded when drawn."""

    def __init__(self, path: str | os.PathLike, eval_prompts: Sequence[Prompt] | None = None, eval_size: int = 200):
        from .rlaifv_dataset import load_rlaifv_dataset

        self._rows = load_rlaifv_dataset(path)
        prompts, seen = [], set()
        for i, (ds, idx, question, image_path) in enumerate(zip(*(self._rows[c] for c in ("ds_name", "idx", "question", "image_path")))):
            key = (image_path or f"{ds}/{idx}", question)
            if key not in seen:
                seen.add(key)
                prompts.append(Prompt(f"{ds}/{idx}", i, question))  # image: the row number, decoded by _image
        super().__init__(prompts, eval_prompts, eval_size, name=str(path))

    def _decoded(self, p: Prompt) -> Prompt:
        from .rlaifv_dataset import rows_to_pairs

        if not isinstance(p.image, int):
            return p
        pair = rows_to_pairs(self._rows.select([p.image]))[0]
        return Prompt(p.id, pair.image, p.instruction)

    def training(self, k: int, n: int, seed: int) -> list[Prompt]:
        """As :meth:`ListSource.training`, with the images decoded."""
        return [self._decoded(p) for p in super().training(k, n, seed)]

    def evaluation(self) -> list[Prompt]:
        """As :meth:`ListSource.evaluation`, with the images decoded."""
        return [self._decoded(p) for p in super().evaluation()]

    def restore(self, row: dict) -> Prompt:
        """The prompt with its image decoded."""
        return self._decoded(super().restore(row))


class DatasetSource(ListSource):
    """Prompts from any ``datasets.Dataset`` with an image column (PIL images or paths) and a question column."""

    def __init__(self, dataset: Any, image_column: str = "image", question_column: str = "question", id_column: str | None = None,
                 objects_column: str | None = None, eval_prompts: Sequence[Prompt] | None = None, eval_size: int = 200, name: str = "dataset"):  # fmt: skip
        for col in (image_column, question_column, id_column, objects_column):
            if col is not None and col not in dataset.column_names:
                raise DatasetSchemaError(f"{name} has no column {col!r}; its columns are {dataset.column_names}.")
        prompts = []
        for i, row in enumerate(dataset):
            pid = str(row[id_column]) if id_column else str(i)
            prompts.append(Prompt(pid, row[image_column], row[question_column], None, list(row[objects_column]) if objects_column else None))
        super().__init__(prompts, eval_prompts, eval_size, name=name)


def open_source(prompts: str | os.PathLike | None, eval_prompts: str | os.PathLike | None = None, eval_size: int = 200, instructions: Sequence[str] = (DESCRIBE,)) -> PromptSource:
    """The source a path names: None = the toy world; ``*.jsonl`` = a prompt file; ``*.parquet`` (or a folder of
    them) = RLAIF-V questions; a folder saved by ``datasets`` = its image/question columns; any other folder =
    its images with ``instructions``. ``eval_prompts`` (a prompt file) is the fixed evaluation set."""
    if prompts is None:
        if eval_prompts is not None:
            raise ConfigError("eval_prompts needs prompts too (the toy world has its own held-out scenes).")
        return ToySource(eval_size)
    path = Path(prompts)
    if not path.exists():
        raise DatasetSchemaError(f"prompts {path} does not exist; give a .jsonl prompt file, an image folder or RLAIF-V parquet files.")
    evals = read_prompt_file(eval_prompts) if eval_prompts is not None else None
    if path.is_file() and path.suffix == ".jsonl":
        return JsonlSource(path, eval_prompts, eval_size)
    if path.suffix == ".parquet" or (path.is_dir() and any(path.rglob("*.parquet")) and not (path / "dataset_info.json").exists()):
        return RLAIFVQuestionSource(path, evals, eval_size)
    if path.is_dir() and (path / "dataset_info.json").exists():
        from datasets import load_from_disk

        return DatasetSource(load_from_disk(str(path)), eval_prompts=evals, eval_size=eval_size, name=str(path))
    if path.is_dir():
        return ImageFolderSource(path, instructions, evals, eval_size)
    raise DatasetSchemaError(f"cannot read prompts from {path}: give a .jsonl prompt file, an image folder or RLAIF-V parquet files.")
