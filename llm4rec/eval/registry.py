"""The metric registry: a metric's report name -> the function that computes it and what it needs.

Every report, table and plot reads metrics through :data:`METRICS`, so a metric has one implementation
(in :mod:`llm4rec.eval.metrics`) and one name. ``needs`` says which inputs the function takes:

- ``labels``: flat scores and 0/1 labels (``fn(scores, labels)``);
- ``groups``: flat scores, labels and a group id per sample (``fn(scores, labels, groups)``);
- ``relevance``: a [queries, candidates] score matrix and relevance of the same shape
  (``fn(scores, relevance)``, or ``fn(scores, relevance, k)`` for a metric ``at_k``).

Report keys are the name, or ``name@k`` for a metric at a cut-off. An undefined value is the string
``"undefined"`` with the reason under ``<key>_undefined_reason`` (never NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from llm4rec.eval.metrics import (
    UNDEFINED,
    UndefinedMetricError,
    auc,
    gauc,
    hit_rate_at_k,
    mean_rank,
    mrr,
    ndcg_at_k,
    recall_at_k,
)


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its report name, display title, function, inputs and direction."""

    name: str
    title: str
    fn: Callable[..., Any]
    needs: Literal["labels", "groups", "relevance"]
    at_k: bool = False
    higher_is_better: bool = True
    field: str | None = None  # the attribute of a result object holding this metric (GAUC and UAUC)
    zero_on_miss: bool = False  # a query whose target was never ranked scores 0 (retrieved pools)

    def key(self, k: int | None = None) -> str:
        """The report key: ``name`` or ``name@k``."""
        return f"{self.name}@{k}" if self.at_k else self.name


METRICS: dict[str, MetricSpec] = {
    m.name: m
    for m in (
        MetricSpec("auc", "AUC", auc, "labels"),
        MetricSpec("gauc", "GAUC", gauc, "groups", field="gauc"),
        MetricSpec("uauc", "UAUC", gauc, "groups", field="uauc"),
        MetricSpec("ndcg", "NDCG@K", ndcg_at_k, "relevance", at_k=True, zero_on_miss=True),
        MetricSpec("hr", "HR@K", hit_rate_at_k, "relevance", at_k=True, zero_on_miss=True),
        MetricSpec("recall", "Recall@K", recall_at_k, "relevance", at_k=True, zero_on_miss=True),
        MetricSpec("mrr", "MRR", mrr, "relevance", zero_on_miss=True),
        MetricSpec("mean_rank", "mean rank", mean_rank, "relevance", higher_is_better=False),
    )
}

BINARY = ("auc", "gauc", "uauc")
"""What a Yes/No (TALLRec) report shows."""
RANKING = ("ndcg", "hr", "mrr", "mean_rank")
"""What a ranking report shows (one target per query: Recall@K would repeat HR@K)."""
GROUPED_RANKING = ("ndcg", "hr", "mrr")
"""What a Yes/No report ranked within groups adds (groups without a positive count as misses)."""
COUNTS = ("n_samples", "n_queries")
"""Counts shown after the metrics in tables."""


def _undefined(out: dict[str, Any], key: str, reason: str) -> None:
    out[key] = UNDEFINED
    out[f"{key}_undefined_reason"] = reason


