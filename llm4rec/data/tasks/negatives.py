"""Uniform negative sampling: items a user never interacted with, without repeats within a pool."""

from __future__ import annotations

import numpy as np
import polars as pl

from llm4rec.errors import UserError

#: largest users x items bitmap used for 'seen' lookups (bytes); beyond it, binary search on sorted keys
_BITMAP_LIMIT = 64_000_000


class NegativeSampler:
    """Samples, for each target row, items its user has no event with (anywhere in the log).

    Built from one chunk's events (whole users, contiguous user indices), so the 'seen' sets are complete.
    With a users x items bitmap (moderate catalogues), each negative is the k-th unseen item of its user
    for a uniform k, looked up directly, never rejected. With a huge catalogue, items are drawn from
    all of it and the seen ones redrawn. Either way every negative is uniform over the user's unseen
    items, and a pool never repeats an item.
    """

    def __init__(self, events: pl.DataFrame, n_items: int) -> None:
        self.n_items = n_items
        u = events["u"].to_numpy().astype(np.int64)
        i = events["i"].to_numpy().astype(np.int64)
        self.u0 = int(u.min()) if len(u) else 0
        n_users = (int(u.max()) - self.u0 + 1) if len(u) else 0
        local = u - self.u0
        self.bitmap: np.ndarray | None = None
        self.seen: np.ndarray | None = None
        self._unseen_flat: np.ndarray | None = None
        if n_users * n_items <= _BITMAP_LIMIT:
            self.bitmap = np.zeros((n_users, n_items), dtype=bool)
            self.bitmap[local, i] = True
        else:
            self.seen = np.unique(local * n_items + i)

    def sample(self, users: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
        """An ``(len(users), m)`` array of distinct unseen items per row."""
        users = users.astype(np.int64)
        if m == 0 or len(users) == 0:
            return np.zeros((len(users), m), dtype=np.int64)
        seen_count = self._seen_count(users)
        _check(int((self.n_items - seen_count).min()), m, self.n_items)
        if self.bitmap is not None:
            return self._by_rank(users, m, rng)
        out = np.zeros((len(users), m), dtype=np.int64)
        # a huge catalogue: draw from all items and redraw the seen; the rare user who has seen more than
        # 1/64 of it draws from a list of their unseen items, so rejection never takes many rounds
        heavy = seen_count * 64 > self.n_items
        light = np.flatnonzero(~heavy)
        out[light] = self._by_rejection(users[light], m, rng)
        for r in np.flatnonzero(heavy):
            out[r] = _from_pool(self._unseen(int(users[r])), 1, m, rng)[0]
        return out

    def _by_rank(self, users: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
        """Draw the k-th unseen item of the row's user, k uniform, from one flat list of every chunk
        user's unseen items (users in order, items ascending), so no draw is ever rejected."""
        assert self.bitmap is not None
        if self._unseen_flat is None:
            free = ~self.bitmap
            flat = np.flatnonzero(free.ravel())
            self._unseen_flat = (flat % self.n_items).astype(np.int64)
            self._free_total = free.sum(axis=1)
            self._free_base = np.cumsum(self._free_total) - self._free_total
        local = users - self.u0
        high = np.broadcast_to(self._free_total[local][:, None], (len(users), m))
        ranks = rng.integers(0, high)
        rows = np.arange(len(users))
        for _ in range(30):
            bad = _repeats(ranks[rows])
            hit = bad.any(axis=1)
            if not hit.any():
                break
            rows, bad = rows[hit], bad[hit]
            block = ranks[rows]
            block[bad] = rng.integers(0, high[rows][bad])
            ranks[rows] = block
        else:
            for r in rows[_repeats(ranks[rows]).any(axis=1)]:
                ranks[r] = rng.choice(int(high[r, 0]), size=m, replace=False)
        return self._unseen_flat[self._free_base[local][:, None] + ranks]

    def _seen_count(self, users: np.ndarray) -> np.ndarray:
        local = users - self.u0
        if self.bitmap is not None:
            return self.bitmap.sum(axis=1)[local]
        assert self.seen is not None
        owner = self.seen // self.n_items
        return np.bincount(owner, minlength=int(local.max()) + 1)[local]

    def _unseen(self, user: int) -> np.ndarray:
        """The items ``user`` has no event with, ascending."""
        local = user - self.u0
        if self.bitmap is not None:
            return np.flatnonzero(~self.bitmap[local])
        assert self.seen is not None
        lo, hi = np.searchsorted(self.seen, [local * self.n_items, (local + 1) * self.n_items])
        mask = np.ones(self.n_items, dtype=bool)
        mask[self.seen[lo:hi] - local * self.n_items] = False
        return np.flatnonzero(mask)

    def _is_seen(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``users`` (rows,) against ``items`` (rows, m)."""
        keys = (users - self.u0)[:, None] * self.n_items + items
        if self.bitmap is not None:
            return self.bitmap.ravel()[keys]
        assert self.seen is not None
        pos = np.minimum(np.searchsorted(self.seen, keys), len(self.seen) - 1)
        return self.seen[pos] == keys

    def _by_rejection(self, users: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
        out = rng.integers(0, self.n_items, size=(len(users), m))
        rows = np.arange(len(users))
        for _ in range(50):
            bad = self._is_seen(users[rows], out[rows]) | _repeats(out[rows])
            hit = bad.any(axis=1)
            if not hit.any():
                return out
            rows, bad = rows[hit], bad[hit]
            block = out[rows]
            block[bad] = rng.integers(0, self.n_items, size=int(bad.sum()))
            out[rows] = block
        for r in rows:
            out[r] = rng.choice(self._unseen(int(users[r])), size=m, replace=False)
        return out


def _from_pool(pool: np.ndarray, rows: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """``rows`` draws of ``m`` distinct entries of ``pool``."""
    draw = rng.integers(0, len(pool), size=(rows, m))
    for _ in range(20):
        bad = _repeats(draw)
        if not bad.any():
            return pool[draw]
        draw[bad] = rng.integers(0, len(pool), size=int(bad.sum()))
    for r in np.flatnonzero(_repeats(draw).any(axis=1)):
        draw[r] = rng.choice(len(pool), size=m, replace=False)
    return pool[draw]


def _check(unseen: int, m: int, n_items: int) -> None:
    if unseen < m:
        raise UserError(
            f"a user has no event with only {unseen} of the {n_items} items in the log, fewer than the {m} "
            "negatives needed; lower --candidates or apply --k-core"
        )


def _repeats(draw: np.ndarray) -> np.ndarray:
    """Entries equal to an earlier entry of their row (the first copy is kept)."""
    bad = np.zeros(draw.shape, dtype=bool)
    if draw.shape[1] < 2:
        return bad
    rows = np.flatnonzero((np.diff(np.sort(draw, axis=1), axis=1) == 0).any(axis=1))
    if len(rows):
        sub = draw[rows]
        order = np.argsort(sub, axis=1, kind="stable")
        s = np.take_along_axis(sub, order, axis=1)
        dup_sorted = np.zeros(s.shape, dtype=bool)
        dup_sorted[:, 1:] = s[:, 1:] == s[:, :-1]
        dup = np.zeros_like(dup_sorted)
        np.put_along_axis(dup, order, dup_sorted, axis=1)
        bad[rows] = dup
    return bad
