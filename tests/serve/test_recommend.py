"""`llm4rec recommend`: the prompts prep writes, the scores `llm4rec evaluate` gives, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from llm4rec.eval.evaluate import main as evaluate_main
from llm4rec.serve.catalog import Catalog
from llm4rec.serve.recommend import main as recommend_main
from tests.conftest import run_main
from tests.serve.conftest import prep_synthetic, read_jsonl

run = run_main


def labelled(catalog_dir: Path, row: dict) -> str:
    """A sample's history as ``--history`` takes it (ID:label), labels from the canonical interactions."""
    inter = pl.read_parquet(catalog_dir / "interactions.parquet").filter(
        pl.col("user") == str(row["user_id"])
    )
    label = dict(zip(inter["item"].to_list(), inter["label"].to_list()))
    return ",".join(f"{h}:{label[str(h)]}" for h in row["history"])


def test_prompts_and_scores_equal_prep_and_evaluate(serve_adapter, catalog_dir, tmp_path, capsys):
    rows = read_jsonl(catalog_dir / "tallrec" / "test.jsonl")[:4]
    data = tmp_path / "four.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, _, err = run(
        evaluate_main,
        ["--checkpoint", str(serve_adapter), "--data", str(data), "--out", str(tmp_path / "rep")],
        capsys,
    )
    assert code == 0, err
    expected = pl.read_parquet(tmp_path / "rep" / "scores.parquet")["score:adapter"].to_list()
    cat = Catalog.load(catalog_dir)
    for row, want in zip(rows, expected):
        history = labelled(catalog_dir, row)
        sample = cat.yes_no_samples(
            cat.parse_history(history.split(",")), [cat.item_index(row["item_id"], "c")]
        )[0]
        assert (sample["instruction"], sample["input"], sample["history_spans"]) == (
            row["instruction"],
            row["input"],
            row["history_spans"],
        )
        argv = ["--checkpoint", str(serve_adapter), "--catalog", str(catalog_dir), "--history", history]
        argv += ["--candidates", str(row["item_id"]), "--keep-seen", "--json"]
        code, out, err = run(recommend_main, argv, capsys)
        assert code == 0, err
        rec = json.loads(out)["recommendations"]
        assert [r["item_id"] for r in rec] == [str(row["item_id"])]
        assert rec[0]["score"] == pytest.approx(want, abs=1e-5)


def test_user_history_is_the_train_part(catalog_dir):
    cat = Catalog.load(catalog_dir)
    # leave-one-out: a user's valid sample shows the events before their valid target, the train part
    for row in read_jsonl(catalog_dir / "tallrec" / "valid.jsonl")[:5]:
        hist = cat.user_history(str(row["user_id"]))
        assert [cat.item_ids[h.index] for h in hist] == [str(h) for h in row["history"]]
        assert set(cat.train_items(str(row["user_id"]))) >= {h.index for h in hist}


def test_user_top_k_leaves_seen_items_out(serve_adapter, catalog_dir, capsys):
    cat = Catalog.load(catalog_dir)
    user = cat.timeline.users[3]
    base = ["--checkpoint", str(serve_adapter), "--catalog", str(catalog_dir), "--user", str(user), "--json"]
    code, out, err = run(recommend_main, [*base, "--k", "4"], capsys)
    assert code == 0, err
    res = json.loads(out)
    scores = [r["score"] for r in res["recommendations"]]
    assert [r["rank"] for r in res["recommendations"]] == [1, 2, 3, 4]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    seen = {cat.item_ids[i] for i in cat.train_items(str(user))}
    assert res["candidates_scored"] == cat.n_items - len(seen)
    assert not seen & {r["item_id"] for r in res["recommendations"]}
    code, out, _ = run(recommend_main, [*base, "--k", "100", "--keep-seen"], capsys)
    assert json.loads(out)["candidates_scored"] == cat.n_items == len(json.loads(out)["recommendations"])
    # letters: one lettered pool, probabilities over its letters sum to one
    code, out, err = run(
        recommend_main, [*base, "--method", "letters", "--candidates", "1,2,3,4,5,6", "--keep-seen"], capsys
    )
    assert code == 0, err
    assert sum(r["score"] for r in json.loads(out)["recommendations"]) == pytest.approx(1.0, abs=1e-5)


def test_table_output(serve_adapter, catalog_dir, capsys):
    argv = ["--checkpoint", str(serve_adapter), "--catalog", str(catalog_dir), "--history", "1,2:0"]
    code, out, err = run(recommend_main, [*argv, "--candidates", "3,4,5", "--k", "2"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("3 candidates scored") and len(lines) == 3
    assert lines[1].split()[0] == "1" and lines[2].split()[0] == "2"


def test_errors_are_one_line(serve_adapter, catalog_dir, tmp_path_factory, capsys):
    other = prep_synthetic(tmp_path_factory.mktemp("other-data"), seed=1)
    base = ["--checkpoint", str(serve_adapter), "--catalog", str(catalog_dir)]
    cases = [
        ([*base, "--user", "nobody"], "user: unknown user 'nobody'"),
        ([*base, "--history", "1,nope"], "history[1]: unknown item 'nope'"),
        ([*base, "--history", " , "], "--history: the history is empty"),
        ([*base, "--history", "1", "--candidates", "2,zz"], "candidates[1]: unknown item 'zz'"),
        ([*base, "--history", "1", "--method", "letters"], "letters ranks 2 to 26 candidates"),
        (
            ["--checkpoint", str(serve_adapter), "--catalog", str(other), "--history", "1"],
            "other source files",
        ),
        (
            ["--checkpoint", str(serve_adapter), "--catalog", str(catalog_dir / "tallrec"), "--user", "1"],
            "is a task directory",
        ),
        (
            ["--checkpoint", str(serve_adapter), "--catalog", str(other.parent / "log"), "--user", "1"],
            "meta.json",
        ),
    ]
    for argv, text in cases:
        code, out, err = run(recommend_main, argv, capsys)
        assert code == 2, (argv, out, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and text in err, err


def test_retriever_candidates_file(serve_adapter, catalog_dir, tmp_path, capsys):
    cat = Catalog.load(catalog_dir)
    user = str(cat.timeline.users[2])
    lines = [
        {"user": user, "candidates": ["5", "6", "7"], "split": "valid"},
        {"user": user, "candidates": ["1", "2", "3", "4"], "split": "test"},
        {"user": "someone else", "candidates": ["8", "9"]},
    ]
    per_user = tmp_path / "retrieved.jsonl"
    per_user.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    one_list = tmp_path / "list.json"
    one_list.write_text(json.dumps(["10", "11"]), encoding="utf-8")
    base = ["--checkpoint", str(serve_adapter), "--catalog", str(catalog_dir), "--keep-seen", "--json"]
    code, out, err = run(recommend_main, [*base, "--user", user, "--candidates", str(per_user)], capsys)
    assert code == 0, err
    assert sorted(r["item_id"] for r in json.loads(out)["recommendations"]) == ["1", "2", "3", "4"]
    code, out, err = run(recommend_main, [*base, "--history", "1", "--candidates", str(one_list)], capsys)
    assert sorted(r["item_id"] for r in json.loads(out)["recommendations"]) == ["10", "11"]
    code, _, err = run(recommend_main, [*base, "--history", "1", "--candidates", str(per_user)], capsys)
    assert code == 2 and "holds per-user lists; give --user" in err
