"""The resolved backbone: one rule per fact, every ``auto`` settled once and saved settled, a complete
``llm4rec.json``, and each command reading a model's config.json once and loading its tokenizer once."""

from __future__ import annotations

import builtins
import collections
import dataclasses
import importlib.util
import io
import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

from llm4rec.config import ModelConfig, load_recipe, recipe_from_dict
from llm4rec.models import backbone as bbmod
from llm4rec.models import loading
from llm4rec.models.backbone import Backbone, compute_dtype_name, resolve_backbone
from llm4rec.models.planner import count_params, settings_from_recipe
from tests.conftest import REPO, make_tallrec_samples

#: the keys ``auto`` may stand in for, by recipe section
AUTO_KEYS = {
    "model": ("family", "template", "compute_dtype", "attn_implementation", "gradient_checkpointing"),
    "data": ("packing",),
    "train": ("micro_batch_size",),
}


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _all_auto_recipe(tmp: Path, model: Path, out: str) -> dict:
    return {
        "model": {key: "auto" for key in AUTO_KEYS["model"]} | {"path": str(model), "load_in_4bit": False},
        "lora": {"r": 4, "alpha": 8},
        "data": {
            "train": _write_jsonl(tmp / "train.jsonl", make_tallrec_samples(8, seed=1)),
            "valid": _write_jsonl(tmp / "valid.jsonl", make_tallrec_samples(6, seed=2)),
            "cutoff_len": 256,
            "packing": "auto",
        },
        "train": {"output_dir": str(tmp / out), "max_steps": 1, "micro_batch_size": "auto", "batch_size": 4},
        "logging": {"progress_bar": False},
    }


# --------------------------------------------------------------------------- one rule each


@pytest.mark.parametrize(
    "device,capability,want",
    [("cpu", None, "float32"), ("cuda", (7, 5), "float16"), ("cuda", (8, 0), "bfloat16")],
)
def test_loader_and_planner_settle_dtype_and_attention_alike(
    tiny_llama, monkeypatch, device, capability, want
):
    """The backbone (what the loader loads) and the memory planner give the same compute dtype and
    attention for a CPU, a pre-Ampere and an Ampere card (the card's capability passed in, no CUDA needed)."""
    monkeypatch.setattr(bbmod, "device_capability", lambda d: capability if d.type == "cuda" else None)
    recipe = recipe_from_dict(
        {"model": {"path": str(tiny_llama)}, "data": {"train": "t.jsonl"}, "train": {"output_dir": "o"}}
    )
    assert recipe.model.compute_dtype == "auto" and recipe.model.attn_implementation == "auto"
    bb = resolve_backbone(recipe.model, device=device, for_planning=True)
    s = settings_from_recipe(recipe, count_params(bb.config), "llama", device, capability=capability)
    assert bb.compute_dtype == getattr(torch, want) and s.compute_dtype == want
    assert bb.attn_implementation == s.attn_implementation == "sdpa"
    assert compute_dtype_name("float32", device, capability) == "float32"  # a named dtype stays


# --------------------------------------------------------------------------- records


def test_record_round_trips_and_rebuilds_the_same_backbone(tiny_qwen2, tmp_path):
    bb = resolve_backbone(ModelConfig(path=str(tiny_qwen2), template="chatml"), cutoff_len=200, device="cpu")
    rec = bb.to_record()
    assert set(rec) == {
        "family",
        "template",
        "answers",
        "lang",
        "cutoff_len",
        "base_model",
        "weights",
        "load",
    }
    out = tmp_path / "run"
    out.mkdir()
    loading.save_tokenizer(bb.tokenizer, out)
    (out / "llm4rec.json").write_text(json.dumps(rec))
    again = Backbone.from_record(out)
    assert again.adapter == str(out)
    assert again == dataclasses.replace(bb, adapter=str(out))  # every compared field equal
    sample = make_tallrec_samples(1, seed=3)[0]
    assert again.encode_train(sample).input_ids == bb.encode_train(sample).input_ids
    assert again.encode_prompt(sample).ids == bb.encode_prompt(sample).ids
    assert again.answer_token_ids(sample) == bb.answer_token_ids(sample)


# --------------------------------------------------------------------------- auto, settled once


