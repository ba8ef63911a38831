"""``llm4rec show-prompt``: what the model is given for one sample, after template, special tokens and truncation.

    llm4rec show-prompt --checkpoint runs/a --data data/ml100k/ranking/test.jsonl --index 0
    llm4rec show-prompt --checkpoint /models/llama-7b --data test.jsonl --index 3 --cutoff-len 384
    llm4rec show-prompt --checkpoint runs/a --data ranking/test.jsonl --index 0 --rank-method pointwise --candidate J

The prompt is fitted exactly as training, validation and ``llm4rec evaluate`` fit it
(:func:`llm4rec.data.tokenize.fit_prompt`) and printed decoded from its token ids, followed by one line::

    tokens: T (preamble P, instruction I, history H of M items kept (X tokens), question Q)

P counts the template text before the instruction with the tokenizer's special prefix, I the instruction,
X the kept history items (the prompt's length minus its length with no history), and Q the rest: the
question, the candidates and the template text up to where the answer starts. T = P + I + X + Q.

With ``--rank-method pointwise`` a ranking sample is shown as ``llm4rec evaluate --rank-method pointwise``
scores it: the Yes/No prompt of one candidate (``--candidate``: its index letter, or its 0-based position),
built by :func:`llm4rec.eval.scoring.pointwise_samples`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm4rec.cli import plain
from llm4rec.errors import UserError, exit_on_user_error


def prompt_breakdown(backbone: Any, sample: dict[str, Any], where: str) -> dict:
    """The fitted prompt of ``sample`` under ``backbone`` and its token counts by part (see the module
    docstring)."""
    from llm4rec.data.tokenize import drop_history, history_spans
    from llm4rec.models.answer_tokens import encode

    tokenizer, template = backbone.tokenizer, backbone.template
    fitted = backbone.encode_prompt(sample, where)
    total = len(fitted.ids)
    kept = len(history_spans(fitted.sample, where))
    bare = drop_history(fitted.sample, kept, where)
    history = total - len(backbone.prompt_ids([bare])[0])
    text = (
        template.text
        if str(sample.get("input", "")) or template.text_no_input is None
        else template.text_no_input
    )
    before = text.split("{instruction}", 1)[0].replace("{{", "{").replace("}}", "}")
    preamble = len(encode(tokenizer, before))
    instruction = len(encode(tokenizer, before + str(sample.get("instruction", "")))) - preamble
    return {
        "ids": fitted.ids,
        "text": tokenizer.decode(fitted.ids, skip_special_tokens=False),
        "tokens": total,
        "preamble": preamble,
        "instruction": instruction,
        "history_tokens": history,
        "history_kept": kept,
        "history_items": fitted.items,
        "question": total - preamble - instruction - history,
    }


def tokens_line(b: dict) -> str:
    """The summary line printed after the prompt."""
    return (
        f"tokens: {b['tokens']} (preamble {b['preamble']}, instruction {b['instruction']}, history "
        f"{b['history_kept']} of {b['history_items']} items kept ({b['history_tokens']} tokens), "
        f"question {b['question']})"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``llm4rec show-prompt`` argument parser."""
    ap = argparse.ArgumentParser(
        prog="llm4rec show-prompt",
        description=plain(__doc__.split("\n\n")[0]),
        formatter_class=argparse.RawTextHelpFormatter,
    )
    ap.add_argument(
        "--checkpoint", required=True, type=Path, help="training output (adapter + recipe) or model directory"
    )
    ap.add_argument("--data", required=True, type=Path, help="JSONL samples")
    ap.add_argument("--index", required=True, type=int, help="0-based sample index (as in scores files)")
    ap.add_argument(
        "--cutoff-len",
        type=int,
        default=0,
        help="token limit (default: the checkpoint recipe's data.cutoff_len; 512 for a bare model)",
    )
    ap.add_argument(
        "--lang", choices=("en", "zh"), default=None, help="template language of a bare model (default en)"
    )
    ap.add_argument(
        "--rank-method",
        choices=("letters", "pointwise"),
        default="letters",
        help="ranking samples: the listwise prompt (default) or one candidate's Yes/No prompt, as evaluate "
        "scores them",
    )
    ap.add_argument(
        "--candidate",
        default=None,
        help="with --rank-method pointwise: the candidate, by index letter (A, B, ...) or 0-based position",
    )
    return ap


def candidate_index(text: str, n: int) -> int:
    """The 0-based position named by ``--candidate`` (an index letter or a number) in a pool of ``n``."""
    from llm4rec.data.tasks.ranking import LETTERS

    t = text.strip()
    if t.isdigit():
        j = int(t)
    elif len(t) == 1 and t.upper() in LETTERS:
        j = LETTERS.index(t.upper())
    else:
        raise UserError(f"--candidate {text!r}: give an index letter (A, B, ...) or a 0-based position")
    if j >= n:
        raise UserError(f"--candidate {text!r}: the sample has {n} candidates (A to {LETTERS[n - 1]})")
    return j


def pointwise_sample(sample: dict[str, Any], candidate: str | None, where: str) -> dict[str, Any]:
    """The Yes/No sample of one candidate of a ranking sample, exactly as pointwise scoring builds it."""
    from llm4rec.eval.scoring import pointwise_samples

    if candidate is None:
        raise UserError("--rank-method pointwise: name the candidate with --candidate LETTER")
    flat, _, counts = pointwise_samples([sample], sources=[where])
    return flat[candidate_index(candidate, counts[0])]


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``llm4rec show-prompt``."""
    from llm4rec.io import line_numbers, read_jsonl
    from llm4rec.models.backbone import resolve_backbone

    args = build_parser().parse_args(list(argv) if argv is not None else None)
    if args.cutoff_len < 0:
        raise UserError(f"--cutoff-len: must be positive, got {args.cutoff_len}")
    rows = read_jsonl(args.data, required=("instruction", "input"))
    if not 0 <= args.index < len(rows):
        raise UserError(f"--index {args.index}: {args.data} holds {len(rows)} samples (0 to {len(rows) - 1})")
    where = f"{args.data}:{line_numbers(args.data)[args.index]}"
    sample = rows[args.index]
    if args.rank_method == "pointwise":
        sample = pointwise_sample(sample, args.candidate, where)
    elif args.candidate is not None:
        raise UserError("--candidate: only with --rank-method pointwise")
    backbone = resolve_backbone(args.checkpoint, cutoff_len=args.cutoff_len, lang=args.lang, device="cpu")
    b = prompt_breakdown(backbone, sample, where)
    print(b["text"])
    print(tokens_line(b))
    return 0
