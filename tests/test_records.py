"""Records on disk: JSON Lines written atomically, truncation and corruption detected."""

from __future__ import annotations

import pytest

from rlaifv_lib.errors import ArtifactError
from rlaifv_lib.records import Candidate, read_json, read_jsonl, remove_own_temporaries, write_json, write_jsonl


def test_round_trip(tmp_path):
    recs = [Candidate("p", 1, "there is a red circle .", 0), Candidate("p", 2, "", 1)]
    write_jsonl(tmp_path / "c.jsonl", recs)
    assert read_jsonl(tmp_path / "c.jsonl", Candidate) == recs
    assert [p.name for p in tmp_path.iterdir()] == ["c.jsonl"]  # no temporary left


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


def test_remove_own_temporaries_removes_only_names_atomic_writes_make(tmp_path):
    write_json(tmp_path / "round_1" / "eval.json", {"chair_i": 0.1})
    stale = [tmp_path / ".summary.json.rlaifv-tmp-0123456789abcdef", tmp_path / "round_1" / ".claims.jsonl.rlaifv-tmp-fedcba9876543210"]
    for p in stale:
        p.write_text('{"half": ')  # what a SIGKILL inside atomic_write_text leaves
    (tmp_path / ".model.rlaifv-tmp-00000000000000ff").mkdir()  # a killed atomic_directory
    foreign = [tmp_path / "notes.tmp", tmp_path / ".vim.swp.tmp", tmp_path / ".x.rlaifv-tmp-short", tmp_path / "round_1" / ".cache.abc.tmp"]
    for p in foreign:
        p.write_text("not ours")
    assert remove_own_temporaries([tmp_path, tmp_path / "round_1"]) == 3
    assert not any(p.exists() for p in stale) and not (tmp_path / ".model.rlaifv-tmp-00000000000000ff").exists()
    assert all(p.read_text() == "not ours" for p in foreign)
    assert read_json(tmp_path / "round_1" / "eval.json") == {"chair_i": 0.1}
    assert remove_own_temporaries([tmp_path]) == 0
