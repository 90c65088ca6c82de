"""The library's exceptions: one base class, one subclass per kind of problem.

Every message names what went wrong and how to fix it, so a learner who hits one in a
notebook knows what to change.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

__all__ = [
    "check_finite",
    "RLAIFVError",
    "ConfigError",
    "ImageError",
    "EmptyResponseError",
    "NoClaimsError",
    "NoPairsError",
    "ModelLoadError",
    "ChatTemplateError",
    "YesNoTokenError",
    "QuantizationUnavailableError",
    "ArtifactError",
    "RunVersionError",
    "StaleArtifactError",
    "RunLockedError",
    "DatasetSchemaError",
    "EmptyEvaluationError",
    "NonFiniteWeightsError",
]


class RLAIFVError(Exception):
    """Base class of every error raised by rlaifv_lib."""


class ConfigError(RLAIFVError, ValueError):
    """A configuration value is impossible (e.g. N < 2, temperature <= 0)."""


class ImageError(RLAIFVError, ValueError):
    """An image cannot be read or used."""


class EmptyResponseError(RLAIFVError, ValueError):
    """A response is empty or only whitespace."""


class NoClaimsError(RLAIFVError, ValueError):
    """A response contains no checkable claim."""


class NoPairsError(RLAIFVError, ValueError):
    """No preference pair could be built, or an empty pair set was handed to training."""


class ModelLoadError(RLAIFVError, OSError):
    """A model or processor cannot be loaded from the given name or path."""


class ChatTemplateError(RLAIFVError, ValueError):
    """The tokenizer or processor has no chat template."""


class YesNoTokenError(RLAIFVError, ValueError):
    """The labeler's tokenizer has no single token for 'yes' or for 'no'."""


class QuantizationUnavailableError(RLAIFVError, RuntimeError):
    """4-bit loading was requested but bitsandbytes cannot run here."""


class ArtifactError(RLAIFVError, ValueError):
    """A file in a run directory is malformed or truncated."""


class RunVersionError(ArtifactError):
    """A run directory was written by an incompatible version of rlaifv_lib."""


class StaleArtifactError(ArtifactError):
    """An artifact in a run directory was made with another configuration than the run's."""


class RunLockedError(RLAIFVError, RuntimeError):
    """Another process is writing the run directory."""


class DatasetSchemaError(RLAIFVError, ValueError):
    """A data file does not follow the expected schema."""


class EmptyEvaluationError(RLAIFVError, ValueError):
    """An evaluation was asked to measure nothing (no prompts, no responses): a metric over nothing has no value."""


class NonFiniteWeightsError(RLAIFVError, ValueError):
    """Training produced NaN or infinite weights; they are not saved."""


def check_finite(config: Any) -> None:
    """``ConfigError`` naming the first field of a config dataclass that holds NaN or an infinity.

    ``x <= 0`` is False for NaN, so every range check a config makes would let NaN through; each
    config's ``__post_init__`` calls this first.
    """
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{type(config).__name__}.{f.name} must be a finite number, got {value}")
