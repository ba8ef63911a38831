"""``llm4rec baseline`` and ``llm4rec compare`` on a tiny synthetic log; SASRec vs popularity on ML-100K."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from llm4rec.baselines.run import main as baseline
from llm4rec.data.synthetic import main as synth
from llm4rec.eval.compare import main as compare
from tests.data.logs import read, run

METHODS = ("popular", "ease", "als", "sasrec")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A synthetic log prepared leave-one-out for the three tasks, with a 16-sample few-shot subset."""
    root = tmp_path_factory.mktemp("baselines")
    synth(
        [
            "--out",
            str(root / "log"),
            "--users",
            "120",
            "--max-ratings",
            "25",
            "--corpus-users",
            "5",
            "--seed",
            "3",
        ]
    )
    code = run(
        "movielens",
        "--src",
        root / "log",
        "--out",
        root / "data",
        "--task",
        "tallrec,ranking,next_item",
        "--split",
        "loo",
        "--candidates",
        "6",
        "--train-samples",
        "16",
        "--seeds",
        "0",
    )
    assert code == 0
    return root / "data"


def _run(*args) -> int:
    try:
        return baseline([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("method", METHODS)
def test_binary_report_is_evaluates_format_and_auc_matches_sklearn(prepared, tmp_path, method):
    out = tmp_path / method
    assert (
        _run("--method", method, "--data", prepared / "tallrec", "--out", out, "--scores-format", "jsonl")
        == 0
    )
    report = _report(out)
    entry = report["checkpoints"][0]
    scores = read(out / "scores.jsonl")
    labels = [r["label"] for r in read(prepared / "tallrec" / "test.jsonl")]
    assert [s["label"] for s in scores] == labels
    s = np.array([row[f"score:{method}"] for row in scores])
    assert entry["metrics"]["auc"] == pytest.approx(roc_auc_score(labels, s), abs=1e-9)
    assert report["task"] == "binary" and report["n_samples"] == len(labels)
    assert len(report["data_sha256"]) == 64
    assert entry["baseline"]["feedback"] == "positive" and entry["baseline"]["few_shot"] is False
    assert (out / "report.md").is_file() and (out / "roc.png").is_file()


def test_ranking_and_next_item_reports(prepared, tmp_path):
    out = tmp_path / "rank"
    assert _run("--method", "ease", "--data", prepared / "ranking", "--out", out, "--ks", "1,3,6") == 0
    m = _report(out)["checkpoints"][0]["metrics"]
    assert m["n_queries"] == len(read(prepared / "ranking" / "test.jsonl"))
    assert 0 <= m["ndcg@1"] <= m["ndcg@3"] <= 1 and m["hr@6"] == pytest.approx(1.0)  # pools of 6
    scores = pl.read_parquet(out / "scores.parquet")
    assert len(scores["scores:ease"][0]) == 6
    out = tmp_path / "next"
    assert _run("--method", "popular", "--data", prepared / "next_item", "--out", out) == 0
    report = _report(out)
    assert report["task"] == "next_item" and "hr@20" in report["checkpoints"][0]["metrics"]
    # a history item is never recommended again: the top lists hold none of them
    tops = pl.read_parquet(out / "scores.parquet")["top:popular"].to_list()
    for row, top in zip(read(prepared / "next_item" / "test.jsonl"), tops):
        assert not set(row["history"]) & set(top)


def test_few_shot_subset_is_what_the_model_is_fitted_on(prepared, tmp_path):
    out = tmp_path / "few"
    assert (
        _run(
            "--method",
            "popular",
            "--data",
            prepared / "tallrec",
            "--train",
            "train_n16_s0.jsonl",
            "--out",
            out,
        )
        == 0
    )
    entry = _report(out)["checkpoints"][0]
    assert entry["baseline"]["train_samples"] == 16 and entry["baseline"]["few_shot"] is True
    assert entry["name"] == "popular (train_n16_s0)"
    full = _report_of(prepared, tmp_path / "full", "popular")
    assert entry["baseline"]["train_events"] < full["checkpoints"][0]["baseline"]["train_events"]


def _report_of(prepared: Path, out: Path, method: str, task: str = "tallrec") -> dict:
    assert _run("--method", method, "--data", prepared / task, "--out", out) == 0
    return _report(out)


@pytest.mark.parametrize("method", METHODS)
def test_test_targets_change_no_score(prepared, tmp_path, method):
    # Move every test target: flip the Yes/No labels, point ranking samples at another candidate, and
    # remove the test events from the canonical table. Fitted on the train split only, no score moves.
    copy = tmp_path / "data"
    shutil.copytree(prepared, copy)
    for task in ("tallrec", "ranking"):
        rows = read(copy / task / "test.jsonl")
        for r in rows:
            r["label"] = 1 - r["label"]
            r["output"] = "No." if r["output"] == "Yes." else "Yes."
            if task == "ranking":
                r["target_index"] = (r["target_index"] + 1) % len(r["candidates"])
                r["output"] = chr(ord("A") + r["target_index"])
        (copy / task / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    test_events = {(r["user_id"], r["item_id"]) for r in read(prepared / "tallrec" / "test.jsonl")}
    table = pl.read_parquet(copy / "interactions.parquet")
    keep = [(u, i) not in test_events for u, i in zip(table["user"].to_list(), table["item"].to_list())]
    table.filter(pl.Series(keep)).write_parquet(copy / "interactions.parquet")
    for task, column in (("tallrec", f"score:{method}"), ("ranking", f"scores:{method}")):
        a = pl.read_parquet(_path(prepared, tmp_path / f"a-{task}", method, task))[column].to_list()
        b = pl.read_parquet(_path(copy, tmp_path / f"b-{task}", method, task))[column].to_list()
        assert a == b


def _path(data: Path, out: Path, method: str, task: str) -> Path:
    assert _run("--method", method, "--data", data / task, "--out", out, "--seed", "1") == 0
    return out / "scores.parquet"


def test_retrieved_pools_end_to_end(prepared, tmp_path):
    _retrieved(prepared, tmp_path)


def _retrieved(prepared: Path, tmp_path: Path) -> tuple[Path, int]:
    """Write EASE's pools, prepare ranking from them, check meta.json and a baseline report on them."""
    pools = tmp_path / "pools.jsonl"
    assert (
        _run("--method", "ease", "--data", prepared / "ranking", "--write-candidates", pools, "--k", "5") == 0
    )
    lines = read(pools)
    users = {r["user_id"] for r in read(prepared / "ranking" / "test.jsonl")}
    assert {(r["user"], r["split"]) for r in lines} == {(u, s) for u in users for s in ("valid", "test")}
    assert all(len(r["candidates"]) == 5 and r["source"]["method"] == "ease" for r in lines)
    # the lists leave each sample's history out
    hist = {r["user_id"]: set(r["history"]) for r in read(prepared / "ranking" / "test.jsonl")}
    assert all(not set(r["candidates"]) & hist[r["user"]] for r in lines if r["split"] == "test")
    data = tmp_path / "retrieved"
    args = ["--src", prepared.parent / "log", "--out", data, "--task", "ranking", "--split", "loo"]
    assert run("movielens", *args, "--candidates", "5", "--candidates-file", pools) == 0
    meta = json.loads((data / "ranking" / "meta.json").read_text())
    pool = meta["candidates_pool"]
    assert pool["method"] == "ease" and pool["k"] == 5 and len(pool["sha256"]) == 64
    dropped = meta["dropped_target_not_in_candidates_by_split"]["test"]
    kept = len(read(data / "ranking" / "test.jsonl"))
    assert dropped > 0 and kept + dropped == len(users)
    report = _report_of(data, tmp_path / "rep", "popular", "ranking")
    entry = report["checkpoints"][0]
    assert report["candidates_pool"]["sha256"] == pool["sha256"] and report["dropped_samples"] == dropped
    overall = entry["overall_metrics"]
    assert overall["n_queries"] == len(users)
    assert overall["hr@1"] == pytest.approx(entry["metrics"]["hr@1"] * kept / len(users))
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "popular, retained samples" in md and "popular, all samples (dropped = miss)" in md
    return data, dropped


def test_evaluate_reports_retained_and_overall_on_retrieved_pools(prepared, tmp_path, tiny_llama):
    from llm4rec.eval.evaluate import main as evaluate

    data, dropped = _retrieved(prepared, tmp_path)
    out = tmp_path / "llm"
    assert (
        evaluate(
            [
                "--checkpoint",
                str(tiny_llama),
                "--data",
                str(data / "ranking" / "test.jsonl"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = _report(out)
    entry = report["checkpoints"][0]
    kept = entry["metrics"]["n_queries"]
    assert report["dropped_samples"] == dropped and report["candidates_pool"]["method"] == "ease"
    assert entry["overall_metrics"]["n_queries"] == kept + dropped
    assert entry["overall_metrics"]["mrr"] == pytest.approx(entry["metrics"]["mrr"] * kept / (kept + dropped))


def test_compare_same_data_and_refuses_different(prepared, tmp_path, capsys):
    a = tmp_path / "a"
    b = tmp_path / "b"
    c = tmp_path / "c"
    for out, method in ((a, "popular"), (b, "ease")):
        assert _run("--method", method, "--data", prepared / "tallrec", "--out", out) == 0
    assert _run("--method", "popular", "--data", prepared / "ranking", "--out", c) == 0
    capsys.readouterr()
    assert compare([str(a), str(b), "--out", str(tmp_path / "t.md")]) == 0
    text = capsys.readouterr().out
    assert "| popular |" in text and "| ease |" in text and "auc" in text.splitlines()[2]
    assert (tmp_path / "t.md").read_text() == text
    with pytest.raises(SystemExit) as exc:
        compare([str(a), str(c)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different sample files" in err


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_tables", "no canonical tables"),
        ("unknown_method", "unknown method 'sasrek' (did you mean 'sasrec'?)"),
        ("missing_train", "train_n999_s0.jsonl not found"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(prepared, tmp_path, capsys, case, message):
    data, method, extra = prepared / "tallrec", "popular", []
    if case == "no_tables":
        data = tmp_path / "bare" / "tallrec"
        shutil.copytree(prepared / "tallrec", data)
    elif case == "unknown_method":
        method = "sasrek"
    else:
        extra = ["--train", "train_n999_s0.jsonl"]
    out = tmp_path / "out"
    assert _run("--method", method, "--data", data, "--out", out, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()


def test_candidates_file_from_another_dataset_is_one_line(prepared, tmp_path, capsys):
    pools = tmp_path / "pools.jsonl"
    pools.write_text(
        json.dumps({"user": "1", "split": "test", "candidates": [str(i) for i in range(900, 906)]}) + "\n"
    )
    out = tmp_path / "retrieved"
    args = ["--src", prepared.parent / "log", "--out", out, "--task", "ranking", "--split", "loo"]
    assert run("movielens", *args, "--candidates", "6", "--candidates-file", pools) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "candidate '900' is not an item of the log" in err
    assert not out.exists()


@pytest.mark.slow
def test_sasrec_beats_popular_on_ml100k_leave_one_out(tmp_path):
    from tests.conftest import shared_path

    src = shared_path("data", "ml-100k")
    assert run("movielens", "--src", src, "--out", tmp_path / "d", "--task", "ranking", "--split", "loo") == 0
    hr = {}
    for method in ("popular", "sasrec"):
        hr[method] = _report_of(tmp_path / "d", tmp_path / method, method, "ranking")["checkpoints"][0][
            "metrics"
        ]
    assert hr["sasrec"]["ndcg@10"] > hr["popular"]["ndcg@10"] + 0.05
    assert hr["sasrec"]["hr@1"] > hr["popular"]["hr@1"] + 0.05
