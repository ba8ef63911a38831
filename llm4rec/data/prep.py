"""Data preparation: a source log in, canonical tables and instruction samples out.

``python data_prep/<source>.py --src DIR --out OUT --task tallrec[,ranking,...]`` runs :func:`main`.
Pipeline: read the source into the canonical tables (:mod:`llm4rec.data.canonical`), merge repeated
events, drop events of untitled items, apply the k-core filter, sort per-user timelines, mark split targets
(:mod:`llm4rec.data.splits`), then build each task's samples chunk by chunk (whole users per chunk, so
memory stays flat at any scale) and append them to ``OUT/<task>/{train,valid,test}.jsonl``.

Output (built in a temporary directory and renamed onto OUT only when complete)::

    OUT/interactions.parquet, OUT/items.parquet   canonical tables
    OUT/meta.json                                 arguments, source hashes, skipped lines, filters, splits,
                                                  what was dropped (dropped), equal-time rule (ties)
    OUT/<task>/{train,valid,test}.jsonl           samples (schema: llm4rec.data.tasks)
    OUT/<task>/train_n<N>_s<SEED>.jsonl           few-shot subsets (--train-samples/--seeds)
    OUT/<task>/meta.json                          the above plus counts and label balance per split

Same arguments and seed give byte-identical files.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from llm4rec.data import canonical
from llm4rec.data.canonical import Canonical
from llm4rec.data.splits import ORDERS, SPLIT_NAMES, SPLITS, SplitConfig, assign_splits, build_timeline
from llm4rec.data.tasks.common import LANGS, NOUNS, Chunk, TaskContext, add_history
from llm4rec.errors import UserError, exit_on_user_error
from llm4rec.io import atomic_dir

TASKS = ("tallrec", "ranking", "instructrec", "next_item")
#: --ties: what a sample's history does with events in the same second as its target
TIES = ("keep", "strict")
#: rows of the timeline processed at once; fixed (not tuned to the machine) so outputs never depend on it
CHUNK_ROWS = 200_000

#: preset name -> defaults it sets (explicit flags still win)
PRESETS: dict[str, dict[str, Any]] = {
    # TALLRec's preprocess_movie.py: rating > 3, 10 previous events, last 10,000 samples, 80/10/10 in order
    "tallrec": {
        "split": "tallrec",
        "history": 10,
        "min_history": 10,
        "threshold": 3.0,
        "window": 10_000,
        "ratios": "0.8,0.1,0.1",
        "dedup": "none",
        "order": "time",
    },
    # TALLRec's preprocess_book.py, made reproducible: users with more than 3 events, a seeded shuffle of
    # each user's events, the last one the target, up to 10 before it, users split 80/10/10
    "tallrec-book": {
        "split": "users",
        "history": 10,
        "min_history": 3,
        "threshold": 5.0,
        "ratios": "0.8,0.1,0.1",
        "dedup": "last",
        "order": "shuffle",
    },
}
#: general defaults, used where neither a flag nor the preset sets a value
DEFAULTS: dict[str, Any] = {
    "split": "loo",
    "history": 10,
    "min_history": 1,
    "threshold": None,  # the source's own default
    "window": 10_000,
    "ratios": "0.8,0.1,0.1",
    "cutoffs": "0.8,0.9",
    "dedup": "last",
    "order": None,  # time where the source has times, else file
    "k_core": 0,
    "ties": None,  # strict under --split temporal, else keep
}


@dataclass
class Source:
    """A source layout: how to add its flags and how to read it into the canonical tables."""

    name: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    read: Callable[[argparse.Namespace, float | None], Canonical]
    default_threshold: float = 3.0
    #: default of --encoding (the text encoding the release uses)
    default_encoding: str = "utf-8"
    #: what --encoding covers, for its help
    encoding_help: str = "text encoding of the source files"
    #: extra defaults of the source (e.g. order 'file' for logs without times)
    defaults: dict[str, Any] = field(default_factory=dict)


def _movielens() -> Source:
    from llm4rec.data.sources import movielens

    def add(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--src", required=True, type=Path, help="MovieLens directory (any release)")
        ap.add_argument(
            "--layout", default="auto", choices=movielens.LAYOUTS, help="file layout (auto-detected)"
        )

    def read(args: argparse.Namespace, threshold: float | None) -> Canonical:
        return movielens.read_movielens(
            args.src,
            layout=args.layout,
            encoding=args.encoding,
            threshold=3.0 if threshold is None else threshold,
            skip_bad_lines=args.skip_bad_lines,
        )

    return Source(
        "movielens",
        add,
        read,
        default_encoding="auto",
        encoding_help="encoding of the text files (auto: UTF-8, else ISO-8859-1 as the older releases use)",
    )


def _amazon() -> Source:
    from llm4rec.data.sources import amazon

    def add(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--reviews", required=True, type=Path, help="review file (JSON lines, plain or .gz)")
        ap.add_argument(
            "--meta", required=True, type=Path, help="metadata file with item titles (plain or .gz)"
        )
        ap.add_argument(
            "--release", default="auto", choices=amazon.RELEASES, help="data release (auto-detected)"
        )

    def read(args: argparse.Namespace, threshold: float | None) -> Canonical:
        return amazon.read_amazon(
            args.reviews,
            args.meta,
            release=args.release,
            threshold=3.0 if threshold is None else threshold,
            skip_bad_lines=args.skip_bad_lines,
            encoding=args.encoding,
        )

    return Source("amazon", add, read, encoding_help="text encoding of the review and metadata files")


def _bookcrossing() -> Source:
    from llm4rec.data.sources import bookcrossing

    def add(ap: argparse.ArgumentParser) -> None:
        ap.add_argument(
            "--src", required=True, type=Path, help="directory with BX-Book-Ratings.csv, BX-Books.csv"
        )
        ap.add_argument(
            "--implicit",
            default="negative",
            choices=bookcrossing.IMPLICIT,
            help="rating 0 (implicit): keep as label 0 (TALLRec) or drop",
        )

    def read(args: argparse.Namespace, threshold: float | None) -> Canonical:
        return bookcrossing.read_bookcrossing(
            args.src,
            encoding=args.encoding,
            threshold=5.0 if threshold is None else threshold,
            implicit=args.implicit,
            skip_bad_lines=args.skip_bad_lines,
        )

    return Source(
        "bookcrossing",
        add,
        read,
        default_threshold=5.0,
        default_encoding="iso-8859-1",
        encoding_help="encoding of the CSV files (the release is ISO-8859-1)",
    )


def _generic() -> Source:
    from llm4rec.data.sources import generic

    def add(ap: argparse.ArgumentParser) -> None:
        ap.add_argument(
            "--interactions", required=True, type=Path, help="the log: CSV, TSV, Parquet or JSONL"
        )
        ap.add_argument("--items", type=Path, default=None, help="item table with titles (same formats)")
        ap.add_argument(
            "--format", default="auto", choices=generic.FORMATS, help="log format (from the name)"
        )
        ap.add_argument("--sep", default=None, help="CSV field separator (default , or tab for .tsv)")
        ap.add_argument("--user-col", default="user", help="user id column")
        ap.add_argument("--item-col", default="item", help="item id column")
        ap.add_argument("--rating-col", default=None, help="rating column (label = rating > threshold)")
        ap.add_argument("--label-col", default=None, help="0/1 label column (instead of a rating)")
        ap.add_argument("--time-col", default=None, help="time column")
        ap.add_argument(
            "--time-unit", default="s", choices=generic.TIME_UNITS, help="unit of the time column"
        )
        ap.add_argument("--item-id-col", default=None, help="item id column of --items (default: --item-col)")
        ap.add_argument("--title-col", default="title", help="title column (of --items, or of the log)")
        ap.add_argument("--category-col", default=None, help="category column ('|'-separated values)")
        ap.add_argument("--category-sep", default="|", help="separator inside the category column")
        ap.add_argument("--attribute-cols", default="", help="comma-separated item attribute columns to keep")

    def read(args: argparse.Namespace, threshold: float | None) -> Canonical:
        cmap = generic.ColumnMap(
            user=args.user_col,
            item=args.item_col,
            rating=args.rating_col,
            label=args.label_col,
            time=args.time_col,
            time_unit=args.time_unit,
            item_id=args.item_id_col,
            title=args.title_col,
            categories=args.category_col,
            category_sep=args.category_sep,
            attributes=[c.strip() for c in args.attribute_cols.split(",") if c.strip()],
        )
        return generic.read_generic(
            args.interactions,
            cmap,
            items_path=args.items,
            fmt=args.format,
            sep=args.sep,
            encoding=args.encoding,
            threshold=3.0 if threshold is None else threshold,
            skip_bad_lines=args.skip_bad_lines,
            domain=args.domain or "item",
        )

    return Source("generic", add, read, encoding_help="text encoding of CSV, TSV and JSONL files")


#: source name -> factory (imported lazily so one source's code never loads another's)
SOURCES: dict[str, Callable[[], Source]] = {
    "movielens": _movielens,
    "amazon": _amazon,
    "bookcrossing": _bookcrossing,
    "generic": _generic,
}


def register_source(name: str, factory: Callable[[], Source]) -> None:
    """Make a source available to :func:`main` under ``name``."""
    SOURCES[name] = factory


def _floats(text: str, flag: str, n: int) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in str(text).split(","))
    except ValueError:
        raise UserError(f"{flag}: expected {n} comma-separated numbers, got {text!r}") from None
    if len(vals) != n:
        raise UserError(f"{flag}: expected {n} comma-separated numbers, got {text!r}")
    return vals


def _ints(text: str | None, flag: str) -> list[int]:
    if not text:
        return []
    try:
        vals = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated integers, got {text!r}") from None
    if any(v < 0 for v in vals):
        raise UserError(f"{flag}: values must be non-negative, got {text!r}")
    return vals


def build_parser(source: Source, prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``data_prep/<source>.py`` (``prog``: the name shown in usage lines)."""
    ap = argparse.ArgumentParser(
        prog=prog or f"data_prep/{source.name}.py",
        description=f"Turn a {source.name} log into canonical tables and instruction samples.",
    )
    source.add_arguments(ap)
    _add_input_arguments(ap, source)
    _add_split_arguments(ap, source)
    _add_task_arguments(ap)
    _add_sizing_arguments(ap)
    return ap


