"""InstructRec templates: coverage in both languages, answers consistent with the recorded fields."""

from __future__ import annotations

import collections
import string

import pytest

from llm4rec.data.tasks.instructrec import FORMS, templates
from tests.data.logs import random_events, run, split_rows, title_of, write_ml100k


def test_template_counts():
    en, zh = templates("en"), templates("zh")
    assert len(en) >= 24 and len(zh) >= 12
    assert {t[0] for t in en.values()} == set(FORMS)
    # no template without both a preference and an intention
    assert all(not (p == "none" and i == "none") for _, p, i, _, _ in en.values())
    assert len({t[4] for t in en.values()}) == len(en)  # all distinct texts


@pytest.fixture(scope="module", params=["en", "zh"])
def rows(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("ir")
    src = write_ml100k(d / "src", random_events(60, 80, seed=13, lo=20, hi=40), 80)
    out = d / "out"
    assert run("movielens", "--src", src, "--out", out, "--task", "instructrec", "--lang", request.param) == 0
    return request.param, [r for g in split_rows(out, "instructrec").values() for r in g]


def test_every_template_is_used(rows):
    lang, rs = rows
    used = collections.Counter(r["template_id"] for r in rs)
    assert set(used) == set(templates(lang))


def test_answers_match_fields(rows):
    lang, rs = rows
    yes, no = ("Yes.", "No.") if lang == "en" else ("是", "否")
    for r in rs:
        form, pref, intent = r["form"], r["preference"], r["intention"]
        assert r["template_id"] == f"{lang}-{form}-{pref}-{intent}"
        if form == "pointwise":
            assert r["output"] == (yes if r["label"] else no)
            assert r["candidates"] == [r["item_id"]] and title_of(int(r["item_id"])) in r["input"]
        elif form == "matching":
            assert r["output"] == title_of(int(r["item_id"])) and r["candidates"] is None
            assert r["output"] not in r["input"]  # the answer is never in the prompt
        else:
            k = 2 if form == "pairwise" else 5
            assert len(r["candidates"]) == len(set(r["candidates"])) == k
            assert r["candidates"][r["target_index"]] == r["item_id"]
            assert r["output"] == string.ascii_uppercase[r["target_index"]]
        if pref == "implicit":
            assert title_of(int(r["history"][-1])) in r["input"]
        if pref == "none":
            assert not any(
                title_of(int(h)) in r["input"] for h in r["history"] if h not in (r["candidates"] or [])
            )
    pointwise = [r["label"] for r in rs if r["form"] == "pointwise"]
    assert 0.3 < sum(pointwise) / len(pointwise) < 0.7


def test_mix_is_configurable(tmp_path):
    src = write_ml100k(tmp_path / "src", random_events(20, 40, seed=14, lo=15, hi=30), 40)
    out = tmp_path / "o"
    args = ["--src", src, "--out", out, "--task", "instructrec", "--instructrec-mix", "pairwise=1",
            "--instructrec-preferences", "explicit", "--instructrec-intentions", "none"]  # fmt: skip
    assert run("movielens", *args) == 0
    rs = [r for g in split_rows(out, "instructrec").values() for r in g]
    assert {r["form"] for r in rs} == {"pairwise"}
    # explicit preference is stated from the liked items' genres (implicit only where none are liked)
    explicit = [r for r in rs if r["preference"] == "explicit"]
    assert explicit and all("I usually enjoy" in r["input"] for r in explicit)
    assert all(r["preference"] in ("explicit", "implicit") for r in rs)
