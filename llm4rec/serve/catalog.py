"""A prepared data directory as a catalogue: its items, its users' histories, and prompts built for them.

``llm4rec prep`` (``data_prep/*.py``) writes the canonical tables (``interactions.parquet``,
``items.parquet``) and ``meta.json`` with the resolved arguments. :meth:`Catalog.load` rebuilds the same
timeline and split from them (:func:`llm4rec.data.prep.timeline_of`), so item indices, histories and the
prompt context (language, domain noun, history length, how items are shown) are exactly prep's.

A user's history (``user=ID``) is taken from the *train* part of their timeline: the events before their
first valid or test target (all their events when they have none), the most recent ``history`` of them
(prep's ``--history``), oldest first, each with its label. That is the history the user's train samples
could show; the held-out events never reach a recommendation.

Prompts are built by the tasks' own builders (:mod:`llm4rec.data.tasks.tallrec` for Yes/No,
:mod:`llm4rec.data.tasks.ranking` for index letters) from rows shaped like prep's chunks, so a
recommendation's (history, candidate) prompt is the one prep writes for the same pair.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from llm4rec.data import canonical
from llm4rec.data.splits import TRAIN
from llm4rec.data.tasks.common import Chunk, TaskContext, hist_col, hist_label_col
from llm4rec.errors import UserError
from llm4rec.io import read_json_object, read_jsonl

#: the domain noun a source's reader gives, for prepared directories whose meta.json predates ``domain``
_SOURCE_DOMAIN = {"src_layout": "movie", "implicit": "book"}


@dataclass(frozen=True)
class HistoryItem:
    """One history event: the item's index in the catalogue and whether the user liked it (1) or not (0)."""

    index: int
    label: int


