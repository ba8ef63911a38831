"""TALLRec's Yes/No preference task: will the user like the target, given liked and disliked history?

English text is TALLRec's own (``Given the user's preference and unpreference, ...``), so that the preset
reproduces its published samples; the domain noun ("movie", "book", ...) is a parameter.
"""

from __future__ import annotations

import polars as pl

from llm4rec.data.tasks.common import (
    YES_NO,
    Chunk,
    TaskContext,
    base_fields,
    fmt,
    gather,
    hist_col,
    hist_label_col,
    joined,
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
    liked = joined(
        ctx,
        [pl.when(pl.col(hist_label_col(k)) == 1).then(gather(ctx.display, hist_col(k))) for k in range(n)],
    )
    disliked = joined(
        ctx,
        [pl.when(pl.col(hist_label_col(k)) == 0).then(gather(ctx.display, hist_col(k))) for k in range(n)],
    )
    yes, no = YES_NO[ctx.lang]
    text = INPUT[ctx.lang].replace("{noun}", ctx.noun)
    return chunk.targets.select(
        pl.lit(INSTRUCTION[ctx.lang].format(noun=ctx.noun)).alias("instruction"),
        fmt(text, {"liked": liked, "disliked": disliked, "target": gather(ctx.display, "i")}).alias("input"),
        pl.when(pl.col("label") == 1).then(pl.lit(yes)).otherwise(pl.lit(no)).alias("output"),
        pl.lit(NAME).alias("task"),
        *base_fields(ctx, chunk.targets, n),
        "split",
    )
