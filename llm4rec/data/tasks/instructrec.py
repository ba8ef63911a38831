"""InstructRec-style instructions: preference x intention x task form, in English and Chinese.

A template is one combination of

* preference: ``none``; ``implicit`` (the user's recent history); ``explicit`` (a stated taste: the two
  categories most frequent among the liked history items, ties going to the category more common overall);
* intention: ``none``; ``vague`` (a category-level wish: the target's first category); ``specific`` (the
  target's categories, up to three, and its year where known);
* task form: ``pointwise`` (Yes/No on one candidate: the target or a sampled negative, half each),
  ``pairwise`` (which of two: the target and a negative), ``matching`` (name the item: the answer is the
  target's title), ``reranking`` (which of R candidates to put first).

Preference ``none`` with intention ``none`` gives the model nothing to go on and is left out, so there are
8 x 4 = 32 templates per language. Template ids read ``<lang>-<form>-<preference>-<intention>``. Targets are
the liked events (label 1): InstructRec's positives. Negatives are items the user never interacted with.
Where an item lacks the categories a template needs, the sample falls back to the nearest template that
fits (explicit -> implicit preference, specific -> vague -> no intention), and records the one used.
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import product

import numpy as np
import polars as pl

from llm4rec.data.tasks.common import (
    Chunk,
    TaskContext,
    fmt,
    gather,
    hist_label_col,
    history_matrix,
    list_of,
    literal_chars,
    span_column,
)
from llm4rec.data.tasks.negatives import NegativeSampler
from llm4rec.data.tasks.ranking import letters
from llm4rec.errors import UserError

NAME = "instructrec"
FORMS = ("pointwise", "pairwise", "matching", "reranking")
PREFERENCES = ("none", "implicit", "explicit")
INTENTIONS = ("none", "vague", "specific")

PREFERENCE_TEXT = {
    "en": {
        "none": "",
        "implicit": "The user has interacted with these {nouns}, oldest first: {history}.\n",
        "explicit": 'The user describes their taste: "I usually enjoy {explicit} {nouns}."\n',
    },
    "zh": {
        "none": "",
        "implicit": "用户按时间顺序接触过这些{nouns}：{history}。\n",
        "explicit": "用户这样描述自己的口味：“我通常喜欢{explicit}类的{nouns}。”\n",
    },
}
INTENTION_TEXT = {
    "en": {
        "none": "",
        "vague": "Right now the user wants a {noun} in the {vague} category.\n",
        "specific": "Right now the user is looking for {specific}.\n",
    },
    "zh": {
        "none": "",
        "vague": "用户现在想找一部{vague}类的{noun}。\n",
        "specific": "用户现在想找{specific}。\n",
    },
}
FORM_TEXT = {
    "en": {
        "pointwise": (
            'Decide whether the user will like the candidate {noun}. Answer "Yes." or "No.".',
            "Candidate {noun}: {a}",
        ),
        "pairwise": (
            "Decide which of the two {nouns} the user will prefer. Answer with its letter only.",
            "(A) {a}\n(B) {b}",
        ),
        "matching": (
            "Name the {noun} the user will choose next. Answer with its title only.",
            "Which {noun} will it be?",
        ),
        "reranking": (
            "Rank the candidate {nouns} by how likely the user is to choose them, and answer with the letter "
            "of the one to put first.",
            "Candidates:\n{pool}",
        ),
    },
    "zh": {
        "pointwise": ("判断用户是否会喜欢候选{noun}，请回答“是”或“否”。", "候选{noun}：{a}"),
        "pairwise": ("判断用户会更喜欢下面两个{nouns}中的哪一个，只需回答其字母。", "(A) {a}\n(B) {b}"),
        "matching": ("说出用户接下来会选择的{noun}，只需回答其名称。", "会是哪一个{noun}？"),
        "reranking": (
            "按用户选择的可能性对候选{nouns}排序，并回答应排在第一位的候选的字母。",
            "候选：\n{pool}",
        ),
    },
}
_AND = {"en": " and ", "zh": "和"}


def templates(lang: str) -> dict[str, tuple[str, str, str, str, str]]:
    """Template id -> (form, preference, intention, instruction, input) for one language."""
    out = {}
    for form, pref, intent in product(FORMS, PREFERENCES, INTENTIONS):
        if pref == "none" and intent == "none":
            continue
        instruction, body = FORM_TEXT[lang][form]
        text = PREFERENCE_TEXT[lang][pref] + INTENTION_TEXT[lang][intent] + body
        out[f"{lang}-{form}-{pref}-{intent}"] = (form, pref, intent, instruction, text)
    return out


def _parse_mix(text: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for part in str(text).split(","):
        if not part.strip():
            continue
        name, _, w = part.partition("=")
        name = name.strip()
        if name not in FORMS:
            raise UserError(f"--instructrec-mix: unknown task form {name!r}; choose from {', '.join(FORMS)}")
        try:
            weights[name] = float(w) if w else 1.0
        except ValueError:
            raise UserError(f"--instructrec-mix: weight of {name!r} is not a number: {w!r}") from None
        if weights[name] < 0:
            raise UserError(f"--instructrec-mix: weight of {name!r} is negative")
    if not weights or sum(weights.values()) <= 0:
        raise UserError("--instructrec-mix: give at least one task form a positive weight")
    return weights


def _parse_kinds(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    kinds = [k.strip() for k in str(text).split(",") if k.strip()]
    for k in kinds:
        if k not in allowed:
            raise UserError(f"{flag}: unknown kind {k!r}; choose from {', '.join(allowed)}")
    if not kinds:
        raise UserError(f"{flag}: give at least one of {', '.join(allowed)}")
    return kinds


def prepare_context(ctx: TaskContext) -> None:
    """Parse the mix, and precompute per-item category indices and intention texts."""
    o = ctx.options
    mix = _parse_mix(o.get("instructrec_mix", "pointwise=1,pairwise=1,matching=1,reranking=1"))
    prefs = _parse_kinds(
        o.get("instructrec_preferences", ",".join(PREFERENCES)), PREFERENCES, "--instructrec-preferences"
    )
    intents = _parse_kinds(
        o.get("instructrec_intentions", ",".join(INTENTIONS)), INTENTIONS, "--instructrec-intentions"
    )
    combos = [(p, i) for p in prefs for i in intents if not (p == "none" and i == "none")]
    if not combos:
        raise UserError(
            "--instructrec-preferences none with --instructrec-intentions none leaves no template"
        )
    letters(int(o.get("rerank_candidates", 5)))
    cats = ctx.categories.to_list()
    freq = Counter(c for cs in cats for c in (cs or []))
    names = [c for c, _ in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))][:256]
    index = {c: k for k, c in enumerate(names)}
    multi = np.zeros((len(cats), max(len(names), 1)), dtype=np.int32)
    for row, cs in enumerate(cats):
        for c in cs or []:
            if c in index:
                multi[row, index[c]] = 1
    lang = ctx.lang
    first = [cs[0] if cs else None for cs in cats]
    specific = []
    for cs, year in zip(cats, ctx.years):
        cs = list(cs or [])[:3]
        if not cs and not year:
            specific.append(None)
            continue
        specific.append(_specific(lang, ctx.noun, cs, year))
    o["_ir"] = {
        "mix": mix,
        "combos": combos,
        "cat_names": pl.Series(names or [""], dtype=pl.Utf8),
        "multi": multi,
        "first_cat": pl.Series(first, dtype=pl.Utf8),
        "specific": pl.Series(specific, dtype=pl.Utf8),
        "templates": templates(lang),
    }


def _specific(lang: str, noun: str, cats: list[str], year: str | None) -> str:
    if lang == "zh":
        kind = ("、".join(cats) + "类的") if cats else ""
        when = f"{year}年的" if year else ""
        return f"一部{when}{kind}{noun}"
    text = f"a {noun}"
    if cats:
        text += " in " + ", ".join(cats[:-1]) + (" and " if len(cats) > 1 else "") + cats[-1]
    if year:
        text += f" from {year}"
    return text


def build(chunk: Chunk, ctx: TaskContext) -> tuple[pl.DataFrame, dict[str, int]]:
    """InstructRec samples for the chunk's liked targets, and template counts for meta.json."""
    ir = ctx.options["_ir"]
    rng = ctx.rng(NAME, chunk.index)
    t = chunk.targets.filter(pl.col("label") == 1)
    rows = t.height
    if rows == 0:
        return _empty(ctx), {}
    n = ctx.history
    hist = history_matrix(t, n)
    liked = np.stack([t[hist_label_col(k)].fill_null(0).to_numpy() == 1 for k in range(n)], axis=1)
    target = t["i"].to_numpy().astype(np.int64)
    forms = list(ir["mix"])
    form_idx, pref, intent, top1, top2 = _choose_templates(ir, rng, hist, liked, target)
    form = np.array(forms, dtype=object)[form_idx]
    pool, pos, label, shown = _candidates(chunk, ctx, rng, t, form, target)
    width = pool.shape[1]
    # template code: form (in FORMS order) x preference x intention
    code = np.array([FORMS.index(f) for f in forms])[form_idx] * 9 + pref * 3 + intent
    frame = t.with_columns(
        pl.Series("_row", np.arange(rows)),
        pl.Series("_tcode", code),
        pl.Series("_shown", shown, dtype=pl.Int64),
        pl.Series("_label", label),
        pl.Series("_pos", pos),
        pl.Series("_t1", top1, dtype=pl.Int64),
        pl.Series("_t2", top2, dtype=pl.Int64),
        *[pl.Series(f"_c{j}", pool[:, j]) for j in range(width)],
        list_of(ctx.item_ids, pool, "candidates"),
    ).with_columns(
        [pl.when(pl.col(f"_c{j}") >= 0).then(pl.col(f"_c{j}")).alias(f"_c{j}") for j in range(width)]
    )
    out, used = _render(frame, ctx, ir, _fields(ctx, ir, width))
    hist_ids = list_of(ctx.item_ids, hist, "history")
    out = out.insert_column(out.columns.index("timestamp") + 1, hist_ids)
    # only the implicit preference shows the history; it opens the input
    begin = literal_chars(PREFERENCE_TEXT[ctx.lang]["implicit"], "history", {"nouns": ctx.nouns})
    spans = span_column(hist, ctx.history_spans(hist, begin), shown=pref == _IMPLICIT)
    out = out.insert_column(out.columns.index("history") + 1, spans)
    return out, {f"template:{k}": v for k, v in sorted(used.items())}


