"""Prompt templates and answer words: how an (instruction, input) pair becomes the text a backbone reads.

A template renders the prompt up to the point where the answer starts; the answer text is appended
directly (training adds the end-of-sequence text after it). Answer tokens are never hard-coded: they are
found by tokenizing ``prompt + answer`` (see :mod:`llm4rec.models.answer_tokens`).

This module holds what every family shares (TALLRec's Alpaca format and answer words); a family's own
chat formats live in its module under :mod:`llm4rec.models.families`, and
:data:`llm4rec.models.registry.TEMPLATES` lists them all by name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt format. ``text`` has ``{instruction}`` and ``{input}`` fields; ``lang`` is its language."""

    name: str
    text: str
    lang: str
    #: text appended after the answer in training (e.g. a chat turn terminator); the tokenizer's EOS
    #: token is added after it.
    answer_suffix: str = ""
    #: the template used when a sample has an empty ``input`` field
    text_no_input: str | None = None
    #: text between the prompt and the answer words (e.g. the space after ``[/INST]``); it belongs to the
    #: answer side because tokenizers merge a trailing space into the next word
    answer_prefix: str = ""

    def render(self, instruction: str, input: str = "") -> str:
        """Return the prompt text for one sample, ending exactly where the answer begins."""
        if not input and self.text_no_input is not None:
            return self.text_no_input.format(instruction=instruction)
        return self.text.format(instruction=instruction, input=input)


#: TALLRec's Alpaca prompt (the format its released LoRA weights and data were trained on).
ALPACA = PromptTemplate(
    name="alpaca",
    lang="en",
    text=(
        "Below is an instruction that describes a task, paired with an input that provides further "
        "context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    ),
    text_no_input=(
        "Below is an instruction that describes a task. Write a response that appropriately completes "
        "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
    ),
)

#: The same layout in Chinese, for Chinese-first backbones (answers 是 / 否).
ALPACA_ZH = PromptTemplate(
    name="alpaca_zh",
    lang="zh",
    text="以下是一条描述任务的指令，以及提供更多上下文的输入。请写出恰当完成该请求的回答。\n\n"
    "### 指令:\n{instruction}\n\n### 输入:\n{input}\n\n### 回答:\n",
    text_no_input="以下是一条描述任务的指令。请写出恰当完成该请求的回答。\n\n### 指令:\n{instruction}\n\n### 回答:\n",
)


def chatml(name: str, lang: str, system: str) -> PromptTemplate:
    """A ChatML template (``<|im_start|>role\n...<|im_end|>`` turns) with the given system message; the
    assistant turn is closed with ``<|im_end|>``."""
    turns = (
        "<|im_start|>system\n"
        + system
        + "<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    )
    return PromptTemplate(
        name=name,
        lang=lang,
        text=turns.format("{instruction}\n{input}"),
        text_no_input=turns.format("{instruction}"),
        answer_suffix="<|im_end|>",
    )


#: Answer words per language: (positive, negative). TALLRec trains on "Yes." / "No.".
ANSWERS: dict[str, tuple[str, str]] = {"en": ("Yes.", "No."), "zh": ("是", "否")}
