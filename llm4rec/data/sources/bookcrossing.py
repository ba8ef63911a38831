"""BookCrossing (Ziegler et al. 2005) into the canonical tables.

``BX-Book-Ratings.csv`` ("User-ID";"ISBN";"Book-Rating") and ``BX-Books.csv`` ("ISBN";"Book-Title";
"Book-Author";"Year-Of-Publication";"Publisher";...): ';'-separated, every field quoted, ISO-8859-1.
Ratings run 1-10; 0 marks an *implicit* interaction without a rating. ``implicit='negative'`` (TALLRec's
treatment: 0 is not > 5) keeps those events with label 0 and no rating; ``'drop'`` removes them.
The log has no timestamps: the preset ``tallrec-book`` orders each user's events by a seeded shuffle.
Ratings outside 0-10 are bad lines. Ratings of ISBNs absent from the book file are dropped later
(untitled, counted and warned about), as TALLRec's inner join does.
Books are shown as TALLRec's book prompts show them, ``"Title" written by Author`` (its target string
lacks the spaces around "written by"; here every mention has them).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import polars as pl

from llm4rec.data.canonical import Canonical, assemble
from llm4rec.data.readers import (
    ReadReport,
    check_codec,
    find_file,
    line_locator,
    read_csv_table,
    read_text,
    reject_rows,
)
from llm4rec.errors import UserError

IMPLICIT = ("negative", "drop")
#: Book-Rating: 0 (implicit) or 1-10
RATING_RANGE = (0, 10)


def _books(path: Path, encoding: str, skip_bad_lines: bool, report: ReadReport) -> pl.DataFrame:
    """The book table; parsed with Python's csv module, which also accepts the file's backslash escapes."""
    text = read_text(path, encoding)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";", quotechar='"', escapechar="\\")
    try:
        header = next(reader)
    except StopIteration:
        raise UserError(f"{path}: the file is empty") from None
    need = ["ISBN", "Book-Title", "Book-Author"]
    missing = [c for c in need if c not in header]
    if missing:
        raise UserError(f"{path.name}: missing column {missing[0]!r}; the header has: {', '.join(header)}")
    idx = {c: header.index(c) for c in header}
    isbn, title, attrs = [], [], []
    optional = [c for c in ("Year-Of-Publication", "Publisher") if c in idx]
    try:
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if len(fields) != len(header):
                problem = f"expected {len(header)} fields (header), got {len(fields)}"
                report.bad_line(path, reader.line_num, problem, skip_bad_lines)
                continue
            isbn.append(fields[idx["ISBN"]].strip())
            title.append(fields[idx["Book-Title"]].strip())
            extra = {"author": fields[idx["Book-Author"]].strip()}
            for c in optional:
                key = "year" if c.startswith("Year") else "publisher"
                value = fields[idx[c]].strip()
                if value and value != "0":
                    extra[key] = value
            attrs.append(json.dumps(extra, ensure_ascii=False))
    except csv.Error as exc:
        raise UserError(f"{path.name}:{reader.line_num}: {exc}") from None
    return pl.DataFrame(
        {"item": isbn, "title": title, "attributes": attrs},
        schema={"item": pl.Utf8, "title": pl.Utf8, "attributes": pl.Utf8},
    )


def read_bookcrossing(
    src: Path,
    *,
    encoding: str = "iso-8859-1",
    threshold: float = 5.0,
    implicit: str = "negative",
    skip_bad_lines: bool = False,
) -> Canonical:
    """Read a BookCrossing directory into the canonical tables (label = rating > threshold)."""
    src = Path(src)
    if implicit not in IMPLICIT:
        raise UserError(f"--implicit: choose one of {', '.join(IMPLICIT)}, got {implicit!r}")
    encoding = check_codec(encoding)
    ratings_path = find_file(src, ["BX-Book-Ratings.csv"], "ratings file")
    books_path = find_file(src, ["BX-Books.csv"], "book file")
    report = ReadReport()
    cols = {"User-ID": pl.Utf8, "ISBN": pl.Utf8, "Book-Rating": pl.Int64}
    r = read_csv_table(
        ratings_path, sep=";", encoding=encoding, columns=cols, skip_bad_lines=skip_bad_lines, report=report
    )
    lo, hi = RATING_RANGE
    r = reject_rows(
        r,
        (pl.col("Book-Rating") < lo) | (pl.col("Book-Rating") > hi),
        ratings_path,
        lambda row: f"Book-Rating {row['Book-Rating']} is outside {lo}-{hi} (0 = implicit)",
        line_locator(ratings_path, encoding=encoding, header=True, sep=";"),
        skip_bad_lines=skip_bad_lines,
        report=report,
    )
    rating = pl.col("Book-Rating").cast(pl.Float64)
    inter = r.select(
        pl.col("User-ID").str.strip_chars().alias("user"),
        pl.col("ISBN").str.strip_chars().alias("item"),
        pl.when(rating > 0).then(rating).alias("rating"),
        (rating > threshold).cast(pl.Int8).alias("label"),
        pl.lit(None, dtype=pl.Int64).alias("timestamp"),
    )
    if implicit == "drop":
        inter = inter.filter(pl.col("rating").is_not_null())
    items = _books(books_path, encoding, skip_bad_lines, report).unique(
        "item", keep="first", maintain_order=True
    )
    dropped = {"implicit_events_dropped": r.height - inter.height}
    return assemble(inter, items, [ratings_path, books_path], report, domain="book", filtered=dropped)
