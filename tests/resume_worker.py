"""Subprocess entry point of the kill-and-resume tests (tests/test_resume.py).

:func:`run_pipeline` runs (or resumes) an :class:`~rlaifv_lib.pipeline.RLAIFVRun` in the calling
process. The tests start it in a child process from a ``multiprocessing`` fork server that has
imported this module (and with it torch, transformers, TRL and PEFT) but run nothing, so every run
and every resume starts in a fresh process with no model, cache or random state left over from the
previous one, without paying the ~15 s import cost each time. With ``kill_after`` set, the run's
``on_written`` callback SIGKILLs the child right after that artifact is written.

Also runnable by hand: ``python tests/resume_worker.py RUN_DIR CONFIG.json [KILL_AFTER]``, where
CONFIG.json holds the keyword arguments of ``RLAIFVConfig`` (nested configs as dicts).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

import peft  # noqa: F401  (preloaded in the fork server)
import trl  # noqa: F401

from rlaifv_lib.claims import ClaimsConfig
from rlaifv_lib.dpo import DPOSettings
from rlaifv_lib.feedback import FeedbackConfig
from rlaifv_lib.pairs import PairConfig
from rlaifv_lib.pipeline import RLAIFVConfig, RLAIFVRun
from rlaifv_lib.sampling import SamplingConfig

__all__ = ["run_pipeline", "config_from_dict", "kill_after"]

_NESTED = {"sampling": SamplingConfig, "claims": ClaimsConfig, "feedback": FeedbackConfig, "pairs": PairConfig, "dpo": DPOSettings}


def config_from_dict(d: dict) -> RLAIFVConfig:
    """An ``RLAIFVConfig`` from its ``to_dict()`` form (nested configs as dicts)."""
    kw = dict(d)
    for name, cls in _NESTED.items():
        if isinstance(kw.get(name), dict):
            kw[name] = cls(**kw[name])
    return RLAIFVConfig(**kw)


def kill_after(run_dir: str, target: str):
    """An ``on_written`` callback that SIGKILLs this process right after ``run_dir/target`` is written."""

    def on_written(path: Path) -> None:
        if Path(path).relative_to(run_dir).as_posix() == target:
            os.kill(os.getpid(), signal.SIGKILL)

    return on_written


def run_pipeline(run_dir: str, cfg: RLAIFVConfig | dict, kill_at: str | None = None, threads: int = 1) -> None:
    """Run or resume ``run_dir``; with ``kill_at``, die by SIGKILL right after that artifact is written."""
    torch.set_num_threads(threads)
    cfg = config_from_dict(cfg) if isinstance(cfg, dict) else cfg
    RLAIFVRun(run_dir, cfg, progress=False, on_written=kill_after(run_dir, kill_at) if kill_at else None).run()


if __name__ == "__main__":
    run_pipeline(sys.argv[1], json.loads(open(sys.argv[2]).read()), sys.argv[3] if len(sys.argv) > 3 else None)