def _add_input_arguments(ap: argparse.ArgumentParser, source: Source) -> None:
    # every source takes the same two input flags
    ap.add_argument(
        "--encoding",
        default=source.default_encoding,
        help=f"{source.encoding_help} (default {source.default_encoding})",
    )
    ap.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip malformed or out-of-range lines, count them in meta.json and warn (default: stop at the first)",
    )
    ap.add_argument("--out", required=True, type=Path, help="output directory (replaced atomically)")
    ap.add_argument(
        "--task",
        action="append",
        help=f"task(s) to build, comma-separated or repeated: {', '.join(TASKS)} (default tallrec)",
    )
    ap.add_argument("--preset", choices=sorted(PRESETS), help="a published setup's defaults")


def _add_split_arguments(ap: argparse.ArgumentParser, source: Source) -> None:
    ap.add_argument("--split", choices=SPLITS, default=None, help="how targets are split (default loo)")
    ap.add_argument("--history", type=int, default=None, help="earlier events shown per sample (default 10)")
    ap.add_argument(
        "--min-history", type=int, default=None, help="a target needs this many earlier events (default 1)"
    )
    ap.add_argument(
        "--threshold",
        type=float,
        default=None,
        help=f"label = rating > threshold (default {source.default_threshold:g}, or the preset's)",
    )
    ap.add_argument(
        "--dedup",
        choices=canonical.DEDUP_RULES,
        default=None,
        help="repeated (user, item) events: keep the last or first, or none merged "
        "(default last; tallrec preset: none)",
    )
    ap.add_argument(
        "--k-core", type=int, default=None, help="keep users and items with >= k events (0 = off)"
    )
    ap.add_argument(
        "--order",
        choices=ORDERS,
        default=None,
        help="order of a user's events (default: time where the log has times, else file; "
        "tallrec-book preset: shuffle)",
    )
    ap.add_argument(
        "--ties",
        choices=TIES,
        default=None,
        help="history events in the same second as the target: keep them, in file order (default; "
        "the tallrec preset, as TALLRec), or strict: leave them out (always under --split temporal)",
    )
    ap.add_argument("--window", type=int, default=None, help="--split tallrec: keep the last N samples")
    ap.add_argument("--ratios", default=None, help="train,valid,test fractions (tallrec and users splits)")
    ap.add_argument(
        "--cutoffs", default=None, help="--split temporal: valid,test cut-offs (quantiles in [0,1] or times)"
    )


