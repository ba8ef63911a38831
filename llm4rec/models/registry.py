"""The backbone registry: the list of model families and the look-ups every other module uses.

Everything that differs between families lives in one module per family under
:mod:`llm4rec.models.families` (its :class:`BackboneFamily` entry, templates, answer words, tensor map and
converted config); this module imports them in the order detection tries them. Adding a family means
adding its module and one line to :data:`FAMILIES` (or calling :func:`register_family`); no other module
branches on a family name. Importing a family module registers nothing.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from llm4rec.errors import UserError
from llm4rec.io import read_json_object
from llm4rec.models.families import baichuan, baichuan2, chatglm, chatglm2, chatglm3, llama, qwen, qwen2
from llm4rec.models.families.base import (  # noqa: F401  (re-exported: the registry's public names)
    ALPACA_TEMPLATES,
    LLAMA_LINEAR,
    LLAMA_TARGETS,
    SHARED_TEMPLATES,
    BackboneFamily,
)
from llm4rec.models.templates import PromptTemplate

#: every family, in the order detection tries them
FAMILIES: dict[str, BackboneFamily] = {
    m.FAMILY.name: m.FAMILY for m in (llama, qwen2, qwen, baichuan, baichuan2, chatglm2, chatglm3, chatglm)
}

#: every prompt template by name: the shared Alpaca ones, then each family's own
TEMPLATES: dict[str, PromptTemplate] = {
    t.name: t for t in (*SHARED_TEMPLATES, *(t for fam in FAMILIES.values() for t in fam.templates))
}


def register_family(family: BackboneFamily) -> BackboneFamily:
    """Add ``family`` (and its templates) to the registry; its name and template names must be new."""
    if family.name in FAMILIES:
        raise ValueError(f"backbone family {family.name!r} is already registered")
    clash = [t.name for t in family.templates if t.name in TEMPLATES]
    if clash:
        raise ValueError(f"template(s) {clash} of family {family.name!r} are already registered")
    FAMILIES[family.name] = family
    TEMPLATES.update((t.name, t) for t in family.templates)
    return family


def get_family(name: str) -> BackboneFamily:
    """Return the registered family ``name``; an unknown name is a :class:`UserError` with a suggestion."""
    if name not in FAMILIES:
        close = difflib.get_close_matches(name, FAMILIES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"model.family: unknown backbone family {name!r}{hint}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of_config(config: Any) -> BackboneFamily | None:
    """The family of a loaded model's config (a transformers config or a ``config.json`` dict), if any."""
    cfg = config if isinstance(config, dict) else config.to_dict()
    return next((fam for fam in FAMILIES.values() if fam.matches(cfg)), None)


def converted_config_of(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The converted config of an ORIGINAL remote-code ``config.json`` dict (None when loaded as it is)."""
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
    return read_json_object(cfg_path)


def detect_family(model_dir: str | Path) -> str | None:
    """Return the family of a local checkpoint from its ``config.json`` (None if the type is unknown).

    A checkpoint converted by llm4rec records its family under ``llm4rec_family``; otherwise each
    family's ``detect`` predicate or ``model_type`` list decides, in registration order.
    """
    cfg = read_model_config(model_dir)
    if cfg is None:
        return None
    for fam in FAMILIES.values():
        if fam.matches(cfg):
            return fam.name
    return None


def list_families() -> list[BackboneFamily]:
    """All registered families, in registration order."""
    return list(FAMILIES.values())
