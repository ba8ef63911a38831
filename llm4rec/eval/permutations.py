"""``llm4rec evaluate --permutations N``: letter ranking under N seeded orders of each pool.

An LLM that reads index letters may prefer some letters whatever they label (position bias). Each
ranking sample is shown again with its candidates in N seeded random orders (the ranking task rewrites
its own pool lines, :func:`llm4rec.data.tasks.ranking.reorder`), every order is scored, and the report
gives each metric's mean and standard deviation over the N orders, and per letter the share of top-1
picks against the share of targets shown at that letter (equal shares: no position bias).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from llm4rec.data.tasks.ranking import letters, reorder
from llm4rec.errors import UserError
from llm4rec.eval import registry


def check(task: str, rank_method: str, n: int) -> None:
    """``--permutations`` needs letter-ranking samples; one line otherwise."""
    if n < 0:
        raise UserError(f"--permutations: must be positive, got {n}")
    if n and (task != "ranking" or rank_method != "letters"):
        what = "Yes/No samples" if task != "ranking" else "--rank-method pointwise"
        raise UserError(f"--permutations: needs ranking samples scored by index letters, not {what}")


def orders(n_rows: int, k: int, n: int, seed: int) -> list[np.ndarray]:
    """N arrays [n_rows, k]: row r of array p is sample r's order in permutation p (seeded)."""
    return [np.argsort(np.random.default_rng([seed, p]).random((n_rows, k)), axis=1) for p in range(n)]


def evaluate(
    rows: Sequence[dict[str, Any]],
    score: Callable[[list[dict[str, Any]]], torch.Tensor],
    n: int,
    seed: int,
    ks: Sequence[int],
) -> dict[str, Any]:
    """Score every sample under ``n`` orders with ``score(rows) -> [N, K]``; metric mean/sd and position bias."""
    k = len(rows[0]["candidates"])
    runs: list[dict[str, Any]] = []
    top1 = np.zeros(k)
    at_target = np.zeros(k)
    for perm in orders(len(rows), k, n, seed):
        shown = [reorder(r, o.tolist()) for r, o in zip(rows, perm)]
        scores = score(shown).float().cpu()
        target = torch.tensor([r["target_index"] for r in shown])
        runs.append(registry.ranking_metrics(scores, registry.one_hot(target, k), registry.usable_ks(ks, k)))
        top1 += np.bincount(scores.argmax(1).numpy(), minlength=k)
        at_target += np.bincount(target.numpy(), minlength=k)
    summary = {}
    for key in registry.table_metrics(runs[0]):
        values = [r[key] for r in runs if isinstance(r.get(key), float)]
        if values:
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[key] = {"mean": statistics.fmean(values), "sd": sd, "values": values}
    total = n * len(rows)
    return {
        "n": n,
        "seed": seed,
        "metrics": summary,
        "position_bias": {
            "letters": letters(k),
            "top1_share": (top1 / total).tolist(),
            "target_share": (at_target / total).tolist(),
        },
    }


def markdown(name: str, result: dict[str, Any]) -> list[str]:
    """The report.md section of one checkpoint's permutation run."""
    m = result["metrics"]
    lines = [
        "",
        f"## {name}: {result['n']} candidate orders (seed {result['seed']})",
        "",
        "| metric | mean | sd |",
        "|---|---|---|",
    ]
    lines += [f"| {key} | {v['mean']:.4f} | {v['sd']:.4f} |" for key, v in m.items()]
    bias = result["position_bias"]
    lines += ["", "| letter | share of top-1 picks | share of targets |", "|---|---|---|"]
    lines += [
        f"| {a} | {p:.3f} | {t:.3f} |"
        for a, p, t in zip(bias["letters"], bias["top1_share"], bias["target_share"])
    ]
    return lines
