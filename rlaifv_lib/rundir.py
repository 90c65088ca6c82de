"""The run directory: one writer, a checked header, cached stages, atomic writes (RLAIF-V's iterative loop, Sec. 3.3).

A run directory holds one artifact per stage. This module decides, on verified facts, whether a stage
is done: its artifact exists, is complete, and records the configuration it was made with (a
fingerprint of the run's ``run.json``), equal to the current one. Everything is written atomically
(a temporary beside the target, then a rename), with the permissions the user's umask gives. One
process at a time writes a run directory (an OS lock on the folder itself); a finished run is read
without writing anything, so it can be shown from read-only storage.

    jsonl artifact     its end marker carries ``"made_with": <fingerprint>``
    json artifact      a top-level ``"made_with"`` key (dropped when read back)
    folder artifact    ``rlaifv_stage.json`` inside it, written last (the folder is complete once it exists)

Cleanup removes only temporaries this module names (``.<name>.rlaifv-tmp-<hex>``), and only in the
run directory itself and its ``round_<k>`` folders (and their ``dpo/``) -- never anything below a folder
the library did not lay out, e.g. ``.git/`` when the run directory is ``.``.

Under a multi-process launch (``rlaifv_lib.distributed``) rank 0 alone locks the folder and writes; every
decision whether a stage is done is rank 0's, broadcast to all, and every write ends at a barrier, after which
every rank reads the same finished file (the run directory must be on storage all nodes share). In one process
nothing of this applies.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

from . import distributed
from .errors import ArtifactError, ConfigError, RunLockedError, RunVersionError, StaleArtifactError
from .records import atomic_directory, atomic_write_text, read_json, read_jsonl_marked, remove_own_temporaries, write_jsonl

__all__ = ["RunDirectory", "fingerprint", "STAGE_RECORD"]

STAGE_RECORD = "rlaifv_stage.json"  # inside a folder artifact: what it was made with
_HELD: dict[Path, list] = {}  # run directory -> [fd, holders]: one lock per process, shared by its RunDirectory objects


def fingerprint(header: dict) -> str:
    """A short stable hash of a run header's format and configuration: what every artifact records."""
    text = json.dumps({"format": header.get("format"), "config": header.get("config")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_only_error(path: Path, e: OSError) -> ArtifactError:
    return ArtifactError(
        f"cannot write {path} ({e.strerror}): the run directory is read-only or not yours, and this step is not "
        "finished yet. Copy the run directory to writable storage and run it there."
    )


class RunDirectory:
    """A locked run directory whose header matches ``header``; reads finished stages, writes new ones.

    Args:
        path: the run directory (created if missing).
        header: what ``run.json`` must hold: ``{"format": int, "version": str, "config": dict}``.
        on_written: called with the path of each artifact right after it is complete (e.g. by tests that
            kill the process there).
        unrecorded_formats: older run formats whose files predate configuration records; such a directory is
            resumed when its intact header holds this configuration (the header vouches for its files, as it did
            then); its files that hold a record must still match. Any other format is refused.
    """

    def __init__(self, path: str | os.PathLike, header: dict, on_written: Callable[[Path], None] | None = None, unrecorded_formats: tuple[int, ...] = ()):
        self.path = Path(path).absolute()  # artifacts may be named relative to it or by their full path
        self.header = header
        self.made_with = fingerprint(header)
        self.on_written = on_written
        self.unrecorded_formats = unrecorded_formats
        self.legacy = False  # True: a run of an unrecorded format, vouched for by its header
        self.writer = distributed.is_main()  # under a multi-process launch rank 0 alone writes
        if not self.writer:
            distributed.barrier()  # rank 0 has locked the folder and written or checked the header
        self.writable = self._prepare()
        self._key = self._lock() if self.writer else None
        self._release = weakref.finalize(self, _unlock, self._key)
        try:
            self._check_or_write_header()
        except BaseException:
            self.close()
            raise
        if self.writable and self.writer:
            remove_own_temporaries(self._own_folders())  # safe: this process holds the lock, nobody else is mid-write
        if self.writer:
            distributed.barrier()

    def _own_folders(self) -> list[Path]:
        """The folders the library lays out here (the only places its temporaries can be)."""
        rounds = [d for d in self.path.glob("round_*") if d.is_dir() and d.name[6:].isdigit()]
        return [self.path, *rounds, *(d / "dpo" for d in rounds if (d / "dpo").is_dir())]

    # ----- lock and header -------------------------------------------------------------------
    def _prepare(self) -> bool:
        """Create the folder if needed; whether this process can write in it."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _read_only_error(self.path, e) from None
        return os.access(self.path, os.W_OK)

    def _lock(self) -> Path:
        """Lock the run directory itself (shared when read-only: no file is made); ``RunLockedError`` naming the holder."""
        key = self.path.resolve()
        if key in _HELD:
            _HELD[key][1] += 1
            return key
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if self.writable else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"run directory {self.path} is in use by PID {holder} (another rlaifv run writes to it). Wait for it to "
                "finish, stop it, or give this run another directory."
            ) from None
        except OSError as e:  # a file system without flock (some network mounts): run unguarded, and say so
            os.close(fd)
            warnings.warn(f"cannot lock {self.path} ({e.strerror}); make sure no other run writes to it at the same time", RuntimeWarning, stacklevel=3)
            fd = None
        _HELD[key] = [fd, 1]
        return key

    def close(self) -> None:
        """Release this object's hold on the lock (the lock goes when the last holder in the process closes)."""
        self._release()

    def _check_or_write_header(self) -> None:
        header = self.path / "run.json"
        if not header.exists() and self.writer:
            self._guard("run.json")
            atomic_write_text(header, json.dumps(self.header, indent=2, sort_keys=True) + "\n")
            self.written("run.json")
            return
        try:
            have = read_json(header)
        except ArtifactError as e:
            raise ArtifactError(f"{e} {self._header_advice()}") from None
        if not isinstance(have, dict):
            raise ArtifactError(f"{header} is not a run header (a JSON object). {self._header_advice()}")
        self.legacy = have.get("format") in self.unrecorded_formats
        if have.get("format") != self.header["format"] and not self.legacy:
            raise RunVersionError(
                f"{self.path} was written by run format {have.get('format')!r} (rlaifv_lib {have.get('version')}); "
                f"this is format {self.header['format']}. Start a new run directory."
            )
        if have.get("config") != self.header["config"]:
            raise ConfigError(
                f"{self.path} was started with a different configuration; resume it with the same settings or start "
                "a new run directory."
            )

    def _header_advice(self) -> str:
        return (
            "Delete it and run again with the run's settings: the header is rewritten, and only artifacts that record "
            "those same settings are reused (any other is reported by name). Or start a new run directory."
        )

    # ----- stages ----------------------------------------------------------------------------
    def _stale(self, path: Path, found: Any) -> StaleArtifactError:
        what = f"was made with configuration {found}" if found else "does not record the configuration it was made with"
        return StaleArtifactError(
            f"{path} {what}, not this run's ({self.made_with}, run.json): it belongs to another run. Delete it and every "
            "artifact written after it (or start a new run directory), then run again."
        )

    def _check(self, path: Path, found: Any) -> None:
        if found != self.made_with and not (found is None and self.legacy):
            raise self._stale(path, found)

    def done(self, rel: str | Path) -> bool:
        """Whether artifact ``rel`` is finished and was made with this configuration (``StaleArtifactError`` if
        it was made with another one; ``ArtifactError`` if it is not and the run directory is read-only); a folder
        counts only once its stage record is there. Rank 0 checks; every rank gets its answer."""
        return distributed.agree(self._done(rel) if self.writer else None)

    def _done(self, rel: str | Path) -> bool:
        path = self.path / rel
        if path.is_dir():
            if not (path / STAGE_RECORD).exists():
                self._guard(rel)
                return False  # unfinished (killed before its record): made again
            self._check(path, _record(path / STAGE_RECORD))
        elif path.suffix == ".jsonl" and path.exists():
            self.read_jsonl(rel)
        elif path.exists():
            self._check(path, _record(path))
        if not path.exists():
            self._guard(rel)  # read-only: say so now, before computing what could not be saved
        return path.exists()

    def written(self, rel: str | Path) -> None:
        """Report a finished artifact to ``on_written``."""
        if self.on_written is not None:
            self.on_written(self.path / rel)

    def _guard(self, rel: str | Path):
        if not self.writable:
            raise _read_only_error(self.path / rel, OSError(errno.EROFS, "read-only"))

    def read_jsonl(self, rel: str | Path, cls: type | None = None) -> list:
        """The records of a finished JSON Lines artifact made with this configuration."""
        rows, end = read_jsonl_marked(self.path / rel, cls)
        self._check(self.path / rel, end.get("made_with"))
        return rows

    def write_jsonl(self, rel: str | Path, records: list) -> None:
        """Write a JSON Lines artifact that records this configuration, then report it."""
        if self.writer:
            self._guard(rel)
            write_jsonl(self.path / rel, records, made_with=self.made_with)
        self._finished(rel)

    def jsonl(self, rel: str | Path, compute: Callable[[], list], cls: type | None = None) -> list:
        """The records of stage ``rel``: read when done, else computed (by every rank), written and read back."""
        if not distributed.agree((self.path / rel).exists() if self.writer else None):
            if self.writer:
                self._guard(rel)
            self.write_jsonl(rel, compute())
        return self.read_jsonl(rel, cls)  # checks what it was made with

    def _finished(self, rel: str | Path, report: bool = True) -> None:
        """After rank 0's write: every rank waits for it, then reports the artifact."""
        distributed.barrier()
        if report:
            self.written(rel)

    def read_json(self, rel: str | Path) -> dict:
        """A finished JSON artifact made with this configuration, without its record."""
        obj = read_json(self.path / rel)
        self._check(self.path / rel, _record_of(obj))
        return {k: v for k, v in obj.items() if k != "made_with"}

    def write_json(self, rel: str | Path, obj: dict, record: bool = True, report: bool = True) -> None:
        """Write a JSON artifact (with this configuration's record unless ``record`` is False), then report it."""
        if self.writer:
            self._guard(rel)
            atomic_write_text(self.path / rel, json.dumps({**obj, "made_with": self.made_with} if record else obj, indent=2, sort_keys=True) + "\n")
        self._finished(rel, report)

    def write_if_changed(self, rel: str | Path, obj: dict) -> None:
        """Write a JSON file (no record) unless it already holds exactly ``obj``: a finished run stays read-only."""
        path = self.path / rel
        same = False
        with contextlib.suppress(ArtifactError):
            same = self.writer and path.exists() and read_json(path) == json.loads(json.dumps(obj))
        if not distributed.agree(same):
            self.write_json(rel, obj, record=False, report=False)

    def folder(self, rel: str | Path, fill: Callable[[Path], None]) -> None:
        """Make folder artifact ``rel`` atomically with ``fill(temporary folder)`` (rank 0 only; the others wait)."""
        if self.writer:
            with self.directory(rel, report=False) as tmp:
                fill(tmp)
        self._finished(rel)

    @contextlib.contextmanager
    def directory(self, rel: str | Path, report: bool = True) -> Iterator[Path]:
        """Fill a folder artifact atomically: yields a temporary folder that gets the stage record and replaces ``rel``
        (in one process; a multi-process run uses :meth:`folder`)."""
        self._guard(rel)
        with atomic_directory(self.path / rel) as tmp:
            yield tmp
            (tmp / STAGE_RECORD).write_text(json.dumps({"made_with": self.made_with}) + "\n")
        if report:
            self.written(rel)

    def mark_done(self, rel: str | Path) -> None:
        """Record that folder ``rel``, written in place by another function, is complete; then report it."""
        if self.writer:
            self._guard(rel)
            atomic_write_text(self.path / rel / STAGE_RECORD, json.dumps({"made_with": self.made_with}) + "\n")
        self._finished(rel)


def _lock_holder(fd: int) -> str:
    """The PID holding an flock on the file behind ``fd``, from /proc/locks (Linux); "unknown" elsewhere."""
    st = os.fstat(fd)
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "unknown"
    for line in lines:
        m = re.search(r"FLOCK\s+\S+\s+\S+\s+(\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s", line)
        if m and (int(m[2], 16), int(m[3], 16), int(m[4])) == (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino):
            return m[1]
    return "unknown"


def _record_of(obj: Any) -> Any:
    return obj.get("made_with") if isinstance(obj, dict) else None


def _record(path: Path) -> Any:
    """The configuration fingerprint a JSON artifact (or folder stage record) holds; None if it holds none."""
    return _record_of(read_json(path))


def _unlock(key: Path) -> None:
    """Drop one holder of the process's lock on ``key``; the last one closes the lock file (releasing the lock)."""
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        del _HELD[key]
        if held[0] is not None:
            os.close(held[0])
