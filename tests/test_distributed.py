"""The data engine and DPO on N processes: byte-identical artifacts to 1 process, DDP training, one writer, resume.

The smoke run (``cli.SMOKE``: 8 prompts x 4 candidates, 2 DPO steps) with one round and smaller sampling and
labeler batches, so that every stage has several work units to split (4 sampling batches per round, 8 images to
score), runs once as 1 process and once under ``python -m torch.distributed.run --nproc_per_node 2`` (gloo, CPU).
The 2-process launch is first broken: rank 1 (not the writer) SIGKILLs itself right after ``pairs.jsonl`` is
finished, as DDP training is about to start, and torchrun takes the whole launch down. ``accelerate launch`` with the
shipped ``configs/accelerate/cpu_gloo.yaml`` then resumes the run and finishes it. Every data-engine artifact (prompts, candidates, claims, verdicts, scored, pairs,
pair statistics) and ``run.json`` must be the same bytes as the 1-process run's; the baseline evaluation, computed
with the same split, the same values. DPO must have run with 2 processes, and exactly one process wrote the run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlaifv_lib import distributed
from rlaifv_lib.cli import SMOKE

TESTS = Path(__file__).parent
ROOT = TESTS.parent
WORKER = TESTS / "distributed_worker.py"
ENGINE_ARTIFACTS = ["run.json", *(f"round_1/{n}" for n in ("prompts.jsonl", "candidates.jsonl", "claims.jsonl", "verdicts.jsonl", "scored.jsonl", "pairs.jsonl", "pair_stats.json"))]  # fmt: skip
TIMEOUT_S = 600


def _config() -> dict:
    cfg = json.loads(json.dumps(SMOKE))
    cfg.update(rounds=1, feedback={"batch_size": 16})
    cfg["sampling"]["batch_size"] = 8
    cfg["dpo"]["progress"] = False
    return cfg


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""  # gloo on CPU, as on a laptop
    return {**env, **extra}


def _launch(args: list[str], run_dir: Path, cfg: Path, report: Path, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *args, str(WORKER), str(run_dir), str(cfg), str(report)]
    return subprocess.run(cmd, env=_env(**env), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)


def _torchrun(port: int) -> list[str]:
    return ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port)]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_process_helpers_are_plain():
    """Outside a launch nothing is initialised: rank 0 of 1, map_shards is a loop, agree returns its value."""
    assert not distributed.launched()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.map_shards(lambda x: x * x, [3, 1, 2]) == [9, 1, 4]
    assert distributed.agree({"a": 1}) == {"a": 1} and distributed.share(5) == 5
    distributed.barrier()


def test_shard_devices_splits_a_node_evenly(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.shard_devices(8) == [1, 3, 5, 7]  # labeler-over-GPUs: 2 processes x 4 GPUs, the first = LOCAL_RANK
    assert distributed.shard_devices(9) == [1, 3, 5, 7]  # an odd GPU left over is left out
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.shard_devices(8) == [3]  # policy-per-GPU
    with pytest.raises(RuntimeError, match="at least as many GPUs"):
        distributed.shard_devices(4)


_HELPERS_UNDER_TORCHRUN = """
import json, sys
from rlaifv_lib import distributed
seen = []
out = {
    "rank": distributed.rank(), "size": distributed.world_size(),
    "five": distributed.map_shards(lambda u: (seen.append(u), u * 10)[1], list(range(5))),
    "one": distributed.map_shards(lambda u: u + 1, [7]), "none": distributed.map_shards(lambda u: u, []),
    "agreed": distributed.agree(distributed.rank() + 100), "share": distributed.share(5),
}
out["seen"] = seen
distributed.barrier()
open(sys.argv[1] + f"/rank{out['rank']}.json", "w").write(json.dumps(out))  # one file per rank: two ranks' prints can share a line
"""


@pytest.mark.slow
def test_helpers_under_two_gloo_processes(tmp_path):
    """map_shards deals units round-robin and gathers them in order (also with fewer units than ranks, or none)."""
    script = tmp_path / "helpers.py"
    script.write_text(_HELPERS_UNDER_TORCHRUN)
    cmd = [sys.executable, *_torchrun(_free_port()), str(script), str(tmp_path)]
    done = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert [(r["rank"], r["size"]) for r in results] == [(0, 2), (1, 2)]
    for r in results:
        assert r["five"] == [0, 10, 20, 30, 40] and r["one"] == [8] and r["none"] == [] and r["agreed"] == 100
    assert [r["seen"] for r in results] == [[0, 2, 4], [1, 3]] and [r["share"] for r in results] == [3, 2]


@pytest.mark.slow
def test_two_processes_match_one_then_resume_after_a_rank_is_killed(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(_config()))
    one, two = tmp_path / "one", tmp_path / "two"
    ref = _launch([], one, cfg, tmp_path / "report1")
    assert ref.returncode == 0, ref.stderr[-3000:]

    killed = _launch(_torchrun(_free_port()), two, cfg, tmp_path / "killed", RLAIFV_TEST_KILL="1:round_1/pairs.jsonl")
    assert killed.returncode != 0, "the launch went on after rank 1 was killed"
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)\s*exitcode\s*:\s*-9", killed.stderr), "rank 1 did not die by SIGKILL:\n" + killed.stderr[-3000:]
    assert (two / "round_1" / "pairs.jsonl").exists() and not (two / "round_1" / "dpo" / "rlaifv_stage.json").exists()
    assert not (tmp_path / "killed").exists(), "a process finished the run although rank 1 was killed"

    accelerate = ["-m", "accelerate.commands.launch", "--config_file", str(ROOT / "configs" / "accelerate" / "cpu_gloo.yaml"), "--main_process_port", str(_free_port())]
    resumed = _launch(accelerate, two, cfg, tmp_path / "report2")  # the shipped accelerate config, resuming torchrun's run
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    for rel in ENGINE_ARTIFACTS:
        assert (two / rel).read_bytes() == (one / rel).read_bytes(), f"{rel} differs from the 1-process run"
    base1, base2 = (json.loads((d / "round_0" / "eval.json").read_text()) for d in (one, two))
    assert {k: v for k, v in base2.items() if k != "seconds"} == {k: v for k, v in base1.items() if k != "seconds"}

    log2 = json.loads((two / "round_1" / "dpo" / "dpo_log.json").read_text())
    log1 = json.loads((one / "round_1" / "dpo" / "dpo_log.json").read_text())
    assert (log1["world_size"], log2["world_size"]) == (1, 2)
    assert log2["global_batch_size"] == 2 * log1["global_batch_size"]
    roles = sorted((json.loads(p.read_text()) for p in (tmp_path / "report2").glob("rank*.json")), key=lambda r: r["rank"])
    assert [(r["rank"], r["world_size"], r["writer"]) for r in roles] == [(0, 2, True), (1, 2, False)]
    assert (two / "round_1" / "model" / "model.safetensors").exists() and (two / "summary.json").exists()
    assert not [p for p in two.rglob("*") if ".rlaifv-tmp-" in p.name], "temporaries left behind"


@pytest.mark.parametrize("name,kind", [("cpu_gloo", "MULTI_GPU"), ("multi_gpu", "MULTI_GPU"), ("deepspeed_zero2", "DEEPSPEED"), ("deepspeed_zero3", "DEEPSPEED"), ("fsdp", "FSDP")])
def test_shipped_accelerate_configs_load(name, kind):
    """Each file under configs/accelerate is a valid accelerate config of its kind (accelerate's own loader)."""
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    assert cfg.distributed_type.value == kind and cfg.num_machines == 1 and not cfg.use_cpu
    assert (cfg.deepspeed_config or {}).get("zero_stage") == {"deepspeed_zero2": 2, "deepspeed_zero3": 3}.get(name)


def test_each_process_loads_onto_its_own_gpus(monkeypatch):
    """Under a launch on GPUs: inference models go to cuda:LOCAL_RANK, "auto" only over the process's GPUs, a
    full-precision DPO base is left to the trainer (faked GPUs: only the placement arguments are built)."""
    import torch

    from rlaifv_lib.models import LoadOptions, load_kwargs

    for key, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda g: type("P", (), {"total_memory": 80 + g})())
    fp32 = LoadOptions(dtype="float32")
    assert load_kwargs(fp32)["device_map"] == {"": 1}
    auto = load_kwargs(LoadOptions(dtype="float32", device_map="auto"))
    assert auto["device_map"] == "auto" and auto["max_memory"] == {1: 81, 3: 83}
    assert "device_map" not in load_kwargs(fp32, training=True)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert "device_map" not in load_kwargs(fp32)  # one process: as before (no device map unless asked)
