"""The training loss: next-token cross-entropy on the labelled positions only, summed, normalised once.

Two things differ from calling ``model(**batch, labels=...)``:

* **The output head runs only where a label is.** With ``train_on_inputs: false`` a TALLRec sample has a
  handful of answer tokens among ~250. A forward pre-hook on the output head hands it the hidden states of
  the labelled positions only (``[K, H]`` instead of ``[B, T, H]``), so the ``[B, T, vocab]`` logits and
  the fp32 loss tensors (1.6 GiB at LLaMA's 32k vocabulary and 8 x 512 tokens, 7 GiB at Qwen's 152k) are
  never made. The hook goes through the model's own forward, so accelerate's DDP wrapper, peft and every
  family's decoder run as usual; only the head's input changes.
* **The loss is normalised by the labelled tokens of the whole effective batch** (as torchtune does): each
  micro-batch contributes ``sum of its token losses / tokens in the effective batch``, so gradient
  accumulation over micro-batches gives the same gradient as one big batch, however the answers are spread.

A packed micro-batch (:mod:`llm4rec.train.packing`, one ``[1, N]`` row) goes through the same gather: its
labelled positions are flat indices into that row, each sample's first label dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from llm4rec.data.tokenize import IGNORE_INDEX, TrainExample


def loss_tokens(example: TrainExample) -> int:
    """Positions whose next token carries a label (the first token is never predicted)."""
    return sum(1 for x in example.labels[1:] if x != IGNORE_INDEX)


def predicted_positions(labels: torch.Tensor) -> torch.Tensor:
    """Bool mask ``[B, T]``: True at positions whose hidden state predicts a labelled next token."""
    pos = torch.zeros_like(labels, dtype=torch.bool)
    pos[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return pos


def head_inputs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat indices into ``[B * T]`` of the positions the head runs on, their target ids).

    Computed where the batch is built (CPU): found on the GPU they would cost a host sync per micro-batch.
    """
    positions = predicted_positions(labels)
    return positions.flatten().nonzero().squeeze(1), labels[:, 1:][positions[:, :-1]]


def _output_head(model: Any) -> torch.nn.Module:
    inner = model
    while not hasattr(inner, "get_output_embeddings") and hasattr(inner, "module"):
        inner = inner.module  # DDP and similar wrappers
    head = inner.get_output_embeddings()
    if head is None:
        raise TypeError(f"{type(inner).__name__} has no output head to slice")
    return head


@contextmanager
def head_on(model: Any, index: torch.Tensor) -> Iterator[None]:
    """Within the block, the model's output head sees only the hidden states at ``index`` (flat indices
    into ``[B * T]``, see :func:`head_inputs`). The logits the model returns are then ``[1, K, vocab]``."""

    def gather(_module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0]
        return (hidden.flatten(0, 1).index_select(0, index).unsqueeze(0), *args[1:])

    handle = _output_head(model).register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()


def loss_sum(model: Any, batch: dict[str, torch.Tensor], full_head: bool = False) -> torch.Tensor:
    """Sum of the next-token cross-entropies at the labelled positions of ``batch`` (fp32 scalar).

    ``batch`` holds ``input_ids``, ``attention_mask`` and ``labels`` (padded, see ``collate``) or
    ``input_ids``, ``position_ids`` and ``labels`` (one packed row, see :func:`llm4rec.train.packing.pack`),
    and, best, ``head_index`` and ``head_targets`` from :func:`head_inputs` (else they are found here, at
    the cost of a host sync).
    ``full_head`` computes the head on every position (as transformers' own loss does); the result is the
    same, only slower and larger. Padding carries no label, so it never enters the sum.
    """
    labels = batch["labels"]
    inputs: dict[str, Any] = {
        k: v for k, v in batch.items() if k not in ("labels", "head_index", "head_targets")
    }
    if "position_ids" in inputs and "attention_mask" not in inputs:
        # a packed row: transformers derives the per-sample mask from the position ids only without a cache
        inputs["use_cache"] = False
    if full_head:
        logits = model(**inputs).logits[:, :-1]
        return torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
    if "head_index" in batch:
        index, targets = batch["head_index"], batch["head_targets"]
    else:
        index, targets = head_inputs(labels)
    with head_on(model, index):
        logits = model(**inputs).logits[0]
    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")


def effective_batch_tokens(examples: Sequence[TrainExample], groups: Sequence[Sequence[int]]) -> int:
    """Labelled tokens over the micro-batches (index groups) of one optimizer step, across all processes."""
    return sum(loss_tokens(examples[j]) for g in groups for j in g)
