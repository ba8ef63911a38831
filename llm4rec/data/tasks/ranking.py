"""LlamaRec-style candidate ranking: pick the next item from a lettered pool of K candidates.

The pool is the target plus K-1 negatives drawn uniformly from the items the user never interacted with,
the target placed at a seeded random position; or, with ``--candidates-file``, a retriever's ranked list
for the user (kept in the retriever's order; a sample whose target is not among the first K is dropped
and counted, as LlamaRec does). Each sample records the pool (``candidates``, ``candidate_titles``) and
``target_index``, so every model is scored on the same pools.

How a pool is shown (``--candidate-format``; the question and all K candidates are never cut, so the
format decides what a K=20 prompt costs):

* ``compact`` (default): one line per candidate, ``A. Title``, under a shorter instruction. A title's
  trailing year ``(1972)`` is left out unless two items share the rest of the title (remakes); history
  items show the same short titles. LLaMA-family tokenizers split digits one per token, so a year costs
  about 6 tokens: on ML-100K K=20 with the LLaMA tokenizer the year alone is ~120 of a pool's tokens.
* ``compact-year``: ``A. Title (1972)``, years kept.
* ``full``: ``(A) "Title (1972)"`` under the long instruction (the format of earlier releases).

``--max-title-tokens N`` (with ``--tokenizer``) shortens titles longer than N tokens at prep time to their
first tokens and an ellipsis, counted in ``meta.json`` (``titles_shortened``); ``candidate_titles`` keeps
the full titles.

Candidates file: JSON lines ``{"user": ID, "candidates": [ITEM, ...], "split": "test"}``; ``split``
(train / valid / test, default test) says which split's samples of that user use the list; other samples
fall back to random negatives.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from llm4rec.data.splits import SPLIT_NAMES
from llm4rec.data.tasks.common import (
    QUOTES,
    Chunk,
    TaskContext,
    fmt,
    gather,
    history_matrix,
    list_of,
    literal_chars,
    sample_frame,
    span_column,
)
from llm4rec.data.tasks.negatives import NegativeSampler
from llm4rec.errors import UserError

NAME = "ranking"
LETTERS = string.ascii_uppercase

#: --candidate-format choices (the first is the default)
FORMATS = ("compact", "compact-year", "full")
INSTRUCTION = {
    "en": "Given the user's history in chronological order, recommend the {noun} from the candidate pool "
    "that the user will choose next. Answer with its index letter only.",
    "zh": "根据用户按时间顺序排列的历史记录，从候选池中推荐用户接下来最可能选择的{noun}，只需回答其序号字母。",
}
#: the compact formats' instruction: the same question in fewer tokens (26 instead of 32 with LLaMA's)
INSTRUCTION_COMPACT = {
    "en": "Given the user's history (oldest first), which candidate {noun} will the user choose next? "
    "Answer with its letter only.",
    "zh": "根据用户的历史记录（按时间顺序），用户接下来会选择哪个候选{noun}？只需回答其字母。",
}
INPUT = {
    "en": "User history: {history}\nCandidate pool:\n{pool}",
    "zh": "用户历史：{history}\n候选池：\n{pool}",
}
#: pointwise ranking (``llm4rec evaluate --rank-method pointwise``): the Yes/No question asked of each
#: candidate on its own, and its input: the sample's history part, then the candidate's whole title
POINTWISE_INSTRUCTION = {
    "en": 'Given the user\'s history, identify whether the user will choose the candidate by answering "Yes." '
    'or "No.".',
    "zh": "根据用户的历史记录，判断用户是否会选择该候选项，请回答“是”或“否”。",
}
POINTWISE_INPUT = {
    "en": '{history}\nCandidate: "{title}"',
    "zh": "{history}\n候选：“{title}”",
}


def letters(k: int) -> list[str]:
    """Index letters of a pool of ``k`` candidates."""
    if not 2 <= k <= len(LETTERS):
        raise UserError(f"--candidates: a pool needs 2 to {len(LETTERS)} candidates (index letters), got {k}")
    return list(LETTERS[:k])


_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_ELLIPSIS = "…"


def prepare_context(ctx: TaskContext) -> None:
    """Check the pool size and format, load the candidates file once, and build how items are shown."""
    letters(int(ctx.options.get("candidates", 20)))
    form = ctx.options.get("candidate_format") or FORMATS[0]
    if form not in FORMATS:
        raise UserError(f"--candidate-format: unknown format {form!r}; choose one of {', '.join(FORMATS)}")
    path = ctx.options.get("candidates_file")
    ctx.options["_external"] = load_candidates(Path(path), ctx) if path else {}
    ctx.options["_dropped_by_split"] = dict.fromkeys(SPLIT_NAMES, 0)
    titles = ctx.titles.to_list()
    if form == "compact":
        titles = short_titles(titles)
    cap = int(ctx.options.get("max_title_tokens") or 0)
    shortened = 0
    if cap:
        titles, shortened = cap_titles(titles, ctx.options.get("_tokenizer"), cap)
    ctx.options["_titles_shortened"] = shortened
    history = pl.Series("display", displays(ctx, titles), dtype=pl.Utf8)
    ctx.options["_history_display"] = history
    ctx.options["_pool_display"] = (
        history if form == "full" else pl.Series("display", displays(ctx, titles, False), dtype=pl.Utf8)
    )


def short_titles(titles: list[str]) -> list[str]:
    """Titles without their trailing ``(YYYY)`` year, except where two items with different titles would
    then read the same (remakes such as Cape Fear (1962) / (1991)): those keep the year."""
    bare = [_YEAR.sub("", t) or t for t in titles]
    full_of: dict[str, set[str]] = {}
    for t, b in zip(titles, bare):
        full_of.setdefault(b, set()).add(t)
    return [b if len(full_of[b]) == 1 else t for t, b in zip(titles, bare)]


def cap_titles(titles: list[str], tokenizer: Any, cap: int) -> tuple[list[str], int]:
    """Titles of more than ``cap`` tokens cut after their first ``cap - 1`` tokens, with an ellipsis; the
    cut is made in the original text (at the end of the last kept token's characters), so the kept part
    reads exactly as the title. Returns the titles and how many were shortened."""
    if tokenizer is None:
        raise UserError("--max-title-tokens: give the backbone's tokenizer with --tokenizer DIR")
    if cap < 2:
        raise UserError(f"--max-title-tokens: need at least 2 tokens, got {cap}")
    out, n = list(titles), 0
    if not titles:
        return out, 0
    enc = tokenizer(titles, add_special_tokens=False, return_offsets_mapping=True)
    for k, offsets in enumerate(enc["offset_mapping"]):
        if len(offsets) <= cap:
            continue
        out[k] = titles[k][: offsets[cap - 2][1]].rstrip() + _ELLIPSIS
        n += 1
    return out, n


def displays(ctx: TaskContext, titles: list[str], quoted: bool = True) -> list[str]:
    """How each item is shown: the title, plus the author where known. History lists (comma-separated)
    always quote titles, which may contain commas; the compact pool's one-title lines need no quotes."""
    lq, rq = QUOTES[ctx.lang] if quoted else ("", "")
    by = " written by " if ctx.lang == "en" else "，作者："
    return [f"{lq}{t}{rq}" + (f"{by}{a}" if a else "") for t, a in zip(titles, ctx.authors)]


def load_candidates(path: Path, ctx: TaskContext) -> dict[tuple[int, int], np.ndarray]:
    """(split code, user index) -> item indices of a retriever's ranked list."""
    if not path.is_file():
        raise UserError(f"--candidates-file: {path}: no such file")
    user_index = {u: k for k, u in enumerate(ctx.timeline.users.to_list())}
    item_index = {it: k for k, it in enumerate(ctx.item_ids.to_list())}
    k_needed = int(ctx.options.get("candidates", 20))
    out: dict[tuple[int, int], np.ndarray] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path.name}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict) or "user" not in rec or "candidates" not in rec:
                raise UserError(f"{where}: expected an object with 'user' and 'candidates'")
            split = rec.get("split", "test")
            if split not in SPLIT_NAMES:
                raise UserError(f"{where}: split {split!r} is not one of {', '.join(SPLIT_NAMES)}")
            user = user_index.get(str(rec["user"]))
            if user is None:
                continue  # a user the filters removed
            cands = [str(c) for c in rec["candidates"]]
            if len(set(cands)) != len(cands):
                raise UserError(f"{where}: the candidate list repeats an item")
            unknown = [c for c in cands if c not in item_index]
            if unknown:
                raise UserError(f"{where}: candidate {unknown[0]!r} is not an item of the log")
            if len(cands) < k_needed:
                raise UserError(f"{where}: {len(cands)} candidates, fewer than --candidates {k_needed}")
            out[(SPLIT_NAMES.index(split), user)] = np.array([item_index[c] for c in cands[:k_needed]])
    return out


