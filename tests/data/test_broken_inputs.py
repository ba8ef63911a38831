"""A corpus of broken and awkward inputs for every source reader, run through the data_prep entry point.

Broken input: exit status 2, exactly one line on stderr naming the file and the line (or row/column), no
traceback, no output directory. Doubtful input that prep may drop: counted in meta.json under ``dropped``
and told in one ``warning:`` line. Awkward but valid input (a UTF-8 byte-order mark, Latin-1 with
``--encoding``, float ids): accepted.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from llm4rec.data.prep import main
from tests.data.logs import random_events, write_ml100k, write_mlcsv

EVENTS = random_events(25, 18, seed=3, ties=False)
N_ITEMS = 18


def prep(capsys, source: str, *args: str | Path) -> tuple[int, str]:
    """Run data prep in-process (not quiet); return the exit status and stderr."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in args], source=source)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def fails(capsys, out: Path, source: str, *args: str | Path, match: list[str]) -> str:
    """Assert the run is rejected with one clear line holding every string of ``match``."""
    code, err = prep(capsys, source, *args, "--out", out)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for m in match:
        assert m in err, (m, err)
    assert not out.exists() and not any(p.name.startswith(f".{out.name}") for p in out.parent.iterdir())
    return err


def warns(capsys, out: Path, source: str, *args: str | Path, dropped: dict[str, int]) -> dict:
    """Assert the run succeeds with one warning line, and meta.json counts what was dropped."""
    code, err = prep(capsys, source, *args, "--out", out)
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: "), err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dropped"] == dropped, meta["dropped"]
    for n in dropped.values():
        assert str(n) in lines[0]
    return meta


def accepts(capsys, out: Path, source: str, *args: str | Path) -> dict:
    code, err = prep(capsys, source, *args, "--out", out)
    assert code == 0, err
    assert "warning" not in err and "Traceback" not in err, err
    return json.loads((out / "meta.json").read_text())


