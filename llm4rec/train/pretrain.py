"""``llm4rec pretrain``: a short full-weight language-model pre-training of a (tiny) base on a corpus.

A random tiny model knows no language, so LoRA on top of it learns little. The demo therefore gives its
tiny base a few hundred steps of next-token training on domain text first, a stand-in for the
pre-training a real 7B backbone already had. Not meant for real backbones.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from llm4rec.errors import UserError, exit_on_user_error
from llm4rec.io import atomic_dir
from llm4rec.models.tiny import read_corpus


def pack_corpus(tokenizer, lines: list[str], block_size: int) -> torch.Tensor:
    """Tokenize lines (each followed by EOS) and cut the stream into ``[n_blocks, block_size]``."""
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for enc in tokenizer(lines, add_special_tokens=True)["input_ids"]:
        ids.extend(enc)
        if eos is not None:
            ids.append(eos)
    n = len(ids) // block_size
    if n == 0:
        raise UserError(f"--corpus: only {len(ids)} tokens, fewer than one block of {block_size}")
    return torch.tensor(ids[: n * block_size]).view(n, block_size)


def pretrain(
    model_dir: str | Path,
    corpus: list[str],
    out: str | Path,
    *,
    steps: int = 300,
    batch_size: int = 16,
    block_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train every weight of ``model_dir`` on ``corpus`` for ``steps`` steps; save to ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.train()
    blocks = pack_corpus(tokenizer, corpus, block_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    gen = torch.Generator().manual_seed(seed)
    t0, loss_val = time.time(), float("nan")
    bar = tqdm(range(steps), desc="pretrain", disable=not progress)
    for _ in bar:
        idx = torch.randint(0, len(blocks), (batch_size,), generator=gen)
        x = blocks[idx]
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_val = loss.item()
        bar.set_postfix(loss=f"{loss_val:.3f}")
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return {"final_loss": loss_val, "seconds": time.time() - t0, "blocks": len(blocks)}


@exit_on_user_error
def main(argv: list[str]) -> int:
    """``llm4rec pretrain --model DIR --corpus FILE --out DIR [--steps N]``."""
    ap = argparse.ArgumentParser(prog="llm4rec pretrain", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=Path, help="base model directory (e.g. from tiny-model)")
    ap.add_argument("--corpus", required=True, nargs="+", help="text files, one document per line")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not (args.model / "config.json").is_file():
        raise UserError(f"--model: {args.model} is not a model directory (no config.json)")
    stats = pretrain(
        args.model,
        read_corpus(args.corpus),
        args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        block_size=args.block_size,
        lr=args.lr,
        seed=args.seed,
    )
    print(
        f"pre-trained {args.model} -> {args.out}: loss {stats['final_loss']:.3f} in {stats['seconds']:.0f}s"
    )
    return 0