def pool_source(ctx: TaskContext) -> dict[str, Any]:
    """Where the pools came from: random negatives, or a candidates file (its sha256 and the retriever's
    ``source`` object that ``llm4rec baseline --write-candidates`` puts on each line: method, k, seed)."""
    k = int(ctx.options.get("candidates", 20))
    path = ctx.options.get("candidates_file")
    if not path:
        return {"method": "random negatives", "k": k}
    from llm4rec.io import sha256_file

    out: dict[str, Any] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                source = json.loads(line).get("source")
                out = dict(source) if isinstance(source, dict) else {"method": "unknown"}
                break
    return {**out, "k": k, "file": str(path), "sha256": sha256_file(Path(path))}


def pools(
    chunk: Chunk, ctx: TaskContext, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pool item indices (rows, k), target index per row, keep mask) for the chunk's targets."""
    t = chunk.targets
    users = t["u"].to_numpy()
    target = t["i"].to_numpy().astype(np.int64)
    sampler = NegativeSampler(chunk.events, ctx.timeline.n_items)
    neg = sampler.sample(users, k - 1, rng)
    pos = rng.integers(0, k, size=len(users))
    # slot j holds the target where j == pos, else negative j (before the target) or j - 1 (after it)
    slot = np.arange(k)[None, :]
    src = np.minimum(slot - (slot > pos[:, None]), k - 2)
    pool = np.take_along_axis(neg, src, axis=1)
    pool[np.arange(len(users)), pos] = target
    keep = np.ones(len(users), dtype=bool)
    external = ctx.options.get("_external") or {}
    if external:
        splits = t["split"].to_numpy()
        for r in range(len(users)):
            ext = external.get((int(splits[r]), int(users[r])))
            if ext is None:
                continue
            hit = np.flatnonzero(ext == target[r])
            if len(hit) == 0:
                keep[r] = False
                continue
            pool[r] = ext
            pos[r] = hit[0]
    return pool, pos, keep


