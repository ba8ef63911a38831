"""`llm4rec evaluate --permutations`: pools shown in seeded orders, metric spread and position bias."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llm4rec.data.tasks.ranking import reorder
from llm4rec.eval.permutations import orders
from tests.conftest import make_tallrec_samples
from tests.data.logs import random_events, read, run, write_ml100k
from tests.eval.test_evaluate import run as run_evaluate


def _ranking_rows(n: int) -> list[dict]:
    rows = []
    for i, r in enumerate(make_tallrec_samples(n, seed=21)):
        cands = [f"Film {j} (Drama)" for j in range(4)]
        listing = "\n".join(f"{chr(65 + j)}. {c}" for j, c in enumerate(cands))
        rows.append(
            {
                "instruction": "Pick the film the user likes.",
                "input": r["input"] + "\nCandidate pool:\n" + listing,
                "candidates": [str(j) for j in range(4)],
                "candidate_titles": cands,
                "target_index": i % 4,
                "output": "ABCD"[i % 4],
                "user_id": str(i),
                "task": "ranking",
            }
        )
    return rows


@pytest.mark.parametrize("fmt", ["compact", "full"])
def test_reorder_rewrites_only_the_pool_lines(tmp_path, fmt):
    src = write_ml100k(tmp_path / "log", random_events(30, 40, seed=2), 40)
    args = ["--src", src, "--out", tmp_path / "d", "--task", "ranking", "--split", "loo", "--candidates", "6"]
    assert run("movielens", *args, "--candidate-format", fmt) == 0
    sample = read(tmp_path / "d" / "ranking" / "test.jsonl")[0]
    assert reorder(sample, list(range(6))) == sample
    order = [5, 3, 0, 1, 4, 2]
    shown = reorder(sample, order)
    lines = sample["input"].split("\n")[-6:]
    new_lines = shown["input"].split("\n")[-6:]
    cut = 4 if fmt == "full" else 3  # "(A) " or "A. "
    assert [line[cut:] for line in new_lines] == [lines[o][cut:] for o in order]
    assert shown["candidates"][shown["target_index"]] == sample["item_id"]
    assert shown["output"] == "ABCDEF"[shown["target_index"]]
    head = sample["input"].rsplit("\n", 6)[0]
    assert shown["input"].startswith(head + "\n")  # the history and its spans are untouched
    # shown in the inverse order, the sample is the original again
    assert reorder(shown, list(np.argsort(order))) == sample


def test_permutations_report_spread_and_position_bias(tiny_llama, tmp_path, capsys):
    rows = _ranking_rows(10)
    data = tmp_path / "rank.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r"
    argv = ["--checkpoint", str(tiny_llama), "--data", str(data), "--out", str(out), "--ks", "1,3"]
    code, _, err = run_evaluate([*argv, "--permutations", "3", "--permutation-seed", "7"], capsys)
    assert code == 0, err
    c = json.loads((out / "report.json").read_text())["checkpoints"][0]
    p = c["permutations"]
    assert p["n"] == 3 and len(p["metrics"]["ndcg@1"]["values"]) == 3
    v = p["metrics"]["hr@3"]["values"]
    assert p["metrics"]["hr@3"]["mean"] == pytest.approx(np.mean(v))
    assert p["metrics"]["hr@3"]["sd"] == pytest.approx(np.std(v, ddof=1))
    bias = p["position_bias"]
    assert bias["letters"] == ["A", "B", "C", "D"] and sum(bias["top1_share"]) == pytest.approx(1.0)
    # the targets' letters follow from the seeded orders alone
    targets = [r["target_index"] for r in rows]
    expect = np.zeros(4)
    for perm in orders(len(rows), 4, 3, 7):
        expect += np.bincount([list(o).index(t) for o, t in zip(perm, targets)], minlength=4)
    assert bias["target_share"] == pytest.approx((expect / expect.sum()).tolist())
    assert "share of top-1 picks" in (out / "report.md").read_text()


def test_permutations_need_letter_ranking(tiny_llama, tmp_path, capsys):
    data = tmp_path / "yesno.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_tallrec_samples(6, seed=3)))
    out = tmp_path / "o"
    code, _, err = run_evaluate(
        ["--checkpoint", str(tiny_llama), "--data", str(data), "--out", str(out), "--permutations", "2"],
        capsys,
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--permutations: needs ranking samples scored by index letters" in err
    assert not Path(out).exists()
