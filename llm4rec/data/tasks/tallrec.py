"""TALLRec's Yes/No preference task: will the user like the target, given liked and disliked history?

English text is TALLRec's own (``Given the user's preference and unpreference, ...``), so that the preset
reproduces its published samples; the domain noun ("movie", "book", ...) is a parameter.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from llm4rec.data.tasks.common import (
    LIST_SEP,
    Chunk,
    TaskContext,
    fmt,
    gather,
    hist_col,
    hist_label_col,
    history_matrix,
    item_lengths,
    list_spans,
    literal_chars,
    sample_frame,
    span_column,
)

NAME = "tallrec"

INSTRUCTION = {
    "en": "Given the user's preference and unpreference, identify whether the user will like the target "
    '{noun} by answering "Yes." or "No.".',
    "zh": "根据用户喜欢和不喜欢的{noun}，判断用户是否会喜欢目标{noun}，请回答“是”或“否”。",
}
INPUT = {
    "en": "User Preference: {liked}\nUser Unpreference: {disliked}\nWhether the user will like the target {noun} {target}?",
    "zh": "用户喜欢的{noun}：{liked}\n用户不喜欢的{noun}：{disliked}\n用户是否会喜欢目标{noun}{target}？",
}


def build(chunk: Chunk, ctx: TaskContext) -> pl.DataFrame:
    """TALLRec samples for the chunk's target rows; keeps the ``split`` column."""
    n = ctx.history
    liked = ctx.join(
        [pl.when(pl.col(hist_label_col(k)) == 1).then(gather(ctx.display, hist_col(k))) for k in range(n)]
    )
    disliked = ctx.join(
        [pl.when(pl.col(hist_label_col(k)) == 0).then(gather(ctx.display, hist_col(k))) for k in range(n)]
    )
    yes, no = ctx.yes_no
    text = INPUT[ctx.lang].replace("{noun}", ctx.noun)
    spans = _spans(chunk, ctx, text)
    return sample_frame(
        chunk.targets,
        ctx,
        NAME,
        INSTRUCTION[ctx.lang].format(noun=ctx.noun),
        fmt(text, {"liked": liked, "disliked": disliked, "target": gather(ctx.display, "i")}),
        pl.when(pl.col("label") == 1).then(pl.lit(yes)).otherwise(pl.lit(no)),
        spans,
    )


def _spans(chunk: Chunk, ctx: TaskContext, text: str) -> pl.Series:
    """``history_spans``: the liked list's items, then the disliked list's, located in the input."""
    t, n = chunk.targets, ctx.history
    hist = history_matrix(t, n)
    labels = np.stack([t[hist_label_col(k)].fill_null(-1).to_numpy() for k in range(n)], axis=1)
    lens, sep = item_lengths(ctx, hist), len(LIST_SEP[ctx.lang])
    start = np.full(len(hist), literal_chars(text, "liked"), dtype=np.int64)
    liked = (hist >= 0) & (labels == 1)
    s1, e1, d1, total = list_spans(lens, liked, start, sep)
    between = literal_chars(text, "disliked", {"liked": ""}) - literal_chars(text, "liked")
    s0, e0, d0, _ = list_spans(lens, (hist >= 0) & (labels == 0), start + total + between, sep)
    pick = liked[:, :, None]
    return span_column(hist, np.where(pick, np.stack([s1, e1, d1], 2), np.stack([s0, e0, d0], 2)))
