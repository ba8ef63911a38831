"""Candidate pools: target exactly once, negatives unseen by the user, size K, letters consistent; how the
pool is shown (compact / compact-year / full) and the prep-time title cap."""

from __future__ import annotations

import json
import re
import string

import pytest

from tests.data.logs import random_events, read, run, split_rows, title_of, write_ml100k


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    d = tmp_path_factory.mktemp("rank")
    # a small catalogue makes 'unseen' binding: users see up to 30 of 45 items
    events = random_events(25, 45, seed=11, lo=10, hi=30)
    src = write_ml100k(d / "src", events, 45)
    out = d / "out"
    assert run("movielens", "--src", src, "--out", out, "--task", "ranking", "--candidates", "12") == 0
    return src, events, out


def test_pool_invariants(prepared):
    _, events, out = prepared
    seen: dict[str, set] = {}
    for u, i, _, _ in events:
        seen.setdefault(str(u), set()).add(str(i))
    rows = [r for g in split_rows(out, "ranking").values() for r in g]
    assert rows
    for r in rows:
        cands = r["candidates"]
        assert len(cands) == 12 and len(set(cands)) == 12
        assert cands.count(r["item_id"]) == 1
        assert cands[r["target_index"]] == r["item_id"]
        assert r["output"] == string.ascii_uppercase[r["target_index"]]
        assert not (set(cands) - {r["item_id"]}) & seen[r["user_id"]]
        assert r["candidate_titles"] == [title_of(int(c)) for c in cands]
        # compact (default): one 'A. Title' line per candidate, the year left out (no two titles clash)
        lines = r["input"].split("Candidate pool:\n")[1].split("\n")
        assert lines == [
            f"{string.ascii_uppercase[k]}. {bare(title_of(int(c)))}" for k, c in enumerate(cands)
        ]
        assert r["task"] == "ranking"


def bare(title: str) -> str:
    return re.sub(r" \(\d{4}\)$", "", title)


@pytest.mark.parametrize("form", ["compact", "compact-year", "full"])
def test_every_candidate_format_shows_every_candidate(prepared, tmp_path, form):
    from llm4rec.data.tokenize import drop_history, history_spans

    src, _, _ = prepared
    out = tmp_path / form
    assert run("movielens", "--src", src, "--out", out, "--task", "ranking", "--candidates", "12",
               "--candidate-format", form) == 0  # fmt: skip
    shown = {"compact": bare, "compact-year": str, "full": str}[form]
    label = '({}) "{}"' if form == "full" else "{}. {}"
    rows = [r for g in split_rows(out, "ranking").values() for r in g]
    for r in rows:
        head, pool = r["input"].split("\nCandidate pool:\n")
        assert pool.split("\n") == [
            label.format(string.ascii_uppercase[k], shown(title_of(int(c))))
            for k, c in enumerate(r["candidates"])
        ]
        # history items are quoted (titles hold commas) in the same short form, and stay droppable
        spans = history_spans(r)
        assert [r["input"][s:e] for s, e, _ in spans] == [
            f'"{shown(title_of(int(h)))}"' for h in r["history"]
        ]
        assert drop_history(r, len(spans))["input"] == "User history: \nCandidate pool:\n" + pool
        assert ("index letter" in r["instruction"]) == (form == "full")
        assert r["candidate_titles"] == [
            title_of(int(c)) for c in r["candidates"]
        ]  # whole, whatever is shown
    meta = json.loads((out / "ranking" / "meta.json").read_text())
    assert meta["candidate_format"] == form and "titles_shortened" not in meta


def test_short_titles_keep_the_year_only_where_titles_clash():
    from llm4rec.data.tasks.ranking import short_titles

    titles = [
        "Cape Fear (1962)",
        "Cape Fear (1991)",
        "Kull (1997)",
        "Kull (1997)",
        "Heat (1995)",
        "1492",
        "x (V)",
    ]
    assert short_titles(titles) == [
        "Cape Fear (1962)", "Cape Fear (1991)", "Kull", "Kull", "Heat", "1492", "x (V)"
    ]  # fmt: skip