def _add_task_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--lang", choices=LANGS, default="en", help="prompt language (zh: answers 是/否)")
    ap.add_argument("--domain", choices=sorted(NOUNS), default=None, help="item noun in prompts")
    ap.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    ap.add_argument("--train-samples", default=None, help="few-shot train sizes, e.g. 16,64,256")
    ap.add_argument("--seeds", default="0", help="seeds of the few-shot subsets, e.g. 0,1,2")
    ap.add_argument(
        "--candidates", type=int, default=20, help="ranking: pool size K (target + K-1 negatives)"
    )
    ap.add_argument(
        "--candidate-format",
        choices=("compact", "compact-year", "full"),
        default="compact",
        help="ranking: how the pool is shown: compact 'A. Title' (year only where titles clash; default), "
        "compact-year 'A. Title (1972)', full '(A) \"Title (1972)\"' (the long format of earlier releases)",
    )
    ap.add_argument(
        "--max-title-tokens",
        type=int,
        default=0,
        help="ranking: shorten titles over N tokens of --tokenizer to their first tokens + '…' (counted)",
    )
    ap.add_argument(
        "--candidates-file",
        type=Path,
        default=None,
        help="ranking: retriever candidates (JSONL user -> items)",
    )
    ap.add_argument(
        "--instructrec-mix",
        default="pointwise=1,pairwise=1,matching=1,reranking=1",
        help="instructrec: task-form weights, e.g. pointwise=2,matching=1",
    )
    ap.add_argument(
        "--instructrec-preferences", default="none,implicit,explicit", help="instructrec: preference kinds"
    )
    ap.add_argument(
        "--instructrec-intentions", default="none,vague,specific", help="instructrec: intention kinds"
    )
    ap.add_argument("--rerank-candidates", type=int, default=5, help="instructrec reranking: pool size")


