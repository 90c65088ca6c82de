"""The data contracts between the steps of RLAIF-V, and their JSON Lines storage.

world -> ``Prompt`` -> ``Candidate`` (sampling) -> ``Claim`` (claims) -> ``Verdict`` (feedback)
-> ``ScoredCandidate`` (feedback) -> ``PreferencePair`` (pairs). Records are keyed by ids so any
stage can be inspected, re-run or replaced. Files are written atomically (temporary file +
rename), so a half-written file is never taken for a finished one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, TypeVar

from .errors import ArtifactError

__all__ = [
    "Prompt",
    "Candidate",
    "Claim",
    "Verdict",
    "ScoredCandidate",
    "PreferencePair",
    "prompt_of",
    "atomic_write_text",
    "remove_stale_temporaries",
    "write_jsonl",
    "read_jsonl",
    "write_json",
    "read_json",
]


@dataclass
class Prompt:
    """An (image, instruction) prompt; ``image`` is a path or an in-memory PIL image."""

    id: str
    image: Any
    instruction: str
    truth: list[dict] | None = None  # ground-truth objects when the world knows them
    objects: list[str] | None = None  # names of the objects in the image, when known (CHAIR without a toy world)


@dataclass
class Candidate:
    """One sampled response to a prompt; candidates of a prompt differ only in ``seed``."""

    prompt_id: str
    seed: int
    text: str
    index: int = 0

    @property
    def id(self) -> str:
        """Stable id ``<prompt_id>/c<index>``."""
        return f"{self.prompt_id}/c{self.index}"


@dataclass
class Claim:
    """An atomic claim of a candidate and the polar question that checks it."""

    candidate_id: str
    index: int
    text: str
    question: str
    kind: str = "fact"  # existence | colour | size | position | fact
    target: str | None = None  # the object the claim is about, when known
    sentence: int = 0  # index of the sentence of the response it came from
    value: str | None = None  # the attribute value claimed (colour, size, position)

    @property
    def id(self) -> str:
        """Stable id ``<candidate_id>/k<index>``."""
        return f"{self.candidate_id}/k{self.index}"


@dataclass
class Verdict:
    """The labeler's answer to one claim's question."""

    claim_id: str
    p_yes: float
    p_no: float
    accepted: bool


@dataclass
class ScoredCandidate:
    """A candidate with its self-feedback score = -(number of rejected claims)."""

    candidate_id: str
    prompt_id: str
    text: str
    score: float | None  # None when the response has no claims (never paired)
    n_claims: int
    n_rejected: int


@dataclass
class PreferencePair:
    """A chosen/rejected pair of responses to one prompt, with the score margin."""

    prompt_id: str
    chosen: str
    rejected: str
    margin: float
    chosen_id: str = ""
    rejected_id: str = ""
    chosen_score: float = 0.0
    rejected_score: float = 0.0
    instruction: str = ""
    image: Any = None
    extra: dict = field(default_factory=dict)


def prompt_of(candidate_id: str) -> str:
    """The prompt id of a candidate id ``<prompt_id>/c<index>`` (or of a claim id ``<candidate_id>/k<index>``'s candidate)."""
    return candidate_id.rsplit("/", 1)[0]


T = TypeVar("T")


_TMP_SUFFIX = ".tmp"  # atomic_write_text's temporaries: ".<name>.<random>.tmp" beside the target


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temporaries that killed atomic writes left anywhere under ``folder``; returns how many."""
    stale = [p for p in Path(folder).rglob(f".*{_TMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink()
    return len(stale)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same folder + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _to_dict(record: Any) -> dict:
    if hasattr(record, "__dataclass_fields__"):
        d = asdict(record)
    else:
        d = dict(record)
    return {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in d.items()}


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> None:
    """Write records (dataclasses or dicts) as JSON Lines, atomically, ending with an end marker."""
    lines = [json.dumps(_to_dict(r), sort_keys=True) for r in records]
    lines.append(json.dumps({"__end__": True, "count": len(lines)}))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_jsonl(path: str | os.PathLike, cls: type[T] | None = None) -> list[T] | list[dict]:
    """Read a JSON Lines file written by :func:`write_jsonl`; raise ``ArtifactError`` if truncated."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path} does not exist.")
    rows: list[dict] = []
    end = None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ArtifactError(
            f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); the file is corrupt. Delete it and re-run "
            "the stage that writes it."
        ) from None
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ArtifactError(
                f"{path} line {lineno} is not valid JSON ({e.msg}); the file is corrupt or was "
                "cut short. Delete it and re-run the stage that writes it."
            ) from None
        if not isinstance(obj, dict):
            raise ArtifactError(
                f"{path} line {lineno} is a JSON {type(obj).__name__}, not a record (JSON object); the file is "
                "corrupt or is not an artifact of this library. Delete it and re-run the stage that writes it."
            )
        if obj.get("__end__"):
            end = obj
            break
        rows.append(obj)
    if end is None or end.get("count") != len(rows):
        raise ArtifactError(
            f"{path} is truncated (no end marker or wrong record count); it was not written to the "
            "end. Delete it and re-run the stage that writes it."
        )
    if cls is None:
        return rows
    names = {f.name for f in fields(cls)}
    try:
        return [cls(**{k: v for k, v in r.items() if k in names}) for r in rows]
    except TypeError as e:
        raise ArtifactError(f"{path} does not hold {cls.__name__} records: {e}") from None


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write one JSON document atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read one JSON document; raise ``ArtifactError`` naming the file if it is malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path} does not exist.") from None
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{path} is not UTF-8 text ({e.reason}); delete it and re-run the stage that writes it.") from None
    except json.JSONDecodeError as e:
        raise ArtifactError(
            f"{path} is not valid JSON ({e.msg}); delete it and re-run the stage that writes it."
        ) from None
