"""`llm4rec show-prompt`: the prompt a model is given, decoded from the ids scoring uses, and its token counts."""

from __future__ import annotations

import json
import re
from pathlib import Path

from llm4rec.data.tokenize import history_spans
from llm4rec.models.backbone import resolve_backbone
from tests.conftest import make_tallrec_samples, run_command, shared_path

LINE = re.compile(
    r"^tokens: (\d+) \(preamble (\d+), instruction (\d+), history (\d+) of (\d+) items kept \((\d+) tokens\), "
    r"question (\d+)\)$"
)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def show(argv: list[str], capsys) -> tuple[int, str, str]:
    return run_command(["show-prompt", *argv], capsys)


def parse(out: str) -> tuple[str, list[int]]:
    text, last = out.rstrip("\n").rsplit("\n", 1)
    m = LINE.match(last)
    assert m, last
    return text, [int(x) for x in m.groups()]


def test_prints_the_fitted_prompt_and_its_token_counts(tiny_llama, tmp_path, capsys):
    rows = make_tallrec_samples(5, seed=31)
    data = write_jsonl(tmp_path / "s.jsonl", rows)
    ps = resolve_backbone(tiny_llama, device="cpu")
    for cutoff in (512, 140):
        code, out, err = show(
            ["--checkpoint", tiny_llama, "--data", data, "--index", 2, "--cutoff-len", cutoff], capsys
        )
        assert code == 0, err
        text, (t, p, i, kept, m, h, q) = parse(out)
        fitted = resolve_backbone(tiny_llama, cutoff_len=cutoff, device="cpu").encode_prompt(rows[2])
        assert text == ps.tokenizer.decode(fitted.ids) and t == len(fitted.ids) <= cutoff - 1
        assert p + i + h + q == t and m == len(history_spans(rows[2])) and kept == m - fitted.dropped
        assert text.startswith("<s>") and rows[2]["instruction"] in text and "### Response:" in text
        assert rows[2]["input"].rsplit("\n", 1)[1] in text  # the question is whole
        assert i >= len(ps.tokenizer(rows[2]["instruction"], add_special_tokens=False)["input_ids"]) - 2
        if cutoff == 512:
            assert kept == m and h > 0
        else:
            assert kept < m
    code, out, err = show(["--checkpoint", tiny_llama, "--data", data, "--index", 5], capsys)
    assert code == 2 and "--index 5" in err and "holds 5 samples" in err and err.count("\n") == 1


def test_training_output_uses_its_recipe_cutoff_and_language(tiny_llama, tmp_path, capsys):
    from llm4rec.config import recipe_from_dict, save_recipe
    from llm4rec.models.loading import load_tokenizer
    from llm4rec.models.registry import get_family

    run = tmp_path / "run"
    run.mkdir()
    load_tokenizer(tiny_llama, get_family("llama")).save_pretrained(run)
    recipe = {
        "model": {"path": str(tiny_llama), "family": "llama", "lang": "zh"},
        "data": {"train": "t.jsonl", "cutoff_len": 300},
        "train": {"output_dir": str(run)},
    }
    save_recipe(recipe_from_dict(recipe), run / "recipe.yaml")
    data = write_jsonl(tmp_path / "s.jsonl", make_tallrec_samples(2, seed=32))
    code, out, err = show(["--checkpoint", run, "--data", data, "--index", 0], capsys)
    assert code == 0, err
    text, (t, *_rest) = parse(out)
    assert "### 指令:" in text and t <= 299  # alpaca_zh, from the recipe's model.lang
    code, out, err = show(["--checkpoint", run, "--data", data, "--index", 0, "--lang", "en"], capsys)
    assert code == 2 and "trained with model.lang 'zh'" in err


