"""The toy visual world with ground truth and the tiny LLaVA that describes it."""

from .grammar import (
    INSTRUCTIONS,
    Mention,
    attribute_question,
    describe,
    existence_question,
    noisy_caption,
    parse_description,
    parse_question,
    true_answer,
)
from .model import LABELER_SIZE, POLICY_SIZE, ToyModelConfig, build_toy_model
from .pretrain import PretrainConfig, pretrain_toy, user_prompt
from .render import render_scene
from .scenes import (
    COLOURS,
    PARTNERS,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    ToyObject,
    WorldConfig,
    evaluation_scenes,
    sample_scenes,
    training_scenes,
)
from .tokenizer import build_processor, build_tokenizer

__all__ = [
    "INSTRUCTIONS", "Mention", "attribute_question", "describe", "existence_question", "noisy_caption",
    "parse_description", "parse_question", "true_answer", "LABELER_SIZE", "POLICY_SIZE", "ToyModelConfig",
    "build_toy_model", "PretrainConfig", "pretrain_toy", "user_prompt", "render_scene", "COLOURS", "PARTNERS",
    "POSITIONS", "SHAPES", "SIZES", "Scene", "ToyObject", "WorldConfig", "evaluation_scenes", "sample_scenes",
    "training_scenes", "build_processor", "build_tokenizer",
]  # fmt: skip
