"""Damaged or mismatched weights are one line naming the file, before any of them is used."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from llm4rec.errors import UserError
from llm4rec.safetensors_check import check_safetensors
from tests.conftest import make_tallrec_samples

from .conftest import evaluate_cli, one_error_line, snapshot, train_cli, write_jsonl, write_recipe


def truncate(path: Path, keep: float = 0.5) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))


@pytest.fixture
def test_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "test.jsonl", make_tallrec_samples(8, seed=9))


@pytest.mark.parametrize("keep", [0.5, 0.999, 4 / 1e9])
def test_a_truncated_adapter_is_named(run_copy, test_file, tmp_path, capsys, keep):
    out, _ = run_copy
    truncate(out / "adapter_model.safetensors", keep)
    line = one_error_line(
        *evaluate_cli(["--checkpoint", out, "--data", test_file, "--out", tmp_path / "r"], capsys)[::2]
    )
    assert line.startswith(f"error: {out}/adapter_model.safetensors: damaged safetensors file (truncated")
    assert not (tmp_path / "r").exists()


def test_a_truncated_base_model_is_named_by_evaluate_and_train(
    tiny_llama, run_copy, test_file, tmp_path, capsys
):
    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    truncate(base / "model.safetensors")
    line = one_error_line(
        *evaluate_cli(["--checkpoint", base, "--data", test_file, "--out", tmp_path / "r"], capsys)[::2]
    )
    assert f"{base}/model.safetensors: damaged safetensors file (truncated" in line
    out, data = run_copy
    data["model"]["path"] = str(base)
    data["train"]["resume"] = "never"
    line = one_error_line(*train_cli([write_recipe(tmp_path / "r.yaml", data)], capsys)[::2])
    assert f"{base}/model.safetensors: damaged safetensors file (truncated" in line


def test_a_truncated_checkpoint_is_named_on_resume(run_copy, tmp_path, capsys):
    out, data = run_copy
    truncate(out / "checkpoint-last" / "adapter_model.safetensors")
    before = snapshot(out)
    line = one_error_line(*train_cli([write_recipe(tmp_path / "r.yaml", data)], capsys)[::2])
    assert f"{out}/checkpoint-last/adapter_model.safetensors: damaged safetensors file" in line
    assert snapshot(out) == before


def test_damaged_headers_are_named(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(4, 4)}, path)
    good = path.read_bytes()
    check_safetensors(path)
    path.write_bytes(good[:8] + b"{not json" + good[17:])
    with pytest.raises(UserError, match="its header is not JSON"):
        check_safetensors(path)
    path.write_bytes(good + b"\0" * 16)
    with pytest.raises(UserError, match="16 bytes after the last tensor"):
        check_safetensors(path)
    path.write_bytes(b"\xff" * 8 + good[8:])
    with pytest.raises(UserError, match="not a safetensors file"):
        check_safetensors(path)


@pytest.fixture(scope="module")
def wider_llama(tiny_llama, tmp_path_factory) -> Path:
    """Another tiny LLaMA with the same tokenizer but wider layers."""
    from llm4rec.models.tiny import build_tiny_model

    cfg = json.loads((tiny_llama / "config.json").read_text())
    return build_tiny_model(
        "llama", tmp_path_factory.mktemp("wide") / "llama", tokenizer_from=tiny_llama,
        hidden_size=2 * cfg["hidden_size"], seed=1,
    )  # fmt: skip


@pytest.fixture(scope="module")
def same_shape_llama(tiny_llama, tmp_path_factory) -> Path:
    """Another tiny LLaMA of the same shapes (other random weights)."""
    from llm4rec.models.tiny import build_tiny_model

    return build_tiny_model(
        "llama", tmp_path_factory.mktemp("same") / "llama", tokenizer_from=tiny_llama, seed=5
    )


def point_at_base(out: Path, base: Path) -> None:
    """Make training output ``out`` name ``base`` as its base model: in recipe.yaml and in llm4rec.json, the
    record its backbone is rebuilt from."""
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    recipe["model"]["path"] = str(base)
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    record = json.loads((out / "llm4rec.json").read_text())
    record["base_model"] = record["weights"] = str(base)
    (out / "llm4rec.json").write_text(json.dumps(record))


def test_an_adapter_of_another_base_is_named_with_both(
    trained, run_copy, wider_llama, test_file, tmp_path, capsys
):
    out, _ = run_copy
    point_at_base(out, wider_llama)
    code, _, err = evaluate_cli(["--checkpoint", out, "--data", test_file, "--out", tmp_path / "r"], capsys)
    line = one_error_line(code, err)
    assert "adapter trained on another base" in line
    assert (
        str(wider_llama) in line
        and json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] in line
    )


def test_an_adapter_recording_another_base_of_the_same_shapes_is_named(
    run_copy, same_shape_llama, test_file, tmp_path, capsys
):
    out, _ = run_copy
    recorded = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    point_at_base(out, same_shape_llama)
    code, _, err = evaluate_cli(["--checkpoint", out, "--data", test_file, "--out", tmp_path / "r"], capsys)
    line = one_error_line(code, err)
    assert f"adapter trained on {recorded}, not on {same_shape_llama}" in line
    # a copy of the same base elsewhere (same config and weights) loads
    moved = tmp_path / "moved"
    shutil.copytree(recorded, moved)
    point_at_base(out, moved)
    code, _, err = evaluate_cli(["--checkpoint", out, "--data", test_file, "--out", tmp_path / "r2"], capsys)
    assert code == 0, err
    assert os.path.isdir(recorded)
