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

The command line and its settings are :mod:`llm4rec.data.prep_options`, the sources
:mod:`llm4rec.data.sources.registry`, prompt sizing :mod:`llm4rec.data.prompt_sizing`, the output files
:mod:`llm4rec.data.prep_output`; this module runs the pipeline.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from llm4rec.data import canonical
from llm4rec.data.canonical import Canonical
from llm4rec.data.prep_options import build_parser, meta_arguments, parse_floats, resolve
from llm4rec.data.prep_output import SplitWriter, prep_summary, write_meta
from llm4rec.data.prompt_sizing import load_sizing_tokenizer, prompt_sizer
from llm4rec.data.sources.registry import SOURCES, Source, register_source
from llm4rec.data.splits import SPLIT_NAMES, SplitConfig, assign_splits, build_timeline
from llm4rec.data.tasks.common import Chunk, TaskContext, add_history
from llm4rec.errors import UserError, exit_on_user_error
from llm4rec.io import atomic_dir, require_writable

#: the entry points, and the source registry they read (llm4rec.data.sources.registry)
__all__ = ["SOURCES", "Source", "cli", "main", "prepare", "register_source"]

#: rows of the timeline processed at once; fixed (not tuned to the machine) so outputs never depend on it
CHUNK_ROWS = 200_000


def _task_module(name: str):
    return importlib.import_module(f"llm4rec.data.tasks.{name}")


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
        ratios=parse_floats(settings["ratios"], "--ratios", 3),  # type: ignore[arg-type]
        cutoffs=parse_floats(settings["cutoffs"], "--cutoffs", 2),  # type: ignore[arg-type]
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
        backbone = load_sizing_tokenizer(settings)
        # settings is ctx.options: the tasks (ranking's title cap) and the sizer read the tokenizer there
        settings["_backbone"] = backbone
        settings["_tokenizer"] = backbone.tokenizer if backbone else None
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
    log(prep_summary(meta, out, time.perf_counter() - t0))
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
    sizer = prompt_sizer(settings)
    # one writer thread per task: each task's blocks stay in order, and one task's big JSON encoding
    # (ranking's pools) does not hold up the others'
    pools = {name: ThreadPoolExecutor(max_workers=1) for name in modules}
    writers = {name: SplitWriter(tmp / name, pools[name]) for name in modules}
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
    write_meta(writers, stats, sizer, settings, tmp, meta)


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
    require_writable(args.out, "--out", replace=True)  # before the log is read
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
        meta_arguments(args, settings),
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