def binary_metrics(
    scores: Any, labels: Any, groups: Any = None, names: Sequence[str] = BINARY
) -> dict[str, Any]:
    """The ``labels``/``groups`` metrics in ``names`` as plain numbers, with counts.

    Group metrics are skipped without ``groups``; a function serving several names (GAUC and UAUC)
    runs once. Also reports ``n_samples`` and ``n_positive`` (and the users used/skipped by GAUC).
    """
    y = torch.as_tensor(labels).reshape(-1)
    out: dict[str, Any] = {"n_samples": int(y.numel()), "n_positive": int((y != 0).sum())}
    done: dict[Any, Any] = {}
    for name in names:
        spec = METRICS[name]
        if spec.needs == "groups" and groups is None:
            continue
        if spec.fn not in done:
            args = (scores, labels) if spec.needs == "labels" else (scores, labels, groups)
            try:
                done[spec.fn] = spec.fn(*args)
            except UndefinedMetricError as exc:
                done[spec.fn] = exc
        value = done[spec.fn]
        if isinstance(value, UndefinedMetricError):
            _undefined(out, name, str(value))
            continue
        if spec.field is not None:
            out["n_users_used"] = value.n_users_used
            out["n_users_skipped"] = value.n_users_skipped
            value = getattr(value, spec.field)
            if value is None:
                _undefined(
                    out,
                    name,
                    f"{spec.title} is undefined because none of the {out['n_users_skipped']} users has both "
                    "positive and negative samples",
                )
                continue
        out[name] = float(value)
    return out


def one_hot(targets: Any, n_candidates: int, device: torch.device | None = None) -> torch.Tensor:
    """[queries, n_candidates] 0/1 relevance with a single 1 per row at ``targets`` (column indices)."""
    t = torch.as_tensor(targets, device=device).reshape(-1).to(torch.int64)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_candidates):
        raise ValueError(f"target_index must lie in [0, {n_candidates})")
    rel = torch.zeros((t.numel(), n_candidates), dtype=torch.uint8, device=t.device)
    return rel.scatter_(1, t[:, None], 1)


def parse_ks(text: str) -> list[int]:
    """The sorted cut-offs of a ``--ks`` comma list; anything else is one :class:`UserError` line."""
    from llm4rec.errors import UserError

    try:
        ks = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise UserError(f"--ks: expected comma-separated integers, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise UserError(f"--ks: cut-offs must be positive integers, got {text!r}")
    return ks


def usable_ks(ks: Iterable[int], n_candidates: int) -> list[int]:
    """The cut-offs that fit ``n_candidates`` (all candidates when none does)."""
    return [k for k in ks if k <= n_candidates] or [n_candidates]


def ranking_metrics(
    scores: Any, relevance: Any, ks: Sequence[int], names: Sequence[str] = RANKING
) -> dict[str, Any]:
    """The ``relevance`` metrics in ``names`` (``at_k`` ones at every cut-off in ``ks``), plus ``n_queries``."""
    s = torch.as_tensor(scores)
    out: dict[str, Any] = {}
    for name in names:
        spec = METRICS[name]
        for k in ks if spec.at_k else [None]:
            key = spec.key(k)
            try:
                out[key] = float(spec.fn(s, relevance, k) if spec.at_k else spec.fn(s, relevance))
            except UndefinedMetricError as exc:
                _undefined(out, key, str(exc))
    out["n_queries"] = int(s.shape[0])
    return out


def at_k_curves(
    scores: Any, relevance: Any, ks: Iterable[int], names: Sequence[str] = ("ndcg", "hr")
) -> dict[str, list[float]]:
    """Each ``at_k`` metric of ``names`` at every K in ``ks`` (for the NDCG/HR@K plot)."""
    ks = list(ks)
    return {name: [float(METRICS[name].fn(scores, relevance, k)) for k in ks] for name in names}


def _key_order(key: str) -> tuple[int, int] | None:
    """Where a report key sorts in a table: (registry position, cut-off), or None if not a metric."""
    names = list(METRICS) + list(COUNTS)
    name, _, k = key.partition("@")
    if name not in names or (k and not k.isdigit()) or (bool(k) != (name in METRICS and METRICS[name].at_k)):
        return None
    return names.index(name), int(k or 0)


def table_metrics(keys: Iterable[str]) -> list[str]:
    """The metric keys among ``keys`` in table order (registry order, then cut-off), counts last."""
    found = {k for k in keys if _key_order(k) is not None}
    return sorted(found, key=_key_order)
