"""The two canonical tables every source becomes, and the filters applied to them.

``interactions`` (one row per event, in source-file order):

=============  ========  ==========================================================================
column         type      meaning
=============  ========  ==========================================================================
``user``       str       user id as written in the source
``item``       str       item id as written in the source
``rating``     f64       explicit rating (null where the source has only implicit events)
``label``      i8        1 = liked (``rating > threshold``, or the source's own label), else 0
``timestamp``  i64       seconds since the epoch (null where the source has no times)
=============  ========  ==========================================================================

``items``: ``item`` (str), ``title`` (str), ``categories`` (list of str: genres, product categories;
used by InstructRec's preferences and intentions), ``attributes`` (str: a JSON object of whatever else the
source knows, e.g. ``{"year": "1995"}`` or ``{"author": ..., "publisher": ...}``).

Both are written as Parquet beside the samples (``interactions.parquet``, ``items.parquet``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from llm4rec.data.readers import ReadReport
from llm4rec.errors import UserError
from llm4rec.io import sha256_file

INTERACTION_SCHEMA: dict[str, Any] = {
    "user": pl.Utf8,
    "item": pl.Utf8,
    "rating": pl.Float64,
    "label": pl.Int8,
    "timestamp": pl.Int64,
}
ITEM_SCHEMA: dict[str, Any] = {
    "item": pl.Utf8,
    "title": pl.Utf8,
    "categories": pl.List(pl.Utf8),
    "attributes": pl.Utf8,
}

#: how repeated (user, item) events are merged; see :func:`dedup`
DEDUP_RULES = ("last", "first", "none")


@dataclass
class Canonical:
    """A source read into the canonical tables, with what reading it cost."""

    interactions: pl.DataFrame
    items: pl.DataFrame
    #: source file name -> sha256 of its bytes
    sources: dict[str, str] = field(default_factory=dict)
    #: file name -> lines skipped under --skip-bad-lines
    skipped_lines: dict[str, int] = field(default_factory=dict)
    #: counts of rows removed by each filter, in the order applied
    filtered: dict[str, int] = field(default_factory=dict)
    #: the domain noun the source suggests ("movie", "book", "product")
    domain: str = "item"


def assemble(
    interactions: pl.DataFrame,
    items: pl.DataFrame,
    files: list[Path],
    report: ReadReport,
    *,
    domain: str,
    filtered: dict[str, int] | None = None,
) -> Canonical:
    """Conform both tables and record the source files' hashes and the lines skipped reading them."""
    inter, it = conform(interactions, items)
    return Canonical(
        interactions=inter,
        items=it,
        sources={f.name: sha256_file(f) for f in files},
        skipped_lines=dict(report.skipped),
        filtered=dict(filtered or {}),
        domain=domain,
    )


