"""MovieLens in every released layout, into the canonical tables.

* 100K: ``u.data`` (tab-separated user, item, rating, timestamp), ``u.item`` ('|'-separated, ISO-8859-1:
  id, title, release date, video date, URL, 19 genre flags), ``u.genre`` (genre names);
* 1M and 10M: ``ratings.dat`` and ``movies.dat`` ('::'-separated; 1M is ISO-8859-1);
* CSV releases (latest-small, 20M, 25M, 32M): ``ratings.csv`` and ``movies.csv`` (header row, quoted
  titles that may hold commas, UTF-8).

Titles are the item file's title field verbatim; ``categories`` are the genres; ``attributes`` hold the
release year parsed from the title.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl

from llm4rec.data.canonical import Canonical, assemble
from llm4rec.data.readers import (
    ReadReport,
    check_codec,
    find_file,
    iter_lines,
    line_locator,
    out_of_range,
    read_csv_table,
    read_delimited,
    read_text,
    reject_rows,
)
from llm4rec.errors import UserError

LAYOUTS = ("auto", "100k", "dat", "csv")

#: u.genre of the 100K release, used when the file is absent
ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
_YEAR = re.compile(r"\((\d{4})\)\s*$")
#: every release rates 0.5-5 stars (100K and 1M in whole stars)
RATING_RANGE = (0.5, 5.0)
_RATING_SCHEMA = {"user": pl.Int64, "item": pl.Int64, "rating": pl.Float64, "timestamp": pl.Int64}


def detect_layout(src: Path) -> str:
    """Which MovieLens layout ``src`` holds: '100k', 'dat' or 'csv'."""
    for layout, name in (("100k", "u.data"), ("dat", "ratings.dat"), ("csv", "ratings.csv")):
        if (src / name).is_file() or (src / f"{name}.gz").is_file():
            return layout
    found = sorted(p.name for p in src.iterdir())[:20] if src.is_dir() else []
    raise UserError(
        f"{src}: no MovieLens ratings file (u.data, ratings.dat or ratings.csv); "
        + (f"found: {', '.join(found)}" if found else "the directory does not exist or is empty")
    )


def _decode(path: Path, encoding: str) -> str:
    """Text of a small item file; 'auto' tries UTF-8, then ISO-8859-1 (the older releases' encoding)."""
    if encoding != "auto":
        return read_text(path, check_codec(encoding))
    try:
        return read_text(path, "utf-8")
    except UserError:
        return read_text(path, "iso-8859-1")


def _year(title: str) -> str | None:
    m = _YEAR.search(title)
    return m.group(1) if m else None


def _items_frame(ids: list[str], titles: list[str], genres: list[list[str]]) -> pl.DataFrame:
    attrs = [json.dumps({"year": y} if (y := _year(t)) else {}) for t in titles]
    return pl.DataFrame(
        {"item": ids, "title": titles, "categories": genres, "attributes": attrs},
        schema={"item": pl.Utf8, "title": pl.Utf8, "categories": pl.List(pl.Utf8), "attributes": pl.Utf8},
    )


def _split_lines(
    path: Path, text: str, sep: str, min_fields: int, skip_bad_lines: bool, report: ReadReport
) -> list[tuple[int, list[str]]]:
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) < min_fields or not fields[0].strip():
            problem = f"expected at least {min_fields} {sep!r}-separated fields, got {len(fields)}"
            report.bad_line(path, lineno, problem, skip_bad_lines)
            continue
        out.append((lineno, fields))
    return out


def _read_100k(
    src: Path, encoding: str, skip: bool, report: ReadReport
) -> tuple[pl.DataFrame, pl.DataFrame, list[Path]]:
    data = find_file(src, ["u.data"], "ratings file")
    item = find_file(src, ["u.item"], "item file")
    genre_file = src / "u.genre"
    names = list(ML100K_GENRES)
    files = [data, item]
    if genre_file.is_file():
        files.append(genre_file)
        names = []
        for _, line in iter_lines(genre_file, "iso-8859-1"):
            if line.strip():
                names.append(line.split("|")[0])
    ratings = read_delimited(data, "\t", _RATING_SCHEMA, skip_bad_lines=skip, report=report)
    enc = "iso-8859-1" if encoding == "auto" else encoding
    rows = _split_lines(item, _decode(item, enc), "|", 2, skip, report)
    ids = [f[0] for _, f in rows]
    titles = [f[1] for _, f in rows]
    genres = []
    for _, f in rows:
        flags = f[5 : 5 + len(names)]
        genres.append([g for g, v in zip(names, flags) if v.strip() == "1" and g != "unknown"])
    return ratings, _items_frame(ids, titles, genres), files