def _add_sizing_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=0,
        help="size samples to a tokenizer: drop each sample's oldest history items until prompt + answer + "
        "EOS fit in N tokens (use the recipe's data.cutoff_len); needs --tokenizer",
    )
    ap.add_argument(
        "--tokenizer", type=Path, default=None, help="backbone directory whose tokenizer sizes the samples"
    )
    ap.add_argument(
        "--tokenizer-family",
        default="auto",
        help="family of --tokenizer where its directory has no config.json (e.g. qwen2, baichuan)",
    )
    ap.add_argument(
        "--template", default="auto", help="prompt template for sizing (default: the family's for --lang)"
    )
    ap.add_argument("--quiet", action="store_true", help="print nothing but errors")


def resolve(args: argparse.Namespace, source: Source) -> dict[str, Any]:
    """Merge flags over the preset over the source's and the general defaults; validate."""
    preset = PRESETS.get(args.preset or "", {})
    merged: dict[str, Any] = {}
    for key, default in DEFAULTS.items():
        flag = getattr(args, key, None)
        if flag is not None:
            merged[key] = flag
        elif key in preset:
            merged[key] = preset[key]
        elif key in source.defaults:
            merged[key] = source.defaults[key]
        else:
            merged[key] = default
    if merged["threshold"] is None:
        merged["threshold"] = source.default_threshold
    if merged["ties"] is None:
        merged["ties"] = "strict" if merged["split"] == "temporal" else "keep"
    if merged["split"] == "temporal" and merged["ties"] != "strict":
        raise UserError(
            "--ties keep: the temporal split always drops same-second history (no event of a later "
            "period may reach a sample); leave --ties out"
        )
    tasks: list[str] = []
    for entry in args.task or ["tallrec"]:
        for t in entry.split(","):
            t = t.strip()
            if t and t not in TASKS:
                raise UserError(f"--task: unknown task {t!r}; choose from {', '.join(TASKS)}")
            if t and t not in tasks:
                tasks.append(t)
    merged["tasks"] = tasks
    if merged["history"] < 1:
        raise UserError(f"--history: need at least 1, got {merged['history']}")
    if merged["min_history"] < 0:
        raise UserError(f"--min-history: must be >= 0, got {merged['min_history']}")
    merged["train_samples"] = _ints(args.train_samples, "--train-samples")
    merged["seeds"] = _ints(args.seeds, "--seeds") or [0]
    return merged


def _meta_args(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any]:
    """The arguments as recorded in meta.json (paths as given; the output path is left out)."""
    out = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in sorted(vars(args).items())
        if k not in ("out", "quiet")
    }
    out["resolved"] = {k: v for k, v in settings.items()}
    return out


def _task_module(name: str):
    return importlib.import_module(f"llm4rec.data.tasks.{name}")


class PromptSizer:
    """Drops each sample's oldest history items until its training sequence (prompt + answer + end-of-turn
    text + EOS, in the backbone's template) fits ``max_tokens``: the same rule training applies
    (:func:`llm4rec.data.tokenize.fit_to_budget`), applied once, before training starts."""

    #: samples tokenized at once
    BLOCK = 4096

    def __init__(self, tokenizer: Any, template: Any, max_tokens: int) -> None:
        self.tokenizer, self.template, self.max_tokens = tokenizer, template, max_tokens
        self.stats: dict[str, Any] = {}

    def _ids(self, sample: dict[str, Any]) -> list[int]:
        return self._encode([sample])[0]

    def _encode(self, samples: list[dict[str, Any]]) -> list[list[int]]:
        from llm4rec.data.tokenize import render_prompt

        t = self.template
        texts = [
            render_prompt(t, s) + t.answer_prefix + str(s.get("output", "")) + t.answer_suffix
            for s in samples
        ]
        eos = self.tokenizer.eos_token_id
        out = []
        for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]:
            ids = list(ids)
            if eos is not None and (not ids or ids[-1] != eos):
                ids.append(eos)
            out.append(ids)
        return out

    def apply(self, rows: pl.DataFrame, task: str, split: str) -> pl.DataFrame:
        """``rows`` with over-long samples shortened (input, history and history_spans updated)."""
        from llm4rec.data.tokenize import OverlongPrompt, fit_to_budget

        st = self.stats.setdefault(task, {"samples": 0, "shortened": 0, "items_dropped": 0})
        st["samples"] += rows.height
        if rows.height == 0 or "history_spans" not in rows.columns:
            return rows
        cols = ["instruction", "input", "output", "history", "history_spans"]
        fitted: dict[int, tuple[dict[str, Any], int]] = {}
        # in blocks: token ids of a whole chunk at once would hold gigabytes of Python ints
        for a in range(0, rows.height, self.BLOCK):
            block = rows.slice(a, self.BLOCK).select(cols).to_dicts()
            for k, ids in enumerate(self._encode(block)):
                if len(ids) <= self.max_tokens:
                    continue
                where = f"{task}/{split}: sample of user {rows['user_id'][a + k]!r}"
                try:
                    f = fit_to_budget(
                        block[k],
                        self._ids,
                        self.max_tokens,
                        where,
                        ids=ids,
                        limit=f"--max-prompt-tokens {self.max_tokens} (prompt, answer and EOS together)",
                    )
                except OverlongPrompt as exc:
                    raise UserError(str(exc)) from None
                fitted[a + k] = (f.sample, f.dropped)  # not the ids: they would add up to gigabytes
        if not fitted:
            return rows
        inputs, hist, spans = (rows[c].to_list() for c in ("input", "history", "history_spans"))
        for i, (sample, dropped) in fitted.items():
            inputs[i] = sample["input"]
            hist[i] = sample["history"]
            spans[i] = sample["history_spans"]
            st["shortened"] += 1
            st["items_dropped"] += dropped
        return rows.with_columns(
            pl.Series("input", inputs, dtype=rows.schema["input"]),
            pl.Series("history", hist, dtype=rows.schema["history"]),
            pl.Series("history_spans", spans, dtype=rows.schema["history_spans"]),
        )


