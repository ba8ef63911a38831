"""MovieLens readers (every layout), bad input, and the TALLRec preset against an independent reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm4rec.data.sources.movielens import read_movielens
from llm4rec.errors import UserError
from tests.conftest import shared_path
from tests.data.logs import random_events, read, run, title_of, write_ml1m, write_ml100k, write_mlcsv

WRITERS = {"100k": write_ml100k, "dat": write_ml1m, "csv": write_mlcsv}


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_every_layout_reads_the_same_log(tmp_path, layout):
    events = random_events(12, 30, seed=1)
    src = WRITERS[layout](tmp_path / layout, events, 30)
    canon = read_movielens(src)
    inter = canon.interactions
    assert inter.columns == ["user", "item", "rating", "label", "timestamp"]
    # file order is kept; ids, times and the label rule survive the layout
    assert inter["user"].to_list() == [str(u) for u, *_ in events]
    assert inter["item"].to_list() == [str(i) for _, i, *_ in events]
    assert inter["timestamp"].to_list() == [t for *_, t in events]
    assert inter["label"].to_list() == [int(r > 3) for r in inter["rating"].to_list()]
    titles = dict(zip(canon.items["item"].to_list(), canon.items["title"].to_list()))
    assert titles["7"] == title_of(7)  # comma, quotes and non-ASCII intact in every encoding
    cats = dict(zip(canon.items["item"].to_list(), canon.items["categories"].to_list()))
    assert "Drama" in cats["3"] and "unknown" not in sum(cats.values(), [])
    years = json.loads(canon.items.filter(canon.items["item"] == "7")["attributes"][0])
    assert years == {"year": str(1950 + 7)}
    expected = {"100k": {"u.data", "u.item", "u.genre"}, "dat": {"ratings.dat", "movies.dat"}}
    assert set(canon.sources) == expected.get(layout, {"ratings.csv", "movies.csv"})
    assert all(len(h) == 64 for h in canon.sources.values())


def test_csv_no_genres_and_half_stars(tmp_path):
    src = write_mlcsv(tmp_path / "c", random_events(5, 14, seed=2), 14)
    canon = read_movielens(src)
    cats = dict(zip(canon.items["item"].to_list(), canon.items["categories"].to_list()))
    assert cats["7"] == [] and cats["14"] == []
    assert set(canon.interactions["rating"].to_list()) <= {1.5, 2.5, 3.5, 4.5, 5.0}


@pytest.mark.parametrize(
    ("layout", "bad_line", "needle"),
    [
        ("100k", "5\t6\t3\n", "u.data:3: expected 4 tab-separated fields, got 3"),
        ("100k", "5\t6\tx\t881250949\n", "u.data:3: field 'rating' is 'x'"),
        ("dat", "5::6::3::88125094x\n", "ratings.dat:3: field 'timestamp' is '88125094x'"),
        ("dat", "5:6:3:881250949\n", "ratings.dat:3: expected 4 '::'-separated fields, got 1"),
        ("csv", "5,6,4.0\n", "ratings.csv:4: expected 4 fields (header), got 3"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, layout, bad_line, needle):
    events = random_events(3, 12, seed=3)
    src = WRITERS[layout](tmp_path / "m", events, 12)
    name = {"100k": "u.data", "dat": "ratings.dat", "csv": "ratings.csv"}[layout]
    lines = (src / name).read_text().splitlines(keepends=True)
    at = 3 if layout == "csv" else 2  # zero-based: line 3 of the file (line 4 with the CSV header)
    lines.insert(at, bad_line)
    (src / name).write_text("".join(lines))
    with pytest.raises(UserError, match="--skip-bad-lines") as err:
        read_movielens(src)
    assert needle in str(err.value)
    canon = read_movielens(src, skip_bad_lines=True)
    assert canon.interactions.height == len(events)
    assert canon.skipped_lines == {name: 1}


def test_cli_bad_input_exits_2_and_leaves_no_output(tmp_path, capsys):
    src = write_ml100k(tmp_path / "s", random_events(4, 15, seed=4), 15)
    (src / "u.data").write_text((src / "u.data").read_text() + "1\t2\n")
    out = tmp_path / "out"
    assert run("movielens", "--src", src, "--out", out) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: u.data:") and "Traceback" not in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    assert run("movielens", "--src", src, "--out", out, "--skip-bad-lines") == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["skipped_lines"] == {"u.data": 1}


def test_missing_files_and_columns(tmp_path):
    with pytest.raises(UserError, match="no MovieLens ratings file"):
        read_movielens(tmp_path / "nothing")
    src = write_ml100k(tmp_path / "a", random_events(3, 10), 10)
    (src / "u.item").unlink()
    with pytest.raises(UserError, match=r"no item file \(u.item\)"):
        read_movielens(src)
    csv = write_mlcsv(tmp_path / "c", random_events(3, 10), 10)
    (csv / "ratings.csv").write_text("userId,itemId,rating,timestamp\n1,2,3.0,4\n")
    with pytest.raises(
        UserError, match="missing column 'movieId'; the header has: userId, itemId, rating, timestamp"
    ):
        read_movielens(csv)


def test_encoding_error_suggests_the_flag(tmp_path):
    src = write_mlcsv(tmp_path / "c", random_events(3, 10), 10)
    (src / "movies.csv").write_bytes("movieId,title,genres\n1,Caf\u00e9 (1999),Drama\n".encode("iso-8859-1"))
    with pytest.raises(UserError, match=r"movies.csv:2: not valid utf-8 .*--encoding latin-1"):
        read_movielens(src)
    canon = read_movielens(src, encoding="latin-1")
    assert canon.items["title"][0] == "Caf\u00e9 (1999)"


def _tallrec_reference(src: Path) -> list[dict]:
    """TALLRec's movie preprocessing written out plainly (dicts and loops), as an independent check."""
    titles = {}
    for line in (src / "u.item").read_text(encoding="iso-8859-1").splitlines():
        f = line.split("|")
        titles[f[0]] = f[1]
    per_user: dict[str, list] = {}
    for k, line in enumerate((src / "u.data").read_text().splitlines()):
        u, i, r, t = line.split("\t")
        per_user.setdefault(u, []).append((int(t), k, i, int(int(r) > 3)))
    samples = []
    for u, evs in per_user.items():
        evs.sort()
        for p in range(10, len(evs)):
            hist = evs[p - 10 : p]
            liked = ", ".join(f'"{titles[e[2]]}"' for e in hist if e[3] == 1)
            disliked = ", ".join(f'"{titles[e[2]]}"' for e in hist if e[3] == 0)
            tgt = evs[p]
            samples.append(
                {
                    "input": f"User Preference: {liked}\nUser Unpreference: {disliked}\n"
                    f'Whether the user will like the target movie "{titles[tgt[2]]}"?',
                    "output": "Yes." if tgt[3] else "No.",
                    "user_id": u,
                }
            )
    samples = samples[-10000:]
    n = len(samples)
    return samples[: int(n * 0.8)], samples[int(n * 0.8) : int(n * 0.9)], samples[int(n * 0.9) :]


