"""``llm4rec train RECIPE [section.key=value ...]``: fine-tune a LoRA adapter as the recipe says.

Runs :func:`llm4rec.train.loop.train` in this one process. On several GPUs, launch the same code once per
GPU with ``accelerate launch train.py RECIPE [section.key=value ...]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llm4rec.errors import exit_on_user_error


def build_parser(prog: str = "llm4rec train") -> argparse.ArgumentParser:
    """The argument parser of ``llm4rec train`` (``prog``: the name shown in usage lines)."""
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Fine-tune a LoRA adapter on a (4-bit) base as RECIPE says.",
        epilog="Several GPUs: accelerate launch train.py RECIPE [section.key=value ...] (the same code, one "
        "process per GPU). Every recipe key: llm4rec recipe-doc.",
    )
    ap.add_argument("recipe", help="recipe YAML (e.g. recipes/tallrec_ml100k.yaml)")
    ap.add_argument(
        "overrides", nargs="*", help="recipe overrides section.key=value, e.g. train.max_steps=100"
    )
    return ap


@exit_on_user_error
def main(argv: Sequence[str] | None = None, prog: str = "llm4rec train") -> int:
    """Entry point of ``llm4rec train`` and of ``train.py``: train, then print one summary line."""
    import sys

    from llm4rec.config import check_paths, load_recipe

    args = build_parser(prog).parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    # checked before torch, accelerate and transformers are imported: a bad recipe or path costs no start-up
    recipe = check_paths(load_recipe(args.recipe, args.overrides))
    from llm4rec.train.loop import train

    summary = train(recipe)
    if not summary["main_process"]:
        return 0
    auc = summary["best_valid_auc"]
    best = (
        f"best valid AUC {auc:.4f} at step {summary['best_step']}" if auc is not None else "no validation AUC"
    )
    print(
        f"trained {summary['steps']} steps in {summary['train_seconds']}s; {best}; adapter: {summary['output_dir']}"
    )
    return 0
