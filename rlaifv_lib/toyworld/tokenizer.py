"""Word-level tokenizer (built with ``tokenizers``) and ``LlavaProcessor`` for the toy world."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import LlavaProcessor, PreTrainedTokenizerFast
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from .grammar import vocabulary
from .render import CELL, IMAGE_SIZE

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_tokenizer", "build_processor"]

SPECIAL_TOKENS = {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>", "image": "<image>"}
_ROLE_WORDS = ["user", "assistant", "system", ":"]

# A minimal LLaVA-style template: "<s>user : <image> describe the image . assistant : ... </s>"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }} :"
    "{% if m['content'] is string %} {{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %} <image>{% elif c['type'] == 'text' %} {{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if m['role'] == 'assistant' %} {{ eos_token }}{% endif %} {% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The toy world's word-level tokenizer with its chat template (left padding, for generation)."""
    specials = list(SPECIAL_TOKENS.values())
    vocab = {t: i for i, t in enumerate(specials + _ROLE_WORDS + vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk"]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.post_processor = processors.TemplateProcessing(single="$A", special_tokens=[])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        unk_token=SPECIAL_TOKENS["unk"],
        pad_token=SPECIAL_TOKENS["pad"],
        extra_special_tokens={"image_token": SPECIAL_TOKENS["image"]},
        padding_side="left",
        model_max_length=256,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_processor(tokenizer: PreTrainedTokenizerFast | None = None) -> LlavaProcessor:
    """A ``LlavaProcessor`` for 48x48 images cut into 9 patches of 16 px (one per grid cell)."""
    tokenizer = tokenizer or build_tokenizer()
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=True,
        do_convert_rgb=True,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=CELL,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
