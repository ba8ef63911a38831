"""`llm4rec train RECIPE [overrides]`: the same training as ``train.py``, in one process."""

from __future__ import annotations

import json

import yaml

from tests.conftest import REPO, make_tallrec_samples, run_command

DEMO = REPO / "recipes" / "demo_cpu.yaml"


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _run(argv, capsys):
    return run_command(["train", *argv], capsys)


def test_trains_the_demo_recipe_with_overrides(tmp_path, tiny_llama, capsys):
    out = tmp_path / "adapter"
    argv = [
        DEMO,
        f"model.path={tiny_llama}",
        f"data.train={_jsonl(tmp_path / 'train.jsonl', make_tallrec_samples(32, seed=1))}",
        f"data.valid={_jsonl(tmp_path / 'valid.jsonl', make_tallrec_samples(16, seed=2))}",
        f"train.output_dir={out}",
        "train.max_steps=2",
        "train.eval_every=2",
        "logging.progress_bar=false",
    ]
    code, stdout, err = _run(argv, capsys)
    assert code == 0, err
    last = stdout.strip().splitlines()[-1]
    assert (
        last.startswith("trained 2 steps in ")
        and "best valid AUC" in last
        and last.endswith(f"adapter: {out}")
    )
    assert (out / "adapter_model.safetensors").is_file()
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["train"]["max_steps"] == 2 and saved["model"]["path"] == str(tiny_llama)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2 and f"at step {summary['best_step']}" in last


def test_a_bad_override_is_one_line_before_anything_loads(tmp_path, capsys):
    code, stdout, err = _run([DEMO, "train.lerning_rate=1e-3"], capsys)
    assert code == 2 and stdout == ""
    assert err.strip().splitlines() == [
        f"error: {DEMO}: unknown recipe key 'train.lerning_rate' (did you mean 'learning_rate'?)"
    ]
    code, stdout, _ = _run(["--help"], capsys)
    assert code == 0 and stdout.startswith("usage: llm4rec train")
    assert "accelerate launch train.py RECIPE" in " ".join(stdout.split())  # where several GPUs are told
