"""``llm4rec export``: a trained adapter as a directory other tools load without llm4rec.

    llm4rec export --checkpoint runs/a --out exported/a --merge [--dtype float16|bfloat16|float32]
    llm4rec export --checkpoint runs/a --out exported/a-adapter

``--merge`` folds the LoRA weights into the base and writes a plain Hugging Face model directory
(``model.safetensors``, ``config.json``, ``generation_config.json``, the tokenizer with its chat template)
plus ``llm4rec.json`` (family, prompt template, answer words, language, cutoff, what it was merged from):
``AutoModelForCausalLM.from_pretrained(OUT)`` loads it, and ``llm4rec evaluate``/``serve`` take it as a
bare model with the adapter's template and answers. Training quantizes the base to 4-bit NF4; merging
needs the real weights, so the base is loaded unquantized in ``--dtype`` (default: the dtype the base
stores, else float32) and the adapter added to it. For a legacy family the base is the converted model
(``llm4rec convert``'s cache). ChatGLM-6B's converted model is llm4rec's own class: its export loads only
where llm4rec is installed.

Without ``--merge`` the adapter alone is written (adapter weights and config, tokenizer, recipe,
``llm4rec.json``), its ``base_model_name_or_path`` pointing at the absolute path of the base it needs:
``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), OUT)``.

The output is built in a temporary directory beside ``--out`` and renamed onto it when complete.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm4rec.cli import plain
from llm4rec.errors import UserError, exit_on_user_error
from llm4rec.io import atomic_dir, write_json_atomic

DTYPES = ("float16", "bfloat16", "float32")
#: files of a training output that make up the adapter alone (weights, config, tokenizer, recipe)
ADAPTER_FILES = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
    "recipe.yaml",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``llm4rec export`` argument parser."""
    ap = argparse.ArgumentParser(
        prog="llm4rec export",
        description=plain(__doc__.split("\n\n")[0]),
        formatter_class=argparse.RawTextHelpFormatter,
    )
    ap.add_argument("--checkpoint", required=True, type=Path, help="a training output (adapter) directory")
    ap.add_argument("--out", required=True, type=Path, help="directory to write (replaced atomically)")
    ap.add_argument("--merge", action="store_true", help="merge the adapter into its base (a plain HF model)")
    ap.add_argument(
        "--dtype",
        choices=DTYPES,
        default=None,
        help="weight dtype of a --merge export (default: the base's stored dtype)",
    )
    return ap


def _check_out(out: Path) -> None:
    """An existing --out is replaced only when it is an earlier export (it holds llm4rec.json)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "llm4rec.json").is_file())):
        raise UserError(f"--out: {out} exists and is not an llm4rec export; remove it or choose another path")


def _stored_dtype(base: str) -> str:
    """The dtype a base model directory stores its weights in (config.json), float32 when unknown."""
    try:
        cfg = json.loads((Path(base) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "float32"
    name = cfg.get("dtype") or cfg.get("torch_dtype")
    return name if name in DTYPES else "float32"


def _record(info: Any, base: str, checkpoint: Path, **extra: Any) -> dict[str, Any]:
    return {
        "family": info.family,
        "template": info.template,
        "answers": list(info.answers),
        "lang": info.lang,
        "cutoff_len": info.cutoff_len,
        "exported_from": {"adapter": str(checkpoint.resolve()), "base": base},
        **extra,
    }


def export_merged(checkpoint: Path, out: Path, dtype: str | None) -> str:
    """Merge the adapter into its unquantized base and write a plain model directory; the dtype used."""
    from llm4rec.serve.model import base_directory, merged_model, read_info, save_checkpoint_tokenizer

    info = read_info(checkpoint, device="cpu")
    base = base_directory(info)
    dtype = dtype or _stored_dtype(base)
    model = merged_model(info, dtype)
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp))
        save_checkpoint_tokenizer(info, tmp)
        write_json_atomic(tmp / "llm4rec.json", _record(info, base, checkpoint, merged=True, dtype=dtype))
    if type(model).__module__.startswith("llm4rec."):
        print(
            f"note: {type(model).__name__} is llm4rec's own model class ({info.family}): "
            f"loading {out} needs llm4rec installed (import llm4rec first)"
        )
    return dtype


def export_adapter(checkpoint: Path, out: Path) -> None:
    """Write the adapter alone, its config pointing at the absolute path of its base."""
    from llm4rec.serve.model import base_directory, read_info

    info = read_info(checkpoint, device="cpu")
    base = base_directory(info)
    with atomic_dir(out) as tmp:
        for name in ADAPTER_FILES:
            if (checkpoint / name).is_file():
                shutil.copy2(checkpoint / name, tmp / name)
        cfg = json.loads((tmp / "adapter_config.json").read_text(encoding="utf-8"))
        cfg["base_model_name_or_path"] = base
        write_json_atomic(tmp / "adapter_config.json", cfg)
        write_json_atomic(
            tmp / "llm4rec.json", _record(info, base, checkpoint, merged=False, base_model=base)
        )


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``llm4rec export``."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # loading/writing bars are noise around the one result line
    ckpt = args.checkpoint
    if not (ckpt / "adapter_config.json").is_file() or not (ckpt / "recipe.yaml").is_file():
        what = (
            "does not exist"
            if not ckpt.exists()
            else "is not a training output (adapter_config.json + recipe.yaml)"
        )
        raise UserError(f"--checkpoint: {ckpt} {what}; export takes an adapter trained by llm4rec")
    if args.dtype and not args.merge:
        raise UserError("--dtype: applies to --merge only (the adapter alone is copied as trained)")
    _check_out(args.out)
    if args.merge:
        dtype = export_merged(ckpt, args.out, args.dtype)
        print(f"{args.out}: merged model ({dtype}); load with AutoModelForCausalLM.from_pretrained")
    else:
        export_adapter(ckpt, args.out)
        print(f"{args.out}: adapter; its base is the model it names in adapter_config.json")
    return 0
