"""rlaifv_lib.rundir: one writer per run directory, resume decisions on verified facts, only own temporaries
removed, umask respected, finished runs readable from read-only storage."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rlaifv_lib.cli import _run_config, build_parser, main
from rlaifv_lib.errors import ArtifactError, ConfigError, RunLockedError, StaleArtifactError
from rlaifv_lib.pipeline import RLAIFVRun
from rlaifv_lib.rundir import STAGE_RECORD, RunDirectory

from test_pipeline import tiny_config

HEADER = {"format": 2, "version": "test", "config": {"seed": 0}}
METRICS = {"chair_i": 0.25, "chair_s": 0.5, "coverage": 0.75, "mean_words": 12.0, "labeler_accuracy": 0.9, "n_pairs": 3, "seconds": 1.0}
OWN_TMP = ".rlaifv-tmp-0123456789abcdef"  # the temporary name an atomic write of rlaifv_lib gives


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------- one writer


def _hold_lock(run_dir: Path, prompts: int) -> subprocess.Popen:
    """A second process that opens an RLAIFVRun on ``run_dir`` and keeps it until its stdin closes."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_pipeline import tiny_config
        from rlaifv_lib.pipeline import RLAIFVRun
        run = RLAIFVRun({str(run_dir)!r}, tiny_config(prompts_per_round={prompts}), progress=False)
        print("holding", flush=True)
        sys.stdin.read()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "holding"
    return child


@pytest.mark.parametrize("same_settings", [True, False], ids=["same settings", "other settings"])
def test_a_second_process_on_a_run_directory_is_refused_naming_the_pid(tmp_path, same_settings):
    run_dir = tmp_path / "run"
    child = _hold_lock(run_dir, 2)
    try:
        before = _files(run_dir)
        with pytest.raises(RunLockedError, match=rf"run directory {run_dir} is in use by PID {child.pid}\b.*another directory"):
            RLAIFVRun(run_dir, tiny_config(prompts_per_round=2 if same_settings else 3), progress=False)
        assert _files(run_dir) == before  # nothing written, nothing cleaned up under the other writer's feet
    finally:
        child.stdin.close()
        child.wait(60)
    run = RLAIFVRun(run_dir, tiny_config(prompts_per_round=2), progress=False)  # the lock went with the process
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.json"]  # the folder itself is locked: no lock file
    run.rd.close()


