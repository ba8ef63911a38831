"""Train a LoRA recommender: ``accelerate launch train.py RECIPE.yaml [section.key=value ...]``.

The same as ``llm4rec train RECIPE`` (llm4rec/train/cli.py), started by accelerate once per GPU; the loop
itself is in llm4rec/train/loop.py.
"""

import sys

from llm4rec.train.cli import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:], prog="train.py"))
