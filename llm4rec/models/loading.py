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
from llm4rec.io import read_json_object
from llm4rec.models.paths import require_model_dir
from llm4rec.models.registry import (
    TEMPLATES,
    BackboneFamily,
    detect_family,
    get_family,
    list_families,
    read_model_config,
)
from llm4rec.models.templates import ANSWERS, PromptTemplate
from llm4rec.safetensors_check import check_adapter_dir, check_model_dir

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


def read_record(model_dir: str | Path | None) -> dict[str, Any]:
    """The ``llm4rec.json`` of a model or adapter directory (written by training and by ``llm4rec
    import-gguf``), checked: ``family`` a registered family, ``template`` a known template and ``answers``
    two answer texts, each when present. ``{}`` when the directory has none."""
    if model_dir is None:
        return {}
    path = Path(model_dir) / "llm4rec.json"
    if not path.is_file():
        return {}
    rec = read_json_object(path)
    if "family" in rec:
        try:
            get_family(str(rec["family"]))
        except UserError as exc:
            raise UserError(f"{path}: family: {str(exc).split(': ', 1)[1]}") from None
    if "template" in rec and rec["template"] not in TEMPLATES:
        raise UserError(
            f"{path}: template: unknown template {rec['template']!r}; known: {', '.join(TEMPLATES)}"
        )
    answers = rec.get("answers")
    if answers is not None and not (
        isinstance(answers, list) and len(answers) == 2 and all(isinstance(a, str) and a for a in answers)
    ):
        raise UserError(
            f"{path}: answers: expected two non-empty strings (positive, negative), got {answers!r}"
        )
    return rec


def recorded_template(model_path: str | Path | None) -> str | None:
    """The template a model directory records in its ``llm4rec.json`` (see :func:`read_record`), or None."""
    return read_record(model_path).get("template")


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

    path = require_model_dir(path)
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


@dataclass
class PromptSettings:
    """How a checkpoint turns samples into prompts, parsed once from its recipe (or from the flags for a
    bare model): tokenizer, family, template, answers, cutoff and language. No weights are loaded."""

    tokenizer: Any
    family: BackboneFamily
    template: PromptTemplate
    answers: tuple[str, str]
    cutoff_len: int
    lang: str
    #: the typed recipe of a training output (None for a bare model directory)
    recipe: Any | None
    #: the directory the base weights load from
    model_path: str


def load_prompt_settings(
    checkpoint: str | Path, *, cutoff_len: int = 0, lang: str | None = None
) -> PromptSettings:
    """Prompt settings of a training output directory (adapter + ``recipe.yaml`` + tokenizer) or of a bare
    base-model directory.

    A training output takes its cutoff and language from the typed recipe (``cutoff_len`` > 0 overrides
    the cutoff; a ``lang`` other than the recipe's is an error). A bare model takes ``cutoff_len``
    (default: the recipe default, :class:`llm4rec.config.DataConfig`) and ``lang`` (default: the language
    of the template its ``llm4rec.json`` records, else en). Family, template and answers recorded in the
    directory's ``llm4rec.json`` are used as recorded.
    """
    ckpt = Path(checkpoint)
    if not ckpt.is_dir():
        what = "is a file, not a directory" if ckpt.exists() else "does not exist"
        raise UserError(
            f"--checkpoint: {ckpt} {what} (checkpoint directory not found; expected an adapter or model directory)"
        )
    if (ckpt / "adapter_config.json").is_file() or (ckpt / "recipe.yaml").is_file():
        return _adapter_settings(ckpt, cutoff_len, lang)
    if (ckpt / "config.json").is_file():
        return _bare_model_settings(ckpt, cutoff_len, lang)
    raise UserError(f"{ckpt}: neither an adapter (adapter_config.json) nor a model (config.json)")