class Catalog:
    """Items and user histories of a prepared directory, and the prompts of (history, candidate) pairs."""

    def __init__(self, path: Path, meta: dict[str, Any], timeline: Any, ctx: TaskContext, digest: str):
        self.path, self.meta, self.timeline, self.ctx, self.digest = path, meta, timeline, ctx, digest
        self.item_ids: list[str] = ctx.item_ids.to_list()
        self.titles: list[str] = ctx.titles.to_list()
        self._item_index = {it: k for k, it in enumerate(self.item_ids)}
        users = timeline.users.to_list()
        self._user_index = {str(u): k for k, u in enumerate(users)}
        f = timeline.frame
        self._items = f["i"].to_numpy().astype(np.int64)
        self._labels = f["label"].to_numpy().astype(np.int64)
        split = f["split"].fill_null(-1).to_numpy()
        u = f["u"].to_numpy()
        self._starts = np.searchsorted(u, np.arange(len(users) + 1))
        # per user: where the train part of the timeline ends (first valid/test target, else the end)
        held_out = np.flatnonzero(split > TRAIN)
        first_held = self._starts[1:].astype(np.int64).copy()
        np.minimum.at(first_held, u[held_out], held_out)
        self._train_end = first_held

    # ------------------------------------------------------------------------------------------- load

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        """Read a prepared directory; anything missing or inconsistent is a :class:`UserError` naming it."""
        from llm4rec.data.prep import timeline_of

        path = Path(path)
        if not path.is_dir():
            raise UserError(f"--catalog: {path} is not a directory (give a `llm4rec prep` output directory)")
        if not (path / "items.parquet").is_file() and (path.parent / "items.parquet").is_file():
            raise UserError(
                f"--catalog: {path} is a task directory; give the prep output above it, {path.parent}"
            )
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise UserError(f"--catalog: {meta_path}: no such file; is {path} a `llm4rec prep` output?")
        meta = read_json_object(meta_path)
        settings = (meta.get("arguments") or {}).get("resolved")
        if not isinstance(settings, dict):
            raise UserError(
                f"{meta_path}: arguments.resolved missing; re-run `llm4rec prep` to rebuild {path}"
            )
        inter, items = canonical.read_tables(path)
        timeline = timeline_of(inter, items, settings)
        used = (meta.get("canonical") or {}).get("events_used")
        if used is not None and used != timeline.frame.height:
            raise UserError(
                f"--catalog: {path}: rebuilt {timeline.frame.height} events but meta.json says {used}; "
                "the directory was changed after prep or by another llm4rec version"
            )
        ctx = TaskContext(
            timeline=timeline,
            lang=settings.get("lang") or "en",
            domain=meta.get("domain") or settings.get("domain") or _source_domain(meta),
            history=int(settings["history"]),
            seed=int(settings.get("seed") or 0),
            options={},
        )
        digest = hashlib.sha256()
        digest.update(json.dumps(meta.get("sources"), sort_keys=True).encode())
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
        return cls(path, meta, timeline, ctx, digest.hexdigest()[:16])

    @property
    def lang(self) -> str:
        """The prompt language the directory was prepared in."""
        return self.ctx.lang

    @property
    def n_items(self) -> int:
        """Number of items in the catalogue."""
        return len(self.item_ids)

    def describe(self) -> dict[str, Any]:
        """What the catalogue is, for metadata: path, hash, sizes, language, domain and source files."""
        return {
            "path": str(self.path),
            "hash": self.digest,
            "items": self.n_items,
            "users": len(self._user_index),
            "lang": self.lang,
            "domain": self.ctx.domain,
            "history_length": self.ctx.history,
            "sources": self.meta.get("sources", {}),
        }

    # ------------------------------------------------------------------------------------------- lookups

    def user_history(self, user: str, field: str = "user") -> list[HistoryItem]:
        """The user's train history (see the module docstring); unknown users are an error naming ``field``."""
        u = self._user_index.get(str(user))
        if u is None:
            raise UserError(f"{field}: unknown user {user!r} (not in {self.path}'s interactions)")
        a, b = int(self._starts[u]), int(self._train_end[u])
        a = max(a, b - self.ctx.history)
        if a >= b:
            raise UserError(f"{field}: user {user!r} has no train interactions to take a history from")
        return [HistoryItem(int(self._items[j]), int(self._labels[j])) for j in range(a, b)]

    def train_items(self, user: str) -> list[int]:
        """Every item in the train part of a known user's timeline (what the user has been seen with)."""
        u = self._user_index[str(user)]
        return self._items[int(self._starts[u]) : int(self._train_end[u])].tolist()

    def item_index(self, item: Any, field: str) -> int:
        """The catalogue index of an item id; an unknown one is an error naming ``field``."""
        k = self._item_index.get(str(item))
        if k is None:
            raise UserError(f"{field}: unknown item {str(item)!r} (not in {self.path}'s items)")
        return k

    def items(self, ids: Sequence[Any], field: str) -> list[int]:
        """Catalogue indices of item ids (no repeats allowed); errors name ``field[i]``."""
        out: list[int] = []
        first: dict[int, int] = {}
        for i, x in enumerate(ids):
            k = self.item_index(x, f"{field}[{i}]")
            if k in first:
                raise UserError(f"{field}[{i}]: item {str(x)!r} is listed twice (also {field}[{first[k]}])")
            first[k] = i
            out.append(k)
        return out

    def parse_history(self, entries: Sequence[Any], field: str = "history") -> list[HistoryItem]:
        """A given history, oldest first: each entry an item id (liked), ``ID:0``/``ID:1`` (CLI), or
        ``{"item": ID, "liked": bool}`` (JSON). The last ``history`` entries are kept, as prep keeps them."""
        if not entries:
            raise UserError(f"{field}: the history is empty; give at least one item")
        out = []
        for i, e in enumerate(entries):
            where = f"{field}[{i}]"
            if isinstance(e, dict):
                if "item" not in e:
                    raise UserError(f"{where}: expected an object with 'item' (and optional 'liked')")
                liked = e.get("liked", True)
                if not isinstance(liked, bool):
                    raise UserError(f"{where}.liked: expected true or false, got {liked!r}")
                out.append(HistoryItem(self.item_index(e["item"], f"{where}.item"), int(liked)))
                continue
            if isinstance(e, bool) or not isinstance(e, (str, int)):
                raise UserError(f"{where}: expected an item id, got {json.dumps(e)}")
            text = str(e)
            if text not in self._item_index and text[-2:] in (":0", ":1"):
                out.append(HistoryItem(self.item_index(text[:-2], where), int(text[-1])))
            else:
                out.append(HistoryItem(self.item_index(text, where), 1))
        return out[-self.ctx.history :]

    def retriever_candidates(self, path: Path, user: str | None) -> list[str]:
        """The candidate ids a retriever's file lists for ``user`` (the format ranking prep's
        ``--candidates-file`` takes: JSON lines ``{"user": ID, "candidates": [...], "split": ...}``); a
        user given several lists gets the test one, else the first. A file of one JSON list applies to all."""
        if not path.is_file():
            raise UserError(f"--candidates: {path}: no such file")
        text = path.read_text(encoding="utf-8")
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
        if isinstance(whole, list):
            return [str(x) for x in whole]
        if user is None:
            raise UserError(f"--candidates: {path} holds per-user lists; give --user (or a plain JSON list)")
        found: dict[str, list[str]] = {}
        for rec in read_jsonl(path, required=("user", "candidates")):
            if str(rec["user"]) != str(user):
                continue
            if not isinstance(rec["candidates"], list):
                raise UserError(f"{path}: user {user!r}: 'candidates' must be a list of item ids")
            found.setdefault(str(rec.get("split", "test")), [str(c) for c in rec["candidates"]])
        if not found:
            raise UserError(f"--candidates: {path} has no list for user {user!r}")
        return found.get("test") or next(iter(found.values()))

    # ------------------------------------------------------------------------------------------- prompts

    def _rows(self, history: Sequence[HistoryItem], targets: Sequence[int]) -> pl.DataFrame:
        """Target rows as prep's chunks hold them after ``add_history``: the history in the last slots."""
        n, schema = self.ctx.history, self.timeline.frame.schema
        hist = list(history)[-n:]
        pad = n - len(hist)
        m = len(targets)
        cols: dict[str, pl.Series] = {
            "u": pl.Series("u", [0] * m, dtype=schema["u"]),
            "i": pl.Series("i", list(targets), dtype=schema["i"]),
            "label": pl.Series("label", [1] * m, dtype=schema["label"]),
            "timestamp": pl.Series("timestamp", [None] * m, dtype=schema["timestamp"]),
            "split": pl.Series("split", [TRAIN] * m, dtype=pl.Int8),
        }
        for k in range(n):
            h = hist[k - pad] if k >= pad else None
            cols[hist_col(k)] = pl.Series(hist_col(k), [h.index if h else None] * m, dtype=schema["i"])
            cols[hist_label_col(k)] = pl.Series(
                hist_label_col(k), [h.label if h else None] * m, dtype=schema["label"]
            )
        return pl.DataFrame(cols)

    def yes_no_samples(
        self, history: Sequence[HistoryItem], candidates: Sequence[int]
    ) -> list[dict[str, Any]]:
        """One TALLRec Yes/No sample per candidate, built by the task's own builder."""
        from llm4rec.data.tasks import tallrec

        rows = self._rows(history, candidates)
        return tallrec.build(Chunk(index=0, events=rows, targets=rows), self.ctx).drop("split").to_dicts()

    def letters_sample(self, history: Sequence[HistoryItem], candidates: Sequence[int]) -> dict[str, Any]:
        """One listwise ranking sample whose lettered pool is ``candidates`` in the given order, built by
        the ranking task's builder (the pool passed as a retriever's list, as ``--candidates-file`` does)."""
        from llm4rec.data.tasks import ranking

        ranking.letters(len(candidates))
        ctx = TaskContext(
            timeline=self.timeline,
            lang=self.ctx.lang,
            domain=self.ctx.domain,
            history=self.ctx.history,
            seed=self.ctx.seed,
            options={"candidates": len(candidates), "candidate_format": self._candidate_format()},
        )
        ranking.prepare_context(ctx)
        ctx.options["_external"] = {(TRAIN, 0): np.asarray(candidates, dtype=np.int64)}
        rows = self._rows(history, candidates[:1])
        built, _ = ranking.build(Chunk(index=0, events=rows, targets=rows), ctx)
        return built.drop("split").to_dicts()[0]

    def _candidate_format(self) -> str:
        settings = self.meta["arguments"]["resolved"]
        return settings.get("candidate_format") or "compact"


def _source_domain(meta: dict[str, Any]) -> str:
    """The domain noun of a prepared directory whose meta.json has no ``domain`` (older prep outputs):
    what its source's reader says, from the source's own flags."""
    args = meta.get("arguments") or {}
    if "src" in args and "layout" in args:
        return _SOURCE_DOMAIN["src_layout"]
    if "implicit" in args:
        return _SOURCE_DOMAIN["implicit"]
    if "reviews" in args:
        return "book" if "book" in Path(str(args["reviews"])).name.lower() else "product"
    return "item"