# preference and intention codes: indices into PREFERENCES / INTENTIONS (0 = none)
_NONE, _IMPLICIT, _EXPLICIT, _VAGUE, _SPECIFIC = 0, 1, 2, 1, 2


def _choose_templates(ir: dict, rng: np.random.Generator, hist: np.ndarray, liked: np.ndarray, target):
    """Form index, preference and intention codes per row, and the stated top-2 liked categories.

    The form is drawn by the mix weights, then a (preference, intention) pair uniformly; a row whose data
    cannot fill the drawn template falls back to the nearest one it supports.
    """
    rows, n = hist.shape
    forms = list(ir["mix"])
    w = np.array([ir["mix"][f] for f in forms], dtype=float)
    form_idx = rng.choice(len(forms), size=rows, p=w / w.sum())
    combo_idx = rng.integers(0, len(ir["combos"]), size=rows)
    pref = np.array([PREFERENCES.index(p) for p, _ in ir["combos"]])[combo_idx]
    intent = np.array([INTENTIONS.index(i) for _, i in ir["combos"]])[combo_idx]

    # explicit preference: top-2 categories of the liked history items
    multi = ir["multi"]
    counts = np.zeros((rows, multi.shape[1]), dtype=np.int32)
    for k in range(n):
        ok = liked[:, k] & (hist[:, k] >= 0)
        counts[ok] += multi[hist[ok, k]]
    order = np.argsort(-counts, axis=1, kind="stable")[:, :2]
    top = np.take_along_axis(counts, order, axis=1)
    top1 = np.where(top[:, 0] > 0, order[:, 0], -1)
    top2 = np.where(top[:, 1] > 0, order[:, 1], -1)
    has_hist = (hist >= 0).any(axis=1)
    first_cat = ir["first_cat"].gather(target).is_not_null().to_numpy()
    has_specific = ir["specific"].gather(target).is_not_null().to_numpy()
    intent = np.where((intent == _SPECIFIC) & ~has_specific, _VAGUE, intent)
    intent = np.where((intent == _VAGUE) & ~first_cat, _NONE, intent)
    pref = np.where((pref == _EXPLICIT) & (top1 < 0), _IMPLICIT, pref)
    pref = np.where((pref == _NONE) & (intent == _NONE), _IMPLICIT, pref)
    pref = np.where((pref == _IMPLICIT) & ~has_hist & (intent != _NONE), _NONE, pref)
    return form_idx, pref, intent, top1, top2


