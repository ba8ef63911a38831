"""Plan a loaded recipe: its ``auto`` settings resolved, the memory estimate, advice when it does not fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm4rec.errors import UserError
from llm4rec.models.planner.advice import advise
from llm4rec.models.planner.arch import resolve_arch
from llm4rec.models.planner.auto import choose_auto, has_auto, resolve_auto
from llm4rec.models.planner.memory import MemoryPlan, build_plan, settings_from_recipe
from llm4rec.models.planner.params import count_params


def plan_recipe(
    recipe: Any,
    gpu_gb: float = 24.0,
    device: str = "cuda",
    arch: str | None = None,
    seq_len: int | None = None,
    shape_spread: float = 1.0,
    backbone: Any = None,
    capability: tuple[int, int] | None = None,
) -> MemoryPlan:
    """Plan a loaded recipe (:class:`llm4rec.config.Recipe`) on a ``gpu_gb`` GiB ``device`` ("cuda"/"cpu").

    ``auto`` settings are resolved for that card first (:func:`choose_auto`); ``plan.auto`` says how.
    ``backbone``: the recipe's resolved backbone (training passes it); when not given and ``model.path``
    is a local model directory, it is resolved here, once, without tokenizer or weights.
    """
    if device not in ("cuda", "cpu"):
        raise UserError(f"--device: {device!r} is not cuda or cpu")
    if gpu_gb <= 0:
        raise UserError(f"--gpu-gb: must be positive, got {gpu_gb}")
    # a recipe key model.arch (when the recipe schema has one) names the packaged architecture too
    arch = arch or getattr(recipe.model, "arch", None) or None
    if backbone is None and not arch and (Path(recipe.model.path) / "config.json").is_file():
        from llm4rec.models.backbone import resolve_backbone

        backbone = resolve_backbone(
            recipe.model, cutoff_len=recipe.data.cutoff_len, device="cpu", for_planning=True
        )
    auto = None
    if has_auto(recipe):
        auto = choose_auto(
            recipe, gpu_gb, device, seq_len=seq_len, shape_spread=shape_spread, arch=arch, backbone=backbone,
            capability=capability,
        )  # fmt: skip
        recipe = resolve_auto(recipe, auto)
    resolved = resolve_arch(recipe.model.path, recipe.model.family, arch, backbone)
    params = count_params(resolved.config, resolved.name)
    s = settings_from_recipe(recipe, params, resolved.family, device, seq_len, shape_spread, capability)
    plan = build_plan(resolved, s, gpu_gb, params)
    plan.auto = auto
    if not plan.fits:
        plan.advice = advise(plan, recipe.train.batch_size, params.linear_names())
    return plan
