"""Typed recipes: the YAML sections as dataclasses, validated when loaded.

Every field carries a one-line doc (``doc(...)``). :func:`load_recipe` rejects unknown keys (naming the
closest valid one), wrong types and impossible values with a :class:`~llm4rec.errors.UserError` naming
the key. Command-line overrides ``section.key=value`` go through the same path.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from llm4rec.errors import UserError, quote


def doc(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with a one-line description (shown by ``llm4rec recipe-doc``)."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


@dataclass
class ModelConfig:
    """The backbone and how it is loaded."""

    path: str = doc("local directory of the base model (or a hub id; llm4rec never downloads by itself)", "")
    family: str = doc("backbone family from the registry, or 'auto' to read it from config.json", "auto")
    arch: str = doc(
        "packaged architecture for `llm4rec plan` when model.path is not local (e.g. llama-7b)", ""
    )
    template: str = doc("prompt template name, or 'auto' for the family's default for `lang`", "auto")
    lang: Literal["en", "zh"] = doc("prompt and answer language: en (Yes./No.) or zh (是/否)", "en")
    load_in_4bit: bool = doc("quantize the frozen base to 4-bit with bitsandbytes (QLoRA)", True)
    quant_type: Literal["nf4", "fp4"] = doc("4-bit data type; NF4 is QLoRA's and the better one", "nf4")
    double_quant: bool = doc("also quantize the quantization constants (saves ~0.4 GB on a 7B model)", True)
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = doc(
        "dtype of matmuls and LoRA weights; auto = bfloat16 on CUDA (float16 pre-Ampere), float32 on CPU",
        "auto",
    )
    gradient_checkpointing: bool | Literal["auto"] = doc(
        "recompute activations in backward: much less memory, ~30% slower; auto = off where the memory "
        "plan fits (see train.micro_batch_size)",
        True,
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = doc(
        "attention kernel; auto = sdpa", "auto"
    )


@dataclass
class LoraConfig:
    """The LoRA adapter."""

    r: int = doc("LoRA rank (TALLRec: 8)", 8)
    alpha: int = doc("LoRA scaling numerator; the update is scaled by alpha/r (TALLRec: 16)", 16)
    dropout: float = doc("dropout on the LoRA input (TALLRec: 0.05)", 0.05)
    targets: str | list[str] = doc(
        "modules to adapt: a set of the family ('qv' as TALLRec, 'all' linear layers) or a list of names",
        "qv",
    )


@dataclass
class DataConfig:
    """Training and validation samples."""

    train: str = doc("train JSONL written by data_prep (instruction / input / output / label)", "")
    valid: str = doc("validation JSONL used for AUC, early stopping and best-adapter selection", "")
    cutoff_len: int = doc(
        "maximum tokens per sample (prompt + answer); longer samples lose whole history items, oldest "
        "first, never the preamble, instruction, question, candidates or answer",
        512,
    )
    skip_overlong: bool = doc(
        "skip (and count) samples too long even with no history; false = such a sample is an error", False
    )
    train_on_inputs: bool = doc("also take the loss on prompt tokens (TALLRec default: false)", False)
    max_valid_samples: int = doc("score at most this many validation samples per evaluation (0 = all)", 0)
    group_by_length: bool = doc("batch samples of similar length together (less padding, faster)", True)
    packing: bool | Literal["auto"] = doc(
        "concatenate a micro-batch's samples into one row, positions restarting per sample (no padding); "
        "auto = where the family supports it (llama, qwen2) and attention is flash_attention_2 (sdpa/eager "
        "would compute a row x row mask), else padded length-grouped batches",
        "auto",
    )


@dataclass
class TrainConfig:
    """The optimisation loop."""

    output_dir: str = doc("where the adapter, checkpoints, metrics and resolved recipe are written", "")
    epochs: float = doc("passes over the training set (TALLRec: up to 200 with early stopping)", 3.0)
    max_steps: int = doc("stop after this many optimizer steps (0 = no limit)", 0)
    micro_batch_size: int | Literal["auto"] = doc(
        "samples per forward pass; lower it first if memory runs out. auto = the fastest micro-batch (and "
        "checkpointing, if auto too) whose memory plan fits the card's free memory (on CPU: half the free "
        "RAM, at most 8, checkpointing off); the choice is printed and gradient accumulation keeps batch_size",
        4,
    )
    auto_memory_gb: float = doc(
        "memory the auto settings plan for, GiB (0 = the card's free memory; on CPU half the free RAM)", 0.0
    )
    batch_size: int = doc("effective batch per optimizer step (gradient accumulation fills it)", 128)
    learning_rate: float = doc("peak learning rate (TALLRec: 1e-4)", 1e-4)
    warmup_steps: int = doc("linear warm-up steps", 20)
    lr_scheduler: Literal["linear", "cosine", "constant"] = doc("learning-rate decay after warm-up", "linear")
    weight_decay: float = doc("AdamW weight decay on LoRA weights", 0.0)
    max_grad_norm: float = doc("gradient clipping norm (0 = off)", 1.0)
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw_8bit"] = doc(
        "adamw = torch AdamW (fp32 states); 8-bit variants need bitsandbytes on CUDA", "adamw"
    )
    bf16_autocast: bool = doc(
        "run the training forward under bf16 autocast (LoRA, attention and the head in bfloat16, as TALLRec's "
        "Trainer with bf16=True); false keeps peft's fp32 residual stream, which the memory plan is "
        "calibrated on",
        False,
    )
    eval_every: int = doc("validate (AUC) every this many optimizer steps (0 = once per epoch)", 0)
    early_stopping_patience: int = doc("stop after this many validations without AUC gain (0 = off)", 5)
    save_every: int = doc(
        "write a resumable checkpoint every this many optimizer steps (0 = at validation)", 0
    )
    resume: str = doc(
        "'auto' resumes from OUTPUT/checkpoint-last if present, 'never', or a checkpoint dir", "auto"
    )
    seed: int = doc("seed for data order, LoRA init and dropout", 42)


@dataclass
class EvalConfig:
    """Scoring during validation and `llm4rec evaluate`."""

    batch_size: int = doc("prompts per scoring forward pass", 16)


@dataclass
class WandbConfig:
    """Weights & Biases logging (never required)."""

    mode: Literal["online", "offline", "disabled"] = doc(
        "disabled by default; offline writes ./wandb", "disabled"
    )
    project: str = doc("wandb project name", "llm4rec")
    name: str = doc("run name ('' = output directory name)", "")


@dataclass
class LoggingConfig:
    """Progress and metric logging."""

    log_every: int = doc("write train loss to metrics.jsonl every this many optimizer steps", 1)
    progress_bar: bool = doc("show a tqdm progress bar", True)
    wandb: WandbConfig = doc("Weights & Biases settings", factory=WandbConfig)


@dataclass
class Recipe:
    """A training recipe: one YAML file, one section per dataclass."""

    model: ModelConfig = doc("the backbone and how it is loaded", factory=ModelConfig)
    lora: LoraConfig = doc("the LoRA adapter", factory=LoraConfig)
    data: DataConfig = doc("training and validation samples", factory=DataConfig)
    train: TrainConfig = doc("the optimisation loop", factory=TrainConfig)
    eval: EvalConfig = doc("scoring settings", factory=EvalConfig)
    logging: LoggingConfig = doc("progress and metric logging", factory=LoggingConfig)

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data (saved beside the adapter)."""
        return dataclasses.asdict(self)


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else f" (valid keys: {', '.join(valid)})"


