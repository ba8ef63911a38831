"""Recommendation metrics in torch: AUC, GAUC/UAUC, NDCG@K, HR@K, Recall@K, MRR.

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

__all__ = [
    "UNDEFINED",
    "GAUCResult",
    "TargetRank",
    "UndefinedMetricError",
    "auc",
    "compute_binary_metrics",
    "compute_ranking_metrics",
    "gauc",
    "hit_rate_at_k",
    "mrr",
    "ndcg_at_k",
    "rank_of_target",
    "recall_at_k",
    "valid_answer_ratio",
]

UNDEFINED = "undefined"


class UndefinedMetricError(ValueError):
    """The metric has no value for these inputs (e.g. AUC when every label is the same class)."""


# ----------------------------------------------------------------------------------------------- helpers


def _as_tensor(x: Any, device: torch.device | None = None) -> torch.Tensor:
    """A tensor view of ``x`` (tensor, numpy array or nested list), moved to ``device`` when given."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"expected numbers, got an array of dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if device is not None and t.device != device:
        t = t.to(device)
    return t


def _float_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; everywhere else accumulate in float64 so results match sklearn to 1e-12.
    return torch.float32 if device.type == "mps" else torch.float64


def _scores(x: Any) -> torch.Tensor:
    t = _as_tensor(x)
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    if t.is_complex():
        raise TypeError("scores must be real numbers")
    return t


def _fetch(*values: torch.Tensor) -> list[float]:
    """Bring several 0-d tensors to the host in a single transfer."""
    device = values[0].device
    dt = _float_dtype(device)
    return torch.stack([v.to(dt) for v in values]).tolist()


def _validate_2d(scores: Any, relevance: Any) -> tuple[torch.Tensor, torch.Tensor]:
    s = _scores(scores)
    r = _as_tensor(relevance, s.device)
    if s.dim() != 2 or r.shape != s.shape:
        raise ValueError(
            f"scores and relevance must be 2-D [n_queries, n_candidates] of the same shape, got "
            f"{tuple(s.shape)} and {tuple(r.shape)}"
        )
    if s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(f"need at least one query and one candidate, got shape {tuple(s.shape)}")
    if r.dtype == torch.bool:
        r = r.to(torch.uint8)
    elif r.is_floating_point() and r.dtype not in (torch.float32, torch.float64):
        r = r.to(_float_dtype(s.device))
    # Relevance keeps its dtype: converting a large integer matrix to float costs more than the metric.
    return s, r


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _raise_on_flags(
    nan_scores: float,
    bad_relevance: float = 0.0,
    s: torch.Tensor | None = None,
    rel: torch.Tensor | None = None,
) -> None:
    """Raise on the flags computed with the metric; the first offending row is located only then."""
    if nan_scores:
        where = f" (row {_first_row(torch.isnan(s))})" if s is not None else ""
        raise ValueError(f"scores contain NaN{where}; the ranking is undefined")
    if bad_relevance:
        if rel is None:
            raise ValueError("relevance must be finite and non-negative")
        row = _first_row(_bad_relevance(rel))
        raise ValueError(
            f"relevance row {row} holds {_first_bad_value(rel[row], _bad_relevance(rel[row]))}; "
            "relevance must be finite and non-negative"
        )


def _bad_relevance(rel: torch.Tensor) -> torch.Tensor:
    """Where relevance is negative, NaN or infinite (sklearn rejects all three)."""
    if not rel.is_floating_point():
        return rel < 0
    return ~(rel >= 0) | torch.isinf(rel)


def _bad_relevance_flag(rel: torch.Tensor) -> torch.Tensor:
    """A 0-d flag: some relevance is negative, NaN or infinite (two reductions, no temporaries)."""
    if rel.dtype in (torch.uint8, torch.bool):
        return torch.zeros((), dtype=torch.bool, device=rel.device)
    lo = rel.min()
    if not rel.is_floating_point():
        return lo < 0
    return ~(lo >= 0) | (rel.max() == math.inf)


