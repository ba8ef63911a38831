"""Report helpers: ROC points, tables, shard assignment."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from llm4rec.eval.distributed import shard_assignment
from llm4rec.eval.report import fmt_value, roc_points, table


def test_roc_points_follow_ties_like_sklearn():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(300), 1)  # heavy ties
    labels = (rng.random(300) < 0.4).astype(int)
    fpr, tpr = roc_points(scores, labels)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    # the trapezoid area of the curve is the tie-aware AUC
    assert abs(np.trapezoid(tpr, fpr) - roc_auc_score(labels, scores)) < 1e-12
    ref_fpr, ref_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)


def test_table_and_values():
    assert (
        fmt_value(0.123456) == "0.1235"
        and fmt_value(float("nan")) == "undefined"
        and fmt_value(None) == "undefined"
    )
    text = table(["checkpoint", "auc"], [["a", 0.5], ["bb", "undefined"]])
    lines = text.splitlines()
    assert len(lines) == 4 and len({len(x) for x in lines}) == 1  # aligned columns
    md = table(["checkpoint", "auc"], [["a", 0.5]], markdown=True)
    assert md.splitlines()[2] == "| a | 0.5000 |"


def test_shards_cover_everything_once_and_keep_groups_whole():
    groups = [i // 3 for i in range(20)] + [100] * 9
    shards = shard_assignment(len(groups), 3, groups)
    flat = sorted(i for s in shards for i in s)
    assert flat == list(range(len(groups)))
    owner = {g: {r for r, s in enumerate(shards) if any(groups[i] == g for i in s)} for g in set(groups)}
    assert all(len(v) == 1 for v in owner.values())
    assert max(map(len, shards)) - min(map(len, shards)) <= 9  # the big group may tip one shard
    assert shard_assignment(5, 2) == [[0, 2, 4], [1, 3]]
