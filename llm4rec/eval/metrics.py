"""Recommendation metrics in torch: AUC, GAUC/UAUC, NDCG@K, HR@K, Recall@K, MRR, mean rank.

One function per metric, its formula in its docstring; maths only. Which metric a report shows, under
what name and from which inputs is :mod:`llm4rec.eval.registry`'s job; formatting is
:mod:`llm4rec.eval.report`'s.

Every function accepts torch tensors (CPU or CUDA), numpy arrays or lists, and computes on the
tensor's device without host/device syncs inside the math: validity flags are computed as tensors and
fetched together with the result in one ``tolist()`` at the end. On CPU a few steps (sorting, mostly)
call numpy on the same memory because torch's CPU sort is several times slower; the results are the
same on every device.

Ties in scores are never broken by position. AUC counts a tied positive/negative pair as one half;
NDCG averages the gains inside a tied group (as ``sklearn.metrics.ndcg_score`` does); HR, Recall and
MRR report their *expected value over uniformly random tie-breaking*, which is what you would get by
shuffling the candidates before a stable sort, averaged over all shuffles. This keeps a model that
outputs constant scores at chance level instead of rewarding or punishing it arbitrarily.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from llm4rec.eval.metric_tensors import (
    _NUMPY_SORTABLE,
    _argsort,
    _as_tensor,
    _bad_relevance_flag,
    _check_k,
    _discounts,
    _fetch,
    _first_row,
    _float_dtype,
    _input_flags,
    _raise_on_flags,
    _scores,
    _sum_over_row_chunks,
    _tie_layout,
    _validate_2d,
)

__all__ = [
    "UNDEFINED",
    "GAUCResult",
    "TargetRank",
    "UndefinedMetricError",
    "auc",
    "gauc",
    "hit_rate_at_k",
    "mean_rank",
    "mrr",
    "ndcg_at_k",
    "rank_of_target",
    "recall_at_k",
    "valid_answer_ratio",
]

UNDEFINED = "undefined"


class UndefinedMetricError(ValueError):
    """The metric has no value for these inputs (e.g. AUC when every label is the same class)."""


# ----------------------------------------------------------------------------------------------- AUC


def auc(scores: Any, labels: Any) -> float:
    """ROC AUC, tied scores counted one half; equal to ``sklearn.metrics.roc_auc_score``.

    With P positives and N negatives::

        AUC = (#{(i, j): s_i > s_j} + 0.5 * #{(i, j): s_i == s_j}) / (P * N),  i positive, j negative

    i.e. the Mann-Whitney U with average ranks for ties, computed in O(n log n) with exact integer
    counts. Labels are 0/1 (or bool). Raises :class:`UndefinedMetricError` when the labels hold only one
    class, ``ValueError`` on NaN scores or labels other than 0/1.
    """
    s = _scores(scores).reshape(-1)
    y_in = _as_tensor(labels, s.device).reshape(-1)
    if y_in.numel() != s.numel():
        raise ValueError(f"scores and labels differ in length: {s.numel()} vs {y_in.numel()}")
    if s.numel() == 0:
        raise UndefinedMetricError("AUC is undefined because there are no samples")
    y, bad_labels = _binary_labels(y_in)
    if s.device.type == "cpu" and s.dtype in _NUMPY_SORTABLE:
        u2, n_pos, n_neg, nan = _mann_whitney_2u_host(s, y)
    else:
        u2, n_pos, n_neg, nan = _mann_whitney_2u(s, y)
    u2_v, p, n, nan_v, bad_v = _fetch(u2, n_pos, n_neg, nan, bad_labels)
    _raise_on_flags(nan_v, s=s)
    if bad_v:
        _raise_bad_labels(y_in)
    if p == 0 or n == 0:
        raise UndefinedMetricError(
            f"AUC is undefined because all {int(p + n)} labels are {1 if n == 0 else 0}"
        )
    return u2_v / (2.0 * p * n)


def _raise_bad_labels(y: torch.Tensor) -> None:
    """Name the first label that is not 0/1 (NaN and infinity included)."""
    bad = (y != 0) & (y != 1)
    k = _first_row(bad)
    raise ValueError(f"labels[{k}] is {y[k].item()!r}; labels must be 0/1 (or bool)")


def _binary_labels(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels as bool, and a 0-d flag set when some label is neither 0 nor 1."""
    if y.dtype == torch.bool:
        return y, torch.zeros((), dtype=torch.bool, device=y.device)
    return y != 0, ((y != 0) & (y != 1)).any()


def _mann_whitney_2u(s: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Twice the Mann-Whitney U, P, N and a NaN flag, as 0-d tensors; sync-free (for accelerators).

    One sort; within each run of tied scores (a segment), ``pos_g * (2 * neg_below + neg_g)`` where
    ``neg_below`` counts the negatives of lower segments. Exact in int64.
    """
    order = _argsort(s)
    sorted_s = s.index_select(0, order)
    ys = y.index_select(0, order).to(torch.int64)
    n = sorted_s.numel()
    new_tie = torch.ones(n, dtype=torch.bool, device=s.device)
    new_tie[1:] = sorted_s[1:] != sorted_s[:-1]
    tie_id = torch.cumsum(new_tie, 0) - 1
    # Buffers sized n (an upper bound on the number of segments) so no host sync is needed.
    pos_g = torch.zeros(n, dtype=torch.int64, device=s.device).scatter_add_(0, tie_id, ys)
    cnt_g = torch.zeros(n, dtype=torch.int64, device=s.device).scatter_add_(0, tie_id, torch.ones_like(ys))
    neg_g = cnt_g - pos_g
    neg_below = torch.cumsum(neg_g, 0) - neg_g
    u2 = (pos_g * (2 * neg_below + neg_g)).sum()
    n_pos = pos_g.sum()
    # Sorting puts NaN last, so the largest sorted value tells whether there is any.
    nan = (
        sorted_s[-1].isnan() if s.is_floating_point() else torch.zeros((), dtype=torch.bool, device=s.device)
    )
    return u2, n_pos, n - n_pos, nan


def _mann_whitney_2u_host(s: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Same as :func:`_mann_whitney_2u` for CPU tensors, ~5x faster (numpy kernels on shared memory).

    Sorting values alone is much cheaper than an argsort plus two random gathers: sort the positives'
    and the negatives' scores separately; each positive then adds ``#neg < s + #neg <= s`` (two binary
    searches, fast because the queries come sorted).
    """
    sv, yv = s.numpy(), y.numpy()
    pos, neg = np.sort(sv[yv]), np.sort(sv[~yv])
    u2 = 0
    step = 1 << 20  # bounded temporaries
    for a in range(0, pos.size, step):
        q = pos[a : a + step]
        u2 += int(np.searchsorted(neg, q, "left").sum()) + int(np.searchsorted(neg, q, "right").sum())
    nan = (pos.size > 0 and np.isnan(pos[-1])) or (neg.size > 0 and np.isnan(neg[-1]))
    return tuple(torch.tensor(v, dtype=torch.float64) for v in (u2, pos.size, neg.size, float(nan)))


# ----------------------------------------------------------------------------------------------- GAUC


@dataclass(frozen=True)
class GAUCResult:
    """Group AUC: ``gauc`` (sample-weighted) and ``uauc`` (unweighted); None when no user qualifies."""

    gauc: float | None
    uauc: float | None
    n_users_used: int
    n_users_skipped: int


def _group_ids(groups: Any, device: torch.device) -> torch.Tensor:
    if isinstance(groups, torch.Tensor):
        return groups.detach().reshape(-1).to(device)
    arr = np.asarray(groups).reshape(-1)
    if arr.dtype.kind not in "biu":
        # Strings, objects or floats: map to dense integer ids on the host (input is host data anyway).
        arr = np.unique(arr, return_inverse=True)[1].reshape(-1)
    return torch.from_numpy(np.ascontiguousarray(arr)).to(device)


def gauc(scores: Any, labels: Any, groups: Any) -> GAUCResult:
    """Group AUC over users (``groups``), vectorised: no Python loop per user.

    For each user u with both classes, ``AUC_u`` is the tie-aware AUC of :func:`auc` on u's samples
    and ``n_u`` its number of samples. Users with one class only are skipped (``n_users_skipped``).

        GAUC = sum_u n_u * AUC_u / sum_u n_u        UAUC = mean_u AUC_u

    Both are None when no user has two classes. Implementation: lexicographic sort by (group, score),
    tie groups are runs of equal (group, score), per-group Mann-Whitney counts via segment sums.
    """
    s = _scores(scores).reshape(-1)
    y = _as_tensor(labels, s.device).reshape(-1)
    g = _group_ids(groups, s.device)
    if not (s.numel() == y.numel() == g.numel()):
        raise ValueError(f"scores, labels and groups differ in length: {s.numel()}, {y.numel()}, {g.numel()}")
    if s.numel() == 0:
        return GAUCResult(None, None, 0, 0)
    dev, fdt = s.device, _float_dtype(s.device)
    bad_labels = ((y != 0) & (y != 1)).any()
    nan = torch.isnan(s).any() if s.is_floating_point() else torch.zeros((), dtype=torch.bool, device=dev)
    y = (y != 0).to(torch.int64)

    o1 = _argsort(s)
    order = o1.index_select(0, _argsort(g.index_select(0, o1), stable=True))
    ss, gs, ys = s.index_select(0, order), g.index_select(0, order), y.index_select(0, order)
    n = ss.numel()
    new_user = torch.ones(n, dtype=torch.bool, device=dev)
    new_user[1:] = gs[1:] != gs[:-1]
    new_tie = new_user.clone()
    new_tie[1:] |= ss[1:] != ss[:-1]
    user_id = torch.cumsum(new_user, 0) - 1
    tie_id = torch.cumsum(new_tie, 0) - 1

    def seg(ids: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n, dtype=vals.dtype, device=dev).scatter_add_(0, ids, vals)

    ones = torch.ones_like(ys)
    pos_t, cnt_t = seg(tie_id, ys), seg(tie_id, ones)
    neg_t = cnt_t - pos_t
    # The user of each tie group (every member writes the same id, so scatter order does not matter).
    user_of_tie = torch.zeros(n, dtype=torch.int64, device=dev).scatter_(0, tie_id, user_id)
    pos_u, cnt_u = seg(user_id, ys), seg(user_id, ones)
    neg_u = cnt_u - pos_u
    neg_before_user = torch.cumsum(neg_u, 0) - neg_u
    neg_below_t = torch.cumsum(neg_t, 0) - neg_t - neg_before_user.index_select(0, user_of_tie)
    u2_u = seg(user_of_tie, pos_t * (2 * neg_below_t + neg_t))

    used = (pos_u > 0) & (neg_u > 0)
    auc_u = u2_u.to(fdt) / (2 * pos_u * neg_u).clamp_min(1).to(fdt)
    w = torch.where(used, cnt_u, 0).to(fdt)
    n_used = used.sum()
    n_users = new_user.sum()
    weighted = (w * auc_u).sum() / w.sum().clamp_min(1)
    unweighted = torch.where(used, auc_u, 0).sum() / n_used.clamp_min(1).to(fdt)
    gv, uv, nu, nt, nan_v, bad_v = _fetch(weighted, unweighted, n_used, n_users, nan, bad_labels)
    _raise_on_flags(nan_v, s=s)
    if bad_v:
        _raise_bad_labels(_as_tensor(labels, s.device).reshape(-1))
    nu, nt = int(nu), int(nt)
    if nu == 0:
        return GAUCResult(None, None, 0, nt)
    return GAUCResult(gv, uv, nu, nt - nu)


# ----------------------------------------------------------------------------------------------- NDCG


def _sorted_ties(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows sorted in descending order: entries above each one, and the size of its tied run."""
    kk = v.shape[1]
    if kk > 64:
        asc = v.flip(1)
        hi = torch.searchsorted(asc, v, side="right")
        return kk - hi, hi - torch.searchsorted(asc, v, side="left")
    # Short rows (the usual k <= 64): a loop over columns, vectorised over rows, beats searchsorted.
    same = (v[:, 1:] == v[:, :-1]).T.contiguous()
    start = torch.empty((kk, v.shape[0]), dtype=torch.int64, device=v.device)
    end = torch.empty_like(start)
    start[0] = 0
    for j in range(1, kk):
        start[j] = torch.where(same[j - 1], start[j - 1], j)
    end[kk - 1] = kk - 1
    for j in range(kk - 2, -1, -1):
        end[j] = torch.where(same[j], end[j + 1], j)
    return start.T, (end - start + 1).T


def _ideal_gains(rel: torch.Tensor, kk: int, narrow: Any = None) -> torch.Tensor:
    """Each row's ``kk`` largest relevance values, sorted descending (the ideal ranking's gains).

    On CPU numpy's vectorised (SIMD) sort of whole rows beats a top-k selection, the more so on narrow
    integers: ``narrow`` is a smaller numpy integer type that holds every relevance value, or None.
    """
    n = rel.shape[1]
    if rel.device.type == "cpu" and rel.dtype in _NUMPY_SORTABLE:
        r = rel.numpy()
        if narrow is not None:
            r = r.astype(narrow)
        top = np.sort(r, axis=1)[:, n - kk :][:, ::-1]
        return torch.from_numpy(top.copy())  # copy: a reversed view has negative strides
    return torch.topk(rel, kk, dim=1, largest=True, sorted=True).values


def _relevance_checks(rel: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """The bad-relevance flag of :func:`_bad_relevance_flag`, and the narrowest of int16/int32 holding
    every value of an integer CPU ``rel`` (None: keep its type); one min/max pass serves both."""
    if (
        rel.device.type != "cpu"
        or rel.is_floating_point()
        or rel.dtype in (torch.int16, torch.int8, torch.uint8)
    ):
        return _bad_relevance_flag(rel), None
    lo, hi = int(rel.min()), int(rel.max())
    flag = torch.tensor(lo < 0)
    for dt in (np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return flag, dt
    return flag, None


def _ndcg_block_host(
    s: torch.Tensor, rel: torch.Tensor, k: int, narrow: Any = None
) -> tuple[torch.Tensor, ...]:
    """:func:`_ndcg_block` for CPU tensors, in numpy, with no per-row selection of indices.

    A vectorised (SIMD) sort of the score values gives each row's k-th largest score ``t``. Every
    candidate scoring ``>= t`` (about k per row, all of the tie group at ``t`` included) is picked out;
    one sort of those by (row, score descending) lays out each row's tied groups, so a candidate's rank
    group is exact: ``greater`` = candidates of its row ahead of its group, ``size`` = its group. Its
    weight is the group's mean discount inside the top k, ``(D(min(greater + size, k)) - D(greater)) /
    size``, and a row's DCG is the weighted sum of its candidates' gains.
    """
    sv, rv = s.numpy(), rel.numpy()
    n_rows, n = sv.shape
    kk = min(k, n)
    dcum = _discounts(kk, s.device, torch.float64).numpy()
    asc = np.sort(sv, axis=1)
    nan = int(np.isnan(asc[:, -1]).sum()) if sv.dtype.kind == "f" else 0  # NaN sorts last
    flat = np.flatnonzero(sv >= asc[:, n - kk][:, None])
    rows = flat // n
    # dense rank of the picked scores, so that (row, score descending) is one exact int64 key
    _, rank = np.unique(sv.reshape(-1).take(flat), return_inverse=True)
    key = (rows << 32) + (int(rank.max()) - rank.reshape(-1))
    order = np.argsort(key)
    key, rows = key[order], rows[order]
    gains = rv.reshape(-1).take(flat[order]).astype(np.float64)
    pos = np.arange(key.size)
    new_row = np.ones(key.size, dtype=bool)
    new_row[1:] = rows[1:] != rows[:-1]
    new_group = np.ones(key.size, dtype=bool)
    new_group[1:] = key[1:] != key[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, pos, 0))
    greater = group_start - np.maximum.accumulate(np.where(new_row, pos, 0))
    starts = pos[new_group]
    size = np.diff(np.append(starts, key.size))[np.cumsum(new_group) - 1]
    w = (dcum[np.minimum(greater + size, kk)] - dcum[np.minimum(greater, kk)]) / size
    dcg = np.bincount(rows, weights=gains * w, minlength=n_rows)
    ideal = _ideal_gains(rel, kk, narrow).numpy().astype(np.float64)
    idcg = ideal @ (dcum[1:] - dcum[:-1])
    ndcg = np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1), 0)
    return torch.tensor(float(ndcg.sum()), dtype=torch.float64), torch.tensor(nan)


def _ndcg_block(
    s: torch.Tensor, rel: torch.Tensor, k: int, narrow: Any = None, host: bool = True
) -> tuple[torch.Tensor, ...]:
    """Sum over the block's rows of tie-averaged NDCG@k (0 where IDCG is 0), plus a NaN-score count.

    Only the top k of each row are sorted. A tied group lying wholly above the k-th score is inside the
    top k; the group at the k-th score may reach past it, so its size and total gain come from the full
    row.
    """
    if host and s.device.type == "cpu" and s.dtype in _NUMPY_SORTABLE and rel.dtype in _NUMPY_SORTABLE:
        return _ndcg_block_host(s, rel, k, narrow)
    kk = min(k, s.shape[1])
    fdt = _float_dtype(s.device)
    dcum = _discounts(kk, s.device, fdt)  # dcum[m] = discount sum of the first m ranks
    top_v, top_i = torch.topk(s, kk, dim=1, largest=True, sorted=True)
    top_rel = rel.gather(1, top_i).to(fdt)
    t = top_v[:, -1:]
    greater, tied = _sorted_ties(top_v)  # exact for values above t, whose runs end inside the top k
    w = (dcum.take((greater + tied).clamp_max(kk)) - dcum.take(greater)) / tied.to(fdt)
    dcg = torch.where(top_v > t, top_rel * w, 0).sum(1)
    at_t = s == t
    n_t = at_t.sum(1)
    gain_t = torch.where(at_t, rel, 0)
    # Integer sums are exact; float relevance is accumulated in float64 like sklearn.
    gain_t = gain_t.sum(1).to(fdt) if not rel.is_floating_point() else gain_t.sum(1, dtype=fdt)
    dcg = dcg + gain_t * (dcum[kk] - dcum.take(greater[:, -1])) / n_t.to(fdt)
    ideal = _ideal_gains(rel, kk, narrow).to(fdt)
    idcg = (ideal * (dcum[1:] - dcum[:-1])).sum(1)
    ndcg = torch.where(idcg > 0, dcg / torch.where(idcg > 0, idcg, 1), 0)
    nan = top_v[:, 0].isnan().sum() if s.is_floating_point() else torch.zeros((), dtype=torch.int64)
    return ndcg.sum(), nan


def ndcg_at_k(scores: Any, relevance: Any, k: int) -> float:
    """Mean NDCG@k over queries; equal to ``sklearn.metrics.ndcg_score(relevance, scores, k=k)``.

    ``scores`` and ``relevance`` are [n_queries, n_candidates]; relevance is binary or graded (>= 0).
    With linear gain and log2 discount ``d(r) = 1 / log2(r + 1)`` for ranks r <= k (0 beyond k)::

        DCG@k  = sum over tied groups G (in descending score order) of mean_{i in G}(rel_i) * sum_{r in G} d(r)
        NDCG@k = DCG@k / IDCG@k,   IDCG@k = sum_{r <= k} d(r) * rel_(r)  (relevance sorted descending)

    i.e. the expected DCG over random orders of tied candidates. Queries whose relevance is all zero
    count as 0 (as in sklearn). ``k`` larger than the number of candidates means all candidates.
    """
    k = _check_k(k)
    s, rel = _validate_2d(scores, relevance)
    neg, narrow = _relevance_checks(rel)
    total, nan = _sum_over_row_chunks(_ndcg_block, s, rel, k, narrow)
    value, nan_v, neg_v = _fetch(total, nan, neg)
    _raise_on_flags(nan_v, neg_v, s, rel)
    return value / s.shape[0]


# ----------------------------------------------------------------------------------------------- HR, Recall, MRR


def _log_comb(n: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """log C(n, m) for 0 <= m <= n (float tensors)."""
    return torch.lgamma(n + 1) - torch.lgamma(m + 1) - torch.lgamma(n - m + 1)


def _first_relevant_group(s: torch.Tensor, rel_bin: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For each row, the tied group holding the highest-scored relevant candidate, in O(n_candidates).

    Returns (greater, size, n_rel, has_rel): candidates scoring above that group, the group's size, the
    relevant candidates in it, and whether the row has any relevant candidate at all.
    """
    fdt = _float_dtype(s.device)
    # The highest relevant score; irrelevant candidates are pushed below everything (-inf included).
    lowest = -math.inf if s.is_floating_point() else torch.iinfo(s.dtype).min
    best = torch.where(rel_bin, s, lowest).max(dim=1, keepdim=True).values
    has_rel = rel_bin.any(1)
    in_group = s == best
    greater = (s > best).sum(1).to(fdt)
    # Rows with no relevant candidate get a harmless dummy group (masked out by has_rel later).
    size = torch.where(has_rel, in_group.sum(1).to(fdt), 1)
    n_rel = torch.where(has_rel, (in_group & rel_bin).sum(1).to(fdt), 1)
    return greater, size, n_rel, has_rel


def _hit_block(s: torch.Tensor, rel: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    greater, size, n_rel, has_rel = _first_relevant_group(s, rel > 0)
    m = torch.minimum((k - greater).clamp(min=0), size)
    free = size - n_rel
    enough = free >= m
    log_miss = _log_comb(free.clamp_min(0), torch.where(enough, m, 0)) - _log_comb(size, m)
    miss = torch.where(enough, torch.exp(log_miss), 0)
    return (torch.where(has_rel, 1 - miss, 0).sum(), *_input_flags(s, rel))


def hit_rate_at_k(scores: Any, relevance: Any, k: int) -> float:
    """HR@k: fraction of queries with at least one relevant candidate (relevance > 0) in the top k::

        HR@k = mean_q [ |relevant(q) in top k| > 0 ]

    Ties at the cut-off are resolved by expectation over uniformly random tie-breaking: if the first
    tied group holding a relevant candidate has ``g`` candidates above it, size ``n`` and ``r`` relevant
    members, and ``m = clamp(k - g, 0, n)`` of its slots fall inside the top k, the query scores
    ``1 - C(n - r, m) / C(n, m)``. Queries without relevant candidates score 0; mean over all queries.
    """
    k = _check_k(k)
    s, rel = _validate_2d(scores, relevance)
    value, nan_v, neg_v = _fetch(*_sum_over_row_chunks(_hit_block, s, rel, k))
    _raise_on_flags(nan_v, neg_v, s, rel)
    return value / s.shape[0]


def _recall_block(s: torch.Tensor, rel: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    fdt = _float_dtype(s.device)
    rel_bin = rel > 0
    greater, tied = _tie_layout(s)
    p_in = (k - greater).clamp(min=0).minimum(tied).to(fdt) / tied.to(fdt)
    n_rel = rel_bin.sum(1)
    found = torch.where(rel_bin, p_in, 0).sum(1)
    has = n_rel > 0
    recall = torch.where(has, found / n_rel.clamp_min(1).to(fdt), 0)
    return (recall.sum(), has.sum(), *_input_flags(s, rel))


def recall_at_k(scores: Any, relevance: Any, k: int) -> float:
    """Recall@k, mean over the queries with a relevant candidate (relevance > 0)::

        Recall@k(q) = |relevant(q) in top k| / |relevant(q)|

    Ties at the cut-off use the expectation over random tie-breaking: a candidate whose tied group has
    ``g`` candidates above it and size ``n`` is in the top k with probability ``clamp(k - g, 0, n) / n``.
    Raises :class:`UndefinedMetricError` when no query has a relevant candidate.
    """
    k = _check_k(k)
    s, rel = _validate_2d(scores, relevance)
    total, n_has, nan_v, neg_v = _fetch(*_sum_over_row_chunks(_recall_block, s, rel, k))
    _raise_on_flags(nan_v, neg_v, s, rel)
    if n_has == 0:
        raise UndefinedMetricError("Recall is undefined because no query has a relevant candidate")
    return total / n_has


def _rr_block(s: torch.Tensor, rel: torch.Tensor, k: int | None) -> tuple[torch.Tensor, ...]:
    fdt = _float_dtype(s.device)
    greater, size, n_rel, has_rel = _first_relevant_group(s, rel > 0)
    x = torch.arange(1, s.shape[1] + 1, device=s.device, dtype=fdt)[None, :]
    g, n, r = greater[:, None], size[:, None], n_rel[:, None]
    possible = x <= n - r + 1
    if k is not None:
        possible &= g + x <= k
    rest = torch.where(possible, n - x, r - 1)  # keeps lgamma's arguments valid where masked out
    log_p = _log_comb(rest, r - 1) - _log_comb(n, r)
    rr = torch.where(possible, torch.exp(log_p) / (g + x), 0).sum(1)
    return (torch.where(has_rel, rr, 0).sum(), *_input_flags(s, rel))


def mrr(scores: Any, relevance: Any, k: int | None = None) -> float:
    """MRR (optionally MRR@k): mean over queries of 1 / rank of the first relevant candidate.

    The rank is 1-based; with ``k`` a first relevant rank beyond k counts 0, and so do queries without
    relevant candidates. Ties use the expectation over random tie-breaking: if the first tied group
    holding a relevant candidate has ``g`` candidates above it, size ``n`` and ``r`` relevant members,
    the first relevant one lands at rank ``g + x`` with probability ``C(n - x, r - 1) / C(n, r)``, and
    the query scores ``sum_x P(x) / (g + x)`` over ``x = 1 .. n - r + 1`` (and ``g + x <= k``).
    """
    if k is not None:
        k = _check_k(k)
    s, rel = _validate_2d(scores, relevance)
    value, nan_v, neg_v = _fetch(*_sum_over_row_chunks(_rr_block, s, rel, k))
    _raise_on_flags(nan_v, neg_v, s, rel)
    return value / s.shape[0]


def mean_rank(scores: Any, relevance: Any) -> float:
    """Mean 1-based rank of the first relevant candidate, over the queries that have one.

    Ties use the expectation over random tie-breaking: if the first tied group holding a relevant
    candidate has ``g`` candidates above it, size ``n`` and ``r`` relevant members, the first of the
    ``r`` lands on average at ``(n + 1) / (r + 1)`` inside the group, so the query's rank is::

        rank = g + (n + 1) / (r + 1)          (g + (n + 1) / 2 for a single target)

    Lower is better. Raises :class:`UndefinedMetricError` when no query has a relevant candidate.
    """
    s, rel = _validate_2d(scores, relevance)
    total, n_has, nan_v, neg_v = _fetch(*_sum_over_row_chunks(_rank_block, s, rel))
    _raise_on_flags(nan_v, neg_v, s, rel)
    if n_has == 0:
        raise UndefinedMetricError("the mean rank is undefined because no query has a relevant candidate")
    return total / n_has


def _rank_block(s: torch.Tensor, rel: torch.Tensor) -> tuple[torch.Tensor, ...]:
    greater, size, n_rel, has_rel = _first_relevant_group(s, rel > 0)
    rank = greater + (size + 1) / (n_rel + 1)
    return (torch.where(has_rel, rank, 0).sum(), has_rel.sum(), *_input_flags(s, rel))


# ----------------------------------------------------------------------------------------------- one target


@dataclass(frozen=True)
class TargetRank:
    """Where the single target sits among its candidates: ``greater`` score above it, ``tied`` equal.

    ``tied`` counts the target itself, so under random tie-breaking its rank is uniform on
    ``greater + 1 .. greater + tied``.
    """

    greater: torch.Tensor
    tied: torch.Tensor

    def expected_rank(self) -> torch.Tensor:
        """Mean 1-based rank over random tie-breaking: ``greater + (tied + 1) / 2``."""
        fdt = _float_dtype(self.greater.device)
        return self.greater.to(fdt) + (self.tied.to(fdt) + 1) / 2


def rank_of_target(scores: Any, target_index: Any) -> TargetRank:
    """Rank of the one relevant candidate per query (LlamaRec-style letter ranking), in O(n_candidates).

    ``scores`` is [n_queries, n_candidates], ``target_index`` [n_queries] holds column indices.
    """
    s = _scores(scores)
    if s.dim() != 2 or s.shape[1] == 0:
        raise ValueError(f"scores must be 2-D [n_queries, n_candidates], got shape {tuple(s.shape)}")
    t = _as_tensor(target_index, s.device).reshape(-1).to(torch.int64)
    if t.numel() != s.shape[0]:
        raise ValueError(f"target_index has {t.numel()} entries for {s.shape[0]} queries")
    target = s.gather(1, t.clamp(0, s.shape[1] - 1)[:, None])
    return TargetRank(greater=(s > target).sum(1), tied=(s == target).sum(1))


# ----------------------------------------------------------------------------------------------- generative


def valid_answer_ratio(
    answers: Sequence[str], valid: Collection[str] | Sequence[Collection[str]] | Callable[[str], bool]
) -> float:
    """Fraction of generated answers that are valid (after stripping surrounding whitespace).

    ``valid`` is one collection of accepted strings for every answer, a sequence with one collection
    per answer (e.g. each prompt's candidate titles), or a predicate ``str -> bool``.
    """
    if not answers:
        raise UndefinedMetricError("the valid-answer ratio is undefined because there are no answers")
    if callable(valid):
        ok = sum(bool(valid(a.strip())) for a in answers)
    elif (
        isinstance(valid, Sequence) and not isinstance(valid, str) and valid and not isinstance(valid[0], str)
    ):
        if len(valid) != len(answers):
            raise ValueError(f"{len(answers)} answers but {len(valid)} per-answer valid sets")
        ok = sum(a.strip() in {v.strip() for v in vs} for a, vs in zip(answers, valid))
    else:
        accepted = {v.strip() for v in valid}
        ok = sum(a.strip() in accepted for a in answers)
    return ok / len(answers)
