"""What a baseline may see of a prepared data directory: the catalogue, the train split, the samples.

A task directory ``OUT/<task>/`` holds ``{train,valid,test}.jsonl`` (and few-shot subsets such as
``train_n256_s0.jsonl``); its parent ``OUT/`` holds the canonical tables ``interactions.parquet`` and
``items.parquet``. A baseline is fitted on the interactions a train file shows, and nothing else: each
train sample's target event and the events of its history. Their labels and times are looked up in the
canonical interactions table (the same events, so nothing of the valid or test targets enters). Each
scored sample is represented by its own ``history``, the items its prompt lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from llm4rec.errors import UserError
from llm4rec.io import line_numbers, read_jsonl

TABLES = ("interactions.parquet", "items.parquet")
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class PrepDir:
    """A task directory of a prepared data set and the canonical tables beside it."""

    task_dir: Path
    tables_dir: Path

    def split_file(self, split: str) -> Path:
        """The samples of ``split`` (train, valid or test)."""
        return self.task_dir / f"{split}.jsonl"


def resolve(path: Path) -> PrepDir:
    """The task directory given as ``--data`` (or a prep root holding exactly one task directory).

    Errors are one line: a missing directory, no canonical tables, or a root with several tasks.
    """
    if not path.is_dir():
        raise UserError(
            f"--data: {path} is not a directory (give a prepared task directory, e.g. OUT/tallrec)"
        )
    if not (path / "test.jsonl").is_file():
        tasks = sorted(p.name for p in path.iterdir() if (p / "test.jsonl").is_file())
        if len(tasks) != 1:
            what = f"holds the tasks {', '.join(tasks)}; name one" if tasks else "holds no test.jsonl"
            raise UserError(
                f"--data: {path} {what} (e.g. --data {path / (tasks[0] if tasks else 'tallrec')})"
            )
        path = path / tasks[0]
    for tables_dir in (path.parent, path):
        if all((tables_dir / t).is_file() for t in TABLES):
            return PrepDir(path, tables_dir)
    raise UserError(
        f"--data: {path.parent} has no canonical tables ({', '.join(TABLES)}); "
        "prepare the data with this version of llm4rec prep"
    )


@dataclass
class Catalogue:
    """Item ids of the catalogue (``items.parquet``) and their dense indices."""

    ids: list[str]
    index: dict[str, int]

    @classmethod
    def read(cls, prep: PrepDir) -> Catalogue:
        """The catalogue of a prepared data set."""
        ids = pl.read_parquet(prep.tables_dir / "items.parquet", columns=["item"])["item"].cast(pl.Utf8)
        ids = ids.to_list()
        return cls(ids, {it: k for k, it in enumerate(ids)})

    def indices(self, items: list[Any], where: str) -> np.ndarray:
        """Dense indices of ``items``; an id the catalogue lacks is an error naming ``where``."""
        try:
            return np.array([self.index[str(i)] for i in items], dtype=np.int64)
        except KeyError as exc:
            raise UserError(
                f"{where}: item {exc.args[0]!r} is not in the catalogue (items.parquet)"
            ) from None


@dataclass
class TrainLog:
    """The interactions a train file shows, as dense indices, oldest first within each user."""

    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    n_users: int
    n_items: int
    n_samples: int

    def select(self, keep: np.ndarray) -> TrainLog:
        """The events where ``keep`` holds (e.g. positives only)."""
        return TrainLog(
            self.users[keep], self.items[keep], self.labels[keep], self.n_users, self.n_items, self.n_samples
        )

    def matrix(self) -> Any:
        """The binary user x item matrix (scipy CSR, float32)."""
        import scipy.sparse as sp

        data = np.ones(len(self.users), dtype=np.float32)
        m = sp.csr_matrix((data, (self.users, self.items)), shape=(self.n_users, self.n_items))
        m.data[:] = 1.0
        return m

    def sequences(self) -> list[np.ndarray]:
        """Each user's items in time order (users with no event left out)."""
        order = np.argsort(self.users, kind="stable")
        u, it = self.users[order], self.items[order]
        cuts = np.flatnonzero(np.diff(u)) + 1
        return [s for s in np.split(it, cuts) if len(s)]


