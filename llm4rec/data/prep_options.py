"""The command line of data prep: its flags, the published presets, and the settings they resolve to."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llm4rec.data import canonical
from llm4rec.data.sources.registry import Source
from llm4rec.data.splits import ORDERS, SPLITS
from llm4rec.data.tasks.common import LANGS, NOUNS
from llm4rec.errors import UserError

TASKS = ("tallrec", "ranking", "instructrec", "next_item")
#: --ties: what a sample's history does with events in the same second as its target
TIES = ("keep", "strict")

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


def parse_floats(text: str, flag: str, n: int) -> tuple[float, ...]:
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


def meta_arguments(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any]:
    """The arguments as recorded in meta.json (paths as given; the output path is left out)."""
    out = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in sorted(vars(args).items())
        if k not in ("out", "quiet")
    }
    out["resolved"] = {k: v for k, v in settings.items()}
    return out
