"""Subprocess entry point of the kill-and-resume tests (tests/test_resume.py); not part of the public API.

:func:`run_pipeline` runs (or resumes) an :class:`~rlaifv_lib.pipeline.RLAIFVRun` in the calling
process. The tests start it in a child process from a ``multiprocessing`` fork server that has
imported this module (and with it torch, transformers, TRL and PEFT) but run nothing, so every run
and every resume starts in a fresh process with no model, cache or random state left over from the
previous one, without paying the ~15 s import cost each time. With ``kill_after`` set, the pipeline's
``RLAIFV_KILL_AFTER`` hook SIGKILLs the child right after that artifact is written.

Also runnable by hand: ``python -m rlaifv_lib._resume_worker RUN_DIR CONFIG.json [KILL_AFTER]``, where
CONFIG.json holds the keyword arguments of ``RLAIFVConfig`` (nested configs as dicts).
"""

from __future__ import annotations

import json
import os
import sys

import torch

import peft  # noqa: F401  (preloaded in the fork server)
import trl  # noqa: F401

from .claims import ClaimsConfig
from .dpo import DPOSettings
from .feedback import FeedbackConfig
from .pairs import PairConfig
from .pipeline import KILL_AFTER_ENV, RLAIFVConfig, RLAIFVRun
from .sampling import SamplingConfig

__all__ = ["run_pipeline", "config_from_dict"]

_NESTED = {"sampling": SamplingConfig, "claims": ClaimsConfig, "feedback": FeedbackConfig, "pairs": PairConfig, "dpo": DPOSettings}


def config_from_dict(d: dict) -> RLAIFVConfig:
    """An ``RLAIFVConfig`` from its ``to_dict()`` form (nested configs as dicts)."""
    kw = dict(d)
    for name, cls in _NESTED.items():
        if isinstance(kw.get(name), dict):
            kw[name] = cls(**kw[name])
    return RLAIFVConfig(**kw)


def run_pipeline(run_dir: str, cfg: RLAIFVConfig | dict, kill_after: str | None = None, threads: int = 1) -> None:
    """Run or resume ``run_dir``; with ``kill_after``, die by SIGKILL right after that artifact is written."""
    if kill_after:
        os.environ[KILL_AFTER_ENV] = kill_after
    else:
        os.environ.pop(KILL_AFTER_ENV, None)
    torch.set_num_threads(threads)
    cfg = config_from_dict(cfg) if isinstance(cfg, dict) else cfg
    RLAIFVRun(run_dir, cfg, progress=False).run()


if __name__ == "__main__":
    run_pipeline(sys.argv[1], json.loads(open(sys.argv[2]).read()), sys.argv[3] if len(sys.argv) > 3 else None)