def build(chunk: Chunk, ctx: TaskContext) -> tuple[pl.DataFrame, dict[str, int]]:
    """Ranking samples for the chunk's targets, and counts for meta.json."""
    k = int(ctx.options.get("candidates", 20))
    labels = letters(k)
    pool, pos, keep = pools(chunk, ctx, k, ctx.rng(NAME, chunk.index))
    targets = chunk.targets.with_columns(
        [pl.Series(f"_c{j}", pool[:, j], dtype=pl.UInt32) for j in range(k)]
        + [pl.Series("_pos", pos, dtype=pl.Int64), pl.Series("_keep", keep)]
    ).filter(pl.col("_keep"))
    kept_pool = pool[keep]
    n = ctx.history
    full = ctx.options.get("candidate_format") == "full"
    shown = ctx.options.get("_history_display", ctx.display)
    pool_shown = ctx.options.get("_pool_display", ctx.display)
    history = ctx.history_list(shown)
    label = "({}) " if full else "{}. "
    # spliced into one flat concatenation: nested ones cost twice as much
    lines = [
        part
        for j in range(k)
        for part in (pl.lit(("\n" if j else "") + label.format(labels[j])), gather(pool_shown, f"_c{j}"))
    ]
    hist = history_matrix(targets, n)
    shown_len = shown.str.len_chars().to_numpy().astype(np.int64)
    item_len = np.where(hist >= 0, shown_len[np.maximum(hist, 0)], 0)
    spans = ctx.history_spans(hist, literal_chars(INPUT[ctx.lang], "history"), item_len)
    rows = sample_frame(
        targets,
        ctx,
        NAME,
        (INSTRUCTION if full else INSTRUCTION_COMPACT)[ctx.lang].format(noun=ctx.noun),
        fmt(INPUT[ctx.lang], {"history": history, "pool": lines}),
        pl.lit(pl.Series(labels)).gather(pl.col("_pos")),
        span_column(hist, spans),
        list_of(ctx.item_ids, kept_pool, "candidates"),
        list_of(ctx.titles, kept_pool, "candidate_titles"),
        pl.col("_pos").alias("target_index"),
        pl.lit(ctx.lang).alias("lang"),
    )
    if chunk.targets.height:
        by_split = ctx.options["_dropped_by_split"]
        by_split[SPLIT_NAMES[int(chunk.targets["split"][0])]] += int((~keep).sum())
    return rows, {"dropped_target_not_in_candidates": int((~keep).sum())}


