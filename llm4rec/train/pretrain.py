"""``llm4rec pretrain``: a short full-weight domain pre-training of a (tiny) base model.

A random tiny model knows no language and nothing about the items, so LoRA on top of it learns little
in a CPU-sized budget. The demo therefore first trains every weight of its tiny base on domain material
about a *disjoint* set of users: plain sentences (next-token loss on every token) and instruction samples
(loss on the answer, as instruction tuning does). It is a stand-in for the pre-training and instruction
tuning a real 7B backbone already had, and is not meant for real backbones.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from llm4rec.cli import plain
from llm4rec.data.tokenize import TrainExample, collate, encode_train_example
from llm4rec.errors import UserError, exit_on_user_error
from llm4rec.io import atomic_dir, read_jsonl
from llm4rec.models.templates import ALPACA


def tail_window(example: TrainExample, tokens: int, bos_id: int | None) -> TrainExample:
    """The last ``tokens`` tokens of ``example`` (BOS kept in front when the sequence starts with it)."""
    ids, labels = example.input_ids, example.labels
    if tokens <= 0 or len(ids) <= tokens:
        return example
    head = 1 if bos_id is not None and ids and ids[0] == bos_id else 0
    keep = tokens - head
    return TrainExample(ids[:head] + ids[-keep:], [-100] * head + labels[-keep:])


def load_documents(
    tokenizer, paths: list[str | Path], max_len: int, tail_tokens: int = 0
) -> list[TrainExample]:
    """Tokenize pre-training documents: ``.txt`` lines get a loss on every token, ``.jsonl`` instruction
    samples a loss on their answer (rendered in TALLRec's Alpaca template).

    ``tail_tokens`` > 0 keeps only the last that many tokens of each instruction sample (plus BOS). In a
    TALLRec prompt the target item and the answer sit at the end; a random tiny model cannot find the
    target among ~130 tokens in a CPU budget, while in a short window it does within a few hundred steps,
    and what it learns carries over to full prompts.
    """
    docs: list[TrainExample] = []
    for p in map(Path, paths):
        if not p.is_file():
            raise UserError(f"--corpus: {p}: no such file")
        if p.suffix == ".jsonl":
            rows = read_jsonl(p, required=("instruction", "input", "output"))
            docs += [
                tail_window(
                    encode_train_example(tokenizer, ALPACA, r, max_len), tail_tokens, tokenizer.bos_token_id
                )
                for r in rows
            ]
        else:
            lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
            for ids in tokenizer(lines, add_special_tokens=True)["input_ids"]:
                ids = (list(ids) + [tokenizer.eos_token_id])[:max_len]
                docs.append(TrainExample(ids, list(ids)))
    if not docs:
        raise UserError("--corpus: no documents")
    return docs


def pretrain(
    model_dir: str | Path,
    corpus: list[str | Path],
    out: str | Path,
    *,
    steps: int = 300,
    batch_size: int = 16,
    max_len: int = 256,
    lr: float = 3e-3,
    tail_tokens: int = 0,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train every weight of ``model_dir`` on the ``corpus`` files for ``steps`` steps; save to ``out``."""
    from transformers import AutoModelForCausalLM

    from llm4rec.models.backbone import resolve_family
    from llm4rec.models.loading import read_tokenizer, save_tokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = read_tokenizer(model_dir, resolve_family(str(model_dir)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.train()
    docs = load_documents(tokenizer, corpus, max_len, tail_tokens)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    t0, loss_val = time.time(), float("nan")
    bar = tqdm(range(steps), desc="pretrain", disable=not progress)
    for _ in bar:
        batch = collate(rng.sample(docs, min(batch_size, len(docs))), pad)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_val = loss.item()
        bar.set_postfix(loss=f"{loss_val:.3f}")
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        save_tokenizer(tokenizer, tmp)
    return {"final_loss": loss_val, "seconds": time.time() - t0, "documents": len(docs)}


@exit_on_user_error
def main(argv: list[str]) -> int:
    """``llm4rec pretrain --model DIR --corpus FILE [FILE ...] --out DIR [--steps N]``."""
    ap = argparse.ArgumentParser(prog="llm4rec pretrain", description=plain(__doc__.split("\n\n")[0]))
    ap.add_argument("--model", required=True, type=Path, help="base model directory (e.g. from tiny-model)")
    ap.add_argument(
        "--corpus", required=True, nargs="+", help=".txt (one document per line) or .jsonl samples"
    )
    ap.add_argument("--out", required=True, type=Path, help="output model directory (written atomically)")
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    ap.add_argument("--batch-size", type=int, default=16, help="documents per step (default 16)")
    ap.add_argument(
        "--max-len", type=int, default=256, help="documents are cut to this many tokens (default 256)"
    )
    ap.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate (default 3e-3)")
    ap.add_argument(
        "--tail-tokens",
        type=int,
        default=0,
        help="train on the last N tokens of each .jsonl sample only (0: whole samples); see load_documents",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of data order and init (default 0)")
    args = ap.parse_args(argv)
    if args.tail_tokens < 0:
        raise UserError(f"--tail-tokens: must be 0 or more, got {args.tail_tokens}")
    if not (args.model / "config.json").is_file():
        raise UserError(f"--model: {args.model} is not a model directory (no config.json)")
    stats = pretrain(
        args.model,
        args.corpus,
        args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        max_len=args.max_len,
        lr=args.lr,
        tail_tokens=args.tail_tokens,
        seed=args.seed,
    )
    print(
        f"pre-trained {args.model} -> {args.out} on {stats['documents']} documents: "
        f"loss {stats['final_loss']:.3f} in {stats['seconds']:.0f}s"
    )
    return 0
