"""``auto`` micro-batch and gradient checkpointing: the fastest setting (by a measured step-time model) whose
plan fits the memory given."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from llm4rec.models.planner.arch import resolve_arch
from llm4rec.models.planner.memory import (
    GIB,
    MemoryPlan,
    Settings,
    build_plan,
    estimate,
    settings_from_recipe,
)
from llm4rec.models.planner.params import count_params

#: Step time model, measured on an H200 with a 4-bit LLaMA-7B (2026-11-30, scripts/bench_train.py): a
#: micro-batch costs a fixed ~0.23 s (the kernel launches of 32 layers of dequantization, casts and LoRA,
#: whatever its size) plus ~7.4e-5 s per token, 1.3x that with checkpointing (every layer's forward runs
#: again in backward). The fixed part is worth ~3,000 tokens, so few large micro-batches beat many small
#: ones, with or without checkpointing.
CKPT_COST = 0.3
MICRO_BATCH_OVERHEAD_TOKENS = 3000
#: auto settings plan to at most this fraction of the memory they are given: room for the plan's +-10%
#: and for whatever else the card runs (24 GiB -> 19.9 GiB)
AUTO_HEADROOM = 0.83
#: the largest micro-batch auto tries (beyond it a step is not measurably faster); on CPU, where compute and
#: not memory is the limit, 8
AUTO_MAX_MICRO = {"cuda": 32, "cpu": 8}


def relative_speed(s: Settings) -> float:
    """Tokens per second relative to an ideal step (no checkpointing, no per-micro-batch cost)."""
    per_token = 1.0 + CKPT_COST * s.gradient_checkpointing
    return s.tokens / (MICRO_BATCH_OVERHEAD_TOKENS + s.tokens * per_token)


@dataclass
class AutoChoice:
    """What ``auto`` resolved to: the settings, their plan, and the memory they were chosen for."""

    micro_batch_size: int
    gradient_checkpointing: bool
    plan: MemoryPlan
    budget_gb: float
    fits: bool

    def line(self) -> str:
        """One line for the log."""
        verdict = "fits" if self.fits else "does NOT fit (nothing smaller is possible)"
        return (
            f"auto: micro_batch_size={self.micro_batch_size} gradient_checkpointing="
            f"{str(self.gradient_checkpointing).lower()} (expected peak {self.plan.total_gb:.2f} GiB; "
            f"{verdict} in {AUTO_HEADROOM:.0%} of {self.budget_gb:.1f} GiB)"
        )


def choose_auto(
    recipe: Any,
    budget_gb: float,
    device: str = "cuda",
    world: int = 1,
    seq_len: int | None = None,
    shape_spread: float = 1.0,
    arch: str | None = None,
    backbone: Any = None,
    capability: tuple[int, int] | None = None,
) -> AutoChoice:
    """Resolve ``train.micro_batch_size: auto`` / ``model.gradient_checkpointing: auto``.

    Among micro-batches that divide the per-process batch (up to :data:`AUTO_MAX_MICRO`) and, when
    checkpointing is auto, both checkpointing settings, the one with the highest :func:`relative_speed`
    whose plan is within ``AUTO_HEADROOM x budget_gb``: checkpointing only where it buys a micro-batch
    large enough to pay for its recomputation. When nothing fits, the leanest setting. ``backbone``: the
    resolved backbone being trained (its config is planned; nothing is read again).
    """
    t, m = recipe.train, recipe.model
    resolved = resolve_arch(m.path, m.family, arch or getattr(m, "arch", None) or None, backbone)
    params = count_params(resolved.config, resolved.name)
    base = settings_from_recipe(recipe, params, resolved.family, device, seq_len, shape_spread, capability)
    per_process = t.batch_size // world if t.batch_size % world == 0 else t.batch_size
    if t.micro_batch_size == "auto":
        micros = [
            mb for mb in range(1, min(per_process, AUTO_MAX_MICRO[device]) + 1) if per_process % mb == 0
        ]
    else:
        micros = [t.micro_batch_size]
    ckpts = [False, True] if m.gradient_checkpointing == "auto" else [bool(m.gradient_checkpointing)]
    limit = AUTO_HEADROOM * budget_gb
    options = []
    for mb in micros:
        for ck in ckpts:
            s = dataclasses.replace(base, micro_batch_size=mb, gradient_checkpointing=ck)
            total = sum(estimate(params, s)[0].values()) / GIB
            options.append((total <= limit, relative_speed(s), -total, s))
    fitting = [o for o in options if o[0]]
    best = max(fitting, key=lambda o: (o[1], o[2])) if fitting else max(options, key=lambda o: o[2])
    plan = build_plan(resolved, best[3], budget_gb, params)
    return AutoChoice(
        best[3].micro_batch_size, best[3].gradient_checkpointing, plan, budget_gb, bool(fitting)
    )


def resolve_auto(recipe: Any, choice: AutoChoice) -> Any:
    """The recipe with its ``auto`` settings replaced by ``choice``."""
    model = dataclasses.replace(recipe.model, gradient_checkpointing=choice.gradient_checkpointing)
    train = dataclasses.replace(recipe.train, micro_batch_size=choice.micro_batch_size)
    return dataclasses.replace(recipe, model=model, train=train)


def has_auto(recipe: Any) -> bool:
    """Whether the recipe leaves the micro-batch or checkpointing to :func:`choose_auto`."""
    return recipe.train.micro_batch_size == "auto" or recipe.model.gradient_checkpointing == "auto"