def _load_tokenizer(settings: dict[str, Any]) -> tuple[Any, Any] | None:
    """(tokenizer, family) of --tokenizer, loaded once for prompt sizing and the title cap (None without)."""
    n, cap, path = (
        settings.get("max_prompt_tokens") or 0,
        settings.get("max_title_tokens") or 0,
        settings.get("tokenizer"),
    )
    if not path:
        if n:
            raise UserError("--max-prompt-tokens: give the backbone's tokenizer with --tokenizer DIR")
        if cap:
            raise UserError("--max-title-tokens: give the backbone's tokenizer with --tokenizer DIR")
        return None
    if not (n or cap):
        raise UserError("--tokenizer: only used with --max-prompt-tokens N or --max-title-tokens N")
    if n and n < 16:
        raise UserError(f"--max-prompt-tokens: need at least 16 tokens, got {n}")
    from llm4rec.models.loading import load_backbone_tokenizer

    return load_backbone_tokenizer(path, settings.get("tokenizer_family") or "auto")


def _sizer(settings: dict[str, Any]) -> PromptSizer | None:
    """The prompt sizer the flags ask for (None without --max-prompt-tokens)."""
    n, loaded = settings.get("max_prompt_tokens") or 0, settings.get("_backbone")
    if not n:
        return None
    if loaded is None:
        loaded = _load_tokenizer(settings)
    from llm4rec.models.loading import resolve_template

    tok, fam = loaded
    path = settings["tokenizer"]
    return PromptSizer(
        tok, resolve_template(fam, settings.get("template") or "auto", settings["lang"], path), n
    )


class _SplitWriter:
    """Appends a task's sample blocks to its split files, counting rows and positive labels.

    JSON encoding runs on one background thread (polars releases the GIL), so the next block is built
    while this one is written; a single worker keeps the blocks in order, and at most two wait.
    """

    def __init__(self, directory: Path, pool: ThreadPoolExecutor) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        # the files stay open across chunks; close() (called in a finally) shuts them
        self._stack = contextlib.ExitStack()
        self.files = {
            name: self._stack.enter_context(open(directory / f"{name}.jsonl", "wb"))  # noqa: SIM115
            for name in SPLIT_NAMES
        }
        self.counts = dict.fromkeys(SPLIT_NAMES, 0)
        self.positives = dict.fromkeys(SPLIT_NAMES, 0)
        self._pool = pool
        self._pending: collections.deque[Future] = collections.deque()

    def write(self, rows: pl.DataFrame, split: str) -> None:
        """Queue ``rows`` (all of one split) for appending to that split's file."""
        if rows.height == 0:
            return
        self.counts[split] += rows.height
        self.positives[split] += int(rows["label"].fill_null(0).sum())
        self._pending.append(self._pool.submit(rows.write_ndjson, self.files[split]))
        while len(self._pending) > 2:
            self._pending.popleft().result()

    def close(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._stack.close()

    def balance(self) -> dict[str, float | None]:
        return {
            name: (round(self.positives[name] / self.counts[name], 6) if self.counts[name] else None)
            for name in SPLIT_NAMES
        }


def _chunks(frame: pl.DataFrame) -> list[tuple[int, int]]:
    """Row ranges of about CHUNK_ROWS rows that never cut a user in two."""
    starts = np.flatnonzero(frame["pos"].to_numpy() == 0)
    bounds = [0]
    target = CHUNK_ROWS
    for s in starts[1:]:
        if s >= target:
            bounds.append(int(s))
            target = s + CHUNK_ROWS
    bounds.append(frame.height)
    return list(zip(bounds[:-1], bounds[1:]))


def _line_starts(path: Path) -> np.ndarray:
    """Byte offset of every line start, plus the file size at the end (found in blocks, vectorised)."""
    ends = []
    pos = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 26):
            ends.append(np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10) + pos + 1)
            pos += len(block)
    return np.concatenate([[0], *ends]).astype(np.int64)