def _gzip(path: Path) -> Path:
    gz = path.with_name(path.name + ".gz")
    gz.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return gz


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _bad_crc(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC32 of the trailer
    path.write_bytes(bytes(data))


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


# ------------------------------------------------------------------------------------------ MovieLens


@pytest.fixture
def ml100k(tmp_path) -> Path:
    return write_ml100k(tmp_path / "ml", EVENTS, N_ITEMS)


@pytest.fixture
def mlcsv(tmp_path) -> Path:
    return write_mlcsv(tmp_path / "mlcsv", EVENTS, N_ITEMS)


def test_movielens_rating_off_the_scale_names_the_line_or_is_counted(ml100k, tmp_path, capsys):
    lines = _lines(ml100k / "u.data")
    u, i, _, t = lines[6].split("\t")
    lines[6] = f"{u}\t{i}\t9\t{t}"
    (ml100k / "u.data").write_text("".join(lines))
    fails(capsys, tmp_path / "o", "movielens", "--src", ml100k,
          match=["u.data:7:", "rating 9", "0.5-5 star"])  # fmt: skip
    meta = warns(capsys, tmp_path / "o", "movielens", "--src", ml100k, "--skip-bad-lines",
                 dropped={"bad_lines_skipped": 1})  # fmt: skip
    assert meta["skipped_lines"] == {"u.data": 1}


def test_movielens_nan_rating_in_csv_release(mlcsv, tmp_path, capsys):
    lines = _lines(mlcsv / "ratings.csv")
    u, i, _, t = lines[4].split(",")
    lines[4] = f"{u},{i},NaN,{t}"
    (mlcsv / "ratings.csv").write_text("".join(lines))
    fails(capsys, tmp_path / "o", "movielens", "--src", mlcsv, match=["ratings.csv:5:", "rating nan"])


def test_movielens_unknown_item_ids_are_counted_and_warned(ml100k, tmp_path, capsys):
    (ml100k / "u.data").write_text((ml100k / "u.data").read_text() + "3\t777\t4\t889000000\n")
    meta = warns(
        capsys, tmp_path / "o", "movielens", "--src", ml100k, dropped={"events_of_untitled_items": 1}
    )
    assert meta["filters"]["events_of_untitled_items"] == 1


def test_movielens_timestamp_overflow_names_the_line(ml100k, tmp_path, capsys):
    lines = _lines(ml100k / "u.data")
    lines[2] = "1\t2\t3\t99999999999999999999999\n"
    (ml100k / "u.data").write_text("".join(lines))
    fails(capsys, tmp_path / "o", "movielens", "--src", ml100k, match=["u.data:3:", "'timestamp'", "64-bit"])


@pytest.mark.parametrize("damage", [_truncate, _bad_crc])
def test_movielens_damaged_gzip(ml100k, tmp_path, capsys, damage):
    damage(_gzip(ml100k / "u.data"))
    fails(capsys, tmp_path / "o", "movielens", "--src", ml100k, match=["u.data.gz", "gzip file"])


def test_movielens_missing_item_file_and_empty_ratings(ml100k, tmp_path, capsys):
    (ml100k / "u.item").unlink()
    fails(capsys, tmp_path / "o", "movielens", "--src", ml100k, match=["no item file (u.item)"])
    write_ml100k(ml100k, EVENTS, N_ITEMS)
    (ml100k / "u.data").write_text("")
    fails(capsys, tmp_path / "o", "movielens", "--src", ml100k, match=["u.data", "no data lines"])


def test_movielens_csv_with_byte_order_marks_is_accepted(mlcsv, tmp_path, capsys):
    plain = accepts(capsys, tmp_path / "a", "movielens", "--src", mlcsv)
    for name in ("ratings.csv", "movies.csv"):
        (mlcsv / name).write_bytes(b"\xef\xbb\xbf" + (mlcsv / name).read_bytes())
    bom = accepts(capsys, tmp_path / "b", "movielens", "--src", mlcsv)
    assert bom["canonical"] == plain["canonical"]
    assert (tmp_path / "a" / "tallrec" / "test.jsonl").read_bytes() == (
        tmp_path / "b" / "tallrec" / "test.jsonl"
    ).read_bytes()


# ------------------------------------------------------------------------------------------ Amazon


def _amazon(tmp_path: Path, *, extra: list[str] = (), meta_items: int = N_ITEMS) -> tuple[Path, Path]:
    d = tmp_path / "amz"
    d.mkdir(exist_ok=True)
    lines = [
        json.dumps({"reviewerID": f"U{u}", "asin": f"B{i:03d}", "overall": float(r), "unixReviewTime": t})
        for u, i, r, t in EVENTS
    ]
    (d / "reviews.json").write_text("\n".join([*lines, *extra]) + "\n")
    meta = [
        json.dumps({"asin": f"B{k:03d}", "title": f"Thing {k}", "category": ["Root", "Leaf"]})
        for k in range(1, meta_items + 1)
    ]
    (d / "meta.json").write_text("\n".join(meta) + "\n")
    return d / "reviews.json", d / "meta.json"


def test_amazon_damaged_gzip_names_the_file(tmp_path, capsys):
    reviews, meta = _amazon(tmp_path)
    gz = _gzip(reviews)
    _truncate(gz)
    fails(capsys, tmp_path / "o", "amazon", "--reviews", gz, "--meta", meta,
          match=["reviews.json.gz:", "ends early"])  # fmt: skip
    reviews, meta = _amazon(tmp_path)
    _bad_crc(gz := _gzip(reviews))
    fails(capsys, tmp_path / "o", "amazon", "--reviews", gz, "--meta", meta,
          match=["reviews.json.gz:", "corrupt", "CRC"])  # fmt: skip


def test_amazon_missing_meta_file(tmp_path, capsys):
    reviews, _ = _amazon(tmp_path)
    fails(capsys, tmp_path / "o", "amazon", "--reviews", reviews, "--meta", tmp_path / "nope.json",
          match=["nope.json: no such file", "metadata file (--meta)"])  # fmt: skip


def test_amazon_timestamp_overflow_and_object_ids_name_the_line(tmp_path, capsys):
    big = '{"reviewerID": "U1", "asin": "B001", "overall": 4.0, "unixReviewTime": 99999999999999999999999}'
    reviews, meta = _amazon(tmp_path, extra=[big])
    fails(capsys, tmp_path / "o", "amazon", "--reviews", reviews, "--meta", meta,
          match=[f"reviews.json:{len(EVENTS) + 1}:", "unixReviewTime", "64-bit"])  # fmt: skip
    obj = '{"reviewerID": {"id": 2}, "asin": "B001", "overall": 4.0, "unixReviewTime": 1}'
    reviews, meta = _amazon(tmp_path, extra=[obj])
    fails(capsys, tmp_path / "o", "amazon", "--reviews", reviews, "--meta", meta,
          match=[f"reviews.json:{len(EVENTS) + 1}:", "reviewerID", "JSON dict"])  # fmt: skip
    # a string that merely looks like an object is a valid id
    ok = '{"reviewerID": "{weird}", "asin": "B001", "overall": 4.0, "unixReviewTime": 1}'
    reviews, meta = _amazon(tmp_path, extra=[ok])
    accepts(capsys, tmp_path / "o", "amazon", "--reviews", reviews, "--meta", meta)


def test_amazon_rating_out_of_range_and_nan(tmp_path, capsys):
    for value in ("9.0", "NaN"):
        bad = f'{{"reviewerID": "U1", "asin": "B001", "overall": {value}, "unixReviewTime": 5}}'
        reviews, meta = _amazon(tmp_path, extra=[bad])
        fails(capsys, tmp_path / "o", "amazon", "--reviews", reviews, "--meta", meta,
              match=[f"reviews.json:{len(EVENTS) + 1}:", "1-5 stars"])  # fmt: skip


def test_amazon_latin1_needs_the_encoding_flag_it_advises(tmp_path, capsys):
    reviews, meta = _amazon(tmp_path)
    text = meta.read_text().replace("Thing 3", "Th\u00e9 3")
    meta.write_bytes(text.encode("latin-1"))
    err = fails(capsys, tmp_path / "o", "amazon", "--reviews", reviews, "--meta", meta,
                match=["meta.json:3:", "--encoding"])  # fmt: skip
    assert "--encoding latin-1" in err
    accepts(capsys, tmp_path / "o", "amazon", "--reviews", reviews, "--meta", meta, "--encoding", "latin-1")
    items = pl.read_parquet(tmp_path / "o" / "items.parquet")
    assert "Th\u00e9 3" in items["title"].to_list()


def test_amazon_reviews_of_items_missing_from_meta_are_counted(tmp_path, capsys):
    reviews, meta = _amazon(tmp_path, meta_items=N_ITEMS - 1)
    missing = sum(1 for _, i, _, _ in EVENTS if i == N_ITEMS)
    assert missing
    warns(capsys, tmp_path / "o", "amazon", "--reviews", reviews, "--meta", meta,
          dropped={"events_of_untitled_items": missing})  # fmt: skip


def test_amazon_empty_and_bom(tmp_path, capsys):
    reviews, meta = _amazon(tmp_path)
    reviews.write_bytes(b"\xef\xbb\xbf" + reviews.read_bytes())
    meta.write_bytes(b"\xef\xbb\xbf" + meta.read_bytes())
    accepts(capsys, tmp_path / "o", "amazon", "--reviews", reviews, "--meta", meta)
    meta.write_text("")
    fails(
        capsys, tmp_path / "o2", "amazon", "--reviews", reviews, "--meta", meta, match=["meta.json", "empty"]
    )


# ------------------------------------------------------------------------------------------ BookCrossing


def _bx(tmp_path: Path, extra: str = "") -> Path:
    d = tmp_path / "bx"
    d.mkdir(exist_ok=True)
    books = ['"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher"']
    books += [f'"{k:010d}";"Tit\u00e9r {k}";"Au {k}";"1999";"Pub"' for k in range(1, N_ITEMS + 1)]
    (d / "BX-Books.csv").write_bytes(("\n".join(books) + "\n").encode("iso-8859-1"))
    ratings = ['"User-ID";"ISBN";"Book-Rating"']
    ratings += [f'"{u}";"{i:010d}";"{r * 2}"' for u, i, r, _ in EVENTS]
    (d / "BX-Book-Ratings.csv").write_bytes(("\n".join(ratings) + "\n" + extra).encode("iso-8859-1"))
    return d


def test_bookcrossing_rating_42_names_the_line_or_is_counted(tmp_path, capsys):
    d = _bx(tmp_path, extra='"3";"0000000002";"42"\n')
    line = len(EVENTS) + 2
    fails(capsys, tmp_path / "o", "bookcrossing", "--src", d,
          match=[f"BX-Book-Ratings.csv:{line}:", "Book-Rating 42", "0-10"])  # fmt: skip
    warns(capsys, tmp_path / "o", "bookcrossing", "--src", d, "--skip-bad-lines",
          dropped={"bad_lines_skipped": 1})  # fmt: skip


def test_bookcrossing_unknown_isbns_are_counted_and_warned(tmp_path, capsys):
    d = _bx(tmp_path, extra='"3";"9999999999";"8"\n"4";"8888888888";"0"\n')
    warns(capsys, tmp_path / "o", "bookcrossing", "--src", d, dropped={"events_of_untitled_items": 2})


def test_bookcrossing_wrong_type_missing_file_truncated_gzip(tmp_path, capsys):
    d = _bx(tmp_path, extra='"3";"0000000002";"eight"\n')
    fails(capsys, tmp_path / "o", "bookcrossing", "--src", d,
          match=[f"BX-Book-Ratings.csv:{len(EVENTS) + 2}:", "'Book-Rating' is 'eight'"])  # fmt: skip
    d = _bx(tmp_path)
    (d / "BX-Books.csv").unlink()
    fails(capsys, tmp_path / "o", "bookcrossing", "--src", d, match=["no book file (BX-Books.csv)"])
    d = _bx(tmp_path)
    _truncate(_gzip(d / "BX-Book-Ratings.csv"))
    fails(capsys, tmp_path / "o", "bookcrossing", "--src", d, match=["BX-Book-Ratings.csv.gz:", "ends early"])


def test_bookcrossing_header_only_is_empty(tmp_path, capsys):
    d = _bx(tmp_path)
    (d / "BX-Book-Ratings.csv").write_text('"User-ID";"ISBN";"Book-Rating"\n')
    fails(capsys, tmp_path / "o", "bookcrossing", "--src", d, match=["BX-Book-Ratings.csv", "no data lines"])


# ------------------------------------------------------------------------------------------ generic


def _log() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "uid": [u for u, _, _, _ in EVENTS],
            "iid": [i for _, i, _, _ in EVENTS],
            "stars": [float(r) for _, _, r, _ in EVENTS],
            "ts": [t for _, _, _, t in EVENTS],
        }
    )


