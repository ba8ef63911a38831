"""The backbone registry: everything that differs between model families lives here, and only here.

A :class:`BackboneFamily` says how to load a family, which modules LoRA adapts, which prompt templates
and answer words it uses, how it pads, and how to build a tiny random model of the same architecture.
Adding a family means adding one entry with :func:`register_family` (the legacy families are the
``FAMILIES`` of the modules in :mod:`llm4rec.models.legacy`, which :func:`list_families` imports); no other
module branches on the family name.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm4rec.errors import UserError


def hub_online() -> bool:
    """True when the user explicitly allowed the model hub (``HF_HUB_OFFLINE=0``); llm4rec's default is off."""
    import os

    value = os.environ.get("HF_HUB_OFFLINE", os.environ.get("TRANSFORMERS_OFFLINE", "1"))
    return value.strip().lower() in ("0", "false", "no", "off", "")


def require_model_dir(path: str | Path, key: str = "model.path") -> Path:
    """``path`` as a local model directory, else a :class:`UserError` saying that it does not exist.

    Checked before transformers sees the path, so a typo never turns into hub retries or a "repo id"
    complaint. A hub id passes only when the user switched the hub on (``HF_HUB_OFFLINE=0``).
    """
    p = Path(path)
    if p.is_dir():
        return p
    if hub_online() and not p.is_absolute() and not str(path).startswith(".") and str(path).count("/") == 1:
        return p
    what = "is a file, not a directory" if p.exists() else "does not exist"
    raise UserError(
        f"{key}: the model directory {path} {what}; llm4rec loads local directories only and never "
        "downloads: put the weights there (or fix the path), or build a small test model with "
        "`llm4rec tiny-model --family llama --out DIR`"
    )


#: Linear layers of a LLaMA-style decoder block (also Qwen2, converted Baichuan and Qwen-1).
LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: LoRA target sets of every family whose layers carry LLaMA's projection names
LLAMA_TARGETS = {"qv": ("q_proj", "v_proj"), "all": LLAMA_LINEAR}
#: TALLRec's Alpaca templates, the default of the families without a chat format of their own
ALPACA_TEMPLATES = {"en": "alpaca", "zh": "alpaca_zh"}


@dataclass(frozen=True)
class BackboneFamily:
    """One model family and every backbone-specific choice llm4rec makes for it."""

    name: str
    #: ``model_type`` values in ``config.json`` that identify this family
    model_types: tuple[str, ...]
    description: str
    #: LoRA target sets selectable in a recipe (``lora.targets``): "qv" is TALLRec's choice
    lora_targets: dict[str, tuple[str, ...]]
    #: template used per prompt language when the recipe says ``template: auto``
    default_template: dict[str, str]
    #: pad token to use when the tokenizer defines none, tried in order (must not be a token the loss needs)
    pad_token_candidates: tuple[str, ...]
    #: builds a tiny random config of this architecture for ``llm4rec tiny-model`` (vocab size -> config)
    tiny_config: Callable[[int], Any] | None = None
    #: answer words per language, overriding :data:`llm4rec.models.templates.ANSWERS`
    answers: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: the ``transformers`` auto class that loads the (converted) checkpoint
    auto_class: str = "AutoModelForCausalLM"
    #: padding side for training batches (right keeps labels aligned and is what every family trains with)
    train_padding_side: str = "right"
    #: padding side for scoring (left puts every prompt's last token at position -1)
    score_padding_side: str = "left"
    #: name of the converter for original (remote-code) checkpoints, or None when transformers loads it
    converter: str | None = None
    #: module names bitsandbytes must keep unquantized besides the output head
    skip_quantization: tuple[str, ...] = ()
    #: for families whose ``model_type`` is ambiguous (ChatGLM-6B/2/3 all say "chatglm"): a predicate on
    #: the raw ``config.json`` dict that says whether a checkpoint belongs to this family
    detect: Callable[[dict[str, Any]], bool] | None = None
    #: for remote-code releases: the original ``config.json`` dict -> the config dict (``model_type``
    #: included) of the layout llm4rec converts it to; the planner counts parameters on that
    converted_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    #: the loaded model's decoder takes 1-D ``position_ids`` and a transformers ``Cache``, and its logits are
    #: exactly ``lm_head(hidden)``: scoring may reuse shared prompt prefixes and slice the output head
    prefix_safe: bool = True
    #: the decoder is transformers' own and builds its attention from ``position_ids`` when no
    #: ``attention_mask`` is given (block-diagonal for sdpa/eager, varlen for flash_attention_2), so
    #: training may pack a micro-batch into one row with no padding (``data.packing``)
    packing: bool = False

    def matches(self, cfg: dict[str, Any]) -> bool:
        """Whether a ``config.json`` dict describes a checkpoint of this family (original or converted)."""
        if cfg.get("llm4rec_family"):
            return cfg["llm4rec_family"] == self.name
        if self.detect is not None:
            return bool(self.detect(cfg))
        return cfg.get("model_type") in self.model_types

    def targets(self, name_or_list: str | list[str] | tuple[str, ...]) -> list[str]:
        """Resolve a recipe's ``lora.targets`` (a set name or an explicit module list)."""
        if isinstance(name_or_list, str):
            if name_or_list not in self.lora_targets:
                raise UserError(
                    f"lora.targets: {name_or_list!r} is not a target set of family {self.name!r} "
                    f"(choose {', '.join(self.lora_targets)} or give a list of module names)"
                )
            return list(self.lora_targets[name_or_list])
        return list(name_or_list)