def test_real_ml100k_ranking_with_the_llama_tokenizer(tmp_path, capsys):
    """K=20 ranking prompts with the real LLaMA tokenizer at cutoffs 512 and 384 show the
    instruction and all 20 candidates (compact pool, the default); the long format cannot fit 384."""
    from llm4rec.data.prep import main as prep

    src = shared_path("data", "ml-100k")
    llama = shared_path("models", "llama-7b")
    for form in ("compact", "full"):
        out = tmp_path / form
        argv = [
            "--src",
            str(src),
            "--out",
            str(out),
            "--task",
            "ranking",
            "--candidate-format",
            form,
            "--quiet",
        ]
        assert prep(argv) == 0
    data = tmp_path / "compact" / "ranking" / "test.jsonl"
    row = json.loads(data.read_text().splitlines()[0])
    for cutoff in (512, 384):
        code, out, err = show(
            ["--checkpoint", llama, "--data", data, "--index", 0, "--cutoff-len", cutoff], capsys
        )
        assert code == 0, err
        text, (t, p, i, kept, m, h, q) = parse(out)
        assert t <= cutoff - 1 and m == 10 and kept == 10  # this sample keeps its whole history even at 384
        assert row["instruction"] in text and "Below is an instruction" in text
        pool = text.split("Candidate pool:\n")[1].split("\n\n### Response:")[0].split("\n")
        assert pool == row["input"].split("Candidate pool:\n")[1].split("\n") and len(pool) == 20
        assert all(line.startswith(f"{chr(65 + j)}. ") for j, line in enumerate(pool))
    # the long '(A) "Title (1972)"' pool fits 512 by dropping history, and cannot fit 384 even without any:
    # a clear error, nothing cut silently
    full = tmp_path / "full" / "ranking" / "test.jsonl"
    row = json.loads(full.read_text().splitlines()[0])
    code, out, err = show(["--checkpoint", llama, "--data", full, "--index", 0, "--cutoff-len", 512], capsys)
    assert code == 0, err
    text, (t, p, i, kept, m, h, q) = parse(out)
    assert t <= 511 and m == 10 and 0 < kept < 10
    assert all(f'({chr(65 + j)}) "{title}"' in text for j, title in enumerate(row["candidate_titles"]))
    code, out, err = show(["--checkpoint", llama, "--data", full, "--index", 0, "--cutoff-len", 384], capsys)
    assert code == 2 and out == ""
    assert re.search(
        rf"{re.escape(str(full))}:1: the prompt needs \d+ tokens with all 10 history items dropped", err
    )


def test_pointwise_shows_one_candidates_yes_no_prompt_as_scoring_builds_it(tiny_llama, tmp_path, capsys):
    from llm4rec.eval.scoring import fit_prompts, pointwise_samples
    from tests.data.logs import random_events, run, write_ml100k

    src = write_ml100k(tmp_path / "src", random_events(10, 40, seed=7, lo=12, hi=18), 40)
    argv = ["--src", src, "--out", tmp_path / "out", "--task", "ranking", "--candidates", "10"]
    assert run("movielens", *argv) == 0
    data = tmp_path / "out" / "ranking" / "test.jsonl"
    row = json.loads(data.read_text(encoding="utf-8").splitlines()[1])
    ps = resolve_backbone(tiny_llama, device="cpu")
    flat, _, _ = pointwise_samples([row])
    shown = {}
    for cand, j in (("J", 9), ("0", 0), ("a", 0)):
        code, out, err = show(
            ["--checkpoint", tiny_llama, "--data", data, "--index", 1, "--rank-method", "pointwise"]
            + ["--candidate", cand],
            capsys,
        )
        assert code == 0, err
        text, (t, *_rest) = parse(out)
        ids = fit_prompts(ps, [flat[j]])[0]
        assert text == ps.tokenizer.decode(ids) and t == len(ids)
        assert flat[j]["input"].endswith(f'Candidate: "{row["candidate_titles"][j]}"')
        shown[cand] = text
    assert shown["0"] == shown["a"] != shown["J"]
    base = ["--checkpoint", tiny_llama, "--data", data, "--index", 1]
    for extra, msg in (
        (["--rank-method", "pointwise"], "name the candidate with --candidate"),
        (["--rank-method", "pointwise", "--candidate", "K"], "has 10 candidates (A to J)"),
        (["--candidate", "B"], "only with --rank-method pointwise"),
    ):
        code, out, err = show(base + extra, capsys)
        assert code == 2 and out == "" and msg in err and err.count("\n") == 1
