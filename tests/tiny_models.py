"""The tiny random models of the conformance tests, now in ``rlaifv_lib.tiny`` (notebook 08 uses them too).

Kept as a module of its own so that ``from tiny_models import ...`` in the tests keeps working.
"""

from rlaifv_lib.tiny import (  # noqa: F401
    ARCHITECTURES,
    CHAT_LM_TEMPLATE,
    CORPUS,
    IDEFICS3_TEMPLATE,
    LLAVA_TEMPLATE,
    QWEN_TEMPLATE,
    bpe_tokenizer,
    build_chat_lm,
    build_idefics3,
    build_llava,
    build_qwen2_5_vl,
    build_qwen2_vl,
    build_tiny,
    save_tiny,
)

__all__ = [
    "ARCHITECTURES", "CHAT_LM_TEMPLATE", "CORPUS", "IDEFICS3_TEMPLATE", "LLAVA_TEMPLATE", "QWEN_TEMPLATE",
    "bpe_tokenizer", "build_chat_lm", "build_idefics3", "build_llava", "build_qwen2_5_vl", "build_qwen2_vl",
    "build_tiny", "save_tiny",
]  # fmt: skip
