"""Load tokenizers, (4-bit) base models and LoRA adapters from local directories.

Everything backbone-specific comes from the registry entry; this module only applies it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llm4rec.errors import UserError
from llm4rec.models.registry import (
    BackboneFamily,
    detect_family,
    get_family,
    list_families,
    read_model_config,
)
from llm4rec.models.templates import ANSWERS, TEMPLATES, PromptTemplate

# peft reads transformers' renamed `is_gradient_checkpointing` attribute; the notice is for peft, not users
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_compute_dtype(name: str, device: torch.device | str | None = None) -> torch.dtype:
    """Map a recipe's ``compute_dtype`` to a torch dtype (``auto``: bf16/fp16 on CUDA, fp32 on CPU)."""
    device = torch.device(device) if device is not None else default_device()
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def resolve_family(model_path: str, family: str = "auto") -> BackboneFamily:
    """Return the family of ``model_path``: the recipe's when given (checked against config.json), else detected."""
    detected = detect_family(model_path) if Path(model_path).is_dir() else None
    if family == "auto":
        if detected is None:
            known = ", ".join(f.name for f in list_families())
            raise UserError(
                f"model.family: cannot detect the family of {model_path!r} from its config.json; "
                f"set model.family explicitly (one of: {known})"
            )
        return get_family(detected)
    fam = get_family(family)
    cfg = read_model_config(model_path) if Path(model_path).is_dir() else None
    if cfg is not None and detected is not None and not fam.matches(cfg):
        raise UserError(
            f"model.family: recipe says {family!r} but {model_path}/config.json is a {detected!r} checkpoint"
        )
    return fam


def recorded_template(model_path: str | Path | None) -> str | None:
    """The template a model directory records in its ``llm4rec.json`` (written by ``llm4rec import-gguf``
    and by training), or None."""
    if model_path is None:
        return None
    rec = Path(model_path) / "llm4rec.json"
    if not rec.is_file():
        return None
    try:
        name = json.loads(rec.read_text(encoding="utf-8")).get("template")
    except json.JSONDecodeError as exc:
        raise UserError(f"{rec}: not valid JSON ({exc.msg})") from None
    return name if isinstance(name, str) else None


def resolve_template(
    family: BackboneFamily, name: str, lang: str, model_path: str | Path | None = None
) -> PromptTemplate:
    """The recipe's template; for ``auto``, the one ``model_path`` records for ``lang`` (see
    :func:`recorded_template`), else the family default for ``lang``."""
    if name == "auto":
        rec = recorded_template(model_path)
        if rec in TEMPLATES and TEMPLATES[rec].lang == lang:
            name = rec
        else:
            name = family.default_template.get(lang) or family.default_template["en"]
    if name not in TEMPLATES:
        import difflib

        close = difflib.get_close_matches(name, TEMPLATES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"model.template: unknown template {name!r}{hint}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def answer_words(
    family: BackboneFamily, lang: str, template: PromptTemplate | None = None
) -> tuple[str, str]:
    """(positive, negative) answer texts as they follow the prompt: the family's words in ``lang``,
    preceded by the template's answer prefix."""
    pos, neg = family.answers.get(lang) or ANSWERS[lang]
    prefix = template.answer_prefix if template is not None else ""
    return prefix + pos, prefix + neg


