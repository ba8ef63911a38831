"""Key/value caches of shared prompt prefixes: built from past tensors, broadcast to a batch, and read-only
cache layers that hand past + new keys/values to attention without storing them (the prefix is never
copied into a per-batch cache nor written to)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def new_cache(
    config: Any,
    past: Sequence[tuple[torch.Tensor, torch.Tensor]] | None,
    keep: bool = True,
    rows: torch.Tensor | None = None,
) -> Any:
    """A cache holding ``past`` (its ``rows`` only, when given).

    ``keep=False``: the forward's new keys/values go to attention but are not stored (nothing reads them
    later), so ``past`` is read once into each layer's attention input and never copied into the cache.
    """
    if past is None:
        return DynamicCache(config=config)
    cache = DynamicCache(config=config)
    if keep or len(cache.layers) != len(past) or any(type(x) is not DynamicLayer for x in cache.layers):
        if rows is not None:
            past = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in past]
        # the cache concatenates into new tensors, so the shared prefix tensors are never written to
        return DynamicCache(ddp_cache_data=list(past), config=config)
    layers = []
    for k, v in past:
        layer = ReadOnlyLayer()
        layer.lazy_initialization(k, v)
        layer.keys, layer.values, layer.rows = k, v, rows
        layers.append(layer)
    cache.layers = layers
    return cache


class ReadOnlyLayer(DynamicLayer):
    """A cache layer whose stored keys/values never change: ``update`` returns past + new, stores nothing.

    With ``rows``, past row ``rows[i]`` serves batch row ``i``: gathered straight into the attention
    input (one copy, no intermediate tensor).
    """

    rows: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):  # type: ignore[override]
        if self.rows is None:
            return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)
        return self._gather(self.keys, key_states), self._gather(self.values, value_states)

    def _gather(self, past: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        p = past.shape[-2]
        out = new.new_empty((new.shape[0], new.shape[1], p + new.shape[2], new.shape[3]))
        torch.index_select(past, 0, self.rows, out=out[:, :, :p])
        out[:, :, p:] = new
        return out


def broadcast_kv(kv: Any, rows: int) -> Any:
    """A batch-1 cache's tensors viewed as ``rows`` rows (no copy until the cache concatenates)."""
    if kv is None:
        return None
    return [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in kv]


def cache_kv(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]