def _read_saved_recipe(ckpt: Path) -> Any:
    """The typed ``recipe.yaml`` saved beside an adapter (checked to have a tokenizer beside it too)."""
    import yaml

    from llm4rec.config import recipe_from_dict

    recipe_path = ckpt / "recipe.yaml"
    if not recipe_path.is_file():
        raise UserError(f"{ckpt}: adapter without recipe.yaml; was it written by llm4rec's train.py?")
    if not any((ckpt / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        raise UserError(f"{ckpt}: no tokenizer saved beside the adapter")
    try:
        raw = yaml.safe_load(recipe_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{recipe_path}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    try:
        return recipe_from_dict(raw if isinstance(raw, dict) else {})
    except UserError as exc:
        raise UserError(f"{recipe_path}: {exc}") from None


def _adapter_settings(ckpt: Path, cutoff_len: int, lang: str | None) -> PromptSettings:
    recipe = _read_saved_recipe(ckpt)
    m = recipe.model
    if lang and lang != m.lang:
        raise UserError(f"--lang: {ckpt} was trained with model.lang {m.lang!r}, not {lang!r}")
    # what training recorded beside the adapter wins over re-deriving it from the recipe
    rec = read_record(ckpt)
    family = get_family(rec["family"]) if "family" in rec else resolve_family(m.path, m.family)
    tokenizer = load_tokenizer(ckpt, family)
    if "template" in rec:
        template = TEMPLATES[rec["template"]]
    else:
        template = resolve_template(family, m.template, m.lang, m.path)
    answers = tuple(rec["answers"]) if "answers" in rec else answer_words(family, m.lang, template)
    cutoff = cutoff_len or recipe.data.cutoff_len
    return PromptSettings(tokenizer, family, template, answers, cutoff, m.lang, recipe, m.path)


def _bare_model_settings(ckpt: Path, cutoff_len: int, lang: str | None) -> PromptSettings:
    from llm4rec.config import DataConfig

    family = resolve_family(str(ckpt))
    rec = read_record(ckpt)
    # --lang, else the language of the template llm4rec.json records, else English
    lang = lang or (TEMPLATES[rec["template"]].lang if "template" in rec else "en")
    if lang not in ANSWERS:
        raise UserError(f"--lang: unknown language {lang!r}; choose one of {', '.join(ANSWERS)}")
    tokenizer = load_tokenizer(ckpt, family)
    template = resolve_template(family, "auto", lang, ckpt)
    # recorded answers belong to the recorded template: they apply when that template is used
    if "answers" in rec and rec.get("template") == template.name:
        answers = tuple(rec["answers"])
    else:
        answers = answer_words(family, lang, template)
    cutoff = cutoff_len or DataConfig().cutoff_len
    return PromptSettings(tokenizer, family, template, answers, cutoff, lang, None, str(ckpt))


@dataclass
class ScoringBundle:
    """Everything needed to score samples: model, tokenizer, template, answer words and the cutoff."""

    model: Any
    tokenizer: Any
    family: BackboneFamily
    template: PromptTemplate
    answers: tuple[str, str]
    source: str
    cutoff_len: int = 512
    lang: str = "en"


def load_checkpoint(
    checkpoint: str | Path,
    *,
    device: torch.device | str | None = None,
    load_in_4bit: bool | None = None,
    cutoff_len: int = 0,
    lang: str | None = None,
) -> ScoringBundle:
    """Load a training output directory (adapter + recipe + tokenizer) or a bare base-model directory.

    The prompt settings come from :func:`load_prompt_settings` (for an adapter directory the base model,
    quantization, family, template, language and cutoff come from the saved ``recipe.yaml``; the tokenizer
    is the one saved beside the adapter).
    """
    ckpt = Path(checkpoint)
    ps = load_prompt_settings(ckpt, cutoff_len=cutoff_len, lang=lang)
    if ps.recipe is not None:
        if not (ckpt / "adapter_config.json").is_file():
            raise UserError(f"{ckpt}: training output without an adapter yet (no adapter_config.json)")
        m = ps.recipe.model
        try:
            require_model_dir(m.path, f"{ckpt / 'recipe.yaml'}: model.path")
        except UserError as exc:
            raise UserError(f"{exc} (the adapter's base model)") from None
        base_path = resolve_model_path(m.path, ps.family)
        model = load_base_model(
            base_path,
            ps.family,
            load_in_4bit=m.load_in_4bit if load_in_4bit is None else load_in_4bit,
            quant_type=m.quant_type,
            double_quant=m.double_quant,
            compute_dtype=m.compute_dtype,
            attn_implementation=m.attn_implementation,
            device=device,
        )
        from peft import PeftModel

        check_adapter_dir(ckpt, model, base_path)
        model = PeftModel.from_pretrained(model, str(ckpt), is_trainable=False)
    else:
        model = load_base_model(ckpt, ps.family, load_in_4bit=bool(load_in_4bit), device=device)
    model.eval()
    return ScoringBundle(
        model, ps.tokenizer, ps.family, ps.template, ps.answers, str(ckpt), ps.cutoff_len, ps.lang
    )


def resolve_model_path(path: str, family: BackboneFamily) -> str:
    """The directory transformers should load: ``path`` itself, or its cached conversion for legacy families."""
    if family.converter is None or not Path(path).is_dir():
        return path
    cfg = Path(path) / "config.json"
    if cfg.is_file() and json.loads(cfg.read_text(encoding="utf-8")).get("llm4rec_family"):
        return path  # already converted
    from llm4rec.models.convert import convert_cached

    return str(convert_cached(family, Path(path)))


def load_backbone_tokenizer(path: str | Path, family: str = "auto") -> tuple[Any, BackboneFamily]:
    """The tokenizer of a backbone directory (a model, a converted model, or an original legacy release
    whose tokenizer is converted on the fly into a temporary directory, as ``llm4rec convert`` converts it),
    and its family. No weights are read. ``family`` is needed where the directory has no config.json."""
    import tempfile

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: tokenizer directory not found")
    if family == "auto" and detect_family(path) is None:
        known = ", ".join(f.name for f in list_families())
        raise UserError(
            f"{path}: cannot detect the backbone family (no usable config.json); give it ({known})"
        )
    fam = resolve_family(str(path), family)
    cfg = read_model_config(path) or {}
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
