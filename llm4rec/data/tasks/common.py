"""What every task builder shares: the context (titles, language, nouns), history columns, base fields."""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa

from llm4rec.data.splits import Timeline
from llm4rec.errors import UserError

LANGS = ("en", "zh")
#: domain noun -> (English singular, English plural, Chinese)
NOUNS: dict[str, tuple[str, str, str]] = {
    "movie": ("movie", "movies", "电影"),
    "book": ("book", "books", "书籍"),
    "product": ("product", "products", "商品"),
    "item": ("item", "items", "物品"),
}
#: the Yes/No answers of pointwise tasks, per language
YES_NO = {"en": ("Yes.", "No."), "zh": ("是", "否")}
QUOTES = {"en": ('"', '"'), "zh": ("“", "”")}
LIST_SEP = {"en": ", ", "zh": "，"}


@dataclass
class Chunk:
    """A slice of whole users: ``events`` (all their events, with history columns) and ``targets``."""

    index: int
    events: pl.DataFrame
    targets: pl.DataFrame


def hist_col(k: int) -> str:
    """Name of the k-th history item column (0 = oldest of the window)."""
    return f"_h{k}"


def hist_label_col(k: int) -> str:
    """Name of the k-th history label column."""
    return f"_hl{k}"


@dataclass
class TaskContext:
    """Everything a task needs besides the target rows: items, language, nouns, sizes, seed."""

    timeline: Timeline
    lang: str = "en"
    domain: str = "item"
    history: int = 10
    seed: int = 0
    #: per-task options (e.g. ranking's ``candidates``), from the command line
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.lang not in LANGS:
            raise UserError(f"--lang: unknown language {self.lang!r}; choose one of {', '.join(LANGS)}")
        if self.domain not in NOUNS:
            raise UserError(f"--domain: unknown domain {self.domain!r}; choose one of {', '.join(NOUNS)}")
        items = self.timeline.items
        self.item_ids: pl.Series = items["item"]
        self.titles: pl.Series = items["title"].fill_null("")
        lq, rq = QUOTES[self.lang]
        #: each item's author (None where unknown)
        self.authors: list[str | None] = _attribute(items["attributes"], "author")
        by = " written by " if self.lang == "en" else "，作者："
        shown = [
            f"{lq}{t}{rq}" + (f"{by}{a}" if a else "") for t, a in zip(self.titles.to_list(), self.authors)
        ]
        #: how an item is shown in a prompt: the quoted title (plus the author where one is known)
        self.display: pl.Series = pl.Series("display", shown, dtype=pl.Utf8)
        #: characters of each item's display (offsets of history items in the input are built from them)
        self.display_len: np.ndarray = self.display.str.len_chars().to_numpy().astype(np.int64)
        self.categories: pl.Series = items["categories"]
        self.years: list[str | None] = _attribute(items["attributes"], "year")

    @property
    def noun(self) -> str:
        """The domain noun in the prompt language."""
        en, _, zh = NOUNS[self.domain]
        return zh if self.lang == "zh" else en

    @property
    def nouns(self) -> str:
        """The plural domain noun in the prompt language."""
        _, en, zh = NOUNS[self.domain]
        return zh if self.lang == "zh" else en

    @property
    def yes_no(self) -> tuple[str, str]:
        """The pointwise tasks' two answers in the prompt language: ("Yes.", "No.") or ("是", "否")."""
        return YES_NO[self.lang]

    def join(self, parts: list[pl.Expr]) -> pl.Expr:
        """Join the non-null ``parts`` with the language's list separator ('' when all are null)."""
        return pl.concat_str(parts, separator=LIST_SEP[self.lang], ignore_nulls=True)

    def history_list(self, shown: pl.Series | None = None) -> pl.Expr:
        """The history window as one list, oldest first: each item as ``shown`` gives it (default
        :attr:`display`), joined with the language's separator."""
        shown = self.display if shown is None else shown
        return self.join([gather(shown, hist_col(k)) for k in range(self.history)])

    def history_spans(self, hist: np.ndarray, start: int, item_len: np.ndarray | None = None) -> np.ndarray:
        """``(rows, n, 3)`` start, end and drop-end offsets of the history items of ``hist`` (rows, n;
        -1 = empty slot) in a list joined as :meth:`history_list` does, beginning at character ``start``.

        ``item_len`` (rows, n) is each slot's characters; default: its :attr:`display`'s."""
        item_len = item_lengths(self, hist) if item_len is None else item_len
        begin = np.full(len(hist), start, dtype=np.int64)
        s, e, d, _ = list_spans(item_len, hist >= 0, begin, len(LIST_SEP[self.lang]))
        return np.stack([s, e, d], axis=2)

    def rng(self, task: str, chunk: int) -> np.random.Generator:
        """A generator that depends only on the seed, the task and the chunk (so outputs are reproducible)."""
        code = sum((k + 1) * ord(c) for k, c in enumerate(task))
        return np.random.default_rng([self.seed, code, chunk])


