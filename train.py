"""Train a LoRA recommender: ``accelerate launch train.py RECIPE.yaml [section.key=value ...]``.

The loop itself is in llm4rec/train/loop.py; this file only reads the recipe and the overrides.
"""

import sys

from llm4rec.config import check_paths, load_recipe
from llm4rec.errors import exit_on_user_error


@exit_on_user_error
def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\nList every recipe key with: llm4rec recipe-doc")
        return 0 if argv else 2
    # checked before torch, accelerate and transformers are imported: a bad recipe or path costs no start-up
    recipe = check_paths(load_recipe(argv[0], argv[1:]))
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


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
