"""What a report records about its sample file: its sha256, and where ranking pools came from.

Reports of ``llm4rec evaluate`` and ``llm4rec baseline`` carry the sha256 of the sample file they
scored, so ``llm4rec compare`` can refuse to put side by side figures computed on different samples.
Ranking samples built from a retriever's candidate lists (prep's ``--candidates-file``) lose the targets
the retriever missed; prep counts them per split in the task's ``meta.json``
(``dropped_target_not_in_candidates_by_split``) and records the pool's source (``candidates_pool``).
A report on such data gives the metrics on the retained samples and over all targets, a dropped
sample counting as a miss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm4rec.eval import registry
from llm4rec.io import sha256_file


def describe(data: Path) -> dict[str, Any]:
    """``data_sha256`` and, when the task's ``meta.json`` records them, ``candidates_pool`` and the
    number of this split's targets dropped because the pool missed them (``dropped_samples``)."""
    out: dict[str, Any] = {"data_sha256": sha256_file(data)}
    meta_path = data.parent / "meta.json"
    if not meta_path.is_file():
        return out
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return out  # a report does not depend on meta.json; an unreadable one adds nothing
    pool = meta.get("candidates_pool") if isinstance(meta, dict) else None
    if isinstance(pool, dict):
        out["candidates_pool"] = pool
        by_split = meta.get("dropped_target_not_in_candidates_by_split") or {}
        split = data.stem  # test.jsonl -> test
        if pool.get("file") and split in by_split:
            out["dropped_samples"] = int(by_split[split])
    return out


def overall(metrics: dict[str, Any], n_dropped: int) -> dict[str, Any]:
    """The metrics over retained plus dropped samples, a dropped one scoring 0 (a miss).

    ``value_all = value_retained * n_retained / (n_retained + n_dropped)`` for every metric whose miss
    value is 0 (NDCG, HR, Recall, MRR); the others (mean rank, AUC) have no value for a miss and are
    left out.
    """
    n = metrics.get("n_queries")
    if not isinstance(n, int) or n + n_dropped == 0:
        return {}
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = key.partition("@")[0]
        spec = registry.METRICS.get(name)
        if spec is not None and spec.zero_on_miss and isinstance(value, float):
            out[key] = value * n / (n + n_dropped)
    out["n_queries"] = n + n_dropped
    return out
