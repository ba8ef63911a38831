"""Load tokenizers and (4-bit) base models as a resolved :class:`~llm4rec.models.backbone.Backbone` says.

Everything backbone-specific comes from the registry entry and every choice from the backbone's
resolution; this module only applies them.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from llm4rec.errors import UserError
from llm4rec.models.registry import BackboneFamily, list_families, read_model_config
from llm4rec.safetensors_check import check_model_dir

# peft reads transformers' renamed `is_gradient_checkpointing` attribute; the notice is for peft, not users
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def read_tokenizer(path: str | Path, family: BackboneFamily) -> Any:
    """The tokenizer of a directory as the family reads it (its ``tokenizer_loader``, else ``AutoTokenizer``),
    without :func:`load_tokenizer`'s pad token."""
    from transformers import AutoTokenizer

    if family.tokenizer_loader is not None:
        return family.tokenizer_loader(Path(path))
    return AutoTokenizer.from_pretrained(str(path))


def save_tokenizer(tokenizer: Any, out: str | Path) -> None:
    """``save_pretrained`` plus the original sentencepiece ``tokenizer.model`` the tokenizer was read from.

    transformers 5 writes ``tokenizer.json`` alone, and a family's ``tokenizer_loader`` may rebuild the
    tokenizer from the original file rather than trust ``tokenizer.json`` (LLaMA's does): kept beside it,
    the saved directory (a training output) reloads with the ids the tokenizer had when it was saved.
    """
    tokenizer.save_pretrained(str(out))
    vocab_file = getattr(tokenizer, "vocab_file", None)
    if vocab_file and Path(vocab_file).name == "tokenizer.model" and Path(vocab_file).is_file():
        tokenizer.save_vocabulary(str(out))


def load_tokenizer(path: str | Path, family: BackboneFamily) -> Any:
    """Load a tokenizer (:func:`read_tokenizer`) and give it a pad token following the family's rule (never
    silently EOS for LLaMA)."""
    try:
        tok = read_tokenizer(path, family)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot load a tokenizer ({str(exc).splitlines()[0]})") from None
    if tok.pad_token is None:
        vocab = tok.get_vocab()
        for cand in family.pad_token_candidates:
            if cand in vocab:
                tok.pad_token = cand
                break
        else:
            raise UserError(
                f"{path}: tokenizer has no pad token and none of {family.pad_token_candidates} exists in its vocabulary"
            )
    return tok


def quantization_config(load_in_4bit: bool, quant_type: str, double_quant: bool, dtype: torch.dtype) -> Any:
    """transformers' BitsAndBytesConfig for QLoRA (None when not quantizing)."""
    if not load_in_4bit:
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_quant_storage=torch.uint8,
    )


def load_base_model(
    path: str | Path | Any,
    family: BackboneFamily | None = None,
    *,
    load_in_4bit: bool = True,
    quant_type: str = "nf4",
    double_quant: bool = True,
    compute_dtype: str | torch.dtype = "auto",
    attn_implementation: str = "auto",
    device: torch.device | str | None = None,
) -> Any:
    """Load the frozen base model, 4-bit quantized by bitsandbytes when asked (works on CPU too).

    ``path`` is a resolved :class:`~llm4rec.models.backbone.Backbone` (its weights, family and load
    options are used and the keyword options ignored), or a model directory with its family and options
    (``auto`` settled by the same rules as the backbone's).
    """
    import transformers

    from llm4rec.models.backbone import attention_name, compute_dtype_name, default_device, device_capability

    device = torch.device(device) if device is not None else default_device()
    if hasattr(path, "weights"):
        bb = path
        path, family = bb.weights, bb.family
        load_in_4bit, quant_type, double_quant = bb.load_in_4bit, bb.quant_type, bb.double_quant
        dtype, attn = bb.compute_dtype, bb.attn_implementation
    else:
        if isinstance(compute_dtype, torch.dtype):
            dtype = compute_dtype
        else:
            dtype = getattr(torch, compute_dtype_name(compute_dtype, device.type, device_capability(device)))
        attn = attention_name(attn_implementation)
    auto_cls = getattr(transformers, family.auto_class)
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "device_map": {"": device.index or 0} if device.type == "cuda" else "cpu",
        "attn_implementation": attn,
    }
    q = quantization_config(load_in_4bit, quant_type, double_quant, dtype)
    if q is not None:
        kwargs["quantization_config"] = q
    check_model_dir(path)  # a truncated weight file is one line naming it, not safetensors' traceback
    try:
        model = auto_cls.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot load the model ({str(exc).splitlines()[0]})") from None
    if q is not None and device.type == "cpu":
        keep_cpu_4bit_trainable(model)
    return model


def keep_cpu_4bit_trainable(model: Any) -> int:
    """Switch off bitsandbytes' packed CPU inference layout on every 4-bit layer; return how many.

    On CPUs with AVX512-BF16, bitsandbytes (0.50) repacks a 4-bit weight the first time the layer runs in
    eval mode without gradients, and keeps it packed. The packed kernel has no backward: every training step
    after the first validation then silently gets no LoRA gradients, and the repacking also asserts on
    widths that are not multiples of 32/64. With it off, validation, evaluation and training share one
    4-bit layout on every CPU and every width runs.
    """
    import bitsandbytes as bnb

    n = 0
    for mod in model.modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            mod.support_avx512bf16_for_cpu = False
            n += 1
    return n


def load_backbone_tokenizer(path: str | Path, family: str = "auto") -> tuple[Any, BackboneFamily]:
    """The tokenizer of a backbone directory (a model, a converted model, or an original legacy release
    whose tokenizer is converted on the fly into a temporary directory, as ``llm4rec convert`` converts it),
    and its family. No weights are read. ``family`` is needed where the directory has no config.json."""
    import tempfile

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: tokenizer directory not found")
    from llm4rec.models.backbone import resolve_family
    from llm4rec.models.registry import family_of_config

    cfg = read_model_config(path) or {}
    if family == "auto" and (not cfg or family_of_config(cfg) is None):
        known = ", ".join(f.name for f in list_families())
        raise UserError(
            f"{path}: cannot detect the backbone family (no usable config.json); give it ({known})"
        )
    fam = resolve_family(str(path), family, cfg or None)
    if fam.converter is None or cfg.get("llm4rec_family"):
        return load_tokenizer(path, fam), fam
    if fam.write_tokenizer is None:
        raise UserError(f"{path}: no tokenizer conversion for family {fam.name!r}; convert the model first")
    tmp = Path(tempfile.mkdtemp(prefix="llm4rec-tok-"))
    try:
        fam.write_tokenizer(path, tmp, cfg)
        return load_tokenizer(tmp, fam), fam
    except FileNotFoundError as exc:
        raise UserError(f"{path}: not a {fam.name} release ({exc.filename} missing)") from None
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
