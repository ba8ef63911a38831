"""What data prep writes: split files (appended block by block), few-shot subsets, meta.json, the summary."""

from __future__ import annotations

import collections
import contextlib
import json
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from llm4rec.data.prompt_sizing import PromptSizer
from llm4rec.data.splits import SPLIT_NAMES
from llm4rec.errors import UserError


class SplitWriter:
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
        """Wait for the queued blocks, then close the split files."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._stack.close()

    def balance(self) -> dict[str, float | None]:
        """Positive rate per split (None for an empty split)."""
        return {
            name: (round(self.positives[name] / self.counts[name], 6) if self.counts[name] else None)
            for name in SPLIT_NAMES
        }


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


def write_meta(
    writers: dict[str, SplitWriter],
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
                "template": sizer.backbone.template.name,
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


def prep_summary(meta: dict, out: Path, seconds: float) -> str:
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
