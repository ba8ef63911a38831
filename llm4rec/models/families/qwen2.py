"""Qwen1.5 / Qwen2 / Qwen2.5: loaded by transformers as they are (no converter, no tensor map).

llm4rec's choices for them: TALLRec's Alpaca template by default, ChatML (Qwen's chat format, in English and
Chinese) as an alternative, LoRA on LLaMA's projection names, and padding with ``<|endoftext|>``.
"""

from __future__ import annotations

from typing import Any

from llm4rec.models.families.base import llama_layout_family, tiny_decoder_config
from llm4rec.models.templates import chatml

#: ChatML as Qwen1.5/Qwen2 chat models use it; the assistant turn is closed with <|im_end|>.
CHATML = chatml("chatml", "en", "You are a helpful assistant.")
#: the same in Chinese
CHATML_ZH = chatml("chatml_zh", "zh", "你是一个乐于助人的助手。")


def tiny_config(vocab_size: int) -> Any:
    """A two-layer ``Qwen2Config`` (grouped keys: two key/value heads) for ``llm4rec tiny-model``."""
    return tiny_decoder_config("Qwen2Config", vocab_size, kv_heads=2)


FAMILY = llama_layout_family(
    "qwen2",
    "Qwen1.5 / Qwen2 / Qwen2.5",
    templates=(CHATML, CHATML_ZH),
    # Qwen pads with <|endoftext|>; labels are built from lengths, never from pad ids, so the
    # end-of-text token the loss needs is kept even where pad and EOS coincide.
    pad_token_candidates=("<|endoftext|>",),
    tiny_config=tiny_config,
    tiny_tokenizer="byte_level",
    gguf_architecture="qwen2",
    packing=True,  # transformers' own decoder: packed rows via position_ids
)
