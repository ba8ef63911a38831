"""The metric registry: one function per name, table order, report values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import ndcg_score, roc_auc_score

from llm4rec.eval import metrics
from llm4rec.eval.registry import (
    METRICS,
    at_k_curves,
    binary_metrics,
    one_hot,
    ranking_metrics,
    table_metrics,
)


def test_every_metric_is_a_documented_function_of_the_metrics_module():
    for spec in METRICS.values():
        assert getattr(metrics, spec.fn.__name__) is spec.fn
        assert "=" in spec.fn.__doc__, f"{spec.name}: the docstring should state the formula"


def test_table_order_follows_the_registry_and_cut_offs():
    keys = [
        "n_queries",
        "mrr",
        "hr@10",
        "ndcg@10",
        "hr@5",
        "ndcg@5",
        "auc",
        "mean_rank",
        "auc_undefined_reason",
    ]
    assert table_metrics(keys) == [
        "auc",
        "ndcg@5",
        "ndcg@10",
        "hr@5",
        "hr@10",
        "mrr",
        "mean_rank",
        "n_queries",
    ]
    assert table_metrics(["ndcg", "auc@3", "hr@x"]) == []  # malformed keys are not metrics


def test_reports_agree_with_sklearn():
    rng = np.random.default_rng(0)
    s = np.round(rng.random(200), 1)
    y = rng.integers(0, 2, 200)
    out = binary_metrics(s, y, groups=rng.integers(0, 10, 200))
    assert out["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert out["n_samples"] == 200 and out["n_positive"] == int(y.sum())
    assert "gauc" not in binary_metrics(s, y)  # group metrics need groups
    scores = np.round(rng.random((30, 8)), 1)
    target = rng.integers(0, 8, 30)
    rel = one_hot(target, 8)
    curves = at_k_curves(scores, rel, [1, 3, 8])
    ref = [ndcg_score(rel.numpy(), scores, k=k) for k in (1, 3, 8)]
    assert curves["ndcg"] == pytest.approx(ref, abs=1e-9)
    assert ranking_metrics(scores, rel, [3])["ndcg@3"] == pytest.approx(ref[1], abs=1e-9)
