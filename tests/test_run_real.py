"""``rlaifv run`` on tiny random models of real architectures, from prompt files with images made here.

The issue's acceptance run: ``rlaifv run --policy DIR --prompts prompts.jsonl --eval-prompts eval.jsonl
--rounds 2 --smoke --out runs/x`` completes for a tiny Qwen2.5-VL and a tiny LLaVA (decoder width 64), resumes
after a SIGKILL, writes per-round CHAIR from the prompts' ``objects`` to summary.json, and each round's pairs
export to the released RLAIF-V parquet schema, which ``datasets.load_dataset("parquet")`` reads with the image
column as an ``Image`` feature.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from rlaifv_lib.tiny import save_tiny

# object names the tiny models' tokenizer corpus has (rlaifv_lib.tiny.CORPUS), so random text can name them
SHAPES = {"cat": "ellipse", "table": "rectangle", "dog": "ellipse", "car": "polygon"}
COLOURS = ["red", "green", "blue", "orange"]


def make_prompt_file(folder: Path, name: str, n: int, start: int = 0) -> Path:
    """``n`` prompts over images drawn here (1-2 shapes each), with their object names, in ``folder/name``."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows, names = [], list(SHAPES)
    for i in range(start, start + n):
        objects = [names[i % 4]] + ([names[(i + 1) % 4]] if i % 2 else [])
        im = Image.new("RGB", (40 + 4 * (i % 3), 40), "white")
        draw = ImageDraw.Draw(im)
        for k, obj in enumerate(objects):
            box = (4 + 18 * k, 8, 18 + 18 * k, 22)
            if SHAPES[obj] == "polygon":
                draw.polygon([(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])], fill=COLOURS[i % 4])
            else:
                getattr(draw, SHAPES[obj])(box, fill=COLOURS[(i + k) % 4])
        im.save(folder / "images" / f"im{i}.png")
        rows.append({"id": f"p{i}", "image": f"images/im{i}.png", "instruction": "Describe the image.", "objects": objects})
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rlaifv_lib.cli", *args, "--threads", "1"]


def _kill_when(args: list[str], artifact: Path) -> int:
    """Start ``rlaifv`` and SIGKILL it as soon as ``artifact`` exists (from outside, as a user's Ctrl-\\ or OOM kill)."""
    proc = subprocess.Popen(_command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while not artifact.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen2_5_vl", "llava"])
def test_rlaifv_run_on_a_tiny_real_architecture_resumes_and_exports(tmp_path: Path, arch: str):
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    from rlaifv_lib.pipeline import RLAIFVRun, config_from_dict
    from rlaifv_lib.records import read_json
    from rlaifv_lib.rlaifv_dataset import export_rlaifv_parquet

    policy = save_tiny(arch, tmp_path / "policy", init_std=0.1, hidden=64)
    prompts = make_prompt_file(tmp_path, "prompts.jsonl", 16)
    evals = make_prompt_file(tmp_path, "eval.jsonl", 4, start=100)
    out = tmp_path / "runs" / "x"
    args = ["run", "--policy", str(policy), "--prompts", str(prompts), "--eval-prompts", str(evals), "--rounds", "2", "--smoke", "--out", str(out)]

    assert _kill_when(args, out / "round_1" / "verdicts.jsonl") == -signal.SIGKILL
    assert (out / "round_1" / "verdicts.jsonl").exists() and not (out / "summary.json").exists()
    done = subprocess.run(_command(*args), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "round 2" in done.stdout and "judge_rej" in done.stdout

    summary = read_json(out / "summary.json")
    assert len(summary["rounds"]) == 3
    for row in summary["rounds"]:
        assert row["n_responses_with_truth"] == 4  # CHAIR computed from the eval prompts' objects
        assert 0 <= row["coverage"] <= 1 and row["judge"] == str(policy)
        if row["n_responses_with_objects"] == 0:  # random text may name no object: then no rate, the count says why
            assert row["chair_i"] is None and row["chair_s_halbench"] is None
        else:
            assert 0 <= row["chair_i"] <= 1 and 0 <= row["chair_s_halbench"] <= 1
    run = RLAIFVRun(out, config_from_dict(read_json(out / "run.json")["config"]), progress=False)
    exported = 0
    for k in (1, 2):
        pairs = run.round_pairs(k)
        if not pairs:  # a round whose candidates all tie has no pairs (the policy is carried over)
            continue
        exported += 1
        path = export_rlaifv_parquet(pairs, tmp_path / f"round_{k}.parquet")
        ds = load_dataset("parquet", data_files=str(path), split="train")
        assert isinstance(ds.features["image"], ImageFeature) and len(ds) == len(pairs)
        assert ds[0]["image"].size == Image.open(pairs[0].image).size
    assert exported >= 1  # measured: both rounds of both architectures have pairs (2 and 3 for Qwen2.5-VL, 8 and 4 for LLaVA)


def test_rlaifv_eval_scores_any_model_on_a_prompt_file(tmp_path: Path):
    policy = save_tiny("llava", tmp_path / "policy", init_std=0.1, hidden=64)
    evals = make_prompt_file(tmp_path, "eval.jsonl", 4)
    done = subprocess.run(_command("eval", "--model", str(policy), "--prompts", str(evals), "--out", str(tmp_path / "m.json")), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["judge"] == str(policy) and m["n_responses"] == 4 and m["n_responses_with_truth"] == 4
    assert "judge_rejection_rate" in done.stdout and "claims_per_response" in done.stdout
    if m["n_responses_with_objects"] == 0:
        assert m["chair_i"] is None and "CHAIR is not defined" in done.stdout
