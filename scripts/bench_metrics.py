"""Benchmark llm4rec's torch metrics against scikit-learn, side by side in one process.

    python scripts/bench_metrics.py            # AUC on 10^7 scores, NDCG@10 on 10^5 x 100
    python scripts/bench_metrics.py --quick    # AUC on 10^6, NDCG@10 on 10^4 x 100

Prints each contender's best time over ``--repeat`` runs, the speed-up and the max abs difference.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import ndcg_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm4rec.eval.metrics import auc, ndcg_at_k  # noqa: E402


def best_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def compare(
    name: str, ours: Callable[[], float], theirs: Callable[[], float], repeat: int, target: float
) -> bool:
    """Time both contenders, print one line, return whether the speed-up target and 1e-6 agreement hold."""
    t_ours, v_ours = best_time(ours, repeat)
    t_ref, v_ref = best_time(theirs, repeat)
    speedup = t_ref / t_ours
    diff = abs(v_ours - v_ref)
    ok = speedup >= target and diff <= 1e-6
    print(
        f"{name:<34} llm4rec {t_ours:8.3f}s   sklearn {t_ref:8.3f}s   speed-up {speedup:6.1f}x "
        f"(target {target:g}x)   max|diff| {diff:.2e}   {'OK' if ok else 'MISSED'}"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 if a target is missed."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10x smaller inputs")
    p.add_argument("--repeat", type=int, default=1, help="runs per contender; the best time is kept")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: sklearn runs on one core, so this is the like-for-like race)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    n_auc, n_queries, n_cand, k = (10**6, 10**4, 100, 10) if args.quick else (10**7, 10**5, 100, 10)
    rng = np.random.default_rng(args.seed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    # Scores rounded to 3 decimals: about 1000 distinct values, so nearly every score is tied.
    scores = np.round(rng.random(n_auc), 3)
    labels = (rng.random(n_auc) < 0.2 + 0.2 * scores).astype(np.int64)
    auc(scores[:1000], labels[:1000])  # first-call overhead (lazy torch init) is not measured
    ok = compare(
        f"AUC, {n_auc:.0e} scores",
        lambda: auc(scores, labels),
        lambda: roc_auc_score(labels, scores),
        args.repeat,
        3.0,
    )

    s2 = np.round(rng.random((n_queries, n_cand)), 2)
    rel = rng.integers(1, 4, (n_queries, n_cand)) * (rng.random((n_queries, n_cand)) < 0.05)
    ndcg_at_k(s2[:10], rel[:10], k)
    ok &= compare(
        f"NDCG@{k}, {n_queries:.0e} x {n_cand}",
        lambda: ndcg_at_k(s2, rel, k),
        lambda: ndcg_score(rel, s2, k=k),
        args.repeat,
        20.0,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