GENERIC = ("--user-col", "uid", "--item-col", "iid", "--rating-col", "stars", "--time-col", "ts")


def test_generic_unreadable_parquet_log_and_items(tmp_path, capsys):
    (tmp_path / "log.parquet").write_bytes(b"PAR1 this is not parquet at all PAR1")
    fails(capsys, tmp_path / "o", "generic", "--interactions", tmp_path / "log.parquet", *GENERIC,
          match=["log.parquet: not a readable Parquet file"])  # fmt: skip
    # a file with a valid footer but damaged data pages
    _log().write_parquet(tmp_path / "ok.parquet", compression="uncompressed")
    data = bytearray((tmp_path / "ok.parquet").read_bytes())
    data[8:200] = b"\xff" * 192
    (tmp_path / "damaged.parquet").write_bytes(bytes(data))
    fails(capsys, tmp_path / "o", "generic", "--interactions", tmp_path / "damaged.parquet", *GENERIC,
          match=["damaged.parquet", "Parquet"])  # fmt: skip


def test_generic_float_user_column_with_nan(tmp_path, capsys):
    log = _log().with_columns(pl.col("uid").cast(pl.Float64))
    log.write_parquet(tmp_path / "log.parquet")
    meta = accepts(capsys, tmp_path / "a", "generic", "--interactions", tmp_path / "log.parquet", *GENERIC)
    users = pl.read_parquet(tmp_path / "a" / "interactions.parquet")["user"]
    assert set(users) == {str(u) for u, _, _, _ in EVENTS}  # "3", never "3.0"
    assert meta["canonical"]["interactions"] == len(EVENTS)
    nan = log.with_columns(
        pl.when(pl.int_range(pl.len()) == 5).then(float("nan")).otherwise(pl.col("uid")).alias("uid")
    )
    nan.write_parquet(tmp_path / "nan.parquet")
    fails(capsys, tmp_path / "o", "generic", "--interactions", tmp_path / "nan.parquet", *GENERIC,
          match=["nan.parquet: row 6: column 'uid' is nan"])  # fmt: skip


