"""Shared check: ``generate()`` equals an explicit KV-cache loop, padded and unpadded (transformers' cache API)."""

from __future__ import annotations

import torch


def _cache_loop(
    model, ids: torch.Tensor, mask: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding written out by hand: one prompt pass, then one token at a time through ``cache=``."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True)
    tokens, logits = [], []
    for _ in range(steps):
        step_logits = out.logits[:, -1].float()
        nxt = step_logits.argmax(-1, keepdim=True)
        tokens.append(nxt)
        logits.append(step_logits)
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
        pos = pos[:, -1:] + 1
        out = model(input_ids=nxt, attention_mask=mask, position_ids=pos, cache=out.cache, use_cache=True)
    return torch.cat(tokens, 1), torch.stack(logits, 1)


def assert_generate_matches_cache_loop(model, seqs: list[list[int]], pad_id: int, steps: int = 4) -> None:
    """``generate`` (left-padded batch, and each row alone) gives the tokens and logits of the explicit loop."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :], mask[i, width - len(s) :] = torch.tensor(s), 1
    batches = [(ids, mask)] + [(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)) for s in seqs]
    for b_ids, b_mask in batches:
        with torch.no_grad():
            gen = model.generate(
                input_ids=b_ids,
                attention_mask=b_mask,
                max_new_tokens=steps,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=pad_id,
                return_dict_in_generate=True,
                output_logits=True,
            )
            ref_tokens, ref_logits = _cache_loop(model, b_ids, b_mask, steps)
        assert torch.equal(gen.sequences[:, b_ids.shape[1] :], ref_tokens)
        got = torch.stack([x.float() for x in gen.logits], 1)
        assert (got - ref_logits).abs().max().item() < 1e-4
    # and padding changes nothing: each row's padded continuation equals its unpadded one
    with torch.no_grad():
        padded, _ = _cache_loop(model, ids, mask, steps)
        for i, s in enumerate(seqs):
            alone, _ = _cache_loop(model, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long), steps)
            assert torch.equal(padded[i], alone[0])


def assert_converted_generate_matches(out) -> None:
    """Load the converted model directory ``out`` and check :func:`assert_generate_matches_cache_loop` on two
    random prompts of different lengths (left padding with id 0)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randint(3, model.config.vocab_size - 8, (n,), generator=g).tolist() for n in (9, 5)]
    assert_generate_matches_cache_loop(model, seqs, pad_id=0)
