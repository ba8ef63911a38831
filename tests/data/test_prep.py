"""The pipeline: determinism, few-shot grids, atomic output, filters, canonical tables, next_item."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest

from llm4rec.data import canonical
from llm4rec.errors import UserError
from tests.data.logs import random_events, read, run, split_rows, title_of, write_ml100k

ALL = "tallrec,ranking,instructrec,next_item"


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return write_ml100k(
        tmp_path_factory.mktemp("prep") / "src", random_events(30, 60, seed=21, lo=12, hi=30), 60
    )


def _files(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_same_arguments_give_identical_bytes(src, tmp_path):
    args = ["--src", src, "--task", ALL, "--train-samples", "8,16", "--seeds", "0,1", "--seed", "5"]
    assert run("movielens", *args, "--out", tmp_path / "a") == 0
    assert run("movielens", *args, "--out", tmp_path / "b") == 0
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert set(a) == set(b) and "interactions.parquet" in a and "ranking/train_n16_s1.jsonl" in a
    assert a == b
    assert run("movielens", *args[:-1], "6", "--out", tmp_path / "c") == 0
    c = _files(tmp_path / "c")
    assert c["ranking/test.jsonl"] != a["ranking/test.jsonl"]  # the seed matters where randomness is used
    assert c["tallrec/test.jsonl"] == a["tallrec/test.jsonl"]  # and nowhere else


def test_few_shot_grid(src, tmp_path):
    out = tmp_path / "o"
    assert run("movielens", "--src", src, "--out", out, "--train-samples", "4,32", "--seeds", "0,1,2") == 0
    train = (out / "tallrec" / "train.jsonl").read_text().splitlines()
    subsets = {}
    for n in (4, 32):
        for seed in (0, 1, 2):
            lines = (out / "tallrec" / f"train_n{n}_s{seed}.jsonl").read_text().splitlines()
            assert len(lines) == len(set(lines)) == n and set(lines) <= set(train)
            assert [train.index(x) for x in lines] == sorted(
                train.index(x) for x in lines
            )  # train order kept
            subsets[n, seed] = lines
    assert subsets[4, 0] != subsets[4, 1] != subsets[4, 2]
    meta = json.loads((out / "tallrec" / "meta.json").read_text())
    assert meta["few_shot"]["train_n32_s2.jsonl"] == 32
    assert run("movielens", "--src", src, "--out", tmp_path / "x", "--train-samples", "100000") == 2


def test_failed_run_leaves_previous_output_untouched(src, tmp_path):
    out = tmp_path / "o"
    assert run("movielens", "--src", src, "--out", out, "--task", "tallrec") == 0
    before = _files(out)
    assert run("movielens", "--src", src, "--out", out, "--task", "ranking", "--candidates", "1") == 2
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no temporary directory left behind


def test_meta_and_canonical_tables(src, tmp_path):
    out = tmp_path / "o"
    assert run("movielens", "--src", src, "--out", out, "--task", "tallrec,next_item") == 0
    inter, items = canonical.read_tables(out)
    raw = [line.split("\t") for line in (src / "u.data").read_text().splitlines()]
    assert inter["user"].to_list() == [r[0] for r in raw] and inter["timestamp"].to_list() == [
        int(r[3]) for r in raw
    ]
    assert items.schema == pl.Schema(canonical.ITEM_SCHEMA)
    meta = json.loads((out / "meta.json").read_text())
    rows = split_rows(out, "tallrec")
    counts = {k: len(v) for k, v in rows.items()}
    assert meta["tasks"]["tallrec"]["counts"] == counts
    for k, v in rows.items():
        assert meta["tasks"]["tallrec"]["label_balance"][k] == round(sum(r["label"] for r in v) / len(v), 6)
    assert meta["arguments"]["resolved"]["split"] == "loo" and set(meta["sources"]) == {
        "u.data",
        "u.item",
        "u.genre",
    }
    nxt = read(out / "next_item" / "test.jsonl")
    assert all(
        r["output"] == f'"{title_of(int(r["item_id"]))}"' and r["output"] not in r["input"] for r in nxt
    )


def test_dedup_and_k_core():
    inter = pl.DataFrame(
        {
            "user": ["a", "a", "a", "b", "b", "c"],
            "item": ["x", "y", "x", "x", "y", "z"],
            "rating": [1.0, 2.0, 5.0, 3.0, 4.0, 5.0],
            "label": [0, 0, 1, 0, 1, 1],
            "timestamp": [10, 20, 30, 5, 6, 7],
        },
        schema_overrides={"label": pl.Int8},
    )
    last = canonical.dedup(inter, "last")
    assert last["rating"].to_list() == [2.0, 5.0, 3.0, 4.0, 5.0]  # a's re-rating of x replaces the first
    first = canonical.dedup(inter, "first")
    assert first["rating"].to_list() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert canonical.dedup(inter, "none").height == 6
    core = canonical.k_core(last, 2)
    assert sorted(zip(core["user"], core["item"])) == [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")]
    with pytest.raises(UserError, match="--dedup"):
        canonical.dedup(inter, "mean")


def test_cli_rejects_bad_values(src, tmp_path, capsys):
    cases = [
        (["--task", "tallrec,rank"], "--task: unknown task 'rank'"),
        (["--ratios", "0.5,0.5"], "--ratios: expected 3 comma-separated numbers"),
        (["--split", "tallrec", "--ratios", "0.5,0.4,0.4"], "--ratios: need three non-negative fractions"),
        (["--task", "instructrec", "--instructrec-mix", "listwise=1"], "unknown task form 'listwise'"),
        (["--history", "0"], "--history: need at least 1"),
    ]
    for extra, needle in cases:
        assert run("movielens", "--src", src, "--out", tmp_path / "o", *extra) == 2
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_history_spans_locate_every_history_item(src, tmp_path, lang):
    from llm4rec.data.tokenize import drop_history, history_spans

    assert run("movielens", "--src", src, "--task", ALL, "--lang", lang, "--out", tmp_path / "o") == 0
    lq, rq = ('"', '"') if lang == "en" else ("“", "”")
    seen = 0
    for task in ALL.split(","):
        for row in read(tmp_path / "o" / task / "test.jsonl") + read(tmp_path / "o" / task / "train.jsonl"):
            spans = history_spans(row)
            if task == "instructrec" and row["preference"] != "implicit":
                assert spans == []
                continue
            assert len(spans) == len(row["history"])
            # ranking's compact pools show titles without their year (no two test titles clash)
            name = (lambda i: re.sub(r" \(\d{4}\)$", "", title_of(i))) if task == "ranking" else title_of
            assert [row["input"][s:e] for s, e, _ in spans] == [
                f"{lq}{name(int(h))}{rq}" for h in row["history"]
            ]
            seen += len(spans)
            # dropping the oldest items leaves the same list without them, separators included
            for d in (1, len(spans)):
                cut = drop_history(row, d)
                assert [cut["input"][s:e] for s, e, _ in history_spans(cut)] == [
                    f"{lq}{name(int(h))}{rq}" for h in row["history"][d:]
                ]
                assert not any(bad in cut["input"] for bad in (", ,", ", \n", ": , ", "，，", "：，"))
    assert seen > 1000


def test_max_prompt_tokens_sizes_samples_to_a_tokenizer(src, tmp_path, tiny_llama):
    from llm4rec.data.tokenize import drop_history, fit_to_budget, history_spans
    from llm4rec.models.backbone import resolve_template
    from llm4rec.models.loading import load_backbone_tokenizer

    tok, fam = load_backbone_tokenizer(tiny_llama)
    template = resolve_template(fam, "auto", "en")

    def length(r):
        text = template.render(r["instruction"], r["input"]) + r["output"]
        return len(tok(text)["input_ids"]) + 1  # + EOS

    tasks = "tallrec,ranking,next_item"
    assert run("movielens", "--src", src, "--task", tasks, "--out", tmp_path / "a") == 0
    plain = {
        t: read(tmp_path / "a" / t / "test.jsonl") + read(tmp_path / "a" / t / "valid.jsonl")
        for t in tasks.split(",")
    }
    train = [r for t in plain for r in read(tmp_path / "a" / t / "train.jsonl")]
    everything = [r for rows in plain.values() for r in rows] + train
    bare = max(length(drop_history(r, len(history_spans(r)))) for r in everything)
    whole = max(length(r) for rows in plain.values() for r in rows)
    n = (bare + whole) // 2
    args = ["--src", src, "--task", tasks, "--max-prompt-tokens", str(n), "--tokenizer", tiny_llama]
    assert run("movielens", *args, "--out", tmp_path / "b") == 0
    for task, rows in plain.items():
        sized = read(tmp_path / "b" / task / "test.jsonl") + read(tmp_path / "b" / task / "valid.jsonl")
        assert len(sized) == len(rows)
        shortened = 0
        for r, s in zip(rows, sized):
            assert length(s) <= n
            want = fit_to_budget(r, lambda x: [0] * length(x), n).sample  # the fewest oldest items dropped
            assert (s["input"], s["history"], s["history_spans"]) == (
                want["input"],
                want["history"],
                want["history_spans"],
            )
            shortened += s["input"] != r["input"]
        meta = json.loads((tmp_path / "b" / task / "meta.json").read_text())["prompt_sizing"]
        assert meta["max_prompt_tokens"] == n and meta["samples"] == sum(
            meta_c
            for meta_c in json.loads((tmp_path / "b" / task / "meta.json").read_text())["counts"].values()
        )
        assert meta["shortened"] >= shortened and (shortened > 0) == (max(length(r) for r in rows) > n)
    assert any(
        json.loads((tmp_path / "b" / t / "meta.json").read_text())["prompt_sizing"]["shortened"]
        for t in plain
    )
    # too small for the question and candidates alone: one line naming the flag, no output
    code = run(
        "movielens",
        *args[:-3],
        "--max-prompt-tokens",
        str(bare - 1),
        "--tokenizer",
        tiny_llama,
        "--out",
        tmp_path / "c",
    )
    assert code == 2 and not (tmp_path / "c").exists()
    assert run("movielens", "--src", src, "--max-prompt-tokens", "300", "--out", tmp_path / "d") == 2
