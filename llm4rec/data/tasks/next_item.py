"""BIGRec-style next-item generation: given the history, generate the next item's title.

The answer is the target shown as the history shows items (the quoted title), so a generated answer can be
grounded to an item by exact match. Every event is a target, whatever its rating (an interaction is the
signal, as in BIGRec).
"""

from __future__ import annotations

import polars as pl

from llm4rec.data.tasks.common import (
    Chunk,
    TaskContext,
    fmt,
    gather,
    history_matrix,
    literal_chars,
    sample_frame,
    span_column,
)

NAME = "next_item"

INSTRUCTION = {
    "en": "Given the {nouns} the user has interacted with, in order, recommend the {noun} the user will choose "
    "next. Answer with its title only.",
    "zh": "根据用户按时间顺序接触过的{nouns}，推荐用户接下来会选择的{noun}，只需回答其名称。",
}
INPUT = {
    "en": "The user's {nouns}, oldest first: {history}",
    "zh": "用户接触过的{nouns}（从早到晚）：{history}",
}


def build(chunk: Chunk, ctx: TaskContext) -> pl.DataFrame:
    """Next-item samples for the chunk's targets; keeps the ``split`` column."""
    text = INPUT[ctx.lang].replace("{nouns}", ctx.nouns)
    hist = history_matrix(chunk.targets, ctx.history)
    return sample_frame(
        chunk.targets,
        ctx,
        NAME,
        INSTRUCTION[ctx.lang].format(noun=ctx.noun, nouns=ctx.nouns),
        fmt(text, {"history": ctx.history_list()}),
        gather(ctx.display, "i"),
        span_column(hist, ctx.history_spans(hist, literal_chars(text, "history"))),
    )
