"""The source registry of data prep: each source's flags and how it is read into the canonical tables."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm4rec.data.canonical import Canonical


@dataclass
class Source:
    """A source layout: how to add its flags and how to read it into the canonical tables."""

    name: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    read: Callable[[argparse.Namespace, float | None], Canonical]
    default_threshold: float = 3.0
    #: default of --encoding (the text encoding the release uses)
    default_encoding: str = "utf-8"
    #: what --encoding covers, for its help
    encoding_help: str = "text encoding of the source files"
    #: extra defaults of the source (e.g. order 'file' for logs without times)
    defaults: dict[str, Any] = field(default_factory=dict)


def _movielens() -> Source:
    from llm4rec.data.sources import movielens

    def add(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--src", required=True, type=Path, help="MovieLens directory (any release)")
        ap.add_argument(
            "--layout", default="auto", choices=movielens.LAYOUTS, help="file layout (auto-detected)"
        )

    def read(args: argparse.Namespace, threshold: float | None) -> Canonical:
        return movielens.read_movielens(
            args.src,
            layout=args.layout,
            encoding=args.encoding,
            threshold=3.0 if threshold is None else threshold,
            skip_bad_lines=args.skip_bad_lines,
        )

    return Source(
        "movielens",
        add,
        read,
        default_encoding="auto",
        encoding_help="encoding of the text files (auto: UTF-8, else ISO-8859-1 as the older releases use)",
    )


def _amazon() -> Source:
    from llm4rec.data.sources import amazon

    def add(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--reviews", required=True, type=Path, help="review file (JSON lines, plain or .gz)")
        ap.add_argument(
            "--meta", required=True, type=Path, help="metadata file with item titles (plain or .gz)"
        )
        ap.add_argument(
            "--release", default="auto", choices=amazon.RELEASES, help="data release (auto-detected)"
        )

    def read(args: argparse.Namespace, threshold: float | None) -> Canonical:
        return amazon.read_amazon(
            args.reviews,
            args.meta,
            release=args.release,
            threshold=3.0 if threshold is None else threshold,
            skip_bad_lines=args.skip_bad_lines,
            encoding=args.encoding,
        )

    return Source("amazon", add, read, encoding_help="text encoding of the review and metadata files")


def _bookcrossing() -> Source:
    from llm4rec.data.sources import bookcrossing

    def add(ap: argparse.ArgumentParser) -> None:
        ap.add_argument(
            "--src", required=True, type=Path, help="directory with BX-Book-Ratings.csv, BX-Books.csv"
        )
        ap.add_argument(
            "--implicit",
            default="negative",
            choices=bookcrossing.IMPLICIT,
            help="rating 0 (implicit): keep as label 0 (TALLRec) or drop",
        )

    def read(args: argparse.Namespace, threshold: float | None) -> Canonical:
        return bookcrossing.read_bookcrossing(
            args.src,
            encoding=args.encoding,
            threshold=5.0 if threshold is None else threshold,
            implicit=args.implicit,
            skip_bad_lines=args.skip_bad_lines,
        )

    return Source(
        "bookcrossing",
        add,
        read,
        default_threshold=5.0,
        default_encoding="iso-8859-1",
        encoding_help="encoding of the CSV files (the release is ISO-8859-1)",
    )


def _generic() -> Source:
    from llm4rec.data.sources import generic

    def add(ap: argparse.ArgumentParser) -> None:
        ap.add_argument(
            "--interactions", required=True, type=Path, help="the log: CSV, TSV, Parquet or JSONL"
        )
        ap.add_argument("--items", type=Path, default=None, help="item table with titles (same formats)")
        ap.add_argument(
            "--format", default="auto", choices=generic.FORMATS, help="log format (from the name)"
        )
        ap.add_argument("--sep", default=None, help="CSV field separator (default , or tab for .tsv)")
        ap.add_argument("--user-col", default="user", help="user id column")
        ap.add_argument("--item-col", default="item", help="item id column")
        ap.add_argument("--rating-col", default=None, help="rating column (label = rating > threshold)")
        ap.add_argument("--label-col", default=None, help="0/1 label column (instead of a rating)")
        ap.add_argument("--time-col", default=None, help="time column")
        ap.add_argument(
            "--time-unit", default="s", choices=generic.TIME_UNITS, help="unit of the time column"
        )
        ap.add_argument("--item-id-col", default=None, help="item id column of --items (default: --item-col)")
        ap.add_argument("--title-col", default="title", help="title column (of --items, or of the log)")
        ap.add_argument("--category-col", default=None, help="category column ('|'-separated values)")
        ap.add_argument("--category-sep", default="|", help="separator inside the category column")
        ap.add_argument("--attribute-cols", default="", help="comma-separated item attribute columns to keep")

    def read(args: argparse.Namespace, threshold: float | None) -> Canonical:
        cmap = generic.ColumnMap(
            user=args.user_col,
            item=args.item_col,
            rating=args.rating_col,
            label=args.label_col,
            time=args.time_col,
            time_unit=args.time_unit,
            item_id=args.item_id_col,
            title=args.title_col,
            categories=args.category_col,
            category_sep=args.category_sep,
            attributes=[c.strip() for c in args.attribute_cols.split(",") if c.strip()],
        )
        return generic.read_generic(
            args.interactions,
            cmap,
            items_path=args.items,
            fmt=args.format,
            sep=args.sep,
            encoding=args.encoding,
            threshold=3.0 if threshold is None else threshold,
            skip_bad_lines=args.skip_bad_lines,
            domain=args.domain or "item",
        )

    return Source("generic", add, read, encoding_help="text encoding of CSV, TSV and JSONL files")


#: source name -> factory (imported lazily so one source's code never loads another's)
SOURCES: dict[str, Callable[[], Source]] = {
    "movielens": _movielens,
    "amazon": _amazon,
    "bookcrossing": _bookcrossing,
    "generic": _generic,
}


def register_source(name: str, factory: Callable[[], Source]) -> None:
    """Make a source available to :func:`main` under ``name``."""
    SOURCES[name] = factory
