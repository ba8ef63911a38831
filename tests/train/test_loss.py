"""The loss: the head on labelled positions equals the full computation; accumulation equals one big batch."""

from __future__ import annotations

import pytest
import torch

from llm4rec.data.tokenize import collate
from llm4rec.models.loading import load_tokenizer
from llm4rec.models.registry import get_family
from llm4rec.train.loss import effective_batch_tokens, head_inputs, head_on, loss_sum, predicted_positions

from ._helpers import add_lora, varied_examples


@pytest.fixture(scope="module")
def lora_llama(tiny_llama):
    from transformers import AutoModelForCausalLM

    fam = get_family("llama")
    tok = load_tokenizer(tiny_llama, fam)
    torch.manual_seed(0)
    model = add_lora(AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32))
    # different prompt lengths (padding) and answer lengths (token counts)
    examples = varied_examples(tok, fam, 8, seed=3, first_len=60, len_step=25)
    assert len({len(e.input_ids) for e in examples}) > 1  # padding is exercised
    return model, tok, examples


def _grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return out


def test_head_on_labels_equals_the_full_head_in_loss_and_gradients(lora_llama):
    model, tok, examples = lora_llama
    batch = collate(examples, tok.pad_token_id)
    n = effective_batch_tokens(examples, [range(len(examples))])
    assert n == int(predicted_positions(batch["labels"]).sum()) > 0
    full = loss_sum(model, batch, full_head=True)
    full.backward()
    g_full = _grads(model)
    index, targets = head_inputs(batch["labels"])
    sliced = loss_sum(model, {**batch, "head_index": index, "head_targets": targets})
    sliced.backward()
    g_sliced = _grads(model)
    torch.testing.assert_close(sliced, full, rtol=1e-5, atol=1e-5)
    # transformers' own mean loss over the labelled tokens is the same number
    hf = model(**batch).loss
    torch.testing.assert_close(full / n, hf, rtol=1e-5, atol=1e-6)
    assert g_full.keys() == g_sliced.keys() and len(g_full) == 4 * 2  # 2 layers x (q, v) x (A, B)
    for name in g_full:
        torch.testing.assert_close(g_sliced[name], g_full[name], rtol=1e-4, atol=1e-6)
    assert any(g.abs().max() > 0 for g in g_full.values())


def test_the_head_sees_only_labelled_positions(lora_llama):
    model, tok, examples = lora_llama
    batch = collate(examples[:3], tok.pad_token_id)
    positions = predicted_positions(batch["labels"])
    index, targets = head_inputs(batch["labels"])
    assert index.tolist() == positions.flatten().nonzero().flatten().tolist()
    assert targets.tolist() == [t for t in batch["labels"][:, 1:].flatten().tolist() if t != -100]
    with head_on(model, index), torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    with torch.no_grad():  # outside the block the head is whole again
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert full.shape[:2] == batch["input_ids"].shape
    assert logits.shape == (1, int(positions.sum()), model.config.vocab_size)
    torch.testing.assert_close(logits[0], full[positions], rtol=1e-5, atol=1e-5)


def test_gradient_accumulation_equals_one_big_batch(lora_llama):
    """Micro-batches of 2, each normalised by the effective batch's labelled tokens, sum to the 8-sample
    gradient; normalising each micro-batch by its own tokens (the old way) does not when answers differ in
    length."""
    model, tok, examples = lora_llama
    groups = [[0, 1], [2, 3], [4, 5], [6, 7]]
    n = effective_batch_tokens(examples, groups)
    (loss_sum(model, collate(examples, tok.pad_token_id)) / n).backward()
    big = _grads(model)
    total = 0.0
    for g in groups:
        part = loss_sum(model, collate([examples[j] for j in g], tok.pad_token_id)) / n
        part.backward()
        total += float(part)
    accumulated = _grads(model)
    for name in big:
        torch.testing.assert_close(accumulated[name], big[name], rtol=1e-4, atol=1e-7)
    # per-micro-batch means averaged over the micro-batches: a different gradient unless every micro-batch
    # holds the same number of answer tokens
    counts = [effective_batch_tokens(examples, [g]) for g in groups]
    assert len(set(counts)) > 1
    for g, c in zip(groups, counts, strict=True):
        (loss_sum(model, collate([examples[j] for j in g], tok.pad_token_id)) / c / len(groups)).backward()
    old = _grads(model)
    assert any(not torch.allclose(old[k], big[k], rtol=1e-4, atol=1e-7) for k in big)
    assert total > 0
