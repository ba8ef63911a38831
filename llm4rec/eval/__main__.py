"""``python -m llm4rec.eval ...`` / ``accelerate launch -m llm4rec.eval ...``: same as ``llm4rec evaluate``."""

import sys

from llm4rec.eval.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
