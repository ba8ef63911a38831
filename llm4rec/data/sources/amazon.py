"""Amazon reviews (2014, 2018 and 2023 releases), plain or gzip, into the canonical tables.

* 2014 (McAuley et al.): reviews are JSON lines with ``reviewerID``, ``asin``, ``overall``,
  ``unixReviewTime``; the metadata file has one *Python dict literal* per line (``asin``, ``title``,
  ``categories`` as lists of category paths), parsed with :func:`ast.literal_eval`, never ``eval``.
* 2018 (Ni et al.): the same review fields; metadata is JSON with ``asin``, ``title``, ``category`` (one
  path), ``brand``. The 5-core and full files share the format.
* 2023 (Hou et al.): reviews with ``user_id``, ``parent_asin`` (the item), ``rating``, ``timestamp`` in
  milliseconds; metadata with ``parent_asin``, ``title``, ``categories``, ``main_category``, ``store``.

Categories drop the root of each path (the store department, e.g. "Books", shared by every item).
The release is detected from the first review line unless ``--release`` is given.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from llm4rec.data.canonical import Canonical, assemble
from llm4rec.data.readers import (
    ReadReport,
    check_codec,
    iter_lines,
    line_locator,
    out_of_range,
    read_json_table,
    reject_rows,
    require_file,
)
from llm4rec.errors import UserError

RELEASES = ("auto", "2014", "2018", "2023")

_REVIEWS = {
    "2014": {
        "user": ("reviewerID", pl.Utf8),
        "item": ("asin", pl.Utf8),
        "rating": ("overall", pl.Float64),
        "timestamp": ("unixReviewTime", pl.Int64),
    },
    "2023": {
        "user": ("user_id", pl.Utf8),
        "item": ("parent_asin", pl.Utf8),
        "rating": ("rating", pl.Float64),
        "timestamp": ("timestamp", pl.Int64),
    },
}
_REVIEWS["2018"] = _REVIEWS["2014"]
_META = {
    "2014": {
        "item": ("asin", pl.Utf8),
        "title": ("title", pl.Utf8),
        "paths": ("categories", pl.List(pl.List(pl.Utf8))),
        "brand": ("brand", pl.Utf8),
    },
    "2018": {
        "item": ("asin", pl.Utf8),
        "title": ("title", pl.Utf8),
        "path": ("category", pl.List(pl.Utf8)),
        "brand": ("brand", pl.Utf8),
    },
    "2023": {
        "item": ("parent_asin", pl.Utf8),
        "title": ("title", pl.Utf8),
        "path": ("categories", pl.List(pl.Utf8)),
        "main": ("main_category", pl.Utf8),
        "brand": ("store", pl.Utf8),
    },
}


#: the star ratings of every release
RATING_RANGE = (1.0, 5.0)


def _first_line(path: Path, encoding: str = "utf-8") -> str:
    for _, line in iter_lines(path, encoding):
        if line.strip():
            return line
    raise UserError(f"{path}: the file is empty")


def detect_release(reviews: Path, meta: Path | None, encoding: str = "utf-8") -> str:
    """The release, from the first review line (2023 names ``parent_asin``) and the first metadata line
    (2014's is a Python literal with ``'categories'``, 2018's JSON with ``"category"``)."""
    line = _first_line(reviews, encoding)
    if '"parent_asin"' in line or '"user_id"' in line:
        return "2023"
    if "reviewerID" not in line:
        raise UserError(
            f"{reviews.name}:1: not an Amazon review line (no reviewerID or user_id); pass --release"
        )
    if meta is not None:
        m = _first_line(meta, encoding)
        if "'asin'" in m or "'categories'" in m or '"categories"' in m:
            return "2014"
    return "2018"


def _categories(release: str) -> pl.Expr:
    empty = pl.lit([], dtype=pl.List(pl.Utf8))
    if release == "2014":
        # every path minus its root, flattened, first occurrence kept
        flat = pl.col("paths").list.eval(pl.element().list.slice(1).explode()).list.drop_nulls()
        return flat.list.unique(maintain_order=True).fill_null(empty)
    if release == "2023":
        path = pl.col("path").fill_null(empty)
        return pl.when(path.list.first() == pl.col("main")).then(path.list.slice(1)).otherwise(path)
    return pl.col("path").fill_null(empty).list.slice(1)


def read_amazon(
    reviews: Path,
    meta: Path | None,
    *,
    release: str = "auto",
    threshold: float = 3.0,
    skip_bad_lines: bool = False,
    encoding: str = "utf-8",
) -> Canonical:
    """Read an Amazon review file (and its metadata file, for titles) into the canonical tables.

    Ratings outside 1-5 stars (or NaN) are bad lines; reviews of items the metadata lacks are dropped
    later, counted, as untitled.
    """
    reviews = require_file(Path(reviews), "Amazon review file (--reviews)")
    if meta is not None:
        meta = require_file(Path(meta), "Amazon metadata file (--meta)")
    if release not in RELEASES:
        raise UserError(f"--release: unknown Amazon release {release!r}; choose one of {', '.join(RELEASES)}")
    encoding = check_codec(encoding)
    if release == "auto":
        release = detect_release(reviews, meta, encoding)
    report = ReadReport()
    rv = read_json_table(
        reviews,
        _REVIEWS[release],
        ["user", "item", "rating"],
        skip_bad_lines=skip_bad_lines,
        report=report,
        python_literals=True,
        encoding=encoding,
    )
    lo, hi = RATING_RANGE
    rv = reject_rows(
        rv,
        out_of_range("rating", lo, hi),
        reviews,
        lambda row: f"rating {row['rating']!r} is outside {lo:g}-{hi:g} stars",
        line_locator(reviews, encoding=encoding),
        skip_bad_lines=skip_bad_lines,
        report=report,
    )
    if release == "2023":
        rv = rv.with_columns(pl.col("timestamp") // 1000)
    inter = rv.select(
        "user", "item", "rating", (pl.col("rating") > threshold).cast(pl.Int8).alias("label"), "timestamp"
    )
    files = [reviews]
    if meta is not None:
        files.append(meta)
        md = read_json_table(
            meta,
            _META[release],
            ["item"],
            skip_bad_lines=skip_bad_lines,
            report=report,
            python_literals=True,
            encoding=encoding,
        )
        md = md.unique("item", keep="first", maintain_order=True)
        items = md.select(
            "item",
            pl.col("title").str.strip_chars(),
            _categories(release).alias("categories"),
            pl.when(pl.col("brand").str.strip_chars() != "")
            .then(pl.struct(pl.col("brand").str.strip_chars()).struct.json_encode())
            .otherwise(pl.lit("{}"))
            .alias("attributes"),
        )
    else:
        items = pl.DataFrame(schema={"item": pl.Utf8, "title": pl.Utf8})
    domain = "book" if "book" in reviews.name.lower() else "product"
    return assemble(inter, items, files, report, domain=domain)
