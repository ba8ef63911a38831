"""Any interaction log (CSV, TSV, Parquet or JSON lines) with a column mapping, into the canonical tables.

The log needs a user and an item column; a rating column (label = rating > threshold) or a 0/1 label
column (neither: every event counts as liked, implicit feedback); optionally a time column (seconds,
milliseconds or ISO 8601 text). Titles come from an item table (``--items``) or from a title column of the
log itself; items without any title are shown by their id. Category columns feed InstructRec's
preferences and intentions; attribute columns are kept in ``attributes``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from llm4rec.data.canonical import Canonical, assemble
from llm4rec.data.readers import (
    ReadReport,
    check_codec,
    line_locator,
    read_csv_table,
    read_json_table,
    reject_rows,
    require_file,
)
from llm4rec.errors import UserError

FORMATS = ("auto", "csv", "tsv", "parquet", "jsonl")
TIME_UNITS = ("s", "ms", "iso")


@dataclass
class ColumnMap:
    """Which columns of the log and of the item table mean what."""

    user: str = "user"
    item: str = "item"
    rating: str | None = None
    label: str | None = None
    time: str | None = None
    time_unit: str = "s"
    item_id: str | None = None  # in the item table; defaults to ``item``
    title: str = "title"
    categories: str | None = None
    category_sep: str = "|"
    attributes: list[str] = field(default_factory=list)


def detect_format(path: Path) -> str:
    """The table format from the file name (``.gz`` ignored)."""
    name = path.name.lower().removesuffix(".gz")
    for suffix, fmt in ((".parquet", "parquet"), (".pq", "parquet"), (".tsv", "tsv"), (".tab", "tsv")):
        if name.endswith(suffix):
            return fmt
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "csv"


def read_table(
    path: Path,
    fmt: str,
    columns: dict[str, Any],
    *,
    sep: str | None,
    encoding: str,
    skip_bad_lines: bool,
    report: ReadReport,
    required: list[str],
) -> pl.DataFrame:
    """Read ``columns`` (name -> dtype) of one table; a missing column is named with those found."""
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in FORMATS:
        raise UserError(f"--format: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        schema = _parquet_schema(path)
        missing = [c for c in columns if c not in schema]
        if missing:
            raise UserError(f"{path.name}: missing column {missing[0]!r}; the file has: {', '.join(schema)}")
        try:
            df = pl.read_parquet(path, columns=list(columns))
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise UserError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
        if df.height == 0:
            raise UserError(f"{path}: the file holds no rows")
        for c in required:
            bad = df[c].is_null().arg_true()
            if bad.len():
                raise UserError(f"{path.name}: row {int(bad[0]) + 1}: column {c!r} is empty (null)")
        return df.with_columns([_parquet_cast(df[c], t, path) for c, t in columns.items()])
    if fmt == "jsonl":
        df = read_json_table(
            path,
            {c: (c, t) for c, t in columns.items()},
            required,
            skip_bad_lines=skip_bad_lines,
            report=report,
            encoding=encoding,
        )
        return df
    sep = sep or ("\t" if fmt == "tsv" else ",")
    df = read_csv_table(
        path, sep=sep, encoding=encoding, columns=columns, skip_bad_lines=skip_bad_lines, report=report
    )
    return df.select(list(columns))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _parquet_schema(path: Path) -> dict[str, Any]:
    try:
        return dict(pl.read_parquet_schema(path))
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None


def _parquet_cast(col: pl.Series, dtype: Any, path: Path) -> pl.Series:
    """A Parquet column in the type the reader wants; a value that does not fit names its row.

    Ids stored as floats (what pandas writes for an integer column with gaps) are rendered as integers,
    ``1`` rather than ``1.0``; NaN or infinity is no id.
    """
    name = col.name
    if dtype == pl.Utf8 and col.dtype.is_float():
        bad = (col.is_nan() | col.is_infinite()).arg_true()
        if bad.len():
            k = int(bad[0])
            raise UserError(f"{path.name}: row {k + 1}: column {name!r} is {col[k]}, not an id")
        if ((col == col.floor()) & (col.abs() < 2.0**63)).all():
            return col.cast(pl.Int64).cast(pl.Utf8)
        return col.cast(pl.Utf8)
    cast = col.cast(dtype, strict=False)
    bad = (cast.is_null() & col.is_not_null()).arg_true()
    if bad.len():
        k = int(bad[0])
        kind = {pl.Int64: "an integer", pl.Float64: "a number"}.get(dtype, str(dtype))
        raise UserError(f"{path.name}: row {k + 1}: column {name!r} is {col[k]!r}, expected {kind}")
    return cast


def _time(col: str, unit: str) -> pl.Expr:
    if unit == "s":
        return pl.col(col).cast(pl.Int64)
    if unit == "ms":
        return pl.col(col).cast(pl.Int64) // 1000
    return pl.col(col).str.to_datetime(strict=False, time_zone="UTC").dt.epoch("s")


def read_generic(
    interactions: Path,
    cmap: ColumnMap,
    *,
    items_path: Path | None = None,
    fmt: str = "auto",
    sep: str | None = None,
    encoding: str = "utf-8",
    threshold: float = 3.0,
    skip_bad_lines: bool = False,
    domain: str = "item",
) -> Canonical:
    """Read a log (and optional item table) into the canonical tables."""
    interactions = require_file(Path(interactions), "interaction log (--interactions)")
    encoding = check_codec(encoding)
    if cmap.time_unit not in TIME_UNITS:
        raise UserError(f"--time-unit: choose one of {', '.join(TIME_UNITS)}, got {cmap.time_unit!r}")
    if cmap.rating and cmap.label:
        raise UserError("give --rating-col or --label-col, not both")
    report = ReadReport()
    cols: dict[str, Any] = {cmap.user: pl.Utf8, cmap.item: pl.Utf8}
    if cmap.rating:
        cols[cmap.rating] = pl.Float64
    if cmap.label:
        cols[cmap.label] = pl.Utf8
    if cmap.time:
        cols[cmap.time] = pl.Utf8 if cmap.time_unit == "iso" else pl.Int64
    inline_title = items_path is None and cmap.title
    log_cols = dict(cols)
    if inline_title:
        head = _columns_of(interactions, fmt, sep, encoding)
        if cmap.title in head:
            log_cols[cmap.title] = pl.Utf8
            for c in [cmap.categories, *cmap.attributes]:
                if c and c in head:
                    log_cols[c] = pl.Utf8
    opts = {"sep": sep, "encoding": encoding, "skip_bad_lines": skip_bad_lines, "report": report}
    df = read_table(interactions, fmt, log_cols, required=list(cols), **opts)
    df, rating, label = _rating_and_label(df, interactions, cmap, fmt, threshold, opts)
    ts = _time(cmap.time, cmap.time_unit) if cmap.time else pl.lit(None, dtype=pl.Int64)
    inter = df.select(
        pl.col(cmap.user).str.strip_chars().alias("user"),
        pl.col(cmap.item).str.strip_chars().alias("item"),
        rating.alias("rating"),
        label.alias("label"),
        ts.alias("timestamp"),
    )
    if cmap.time and cmap.time_unit == "iso":
        bad = inter["timestamp"].is_null().arg_true()
        if bad.len():
            raise UserError(
                f"{interactions.name}: row {int(bad[0]) + 1}: time {df[cmap.time][int(bad[0])]!r} is not ISO 8601 "
                "(use --time-unit s or ms for numbers)"
            )
    files = [interactions]
    if items_path is not None:
        items_path = require_file(Path(items_path), "item table (--items)")
        files.append(items_path)
        it = _item_table(items_path, cmap, {**opts, "sep": None})
    elif inline_title and cmap.title in df.columns:
        it = df.select(pl.col(cmap.item).alias("_id"), *[c for c in df.columns if c not in cols])
    else:
        it = None
    return assemble(inter, _items(inter, it, cmap), files, report, domain=domain)


def _rating_and_label(
    df: pl.DataFrame, path: Path, cmap: ColumnMap, fmt: str, threshold: float, opts: dict[str, Any]
) -> tuple[pl.DataFrame, pl.Expr, pl.Expr]:
    """The rating and label expressions; rows whose rating is not a number are rejected (or skipped)."""
    if cmap.label:
        lab = pl.col(cmap.label).str.strip_chars().str.to_lowercase()
        bad = df.filter(~lab.is_in(["0", "1", "true", "false", "0.0", "1.0"]))
        if bad.height:
            raise UserError(
                f"{path.name}: --label-col {cmap.label!r} holds {bad[cmap.label][0]!r}; labels must be 0/1"
            )
        return df, pl.lit(None, dtype=pl.Float64), lab.is_in(["1", "true", "1.0"]).cast(pl.Int8)
    if not cmap.rating:
        return df, pl.lit(None, dtype=pl.Float64), pl.lit(1, dtype=pl.Int8)
    fmt_used = detect_format(path) if fmt == "auto" else fmt
    if fmt_used == "parquet":
        locate = lambda k: f"{path.name}: row {k + 1}"  # noqa: E731
    else:
        locate = line_locator(
            path,
            encoding=opts["encoding"],
            header=fmt_used in ("csv", "tsv"),
            sep=opts["sep"] or ("\t" if fmt_used == "tsv" else ","),
        )
    df = reject_rows(
        df,
        pl.col(cmap.rating).is_nan() | pl.col(cmap.rating).is_infinite(),
        path,
        lambda row: f"--rating-col {cmap.rating!r} is {row[cmap.rating]}, not a number",
        locate,
        skip_bad_lines=opts["skip_bad_lines"],
        report=opts["report"],
    )
    rating = pl.col(cmap.rating)
    return df, rating, (rating > threshold).cast(pl.Int8)


def _item_table(path: Path, cmap: ColumnMap, opts: dict[str, Any]) -> pl.DataFrame:
    """The --items table with its id column renamed ``_id``."""
    id_col = cmap.item_id or cmap.item
    icols: dict[str, Any] = {id_col: pl.Utf8, cmap.title: pl.Utf8}
    for c in [cmap.categories, *cmap.attributes]:
        if c:
            icols[c] = pl.Utf8
    return read_table(path, "auto", icols, required=[id_col], **opts).rename({id_col: "_id"})


def _columns_of(path: Path, fmt: str, sep: str | None, encoding: str) -> list[str]:
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "parquet":
        return list(_parquet_schema(path))
    if fmt == "jsonl":
        from llm4rec.data.readers import iter_lines

        for _, line in iter_lines(path, encoding):
            if line.strip():
                try:
                    return list(json.loads(line))
                except (json.JSONDecodeError, TypeError):
                    return []
        return []
    from llm4rec.data.readers import _header

    return _header(path, sep or ("\t" if fmt == "tsv" else ","), encoding, '"')


def _items(inter: pl.DataFrame, it: pl.DataFrame | None, cmap: ColumnMap) -> pl.DataFrame:
    """The item table: given titles, else the item id as its own title."""
    ids = inter.select(pl.col("item").unique(maintain_order=True))
    if it is None:
        return ids.select("item", pl.col("item").alias("title"))
    it = it.with_columns(pl.col("_id").str.strip_chars()).unique("_id", keep="first", maintain_order=True)
    cats = (
        pl.col(cmap.categories)
        .fill_null("")
        .str.split(cmap.category_sep)
        .list.eval(pl.element().str.strip_chars().filter(pl.element() != ""))
        if cmap.categories and cmap.categories in it.columns
        else pl.lit([], dtype=pl.List(pl.Utf8))
    )
    attrs = [c for c in cmap.attributes if c in it.columns]
    attributes = pl.struct(attrs).struct.json_encode() if attrs else pl.lit("{}")
    table = it.select(
        pl.col("_id").alias("item"),
        pl.col(cmap.title).fill_null(pl.col("_id")).alias("title"),
        cats.alias("categories"),
        attributes.alias("attributes"),
    )
    # items of the log missing from the table are shown by their id
    missing = ids.join(table, on="item", how="anti").select("item", pl.col("item").alias("title"))
    return pl.concat([table, missing], how="diagonal")
