"""Loading a 4-bit base on CPU: widths the bitsandbytes CPU kernels cannot run get one clear line."""

from __future__ import annotations

import pytest
import torch

from llm4rec.errors import UserError
from llm4rec.models.loading import load_base_model
from llm4rec.models.registry import get_family


def _save_llama(path, intermediate: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=256,
        hidden_size=128,
        intermediate_size=intermediate,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def _has_avx512bf16() -> bool:
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())


def test_widths_in_multiples_of_64_load_and_run_in_4bit(tmp_path):
    model = load_base_model(_save_llama(tmp_path / "m", 384), get_family("llama"), device="cpu")
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, 256) and torch.isfinite(logits).all()


@pytest.mark.skipif(not _has_avx512bf16(), reason="the width rule only holds on CPUs with avx512_bf16")
def test_odd_widths_are_one_line_on_avx512bf16(tmp_path):
    with pytest.raises(UserError, match=r"mlp\.(gate|up)_proj is 128->344.*load_in_4bit=false"):
        load_base_model(_save_llama(tmp_path / "m", 344), get_family("llama"), device="cpu")


@pytest.mark.skipif(_has_avx512bf16(), reason="on avx512_bf16 CPUs odd widths are refused (test above)")
def test_odd_widths_run_where_the_cpu_allows(tmp_path):
    model = load_base_model(_save_llama(tmp_path / "m", 344), get_family("llama"), device="cpu")
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2]])).logits).all()