def few_shot(path: Path, sizes: list[int], seeds: list[int], total: int) -> dict[str, int]:
    """Write ``train_n<N>_s<SEED>.jsonl`` beside ``path``: N train lines drawn without replacement.

    Lines keep their order in the train file. Returns file name -> rows.
    """
    if not sizes:
        return {}
    starts = _line_starts(path)
    written = {}
    with open(path, "rb") as src:
        for n in sizes:
            if n > total:
                raise UserError(f"--train-samples: {n} asked but the train split holds only {total} samples")
            for seed in seeds:
                chosen = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
                name = f"train_n{n}_s{seed}.jsonl"
                with open(path.parent / name, "wb") as out:
                    for k in chosen:
                        src.seek(int(starts[k]))
                        out.write(src.read(int(starts[k + 1] - starts[k])))
                written[name] = n
    return written


def _timeline(enc: canonical.Encoded, settings: dict[str, Any], filtered: dict[str, int]):
    """Apply the filters (dedup, untitled items, k-core) and sort the timelines."""
    filtered = dict(filtered)
    n0 = enc.frame.height
    frame = canonical.dedup(enc.frame, settings["dedup"], user="u", item="i")
    filtered["repeated_events_merged"] = n0 - frame.height
    enc = canonical.drop_untitled(canonical.Encoded(frame, enc.users, enc.items))
    filtered["events_of_untitled_items"] = frame.height - enc.frame.height
    n2 = enc.frame.height
    enc.frame = canonical.k_core(enc.frame, settings["k_core"], user="u", item="i")
    filtered["k_core_removed"] = n2 - enc.frame.height
    has_time = enc.frame["timestamp"].null_count() < enc.frame.height
    order = settings["order"] or ("time" if has_time else "file")
    return build_timeline(enc, order=order, seed=settings["seed"]), filtered, order


def split_config(settings: dict[str, Any]) -> SplitConfig:
    """The split of resolved settings (as :func:`resolve` gives them and ``meta.json`` records them)."""
    return SplitConfig(
        kind=settings["split"],
        min_history=settings["min_history"],
        window=settings["window"],
        ratios=_floats(settings["ratios"], "--ratios", 3),  # type: ignore[arg-type]
        cutoffs=_floats(settings["cutoffs"], "--cutoffs", 2),  # type: ignore[arg-type]
        seed=settings["seed"],
    )


def timeline_of(interactions: pl.DataFrame, items: pl.DataFrame, settings: dict[str, Any]) -> Any:
    """The split timeline prep builds from the canonical tables under ``settings`` (as ``meta.json``
    records them under ``arguments.resolved``): serving rebuilds a prepared directory's users with it."""
    tl, _, _ = _timeline(canonical.encode(interactions, items), settings, {})
    return assign_splits(tl, split_config(settings))[0]


def prepare(
    canon: Canonical,
    settings: dict[str, Any],
    out: Path,
    args_meta: dict[str, Any],
    log=print,
    progress: bool = False,
    warn=None,
) -> dict:
    """Filter, split and build every task into ``out`` (replaced atomically); return the top-level meta.

    What reading skipped and what the filters dropped against the user's will (events of items without a
    title) is counted in ``meta.json`` under ``dropped`` and told in one ``warning:`` line (``warn``,
    stderr by default).

    ``progress`` shows a bar over the events on a terminal (never in pipes or logs).

    ``canon.interactions`` is emptied once written, to keep peak memory down at scale.
    """
    t0 = time.perf_counter()
    split_cfg = split_config(settings)
    modules = {name: _task_module(name) for name in settings["tasks"]}
    meta: dict[str, Any] = {
        "arguments": args_meta,
        "sources": canon.sources,
        "skipped_lines": canon.skipped_lines,
    }
    with atomic_dir(out) as tmp:
        os.chmod(tmp, 0o777 & ~_umask())
        canonical.write_tables(canon, tmp)
        n_events, n_items = canon.interactions.height, canon.items.height
        enc = canonical.encode(canon.interactions, canon.items)
        canon.interactions = canon.interactions.clear()
        tl, filtered, order = _timeline(enc, settings, canon.filtered)
        del enc
        tl, split_info = assign_splits(tl, split_cfg)
        ctx = TaskContext(
            timeline=tl,
            lang=settings["lang"],
            domain=settings["domain"] or canon.domain,
            history=settings["history"],
            seed=settings["seed"],
            options=settings,
        )
        backbone = _load_tokenizer(settings)
        # settings is ctx.options: the tasks (ranking's title cap) and the sizer read the tokenizer there
        settings["_backbone"] = backbone
        settings["_tokenizer"] = backbone[0] if backbone else None
        for mod in modules.values():
            if hasattr(mod, "prepare_context"):
                mod.prepare_context(ctx)
        meta.update(
            filters=filtered,
            canonical={
                "interactions": n_events,
                "items": n_items,
                "events_used": tl.frame.height,
                "users_used": tl.users.len(),
                "items_used": tl.n_items,
                "positive_rate": round(float(tl.frame["label"].mean() or 0.0), 6),
            },
            order=order,
            domain=ctx.domain,
            split=split_info,
            tasks={},
        )
        dropped = _dropped(canon.skipped_lines, filtered)
        if dropped:
            meta["dropped"] = dropped
        _write_tasks(tl, ctx, modules, settings, tmp, meta, progress)
    if meta.get("dropped"):
        (warn or _stderr)(_warning(meta["dropped"], canon.skipped_lines))
    log(_summary(meta, out, time.perf_counter() - t0))
    return meta


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


