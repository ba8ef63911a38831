"""The packaged architectures of the shipped 7B backbones (``llm4rec/models/arch/*.json``) and which one a
plan is for."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from llm4rec.errors import UserError

ARCH_DIR = Path(__file__).resolve().parent.parent / "arch"


@cache
def _arch_index() -> dict[str, dict[str, Any]]:
    index: dict[str, dict[str, Any]] = {}
    for path in sorted(ARCH_DIR.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for key in (data["name"], *data.get("aliases", ())):
            index[key] = data
    return index


def arch_names() -> list[str]:
    """Names of the packaged architectures (aliases excluded)."""
    return sorted({d["name"] for d in _arch_index().values()})


def load_arch(name: str) -> dict[str, Any]:
    """The packaged architecture ``name`` (or an alias): ``{name, family, published_params, config, ...}``."""
    key = normalize_arch_name(name)
    index = _arch_index()
    if key not in index:
        import difflib

        close = difflib.get_close_matches(key, list(index), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"--arch: unknown architecture {name!r}{hint}; known: {', '.join(arch_names())}")
    return index[key]


_SUFFIXES = ("-hf", "-chat", "-instruct", "-base", "-it")


def normalize_arch_name(name: str) -> str:
    """Lower-case a checkpoint name and drop suffixes that do not change the architecture, when that
    leads to a packaged name: ``Llama-2-7b-chat-hf`` -> ``llama-2-7b``; ``Qwen2.5-7B-Instruct`` -> ``qwen2.5-7b``.
    """
    key = name.strip().rstrip("/").rsplit("/", 1)[-1].lower().replace("_", "-")
    index = _arch_index()
    cand = key
    while cand not in index:
        for suffix in _SUFFIXES:
            if cand.endswith(suffix):
                cand = cand[: -len(suffix)]
                break
        else:
            return key
    return cand


def family_default_arch(family: str) -> dict[str, Any] | None:
    """The packaged architecture planned for ``family`` when nothing names one."""
    for data in _arch_index().values():
        if data["family"] == family and data.get("family_default"):
            return data
    return None


@dataclass
class ResolvedArch:
    """Which architecture a plan is for, and where it came from."""

    name: str
    family: str | None
    config: dict[str, Any]
    source: str
    published_params: int | None = None


def resolve_arch(
    model_path: str, family: str = "auto", arch: str | None = None, backbone: Any = None
) -> ResolvedArch:
    """Find the architecture to plan: ``arch`` by name, else the resolved ``backbone``'s (its config.json,
    read once when it was resolved), else ``model_path``'s config.json, else the packaged architecture
    named like ``model_path``'s last component, else the family's default 7B.

    A family given in the recipe that disagrees with the architecture is a :class:`UserError`.
    """
    from llm4rec.models.registry import family_of_config, read_model_config

    resolved: ResolvedArch | None = None
    if backbone is not None and not arch:
        cfg_path = Path(backbone.source) / "config.json"
        resolved = ResolvedArch(
            Path(backbone.source).name, backbone.family.name, backbone.config, str(cfg_path)
        )
    elif arch:
        data = load_arch(arch)
        resolved = ResolvedArch(
            data["name"], data["family"], data["config"], "packaged", data.get("published_params")
        )
    elif model_path and (Path(model_path) / "config.json").is_file():
        from llm4rec.models.backbone import resolve_family

        cfg_path = Path(model_path) / "config.json"
        cfg = read_model_config(model_path) or {}
        detected = family_of_config(cfg)
        fam = detected.name if detected is not None else None
        if family != "auto":
            # the recipe's family, checked against the config by the backbone's rule; detection may not tell
            # apart same-layout releases (ChatGLM2/3): the recipe does
            fam = resolve_family(model_path, family, cfg).name
        resolved = ResolvedArch(Path(model_path).name, fam, cfg, str(cfg_path))
    elif model_path and normalize_arch_name(model_path) in _arch_index():
        data = load_arch(model_path)
        resolved = ResolvedArch(
            data["name"], data["family"], data["config"], "packaged", data.get("published_params")
        )
    elif model_path:
        raise UserError(
            f"model.path: the model directory {model_path} does not exist yet; make it first (for "
            "recipes/demo_cpu.yaml: `make demo`, or the tiny-model and pretrain commands at the top of the "
            "recipe; for a released model: download its weights there), or plan a packaged architecture "
            f"with --arch NAME (known: {', '.join(arch_names())})"
        )
    elif family != "auto":
        data = family_default_arch(family)
        if data is None:
            raise UserError(
                f"model.family: no packaged architecture for family {family!r}; plan with --arch NAME "
                f"(known: {', '.join(arch_names())})"
            )
        where = f"{model_path} is not a local model directory; " if model_path else ""
        resolved = ResolvedArch(
            data["name"],
            data["family"],
            data["config"],
            f"{where}the {family} family's default, choose another with --arch",
            data.get("published_params"),
        )
    if resolved is None:
        raise UserError(
            f"model.path: {model_path!r} is neither a local model directory nor a known architecture name; "
            f"set model.family or plan with --arch NAME (known: {', '.join(arch_names())})"
        )
    if family != "auto" and resolved.family is not None and resolved.family != family:
        raise UserError(
            f"model.family: recipe says {family!r} but the architecture {resolved.name!r} ({resolved.source}) "
            f"is a {resolved.family!r} backbone"
        )
    return resolved
