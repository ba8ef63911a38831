"""`llm4rec evaluate`: reports on several checkpoints, per-sample scores, plots, and clear errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
from sklearn.metrics import roc_auc_score

from llm4rec.eval.evaluate import main
from tests.conftest import REPO, free_port, make_tallrec_samples, run_main, write_adapter


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def adapter(tiny_llama, tmp_path_factory) -> Path:
    """An adapter directory as train.py writes it (adapter, tokenizer, recipe), with a non-zero LoRA."""
    return write_adapter(tiny_llama, tmp_path_factory.mktemp("ckpt") / "run-a")


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    return run_main(main, argv, capsys)


def test_compare_two_checkpoints_binary(adapter, tiny_llama, tmp_path, capsys):
    rows = make_tallrec_samples(40, seed=11)
    data = write_jsonl(tmp_path / "test.jsonl", rows)
    code, out, err = run(["--checkpoint", str(adapter), str(tiny_llama), "--data", str(data)], capsys)
    assert code == 0, err
    report_dir = adapter / "eval-test"
    report = json.loads((report_dir / "report.json").read_text())
    assert [c["name"] for c in report["checkpoints"]] == ["run-a", "llama"]
    assert report["data_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()  # what compare checks
    assert {"report.md", "roc.png", "scores.parquet"} <= {p.name for p in report_dir.iterdir()}
    scores = pl.read_parquet(report_dir / "scores.parquet")
    assert scores["label"].to_list() == [r["label"] for r in rows]
    assert scores["user_id"].to_list() == [r["user_id"] for r in rows]
    for c in report["checkpoints"]:
        s = scores[f"score:{c['name']}"].to_numpy()
        assert ((s > 0) & (s < 1)).all()
        assert c["metrics"]["auc"] == pytest.approx(roc_auc_score(scores["label"].to_numpy(), s), abs=1e-6)
        assert c["scoring"]["fast_path"] and c["scoring"]["tokens_run"] < c["scoring"]["prompt_tokens"]
    # the adapter changes the scores, so the two columns differ
    assert (scores["score:run-a"] - scores["score:llama"]).abs().max() > 1e-3
    assert "run-a" in out and "llama" in out and f"report: {report_dir}" in out
    assert "test AUC" not in out  # one summary line only when a single checkpoint is scored
    md = (report_dir / "report.md").read_text()
    assert "| run-a |" in md and "![roc.png](roc.png)" in md


def test_single_checkpoint_line_and_json_out(adapter, tmp_path, capsys):
    rows = make_tallrec_samples(30, seed=12)
    data = write_jsonl(tmp_path / "test.jsonl", rows)
    target = tmp_path / "reports" / "ours.json"
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "keep.txt").write_text("user file")
    code, out, err = run(
        ["--checkpoint", str(adapter), "--data", str(data), "--out", str(target), "--max-samples", "20"],
        capsys,
    )
    assert code == 0, err
    report = json.loads(target.read_text())
    assert report["n_samples"] == 20
    auc = report["checkpoints"][0]["metrics"]["auc"]
    assert f"test AUC: {auc:.4f}" in out
    assert (tmp_path / "reports" / "keep.txt").read_text() == "user file"  # beside it, nothing removed
    assert (tmp_path / "reports" / "roc.png").is_file()
    assert not [p for p in (tmp_path / "reports").iterdir() if p.name.startswith(".")]


def test_ranking_letters_and_grouped_binary(tiny_llama, tmp_path, capsys):
    rows = []
    for i, r in enumerate(make_tallrec_samples(12, seed=13)):
        cands = [f"Film {j} (Drama)" for j in range(5)]
        listing = "\n".join(f"{chr(65 + j)}. {c}" for j, c in enumerate(cands))
        rows.append(
            {
                "instruction": "Pick the film the user likes.",
                "input": r["input"] + "\n" + listing,
                "candidates": list(range(5)),
                "candidate_titles": cands,
                "target_index": i % 5,
                "user_id": i,
                "task": "ranking",
                # where the history ends: pointwise scoring keeps the input up to its newest item
                "history_spans": r["history_spans"],
            }
        )
    data = write_jsonl(tmp_path / "rank.jsonl", rows)
    code, out, err = run(
        ["--checkpoint", str(tiny_llama), "--data", str(data), "--out", str(tmp_path / "r"), "--ks", "1,3,5"],
        capsys,
    )
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    m = report["checkpoints"][0]["metrics"]
    scores = pl.read_parquet(tmp_path / "r" / "scores.parquet")
    mat = torch.tensor(scores["scores:llama"].to_list())
    target = torch.tensor(scores["target_index"].to_list())
    assert mat.shape == (12, 5)
    rank = 1 + (mat > mat.gather(1, target[:, None])).sum(1)
    assert scores["rank:llama"].to_list() == rank.tolist()
    assert m["hr@5"] == pytest.approx(1.0)  # every target is among all 5 candidates
    assert (tmp_path / "r" / "ndcg_hr_at_k.png").is_file()

    # the same pools scored candidate by candidate (history computed once per user)
    argv = ["--checkpoint", str(tiny_llama), "--data", str(data), "--out", str(tmp_path / "p")]
    code, out, err = run([*argv, "--rank-method", "pointwise", "--ks", "1,3,5"], capsys)
    assert code == 0, err
    point = pl.read_parquet(tmp_path / "p" / "scores.parquet")
    pmat = torch.tensor(point["scores:llama"].to_list())
    from llm4rec.eval.scoring import pointwise_samples, score_binary
    from llm4rec.models.backbone import resolve_backbone

    flat_rows, _, _ = pointwise_samples(rows)
    assert flat_rows[0]["input"].startswith("User Preference:") and flat_rows[1]["input"].endswith(
        '"Film 1 (Drama)"'
    )
    bb = resolve_backbone(tiny_llama, device="cpu")
    with torch.no_grad():
        alone = score_binary(bb.load_model("cpu"), bb, flat_rows)
    torch.testing.assert_close(pmat, alone.view(12, 5), atol=1e-5, rtol=0)
    assert "test NDCG@5" in out

    # Yes/No samples ranked within users: candidates of one user share their history prefix
    flat = []
    for u, r in enumerate(make_tallrec_samples(4, seed=14)):
        head = r["input"].rsplit('"', 2)[0]
        for j, t in enumerate(["Film 1 (Action)", "Film 2 (Comedy)", "Film 3 (Horror)"]):
            flat.append(
                {
                    "instruction": r["instruction"],
                    "input": f'{head}"{t}"?',
                    "label": int(j == u % 3),
                    "user_id": u,
                }
            )
    data = write_jsonl(tmp_path / "flat.jsonl", flat)
    code, out, err = run(
        [
            "--checkpoint",
            str(tiny_llama),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "g"),
            "--group-by",
            "user_id",
            "--ks",
            "1,3",
        ],
        capsys,
    )
    assert code == 0, err
    m = json.loads((tmp_path / "g" / "report.json").read_text())["checkpoints"][0]["metrics"]
    assert m["hr@3"] == pytest.approx(1.0)  # every group's one relevant item is among its 3
    # the grouped values against sklearn's NDCG and a direct count over the per-sample scores
    from sklearn.metrics import ndcg_score

    table = pl.read_parquet(tmp_path / "g" / "scores.parquet")
    groups = {}
    for row in table.iter_rows(named=True):
        groups.setdefault(row["user_id"], []).append((row[f"score:{tiny_llama.name}"], row["label"]))
    assert len(groups) == 4 and all(len(g) == 3 for g in groups.values())
    relevant = [next(s for s, lab in g if lab == 1) for g in groups.values()]
    ranks = [1 + sum(s > r for s, _ in g) for g, r in zip(groups.values(), relevant)]
    for k in (1, 3):
        want = sum(ndcg_score([[lab for _, lab in g]], [[s for s, _ in g]], k=k) for g in groups.values()) / 4
        assert m[f"ndcg@{k}"] == pytest.approx(want, abs=1e-6)
        assert m[f"hr@{k}"] == pytest.approx(sum(r <= k for r in ranks) / 4)
    assert m["mrr"] == pytest.approx(sum(1 / r for r in ranks) / 4)
    assert m["auc"] == pytest.approx(
        roc_auc_score(table["label"], table[f"score:{tiny_llama.name}"]), abs=1e-6
    )


def test_cutoff_comes_from_each_recipe_and_shortened_prompts_are_reported(adapter, tmp_path, capsys):
    from llm4rec.config import recipe_from_dict, save_recipe
    from llm4rec.models.backbone import resolve_backbone

    short = tmp_path / "run-short"
    shutil.copytree(adapter, short)
    raw = json.loads(
        json.dumps(
            recipe_from_dict(__import__("yaml").safe_load((adapter / "recipe.yaml").read_text())).to_dict()
        )
    )
    raw["data"]["cutoff_len"] = 150
    save_recipe(recipe_from_dict(raw), short / "recipe.yaml")
    rows = make_tallrec_samples(16, seed=21)
    data = write_jsonl(tmp_path / "test.jsonl", rows)
    code, out, err = run(
        ["--checkpoint", str(adapter), str(short), "--data", str(data), "--out", str(tmp_path / "r")], capsys
    )
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    ps = resolve_backbone(short, device="cpu")
    assert ps.cutoff_len == 150
    dropped = [ps.encode_prompt(r).dropped for r in rows]
    long_, short_ = report["checkpoints"]
    assert long_["truncation"]["cutoff_len"] == 256 and long_["truncation"]["shortened"] == 0
    t = short_["truncation"]
    assert t["cutoff_len"] == 150 and t["prompts"] == 16
    assert t["shortened"] == sum(d > 0 for d in dropped) > 0
    assert t["mean_items_dropped"] == pytest.approx(sum(dropped) / t["shortened"], abs=1e-3)
    # the preamble is never cut: shared-prefix reuse works as well at 150 as at 256
    preamble = ps.template.text.split("{input}")[0].format(instruction=rows[0]["instruction"])
    n_pre = len(ps.tokenizer(preamble)["input_ids"]) - 1  # its last token may merge with the input's first
    assert short_["scoring"]["shared_prefix_tokens"] >= n_pre > 20
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"{t['shortened']} of 16 prompts over cutoff_len 150" in warnings[0]
    md = (tmp_path / "r" / "report.md").read_text()
    assert f"| run-short | `{short}` | 150 | {t['shortened']} of 16 |" in md
    assert any("lost their oldest history items" in n for n in short_["notes"]) and not long_["notes"]


def test_overlong_samples_error_or_are_skipped_and_bare_models_take_lang(tiny_llama, tmp_path, capsys):
    rows = make_tallrec_samples(6, seed=22)
    old = dict(rows[3])
    del old["history_spans"]  # a sample from an old file: nothing droppable
    rows[3] = old
    data = write_jsonl(tmp_path / "mixed.jsonl", rows)
    argv = ["--checkpoint", str(tiny_llama), "--data", str(data), "--cutoff-len", "150"]
    code, out, err = run([*argv, "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and f"{data}:4: the prompt needs" in err and "no droppable history" in err
    assert err.count("\n") == 1 and not (tmp_path / "a").exists()
    code, out, err = run([*argv, "--out", str(tmp_path / "b"), "--skip-overlong"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    c = report["checkpoints"][0]
    assert report["n_samples"] == 5 and c["truncation"]["skipped_overlong"] == 1
    assert pl.read_parquet(tmp_path / "b" / "scores.parquet")["index"].to_list() == [0, 1, 2, 4, 5]
    assert "1 samples skipped" in out
    # a bare model takes its language from the flag
    code, out, err = run(
        ["--checkpoint", str(tiny_llama), "--data", str(data), "--lang", "zh", "--out", str(tmp_path / "z")],
        capsys,
    )
    assert code == 0, err
    c = json.loads((tmp_path / "z" / "report.json").read_text())["checkpoints"][0]
    assert (
        c["template"] == "alpaca_zh" and c["answers"] == ["是", "否"] and c["truncation"]["cutoff_len"] == 512
    )


def test_bad_inputs_are_one_line_errors(adapter, tiny_llama, tmp_path, capsys):
    good = write_jsonl(tmp_path / "good.jsonl", make_tallrec_samples(6))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    nolabel = write_jsonl(
        tmp_path / "nolabel.jsonl", [{"instruction": "x", "input": "y", "output": "Maybe."}]
    )
    noinput = write_jsonl(tmp_path / "noinput.jsonl", [{"instruction": "x", "label": 1}])
    no_tok = tmp_path / "no-tokenizer"
    shutil.copytree(adapter, no_tok)
    for f in no_tok.glob("tokenizer*"):
        f.unlink()
    not_ckpt = tmp_path / "plain-dir"
    not_ckpt.mkdir()
    cases = [
        (["--checkpoint", str(adapter), "--data", str(tmp_path / "missing.jsonl")], "no such file"),
        (["--checkpoint", str(adapter), "--data", str(empty)], "holds no samples"),
        (["--checkpoint", str(adapter), "--data", str(nolabel)], "nolabel.jsonl:1: sample has no 'label'"),
        (
            ["--checkpoint", str(adapter), "--data", str(noinput)],
            "noinput.jsonl:1: sample lacks the field 'input'",
        ),
        (["--checkpoint", str(no_tok), "--data", str(good)], "no tokenizer saved beside the adapter"),
        (["--checkpoint", str(not_ckpt), "--data", str(good)], "neither an adapter"),
        (["--checkpoint", str(tmp_path / "nope"), "--data", str(good)], "checkpoint directory not found"),
        (["--checkpoint", str(adapter), "--data", str(good), "--batch-size", "0"], "--batch-size"),
        (["--checkpoint", str(adapter), "--data", str(good), "--lang", "zh"], "trained with model.lang 'en'"),
    ]
    for argv, message in cases:
        code, out, err = run([*argv, "--out", str(tmp_path / "o")], capsys)
        assert code == 2, (argv, err)
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_one_class_labels_report_undefined_auc(tiny_llama, tmp_path, capsys):
    rows = [dict(r, label=1, output="Yes.") for r in make_tallrec_samples(5)]
    data = write_jsonl(tmp_path / "pos.jsonl", rows)
    code, out, err = run(
        ["--checkpoint", str(tiny_llama), "--data", str(data), "--out", str(tmp_path / "u")], capsys
    )
    assert code == 0, err
    auc = json.loads((tmp_path / "u" / "report.json").read_text())["checkpoints"][0]["metrics"]["auc"]
    assert isinstance(auc, str) and "undefined" in auc
    assert "test AUC: undefined" in out and "nan" not in out.lower()


@pytest.mark.slow
def test_accelerate_two_processes_gather_in_order(tiny_llama, tmp_path, capsys):
    """`accelerate launch --multi_gpu --num_processes 2 -m llm4rec.eval` on CPU: single-process scores, in order."""
    rows = make_tallrec_samples(21, seed=15)
    data = write_jsonl(tmp_path / "test.jsonl", rows)
    code, _, err = run(
        ["--checkpoint", str(tiny_llama), "--data", str(data), "--out", str(tmp_path / "one")], capsys
    )
    assert code == 0, err
    # `--cpu` alone makes accelerate start ONE process (multi-CPU runs need mpirun); `--multi_gpu` goes
    # through torchrun, and without visible CUDA devices the processes join a gloo (CPU) process group.
    path = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=path)
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--main_process_port", str(free_port()),
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "llm4rec.eval", "--checkpoint", str(tiny_llama), "--data", str(data), "--out", str(tmp_path / "two"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("report:") == 1  # only the main process reports
    one = pl.read_parquet(tmp_path / "one" / "scores.parquet")
    two = pl.read_parquet(tmp_path / "two" / "scores.parquet")
    assert two["index"].to_list() == list(range(21))
    assert (one["score:llama"] - two["score:llama"]).abs().max() < 1e-5
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    assert report["checkpoints"][0]["scoring"]["processes"] == 2


def test_what_llm4rec_json_records_is_what_is_scored(adapter, tiny_llama, tmp_path, capsys):
    """A model or adapter directory whose llm4rec.json names a non-default template and answer words is
    evaluated with those: swapping the recorded answers turns every score p into 1 - p."""
    data = write_jsonl(tmp_path / "test.jsonl", make_tallrec_samples(12, seed=31))

    def scored(ckpt: Path, record: dict, *flags: str):
        (ckpt / "llm4rec.json").write_text(json.dumps(record), encoding="utf-8")
        out = tmp_path / f"report-{len(list(tmp_path.iterdir()))}"
        code, _, err = run(
            ["--checkpoint", str(ckpt), "--data", str(data), "--out", str(out), *flags], capsys
        )
        assert code == 0, err
        c = json.loads((out / "report.json").read_text())["checkpoints"][0]
        return c, pl.read_parquet(out / "scores.parquet")[f"score:{c['name']}"].to_numpy()

    bare = tmp_path / "bare"
    shutil.copytree(tiny_llama, bare)
    c, plain = scored(bare, {"family": "llama", "template": "llama2_chat"})
    assert c["template"] == "llama2_chat" and c["answers"] == [" Yes.", " No."]
    c, swapped = scored(bare, {"family": "llama", "template": "llama2_chat", "answers": [" No.", " Yes."]})
    assert c["template"] == "llama2_chat" and c["answers"] == [" No.", " Yes."]
    assert swapped == pytest.approx(1 - plain, abs=1e-5)
    # a recorded Chinese template sets the language of a bare model; --lang en asks for English instead
    c, _ = scored(bare, {"family": "llama", "template": "alpaca_zh", "answers": ["否", "是"]})
    assert c["template"] == "alpaca_zh" and c["answers"] == ["否", "是"]
    c, _ = scored(bare, {"family": "llama", "template": "alpaca_zh", "answers": ["否", "是"]}, "--lang", "en")
    assert c["template"] == "alpaca" and c["answers"] == ["Yes.", "No."]
    # an adapter: what training recorded beside it wins over its recipe's template: auto
    run_dir = tmp_path / "run-b"
    shutil.copytree(adapter, run_dir)
    c, _ = scored(run_dir, {"family": "llama", "template": "llama2_chat", "answers": [" No.", " Yes."]})
    assert c["template"] == "llama2_chat" and c["answers"] == [" No.", " Yes."]
    # a broken record is one line naming the file and the key
    for record, key in (({"template": "alpacca"}, "template"), ({"answers": ["Yes."]}, "answers")):
        (bare / "llm4rec.json").write_text(json.dumps(record), encoding="utf-8")
        code, _, err = run(
            ["--checkpoint", str(bare), "--data", str(data), "--out", str(tmp_path / "x")], capsys
        )
        assert code == 2 and f"{bare / 'llm4rec.json'}: {key}:" in err and err.count("\n") == 1, err