def load_tokenizer(path: str | Path, family: BackboneFamily) -> Any:
    """Load a tokenizer and give it a pad token following the family's rule (never silently EOS for LLaMA)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
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
    path: str | Path,
    family: BackboneFamily,
    *,
    load_in_4bit: bool = True,
    quant_type: str = "nf4",
    double_quant: bool = True,
    compute_dtype: str = "auto",
    attn_implementation: str = "auto",
    device: torch.device | str | None = None,
) -> Any:
    """Load the frozen base model, 4-bit quantized by bitsandbytes when asked (works on CPU too)."""
    import transformers

    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(
            f"model.path: {path} is not a model directory (no config.json); llm4rec loads local "
            "directories only — download the weights first, or build one with `llm4rec tiny-model`"
        )
    device = torch.device(device) if device is not None else default_device()
    dtype = resolve_compute_dtype(compute_dtype, device)
    auto_cls = getattr(transformers, family.auto_class)
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "device_map": {"": device.index or 0} if device.type == "cuda" else "cpu",
    }
    q = quantization_config(load_in_4bit, quant_type, double_quant, dtype)
    if q is not None:
        kwargs["quantization_config"] = q
    kwargs["attn_implementation"] = "sdpa" if attn_implementation == "auto" else attn_implementation
    try:
        model = auto_cls.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot load the model ({str(exc).splitlines()[0]})") from None
    return model


@dataclass
class ScoringBundle:
    """Everything needed to score samples: model, tokenizer, template and the answer words."""

    model: Any
    tokenizer: Any
    family: BackboneFamily
    template: PromptTemplate
    answers: tuple[str, str]
    source: str


def load_checkpoint(
    checkpoint: str | Path, *, device: torch.device | str | None = None, load_in_4bit: bool | None = None
) -> ScoringBundle:
    """Load a training output directory (adapter + recipe + tokenizer) or a bare base-model directory.

    For an adapter directory the base model, quantization, family, template and language come from the
    saved ``recipe.yaml``; the tokenizer is the one saved beside the adapter.
    """
    from llm4rec.config import recipe_from_dict

    ckpt = Path(checkpoint)
    if not ckpt.is_dir():
        raise UserError(f"{ckpt}: checkpoint directory not found")
    adapter_cfg = ckpt / "adapter_config.json"
    if adapter_cfg.is_file():
        import yaml

        recipe_path = ckpt / "recipe.yaml"
        if not recipe_path.is_file():
            raise UserError(f"{ckpt}: adapter without recipe.yaml; was it written by llm4rec's train.py?")
        if not any(
            (ckpt / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
        ):
            raise UserError(f"{ckpt}: no tokenizer saved beside the adapter")
        recipe = recipe_from_dict(yaml.safe_load(recipe_path.read_text(encoding="utf-8")))
        m = recipe.model
        family = (
            get_family(json.loads((ckpt / "llm4rec.json").read_text())["family"])
            if (ckpt / "llm4rec.json").is_file()
            else resolve_family(m.path, m.family)
        )
        base_path = resolve_model_path(m.path, family)
        model = load_base_model(
            base_path,
            family,
            load_in_4bit=m.load_in_4bit if load_in_4bit is None else load_in_4bit,
            quant_type=m.quant_type,
            double_quant=m.double_quant,
            compute_dtype=m.compute_dtype,
            attn_implementation=m.attn_implementation,
            device=device,
        )
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(ckpt), is_trainable=False)
        tokenizer = load_tokenizer(ckpt, family)
        template = resolve_template(family, m.template, m.lang, base_path)
        answers = answer_words(family, m.lang, template)
    elif (ckpt / "config.json").is_file():
        family = resolve_family(str(ckpt))
        model = load_base_model(ckpt, family, load_in_4bit=bool(load_in_4bit), device=device)
        tokenizer = load_tokenizer(ckpt, family)
        template = resolve_template(family, "auto", "en", ckpt)
        answers = answer_words(family, "en", template)
    else:
        raise UserError(f"{ckpt}: neither an adapter (adapter_config.json) nor a model (config.json)")
    model.eval()
    return ScoringBundle(model, tokenizer, family, template, answers, str(ckpt))


def resolve_model_path(path: str, family: BackboneFamily) -> str:
    """The directory transformers should load: ``path`` itself, or its cached conversion for legacy families."""
    if family.converter is None or not Path(path).is_dir():
        return path
    cfg = Path(path) / "config.json"
    if cfg.is_file() and json.loads(cfg.read_text(encoding="utf-8")).get("llm4rec_family"):
        return path  # already converted
    from llm4rec.models.convert import convert_cached

    return str(convert_cached(family, Path(path)))
