"""Shared fixtures: tiny models built on the fly, hand-made samples, and the optional ../shared data."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

GENRES = ("Action", "Comedy", "Drama", "Horror")


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not present (../shared is only beside the repo on CI and dev machines)")
    return p


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now: two gloo processes of one test rendezvous on it, not on accelerate's
    default 29500, which another test worker's processes may hold."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spans_of(text: str, history: list[str], *lists: list[str]) -> list[list[int]]:
    """``history_spans`` of items shown as quoted titles in comma-joined ``lists`` (as prep writes them)."""
    spans = {}
    pos = 0
    for members in lists:
        for k, t in enumerate(members):
            s = text.index(f'"{t}"', pos)
            e = s + len(t) + 2
            spans[t] = [s, e, e + 2 if k + 1 < len(members) else e]
            pos = e
    return [spans[t] for t in history]


def tallrec_draws(n: int, seed: int, genres: tuple[str, ...], title: str):
    """Yield (titles, history, liked, disliked, target, label) ``n`` times: a liked genre is drawn, the history
    items of that genre are liked (at least the first one), and the label says whether the target has it."""
    rng = random.Random(seed)
    titles = [title.format(k=k, g=g) for k in range(12) for g in genres]
    for _ in range(n):
        genre = rng.choice(genres)
        hist = rng.sample(titles, 6)
        liked = [t for t in hist if genre in t] or [hist[0]]
        disliked = [t for t in hist if t not in liked]
        target = rng.choice(titles)
        yield titles, hist, liked, disliked, target, int(genre in target)


def run_command(argv: list, capsys) -> tuple[int, str, str]:
    """Run ``llm4rec ARGV...`` in-process; return its exit status (SystemExit codes included), stdout, stderr."""
    from llm4rec.cli import main

    return run_main(main, [str(a) for a in argv], capsys)


def make_tallrec_samples(n: int, seed: int = 0) -> list[dict]:
    """TALLRec-format samples whose label follows a learnable rule: the target's genre is in the liked list."""
    rows = []
    for i, (titles, hist, liked, disliked, target, label) in enumerate(
        tallrec_draws(n, seed, GENRES, "Film {k} ({g})")
    ):
        text = (
            "User Preference: "
            + ", ".join(f'"{t}"' for t in liked)
            + "\nUser Unpreference: "
            + ", ".join(f'"{t}"' for t in disliked)
            + f'\nWhether the user will like the target movie "{target}"?'
        )
        rows.append(
            {
                "instruction": "Given the user's preference and unpreference, identify whether the user will "
                'like the target movie by answering "Yes." or "No.".',
                "input": text,
                "output": "Yes." if label else "No.",
                "user_id": i % 7,
                "item_id": titles.index(target),
                "label": label,
                "history": [titles.index(t) for t in hist],
                "history_spans": spans_of(text, [t for t in hist], liked, disliked),
            }
        )
    return rows


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A tiny random LLaMA with a tokenizer trained on TALLRec-style text (built once per session)."""
    from llm4rec.models.tiny import build_tiny_model

    corpus = [r["input"] + " " + r["output"] for r in make_tallrec_samples(200)]
    return build_tiny_model("llama", tmp_path_factory.mktemp("tiny") / "llama", corpus=corpus, vocab_size=600)


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    """A tiny random Qwen2 with a byte-level BPE tokenizer trained on the fly."""
    from llm4rec.models.tiny import build_tiny_model

    corpus = [r["input"] + " " + r["output"] for r in make_tallrec_samples(200)]
    return build_tiny_model("qwen2", tmp_path_factory.mktemp("tiny") / "qwen2", corpus=corpus, vocab_size=600)


def write_adapter(base: Path, out: Path, train: str = "unused.jsonl", **model: object) -> Path:
    """An adapter directory as train.py writes it (adapter, tokenizer, recipe) on ``base`` (a tiny LLaMA),
    with a non-zero LoRA on q/v; ``train`` is the recipe's data.train, ``model`` more model.* keys."""
    import torch
    from peft import LoraConfig, get_peft_model

    from llm4rec.config import recipe_from_dict, save_recipe
    from llm4rec.models.loading import load_base_model, load_tokenizer
    from llm4rec.models.registry import get_family

    fam = get_family("llama")
    net = load_base_model(base, fam, load_in_4bit=False, compute_dtype="float32", device="cpu")
    torch.manual_seed(0)
    peft_model = get_peft_model(net, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.3)
    peft_model.save_pretrained(out)
    load_tokenizer(base, fam).save_pretrained(out)
    recipe = recipe_from_dict(
        {
            "model": {"path": str(base), "family": "llama", "compute_dtype": "float32", **model},
            "data": {"train": train, "cutoff_len": 256},
            "train": {"output_dir": str(out)},
        }
    )
    save_recipe(recipe, out / "recipe.yaml")
    return out


def run_main(main, argv: list[str], capsys) -> tuple[int, str, str]:
    """Run a command's ``main(argv)``: its exit status (SystemExit included), stdout and stderr."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    cap = capsys.readouterr()
    return code, cap.out, cap.err