def test_objects_of_one_process_share_the_lock_and_release_it(tmp_path):
    first = RunDirectory(tmp_path / "run", HEADER)
    second = RunDirectory(tmp_path / "run", HEADER)  # a notebook re-running a cell: same process, allowed
    first.close()
    second.write_json("round_0/eval.json", METRICS)
    second.close()
    del first, second
    child = subprocess.run(
        [sys.executable, "-c", f"from rlaifv_lib.rundir import RunDirectory; RunDirectory({str(tmp_path / 'run')!r}, {HEADER!r})"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr  # released: another process may now write


# ----------------------------------------------------------------------------------------- cleanup


def test_cleanup_touches_only_the_librarys_own_temporaries_in_its_own_folders(tmp_path):
    """``--out .`` in a git checkout: hidden *.tmp files of git or an editor survive, even ones named like ours below."""
    out = tmp_path / "checkout"
    foreign = {
        ".git/objects/pack/.tmp-pack.tmp": "git's",
        ".git/.index.tmp": "git's",
        f".git/.config{OWN_TMP}": "ours by name, but in a folder the library never writes",
        "notes/.draft.md.tmp": "an editor's",
        ".notes.tmp": "an editor's",
        "round_1/.claims.jsonl.123.tmp": "an old-style or foreign name",
        f"round_x/.a{OWN_TMP}": "not a round folder",
    }
    for rel, text in foreign.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    own = [out / f".summary.json{OWN_TMP}", out / "round_1" / f".claims.jsonl{OWN_TMP}", out / "round_1" / "dpo" / f".dpo_log.json{OWN_TMP}"]
    for p in own:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text('{"half": ')
    (out / "round_1" / f".model{OWN_TMP}").mkdir()  # a merge killed half-way
    (out / "round_1" / f".model{OWN_TMP}" / "model.safetensors").write_bytes(b"\0" * 10)
    RunDirectory(out, HEADER).close()
    assert {rel: (out / rel).read_text() for rel in foreign} == foreign
    assert not any(p.exists() for p in own) and not (out / "round_1" / f".model{OWN_TMP}").exists()


def test_a_locked_out_process_removes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    child = _hold_lock(run_dir, 2)
    try:
        in_flight = run_dir / f".prompts.jsonl{OWN_TMP}"  # the holder's atomic write, mid-way
        in_flight.write_text("{")
        with pytest.raises(RunLockedError):
            RunDirectory(run_dir, HEADER)
        assert in_flight.exists()
    finally:
        child.stdin.close()
        child.wait(60)


# ----------------------------------------------------------------------------------------- verified resume


def test_every_artifact_kind_records_its_configuration(tmp_path):
    rd = RunDirectory(tmp_path / "run", HEADER)
    rd.write_jsonl("round_1/prompts.jsonl", [{"id": "a"}])
    rd.write_json("round_1/eval.json", METRICS)
    with rd.directory("round_1/model") as tmp:
        (tmp / "config.json").write_text("{}")
    (tmp_path / "run" / "round_1" / "dpo").mkdir()
    assert not rd.done("round_1/dpo")  # a folder without its record is unfinished: made again
    rd.mark_done("round_1/dpo")
    for rel in ("round_1/prompts.jsonl", "round_1/eval.json", "round_1/model", "round_1/dpo"):
        assert rd.done(rel), rel
    assert rd.read_json("round_1/eval.json") == METRICS  # the record is not a metric
    assert json.loads((tmp_path / "run" / "round_1" / "model" / STAGE_RECORD).read_text())["made_with"] == rd.made_with
    rd.close()

    other = RunDirectory(tmp_path / "other", {**HEADER, "config": {"seed": 1}})
    for rel in ("round_1/prompts.jsonl", "round_1/eval.json", "round_1/model", "round_1/dpo"):
        src, dst = tmp_path / "run" / rel, tmp_path / "other" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)  # an artifact of another run
        with pytest.raises(StaleArtifactError, match=rf"{dst} was made with configuration {rd.made_with}.*Delete it"):
            other.done(rel)
    other.close()


def test_damaged_header_advice_followed_literally_never_mixes_runs(tmp_path):
    run_dir = tmp_path / "run"
    cfg_a, cfg_b = tiny_config(prompts_per_round=2, seed=0), tiny_config(prompts_per_round=2, seed=1)
    run = RLAIFVRun(run_dir, cfg_a, progress=False)
    prompts_a = run._prompts(1)
    run.rd.write_json("round_0/eval.json", METRICS)
    run.rd.close()
    del run
    (run_dir / "run.json").write_text('{"format": 2, "config": {"rounds"')  # damaged
    with pytest.raises(ArtifactError, match=r"run\.json is not valid JSON.*Delete it and run again with the run's settings") as err:
        RLAIFVRun(run_dir, cfg_b, progress=False)
    assert "only artifacts that record those same settings are reused" in str(err.value)

    (run_dir / "run.json").unlink()  # the advice, followed literally ...
    run_b = RLAIFVRun(run_dir, cfg_b, progress=False)  # ... by a run with other settings
    with pytest.raises(StaleArtifactError, match=r"round_0/eval\.json was made with configuration .*another run") as err:
        run_b.baseline()
    with pytest.raises(StaleArtifactError, match=r"round_1/prompts\.jsonl was made with configuration"):
        run_b._prompts(1)
    for rel in ("round_0/eval.json", "round_1/prompts.jsonl"):  # that error's advice, followed literally
        (run_dir / rel).unlink()
    prompts_b = run_b._prompts(1)
    assert [p.id for p in prompts_b] != [p.id for p in prompts_a]  # made with B's seed, not A's file
    run_b.rd.close()
    del run_b
    fresh = RLAIFVRun(tmp_path / "fresh", cfg_b, progress=False)
    assert (tmp_path / "fresh" / "round_1" / "prompts.jsonl").exists() is False
    fresh._prompts(1)
    assert (run_dir / "round_1" / "prompts.jsonl").read_bytes() == (tmp_path / "fresh" / "round_1" / "prompts.jsonl").read_bytes()


def test_on_written_is_called_after_each_artifact(tmp_path):
    seen: list[Path] = []
    run = RLAIFVRun(tmp_path / "run", tiny_config(prompts_per_round=2), progress=False, on_written=seen.append)
    run._prompts(1)
    run.rd.write_json(run.round_dir(0) / "eval.json", METRICS)
    assert [p.relative_to(tmp_path / "run").as_posix() for p in seen] == ["run.json", "round_1/prompts.jsonl", "round_0/eval.json"]
    assert all(p.exists() for p in seen)


# ----------------------------------------------------------------------------------------- permissions


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_artifacts_get_the_permissions_the_umask_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        rd = RunDirectory(tmp_path / "run", HEADER)
        rd.write_jsonl("round_1/prompts.jsonl", [{"id": "a"}])
        with rd.directory("round_1/model") as tmp:
            (tmp / "config.json").write_text("{}")
        rd.close()
    finally:
        os.umask(old)
    for rel in ("run.json", "round_1/prompts.jsonl", "round_1/model/" + STAGE_RECORD):
        assert stat.S_IMODE((tmp_path / "run" / rel).stat().st_mode) == 0o666 & ~umask, rel
    assert stat.S_IMODE((tmp_path / "run" / "round_1" / "model").stat().st_mode) == 0o777 & ~umask


@contextlib.contextmanager
def _read_only(folder: Path):
    """``folder`` made read-only for this process: a read-only bind mount as root, else chmod."""
    if os.geteuid() == 0:
        view = folder.with_name(folder.name + "-ro")
        view.mkdir()
        if subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(view)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a read-only view here (root without mount rights)")
        try:
            yield view
        finally:
            subprocess.run(["umount", str(view)], check=True)
    else:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            yield folder
        finally:
            for p, mode in modes.items():
                p.chmod(mode)


def _finished_smoke_run(run_dir: Path) -> None:
    """The artifacts of a finished ``rlaifv demo --smoke --rounds 1`` (metrics made up: nothing is trained)."""
    args = build_parser().parse_args(["demo", "--smoke", "--rounds", "1", "--out", str(run_dir)])
    run = RLAIFVRun(run_dir, _run_config(args), progress=False)
    for k in (0, 1):
        run.rd.write_json(run.round_dir(k) / "eval.json", METRICS)
    best = {"n": 2, "prompts": 4, **{f"{p}{k}": 0.5 for p in ("", "random_", "loglik_") for k in ("chair_i", "chair_s", "coverage", "mean_words")}}
    run.rd.write_json(run_dir / "best_of_n.json", best)
    run.run()
    run.rd.close()


def test_a_finished_run_is_shown_from_read_only_storage(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _finished_smoke_run(run_dir)
    before = {rel: (run_dir / rel).stat().st_mtime_ns for rel in _files(run_dir)}
    with _read_only(run_dir) as view:
        assert main(["demo", "--smoke", "--rounds", "1", "--out", str(view), "--threads", "1"]) == 0
        out = capsys.readouterr().out
        assert "round 1" in out and "0.250" in out and "best-of-2" in out and "is read-only" in out
    assert {rel: (run_dir / rel).stat().st_mtime_ns for rel in _files(run_dir)} == before  # summary.json not rewritten


def test_an_unfinished_run_on_read_only_storage_says_to_copy_it(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _finished_smoke_run(run_dir)
    (run_dir / "best_of_n.json").unlink()
    with _read_only(run_dir) as view:
        assert main(["demo", "--smoke", "--rounds", "1", "--out", str(view), "--threads", "1"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1
    err = err.strip().splitlines()[-1]
    assert "best_of_n.json" in err and "read-only" in err and "Copy the run directory to writable storage" in err


def test_summary_json_is_rewritten_only_when_it_changes(tmp_path):
    run_dir = tmp_path / "run"
    _finished_smoke_run(run_dir)
    summary = run_dir / "summary.json"
    summary.write_text(summary.read_text().replace("0.25", "0.99"))  # stale: it must be brought back in line
    _finished_smoke_run(run_dir)
    assert json.loads(summary.read_text())["rounds"][0]["chair_i"] == 0.25



def test_a_format_1_run_is_still_resumed_when_its_intact_header_holds_the_same_settings(tmp_path):
    """Runs written before artifacts carried records (notebooks' earlier runs): the header vouches for them, as then."""
    from rlaifv_lib.records import write_json, write_jsonl

    cfg = tiny_config(prompts_per_round=2)
    run_dir = tmp_path / "old"
    write_json(run_dir / "run.json", {"format": 1, "version": "0.9", "config": cfg.to_dict()})
    write_json(run_dir / "round_0" / "eval.json", METRICS)
    write_jsonl(run_dir / "round_1" / "prompts.jsonl", [{"id": "s0", "instruction": "describe the image .", "truth": [], "seed": 0}])
    run = RLAIFVRun(run_dir, cfg, progress=False)
    assert run.baseline() == METRICS and [p.id for p in run._prompts(1)] == ["s0"]
    run.rd.write_json(run.round_dir(1) / "eval.json", METRICS)  # what it writes now carries the record
    assert json.loads((run_dir / "round_1" / "eval.json").read_text())["made_with"] == run.rd.made_with
    assert json.loads((run_dir / "run.json").read_text())["format"] == 1
    run.rd.close()
    del run
    with pytest.raises(ConfigError, match="different configuration"):
        RLAIFVRun(run_dir, tiny_config(prompts_per_round=3), progress=False)
    (run_dir / "run.json").unlink()  # without the header nothing vouches for the old files
    run = RLAIFVRun(run_dir, cfg, progress=False)
    with pytest.raises(StaleArtifactError, match=r"eval\.json does not record the configuration it was made with"):
        run.baseline()
