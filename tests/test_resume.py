"""Kill anywhere, resume: a run killed by SIGKILL in any stage resumes to the same artifacts as a run never killed.

A miniature one-round run (``tiny_config`` of test_pipeline.py, smaller still) runs in a child process and
is SIGKILLed by its ``on_written`` callback right after one artifact is written, that is while
the *next* stage is running (after run.json: during the baseline evaluation; after prompts.jsonl: during
sampling; ...; after best_of_n.json's predecessor eval.json: during best-of-N). One more case kills from
outside, by polling for pairs.jsonl and then killing while DPO trains/merges. Stale temporary files are
planted where a kill inside an atomic write would leave them. A fresh child then resumes the run, and every
final artifact is compared with an uninterrupted run of the same seed:

- byte for byte: every ``*.jsonl`` (prompts, candidates, claims, verdicts, scored, pairs), ``run.json``,
  ``pair_stats.json``, ``best_of_n.json`` and the model/adapter side files (tokenizer, chat template,
  configs, PEFT README) — deterministic content, so any difference is a resume bug;
- value for value, exact (``torch.equal``, same dtype/shape/keys): ``*.safetensors`` (merged model, LoRA
  adapters) — the comparison that matters for weights, independent of how the header is serialised (in
  practice the files are byte-identical too);
- value for value after masking what is not a result: ``eval.json`` and ``summary.json`` (the wall-clock
  ``seconds``), ``dpo/dpo_log.json`` (wall-clock ``train_runtime*``/``*_per_second`` and the absolute
  ``output_dir``/``adapter_dir``, which name the run folder) and ``dpo/adapter/adapter_config.json`` (PEFT
  stores ``target_modules`` as a Python set, written in per-process hash order: compared as a set).

Child processes come from a ``forkserver`` that has only imported the library (see
``tests/resume_worker.py``): each run is a fresh process, without paying the import time each time.
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_pipeline import tiny_config

pytestmark = pytest.mark.slow

# in the order the pipeline writes them; killing after one = killing during the stage that follows it
KILL_POINTS = [
    ("run.json", "baseline eval"),
    ("round_0/eval.json", "prompts"),
    ("round_1/prompts.jsonl", "candidates"),
    ("round_1/candidates.jsonl", "claims"),
    ("round_1/claims.jsonl", "verdicts"),
    ("round_1/verdicts.jsonl", "scored"),
    ("round_1/scored.jsonl", "pairs"),
    ("round_1/pairs.jsonl", "dpo"),
    ("round_1/dpo", "merge"),
    ("round_1/model", "eval"),
    ("round_1/eval.json", "best_of_n"),
    ("best_of_n.json", "summary"),
]
ORDER = [p for p, _ in KILL_POINTS] + ["summary.json"]
MASKED_KEYS = {"seconds", "train_runtime", "train_runtime_s", "train_samples_per_second", "train_steps_per_second", "output_dir", "adapter_dir"}
TIMEOUT_S = 300
STALE = ".rlaifv-tmp-00000000deadbeef"  # the name rlaifv_lib.records gives the temporary of an atomic write


def _config():
    return tiny_config(prompts_per_round=8, eval_scenes=6, best_of_n_prompts=2)


@pytest.fixture(scope="module")
def ctx():
    """A forkserver context whose server has imported the library (and torch, transformers, TRL, PEFT)."""
    c = multiprocessing.get_context("forkserver")
    c.set_forkserver_preload(["resume_worker"])
    return c


def _start(ctx, run_dir: Path, kill_after: str | None = None):
    from resume_worker import run_pipeline

    p = ctx.Process(target=run_pipeline, args=(str(run_dir), _config(), kill_after, 1))
    p.start()
    return p


def _finish(p) -> int:
    p.join(TIMEOUT_S)
    if p.is_alive():
        p.kill()
        p.join()
        pytest.fail(f"child run did not finish within {TIMEOUT_S}s")
    return p.exitcode


def _finished_files(run_dir: Path) -> dict[str, Path]:
    """Every finished file, by path relative to the run directory; temporaries (hidden names) left out."""
    out = {}
    for p in run_dir.rglob("*"):
        rel = p.relative_to(run_dir)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = p
    return out


def _mask(obj):
    if isinstance(obj, dict):
        out = {k: _mask(v) for k, v in obj.items() if k not in MASKED_KEYS}
        if isinstance(out.get("target_modules"), list):
            out["target_modules"] = sorted(out["target_modules"])
        return out
    if isinstance(obj, list):
        return [_mask(v) for v in obj]
    return obj


def _assert_same_artifacts(got_dir: Path, ref_dir: Path) -> None:
    got, ref = _finished_files(got_dir), _finished_files(ref_dir)
    assert sorted(got) == sorted(ref), "resumed run has other finished files than the uninterrupted run"
    for rel, ref_path in ref.items():
        path = got[rel]
        name = ref_path.name
        if name.endswith(".safetensors"):
            a, b = load_file(path), load_file(ref_path)
            assert sorted(a) == sorted(b), rel
            for key in a:
                assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), f"{rel}: tensor {key} differs"
        elif name in ("eval.json", "summary.json", "dpo_log.json", "adapter_config.json"):
            assert _mask(json.loads(path.read_text())) == _mask(json.loads(ref_path.read_text())), rel
        else:
            assert path.read_bytes() == ref_path.read_bytes(), f"{rel} differs byte for byte"


@pytest.fixture(scope="module")
def reference(ctx, tmp_path_factory):
    """An uninterrupted run of the same configuration and seed, in its own fresh process."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    assert _finish(_start(ctx, run_dir)) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"][1]["n_pairs"] > 0, "the miniature run must train, or the dpo/merge kills test nothing"
    return run_dir


