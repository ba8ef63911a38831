"""Where a sample becomes tokens and a batch is made.

A sample (one JSONL row) is rendered with the backbone's template into a prompt; training appends the
answer (``output``), the template's answer suffix and EOS. The loss is taken on the answer tokens only
unless ``train_on_inputs``. Labels are built from lengths, never by comparing ids with the pad id, so a
family whose pad token equals EOS still learns to stop.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from llm4rec.models.answer_tokens import common_prefix_len, encode
from llm4rec.models.templates import PromptTemplate

IGNORE_INDEX = -100


def render_prompt(template: PromptTemplate, sample: dict[str, Any]) -> str:
    """The prompt text of a sample: its ``instruction`` and ``input`` in the backbone's template."""
    return template.render(sample.get("instruction", ""), sample.get("input", ""))


def truncate_left(ids: list[int], limit: int, keep_head: int) -> list[int]:
    """Cut ``ids`` to ``limit`` tokens by dropping tokens right after the first ``keep_head`` ones.

    Over-long prompts lose the oldest history rather than the question or the answer, and keep the tokenizer's special prefix (BOS).
    """
    if len(ids) <= limit:
        return ids
    return ids[:keep_head] + ids[len(ids) - (limit - keep_head) :]


def special_prefix_len(tokenizer: Any, ids: list[int], prefix: list[int] | None = None) -> int:
    """How many leading ids are the tokenizer's own prefix (BOS for LLaMA, ``[gMASK] sop`` for ChatGLM2/3).

    Truncation keeps them: a prompt that lost its prefix is out of distribution for the model.
    """
    prefix = encode(tokenizer, "") if prefix is None else prefix
    return len(prefix) if prefix and ids[: len(prefix)] == prefix else 0


def encode_prompt(tokenizer: Any, prompt: str, cutoff_len: int) -> list[int]:
    """Token ids of a prompt for scoring, truncated like training truncates it."""
    ids = encode(tokenizer, prompt)
    return truncate_left(ids, cutoff_len - 1, special_prefix_len(tokenizer, ids))


@dataclass
class TrainExample:
    """One tokenized training sample."""

    input_ids: list[int]
    labels: list[int]


def encode_train_example(
    tokenizer: Any,
    template: PromptTemplate,
    sample: dict[str, Any],
    cutoff_len: int,
    train_on_inputs: bool = False,
) -> TrainExample:
    """Tokenize prompt + answer + suffix + EOS and mask the prompt out of the labels."""
    prompt = render_prompt(template, sample)
    full_text = prompt + template.answer_prefix + str(sample.get("output", "")) + template.answer_suffix
    prompt_ids = encode(tokenizer, prompt)
    full_ids = encode(tokenizer, full_text)
    if tokenizer.eos_token_id is not None and (not full_ids or full_ids[-1] != tokenizer.eos_token_id):
        full_ids.append(tokenizer.eos_token_id)
    n_prompt = common_prefix_len(prompt_ids, full_ids)
    labels = list(full_ids) if train_on_inputs else [IGNORE_INDEX] * n_prompt + full_ids[n_prompt:]
    if len(full_ids) > cutoff_len:
        keep = special_prefix_len(tokenizer, full_ids)
        full_ids = truncate_left(full_ids, cutoff_len, keep)
        labels = truncate_left(labels, cutoff_len, keep)
    return TrainExample(full_ids, labels)


def collate(
    examples: Sequence[TrainExample], pad_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad a list of examples into ``input_ids`` / ``attention_mask`` / ``labels`` tensors."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        sl = slice(0, n) if padding_side == "right" else slice(width - n, width)
        ids[i, sl] = torch.tensor(e.input_ids)
        mask[i, sl] = 1
        labels[i, sl] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def length_grouped_batches(
    lengths: Sequence[int], micro_batch_size: int, seed: int, group_by_length: bool = True
) -> Iterator[list[int]]:
    """Yield micro-batches of sample indices for one epoch.

    With ``group_by_length``, indices are shuffled, cut into mega-batches of 50 micro-batches, sorted by
    length inside each mega-batch, and the micro-batches are shuffled again: little padding, still random.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        mega = micro_batch_size * 50
        chunks = [sorted(order[i : i + mega], key=lambda j: -lengths[j]) for i in range(0, len(order), mega)]
        order = [j for c in chunks for j in c]
    batches = [order[i : i + micro_batch_size] for i in range(0, len(order), micro_batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    yield from batches


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    """Optimizer steps in one epoch at effective batch ``batch_size`` (last partial step counts)."""
    return max(1, math.ceil(n_samples / batch_size))