FAMILIES: dict[str, BackboneFamily] = {}


def register_family(family: BackboneFamily) -> BackboneFamily:
    """Add ``family`` to the registry (its name and model types must be new)."""
    _register_core_families()  # keep llama and qwen2 first whatever module registers first
    if family.name in FAMILIES:
        raise ValueError(f"backbone family {family.name!r} is already registered")
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> BackboneFamily:
    """Return the registered family ``name``; an unknown name is a :class:`UserError` with a suggestion."""
    _load_builtin_families()
    if name not in FAMILIES:
        close = difflib.get_close_matches(name, FAMILIES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"model.family: unknown backbone family {name!r}{hint}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of_config(config: Any) -> BackboneFamily | None:
    """The family of a loaded model's config (a transformers config or a ``config.json`` dict), if any."""
    _load_builtin_families()
    cfg = config if isinstance(config, dict) else config.to_dict()
    return next((fam for fam in FAMILIES.values() if fam.matches(cfg)), None)


def converted_config_of(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The converted config of an ORIGINAL remote-code ``config.json`` dict (None when loaded as it is)."""
    _load_builtin_families()
    if cfg.get("llm4rec_family"):  # already converted
        return None
    for fam in FAMILIES.values():
        if fam.converted_config is not None and fam.matches(cfg):
            return fam.converted_config(cfg)
    return None


def read_model_config(model_dir: str | Path) -> dict[str, Any] | None:
    """The raw ``config.json`` of a local checkpoint (None when there is none)."""
    cfg_path = Path(model_dir) / "config.json"
    if not cfg_path.is_file():
        return None
    try:
        return json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{cfg_path}: not valid JSON ({exc.msg})") from None


def detect_family(model_dir: str | Path) -> str | None:
    """Return the family of a local checkpoint from its ``config.json`` (None if the type is unknown).

    A checkpoint converted by llm4rec records its family under ``llm4rec_family``; otherwise each
    family's ``detect`` predicate or ``model_type`` list decides, in registration order.
    """
    _load_builtin_families()
    cfg = read_model_config(model_dir)
    if cfg is None:
        return None
    for fam in FAMILIES.values():
        if fam.matches(cfg):
            return fam.name
    return None


def _tiny_config(config_class: str, vocab_size: int, kv_heads: int) -> Any:
    """A two-layer config of the given transformers class, in the widths bitsandbytes' 4-bit kernels take."""
    import transformers

    return getattr(transformers, config_class)(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
    )


def _tiny_llama(vocab_size: int) -> Any:
    return _tiny_config("LlamaConfig", vocab_size, kv_heads=4)


def _tiny_qwen2(vocab_size: int) -> Any:
    return _tiny_config("Qwen2Config", vocab_size, kv_heads=2)


_BUILTINS_LOADED = False
_CORE_REGISTERED = False


def _register_core_families() -> None:
    """Register the families transformers loads directly (idempotent)."""
    global _CORE_REGISTERED
    if _CORE_REGISTERED:
        return
    _CORE_REGISTERED = True
    register_family(
        BackboneFamily(
            name="llama",
            model_types=("llama",),
            description="LLaMA-1 / Llama-2 / Llama-3 (TALLRec's backbone)",
            lora_targets=LLAMA_TARGETS,
            default_template=ALPACA_TEMPLATES,
            # LLaMA ships no pad token; TALLRec pads with id 0 (<unk>). EOS must stay distinct: the
            # loss trains the model to stop after "Yes."/"No.".
            pad_token_candidates=("<unk>", "<|finetune_right_pad_id|>", "<|reserved_special_token_0|>"),
            tiny_config=_tiny_llama,
            packing=True,
        )
    )
    register_family(
        BackboneFamily(
            name="qwen2",
            model_types=("qwen2",),
            description="Qwen1.5 / Qwen2 / Qwen2.5",
            lora_targets=LLAMA_TARGETS,
            default_template=ALPACA_TEMPLATES,
            # Qwen pads with <|endoftext|>; labels are built from lengths, never from pad ids, so the
            # end-of-text token the loss needs is kept even where pad and EOS coincide.
            pad_token_candidates=("<|endoftext|>",),
            tiny_config=_tiny_qwen2,
            packing=True,
        )
    )


def _load_builtin_families() -> None:
    """Register the families shipped with llm4rec (idempotent)."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    _register_core_families()
    # imported here, not at the top: the legacy modules import this one (and torch, transformers)
    from llm4rec.models.legacy import baichuan, chatglm, chatglm2, qwen

    for module in (qwen, baichuan, chatglm2, chatglm):
        for fam in module.FAMILIES:
            register_family(fam)


def list_families() -> list[BackboneFamily]:
    """All registered families, in registration order."""
    _load_builtin_families()
    return list(FAMILIES.values())
