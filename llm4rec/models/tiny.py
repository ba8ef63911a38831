"""``llm4rec tiny-model``: a tiny random-weight model of a registered family, with a tokenizer.

The result is an ordinary Hugging Face directory (``config.json``, ``model.safetensors``, tokenizer
files) that ``from_pretrained`` loads like a real 7B checkpoint, so tests, the demo and a user's
installation smoke test run the exact code paths of real training on CPU in seconds. The tokenizer is
either trained on the fly on the given corpus (the family's tokenizer *kind*: sentencepiece-style
byte-fallback BPE for LLaMA, byte-level BPE with Qwen's special tokens for Qwen2) or copied from a real
tokenizer directory (``--tokenizer-from``).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from llm4rec.cli import plain
from llm4rec.errors import UserError, exit_on_user_error
from llm4rec.io import atomic_dir
from llm4rec.models.registry import get_family

#: Text every tiny tokenizer is trained on besides the user's corpus, so that templates and answers
#: always tokenize into known pieces.
_BASE_TEXT = [
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.",
    "### Instruction:\n### Input:\n### Response:\nYes. No. Yes No",
    "Given the user's preference and unpreference, identify whether the user will like the target movie "
    'by answering "Yes." or "No.".',
    'User Preference: "A", "B"\nUser Unpreference: "C"\nWhether the user will like the target movie "D"?',
    "0 1 2 3 4 5 6 7 8 9 a b c d e f g h i j k l m n o p q r s t u v w x y z A B C D E F G H I J",
    "是 否 用户 喜欢 电影 以下是一条描述任务的指令 回答 输入 指令",
]


def train_tokenizer(family: str, corpus: Iterable[str], vocab_size: int = 2000) -> Any:
    """Train a small fast tokenizer of the family's kind (its ``tiny_tokenizer``) on ``corpus``; returns a
    PreTrainedTokenizerFast."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    texts = list(_BASE_TEXT) + list(corpus)
    if get_family(family).tiny_tokenizer == "byte_level":
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer)
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            eos_token="<|endoftext|>",
            pad_token="<|endoftext|>",
            clean_up_tokenization_spaces=False,
        )
    # LLaMA-style: sentencepiece-like BPE over "▁"-marked words with byte fallback, <unk>/<s>/</s> = 0/1/2,
    # and BOS added to every sequence.
    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    # Words keep their leading "▁"; newlines and punctuation stand alone (as in LLaMA's vocabulary), so an
    # answer after "### Response:\n" starts a new token exactly as with the real tokenizer.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("▁", behavior="merged_with_next"),
            pre_tokenizers.Split(Regex(r'[\n"().,:;?!#]'), behavior="isolated"),
        ]
    )
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials + byte_tokens,
        show_progress=False,
        initial_alphabet=["▁"],
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(
    family: str,
    out: str | Path,
    *,
    corpus: Iterable[str] = (),
    vocab_size: int = 2000,
    tokenizer_from: str | Path | None = None,
    hidden_size: int | None = None,
    layers: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny random model of ``family`` plus its tokenizer to ``out`` (atomically); return ``out``."""
    from transformers import AutoModelForCausalLM

    from llm4rec.models.loading import read_tokenizer, save_tokenizer

    fam = get_family(family)
    if fam.tiny_config is None:
        raise UserError(f"--family: {family!r} has no tiny configuration (families with one: llama, qwen2)")
    if tokenizer_from is not None:
        try:
            tokenizer = read_tokenizer(tokenizer_from, fam)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"--tokenizer-from: cannot load a tokenizer from {tokenizer_from} ({exc})"
            ) from None
    else:
        tokenizer = train_tokenizer(family, corpus, vocab_size)
    cfg = fam.tiny_config(len(tokenizer))
    if hidden_size:
        if hidden_size % 64:
            raise UserError(
                f"--hidden-size: {hidden_size} is not a multiple of 64; bitsandbytes' CPU 4-bit kernels "
                "need layer widths in multiples of 64 (try 64, 128 or 256)"
            )
        cfg.hidden_size = hidden_size
        # ~8/3 of the hidden size as in LLaMA, rounded up to a multiple of 64 for the 4-bit CPU kernels
        cfg.intermediate_size = -(-hidden_size * 8 // 3 // 64) * 64
    if layers:
        cfg.num_hidden_layers = layers
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(cfg, name, getattr(tokenizer, name))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    out = Path(out)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        save_tokenizer(tokenizer, tmp)
    return out


def read_corpus(paths: Iterable[str | Path]) -> list[str]:
    """Documents of the given files: a ``.txt`` holds one per line; a ``.jsonl`` holds ``{"text": ...}``
    rows or instruction samples, which are rendered in TALLRec's Alpaca template followed by the answer.

    A missing file is a UserError.
    """
    from llm4rec.io import read_jsonl
    from llm4rec.models.templates import ALPACA

    docs: list[str] = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise UserError(f"--corpus: {p}: no such file")
        if p.suffix == ".jsonl":
            for row in read_jsonl(p):
                text = row.get("text")
                if text is None:
                    text = ALPACA.render(row.get("instruction", ""), row.get("input", "")) + str(
                        row.get("output", "")
                    )
                docs.append(text)
        else:
            docs += [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return docs


@exit_on_user_error
def main(argv: list[str]) -> int:
    """``llm4rec tiny-model --family llama --out DIR [--corpus FILE ...]``."""
    ap = argparse.ArgumentParser(prog="llm4rec tiny-model", description=plain(__doc__.split("\n\n")[0]))
    ap.add_argument("--family", default="llama", help="registered family with a tiny config (llama, qwen2)")
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--corpus", nargs="*", default=[], help="text files to train the tokenizer on")
    ap.add_argument(
        "--vocab-size",
        type=int,
        default=2000,
        help="largest tokenizer vocabulary trained on --corpus (default 2000)",
    )
    ap.add_argument(
        "--tokenizer-from", type=Path, help="reuse a real tokenizer directory instead of training one"
    )
    ap.add_argument("--hidden-size", type=int, help="override the tiny hidden size (default 128)")
    ap.add_argument("--layers", type=int, help="override the number of layers (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    args = ap.parse_args(argv)
    out = build_tiny_model(
        args.family,
        args.out,
        corpus=read_corpus(args.corpus),
        vocab_size=args.vocab_size,
        tokenizer_from=args.tokenizer_from,
        hidden_size=args.hidden_size,
        layers=args.layers,
        seed=args.seed,
    )
    n = sum(p.stat().st_size for p in out.iterdir())
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    from safetensors import safe_open

    params = 0
    for shard in out.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            params += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 - not a dict
    inter = cfg.get("intermediate_size", cfg.get("ffn_hidden_size"))
    layers = cfg.get("num_hidden_layers", cfg.get("num_layers"))
    vocab = cfg.get("vocab_size", cfg.get("padded_vocab_size"))
    print(
        f"wrote tiny {args.family} model to {out}: {params / 1e6:.2f}M parameters (hidden "
        f"{cfg.get('hidden_size')}, intermediate {inter}, {layers} layers, vocabulary {vocab}; {n / 1e6:.1f} MB)"
    )
    return 0