def _plant_stale_temporaries(run_dir: Path, reference: Path) -> list[Path]:
    """What a kill inside an atomic write leaves: half-written hidden temporaries next to unfinished artifacts."""
    planted = []
    for rel in ORDER:
        target = run_dir / rel
        ref = reference / rel
        if target.exists() or not ref.is_file():
            continue
        tmp = target.with_name(f".{target.name}{STALE}")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        data = ref.read_bytes()
        tmp.write_bytes(data[: len(data) // 2])  # cut short: would be an ArtifactError if ever read
        planted.append(tmp)
    model = run_dir / "round_1" / "model"
    if not model.exists():  # a merge killed half-way through saving
        junk = model.with_name(f".model{STALE}")
        junk.mkdir(parents=True, exist_ok=True)
        (junk / "model.safetensors").write_bytes(b"\x00" * 100)
    return planted


def _snapshot(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {rel: (p.read_bytes(), p.stat().st_mtime_ns) for rel, p in _finished_files(run_dir).items()}


def _resume_and_check(ctx, run_dir: Path, reference: Path) -> None:
    planted = _plant_stale_temporaries(run_dir, reference)
    before = _snapshot(run_dir)
    assert _finish(_start(ctx, run_dir)) == 0, "the resumed run failed"
    after = _snapshot(run_dir)
    for rel, (data, mtime) in before.items():  # what the killed run finished is kept, not recomputed
        if rel != "summary.json":
            assert after[rel] == (data, mtime), f"{rel} was rewritten on resume"
    _assert_same_artifacts(run_dir, reference)
    for tmp in planted:  # a stale temporary is never taken for the finished file (compared above), and is removed
        assert tmp.with_name(tmp.name[1:].split(STALE)[0]).exists() and not tmp.exists()
    assert not (run_dir / "round_1" / f".model{STALE}").exists(), "a half-written merge was left behind"


@pytest.mark.parametrize("kill_after,during", KILL_POINTS, ids=[d for _, d in KILL_POINTS])
def test_kill_during_stage_then_resume_gives_identical_artifacts(ctx, reference, tmp_path, kill_after, during):
    run_dir = tmp_path / "run"
    code = _finish(_start(ctx, run_dir, kill_after))
    assert code == -signal.SIGKILL, f"the run was not killed after {kill_after} (exit code {code})"
    assert (run_dir / kill_after).exists()
    nxt = ORDER[ORDER.index(kill_after) + 1]
    assert not (run_dir / nxt).exists(), f"killed during {during}, yet {nxt} is there"
    _resume_and_check(ctx, run_dir, reference)


def test_kill_from_outside_while_training_then_resume(ctx, reference, tmp_path):
    """SIGKILL from the parent at an arbitrary moment after pairs.jsonl appears (inside DPO or the merge)."""
    run_dir = tmp_path / "run"
    p = _start(ctx, run_dir)
    deadline = time.monotonic() + TIMEOUT_S
    while not (run_dir / "round_1" / "pairs.jsonl").exists():
        assert p.is_alive() and time.monotonic() < deadline, "the run died before writing pairs.jsonl"
        time.sleep(0.01)
    time.sleep(0.5)
    p.kill()
    p.join()
    assert not (run_dir / "summary.json").exists()
    _resume_and_check(ctx, run_dir, reference)