def read_train_log(train_file: Path, prep: PrepDir, catalogue: Catalogue) -> TrainLog:
    """The events of ``train_file``'s samples (targets and histories), with labels, in time order."""
    samples = _read_events(train_file)
    users = samples["user_id"].to_list()
    pairs = pl.concat(
        [
            samples.select(pl.col("user_id").alias("user"), pl.col("item_id").alias("item")),
            samples.select(pl.col("user_id").alias("user"), pl.col("history").alias("item")).explode("item"),
        ]
    )
    pairs = pairs.drop_nulls().unique(maintain_order=True)
    table = (
        pl.read_parquet(
            prep.tables_dir / "interactions.parquet", columns=["user", "item", "label", "timestamp"]
        )
        .with_columns(pl.col("user").cast(pl.Utf8), pl.col("item").cast(pl.Utf8))
        .with_row_index("_row")
    )
    joined = pairs.join(table, on=["user", "item"], how="left")
    missing = joined.filter(pl.col("_row").is_null())
    if missing.height:
        u, it = missing.row(0)[:2]
        raise UserError(
            f"{train_file}: the event (user {u!r}, item {it!r}) is not in "
            f"{prep.tables_dir / 'interactions.parquet'}; the samples come from another preparation"
        )
    # the canonical table's order breaks ties of equal timestamps, as prep does
    joined = joined.unique(["user", "item"], keep="last").sort(["timestamp", "_row"], nulls_last=False)
    user_ids = sorted(set(users) | set(joined["user"].to_list()))
    user_index = {u: k for k, u in enumerate(user_ids)}
    return TrainLog(
        users=np.array([user_index[u] for u in joined["user"].to_list()], dtype=np.int64),
        items=catalogue.indices(joined["item"].to_list(), str(train_file)),
        labels=joined["label"].to_numpy().astype(np.int8),
        n_users=len(user_ids),
        n_items=len(catalogue.ids),
        n_samples=samples.height,
    )


_SCHEMA = {"user_id": pl.Utf8, "item_id": pl.Utf8, "history": pl.List(pl.Utf8)}


def _read_events(path: Path) -> pl.DataFrame:
    """user_id, item_id and history of every sample (polars' reader: a 200 MB file in seconds)."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        frame = pl.read_ndjson(path, schema=_SCHEMA)
    except Exception:  # noqa: BLE001 - the slow reader below names the file:line of the problem
        frame = None
    if frame is None or frame.height == 0 or frame.select(pl.all().null_count()).sum_horizontal().item():
        read_jsonl(path, required=_SCHEMA)  # raises naming the line (missing field, bad JSON)
        raise UserError(f"{path}: user_id, item_id and history must be strings / a list of strings")
    return frame


@dataclass
class Samples:
    """The samples to score, their task, and what each needs: history, target, candidates."""

    path: Path
    rows: list[dict[str, Any]]
    task: str
    histories: list[np.ndarray]
    history_labels: list[np.ndarray]
    targets: np.ndarray
    candidates: np.ndarray | None
    target_index: np.ndarray | None
    labels: np.ndarray | None


def task_of(rows: list[dict[str, Any]]) -> str:
    """``binary`` (Yes/No), ``ranking`` (a candidate pool) or ``next_item`` (the whole catalogue)."""
    first = rows[0]
    if first.get("task") == "next_item":
        return "next_item"
    if first.get("task") == "ranking" or "candidates" in first:
        return "ranking"
    return "binary"


def read_samples(path: Path, prep: PrepDir, catalogue: Catalogue, limit: int = 0) -> Samples:
    """Read a sample file (its first ``limit`` samples, 0 = all) and resolve its items to catalogue
    indices; errors name file:line."""
    from llm4rec.eval.evaluate import binary_labels, ranking_targets
    from llm4rec.models.templates import ANSWERS

    rows = read_jsonl(path, required=("user_id", "item_id", "history"))
    rows = rows[:limit] if limit else rows
    task = task_of(rows)
    lines = line_numbers(path)
    histories = [catalogue.indices(r["history"], f"{path}:{n}") for r, n in zip(rows, lines)]
    history_labels = _history_labels(rows, prep)
    targets = catalogue.indices([r["item_id"] for r in rows], str(path))
    candidates = target_index = labels = None
    if task == "ranking":
        target_index = np.array(ranking_targets(rows, path), dtype=np.int64)
        widths = {len(r["candidates"]) for r in rows}
        if len(widths) != 1:
            raise UserError(f"{path}: ranking samples have pools of different sizes ({sorted(widths)})")
        candidates = np.stack(
            [catalogue.indices(r["candidates"], f"{path}:{n}") for r, n in zip(rows, lines)]
        )
    elif task == "binary":
        words = [a for pair in ANSWERS.values() for a in pair]
        labels = np.array(binary_labels(rows, words, path), dtype=np.int64)
    return Samples(path, rows, task, histories, history_labels, targets, candidates, target_index, labels)


def _history_labels(rows: list[dict[str, Any]], prep: PrepDir) -> list[np.ndarray]:
    """The label of each history event (the prompt shows it, e.g. TALLRec's liked / disliked lists)."""
    users = {str(r["user_id"]) for r in rows}
    table = pl.read_parquet(prep.tables_dir / "interactions.parquet", columns=["user", "item", "label"])
    table = table.with_columns(pl.col("user").cast(pl.Utf8), pl.col("item").cast(pl.Utf8))
    table = table.filter(pl.col("user").is_in(list(users)))
    label = dict(zip(zip(table["user"].to_list(), table["item"].to_list()), table["label"].to_list()))
    return [
        np.array([label.get((str(r["user_id"]), str(h)), 1) for h in r["history"]], dtype=np.int8)
        for r in rows
    ]