_SCALAR_NAMES = {int: "an integer", bool: "true or false", float: "a number", str: "a string"}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise a UserError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise UserError(f"{key}: {quote(value)} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except UserError as exc:
                errors.append(str(exc))
        args = typing.get_args(tp)
        if all(a in _SCALAR_NAMES or typing.get_origin(a) is Literal for a in args):
            wanted = [
                _SCALAR_NAMES[a] if a in _SCALAR_NAMES else " or ".join(map(repr, typing.get_args(a)))
                for a in args
            ]
            raise UserError(f"{key}: expected {' or '.join(wanted)}, got {quote(value)}")
        raise UserError(errors[-1])
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise UserError(f"{key}: expected a list, got {type(value).__name__} {quote(value)}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{key}: expected true or false, got {quote(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UserError(f"{key}: expected an integer, got {quote(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads `3e-3` and `1e4` (no dot) as strings; Python's float() spelling is accepted
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                if math.isfinite(number):
                    return number
                raise UserError(f"{key}: expected a finite number, got {quote(value)}")
        raise UserError(f"{key}: expected a number, got {quote(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{key}: expected a string, got {quote(value)}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys by name."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{prefix or 'recipe'}: expected a mapping of keys, got {quote(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise UserError(f"unknown recipe key {quote(full)}{_suggest(str(key)[:100], names)}")
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def _check(cond: bool, key: str, why: str) -> None:
    if not cond:
        raise UserError(f"{key}: {why}")


def validate(recipe: Recipe) -> Recipe:
    """Reject impossible values, naming the key. Returns the recipe for chaining."""
    m, lo, d, t = recipe.model, recipe.lora, recipe.data, recipe.train
    _check(bool(m.path), "model.path", "is required (a local model directory)")
    _check(lo.r > 0, "lora.r", f"must be positive, got {lo.r}")
    _check(lo.alpha > 0, "lora.alpha", f"must be positive, got {lo.alpha}")
    _check(0.0 <= lo.dropout < 1.0, "lora.dropout", f"must be in [0, 1), got {lo.dropout}")
    _check(not isinstance(lo.targets, list) or len(lo.targets) > 0, "lora.targets", "must not be empty")
    _check(bool(d.train), "data.train", "is required (a JSONL file from data_prep)")
    _check(d.cutoff_len >= 16, "data.cutoff_len", f"must be at least 16 tokens, got {d.cutoff_len}")
    _check(d.max_valid_samples >= 0, "data.max_valid_samples", "must be >= 0")
    _check(bool(t.output_dir), "train.output_dir", "is required")
    _check(t.epochs > 0, "train.epochs", f"must be positive, got {t.epochs}")
    _check(t.max_steps >= 0, "train.max_steps", "must be >= 0")
    auto_mb = t.micro_batch_size == "auto"
    _check(
        auto_mb or t.micro_batch_size > 0,
        "train.micro_batch_size",
        f"must be positive, got {t.micro_batch_size}",
    )
    _check(t.batch_size > 0, "train.batch_size", f"must be positive, got {t.batch_size}")
    _check(
        auto_mb or t.batch_size % t.micro_batch_size == 0,
        "train.batch_size",
        f"must be a multiple of train.micro_batch_size ({t.batch_size} % {t.micro_batch_size} != 0)",
    )
    _check(t.auto_memory_gb >= 0, "train.auto_memory_gb", "must be >= 0")
    _check(t.learning_rate > 0, "train.learning_rate", f"must be positive, got {t.learning_rate}")
    for key in ("warmup_steps", "eval_every", "early_stopping_patience", "save_every"):
        _check(getattr(t, key) >= 0, f"train.{key}", "must be >= 0")
    _check(t.weight_decay >= 0, "train.weight_decay", "must be >= 0")
    _check(t.max_grad_norm >= 0, "train.max_grad_norm", "must be >= 0")
    _check(recipe.eval.batch_size > 0, "eval.batch_size", "must be positive")
    _check(recipe.logging.log_every > 0, "logging.log_every", "must be positive")
    return recipe


def check_paths(recipe: Recipe) -> Recipe:
    """Check the recipe's inputs exist (model directory, sample files), cheaply, before anything heavy loads.

    Run first in every process, so that a typo is one line at start-up rather than after imports.
    """
    from llm4rec.models.paths import require_model_dir

    require_model_dir(recipe.model.path)
    for key in ("train", "valid"):
        value = getattr(recipe.data, key)
        if value and not Path(value).is_file():
            what = "is a directory, not a file" if Path(value).is_dir() else "does not exist"
            raise UserError(f"data.{key}: {value} {what} (make it with data_prep/<source>.py --out DIR)")
    return recipe


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise UserError(f"override {quote(text)}: expected key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides to raw recipe data (values parsed as YAML scalars)."""
    for text in overrides:
        parts, value = _parse_override(text)
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load, override and validate a recipe YAML. Relative paths in it stay relative to the CWD."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise UserError(
            f"{path}: a recipe is a mapping of sections (model:, lora:, data:, train:, ...), "
            f"got a YAML {type(data).__name__}"
        )
    try:
        return validate(_build(Recipe, apply_overrides(data, overrides or []), ""))
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Build and validate a recipe from plain data (e.g. a saved ``recipe.yaml``)."""
    return validate(_build(Recipe, data, ""))


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the resolved recipe as YAML (atomically)."""
    from llm4rec.io import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True))


def describe(cls: type = Recipe, prefix: str = "") -> list[tuple[str, str, Any]]:
    """List (key, doc, default) for every leaf field, for documentation and `llm4rec recipe-doc`."""
    rows = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        hints = typing.get_type_hints(cls)
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(describe(hints[f.name], key))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((key, f.metadata.get("doc", ""), default))
    return rows


def main(argv: list[str]) -> int:
    """``llm4rec recipe-doc``: print every recipe key, its default and its one-line doc."""
    if argv and argv[0] in ("-h", "--help"):
        print("usage: llm4rec recipe-doc\n\nLists every recipe key with its default and meaning.")
        return 0
    rows = describe()
    width = max(len(k) for k, _, _ in rows)
    for key, text, default in rows:
        print(f"{key:<{width}}  {default!r:<12}  {text}")
    return 0