def _check_preset(src: Path, out: Path) -> None:
    assert run("movielens", "--src", src, "--out", out, "--task", "tallrec", "--preset", "tallrec") == 0
    ref = _tallrec_reference(src)
    for name, expected in zip(("train", "valid", "test"), ref):
        got = read(out / "tallrec" / f"{name}.jsonl")
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert (g["input"], g["output"], g["user_id"]) == (e["input"], e["output"], e["user_id"])
            assert g["instruction"].startswith("Given the user's preference and unpreference")
            assert g["label"] == (g["output"] == "Yes.") and len(g["history"]) == 10


def test_tallrec_preset_matches_reference_on_a_small_log(tmp_path):
    src = write_ml100k(tmp_path / "s", random_events(40, 60, seed=5, lo=15, hi=40), 60)
    _check_preset(src, tmp_path / "out")


def test_tallrec_preset_on_real_ml100k(tmp_path):
    src = shared_path("data", "ml-100k")
    _check_preset(src, tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "tallrec" / "meta.json").read_text())
    assert meta["counts"] == {"train": 8000, "valid": 1000, "test": 1000}
    import hashlib

    assert meta["sources"]["u.data"] == hashlib.sha256((src / "u.data").read_bytes()).hexdigest()


def test_chinese_prompts(tmp_path):
    src = write_ml100k(tmp_path / "s", random_events(10, 30, seed=6), 30)
    assert run("movielens", "--src", src, "--out", tmp_path / "o", "--lang", "zh") == 0
    rows = read(tmp_path / "o" / "tallrec" / "test.jsonl")
    assert {r["output"] for r in rows} <= {"是", "否"}
    assert all(("是" if r["label"] else "否") == r["output"] for r in rows)
    assert all("用户喜欢的电影" in r["input"] and "电影" in r["instruction"] for r in rows)
