"""Qwen1.5 / Qwen2 / Qwen2.5: loaded by transformers as they are (no converter, no tensor map).

llm4rec's choices for them: TALLRec's Alpaca template by default, ChatML (Qwen's chat format, in English and
Chinese) as an alternative, LoRA on LLaMA's projection names, and padding with ``<|endoftext|>``.
"""

from __future__ import annotations

from typing import Any

from llm4rec.models.families.base import (
    ALPACA_TEMPLATES,
    LLAMA_TARGETS,
    BackboneFamily,
    tiny_decoder_config,
)
from llm4rec.models.templates import PromptTemplate

#: ChatML as Qwen1.5/Qwen2 chat models use it; the assistant turn is closed with <|im_end|>.
CHATML = PromptTemplate(
    name="chatml",
    lang="en",
    text="<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n{instruction}\n{input}<|im_end|>\n<|im_start|>assistant\n",
    text_no_input="<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n",
    answer_suffix="<|im_end|>",
)

CHATML_ZH = PromptTemplate(
    name="chatml_zh",
    lang="zh",
    text="<|im_start|>system\n你是一个乐于助人的助手。<|im_end|>\n"
    "<|im_start|>user\n{instruction}\n{input}<|im_end|>\n<|im_start|>assistant\n",
    text_no_input="<|im_start|>system\n你是一个乐于助人的助手。<|im_end|>\n"
    "<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n",
    answer_suffix="<|im_end|>",
)


def tiny_config(vocab_size: int) -> Any:
    """A two-layer ``Qwen2Config`` (grouped keys: two key/value heads) for ``llm4rec tiny-model``."""
    return tiny_decoder_config("Qwen2Config", vocab_size, kv_heads=2)


FAMILY = BackboneFamily(
    name="qwen2",
    model_types=("qwen2",),
    description="Qwen1.5 / Qwen2 / Qwen2.5",
    lora_targets=LLAMA_TARGETS,
    default_template=ALPACA_TEMPLATES,
    templates=(CHATML, CHATML_ZH),
    # Qwen pads with <|endoftext|>; labels are built from lengths, never from pad ids, so the
    # end-of-text token the loss needs is kept even where pad and EOS coincide.
    pad_token_candidates=("<|endoftext|>",),
    tiny_config=tiny_config,
    tiny_tokenizer="byte_level",
    gguf_architecture="qwen2",
)
