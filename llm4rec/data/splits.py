"""Per-user timelines and leak-free train / valid / test splits.

A *timeline* is the interaction table sorted by user (in order of first appearance in the source) and,
within a user, by time (``order='time'``: timestamp, ties keep file order), by file position
(``'file'``) or by a seeded shuffle (``'shuffle'``, for logs without times such as BookCrossing). Every
event then has its position ``pos`` in its user's timeline, and every sample's history is drawn only from
earlier positions of the same user.

Splits mark which events are *targets* of samples, and in which split:

``tallrec``
    TALLRec's preset: every event with at least ``min_history`` earlier events is a target; all users'
    targets in timeline order, the last ``window`` of them kept, cut in order by ``ratios`` (80/10/10).
``loo``
    Leave-one-out per user: the last event is the test target, the second to last the valid target,
    earlier ones train targets. A train sample never sees its user's valid or test event.
``temporal``
    Global time cut-offs ``c1 <= c2``: train targets before ``c1``, valid in ``[c1, c2)``, test from
    ``c2``; histories hold only events strictly earlier in time than their target, so no test-period
    event is visible in any train sample.
``users``
    A seeded partition of the users by ``ratios``; each user's last event is the one target (TALLRec's
    book setup, made reproducible).

Equal timestamps (``--ties``). Logs with one-second times hold many events in the same second as the next
(ML-100K: about half of all loo targets). Under ``order='time'`` such events keep their file order, so the
newest history event of a sample can share its target's second. ``keep`` (the default, and the
``tallrec`` preset's, as TALLRec does) shows them; ``strict`` leaves every history event that is not
strictly earlier than its target out of the history (its slot stays empty). ``temporal`` is always
strict. ``meta.json`` counts the targets concerned under ``ties``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from llm4rec.data.canonical import Encoded, compact
from llm4rec.errors import UserError

SPLITS = ("tallrec", "loo", "temporal", "users")
ORDERS = ("time", "file", "shuffle")
SPLIT_NAMES = ("train", "valid", "test")
#: split codes in the timeline's ``split`` column
TRAIN, VALID, TEST = 0, 1, 2


@dataclass
class Timeline:
    """The events in timeline order, with dense indices into ``users`` and ``items``.

    ``frame`` columns: ``u`` (u32, index into ``users``), ``i`` (u32, index into ``items``), ``label``,
    ``rating``, ``timestamp``, ``pos`` (position in the user's timeline), ``n`` (the user's event count),
    and after :func:`assign_splits`, ``split`` (i8: 0 train, 1 valid, 2 test, null = not a target).
    """

    frame: pl.DataFrame
    users: pl.Series
    items: pl.DataFrame

    @property
    def n_items(self) -> int:
        """Number of distinct items in the log."""
        return self.items.height


def build_timeline(enc: Encoded, order: str = "time", seed: int = 0) -> Timeline:
    """Sort encoded events into per-user timelines (users in order of first appearance)."""
    if order not in ORDERS:
        raise UserError(f"--order: unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    enc = compact(enc)
    frame = enc.frame
    if frame.height == 0:
        raise UserError("no interactions left to build samples from (check the filters)")
    if order == "time" and frame["timestamp"].null_count() == frame.height:
        order = "file"
    if order == "time" and frame["timestamp"].null_count():
        raise UserError("some events have no timestamp; use --order file or --order shuffle")
    keys = ["u"]
    if order == "time":
        keys.append("timestamp")
    elif order == "shuffle":
        frame = frame.with_columns(pl.Series("_rand", np.random.default_rng(seed).random(frame.height)))
        keys.append("_rand")
    # user codes follow first appearance and the frame is in file order: a stable sort does the rest
    frame = frame.sort(keys, maintain_order=True)
    u = frame["u"].to_numpy()
    counts = np.bincount(u, minlength=enc.users.len())
    starts = np.cumsum(counts) - counts
    frame = frame.select(
        "u",
        "i",
        "label",
        "rating",
        "timestamp",
        pl.Series("pos", np.arange(len(u), dtype=np.int64) - starts[u], dtype=pl.UInt32),
        pl.Series("n", counts[u], dtype=pl.UInt32),
    )
    items = enc.items.with_row_index("i").select("i", "item", "title", "categories", "attributes")
    return Timeline(frame=frame, users=enc.users, items=items)


@dataclass
class SplitConfig:
    """How targets are chosen and split (see the module docstring)."""

    kind: str = "loo"
    min_history: int = 1
    window: int = 10_000
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    cutoffs: tuple[float, float] = (0.8, 0.9)
    seed: int = 0


def _check_ratios(r: tuple[float, ...]) -> None:
    if len(r) != 3 or any(x < 0 for x in r) or abs(sum(r) - 1.0) > 1e-6:
        raise UserError(
            f"--ratios: need three non-negative fractions summing to 1, got {','.join(map(str, r))}"
        )


def temporal_cutoffs(ts: pl.Series, cutoffs: tuple[float, float]) -> tuple[int, int]:
    """Cut-offs as timestamps: values in [0, 1] are quantiles of the event times, others are times."""
    c1, c2 = cutoffs
    if ts.null_count():
        raise UserError("--split temporal needs a timestamp on every event")
    out = []
    for c in (c1, c2):
        if 0.0 <= c <= 1.0:
            out.append(int(ts.quantile(c, interpolation="lower")))
        else:
            out.append(int(c))
    if out[0] > out[1]:
        raise UserError(f"--cutoffs: the valid cut-off {c1} is after the test cut-off {c2}")
    return out[0], out[1]


def assign_splits(tl: Timeline, cfg: SplitConfig) -> tuple[Timeline, dict[str, object]]:
    """Add the ``split`` column; return the timeline and facts for meta.json (cut-offs, sizes)."""
    f = tl.frame
    eligible = pl.col("pos") >= cfg.min_history
    info: dict[str, object] = {"kind": cfg.kind, "min_history": cfg.min_history}
    if cfg.kind == "tallrec":
        _check_ratios(cfg.ratios)
        if cfg.window < 1:
            raise UserError(f"--window: need at least 1 sample, got {cfg.window}")
        rank = eligible.cast(pl.Int64).cum_sum()
        f = f.with_columns(pl.when(eligible).then(rank).alias("_k"))
        total = int(f["_k"].max() or 0)
        start = max(total - cfg.window, 0)
        kept = total - start
        n_train = int(kept * cfg.ratios[0])
        n_valid = int(kept * (cfg.ratios[0] + cfg.ratios[1]))
        k = pl.col("_k") - start - 1
        split = (
            pl.when(pl.col("_k").is_null() | (k < 0))
            .then(None)
            .when(k < n_train)
            .then(TRAIN)
            .when(k < n_valid)
            .then(VALID)
            .otherwise(TEST)
        )
        f = f.with_columns(split.cast(pl.Int8).alias("split")).drop("_k")
        info.update(window=cfg.window, ratios=list(cfg.ratios), eligible=total)
    elif cfg.kind == "loo":
        split = (
            pl.when(~eligible)
            .then(None)
            .when(pl.col("pos") == pl.col("n") - 1)
            .then(TEST)
            .when(pl.col("pos") == pl.col("n") - 2)
            .then(VALID)
            .otherwise(TRAIN)
        )
        f = f.with_columns(split.cast(pl.Int8).alias("split"))
    elif cfg.kind == "temporal":
        c1, c2 = temporal_cutoffs(f["timestamp"], cfg.cutoffs)
        ts = pl.col("timestamp")
        split = (
            pl.when(~eligible).then(None).when(ts < c1).then(TRAIN).when(ts < c2).then(VALID).otherwise(TEST)
        )
        f = f.with_columns(split.cast(pl.Int8).alias("split"))
        info.update(cutoffs=[c1, c2])
    elif cfg.kind == "users":
        _check_ratios(cfg.ratios)
        n_users = tl.users.len()
        perm = np.random.default_rng(cfg.seed).permutation(n_users)
        n_train = int(n_users * cfg.ratios[0])
        n_valid = int(n_users * (cfg.ratios[0] + cfg.ratios[1]))
        code = np.empty(n_users, dtype=np.int8)
        code[perm[:n_train]] = TRAIN
        code[perm[n_train:n_valid]] = VALID
        code[perm[n_valid:]] = TEST
        user_split = pl.Series("_us", code).gather(f["u"])
        f = f.with_columns(
            pl.when(eligible & (pl.col("pos") == pl.col("n") - 1))
            .then(user_split)
            .cast(pl.Int8)
            .alias("split")
        )
        info.update(ratios=list(cfg.ratios), seed=cfg.seed)
    else:
        raise UserError(f"--split: unknown split {cfg.kind!r}; choose one of {', '.join(SPLITS)}")
    counts = f.group_by("split").len().drop_nulls("split")
    sizes = {SPLIT_NAMES[s]: 0 for s in range(3)}
    for s, n in counts.iter_rows():
        sizes[SPLIT_NAMES[s]] = int(n)
    for name, n in sizes.items():
        if n == 0:
            raise UserError(f"the {name} split is empty: {_why_empty(cfg, name, tl)}")
    info["targets"] = sizes
    return Timeline(frame=f, users=tl.users, items=tl.items), info


def _why_empty(cfg: SplitConfig, name: str, tl: Timeline) -> str:
    longest = int(tl.frame["n"].max() or 0)
    if cfg.kind == "tallrec":
        return (
            f"only {tl.frame.filter(pl.col('pos') >= cfg.min_history).height} events have "
            f"{cfg.min_history} earlier events of their user (longest user: {longest} events); "
            "lower --history/--min-history or use more data"
        )
    if cfg.kind == "loo":
        need = {"test": 1, "valid": 2, "train": 3}[name] + cfg.min_history
        return f"no user has {need} events (longest user: {longest}); lower --min-history or use more data"
    if cfg.kind == "temporal":
        return (
            f"no event with {cfg.min_history} earlier events of its user falls in the {name} period; "
            "move --cutoffs"
        )
    return f"too few users ({tl.users.len()}) for --ratios {','.join(map(str, cfg.ratios))}"
