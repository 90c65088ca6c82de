"""rlaifv_lib: the library behind the RLAIF-V tutorial notebooks.

One module per step of the method, in the order data flows:
toyworld -> sampling -> claims -> feedback -> pairs -> dpo -> pipeline / guidance -> hallucination.
The names below are imported lazily, so ``import rlaifv_lib`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("rlaifv-lib")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

_EXPORTS = {
    "load_model": "models", "chat_prompt": "models", "LoadOptions": "models", "PRESETS": "models",
    "SamplingConfig": "sampling", "sample_candidates": "sampling",
    "ClaimsConfig": "claims", "make_decomposer": "claims", "ToyDecomposer": "claims",
    "RuleBasedDecomposer": "claims", "LLMDecomposer": "claims",
    "FeedbackConfig": "feedback", "yes_no_probs": "feedback", "score_claims": "feedback",
    "score_candidates": "feedback",
    "PairConfig": "pairs", "build_pairs": "pairs", "to_trl_dataset": "pairs",
    "DPOSettings": "dpo", "train_dpo": "dpo", "merge_adapters": "dpo",
    "GuidanceConfig": "guidance", "score_for_guidance": "guidance", "best_of_n": "guidance",
    "RLAIFVConfig": "pipeline", "RLAIFVRun": "pipeline",
    "EvalConfig": "hallucination", "evaluate_policy": "hallucination", "chair": "hallucination",
    "ClaimInspector": "widgets", "PairInspector": "widgets",
}  # fmt: skip

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Import an exported name from its module on first use."""
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'rlaifv_lib' has no attribute {name!r}")