def summary(ctx: TaskContext) -> dict[str, Any]:
    """Facts of the whole task for meta.json: the pool format, and titles shortened by the title cap."""
    out: dict[str, Any] = {"candidate_format": ctx.options.get("candidate_format") or FORMATS[0]}
    out["candidates_pool"] = pool_source(ctx)
    out["dropped_target_not_in_candidates_by_split"] = dict(ctx.options.get("_dropped_by_split", {}))
    if ctx.options.get("max_title_tokens"):
        out["max_title_tokens"] = int(ctx.options["max_title_tokens"])
        out["titles_shortened"] = int(ctx.options.get("_titles_shortened", 0))
    return out


def sample_lang(sample: dict[str, Any], where: str = "sample") -> str:
    """The prompt language of a ranking sample (its ``lang`` field; samples prepared before the field
    existed are read as English, the question they were scored with)."""
    lang = sample.get("lang", "en")
    if lang not in INPUT:
        raise UserError(f"{where}: 'lang' is {lang!r}; expected one of {', '.join(INPUT)}")
    return lang


def history_part(sample: dict[str, Any], where: str = "sample") -> str:
    """The history part of a ranking sample's input (its header and the history list, without the
    candidate pool), found from the sample's ``history_spans``: the input up to the end of its newest
    history item, or only the header of :data:`INPUT` when every item was dropped to fit a budget."""
    from llm4rec.data.tokenize import history_spans

    if "history_spans" not in sample:
        raise UserError(
            f"{where}: pointwise ranking needs the sample's 'history_spans' (written by prep) or "
            "'pointwise_inputs' (one Yes/No input per candidate)"
        )
    spans = history_spans(sample, where)
    text = str(sample.get("input", ""))
    end = (
        max(e for _, e, _ in spans) if spans else literal_chars(INPUT[sample_lang(sample, where)], "history")
    )
    return text[:end].rstrip()


def pointwise_prompts(sample: dict[str, Any], where: str = "sample") -> list[dict[str, Any]]:
    """One Yes/No sample per candidate of a ranking sample, in pool order: :data:`POINTWISE_INSTRUCTION`
    and :data:`POINTWISE_INPUT` in the sample's language, built from its structured fields (history part,
    ``candidate_titles``). Every candidate's input starts with the same history part, which keeps the
    sample's ``history_spans`` (so truncation drops the same items, and scoring computes the history once
    per sample)."""
    lang = sample_lang(sample, where)
    titles = sample.get("candidate_titles")
    cands = sample.get("candidates")
    if not isinstance(titles, list) or not isinstance(cands, list) or len(titles) != len(cands):
        raise UserError(
            f"{where}: pointwise ranking needs 'candidate_titles', one per candidate, or 'pointwise_inputs' "
            "(one Yes/No input per candidate); use --rank-method letters, or score a grouped Yes/No file "
            "with --group-by"
        )
    history = history_part(sample, where)
    extra = {"history_spans": sample["history_spans"]} if sample.get("history_spans") else {}
    question = POINTWISE_INSTRUCTION[lang]
    return [
        {"instruction": question, "input": POINTWISE_INPUT[lang].format(history=history, title=t), **extra}
        for t in titles
    ]


def reorder(sample: dict[str, Any], order: list[int]) -> dict[str, Any]:
    """The same ranking sample with its pool shown in another order: ``order[j]`` is the old position of
    the candidate now shown at letter j. The pool is the last K lines of ``input`` (this task writes it
    there, one ``A. title`` or ``(A) title`` line per candidate), so only those lines are rewritten and
    the history (and its spans) stays as it was."""
    k = len(sample["candidates"])
    if sorted(order) != list(range(k)):
        raise ValueError(f"order must be a permutation of range({k}), got {order}")
    labels = letters(k)
    head, *lines = sample["input"].rsplit("\n", k)
    full = lines[0].startswith("(")
    shown = [
        line[len(f"({labels[j]}) ") if full else len(f"{labels[j]}. ") :] for j, line in enumerate(lines)
    ]
    label = "({}) " if full else "{}. "
    target = order.index(sample["target_index"])
    return {
        **sample,
        "input": "\n".join([head, *(label.format(labels[j]) + shown[o] for j, o in enumerate(order))]),
        "candidates": [sample["candidates"][o] for o in order],
        "candidate_titles": [sample["candidate_titles"][o] for o in order],
        "target_index": target,
        "output": labels[target],
    }
