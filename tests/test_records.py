"""Records on disk: JSON Lines written atomically, truncation and corruption detected."""

from __future__ import annotations

import pytest

from rlaifv_lib.errors import ArtifactError
from rlaifv_lib.records import Candidate, read_json, read_jsonl, write_json, write_jsonl


def test_round_trip(tmp_path):
    recs = [Candidate("p", 1, "there is a red circle .", 0), Candidate("p", 2, "", 1)]
    write_jsonl(tmp_path / "c.jsonl", recs)
    assert read_jsonl(tmp_path / "c.jsonl", Candidate) == recs
    assert not list(tmp_path.glob("*.tmp"))


def test_truncated_file_is_never_taken_for_a_finished_one(tmp_path):
    path = tmp_path / "c.jsonl"
    write_jsonl(path, [Candidate("p", k, "x", k) for k in range(5)])
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3]) + "\n")  # cut before the end marker
    with pytest.raises(ArtifactError, match="truncated"):
        read_jsonl(path, Candidate)
    path.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_jsonl(path)


def test_json_errors_name_the_file(tmp_path):
    (tmp_path / "m.json").write_text("{")
    with pytest.raises(ArtifactError, match="m.json"):
        read_json(tmp_path / "m.json")
    write_json(tmp_path / "ok.json", {"a": 1})
    assert read_json(tmp_path / "ok.json") == {"a": 1}
