"""``llm4rec import-gguf``: turn a GGUF file (llama.cpp's format) into a plain Hugging Face model directory.

transformers reads GGUF itself (``from_pretrained(dir, gguf_file=...)``) and dequantizes every tensor, but
refuses to ``save_pretrained`` such a model. This module lets transformers do the reading, so the weights
are exactly the ones its own GGUF loader produces, and writes a clean directory every llm4rec command
takes: ``model.safetensors``, ``config.json`` (without the GGUF quantization entry),
``generation_config.json``, the tokenizer with its chat template, and ``llm4rec.json`` recording the
source file, the prompt template and the answer words to use with it (read back when the model is loaded).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from llm4rec.cli import plain
from llm4rec.errors import UserError, exit_on_user_error
from llm4rec.io import atomic_dir, sha256_file


def supported_architectures() -> dict[str, str]:
    """GGUF ``general.architecture`` -> llm4rec family, from each family's ``gguf_architecture``."""
    from llm4rec.models.registry import list_families

    return {f.gguf_architecture: f.name for f in list_families() if f.gguf_architecture}


#: dtypes the weights may be written in (float32 keeps transformers' dequantized values exactly)
DTYPES = ("float32", "bfloat16", "float16")


def _field(reader: Any, key: str) -> Any:
    """The value of a GGUF metadata field (None when absent)."""
    f = reader.fields.get(key)
    if f is None:
        return None
    return f.contents()


def inspect_gguf(path: Path) -> dict[str, Any]:
    """Read a GGUF file's header and check that llm4rec can import it.

    Returns ``{"architecture", "family", "tensor_types", "chat_template", "name"}``. An unreadable file,
    an unsupported architecture or a tensor type the ``gguf`` package cannot dequantize is a
    :class:`UserError` naming the file (and the tensor).
    """
    try:
        import gguf
    except ModuleNotFoundError:
        raise UserError("import-gguf needs the `gguf` package: pip install gguf") from None
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a GGUF file" to the user
        raise UserError(
            f"{path}: not a readable GGUF file ({str(exc).splitlines()[0] if str(exc) else exc!r})"
        ) from None
    arch = _field(reader, "general.architecture")
    supported = supported_architectures()
    if arch not in supported:
        raise UserError(
            f"{path}: unsupported architecture {arch!r} (general.architecture); "
            f"llm4rec imports: {', '.join(supported)}"
        )
    # Try each tensor type once on its first tensor: a type `gguf` cannot dequantize fails here, in one
    # line, before transformers starts reading the whole file.
    seen: dict[str, str] = {}
    for t in reader.tensors:
        name = t.tensor_type.name
        if name in seen:
            continue
        try:
            gguf.dequantize(t.data, t.tensor_type)
        except NotImplementedError:
            raise UserError(
                f"{path}: tensor {t.name!r} has quantization type {name}, which the installed gguf "
                f"{_gguf_version()} cannot dequantize; re-export the model as F16, Q8_0 or a K-quant"
            ) from None
        seen[name] = t.name
    counts: dict[str, int] = {}
    for t in reader.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return {
        "architecture": arch,
        "family": supported[arch],
        "tensor_types": counts,
        "chat_template": _field(reader, "tokenizer.chat_template"),
        "name": _field(reader, "general.name"),
    }


def _gguf_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gguf")
    except PackageNotFoundError:
        return "(unknown version)"


def default_template(family: str) -> str:
    """The prompt template recorded when ``--template auto``: the family's English default (Alpaca).

    Not the checkpoint's own chat format: on SmolLM2-135M-Instruct, zero-shot on the first 300 real
    ML-100K TALLRec test prompts, Alpaca gives AUC 0.6518 and its ChatML chat format (``chatml_smollm2``)
    0.3742, below chance. ``--template NAME`` records another.
    """
    from llm4rec.models.registry import get_family

    return get_family(family).default_template["en"]


def import_gguf(src: Path, out: Path, *, dtype: str = "float32", template: str = "auto") -> dict[str, Any]:
    """Convert the GGUF file ``src`` into a Hugging Face directory ``out`` (written atomically).

    ``template`` is the prompt template recorded for the model (``auto``: see :func:`default_template`).
    Returns what was written (the ``llm4rec.json`` record).
    """
    import torch
    from safetensors.torch import save_file

    from llm4rec.models.registry import TEMPLATES

    if dtype not in DTYPES:
        raise UserError(f"--dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    if template != "auto" and template not in TEMPLATES:
        raise UserError(f"--template: unknown template {template!r}; known: auto, {', '.join(TEMPLATES)}")
    info = inspect_gguf(src)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        # float32: the dequantized values exactly as transformers' own GGUF loader produces them
        model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{src}: transformers cannot read it ({str(exc).splitlines()[0]})") from None
    config = model.config
    torch_dtype = getattr(torch, dtype)
    state = {k: v.detach().to(torch_dtype).contiguous() for k, v in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        # tied weights share storage, which safetensors refuses; transformers re-ties on load
        state.pop("lm_head.weight", None)
    from llm4rec.models.backbone import answer_words
    from llm4rec.models.registry import get_family

    chosen = TEMPLATES[default_template(info["family"]) if template == "auto" else template]
    record = {
        "family": info["family"],
        "template": chosen.name,
        "answers": list(answer_words(get_family(info["family"]), chosen.lang, chosen)),
        "source": {
            "format": "gguf",
            "file": src.name,
            "sha256": sha256_file(src),
            "architecture": info["architecture"],
            "name": info["name"],
            "tensor_types": info["tensor_types"],
        },
        "dtype": dtype,
    }
    with atomic_dir(out) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "model.safetensors").chmod(0o644)  # readable like the other files, whatever the writer chose
        cfg = config.to_dict()
        for key in ("quantization_config", "_name_or_path", "transformers_version"):
            cfg.pop(key, None)
        cfg["dtype"] = dtype
        cfg["architectures"] = [type(model).__name__]
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        model.generation_config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "llm4rec.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


@exit_on_user_error
def main(argv: list[str]) -> int:
    """Command-line entry: ``llm4rec import-gguf FILE.gguf --out DIR``."""
    ap = argparse.ArgumentParser(prog="llm4rec import-gguf", description=plain(__doc__.split("\n\n")[0]))
    ap.add_argument(
        "file", type=Path, help="a .gguf file (architectures: " + ", ".join(supported_architectures()) + ")"
    )
    ap.add_argument("--out", required=True, type=Path, help="output model directory (written atomically)")
    ap.add_argument(
        "--dtype", default="float32", choices=DTYPES, help="weight dtype written (float32: exact; default)"
    )
    ap.add_argument(
        "--template",
        default="auto",
        help="prompt template recorded for the model (auto: the family's default, alpaca; "
        "chatml_smollm2 is SmolLM2's own chat format)",
    )
    args = ap.parse_args(argv)
    rec = import_gguf(args.file, args.out, dtype=args.dtype, template=args.template)
    types = ", ".join(f"{k} x{v}" for k, v in rec["source"]["tensor_types"].items())
    print(
        f"imported {args.file} ({rec['source']['architecture']}, {types}) -> {args.out} "
        f"[{rec['dtype']}, template {rec['template']}]"
    )
    return 0