def test_max_title_tokens_shortens_long_titles_and_counts_them(prepared, tmp_path, tiny_llama, capsys):
    from llm4rec.data.tasks.ranking import cap_titles
    from llm4rec.models.loading import load_backbone_tokenizer

    src, _, _ = prepared
    tok, _ = load_backbone_tokenizer(tiny_llama)
    titles = sorted({bare(title_of(i)) for i in range(1, 46)}) + ["Heat"]
    n_tok = {t: len(tok(t, add_special_tokens=False)["input_ids"]) for t in titles}
    cap = max(n_tok.values()) - 1
    long = {t for t in titles if n_tok[t] > cap}
    assert 0 < len(long) < len(titles) and "Heat" not in long
    capped, n = cap_titles(titles, tok, cap)
    assert n == len(long)
    for t, c in zip(titles, capped):
        if t in long:
            assert c.endswith("…") and t.startswith(c[:-1]) and len(c) < len(t)
            assert len(tok(c[:-1], add_special_tokens=False)["input_ids"]) <= cap - 1
        else:
            assert c == t
    out = tmp_path / "capped"
    assert run("movielens", "--src", src, "--out", out, "--task", "ranking", "--candidates", "12",
               "--max-title-tokens", str(cap), "--tokenizer", tiny_llama) == 0  # fmt: skip
    meta = json.loads((out / "ranking" / "meta.json").read_text())
    assert meta["max_title_tokens"] == cap
    assert meta["titles_shortened"] == len({i for i in range(1, 46) if bare(title_of(i)) in long})
    short = dict(zip(titles, capped))
    for r in read(out / "ranking" / "test.jsonl"):
        pool = r["input"].split("Candidate pool:\n")[1].split("\n")
        assert pool == [
            f"{string.ascii_uppercase[k]}. {short[bare(title_of(int(c)))]}"
            for k, c in enumerate(r["candidates"])
        ]
    # the cap needs a tokenizer: one line, no output
    assert run("movielens", "--src", src, "--out", tmp_path / "x", "--task", "ranking",
               "--max-title-tokens", "8") == 2  # fmt: skip
    assert "--max-title-tokens: give the backbone's tokenizer with --tokenizer DIR" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_target_position_is_spread(prepared):
    _, _, out = prepared
    positions = [r["target_index"] for r in read(out / "ranking" / "train.jsonl")]
    counts = [positions.count(k) for k in range(12)]
    assert min(counts) > 0 and max(counts) < 3 * len(positions) / 12


def test_external_candidates_file(prepared, tmp_path):
    src, events, _ = prepared
    last = {}
    for u, i, _, t in events:
        if str(u) not in last or t >= last[str(u)][0]:
            last[str(u)] = (t, str(i))
    lines = []
    for u, (_, target) in sorted(last.items()):
        others = [str(k) for k in range(1, 46) if str(k) != target][:7]
        cands = [*others[:3], target, *others[3:]] if int(u) % 2 else others  # odd users: a hit
        lines.append(json.dumps({"user": u, "candidates": cands, "split": "test"}))
    path = tmp_path / "cands.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o"
    assert run("movielens", "--src", src, "--out", out, "--task", "ranking", "--candidates", "5",
               "--candidates-file", path) == 0  # fmt: skip
    test = read(out / "ranking" / "test.jsonl")
    hits = {u for u in last if int(u) % 2}
    assert {r["user_id"] for r in test} == hits  # misses are dropped and counted
    for r in test:
        assert r["candidates"] == json.loads(lines[sorted(last).index(r["user_id"])])["candidates"][:5]
        assert r["target_index"] == 3 and r["output"] == "D"
    meta = json.loads((out / "ranking" / "meta.json").read_text())
    assert meta["dropped_target_not_in_candidates"] == len(last) - len(hits)
    # other splits fall back to random pools of the same size
    assert all(len(r["candidates"]) == 5 for r in read(out / "ranking" / "valid.jsonl"))