def _dropped(skipped_lines: dict[str, int], filtered: dict[str, int]) -> dict[str, int]:
    """The doubtful part of the input: bad lines skipped, events of items no item file names."""
    out = {}
    if sum(skipped_lines.values()):
        out["bad_lines_skipped"] = sum(skipped_lines.values())
    if filtered.get("events_of_untitled_items"):
        out["events_of_untitled_items"] = filtered["events_of_untitled_items"]
    return out


def _warning(dropped: dict[str, int], skipped_lines: dict[str, int]) -> str:
    """One line for the terminal about what was dropped (details are in meta.json)."""
    parts = []
    if dropped.get("bad_lines_skipped"):
        files = ", ".join(f"{n} in {name}" for name, n in skipped_lines.items() if n)
        parts.append(f"skipped {dropped['bad_lines_skipped']} bad lines ({files})")
    if dropped.get("events_of_untitled_items"):
        parts.append(
            f"dropped {dropped['events_of_untitled_items']} events of items that the item file lacks "
            "or gives no title"
        )
    return "warning: " + "; ".join(parts) + " (counted in meta.json under 'dropped')"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_tasks(
    tl, ctx: TaskContext, modules: dict, settings: dict[str, Any], tmp: Path, meta: dict, progress: bool
) -> None:
    """Build every task chunk by chunk into ``tmp/<task>/``; add per-task facts to ``meta``."""
    strict = settings["ties"] == "strict"
    same_second = 0
    sizer = _sizer(settings)
    # one writer thread per task: each task's blocks stay in order, and one task's big JSON encoding
    # (ranking's pools) does not hold up the others'
    pools = {name: ThreadPoolExecutor(max_workers=1) for name in modules}
    writers = {name: _SplitWriter(tmp / name, pools[name]) for name in modules}
    stats: dict[str, dict[str, Any]] = {name: {} for name in modules}
    # disable=None: tqdm switches itself off when stderr is not a terminal
    bar = tqdm(
        total=tl.frame.height,
        unit="event",
        unit_scale=True,
        desc="samples",
        disable=None if progress else True,
    )
    try:
        for k, (a, b) in enumerate(_chunks(tl.frame)):
            events = tl.frame.slice(a, b - a)
            # targets whose newest earlier event shares their second (kept, or left out under strict)
            same_second += events.select(
                (
                    (pl.col("pos") >= 1)
                    & (pl.col("timestamp").shift(1) == pl.col("timestamp"))
                    & pl.col("split").is_in(list(range(len(SPLIT_NAMES))))
                ).sum()
            ).item()
            events = add_history(events, ctx.history, strict)
            # one block per split: the big text columns are never filtered, only the targets
            for code, split in enumerate(SPLIT_NAMES):
                targets = events.filter(pl.col("split") == code)
                if targets.height == 0:
                    continue
                chunk = Chunk(index=3 * k + code, events=events, targets=targets)
                for name, mod in modules.items():
                    rows = mod.build(chunk, ctx)
                    if isinstance(rows, tuple):
                        rows, extra = rows
                        for key, v in extra.items():
                            stats[name][key] = stats[name].get(key, 0) + v
                    if sizer is not None:
                        rows = sizer.apply(rows, name, split)
                    writers[name].write(rows.drop("split"), split)
            bar.update(b - a)
        for name, mod in modules.items():
            if hasattr(mod, "summary"):
                stats[name].update(mod.summary(ctx))
    finally:
        bar.close()
        try:
            for w in writers.values():
                w.close()
        finally:
            for pool in pools.values():
                pool.shutdown()
    meta["ties"] = {"rule": settings["ties"], "targets_with_same_second_history": same_second}
    _write_meta(writers, stats, sizer, settings, tmp, meta)