def _read_dat(
    src: Path, encoding: str, skip: bool, report: ReadReport
) -> tuple[pl.DataFrame, pl.DataFrame, list[Path]]:
    data = find_file(src, ["ratings.dat"], "ratings file")
    movies = find_file(src, ["movies.dat"], "item file")
    ratings = read_delimited(data, "::", _RATING_SCHEMA, skip_bad_lines=skip, report=report)
    rows = _split_lines(movies, _decode(movies, encoding), "::", 2, skip, report)
    ids = [f[0] for _, f in rows]
    # a title may itself hold '::' in no release, but be safe: the genres are the last field
    titles = ["::".join(f[1:-1]) if len(f) > 2 else f[1] for _, f in rows]
    genres = [_genres(f[-1]) if len(f) > 2 else [] for _, f in rows]
    return ratings, _items_frame(ids, titles, genres), [data, movies]


def _genres(field: str) -> list[str]:
    field = field.strip()
    if not field or field == "(no genres listed)":
        return []
    return field.split("|")


def _read_csv(
    src: Path, encoding: str, skip: bool, report: ReadReport
) -> tuple[pl.DataFrame, pl.DataFrame, list[Path]]:
    data = find_file(src, ["ratings.csv"], "ratings file")
    movies = find_file(src, ["movies.csv"], "item file")
    enc = "utf-8" if encoding == "auto" else check_codec(encoding)
    cols = {"userId": pl.Int64, "movieId": pl.Int64, "rating": pl.Float64, "timestamp": pl.Int64}
    ratings = read_csv_table(data, columns=cols, skip_bad_lines=skip, report=report).select(
        pl.col("userId").alias("user"), pl.col("movieId").alias("item"), "rating", "timestamp"
    )
    m = read_csv_table(
        movies,
        encoding=enc,
        columns={"movieId": pl.Utf8, "title": pl.Utf8},
        skip_bad_lines=skip,
        report=report,
    )
    genres = m["genres"].to_list() if "genres" in m.columns else [""] * m.height
    items = _items_frame(m["movieId"].to_list(), m["title"].to_list(), [_genres(g or "") for g in genres])
    return ratings, items, [data, movies]


def read_movielens(
    src: Path,
    *,
    layout: str = "auto",
    encoding: str = "auto",
    threshold: float = 3.0,
    skip_bad_lines: bool = False,
) -> Canonical:
    """Read a MovieLens directory of any layout into the canonical tables (label = rating > threshold)."""
    src = Path(src)
    if layout not in LAYOUTS:
        raise UserError(f"--layout: unknown MovieLens layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout == "auto":
        layout = detect_layout(src)
    report = ReadReport()
    reader = {"100k": _read_100k, "dat": _read_dat, "csv": _read_csv}[layout]
    ratings, items, files = reader(src, encoding, skip_bad_lines, report)
    lo, hi = RATING_RANGE
    ratings = reject_rows(
        ratings,
        out_of_range("rating", lo, hi),
        files[0],
        lambda row: f"rating {row['rating']:g} of user {row['user']} is outside the {lo:g}-{hi:g} star scale",
        line_locator(files[0], header=layout == "csv"),
        skip_bad_lines=skip_bad_lines,
        report=report,
    )
    inter = ratings.select(
        pl.col("user").cast(pl.Utf8),
        pl.col("item").cast(pl.Utf8),
        pl.col("rating"),
        (pl.col("rating") > threshold).cast(pl.Int8).alias("label"),
        pl.col("timestamp"),
    )
    items = items.unique("item", keep="first", maintain_order=True)
    return assemble(inter, items, files, report, domain="movie")