def test_generic_csv_with_a_byte_order_mark_is_accepted(tmp_path, capsys):
    csv = tmp_path / "log.csv"
    _log().write_csv(csv)
    plain = accepts(capsys, tmp_path / "a", "generic", "--interactions", csv, *GENERIC)
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())
    bom = accepts(capsys, tmp_path / "b", "generic", "--interactions", csv, *GENERIC)
    assert bom["canonical"] == plain["canonical"]


def test_generic_nan_rating_wrong_type_overflow_empty(tmp_path, capsys):
    csv = tmp_path / "log.csv"
    text = _log().write_csv()
    lines = text.splitlines(keepends=True)
    u, i, _, t = lines[3].split(",")
    csv.write_text("".join([*lines[:3], f"{u},{i},nan,{t}", *lines[4:]]))
    fails(capsys, tmp_path / "o", "generic", "--interactions", csv, *GENERIC,
          match=["log.csv:4:", "'stars' is nan"])  # fmt: skip
    csv.write_text("".join([*lines[:3], f"{u},{i},4.0,123456789012345678901234567890\n", *lines[4:]]))
    fails(capsys, tmp_path / "o", "generic", "--interactions", csv, *GENERIC,
          match=["log.csv:4:", "'ts'", "64-bit"])  # fmt: skip
    csv.write_text("".join([*lines[:3], f"{u},{i},four,{t}", *lines[4:]]))
    fails(capsys, tmp_path / "o", "generic", "--interactions", csv, *GENERIC,
          match=["log.csv:4:", "'stars' is 'four'"])  # fmt: skip
    csv.write_text("")
    fails(capsys, tmp_path / "o", "generic", "--interactions", csv, *GENERIC, match=["log.csv", "empty"])
    csv.write_text(lines[0])
    fails(
        capsys, tmp_path / "o", "generic", "--interactions", csv, *GENERIC, match=["log.csv", "no data lines"]
    )


