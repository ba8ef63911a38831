"""The shared checkpoint reader and writer: shards written by one are read back whole by the other."""

from __future__ import annotations

import json

import pytest
import torch

from llm4rec.errors import UserError
from llm4rec.models.legacy.checkpoint_io import ShardWriter, iter_original_tensors, original_shards
from tests.fixtures.legacy_originals import save_state_dict


class _Payload:
    """Any class: unpickling it would mean running code named by the file."""


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {f"layers.{i}.weight": torch.randn(16, 8, generator=g) for i in range(5)}  # 512 bytes each


def test_sharded_write_reads_back_in_index_order(tmp_path):
    sd = _tensors()
    writer = ShardWriter(tmp_path, max_bytes=1100)  # two tensors per shard
    for k, v in sd.items():
        writer.add(k, v)
    with pytest.raises(ValueError, match="written twice"):
        writer.add("layers.0.weight", sd["layers.0.weight"])
    writer.close()
    names = [f"model-{i:05d}-of-00003.safetensors" for i in (1, 2, 3)]
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == names
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 5 * 512
    assert index["weight_map"]["layers.4.weight"] == names[2]
    assert [p.name for p in original_shards(tmp_path)] == names
    back = dict(iter_original_tensors(tmp_path))
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_single_shard_and_bin_files(tmp_path):
    sd = _tensors()
    writer = ShardWriter(tmp_path / "one")
    (tmp_path / "one").mkdir()
    for k, v in sd.items():
        writer.add(k, v)
    writer.close()
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["model.safetensors"]
    (tmp_path / "bin").mkdir()
    save_state_dict(sd, tmp_path / "bin", "bin")
    back = dict(iter_original_tensors(tmp_path / "bin"))
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_unsafe_or_missing_weights_are_one_line_errors(tmp_path):
    (tmp_path / "a").mkdir()
    torch.save({"w": torch.ones(1), "code": _Payload()}, tmp_path / "a" / "pytorch_model.bin")
    with pytest.raises(UserError, match="weights_only=True"):
        dict(iter_original_tensors(tmp_path / "a"))
    (tmp_path / "b").mkdir()
    with pytest.raises(UserError, match=r"no \*\.safetensors"):
        original_shards(tmp_path / "b")
    index = {"weight_map": {"w": "model-00001-of-00002.safetensors"}}
    (tmp_path / "b" / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match="model-00001-of-00002.safetensors, which is missing"):
        original_shards(tmp_path / "b")