def _attribute(attrs: pl.Series, key: str) -> list[str | None]:
    out = []
    for a in attrs.to_list():
        v = json.loads(a).get(key) if a else None
        out.append(str(v) if v not in (None, "") else None)
    return out


def add_history(chunk: pl.DataFrame, length: int, strict_time: bool) -> pl.DataFrame:
    """Add ``length`` history columns (item index and label, oldest first) from the user's earlier events.

    ``chunk`` holds whole users in timeline order. A slot is null where the user has fewer earlier events,
    or, with ``strict_time``, where the earlier event is not strictly earlier in time.
    """
    cols = []
    for k in range(length):
        shift = length - k
        ok = pl.col("pos") >= shift
        if strict_time:
            ok = ok & (pl.col("timestamp").shift(shift) < pl.col("timestamp"))
        cols.append(pl.when(ok).then(pl.col("i").shift(shift)).alias(hist_col(k)))
        cols.append(pl.when(ok).then(pl.col("label").shift(shift)).alias(hist_label_col(k)))
    return chunk.with_columns(cols)


def gather(series: pl.Series, idx: str | pl.Expr) -> pl.Expr:
    """Look up ``series`` (indexed by item index) at the item indices in column ``idx``."""
    return pl.lit(series).gather(pl.col(idx) if isinstance(idx, str) else idx)


def history_matrix(targets: pl.DataFrame, length: int) -> np.ndarray:
    """The history item indices of each target row as an int64 matrix, -1 where a slot is empty."""
    cols = [targets[hist_col(k)].fill_null(-1).cast(pl.Int64).to_numpy() for k in range(length)]
    return np.stack(cols, axis=1) if cols else np.empty((targets.height, 0), dtype=np.int64)


def list_of(lookup: pl.Series, matrix: np.ndarray, name: str) -> pl.Series:
    """Per row, ``lookup`` at the row's non-negative entries of ``matrix`` (a list column)."""
    rows, width = matrix.shape
    valid = matrix >= 0
    if valid.all():
        flat = lookup.gather(matrix.ravel())
        return flat.reshape((rows, width)).cast(pl.List(lookup.dtype)).alias(name)
    flat = lookup.gather(matrix[valid])
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(valid.sum(axis=1), out=offsets[1:])
    # string_view keeps the arrow round trip zero-copy
    arr = pa.LargeListArray.from_arrays(
        pa.array(offsets), flat.to_arrow(compat_level=pl.CompatLevel.newest())
    )
    return pl.Series(name, arr)


def base_fields(
    ctx: TaskContext, targets: pl.DataFrame, length: int, spans: pl.Series | None = None
) -> list[pl.Expr | pl.Series]:
    """Fields every sample carries after its task fields: ids, label, time, the history's item ids and,
    where the input shows the history, ``history_spans`` (see :func:`span_column`)."""
    fields: list[pl.Expr | pl.Series] = [
        pl.lit(ctx.timeline.users).gather(pl.col("u")).alias("user_id"),
        gather(ctx.item_ids, "i").alias("item_id"),
        pl.col("label").cast(pl.Int64).alias("label"),
        pl.col("timestamp"),
        list_of(ctx.item_ids, history_matrix(targets, length), "history"),
    ]
    if spans is not None:
        fields.append(spans)
    return fields


