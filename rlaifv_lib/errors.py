"""The library's exceptions: one base class, one subclass per kind of problem.

Every message names what went wrong and how to fix it, so a learner who hits one in a
notebook knows what to change.
"""

from __future__ import annotations

__all__ = [
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
