"""Sharding samples across processes (``accelerate launch``) and gathering scores back in the original order.

Every process computes the same deterministic assignment, so shard sizes never have to be exchanged:
one ``all_gather`` of equally padded score tensors per scoring call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def world() -> tuple[int, int]:
    """(rank, number of processes) of the initialised process group, (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_assignment(n: int, world_size: int, groups: Sequence[Any] | None = None) -> list[list[int]]:
    """Indices each rank scores: round-robin over samples, or over whole groups (a group never splits,
    so its shared prefix is still computed once)."""
    if groups is None:
        return [list(range(r, n, world_size)) for r in range(world_size)]
    order: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        order.setdefault(g, []).append(i)
    shards: list[list[int]] = [[] for _ in range(world_size)]
    loads = [0] * world_size
    # largest groups first onto the least loaded rank keeps the shards balanced
    for members in sorted(order.values(), key=len, reverse=True):
        r = loads.index(min(loads))
        shards[r].extend(members)
        loads[r] += len(members)
    return [sorted(s) for s in shards]


def gather_in_order(local: torch.Tensor, shards: list[list[int]], n: int) -> torch.Tensor:
    """Gather every rank's ``local`` rows (this rank's shard, in shard order) into an [n, ...] tensor."""
    import torch.distributed as dist

    rank, size = world()
    width = max(len(s) for s in shards)
    padded = local.new_zeros((width, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded.contiguous())
    out = local.new_empty((n, *local.shape[1:]))
    for r, idx in enumerate(shards):
        if idx:
            out[torch.tensor(idx, device=local.device)] = parts[r][: len(idx)]
    return out
