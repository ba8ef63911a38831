"""Metrics against sklearn, pytrec_eval, brute-force tie enumeration and hand-computed cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score, roc_auc_score

from llm4rec.eval.metrics import (
    GAUCResult,
    UndefinedMetricError,
    _mann_whitney_2u,
    auc,
    gauc,
    hit_rate_at_k,
    mean_rank,
    mrr,
    ndcg_at_k,
    rank_of_target,
    recall_at_k,
    valid_answer_ratio,
)
from llm4rec.eval.registry import binary_metrics, one_hot, ranking_metrics

# ----------------------------------------------------------------------------------------------- AUC


def test_auc_hand_computed():
    # Pairs (pos, neg): (0.35, 0.1) win, (0.35, 0.4) loss, (0.8, *) two wins -> 3 of 4.
    assert auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # Positive tied with one negative (1/2) and above the other (1) -> 1.5 of 2.
    assert auc([1.0, 1.0, 0.0], [1, 0, 0]) == pytest.approx(0.75)
    # Every score equal: every pair is a tie.
    assert auc([3, 3, 3, 3], [1, 0, 1, 0]) == pytest.approx(0.5)


@pytest.mark.parametrize("n", [2, 7, 100, 5000])
def test_auc_matches_sklearn_with_heavy_ties(n):
    rng = np.random.default_rng(n)
    for _ in range(5):
        scores = np.round(rng.random(n), 1)
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        # Same through torch float32 and bool labels.
        got = auc(torch.tensor(scores, dtype=torch.float32), torch.tensor(labels, dtype=torch.bool))
        assert got == pytest.approx(roc_auc_score(labels, scores.astype(np.float32)), abs=1e-12)


def test_auc_accelerator_path_matches_sklearn():
    # CUDA tensors take the sync-free sort-and-segment path; run it on CPU directly and through bf16
    # scores, which numpy cannot sort and therefore also take it.
    rng = np.random.default_rng(2)
    scores = np.round(rng.random(3000), 1)
    labels = rng.integers(0, 2, 3000)
    u2, p, n, nan = _mann_whitney_2u(torch.from_numpy(scores), torch.from_numpy(labels).bool())
    assert not nan
    assert u2.item() / (2 * p.item() * n.item()) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    bf = torch.from_numpy(rng.normal(size=3000)).bfloat16()
    assert auc(bf, labels) == pytest.approx(roc_auc_score(labels, bf.double().numpy()), abs=1e-12)


def test_auc_integer_scores_and_lists():
    rng = np.random.default_rng(3)
    scores = rng.integers(-3, 4, 400)
    labels = rng.integers(0, 2, 400)
    assert auc(scores.tolist(), labels.tolist()) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_symmetry_properties():
    rng = np.random.default_rng(4)
    s = np.round(rng.normal(size=2000), 1)
    y = rng.integers(0, 2, 2000)
    a = auc(s, y)
    assert 0.0 < a < 1.0
    assert auc(-s, y) == pytest.approx(1 - a, abs=1e-12)
    assert auc(s, 1 - y) == pytest.approx(1 - a, abs=1e-12)
    # Strictly increasing transforms keep ties and order, hence the AUC.
    assert auc(np.exp(s), y) == pytest.approx(a, abs=1e-12)
    perm = rng.permutation(2000)
    assert auc(s[perm], y[perm]) == pytest.approx(a, abs=1e-12)


def test_auc_single_class_is_undefined_not_nan():
    with pytest.raises(UndefinedMetricError, match="all 3 labels are 1"):
        auc([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(ValueError, match="all 2 labels are 0"):
        auc([0.1, 0.2], [0, 0])


def test_auc_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        auc([0.1, float("nan"), 0.3], [0, 1, 1])
    with pytest.raises(ValueError, match="0/1"):
        auc([0.1, 0.2, 0.3], [0, 2, 1])
    with pytest.raises(ValueError, match="differ in length"):
        auc([0.1, 0.2], [0, 1, 1])


# ----------------------------------------------------------------------------------------------- GAUC


def _gauc_loop(s, y, g):
    """Reference: one sklearn AUC per user."""
    aucs, weights, skipped = [], [], 0
    for u in np.unique(g):
        m = g == u
        if len(np.unique(y[m])) < 2:
            skipped += 1
            continue
        aucs.append(roc_auc_score(y[m], s[m]))
        weights.append(m.sum())
    return np.average(aucs, weights=weights), np.mean(aucs), len(aucs), skipped


def test_gauc_matches_per_user_sklearn():
    rng = np.random.default_rng(5)
    n = 3000
    s = np.round(rng.random(n), 1)
    g = rng.integers(0, 100, n)
    y = (rng.random(n) < 0.3 + 0.4 * (g % 2)).astype(int)
    y[g < 10] = 1  # some single-class users
    ref_g, ref_u, used, skipped = _gauc_loop(s, y, g)
    assert skipped >= 10
    res = gauc(s, y, g)
    assert res.gauc == pytest.approx(ref_g, abs=1e-12)
    assert res.uauc == pytest.approx(ref_u, abs=1e-12)
    assert (res.n_users_used, res.n_users_skipped) == (used, skipped)
    # String user ids, shuffled rows and torch input give the same result.
    perm = rng.permutation(n)
    names = np.array([f"user{u}" for u in g])
    res2 = gauc(torch.from_numpy(s[perm]), torch.from_numpy(y[perm]), names[perm].tolist())
    assert res2.gauc == pytest.approx(ref_g, abs=1e-12)
    assert res2.uauc == pytest.approx(ref_u, abs=1e-12)


def test_gauc_hand_computed():
    # user a: AUC 1 (3 samples); user b: AUC 0.5 by a tie (2 samples); user c: one class, skipped.
    s = [0.9, 0.1, 0.2, 0.5, 0.5, 0.3]
    y = [1, 0, 0, 1, 0, 1]
    g = ["a", "a", "a", "b", "b", "c"]
    res = gauc(s, y, g)
    assert res.gauc == pytest.approx((3 * 1.0 + 2 * 0.5) / 5)
    assert res.uauc == pytest.approx(0.75)
    assert (res.n_users_used, res.n_users_skipped) == (2, 1)


def test_gauc_undefined_when_no_user_has_both_classes():
    assert gauc([0.1, 0.2, 0.3], [1, 0, 1], [0, 1, 2]) == GAUCResult(None, None, 0, 3)


# ----------------------------------------------------------------------------------------------- NDCG


def test_ndcg_hand_computed():
    # k=1: the top two candidates tie, so the first slot holds their mean gain (0 + 1) / 2.
    assert ndcg_at_k([[0.5, 0.5, 0.1]], [[0, 1, 0]], k=1) == pytest.approx(0.5)
    # Graded, no ties: ranking c(0), a(3), b(2); DCG = 3/log2(3) + 2/2, IDCG = 3 + 2/log2(3).
    expected = (3 / math.log2(3) + 1) / (3 + 2 / math.log2(3))
    assert ndcg_at_k([[0.5, 0.2, 0.9]], [[3, 2, 0]], k=3) == pytest.approx(expected)


@pytest.mark.parametrize("k", [1, 3, 10, 25, 40])
def test_ndcg_matches_sklearn_with_ties_graded_and_empty_rows(k):
    rng = np.random.default_rng(k)
    q, c = 300, 25
    scores = np.round(rng.random((q, c)), 1)
    rel = rng.integers(0, 4, (q, c)) * (rng.random((q, c)) < 0.3)
    rel[:10] = 0  # all-zero rows count as 0
    ref = ndcg_score(rel, scores, k=k)
    assert ndcg_at_k(scores, rel, k) == pytest.approx(ref, abs=1e-9)
    binary = (rel > 0).astype(int)
    assert ndcg_at_k(torch.from_numpy(scores), binary, k) == pytest.approx(
        ndcg_score(binary, scores, k=k), abs=1e-9
    )


def test_ndcg_float32_and_integer_scores():
    rng = np.random.default_rng(7)
    s32 = rng.random((50, 12)).astype(np.float32).round(1)
    rel = rng.integers(0, 3, (50, 12))
    assert ndcg_at_k(torch.from_numpy(s32), rel, 5) == pytest.approx(ndcg_score(rel, s32, k=5), abs=1e-9)
    si = rng.integers(0, 4, (50, 12))
    assert ndcg_at_k(si, rel, 5) == pytest.approx(ndcg_score(rel, si, k=5), abs=1e-9)


def test_ndcg_rejects_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        ndcg_at_k([[0.1, 0.2]], [[1, -1]], 1)
    with pytest.raises(ValueError, match="2-D"):
        ndcg_at_k([0.1, 0.2], [1, 0], 1)
    with pytest.raises(ValueError, match="positive integer"):
        ndcg_at_k([[0.1, 0.2]], [[1, 0]], 0)


# ----------------------------------------------------------------------------------------------- HR / Recall / MRR


def _strict_metrics(order, rel_bin, k):
    """HR@k, recall@k, RR, RR@k of one query under a strict ranking ``order`` (candidate indices)."""
    ranked = rel_bin[order]
    hits = np.flatnonzero(ranked)
    hr = float(ranked[:k].any())
    recall = ranked[:k].sum() / ranked.sum() if ranked.sum() else float("nan")
    rr = 1.0 / (hits[0] + 1) if len(hits) else 0.0
    rr_k = rr if len(hits) and hits[0] < k else 0.0
    rank = hits[0] + 1.0 if len(hits) else float("nan")
    return hr, recall, rr, rr_k, rank


@pytest.mark.parametrize("k", [1, 2, 4, 9])
def test_tie_handling_is_expectation_over_random_tie_breaking(k):
    # Brute force: average the strict metrics over every order of the candidates used as tie-breaker.
    rng = np.random.default_rng(10 + k)
    q, c = 12, 6
    scores = rng.integers(0, 3, (q, c)).astype(float)  # heavy ties
    rel = (rng.random((q, c)) < 0.35).astype(int)
    rel[0] = 0
    rel[1] = [1, 0, 0, 0, 0, 0]
    scores[1] = 1.0  # one relevant among six all tied
    expected = np.zeros((q, 5))
    perms = list(itertools.permutations(range(c)))
    for i in range(q):
        for prio in perms:
            order = sorted(range(c), key=lambda j: (-scores[i, j], prio[j]))
            expected[i] += _strict_metrics(np.array(order), rel[i], k)
        expected[i] /= len(perms)
    has = rel.sum(1) > 0
    assert hit_rate_at_k(scores, rel, k) == pytest.approx(expected[:, 0].mean(), abs=1e-12)
    assert recall_at_k(scores, rel, k) == pytest.approx(expected[has, 1].mean(), abs=1e-12)
    assert mrr(scores, rel) == pytest.approx(expected[:, 2].mean(), abs=1e-12)
    assert mrr(scores, rel, k=k) == pytest.approx(expected[:, 3].mean(), abs=1e-12)
    assert mean_rank(scores, rel) == pytest.approx(expected[has, 4].mean(), abs=1e-12)


def test_ranking_metrics_hand_computed():
    scores = [[0.9, 0.8, 0.7, 0.1], [0.5, 0.5, 0.5, 0.5]]
    rel = [[0, 1, 1, 0], [0, 0, 0, 1]]
    # Row 0: first relevant at rank 2, 1 of 2 relevant in the top 2. Row 1: one relevant among 4 ties.
    assert hit_rate_at_k(scores, rel, 1) == pytest.approx((0 + 1 / 4) / 2)
    assert hit_rate_at_k(scores, rel, 2) == pytest.approx((1 + 2 / 4) / 2)
    assert recall_at_k(scores, rel, 2) == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert mrr(scores, rel) == pytest.approx((1 / 2 + (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4) / 2)


def test_k_larger_than_number_of_candidates():
    rng = np.random.default_rng(11)
    scores = np.round(rng.random((40, 5)), 1)
    rel = (rng.random((40, 5)) < 0.2).astype(int)
    frac_with_rel = (rel.sum(1) > 0).mean()
    assert hit_rate_at_k(scores, rel, 100) == pytest.approx(frac_with_rel)
    assert recall_at_k(scores, rel, 100) == pytest.approx(1.0)
    assert mrr(scores, rel, k=100) == pytest.approx(mrr(scores, rel))
    assert ndcg_at_k(scores, rel, 100) == pytest.approx(ndcg_score(rel, scores, k=100), abs=1e-9)


def test_ndcg_long_cutoff_path():
    # Cut-offs above 64 find tied runs by binary search instead of a loop over columns.
    rng = np.random.default_rng(16)
    scores = np.round(rng.random((100, 100)), 1)
    rel = rng.integers(0, 3, (100, 100)) * (rng.random((100, 100)) < 0.2)
    for k in (64, 65, 80):
        assert ndcg_at_k(scores, rel, k) == pytest.approx(ndcg_score(rel, scores, k=k), abs=1e-9)


def test_many_queries_span_several_row_blocks():
    # 6000 x 100 exceeds one row block (2^19 elements) while each half fits in one.
    rng = np.random.default_rng(15)
    scores = np.round(rng.random((6000, 100)), 2)
    rel = rng.integers(0, 3, (6000, 100)) * (rng.random((6000, 100)) < 0.05)
    # Each half fits in one block, so agreement with the halves' mean checks the block summation (every
    # row gets a relevant candidate so that recall's denominator is the same in both halves).
    rel[rel.sum(1) == 0, 0] = 1
    checks = [
        lambda s, r: hit_rate_at_k(s, r, 10),
        lambda s, r: recall_at_k(s, r, 10),
        mrr,
        lambda s, r: mrr(s, r, k=5),
        lambda s, r: ndcg_at_k(s, r, 10),
    ]
    for fn in checks:
        halves = (fn(scores[:3000], rel[:3000]) + fn(scores[3000:], rel[3000:])) / 2
        assert fn(scores, rel) == pytest.approx(halves, abs=1e-12)


def test_recall_undefined_without_relevant():
    with pytest.raises(UndefinedMetricError, match="no query has a relevant"):
        recall_at_k([[0.1, 0.2]], [[0, 0]], 1)


def test_against_pytrec_eval_on_tie_free_scores():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    # trec_eval breaks score ties by document id, not by averaging, so scores here are all distinct.
    rng = np.random.default_rng(12)
    q, c = 60, 30
    scores = rng.permutation(q * c).reshape(q, c) / (q * c)
    rel = rng.integers(0, 3, (q, c)) * (rng.random((q, c)) < 0.15)
    rel[:, 0] = np.where(rel.sum(1) == 0, 1, rel[:, 0])  # trec_eval skips queries without relevant docs
    qrel = {f"q{i}": {f"d{j}": int(rel[i, j]) for j in range(c)} for i in range(q)}
    run = {f"q{i}": {f"d{j}": float(scores[i, j]) for j in range(c)} for i in range(q)}
    res = pytrec_eval.RelevanceEvaluator(
        qrel, {"recip_rank", "ndcg_cut_10", "recall_10", "success_10"}
    ).evaluate(run)

    def mean(key):
        return np.mean([res[f"q{i}"][key] for i in range(q)])

    assert mrr(scores, rel) == pytest.approx(mean("recip_rank"), abs=1e-9)
    assert ndcg_at_k(scores, rel, 10) == pytest.approx(mean("ndcg_cut_10"), abs=1e-9)
    assert recall_at_k(scores, rel, 10) == pytest.approx(mean("recall_10"), abs=1e-9)
    assert hit_rate_at_k(scores, rel, 10) == pytest.approx(mean("success_10"), abs=1e-9)


# ----------------------------------------------------------------------------------------------- one target


def test_rank_of_target_hand_computed():
    r = rank_of_target([[0.1, 0.7, 0.7, 0.3], [5, 1, 2, 3]], [2, 0])
    assert r.greater.tolist() == [0, 0]
    assert r.tied.tolist() == [2, 1]
    assert r.expected_rank().tolist() == [1.5, 1.0]


def test_ranking_report_with_one_target_matches_closed_forms():
    # One relevant candidate per query: with the target's rank uniform on g+1 .. g+n (n tied with it),
    # HR@k = clamp(k - g, 0, n) / n and the mean rank is g + (n + 1) / 2.
    rng = np.random.default_rng(13)
    q, c = 200, 20
    scores = np.round(rng.normal(size=(q, c)), 1)
    target = rng.integers(0, c, q)
    onehot = np.zeros((q, c), dtype=int)
    onehot[np.arange(q), target] = 1
    out = ranking_metrics(scores, one_hot(target, c), ks=(1, 5, 10, 50))
    assert out["n_queries"] == q
    t = scores[np.arange(q), target][:, None]
    g, n = (scores > t).sum(1), (scores == t).sum(1)
    for k in (1, 5, 10, 50):
        assert out[f"ndcg@{k}"] == pytest.approx(ndcg_score(onehot, scores, k=k), abs=1e-9)
        assert out[f"hr@{k}"] == pytest.approx(np.mean(np.clip(k - g, 0, n) / n), abs=1e-12)
    rr = [np.mean([1 / (gi + x) for x in range(1, ni + 1)]) for gi, ni in zip(g, n)]
    assert out["mrr"] == pytest.approx(np.mean(rr), abs=1e-12)
    assert out["mean_rank"] == pytest.approx(np.mean(g + (n + 1) / 2))
    assert out["hr@50"] == pytest.approx(1.0)
    assert all(isinstance(v, float) for key, v in out.items() if key != "n_queries")


def test_one_hot_rejects_bad_target():
    with pytest.raises(ValueError, match="target_index"):
        one_hot([2], 2)


def test_mean_rank_undefined_without_relevant():
    with pytest.raises(UndefinedMetricError, match="no query has a relevant"):
        mean_rank([[0.1, 0.2]], [[0, 0]])


# ----------------------------------------------------------------------------------------------- generative and reports


def test_valid_answer_ratio_forms():
    answers = ["A", " B\n", "Z", "c"]
    assert valid_answer_ratio(answers, {"A", "B", "C"}) == pytest.approx(0.5)
    assert valid_answer_ratio(answers, lambda a: a.isupper()) == pytest.approx(0.75)
    assert valid_answer_ratio(answers, [{"A"}, {"C"}, {"Z"}, {"c"}]) == pytest.approx(0.75)
    with pytest.raises(UndefinedMetricError):
        valid_answer_ratio([], {"A"})


def test_binary_report_gives_undefined_with_reason():
    out = binary_metrics([0.2, 0.9, 0.4], [1, 1, 1], groups=[0, 0, 1])
    assert out["auc"] == "undefined" and "all 3 labels are 1" in out["auc_undefined_reason"]
    assert out["gauc"] == "undefined" and out["uauc"] == "undefined"
    assert out["n_users_skipped"] == 2
    out = binary_metrics([0.2, 0.9, 0.4, 0.1], [0, 1, 1, 0], groups=["u", "u", "v", "v"])
    assert out["auc"] == pytest.approx(1.0) and out["gauc"] == pytest.approx(1.0)
    assert (out["n_samples"], out["n_positive"], out["n_users_used"]) == (4, 2, 2)
    assert "auc_undefined_reason" not in out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.int8])
def test_score_dtypes_agree_with_float64(dtype):
    # Half precision cannot go through numpy's sort and int8 takes the integer branches.
    rng = np.random.default_rng(17)
    base = torch.from_numpy(rng.integers(-5, 6, (60, 12)) / 4)
    s = (base * 4).to(dtype) if dtype == torch.int8 else base.to(dtype)
    ref = s.double().numpy()  # the same values, exactly
    rel = rng.integers(0, 3, (60, 12))
    y, g = rel[:, 0] > 0, rng.integers(0, 6, 60)
    assert ndcg_at_k(s, rel, 5) == pytest.approx(ndcg_score(rel, ref, k=5), abs=1e-9)
    assert auc(s[:, 1], y) == pytest.approx(roc_auc_score(y, ref[:, 1]), abs=1e-12)
    assert gauc(s[:, 1], y, g) == gauc(ref[:, 1], y, g)
    for fn in (hit_rate_at_k, recall_at_k):
        assert fn(s, rel, 3) == pytest.approx(fn(ref, rel, 3), abs=1e-12)
    assert mrr(s, rel) == pytest.approx(mrr(ref, rel), abs=1e-12)
    target = one_hot(rel.argmax(1), 12)
    assert ranking_metrics(s, target, (1, 5)) == ranking_metrics(ref, target, (1, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(14)
    s = torch.from_numpy(np.round(rng.random((200, 30)), 1))
    rel = torch.from_numpy(rng.integers(0, 3, (200, 30)) * (rng.random((200, 30)) < 0.3))
    y = (rel[:, 0] > 0).long()
    g = torch.from_numpy(rng.integers(0, 20, 200))
    cu = torch.device("cuda")
    assert auc(s[:, 0].to(cu), y.to(cu)) == pytest.approx(auc(s[:, 0], y), abs=1e-12)
    # reductions run in another order on the GPU: equal to float precision, not bit for bit
    assert gauc(s[:, 0].to(cu), y.to(cu), g.to(cu)) == pytest.approx(gauc(s[:, 0], y, g), abs=1e-12)
    for fn in (ndcg_at_k, hit_rate_at_k, recall_at_k):
        assert fn(s.to(cu), rel.to(cu), 5) == pytest.approx(fn(s, rel, 5), abs=1e-12)
    assert mrr(s.to(cu), rel.to(cu)) == pytest.approx(mrr(s, rel), abs=1e-12)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), -1.0])
@pytest.mark.parametrize("fn", ["ndcg_at_k", "hit_rate_at_k", "recall_at_k", "mrr"])
def test_non_finite_relevance_is_an_error_naming_the_row(fn, bad):
    import llm4rec.eval.metrics as m

    scores = np.array([[0.9, 0.5, 0.1], [0.3, 0.2, 0.1], [0.1, 0.2, 0.3]])
    rel = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    rel[2, 0] = bad  # row 2; sklearn raises on these too
    with pytest.raises(ValueError, match=r"relevance row 2 holds (nan|-?inf|-1\.0)"):
        getattr(m, fn)(scores, rel, 2)
    with pytest.raises(ValueError):
        ndcg_score(rel, scores, k=2)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 2.0])
def test_labels_other_than_0_1_name_their_index(bad):
    from llm4rec.eval.metrics import gauc

    labels = [0.0, 1.0, 0.0, bad, 1.0]
    with pytest.raises(ValueError, match=r"labels\[3\] is (nan|inf|2\.0); labels must be 0/1"):
        auc([0.1, 0.2, 0.3, 0.4, 0.5], labels)
    with pytest.raises(ValueError, match=r"labels\[3\] is"):
        gauc([0.1, 0.2, 0.3, 0.4, 0.5], labels, [1, 1, 2, 2, 2])


def test_nan_scores_name_the_row():
    s = np.array([[0.1, 0.2], [0.3, 0.4], [np.nan, 0.1]])
    with pytest.raises(ValueError, match=r"NaN \(row 2\)"):
        ndcg_at_k(s, np.eye(3, 2), 1)
    with pytest.raises(ValueError, match=r"NaN \(row 2\)"):
        ranking_metrics(s, one_hot([0, 1, 0], 2), [1])


@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_ndcg_host_and_torch_blocks_agree_with_ties(k):
    # CPU runs the numpy block; accelerators run the torch block: both must give sklearn's value
    from llm4rec.eval.metrics import _ndcg_block, _relevance_checks, _validate_2d

    rng = np.random.default_rng(k)
    scores = np.round(rng.random((300, 30)), 1)  # about 10 distinct values: ties everywhere, at the cut too
    rel = rng.integers(0, 4, (300, 30)) * (rng.random((300, 30)) < 0.3)
    rel[5] = 0  # a query without relevant candidates counts 0
    s, r = _validate_2d(scores, rel)
    narrow = _relevance_checks(r)[1]
    host = float(_ndcg_block(s, r, k, narrow, True)[0]) / 300
    dev = float(_ndcg_block(s, r, k, narrow, False)[0]) / 300
    assert host == pytest.approx(dev, abs=1e-12)
    assert host == pytest.approx(ndcg_score(rel, scores, k=k), abs=1e-12)
