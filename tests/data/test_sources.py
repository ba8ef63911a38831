"""Amazon (2014 / 2018 / 2023), BookCrossing and generic logs: hand-made files with the awkward cases."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from llm4rec.data.sources.amazon import read_amazon
from llm4rec.data.sources.bookcrossing import read_bookcrossing
from llm4rec.data.sources.generic import ColumnMap, read_generic
from llm4rec.errors import UserError
from tests.data.logs import read, run, split_rows


def _amazon_rows(users=8, items=15):
    rows = []
    for u in range(users):
        for k in range(6):
            i = (u * 3 + k * 2) % items
            rows.append((f"U{u}", f"B{i:03d}", float(1 + (u + k) % 5), 1_400_000_000 + u * 100 + k))
    return rows


def test_amazon_2014_python_literal_meta_gz(tmp_path):
    rows = _amazon_rows()
    with gzip.open(tmp_path / "reviews_Books_5.json.gz", "wt") as f:
        for u, i, r, t in rows:
            f.write(
                json.dumps({"reviewerID": u, "asin": i, "overall": r, "unixReviewTime": t, "summary": "a"})
                + "\n"
            )
    with gzip.open(tmp_path / "meta_Books.json.gz", "wt") as f:
        for k in range(15):
            # Python literals: single quotes, a title with both quote kinds, nested category paths
            meta = {"asin": f"B{k:03d}", "title": f"Book {k}: \"It's\" here", "price": 9.5,
                    "categories": [["Books", "Mystery" if k % 2 else "Romance"], ["Books", "Kindle"]]}  # fmt: skip
            f.write(repr(meta) + "\n")
    canon = read_amazon(tmp_path / "reviews_Books_5.json.gz", tmp_path / "meta_Books.json.gz")
    assert canon.interactions["user"].to_list() == [r[0] for r in rows]
    assert canon.interactions["label"].to_list() == [int(r[2] > 3) for r in rows]
    it = canon.items.filter(pl.col("item") == "B003")
    assert it["title"][0] == 'Book 3: "It\'s" here' and it["categories"][0].to_list() == ["Mystery", "Kindle"]
    assert canon.domain == "book"


def test_amazon_2018_and_bad_lines(tmp_path):
    rows = _amazon_rows()
    lines = [
        json.dumps({"reviewerID": u, "asin": i, "overall": r, "unixReviewTime": t}) for u, i, r, t in rows
    ]
    lines.insert(4, '{"reviewerID": "U9", "asin": "B001"}')  # no rating
    (tmp_path / "Electronics.json").write_text("\n".join(lines) + "\n")
    meta = [json.dumps({"asin": f"B{k:03d}", "title": f"Cable {k}", "category": ["Electronics", "Cables"],
                        "brand": "Acme"}) for k in range(15)]  # fmt: skip
    (tmp_path / "meta_Electronics.json").write_text("\n".join(meta) + "\n")
    with pytest.raises(
        UserError, match=r"Electronics.json:5: missing field 'overall' \(the line has: reviewerID, asin\)"
    ):
        read_amazon(tmp_path / "Electronics.json", tmp_path / "meta_Electronics.json")
    canon = read_amazon(
        tmp_path / "Electronics.json", tmp_path / "meta_Electronics.json", skip_bad_lines=True
    )
    assert canon.skipped_lines == {"Electronics.json": 1} and canon.interactions.height == len(rows)
    assert canon.items["categories"][0].to_list() == ["Cables"]
    assert json.loads(canon.items["attributes"][0]) == {"brand": "Acme"} and canon.domain == "product"


def test_amazon_2023_ms_timestamps_parent_asin(tmp_path):
    rows = _amazon_rows()
    with open(tmp_path / "All_Beauty.jsonl", "w") as f:
        for u, i, r, t in rows:
            f.write(
                json.dumps(
                    {"rating": r, "user_id": u, "asin": i + "-v", "parent_asin": i, "timestamp": t * 1000 + 7}
                )
                + "\n"
            )
    with open(tmp_path / "meta_All_Beauty.jsonl", "w") as f:
        for k in range(15):
            f.write(json.dumps({"parent_asin": f"B{k:03d}", "title": f"Soap {k}", "main_category": "All Beauty",
                                "categories": [], "store": "S"}) + "\n")  # fmt: skip
    canon = read_amazon(tmp_path / "All_Beauty.jsonl", tmp_path / "meta_All_Beauty.jsonl")
    assert canon.interactions["item"].to_list() == [r[1] for r in rows]
    assert canon.interactions["timestamp"].to_list() == [r[3] for r in rows]
    out = tmp_path / "o"
    assert run("amazon", "--reviews", tmp_path / "All_Beauty.jsonl", "--meta", tmp_path / "meta_All_Beauty.jsonl",
               "--out", out, "--task", "tallrec,ranking", "--candidates", "4") == 0  # fmt: skip
    test = read(out / "tallrec" / "test.jsonl")
    assert test and all("target product" in r["instruction"] for r in test)


def _bx(tmp_path, extra_rating_line=""):
    d = tmp_path / "bx"
    d.mkdir()
    books = ['"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";"Image-URL-S"']
    for k in range(12):
        books.append(f'"{k:010d}";"Tit\u00e9r; {k} \\"Q\\"";"Au {k}";"{1990 + k}";"Pub";"http://x"')
    (d / "BX-Books.csv").write_bytes(("\n".join(books) + "\n").encode("iso-8859-1"))
    ratings = ['"User-ID";"ISBN";"Book-Rating"']
    for u in range(1, 11):
        for k in range(u % 4 + 3):
            ratings.append(f'"{u}";"{(u + k * 5) % 12:010d}";"{(u * 3 + k) % 11}"')
    ratings.append('"99";"9999999999";"8"')  # a book missing from BX-Books: dropped as untitled
    (d / "BX-Book-Ratings.csv").write_bytes(
        ("\n".join(ratings) + "\n" + extra_rating_line).encode("iso-8859-1")
    )
    return d


def test_bookcrossing_quoting_encoding_and_implicit(tmp_path):
    d = _bx(tmp_path)
    canon = read_bookcrossing(d)
    assert canon.items["title"][3] == 'Tit\u00e9r; 3 "Q"'
    assert json.loads(canon.items["attributes"][3]) == {"author": "Au 3", "year": "1993", "publisher": "Pub"}
    inter = canon.interactions
    zero = inter.filter(pl.col("rating").is_null())
    assert zero.height > 0 and zero["label"].to_list() == [0] * zero.height  # implicit 0 -> label 0
    assert read_bookcrossing(d, implicit="drop").interactions["rating"].null_count() == 0


def test_bookcrossing_preset_is_seeded(tmp_path):
    d = _bx(tmp_path)
    outs = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        out = tmp_path / name
        assert run("bookcrossing", "--src", d, "--out", out, "--preset", "tallrec-book", "--seed", seed,
                   "--ratios", "0.6,0.2,0.2") == 0  # fmt: skip
        outs.append({s: (out / "tallrec" / f"{s}.jsonl").read_bytes() for s in ("train", "valid", "test")})
    assert outs[0] == outs[1] and outs[0] != outs[2]
    rows = [r for g in split_rows(tmp_path / "a", "tallrec").values() for r in g]
    assert len({r["user_id"] for r in rows}) == len(rows)  # one sample per user
    for r in rows:
        assert "target book" in r["instruction"] and '" written by Au ' in r["input"]
        assert len(r["history"]) >= 3  # users with more than 3 ratings, as TALLRec


def test_bookcrossing_bad_line(tmp_path):
    d = _bx(tmp_path, extra_rating_line='"5";"0000000001"\n')
    with pytest.raises(UserError, match=r"BX-Book-Ratings.csv:\d+: expected 3 fields \(header\), got 2"):
        read_bookcrossing(d)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "jsonl"])
def test_generic_formats(tmp_path, fmt):
    log = pl.DataFrame(
        {
            "uid": [f"u{k % 5}" for k in range(40)],
            "iid": [f"i{(k * 7) % 13}" for k in range(40)],
            "stars": [float(k % 5 + 1) for k in range(40)],
            "when": [f"2020-01-{1 + k // 2:02d}T10:00:00" for k in range(40)],
        }
    )
    items = pl.DataFrame({"id": [f"i{k}" for k in range(12)], "name": [f'Thing "{k}", big' for k in range(12)],
                          "tags": ["A|B" if k % 2 else "C" for k in range(12)]})  # fmt: skip
    path = tmp_path / f"log.{fmt}"
    {"csv": lambda: log.write_csv(path), "tsv": lambda: log.write_csv(path, separator="\t"),
     "parquet": lambda: log.write_parquet(path), "jsonl": lambda: log.write_ndjson(path)}[fmt]()  # fmt: skip
    items.write_csv(tmp_path / "items.csv")
    cmap = ColumnMap(user="uid", item="iid", rating="stars", time="when", time_unit="iso", item_id="id", title="name",
                     categories="tags")  # fmt: skip
    canon = read_generic(path, cmap, items_path=tmp_path / "items.csv")
    assert canon.interactions["user"].to_list() == log["uid"].to_list()
    assert canon.interactions["timestamp"][0] == 1577872800
    titles = dict(zip(canon.items["item"], canon.items["title"]))
    assert titles["i3"] == 'Thing "3", big' and titles["i12"] == "i12"  # not in the item table: its id
    cats = dict(zip(canon.items["item"], canon.items["categories"].to_list()))
    assert cats["i3"] == ["A", "B"]
    with pytest.raises(UserError, match="missing (column|field) 'user'.* uid, iid, stars, when"):
        read_generic(path, ColumnMap(item="iid"), items_path=tmp_path / "items.csv")


def test_generic_cli_labels_without_times(tmp_path):
    lines = ["user,item,clicked,title"] + [f"{k % 4},{k % 9},{k % 2},Item {k % 9}" for k in range(60)]
    (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "o"
    assert run("generic", "--interactions", tmp_path / "log.csv", "--label-col", "clicked", "--out", out,
               "--dedup", "none", "--task", "tallrec") == 0  # fmt: skip
    rows = [r for g in split_rows(out, "tallrec").values() for r in g]
    assert all(r["label"] == int(r["output"] == "Yes.") for r in rows)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["order"] == "file"
    (tmp_path / "bad.csv").write_text("user,item,clicked\n1,2,yes\n")
    assert run("generic", "--interactions", tmp_path / "bad.csv", "--label-col", "clicked", "--out", out) == 2
