"""Padding-free training batches: a micro-batch's samples concatenated into one row.

A packed micro-batch is ``input_ids``, ``position_ids`` and ``labels`` of shape ``[1, N]``, ``N`` the sum of
the samples' lengths, with ``position_ids`` restarting at 0 at each sample and no ``attention_mask``. From
such position ids transformers' own decoders (``masking_utils.find_packed_sequence_indices``) build a
block-diagonal causal mask for sdpa and eager attention, and flash_attention_2 runs its varlen kernel, so a
sample attends only to itself and sees the positions it would see alone: the loss equals the padded one.
Where the decoder is not transformers' own (the converted remote-code families), the registry says
``packing=False`` and training keeps padded, length-grouped batches.

What a packed row costs depends on the attention. flash_attention_2 attends within each sample (varlen), so
a packed row is pure gain: no padding, no mask. sdpa and eager get a dense ``[N, N]`` mask and compute every
entry of it, masked or not, so a micro-batch of B samples does about B times the attention work of the
padded batch; with length-grouped batches leaving under 1% padding on TALLRec data that is a net loss
(0.46-0.96x the samples/s of padded batches in four CPU runs of ``scripts/bench_train.py``). So ``data.packing: auto`` packs only under
flash_attention_2; ``true`` packs under any attention (the loss is the same, see the tests).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llm4rec.errors import UserError

if TYPE_CHECKING:  # torch is imported where a batch is made: `llm4rec plan` resolves packing without it
    from llm4rec.data.tokenize import TrainExample


def auto_packing(family_packs: bool, attn_implementation: str) -> bool:
    """What ``data.packing: auto`` means: pack where the family allows it and the attention is varlen."""
    return bool(family_packs) and attn_implementation == "flash_attention_2"


def pack(examples: Sequence[TrainExample], varlen: bool = False) -> dict[str, Any]:
    """One ``[1, N]`` row of ``input_ids`` / ``position_ids`` / ``labels`` from ``examples``, no padding.

    Each sample's first label is dropped: the token before it is the previous sample's last, which must
    not learn to predict it (in a padded batch the first token is never a target either). ``varlen`` adds
    the sample boundaries flash_attention_2 takes (``cu_seq_lens_q/k``, ``max_length_q/k``), which it
    would otherwise find from the position ids with a host sync in every layer.
    """
    import torch

    from llm4rec.data.tokenize import IGNORE_INDEX

    ids, positions, labels = [], [], []
    for e in examples:
        n = len(e.input_ids)
        ids.extend(e.input_ids)
        positions.extend(range(n))
        labels.append(IGNORE_INDEX)
        labels.extend(e.labels[1:])
    batch: dict[str, Any] = {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "position_ids": torch.tensor([positions], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
    }
    if varlen:
        bounds = [0]
        for e in examples:
            bounds.append(bounds[-1] + len(e.input_ids))
        batch["cu_seq_lens_q"] = batch["cu_seq_lens_k"] = torch.tensor(bounds, dtype=torch.int32)
        batch["max_length_q"] = batch["max_length_k"] = max(len(e.input_ids) for e in examples)
    return batch


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]], packing: bool) -> float:
    """Share of the tokens fed to the model that are padding, over ``batches`` of sample indices."""
    real = sum(lengths[j] for b in batches for j in b)
    fed = real if packing else sum(len(b) * max(lengths[j] for j in b) for b in batches if b)
    return 1.0 - real / fed if fed else 0.0


def packs(wanted: bool | str, family: Any, attn_implementation: str) -> bool:
    """What ``data.packing`` means for ``family`` (a registry entry, None when unknown) under an attention
    implementation: ``auto`` as :func:`auto_packing` says, else the value. Training and the memory
    planner both take it from here."""
    from llm4rec.models.backbone import attention_name

    if wanted == "auto":
        return auto_packing(family is not None and family.packing, attention_name(attn_implementation))
    return bool(wanted)


def resolve_packing(recipe: Any, family: Any) -> Any:
    """The recipe with ``data.packing`` a bool (:func:`packs`); ``true`` on a family that does not support
    packed batches is a :class:`UserError` naming the key."""
    wanted = recipe.data.packing
    if wanted is True and not family.packing:
        raise UserError(
            f"data.packing: true, but family {family.name!r} does not support packed batches (its decoder "
            "is not transformers' own, which builds the per-sample attention from position ids); "
            "set data.packing: auto or false"
        )
    on = packs(wanted, family, recipe.model.attn_implementation)
    return dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, packing=on))