def _bad_relevance_count(rel: torch.Tensor) -> torch.Tensor:
    if rel.dtype in (torch.uint8, torch.bool):
        return torch.zeros((), dtype=torch.int64, device=rel.device)
    return _bad_relevance(rel).sum()


def _first_row(mask: torch.Tensor) -> int:
    """Index of the first row (first element, for 1-D) where ``mask`` holds."""
    flat = mask.reshape(mask.shape[0], -1).any(1) if mask.dim() > 1 else mask
    return int(torch.nonzero(flat)[0, 0])


def _first_bad_value(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float(values[mask][0])


_NUMPY_SORTABLE = {
    torch.float64,
    torch.float32,
    torch.float16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
}


def _argsort(x: torch.Tensor, stable: bool = False) -> torch.Tensor:
    """Ascending argsort of a 1-D tensor, NaN last, on the tensor's device."""
    if x.device.type == "cpu" and x.dtype in _NUMPY_SORTABLE:
        # On CPU numpy's argsort is ~3x faster than torch.sort; the tensor is shared, not copied.
        return torch.from_numpy(np.argsort(x.numpy(), kind="stable" if stable else "quicksort"))
    return torch.sort(x, stable=stable).indices


def _tie_layout(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per element of each row: how many candidates score strictly higher, and how many score equal.

    An element's tied group occupies the 0-based sorted positions ``[greater, greater + tied)``.
    """
    if scores.device.type == "cpu" and scores.dtype in _NUMPY_SORTABLE:
        asc = torch.from_numpy(np.sort(scores.numpy(), axis=1))
    else:
        asc = torch.sort(scores, dim=1).values
    lo = torch.searchsorted(asc, scores, side="left")
    hi = torch.searchsorted(asc, scores, side="right")
    return scores.shape[1] - hi, hi - lo


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


def _discounts(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[0, D(1), ..., D(n)]`` with D(m) = sum_{r=1}^{m} 1 / log2(r + 1) (cumulative DCG discount)."""
    d = 1.0 / torch.log2(torch.arange(2, n + 2, device=device, dtype=dtype))
    return torch.cat([torch.zeros(1, device=device, dtype=dtype), torch.cumsum(d, 0)])


def _sum_over_row_chunks(
    fn: Callable[..., tuple[torch.Tensor, ...]], s: torch.Tensor, rel: torch.Tensor, *args: Any
) -> list[torch.Tensor]:
    """Apply ``fn(s_rows, rel_rows, *args) -> 0-d sums`` to blocks of rows and add the sums up.

    Blocks of ~2^19 elements on CPU keep every temporary small and cache-resident: one pass over a
    fresh 80 MB temporary costs more in page faults than the arithmetic (measured 5-10x).
    """
    budget = 1 << 19 if s.device.type == "cpu" else 1 << 23
    step = max(1, budget // s.shape[1])
    totals: list[torch.Tensor] = []
    for a in range(0, s.shape[0], step):
        parts = fn(s[a : a + step], rel[a : a + step], *args)
        totals = list(parts) if not totals else [t + p for t, p in zip(totals, parts)]
    return totals


def _input_flags(s: torch.Tensor, rel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts of NaN scores and of negative, NaN or infinite relevance values in a block."""
    nan = (
        torch.isnan(s).sum() if s.is_floating_point() else torch.zeros((), dtype=torch.int64, device=s.device)
    )
    return nan, _bad_relevance_count(rel)


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
    """HR@k: fraction of queries with at least one relevant candidate (relevance > 0) in the top k.

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
    """Recall@k: relevant candidates in the top k / relevant candidates, mean over queries with any.

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


def _target_checks(scores: torch.Tensor, target_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    nan = torch.isnan(scores).any() if scores.is_floating_point() else torch.zeros((), dtype=torch.bool)
    out_of_range = ((target_index < 0) | (target_index >= scores.shape[1])).any()
    return nan.to(scores.device), out_of_range


def compute_ranking_metrics(
    scores: Any, target_index: Any, ks: Sequence[int] = (1, 5, 10, 20)
) -> dict[str, float | int]:
    """HR@k, NDCG@k (per k), MRR and mean rank for one target per query, as plain floats.

    Ties are expectations over random tie-breaking, so ``ndcg@k`` equals sklearn's tie-averaged
    ``ndcg_score`` with one-hot relevance: with the target's rank uniform on ``g+1 .. g+n``,
    ``hr@k = clamp(k - g, 0, n) / n``, ``ndcg@k = mean_r d(r) [r <= k]``, ``mrr = mean_r 1 / r``.
    """
    s = _scores(scores)
    if s.dim() != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(f"scores must be 2-D [n_queries, n_candidates], got shape {tuple(s.shape)}")
    tgt = _as_tensor(target_index, s.device).reshape(-1).to(torch.int64)
    ks = [_check_k(k) for k in ks]
    nan, out_of_range = _target_checks(s, tgt)
    rank = rank_of_target(s, tgt)
    fdt = _float_dtype(s.device)
    n_cand = s.shape[1]
    g, n = rank.greater, rank.tied.clamp_min(1)
    nf = n.to(fdt)
    dcum = _discounts(n_cand, s.device, fdt)
    harm = torch.cat(
        [
            torch.zeros(1, device=s.device, dtype=fdt),
            torch.cumsum(1.0 / torch.arange(1, n_cand + 1, device=s.device, dtype=fdt), 0),
        ]
    )
    names: list[str] = []
    values: list[torch.Tensor] = []
    for k in ks:
        lo, hi = g.clamp_max(k), (g + n).clamp_max(k)
        names += [f"hr@{k}", f"ndcg@{k}"]
        values += [((hi - lo).to(fdt) / nf).mean(), ((dcum.take(hi) - dcum.take(lo)) / nf).mean()]
    names += ["mrr", "mean_rank"]
    values += [((harm.take(g + n) - harm.take(g)) / nf).mean(), rank.expected_rank().mean()]
    fetched = _fetch(*values, nan, out_of_range)
    if fetched[-1]:
        raise ValueError(f"target_index must lie in [0, {n_cand})")
    _raise_on_flags(fetched[-2], s=s)
    out: dict[str, float | int] = dict(zip(names, fetched[:-2]))
    out["n_queries"] = int(s.shape[0])
    return out


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


# ----------------------------------------------------------------------------------------------- reports


def compute_binary_metrics(scores: Any, labels: Any, groups: Any = None) -> dict[str, float | int | str]:
    """AUC (and GAUC/UAUC when ``groups`` is given) as plain numbers for reports.

    An undefined metric is the string ``"undefined"`` and its reason is under ``<name>_undefined_reason``
    (never nan). Also reports ``n_samples`` and ``n_positive``.
    """
    s = _scores(scores).reshape(-1)
    y = _as_tensor(labels, s.device).reshape(-1)
    out: dict[str, float | int | str] = {
        "n_samples": int(s.numel()),
        "n_positive": int((y != 0).sum().item()),
    }
    try:
        out["auc"] = auc(s, y)
    except UndefinedMetricError as exc:
        out["auc"] = UNDEFINED
        out["auc_undefined_reason"] = str(exc)
    if groups is not None:
        res = gauc(s, y, groups)
        out["n_users_used"] = res.n_users_used
        out["n_users_skipped"] = res.n_users_skipped
        for name, value in (("gauc", res.gauc), ("uauc", res.uauc)):
            if value is None:
                out[name] = UNDEFINED
                out[f"{name}_undefined_reason"] = (
                    f"{name.upper()} is undefined because none of the {res.n_users_skipped} users has both "
                    "positive and negative samples"
                )
            else:
                out[name] = value
    return out