def sample_frame(
    targets: pl.DataFrame,
    ctx: TaskContext,
    task: str,
    instruction: str,
    input_text: pl.Expr,
    output: pl.Expr,
    spans: pl.Series,
    *extra: pl.Expr | pl.Series,
) -> pl.DataFrame:
    """One row per target: instruction, input, output and task, then :func:`base_fields`, ``extra`` columns
    and ``split`` (kept for the writer)."""
    return targets.select(
        pl.lit(instruction).alias("instruction"),
        input_text.alias("input"),
        output.alias("output"),
        pl.lit(task).alias("task"),
        *base_fields(ctx, targets, ctx.history, spans),
        *extra,
        "split",
    )


def literal_chars(text: str, field_name: str, static: dict[str, str] | None = None) -> int:
    """Characters of ``text`` (a format string) before ``{field_name}``, with earlier fields filled from
    ``static`` (every field before it must be there)."""
    n = 0
    for literal, name, _, _ in string.Formatter().parse(text):
        n += len(literal)
        if name is None or name == field_name:
            return n
        n += len((static or {})[name])
    raise KeyError(field_name)


def list_spans(
    item_len: np.ndarray, members: np.ndarray, start: np.ndarray, sep_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where each member of one joined list lands in the input: (start, end, drop_end, list length).

    ``item_len`` (rows, n) are the characters of each history slot's display, ``members`` (rows, n) which
    slots the list shows (oldest first), ``start`` (rows,) where the list begins. ``drop_end`` covers the
    item and the separator after it (the last member has none): removing the spans of the oldest items
    of a list leaves exactly the list joined without them.
    """
    lens = np.where(members, item_len, 0)
    count = np.cumsum(members, axis=1)
    before = np.cumsum(lens, axis=1) - lens + (count - members) * sep_len
    s = start[:, None] + before
    e = s + lens
    last = members & (count == count[:, -1:])
    drop = np.where(last, e, e + sep_len)
    total = lens.sum(axis=1) + np.maximum(count[:, -1] - 1, 0) * sep_len
    return s, e, drop, total


def span_column(
    hist: np.ndarray, spans: np.ndarray, shown: np.ndarray | None = None, name: str = "history_spans"
) -> pl.Series:
    """``history_spans`` per row: ``[start, end, drop_end]`` character offsets in ``input`` of each history
    item (aligned with ``history``, oldest first). ``input[start:end]`` is the item as shown;
    removing ``input[start:drop_end]`` for the oldest d items gives the input with those items left out.
    Rows where ``shown`` is False (the input does not list the history) get an empty list.

    ``spans`` is (rows, n, 3) over the history slots of ``hist`` (rows, n; -1 = empty slot).
    """
    valid = hist >= 0
    if shown is not None:
        valid = valid & shown[:, None]
    flat = spans[valid].astype(np.int64).ravel()
    offsets = np.zeros(hist.shape[0] + 1, dtype=np.int64)
    np.cumsum(valid.sum(axis=1), out=offsets[1:])
    triples = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.int64()), 3)
    return pl.Series(name, pa.LargeListArray.from_arrays(pa.array(offsets), triples))


def item_lengths(ctx: TaskContext, hist: np.ndarray) -> np.ndarray:
    """Characters of each history slot's display (0 for an empty slot)."""
    return np.where(hist >= 0, ctx.display_len[np.maximum(hist, 0)], 0)


def fmt(text: str, fields: dict[str, pl.Expr | list[pl.Expr]]) -> pl.Expr:
    """A vectorised ``text.format(**fields)``: the literal pieces and the field columns concatenated.

    A field given as a list of expressions is spliced in (one flat concatenation copies the text once).
    """
    parts: list[pl.Expr] = []
    for literal, name, _, _ in string.Formatter().parse(text):
        if literal:
            parts.append(pl.lit(literal))
        if name is not None:
            value = fields[name]
            parts.extend(value if isinstance(value, list) else [value])
    return pl.concat_str(parts)
