"""The data contracts between the steps of RLAIF-V, and their JSON Lines storage.

world -> ``Prompt`` -> ``Candidate`` (sampling) -> ``Claim`` (claims) -> ``Verdict`` (feedback)
-> ``ScoredCandidate`` (feedback) -> ``PreferencePair`` (pairs). Records are keyed by ids so any
stage can be inspected, re-run or replaced. Files are written atomically (temporary file +
rename), so a half-written file is never taken for a finished one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

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
    "atomic_directory",
    "remove_own_temporaries",
    "write_jsonl",
    "read_jsonl",
    "read_jsonl_marked",
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
    sentence: int = 0  # index of the sentence of the response it came from (-1: not located)
    value: str | None = None  # the attribute value claimed (colour, size, position)
    span: tuple[int, int] | None = None  # [start, end) of the response text it came from; None in files written before spans

    def __post_init__(self) -> None:
        if self.span is not None:  # JSON gives a list back
            self.span = (int(self.span[0]), int(self.span[1]))

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


_TMP_TAG = ".rlaifv-tmp-"  # temporaries of atomic writes: ".<name>.rlaifv-tmp-<16 hex>" beside the target
_OWN_TMP = re.compile(r"^\..+\.rlaifv-tmp-[0-9a-f]{16}$")


def _temporary(path: Path) -> Path:
    """A fresh temporary name beside ``path`` that only this module makes."""
    return path.with_name(f".{path.name}{_TMP_TAG}{secrets.token_hex(8)}")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary beside it + rename), mode 0666 less the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # open() applies the umask
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces ``path`` in one rename, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    tmp.mkdir(mode=0o777)  # mkdir applies the umask
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_own_temporaries(folders: Iterable[str | os.PathLike]) -> int:
    """Delete the temporaries that killed atomic writes left directly in ``folders`` (only names this module
    makes, never a folder's other files, never below them); returns how many."""
    removed = 0
    for folder in map(Path, folders):
        for p in folder.iterdir():
            if _OWN_TMP.match(p.name) and not p.is_symlink():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                removed += 1
    return removed


def _to_dict(record: Any) -> dict:
    if hasattr(record, "__dataclass_fields__"):
        d = asdict(record)
    else:
        d = dict(record)
    return {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in d.items()}


def write_jsonl(path: str | os.PathLike, records: Iterable[Any], made_with: str | None = None) -> None:
    """Write records (dataclasses or dicts) as JSON Lines, atomically, ending with an end marker (which holds
    ``made_with``, the configuration fingerprint of a run's artifact, when given)."""
    lines = [json.dumps(_to_dict(r), sort_keys=True) for r in records]
    end: dict[str, Any] = {"__end__": True, "count": len(lines)}
    if made_with is not None:
        end["made_with"] = made_with
    lines.append(json.dumps(end))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_jsonl(path: str | os.PathLike, cls: type[T] | None = None) -> list[T] | list[dict]:
    """Read a JSON Lines file written by :func:`write_jsonl`; raise ``ArtifactError`` if truncated."""
    return read_jsonl_marked(path, cls)[0]


def read_jsonl_marked(path: str | os.PathLike, cls: type[T] | None = None) -> tuple[list[T] | list[dict], dict]:
    """(records, end marker) of a JSON Lines file written by :func:`write_jsonl`; ``ArtifactError`` if truncated."""
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
        return rows, end
    names = {f.name for f in fields(cls)}
    try:
        return [cls(**{k: v for k, v in r.items() if k in names}) for r in rows], end
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
