"""Token lengths of prepared samples under every shipped backbone's tokenizer and default template.

    python scripts/measure_prompt_lengths.py --samples data/ml100k/ranking --models ../shared/models
    python scripts/measure_prompt_lengths.py --samples data/ml100k/ranking --models ../shared/models \
        --splits test --train-rows 0 --backbones llama-7b --kept

For each backbone directory found under ``--models`` (original releases are fine: legacy tokenizers are
converted on the fly, no weights are read) it renders the samples of ``--splits`` (default valid and
test) and ``--train-rows`` train samples (a seeded draw) as training renders them (prompt + answer +
end-of-turn text + EOS) and prints, in tokens: the median, 95th percentile and maximum with the whole
history, the maximum with no history, the smallest cutoff at which every sample fits whole, and how many
fit at ``--cutoffs`` whole and with history dropped. ``--kept`` adds, per cutoff, the mean number of
history items a sample keeps once fitted (``fit_to_budget``, as training and evaluation fit it; over the
samples that fit at all) and how many keep at least one. The figures in docs/benchmarks.md and the ranking
recipes come from here.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm4rec.data.tokenize import drop_history, fit_to_budget, history_spans, render_prompt  # noqa: E402
from llm4rec.models.backbone import tokenizer_backbone  # noqa: E402

#: shipped backbone directory -> family
BACKBONES = {
    "llama-7b": "llama",
    "llama-2-7b": "llama",
    "qwen2-7b": "qwen2",
    "qwen-7b": "qwen",
    "baichuan-7b": "baichuan",
    "baichuan2-7b": "baichuan2",
    "chatglm-6b": "chatglm",
    "chatglm2-6b": "chatglm2",
    "chatglm3-6b": "chatglm3",
}


def read(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def train_text(template, r: dict) -> str:
    """The text training tokenizes: prompt + answer prefix + output + answer suffix (EOS is added)."""
    return (
        render_prompt(template, r)
        + template.answer_prefix
        + str(r.get("output", ""))
        + template.answer_suffix
    )


def lengths(tok, template, rows: list[dict]) -> np.ndarray:
    """Training sequence lengths: prompt + answer prefix + output + answer suffix + EOS."""
    eos = tok.eos_token_id
    ids = tok([train_text(template, r) for r in rows], add_special_tokens=True)["input_ids"]
    return np.array([len(x) + (eos is not None and (not x or x[-1] != eos)) for x in ids])


def kept_items(tok, template, rows: list[dict], whole: np.ndarray, bare: np.ndarray, cutoff: int) -> str:
    """Mean history items kept once fitted to ``cutoff``, and how many samples keep at least one."""
    kept = []
    for r, w, b in zip(rows, whole, bare):
        m = len(history_spans(r))
        if w <= cutoff:
            kept.append(m)
        elif b <= cutoff:
            f = fit_to_budget(
                r, lambda s: [0] * int(lengths(tok, template, [s])[0]), cutoff
            )  # only len counts
            kept.append(m - f.dropped)
    k = np.array(kept)
    return f"{k.mean():.2f} ({(k > 0).sum()} keep some)" if len(k) else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", required=True, type=Path, help="a task directory written by data_prep")
    ap.add_argument("--models", required=True, type=Path, help="directory holding the backbone directories")
    ap.add_argument("--lang", default="en", choices=("en", "zh"), help="template language (the samples')")
    ap.add_argument("--splits", default="valid,test", help="comma list of the splits read whole")
    ap.add_argument("--train-rows", type=int, default=5000, help="train samples drawn (0 = none)")
    ap.add_argument("--kept", action="store_true", help="also: history items kept per cutoff (slower)")
    ap.add_argument("--cutoffs", default="384,512,640", help="cutoffs to count fits at")
    ap.add_argument("--backbones", default=",".join(BACKBONES), help="comma list of backbone directory names")
    args = ap.parse_args()
    splits = [x for x in args.splits.split(",") if x]
    rows = [r for split in splits for r in read(args.samples / f"{split}.jsonl")]
    if args.train_rows:
        train = read(args.samples / "train.jsonl")
        rows += random.Random(0).sample(train, min(args.train_rows, len(train)))
    bare_rows = [drop_history(r, len(history_spans(r))) for r in rows]
    cutoffs = [int(c) for c in args.cutoffs.split(",")]
    print(
        f"{args.samples}: {len(rows)} samples ({' + '.join(splits)} + {args.train_rows} train), lang {args.lang}"
    )
    head = ["backbone", "template", "median", "p95", "max", "max no-history", "fits whole from"]
    head += [f"whole/bare fit @{c}" for c in cutoffs]
    if args.kept:
        head += [f"items kept @{c}" for c in cutoffs]
    print(" | ".join(head))
    for name in args.backbones.split(","):
        family = BACKBONES[name]
        path = args.models / name
        if not path.is_dir():
            print(f"{name}: not present, skipped")
            continue
        t0 = time.perf_counter()
        bb = tokenizer_backbone(path, family, lang=args.lang)
        tok, template = bb.tokenizer, bb.template
        whole = lengths(tok, template, rows)
        bare = lengths(tok, template, bare_rows)
        cells = [
            name,
            template.name,
            f"{np.median(whole):.0f}",
            f"{np.percentile(whole, 95):.0f}",
            str(whole.max()),
            str(bare.max()),
            str(whole.max()),
        ]
        cells += [f"{(whole <= c).sum()}/{(bare <= c).sum()}" for c in cutoffs]
        if args.kept:
            cells += [kept_items(tok, template, rows, whole, bare, c) for c in cutoffs]
        print(" | ".join(cells) + f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
