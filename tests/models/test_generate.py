"""generate() with transformers' cache API equals an explicit cache loop for the directly loaded families."""

from __future__ import annotations

import pytest
import torch

from tests.models._generate import assert_generate_matches_cache_loop


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2"])
def test_generate_equals_explicit_cache_loop(fixture, request):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = request.getfixturevalue(fixture)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    texts = ["Below is an instruction that describes a task.", "Yes. No.", "User Preference"]
    seqs = [tok(t)["input_ids"] for t in texts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    assert_generate_matches_cache_loop(model, seqs, pad)
