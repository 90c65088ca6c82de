"""The tiny MLLM: a real ``LlavaForConditionalGeneration`` (CLIP vision tower + projector +
Llama decoder) built from a config small enough to train on a laptop CPU."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from ..errors import ConfigError, check_finite
from .render import CELL, IMAGE_SIZE
from .tokenizer import SPECIAL_TOKENS, build_tokenizer

__all__ = ["ToyModelConfig", "POLICY_SIZE", "LABELER_SIZE", "build_toy_model"]


@dataclass
class ToyModelConfig:
    """Sizes of the tiny LLaVA.

    Args:
        vision_hidden (int, defaults to 64): width of the CLIP vision tower.
        vision_layers (int, defaults to 2): transformer layers of the vision tower.
        text_hidden (int, defaults to 128): width of the Llama decoder.
        text_layers (int, defaults to 4): decoder layers.
        heads (int, defaults to 4): attention heads (vision and text).
        intermediate (int, defaults to 384): decoder MLP width.
        init_std (float, defaults to 0.1): std of the decoder's initial weights.
    """

    vision_hidden: int = 64
    vision_layers: int = 2
    text_hidden: int = 128
    text_layers: int = 4
    heads: int = 4
    intermediate: int = 384
    init_std: float = 0.1

    def __post_init__(self) -> None:
        check_finite(self)
        for name in ("vision_hidden", "vision_layers", "text_hidden", "text_layers", "heads", "intermediate"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.text_hidden % self.heads or self.vision_hidden % self.heads:
            raise ConfigError("text_hidden and vision_hidden must be divisible by heads")


POLICY_SIZE = ToyModelConfig()
LABELER_SIZE = ToyModelConfig(text_hidden=160, text_layers=5, intermediate=480)


def build_toy_model(size: ToyModelConfig = POLICY_SIZE) -> LlavaForConditionalGeneration:
    """A randomly initialised tiny ``LlavaForConditionalGeneration`` matching the toy tokenizer."""
    tok = build_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=size.vision_hidden,
        intermediate_size=size.vision_hidden * 2,
        num_hidden_layers=size.vision_layers,
        num_attention_heads=size.heads,
        image_size=IMAGE_SIZE,
        patch_size=CELL,
        projection_dim=size.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=size.text_hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.text_layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        max_position_embeddings=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        # A larger init than Llama's 0.02: with 0.02 the tiny decoder sits for >1000 steps on a plateau
        # where yes/no answers ignore the image (the answer needs question x image, a product of two small
        # signals at init); with 0.1 it leaves the plateau within ~150 steps.
        initializer_range=size.init_std,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids(SPECIAL_TOKENS["image"]),
        image_seq_length=(IMAGE_SIZE // CELL) ** 2,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=True,
    )
    model = LlavaForConditionalGeneration(config)
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    return model