def _candidates(chunk: Chunk, ctx: TaskContext, rng: np.random.Generator, t: pl.DataFrame, form, target):
    """Candidate pool (-1 = empty), target position, label and shown item per row.

    Pointwise shows the target or one negative; pairwise 2 candidates; reranking R; matching none.
    """
    rows = t.height
    r = int(ctx.options.get("rerank_candidates", 5))
    width = max(r, 2)
    sampler = NegativeSampler(chunk.events, ctx.timeline.n_items)
    neg = sampler.sample(t["u"].to_numpy(), width - 1, rng)
    size = np.select([form == "pointwise", form == "pairwise", form == "reranking"], [1, 2, r], 0)
    positive = rng.random(rows) < 0.5
    pos = np.where(size > 0, (rng.random(rows) * np.maximum(size, 1)).astype(np.int64), -1)
    pool = np.full((rows, width), -1, dtype=np.int64)
    for j in range(width):
        src = np.clip(np.where(j < pos, j, j - 1), 0, width - 2)
        pool[:, j] = np.where(j == pos, target, neg[np.arange(rows), src])
        pool[:, j] = np.where(j < size, pool[:, j], -1)
    point_neg = (form == "pointwise") & ~positive
    pool[point_neg, 0] = neg[point_neg, 0]
    label = np.where(form == "pointwise", positive.astype(np.int64), 1)
    shown = np.where(form == "pointwise", pool[:, 0], target)
    return pool, pos, label, shown


