"""Hand-made small logs in the real source layouts, and helpers to run data prep and read its output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llm4rec.data.prep import main

GENRES = ["unknown", "Action", "Comedy", "Drama", "Sci-Fi"]


def random_events(users: int, items: int, seed: int = 0, lo: int = 8, hi: int = 20, ties: bool = True):
    """(user, item, rating, timestamp) rows, users interleaved in file order, some timestamps tied."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, users + 1):
        n = min(int(rng.integers(lo, hi + 1)), items)
        its = rng.choice(np.arange(1, items + 1), size=n, replace=False)
        t0 = 880_000_000 + int(rng.integers(0, 10_000_000))
        steps = rng.integers(0 if ties else 1, 5_000, n)
        ts = t0 + np.cumsum(steps)
        for i, t in zip(its, ts):
            rows.append((u, int(i), int(rng.integers(1, 6)), int(t)))
    order = rng.permutation(len(rows))  # the file is not sorted by user or time
    return [rows[k] for k in order]


def title_of(item: int) -> str:
    """A title with the awkward characters real titles have (comma, quote, non-ASCII)."""
    return f'Film {item}, The "Cut" \u00e9dition ({1950 + item % 50})'


def write_ml100k(d: Path, events, items: int) -> Path:
    """u.data, u.item (ISO-8859-1, genre flags) and u.genre."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in events))
    lines = []
    for i in range(1, items + 1):
        flags = [
            "1" if (i % len(GENRES)) == g or (g == 2 and i % 3 == 0) else "0" for g in range(len(GENRES))
        ]
        lines.append(f"{i}|{title_of(i)}|01-Jan-1995||http://x.invalid/{i}|" + "|".join(flags) + "\n")
    (d / "u.item").write_bytes("".join(lines).encode("iso-8859-1"))
    (d / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(GENRES)) + "\n")
    return d


def write_ml1m(d: Path, events, items: int) -> Path:
    """ratings.dat and movies.dat ('::'-separated, ISO-8859-1)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in events))
    lines = [f"{i}::{title_of(i)}::{GENRES[1 + i % 4]}|Drama\n" for i in range(1, items + 1)]
    (d / "movies.dat").write_bytes("".join(lines).encode("iso-8859-1"))
    return d


def write_mlcsv(d: Path, events, items: int) -> Path:
    """ratings.csv and movies.csv (header, quoted titles with commas and quotes, UTF-8)."""
    d.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{u},{i},{r}.5,{t}\n" if r < 5 else f"{u},{i},{r}.0,{t}\n" for u, i, r, t in events)
    (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + body)
    rows = []
    for i in range(1, items + 1):
        title = title_of(i).replace('"', '""')
        genres = "(no genres listed)" if i % 7 == 0 else f"{GENRES[1 + i % 4]}|Drama"
        rows.append(f'{i},"{title}",{genres}\n')
    (d / "movies.csv").write_text("movieId,title,genres\n" + "".join(rows), encoding="utf-8")
    return d


def run(source: str, *args: str | Path) -> int:
    """Run data prep in-process, quietly; return the exit code (SystemExit codes included)."""
    try:
        return main([str(a) for a in args] + ["--quiet"], source=source)
    except SystemExit as exc:
        return int(exc.code or 0)


def read(path: Path) -> list[dict]:
    """The rows of a JSONL file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def split_rows(out: Path, task: str) -> dict[str, list[dict]]:
    """split name -> rows of one task's output."""
    return {s: read(out / task / f"{s}.jsonl") for s in ("train", "valid", "test")}