def test_pool_size_limits(prepared, tmp_path, capsys):
    src, _, _ = prepared
    assert (
        run("movielens", "--src", src, "--out", tmp_path / "o", "--task", "ranking", "--candidates", "27")
        == 2
    )
    assert "--candidates: a pool needs 2 to 26" in capsys.readouterr().err
    # a user who has seen all 18 items of the log cannot fill a pool of 5
    events = [(1, i, 4, 1000 + i) for i in range(1, 19)] + [(2, i, 2, 2000 + i) for i in range(1, 6)]
    small = write_ml100k(tmp_path / "small", events, 20)
    assert (
        run("movielens", "--src", small, "--out", tmp_path / "o", "--task", "ranking", "--candidates", "5")
        == 2
    )
    assert (
        "no event with only 0 of the 18 items in the log, fewer than the 4 negatives"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("bitmap", [True, False])
def test_sampler_is_uniform_over_unseen_items(monkeypatch, bitmap):
    import numpy as np
    import polars as pl

    from llm4rec.data.tasks import negatives

    if not bitmap:  # the path for catalogues too large for a users x items bitmap
        monkeypatch.setattr(negatives, "_BITMAP_LIMIT", 0)
    # user 0 has seen items 0..29 of 40 (heavy), user 1 only item 0 (light)
    events = pl.DataFrame(
        {"u": [0] * 30 + [1], "i": list(range(30)) + [0]}, schema={"u": pl.UInt32, "i": pl.UInt32}
    )
    sampler = negatives.NegativeSampler(events, 40)
    users = np.array([0] * 3000 + [1] * 3000)
    draw = sampler.sample(users, 5, np.random.default_rng(0))
    assert all(len(set(row)) == 5 for row in draw)
    heavy, light = draw[:3000].ravel(), draw[3000:].ravel()
    assert heavy.min() >= 30 and 0 not in light
    # every unseen item about equally often (15,000 draws over 10 and over 39 items)
    for values, items in ((heavy, range(30, 40)), (light, range(1, 40))):
        counts = np.bincount(values, minlength=40)[list(items)]
        assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()


def test_real_ml100k_k20_prompts_fit_384_with_the_llama_tokenizer(tmp_path):
    """Real ML-100K (one user in 30, for time) with the real LLaMA tokenizer: compact K=20 samples sized by
    prep to 384 and to 340 tokens keep the instruction and all 20 candidates, only the oldest history items
    go, and each fits its budget as training tokenizes it."""
    from llm4rec.models.backbone import resolve_template
    from llm4rec.models.loading import load_backbone_tokenizer
    from tests.conftest import shared_path

    raw = shared_path("data", "ml-100k")
    llama = shared_path("models", "llama-7b")
    src = tmp_path / "src"
    src.mkdir()
    lines = (raw / "u.data").read_text().splitlines()
    (src / "u.data").write_text("".join(x + "\n" for x in lines if int(x.split("\t")[0]) % 30 == 0))
    for name in ("u.item", "u.genre"):
        (src / name).write_bytes((raw / name).read_bytes())
    tok, fam = load_backbone_tokenizer(llama)
    template = resolve_template(fam, "auto", "en")

    def length(r):
        return len(tok(template.render(r["instruction"], r["input"]) + r["output"])["input_ids"]) + 1

    assert run("movielens", "--src", src, "--out", tmp_path / "whole", "--task", "ranking") == 0
    whole = read(tmp_path / "whole" / "ranking" / "test.jsonl") + read(
        tmp_path / "whole" / "ranking" / "valid.jsonl"
    )
    for budget in (384, 340):
        out = tmp_path / str(budget)
        assert run("movielens", "--src", src, "--out", out, "--task", "ranking", "--max-prompt-tokens", str(budget),
                   "--tokenizer", llama) == 0  # fmt: skip
        sized = read(out / "ranking" / "test.jsonl") + read(out / "ranking" / "valid.jsonl")
        assert len(sized) == len(whole) == 2 * 31
        over = 0
        for w, s in zip(whole, sized):
            assert length(s) <= budget and s["instruction"] == w["instruction"]
            assert s["input"].split("Candidate pool:\n")[1] == w["input"].split("Candidate pool:\n")[1]
            assert len(s["input"].split("Candidate pool:\n")[1].split("\n")) == 20
            assert w["history"][len(w["history"]) - len(s["history"]) :] == s["history"]
            over += length(w) > budget
            assert (s["history"] != w["history"]) == (length(w) > budget)
        assert over > 0 or budget == 384  # 340 is below some of these whole prompts
        assert sum(len(s["history"]) for s in sized) / len(sized) > (9 if budget == 384 else 5)