def _fields(ctx: TaskContext, ir: dict, width: int) -> dict[str, pl.Expr]:
    """The template placeholders as expressions over the working frame."""
    letters_s = pl.Series(list(letters(26)))
    cat = ir["cat_names"]
    stated = pl.concat_str(
        [
            pl.lit(cat).gather(pl.col("_t1").clip(0)),
            pl.when(pl.col("_t2") >= 0).then(
                pl.lit(_AND[ctx.lang]) + pl.lit(cat).gather(pl.col("_t2").clip(0))
            ),
        ],
        ignore_nulls=True,
    )
    return {
        "history": ctx.history_list(),
        "explicit": stated,
        "vague": pl.lit(ir["first_cat"]).gather(pl.col("i")),
        "specific": pl.lit(ir["specific"]).gather(pl.col("i")),
        "a": gather(ctx.display, "_c0"),
        "b": gather(ctx.display, "_c1"),
        "pool": pl.concat_str(
            [
                part
                for j in range(width)
                for part in (
                    pl.when(pl.col(f"_c{j}").is_not_null()).then(
                        pl.lit(("\n" if j else "") + f"({letters_s[j]}) ")
                    ),
                    gather(ctx.display, f"_c{j}"),
                )
            ],
            ignore_nulls=True,
        ),
        "noun": pl.lit(ctx.noun),
        "nouns": pl.lit(ctx.nouns),
    }


def _render(frame: pl.DataFrame, ctx: TaskContext, ir: dict, fields: dict) -> tuple[pl.DataFrame, dict]:
    """Render each template's rows; returns the samples in row order and the rows per template id."""
    yes, no = ctx.yes_no
    letters_s = pl.Series(list(letters(26)))
    parts = []
    used: dict[str, int] = {}
    for tid, (f, p, i, instruction, text) in ir["templates"].items():
        tcode = FORMS.index(f) * 9 + PREFERENCES.index(p) * 3 + INTENTIONS.index(i)
        group = frame.filter(pl.col("_tcode") == tcode)
        if group.height == 0:
            continue
        used[tid] = group.height
        if f == "pointwise":
            output = pl.when(pl.col("_label") == 1).then(pl.lit(yes)).otherwise(pl.lit(no))
        elif f == "matching":
            output = gather(ctx.titles, "i")
        else:
            output = pl.lit(letters_s).gather(pl.col("_pos"))
        parts.append(
            group.select(
                "_row",
                pl.lit(instruction.format(noun=ctx.noun, nouns=ctx.nouns)).alias("instruction"),
                fmt(text, fields).alias("input"),
                output.alias("output"),
                pl.lit(NAME).alias("task"),
                pl.lit(tid).alias("template_id"),
                pl.lit(f).alias("form"),
                pl.lit(tid.split("-")[2]).alias("preference"),
                pl.lit(tid.split("-")[3]).alias("intention"),
                pl.lit(ctx.timeline.users).gather(pl.col("u")).alias("user_id"),
                gather(ctx.item_ids, "_shown").alias("item_id"),
                pl.col("_label").alias("label"),
                pl.col("timestamp"),
                (pl.col("candidates") if f != "matching" else pl.lit(None, dtype=pl.List(pl.Utf8))).alias(
                    "candidates"
                ),
                (pl.col("_pos") if f in ("pairwise", "reranking") else pl.lit(None, dtype=pl.Int64)).alias(
                    "target_index"
                ),
                "split",
            )
        )
    return pl.concat(parts).sort("_row").drop("_row"), used


def _empty(ctx: TaskContext) -> pl.DataFrame:
    schema = {
        "instruction": pl.Utf8,
        "input": pl.Utf8,
        "output": pl.Utf8,
        "task": pl.Utf8,
        "template_id": pl.Utf8,
        "form": pl.Utf8,
        "preference": pl.Utf8,
        "intention": pl.Utf8,
        "user_id": pl.Utf8,
        "item_id": pl.Utf8,
        "label": pl.Int64,
        "timestamp": pl.Int64,
        "history": pl.List(pl.Utf8),
        "history_spans": pl.List(pl.Array(pl.Int64, 3)),
        "candidates": pl.List(pl.Utf8),
        "target_index": pl.Int64,
        "split": pl.Int8,
    }
    return pl.DataFrame(schema=schema)


def describe() -> str:
    """All templates of both languages, as JSON (for documentation and review)."""
    return json.dumps({lang: templates(lang) for lang in PREFERENCE_TEXT}, indent=2, ensure_ascii=False)
