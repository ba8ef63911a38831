"""Leak-free splits: every history precedes its target, and no later-split event reaches training."""

from __future__ import annotations

import json

import polars as pl
import pytest

from llm4rec.data.canonical import encode
from llm4rec.data.sources.movielens import read_movielens
from llm4rec.data.splits import SplitConfig, assign_splits, build_timeline, temporal_cutoffs
from llm4rec.errors import UserError
from tests.data.logs import random_events, run, split_rows, write_ml100k


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    d = tmp_path_factory.mktemp("splits")
    events = random_events(30, 50, seed=7, lo=5, hi=25)
    return write_ml100k(d / "src", events, 50), events


def _timelines(events):
    """user -> [(timestamp, file position, item)] sorted as the timeline orders them."""
    per: dict[str, list] = {}
    for k, (u, i, _, t) in enumerate(events):
        per.setdefault(str(u), []).append((t, k, str(i)))
    return {u: sorted(v) for u, v in per.items()}


def test_loo_split(log, tmp_path):
    src, events = log
    out = tmp_path / "o"
    assert run("movielens", "--src", src, "--out", out, "--split", "loo", "--history", "50") == 0
    rows = split_rows(out, "tallrec")
    tl = _timelines(events)
    for name, group in rows.items():
        for r in group:
            seq = tl[r["user_id"]]
            items = [e[2] for e in seq]
            p = next(k for k, e in enumerate(seq) if e[2] == r["item_id"] and e[0] == r["timestamp"])
            # the history is exactly the events before the target, in order
            assert r["history"] == items[:p]
            expected = {"test": len(seq) - 1, "valid": len(seq) - 2}.get(name)
            if expected is not None:
                assert p == expected
            else:
                assert 1 <= p < len(seq) - 2
    # each user: one test, one valid sample; train never holds the user's last two events
    assert len(rows["test"]) == len({r["user_id"] for r in rows["test"]}) == len(tl)
    held = {(r["user_id"], r["item_id"]) for r in rows["test"] + rows["valid"]}
    for r in rows["train"]:
        assert not held & {(r["user_id"], h) for h in r["history"] + [r["item_id"]]}


def test_temporal_split_is_strictly_before(log, tmp_path):
    src, events = log
    out = tmp_path / "o"
    args = ["--src", src, "--out", out, "--split", "temporal", "--cutoffs", "0.6,0.8", "--history", "50"]
    assert run("movielens", *args) == 0
    ts = pl.Series([t for *_, t in events])
    c1, c2 = temporal_cutoffs(ts, (0.6, 0.8))
    when = {(str(u), str(i)): t for u, i, _, t in events}
    rows = split_rows(out, "tallrec")
    bounds = {"train": (None, c1), "valid": (c1, c2), "test": (c2, None)}
    for name, group in rows.items():
        lo, hi = bounds[name]
        assert group
        for r in group:
            t = r["timestamp"]
            assert (lo is None or t >= lo) and (hi is None or t < hi)
            # every history event strictly earlier than the target
            assert all(when[(r["user_id"], h)] < t for h in r["history"])
    # nothing from the valid or test period is visible in any train sample
    for r in rows["train"]:
        assert all(when[(r["user_id"], h)] < c1 for h in r["history"])


def test_users_split_partitions_users(log, tmp_path):
    src, _ = log
    out = tmp_path / "o"
    assert run("movielens", "--src", src, "--out", out, "--split", "users", "--order", "shuffle") == 0
    rows = split_rows(out, "tallrec")
    users = [{r["user_id"] for r in g} for g in rows.values()]
    assert not (users[0] & users[1] or users[0] & users[2] or users[1] & users[2])
    assert all(len(g) == len(u) for g, u in zip(rows.values(), users))  # one sample per user
    assert sum(map(len, users)) == 30


def test_timeline_orders_users_by_first_appearance_and_ties_by_file(tmp_path):
    events = [(5, 1, 4, 100), (3, 2, 4, 50), (5, 3, 2, 100), (5, 4, 5, 90), (3, 5, 1, 50)]
    src = write_ml100k(tmp_path / "s", events, 6)
    canon = read_movielens(src)
    tl = build_timeline(encode(canon.interactions, canon.items))
    f = tl.frame
    users = tl.users.gather(f["u"]).to_list()
    items = tl.items["item"].gather(f["i"]).to_list()
    assert users == ["5", "5", "5", "3", "3"]
    assert items == ["4", "1", "3", "2", "5"]  # 90 first; the two at 100 keep file order
    assert f["pos"].to_list() == [0, 1, 2, 0, 1] and f["n"].to_list() == [3, 3, 3, 2, 2]


def test_empty_split_stops_with_the_reason(tmp_path):
    src = write_ml100k(tmp_path / "s", random_events(3, 10, lo=2, hi=2), 10)
    canon = read_movielens(src)
    tl = build_timeline(encode(canon.interactions, canon.items))
    with pytest.raises(UserError, match="the train split is empty: no user has 4 events"):
        assign_splits(tl, SplitConfig(kind="loo", min_history=1))
    with pytest.raises(UserError, match="split is empty"):
        assign_splits(tl, SplitConfig(kind="tallrec", min_history=10))


def test_loo_ties_strict_leaves_same_second_history_out(tmp_path):
    # coarse times: many events of a user share a second, as in ML-100K
    events = [(u, i, r, t // 20_000 * 20_000) for u, i, r, t in random_events(30, 50, seed=7, lo=5, hi=25)]
    src = write_ml100k(tmp_path / "src", events, 50)
    tl = _timelines(events)
    out = {}
    for rule in ("keep", "strict"):
        out[rule] = tmp_path / rule
        assert run("movielens", "--src", src, "--out", out[rule], "--history", "50", "--ties", rule) == 0
    same = 0
    for group in split_rows(out["strict"], "tallrec").values():
        for r in group:
            seq = tl[r["user_id"]]
            p = next(k for k, e in enumerate(seq) if e[2] == r["item_id"] and e[0] == r["timestamp"])
            # strict: exactly the earlier events of an earlier second
            assert r["history"] == [e[2] for e in seq[:p] if e[0] < r["timestamp"]]
            same += p >= 1 and seq[p - 1][0] == r["timestamp"]
    assert same > 0  # the log has ties, so the rule changes something
    meta = json.loads((out["keep"] / "meta.json").read_text())
    assert meta["ties"] == {"rule": "keep", "targets_with_same_second_history": same}
    assert json.loads((out["strict"] / "meta.json").read_text())["ties"]["rule"] == "strict"
    # the preset keeps TALLRec's rule; temporal is always strict
    assert run("movielens", "--src", src, "--out", tmp_path / "p", "--preset", "tallrec") == 0
    assert json.loads((tmp_path / "p" / "meta.json").read_text())["ties"]["rule"] == "keep"
    assert (
        run("movielens", "--src", src, "--out", tmp_path / "t", "--split", "temporal", "--ties", "keep") == 2
    )