def test_saved_recipe_holds_no_auto_and_reruns_the_same(tiny_llama, tmp_path, capsys):
    from llm4rec.train.loop import train

    first = train(recipe_from_dict(_all_auto_recipe(tmp_path, tiny_llama, "a")))
    saved = yaml.safe_load((Path(first["output_dir"]) / "recipe.yaml").read_text())
    for section, keys in AUTO_KEYS.items():
        for key in keys:
            assert saved[section][key] != "auto", (section, key)
    assert saved["model"]["family"] == "llama" and saved["model"]["template"] == "alpaca"
    assert saved["model"]["compute_dtype"] == "float32" and saved["model"]["attn_implementation"] == "sdpa"
    assert saved["data"]["packing"] is False and isinstance(saved["train"]["micro_batch_size"], int)
    # the saved recipe, run again elsewhere, is the same run
    second = train(
        load_recipe(Path(first["output_dir"]) / "recipe.yaml", [f"train.output_dir={tmp_path / 'b'}"])
    )
    capsys.readouterr()
    again = yaml.safe_load((tmp_path / "b" / "recipe.yaml").read_text())
    assert {k: v for k, v in again.items() if k != "train"} == {
        k: v for k, v in saved.items() if k != "train"
    }
    assert {**again["train"], "output_dir": ""} == {**saved["train"], "output_dir": ""}
    rec_a, rec_b = (json.loads((tmp_path / d / "llm4rec.json").read_text()) for d in "ab")
    assert rec_a == rec_b
    losses = [
        [
            json.loads(x)["loss"]
            for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()
            if "loss" in x
        ]
        for d in "ab"
    ]
    assert losses[0] == losses[1] and first["best_valid_auc"] == second["best_valid_auc"]


# --------------------------------------------------------------------------- reads and loads, counted


def _from_llm4rec() -> bool:
    """Whether the innermost non-standard-library caller is llm4rec's code (not transformers', not a test's)."""
    f = sys._getframe(2)
    while f is not None:
        name = f.f_globals.get("__name__", "")
        if name.startswith("llm4rec"):
            return True
        if name.split(".")[0] not in ("pathlib", "io", "json", "codecs", "builtins", "os", "__main__"):
            return False
        f = f.f_back
    return False


@pytest.fixture
def counts(monkeypatch):
    """config.json reads by llm4rec's own code, per directory, and tokenizer loads (every load goes through
    loading.read_tokenizer), counted where they happen: nothing is stubbed, the real functions run."""
    reads: collections.Counter = collections.Counter()
    loads: list[str] = []
    real_open, real_read_tokenizer = io.open, loading.read_tokenizer

    def counting_open(file, mode="r", *args, **kwargs):
        if (
            isinstance(file, (str, os.PathLike))
            and Path(file).name == "config.json"
            and not set(mode) & set("wax+")
            and _from_llm4rec()
        ):
            reads[str(Path(file).resolve().parent)] += 1
        return real_open(file, mode, *args, **kwargs)

    def counting_read_tokenizer(path, family):
        loads.append(str(path))
        return real_read_tokenizer(path, family)

    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(loading, "read_tokenizer", counting_read_tokenizer)

    def take() -> tuple[dict[str, int], list[str]]:
        got = (dict(reads), list(loads))
        reads.clear()
        loads.clear()
        return got

    return take


def _run(main, argv: list) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return int(exc.code or 0)


def test_each_command_reads_config_once_and_loads_the_tokenizer_once(tiny_llama, tmp_path, counts, capsys):
    from llm4rec.eval.evaluate import main as evaluate
    from llm4rec.eval.show_prompt import main as show_prompt
    from llm4rec.models.planner.cli import main as plan

    spec = importlib.util.spec_from_file_location("train_script", REPO / "train.py")
    train_py = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_py)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_all_auto_recipe(tmp_path, tiny_llama, "run")))
    model = str(tiny_llama.resolve())
    test = _write_jsonl(tmp_path / "test.jsonl", make_tallrec_samples(6, seed=4))
    counts()

    assert _run(train_py.main, [recipe]) == 0
    reads, loads = counts()
    assert reads == {model: 1} and len(loads) == 1, (reads, loads)

    out = tmp_path / "run"
    for ckpt in (out, tiny_llama):
        argv = ["--checkpoint", ckpt, "--data", test, "--skip-overlong", "--out", tmp_path / f"r-{ckpt.name}"]
        assert _run(evaluate, argv) == 0
        reads, loads = counts()
        assert all(n == 1 for n in reads.values()) and len(loads) == 1, (ckpt, reads, loads)
    assert _run(show_prompt, ["--checkpoint", out, "--data", test, "--index", 1]) == 0
    reads, loads = counts()
    assert all(n == 1 for n in reads.values()) and len(loads) == 1, (reads, loads)
    assert _run(plan, [recipe, "--device", "cpu", "--gpu-gb", "64"]) == 0
    reads, loads = counts()
    assert reads == {model: 1} and loads == [], (reads, loads)
    capsys.readouterr()
