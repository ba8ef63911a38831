"""The ``llm4rec`` command: one subcommand per stage, each a ``main(argv)`` in the module that does the work."""

from __future__ import annotations

import importlib
import sys

#: subcommand -> (module:function, one-line help). Modules are imported only when their command runs,
#: so `llm4rec --help` is instant and a command never pays for another's imports.
COMMANDS: dict[str, tuple[str, str]] = {
    "prep": ("llm4rec.data.prep:cli", "turn a log (movielens, amazon, bookcrossing, generic) into samples"),
    "evaluate": ("llm4rec.eval.evaluate:main", "score checkpoints on a JSONL test set and write a report"),
    "baseline": (
        "llm4rec.baselines.run:main",
        "fit a classic recommender (popular, ease, als, sasrec) and score the same samples as evaluate",
    ),
    "compare": ("llm4rec.eval.compare:main", "one table of several reports computed on the same samples"),
    "show-prompt": (
        "llm4rec.eval.show_prompt:main",
        "print exactly what the model is given for one sample (after template and truncation)",
    ),
    "tiny-model": (
        "llm4rec.models.tiny:main",
        "build a tiny random model + tokenizer of a family (smoke tests)",
    ),
    "train": (
        "llm4rec.train.cli:main",
        "fine-tune a LoRA adapter as a recipe says, in one process (several GPUs: accelerate launch train.py)",
    ),
    "pretrain": (
        "llm4rec.train.pretrain:main",
        "short full-weight LM pre-training of a tiny base on a corpus",
    ),
    "synth": ("llm4rec.data.synthetic:main", "generate a synthetic interaction log in MovieLens-100K layout"),
    "plan": (
        "llm4rec.models.planner.cli:main",
        "estimate peak GPU memory of a recipe before downloading weights",
    ),
    "import-gguf": (
        "llm4rec.models.gguf:main",
        "turn a GGUF file (llama, qwen2) into a Hugging Face model directory",
    ),
    "convert": ("llm4rec.models.convert:main", "convert a remote-code checkpoint into transformers' classes"),
    "recommend": (
        "llm4rec.serve.recommend:main",
        "top-K items of a catalogue for a user or a history, scored by a checkpoint",
    ),
    "serve": ("llm4rec.serve.server:main", "an HTTP JSON API answering recommendations (model loaded once)"),
    "export": (
        "llm4rec.serve.export:main",
        "an adapter merged into its base as a plain Hugging Face model directory (or the adapter alone)",
    ),
    "recipe-doc": ("llm4rec.config:main", "list every recipe key with its default and meaning"),
}


def plain(text: str) -> str:
    """Docstring text for ``--help``: Sphinx roles and double backquotes removed (``x`` and :mod:`x` -> x)."""
    import re

    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: llm4rec COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += [
        "",
        "Run `llm4rec COMMAND --help` for a command's options. Training on several GPUs: "
        "accelerate launch train.py RECIPE",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``llm4rec COMMAND ...`` to the module that implements COMMAND."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from llm4rec import __version__

        print(f"llm4rec {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"error: unknown command {name!r}{hint}; run `llm4rec --help`", file=sys.stderr)
        return 2
    if name == "prep":
        from llm4rec.data.allocator import keep_freed_pages

        keep_freed_pages()  # must precede the first polars import
    module, func = COMMANDS[name][0].split(":")
    return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