def _write_meta(
    writers: dict[str, _SplitWriter],
    stats: dict[str, dict[str, Any]],
    sizer: PromptSizer | None,
    settings: dict[str, Any],
    tmp: Path,
    meta: dict,
) -> None:
    """Check no split came out empty; write each task's meta.json (with few-shot grids) and the top one."""
    shared = {k: v for k, v in meta.items() if k != "tasks"}
    for name, w in writers.items():
        for split_name, n in w.counts.items():
            if n == 0:
                raise UserError(
                    f"task {name}: the {split_name} split came out empty after building samples "
                    f"({stats[name] or 'no targets fit the task'})"
                )
        grids = few_shot(
            w.dir / "train.jsonl", settings["train_samples"], settings["seeds"], w.counts["train"]
        )
        task_meta = {"task": name, "counts": w.counts, "label_balance": w.balance(), "few_shot": grids}
        if sizer is not None:
            st = sizer.stats.get(name, {"samples": 0, "shortened": 0, "items_dropped": 0})
            task_meta["prompt_sizing"] = {
                "max_prompt_tokens": sizer.max_tokens,
                "tokenizer": str(settings["tokenizer"]),
                "template": sizer.template.name,
                **st,
                "mean_items_dropped": round(st["items_dropped"] / st["shortened"], 3)
                if st["shortened"]
                else 0.0,
            }
        task_meta.update(dict(sorted(stats[name].items())))
        meta["tasks"][name] = task_meta
        text = json.dumps({**shared, **task_meta}, indent=2, ensure_ascii=False) + "\n"
        (w.dir / "meta.json").write_text(text, encoding="utf-8")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _summary(meta: dict, out: Path, seconds: float) -> str:
    c = meta["canonical"]
    lines = [
        f"{out}: {c['events_used']} events of {c['users_used']} users on {c['items_used']} items "
        f"(split {meta['split']['kind']}, {seconds:.1f} s)"
    ]
    for name, t in meta["tasks"].items():
        counts = ", ".join(f"{k} {v}" for k, v in t["counts"].items())
        bal = ", ".join(f"{k} {v}" for k, v in t["label_balance"].items() if v is not None)
        lines.append(f"  {name}: {counts} (positive rate {bal})")
        if t.get("titles_shortened"):
            lines.append(
                f"  {name}: {t['titles_shortened']} item titles over {t['max_title_tokens']} tokens shortened "
                "(ending in '…'; candidate_titles keeps them whole)"
            )
        ps = t.get("prompt_sizing")
        if ps and ps["shortened"]:
            lines.append(
                f"  {name}: {ps['shortened']} of {ps['samples']} samples lost their oldest history items to fit "
                f"{ps['max_prompt_tokens']} tokens (mean {ps['mean_items_dropped']} dropped)"
            )
    return "\n".join(lines)


@exit_on_user_error
def main(argv: list[str] | None = None, source: str = "movielens", prog: str | None = None) -> int:
    """Entry point of ``data_prep/<source>.py`` (``prog``: the command name shown in usage lines)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if source not in SOURCES:
        raise UserError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
    src = SOURCES[source]()
    ap = build_parser(src, prog)
    args = ap.parse_args(argv)
    settings = resolve(args, src)
    settings.update(
        lang=args.lang,
        domain=args.domain,
        seed=args.seed,
        candidates=args.candidates,
        candidates_file=str(args.candidates_file) if args.candidates_file else None,
        instructrec_mix=args.instructrec_mix,
        instructrec_preferences=args.instructrec_preferences,
        instructrec_intentions=args.instructrec_intentions,
        rerank_candidates=args.rerank_candidates,
        candidate_format=args.candidate_format,
        max_title_tokens=args.max_title_tokens,
        max_prompt_tokens=args.max_prompt_tokens,
        tokenizer=str(args.tokenizer) if args.tokenizer else None,
        tokenizer_family=args.tokenizer_family,
        template=args.template,
    )
    t0 = time.perf_counter()
    canon = src.read(args, settings["threshold"])
    log = (lambda *_: None) if args.quiet else print
    log(
        f"read {canon.interactions.height} events, {canon.items.height} items in {time.perf_counter() - t0:.1f} s"
    )
    prepare(
        canon,
        settings,
        args.out,
        _meta_args(args, settings),
        log=log,
        progress=not args.quiet,
        warn=log if args.quiet else _stderr,
    )
    return 0


def cli(argv: list[str] | None = None) -> int:
    """``llm4rec prep SOURCE ...``: the same as ``data_prep/SOURCE.py ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: llm4rec prep SOURCE [--help | OPTIONS]\nsources: {', '.join(SOURCES)}")
        return 0 if argv else 2
    return main(argv[1:], source=argv[0], prog=f"llm4rec prep {argv[0]}")