def test_generic_jsonl_object_id_and_latin1_csv(tmp_path, capsys):
    jl = tmp_path / "log.jsonl"
    rows = _log().to_dicts()
    rows[2]["uid"] = {"id": 2}
    jl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fails(capsys, tmp_path / "o", "generic", "--interactions", jl, *GENERIC, match=["log.jsonl:3:", "'uid'"])
    csv = tmp_path / "log.csv"
    log = _log().with_columns(pl.format("Caf\u00e9 {}", pl.col("iid")).alias("title"))
    csv.write_bytes(log.write_csv().encode("latin-1"))
    err = fails(capsys, tmp_path / "o", "generic", "--interactions", csv, *GENERIC, match=["log.csv:2:"])
    assert "--encoding" in err
    accepts(capsys, tmp_path / "o", "generic", "--interactions", csv, *GENERIC, "--encoding", "latin-1")
    titles = pl.read_parquet(tmp_path / "o" / "items.parquet")["title"]
    assert titles.str.starts_with("Caf\u00e9 ").all()


def test_generic_truncated_gzip_log(tmp_path, capsys):
    csv = tmp_path / "log.csv"
    _log().write_csv(csv)
    gz = _gzip(csv)
    _truncate(gz)
    fails(
        capsys, tmp_path / "o", "generic", "--interactions", gz, *GENERIC, match=["log.csv.gz", "gzip file"]
    )


def test_movielens_csv_item_file_in_latin1(mlcsv, tmp_path, capsys):
    movies = mlcsv / "movies.csv"
    movies.write_bytes(movies.read_text(encoding="utf-8").encode("latin-1"))
    err = fails(capsys, tmp_path / "o", "movielens", "--src", mlcsv, "--encoding", "utf-8",
                match=["movies.csv:2:", "--encoding"])  # fmt: skip
    assert "latin-1" in err
    accepts(capsys, tmp_path / "o", "movielens", "--src", mlcsv, "--encoding", "latin-1")


def test_bookcrossing_with_byte_order_marks_is_accepted(tmp_path, capsys):
    d = _bx(tmp_path)
    plain = accepts(capsys, tmp_path / "a", "bookcrossing", "--src", d)
    for name in ("BX-Books.csv", "BX-Book-Ratings.csv"):
        (d / name).write_bytes(b"\xef\xbb\xbf" + (d / name).read_bytes())
    assert accepts(capsys, tmp_path / "b", "bookcrossing", "--src", d)["canonical"] == plain["canonical"]


def test_generic_missing_item_table(tmp_path, capsys):
    csv = tmp_path / "log.csv"
    _log().write_csv(csv)
    fails(capsys, tmp_path / "o", "generic", "--interactions", csv, *GENERIC, "--items", tmp_path / "items.csv",
          match=["items.csv: no such file", "--items"])  # fmt: skip