def conform(interactions: pl.DataFrame, items: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cast both tables to the canonical schema (column order and types)."""
    inter = interactions.select(
        [
            (pl.col(c) if c in interactions.columns else pl.lit(None)).cast(t).alias(c)
            for c, t in INTERACTION_SCHEMA.items()
        ]
    )
    it = items.select(
        [
            (
                pl.col(c)
                if c in items.columns
                else pl.lit([] if c == "categories" else ("{}" if c == "attributes" else None))
            )
            .cast(t)
            .alias(c)
            for c, t in ITEM_SCHEMA.items()
        ]
    )
    return inter, it


def dedup(inter: pl.DataFrame, rule: str, user: str = "user", item: str = "item") -> pl.DataFrame:
    """Merge repeated (user, item) events.

    ``last``: keep the user's most recent event for the item (latest timestamp; on equal or missing times
    the later line in the file), so a re-rating replaces the old opinion. ``first``: keep the earliest.
    ``none``: keep every event. The kept rows stay in file order.
    """
    if rule == "none":
        return inter
    if rule not in DEDUP_RULES:
        raise UserError(f"--dedup: unknown rule {rule!r}; choose one of {', '.join(DEDUP_RULES)}")
    if inter.schema[user].is_integer() and inter.schema[item].is_integer():
        # encoded ids: one int64 key per pair is far cheaper to hash than a struct
        n_items = int(inter[item].max() or 0) + 1
        pair = (pl.col(user).cast(pl.Int64) * n_items + pl.col(item).cast(pl.Int64)).alias("_pair")
    else:
        pair = pl.struct(user, item).alias("_pair")
    if inter.select(pair.n_unique()).item() == inter.height:
        return inter
    df = inter.with_row_index("_seq")
    repeated = df.select(pair.is_duplicated()).to_series()
    dups = df.filter(repeated).sort(["timestamp", "_seq"], nulls_last=False)
    keep = dups.unique([user, item], keep=rule)["_seq"]
    return df.filter(~repeated | pl.col("_seq").is_in(keep.implode())).drop("_seq")


def k_core(inter: pl.DataFrame, k: int, user: str = "user", item: str = "item") -> pl.DataFrame:
    """Repeatedly drop users and items with fewer than ``k`` events until none is left (k-core)."""
    if k <= 1:
        return inter
    while True:
        n = inter.height
        inter = inter.filter((pl.len().over(user) >= k) & (pl.len().over(item) >= k))
        if inter.height == n:
            return inter


@dataclass
class Encoded:
    """The interactions with dense integer ids, the form every later step works on (fast at any scale).

    ``frame``: ``u``, ``i`` (u32), ``rating``, ``label``, ``timestamp``, in file order. ``users[u]`` and
    ``items[i]`` (a row of the item table; title null where the item table lacks the item) give the ids
    back. Codes follow first appearance in the file.
    """

    frame: pl.DataFrame
    users: pl.Series
    items: pl.DataFrame


def encode(inter: pl.DataFrame, items: pl.DataFrame) -> Encoded:
    """Replace user and item ids by dense codes in order of first appearance."""
    users = inter["user"].unique(maintain_order=True)
    item_ids = inter["item"].unique(maintain_order=True)
    ucode = pl.DataFrame({"user": users}).with_row_index("u")
    icode = pl.DataFrame({"item": item_ids}).with_row_index("i")
    # one id column per join keeps the peak memory near one copy of the table
    u = inter.select("user").join(ucode, on="user", how="left", maintain_order="left")["u"]
    i = inter.select("item").join(icode, on="item", how="left", maintain_order="left")["i"]
    frame = pl.DataFrame([u, i, inter["rating"], inter["label"], inter["timestamp"]])
    items = items.unique("item", keep="first", maintain_order=True)
    table = icode.join(items, on="item", how="left", maintain_order="left").drop("i")
    return Encoded(frame=frame, users=users, items=table)


def drop_untitled(enc: Encoded) -> Encoded:
    """Events whose item has no title in the item table are dropped (prompts need titles)."""
    titled = enc.items["title"].is_not_null() & (enc.items["title"] != "")
    if titled.all():
        return enc
    keep = pl.Series(titled.to_numpy()).gather(enc.frame["i"])
    return Encoded(frame=enc.frame.filter(keep), users=enc.users, items=enc.items)


def compact(enc: Encoded) -> Encoded:
    """Renumber users and items densely after filters removed some (order of codes kept)."""
    frame = enc.frame
    u = frame["u"].to_numpy()
    i = frame["i"].to_numpy()
    new_u = _dense(u, enc.users.len())
    new_i = _dense(i, enc.items.height)
    if new_u is None and new_i is None:
        return enc
    users, items = enc.users, enc.items
    cols = []
    if new_u is not None:
        present, mapping = new_u
        users = users.filter(pl.Series(present))
        cols.append(pl.Series("u", mapping[u], dtype=pl.UInt32))
    if new_i is not None:
        present, mapping = new_i
        items = items.filter(pl.Series(present))
        cols.append(pl.Series("i", mapping[i], dtype=pl.UInt32))
    return Encoded(frame=frame.with_columns(cols), users=users, items=items)


def _dense(codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    present = np.zeros(size, dtype=bool)
    present[codes] = True
    if present.all():
        return None
    return present, (np.cumsum(present) - 1).astype(np.uint32)


def write_tables(canon: Canonical, out: Path) -> None:
    """Write ``interactions.parquet`` and ``items.parquet`` into ``out`` (a directory being built)."""
    canon.interactions.write_parquet(out / "interactions.parquet", statistics=False)
    canon.items.write_parquet(out / "items.parquet", statistics=False)


def read_tables(out: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read the canonical tables back from a prepared directory."""
    for name in ("interactions.parquet", "items.parquet"):
        if not (out / name).is_file():
            raise UserError(f"{out / name}: no such file; run data_prep first")
    return pl.read_parquet(out / "interactions.parquet"), pl.read_parquet(out / "items.parquet")
