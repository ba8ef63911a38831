"""Inputs in other encodings or shapes, huge values, and samples of the task a checkpoint was not trained on."""

from __future__ import annotations

import json

import pytest

from tests.conftest import make_tallrec_samples

from .conftest import evaluate_cli, one_error_line, train_cli, write_jsonl


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_an_evaluation_file_with_a_byte_order_mark_reads_as_utf8_does(trained, tmp_path, capsys, encoding):
    rows = make_tallrec_samples(12, seed=9)
    rows[0]["input"] += " — café"
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    plain = tmp_path / "plain.jsonl"
    plain.write_text(text, encoding="utf-8")
    marked = tmp_path / "marked.jsonl"
    # the utf-16, utf-32 and utf-8-sig codecs write the mark themselves; utf-16-be gets it here
    mark = "\ufeff".encode(encoding) if encoding == "utf-16-be" else b""
    marked.write_bytes(mark + text.encode(encoding))
    reports = []
    for name, path in (("a", plain), ("b", marked)):
        code, _, err = evaluate_cli(
            ["--checkpoint", trained["out"], "--data", path, "--out", tmp_path / name], capsys
        )
        assert code == 0, err
        reports.append(json.loads((tmp_path / name / "report.json").read_text())["checkpoints"][0]["metrics"])
    assert reports[0] == reports[1]


def test_undecodable_bytes_are_one_line_naming_the_line(trained, tmp_path, capsys):
    path = tmp_path / "latin1.jsonl"
    rows = make_tallrec_samples(3, seed=9)
    rows[1]["input"] += " café"
    path.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("latin-1"))
    code, _, err = evaluate_cli(
        ["--checkpoint", trained["out"], "--data", path, "--out", tmp_path / "r"], capsys
    )
    line = one_error_line(code, err)
    assert line.startswith(f"error: {path}:2: not UTF-8 text (invalid") and "byte-order mark" in line


@pytest.mark.parametrize("overrides", [[], ["train.max_steps=1"], ["model.path=x", "lora.r=4"]])
def test_a_recipe_that_is_a_list_is_one_line_whatever_the_overrides(tmp_path, capsys, overrides):
    recipe = tmp_path / "list.yaml"
    recipe.write_text("- model: {path: x}\n- train: {max_steps: 2}\n")
    line = one_error_line(*train_cli([recipe, *overrides], capsys)[::2])
    assert (
        line
        == f"error: {recipe}: a recipe is a mapping of sections (model:, lora:, data:, train:, ...), got a YAML list"
    )


def test_a_value_expanded_through_anchors_is_quoted_short(tmp_path, capsys):
    levels = ["&a0 [" + ", ".join(["x"] * 10) + "]"]
    for i in range(1, 9):  # the last level holds 10^9 strings once expanded
        levels.append(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("model:\n  path: [" + ", ".join(levels) + "]\n")
    code, _, err = train_cli([bomb], capsys)
    line = one_error_line(code, err)
    assert line.startswith(f"error: {bomb}: ") and len(line) < 400
    assert line.endswith("... (list of 9 entries)")


def test_ranking_samples_with_a_yes_no_checkpoint_need_the_flag(trained, tiny_llama, tmp_path, capsys):
    rows = [
        {
            "instruction": "Rank the candidates.",
            "input": f'User history: "Film {i}". Candidates: (A) one (B) two (C) three',
            "candidates": ["one", "two", "three"],
            "target_index": i % 3,
            "task": "ranking",
        }
        for i in range(4)
    ]
    data = write_jsonl(tmp_path / "ranking.jsonl", rows)
    argv = ["--checkpoint", trained["out"], "--data", data, "--out", tmp_path / "r"]
    line = one_error_line(*evaluate_cli(argv, capsys)[::2])
    assert line == (
        f"error: --checkpoint: {trained['out']} was trained on Yes/No samples ({trained['recipe']['data']['train']}), "
        f"but {data} holds ranking samples; evaluate it on Yes/No samples, or pass --allow-task-mismatch for a "
        "zero-shot study"
    )
    assert json.loads((trained["out"] / "llm4rec.json").read_text())["task"] == "binary"
    code, _, err = evaluate_cli([*argv, "--allow-task-mismatch"], capsys)
    assert code == 0, err
    # a bare model has no training task: no flag needed
    argv = ["--checkpoint", tiny_llama, "--data", data, "--out", tmp_path / "bare"]
    assert evaluate_cli(argv, capsys)[0] == 0


def test_yes_no_samples_with_a_ranking_checkpoint_need_the_flag(run_copy, tmp_path, capsys):
    out, _ = run_copy
    record = json.loads((out / "llm4rec.json").read_text())
    (out / "llm4rec.json").write_text(json.dumps({**record, "task": "ranking"}))
    recipe = (out / "recipe.yaml").read_text()
    (out / "recipe.yaml").write_text(recipe.replace("train.jsonl", "gone.jsonl"))  # the record then decides
    data = write_jsonl(tmp_path / "yn.jsonl", make_tallrec_samples(4, seed=9))
    line = one_error_line(
        *evaluate_cli(["--checkpoint", out, "--data", data, "--out", tmp_path / "r"], capsys)[::2]
    )
    assert f"{out} was trained on ranking samples ({out}/llm4rec.json)" in line
