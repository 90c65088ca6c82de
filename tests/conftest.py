"""Shared fixtures: tiny randomly initialised toy models and the committed checkpoints."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(int(os.environ.get("RLAIFV_TEST_THREADS", "2")))

TINY = dict(vision_hidden=32, vision_layers=1, text_hidden=32, text_layers=1, heads=2, intermediate=64)


@pytest.fixture(scope="session")
def tiny_toy():
    """(model, processor): a randomly initialised, very small toy LLaVA."""
    from rlaifv_lib.toyworld import ToyModelConfig, build_processor, build_toy_model

    torch.manual_seed(0)
    model = build_toy_model(ToyModelConfig(**TINY)).eval()
    return model, build_processor()


@pytest.fixture(scope="session")
def toy_policy():
    """(model, processor): the committed toy policy."""
    from rlaifv_lib.models import load_model

    return load_model("toy-policy")


@pytest.fixture(scope="session")
def toy_labeler():
    """(model, processor): the committed toy labeler."""
    from rlaifv_lib.models import load_model

    return load_model("toy-labeler")
