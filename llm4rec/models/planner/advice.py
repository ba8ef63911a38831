"""Advice for a plan that does not fit: recipe changes (``key=value`` overrides) that bring it within budget."""

from __future__ import annotations

import dataclasses
from typing import Any

from llm4rec.models.planner.memory import GIB, MemoryPlan, estimate


def advise(plan: MemoryPlan, batch_size: int, all_targets: list[str]) -> list[str]:
    """Single recipe changes (as ``key=value`` overrides) that bring the plan within the budget."""
    s, p = plan.settings, plan.params

    def total(**changes: Any) -> float:
        parts, _, _ = estimate(p, dataclasses.replace(s, **changes))
        return sum(parts.values()) / GIB

    out: list[str] = []
    for mb in range(s.micro_batch_size - 1, 0, -1):
        if batch_size % mb == 0 and total(micro_batch_size=mb) <= plan.gpu_gb:
            out.append(
                f"train.micro_batch_size={mb}  ({total(micro_batch_size=mb):.1f} GiB; gradient accumulation "
                "keeps the effective batch)"
            )
            break
    if not s.gradient_checkpointing and total(gradient_checkpointing=True) <= plan.gpu_gb:
        out.append(
            f"model.gradient_checkpointing=true  ({total(gradient_checkpointing=True):.1f} GiB; ~30% slower)"
        )
    for cut in (384, 320, 256, 192, 128):
        if cut < s.cutoff_len and total(cutoff_len=cut) <= plan.gpu_gb:
            out.append(
                f"data.cutoff_len={cut}  ({total(cutoff_len=cut):.1f} GiB; longer prompts lose their oldest history)"
            )
            break
    qv = ["q_proj", "v_proj"]
    if sorted(s.lora_targets) != qv and set(qv) <= set(all_targets) and total(lora_targets=qv) <= plan.gpu_gb:
        out.append(f"lora.targets=qv  ({total(lora_targets=['q_proj', 'v_proj']):.1f} GiB; TALLRec's choice)")
    if s.device == "cuda" and s.optimizer == "adamw" and total(optimizer="paged_adamw_8bit") <= plan.gpu_gb:
        out.append(f"train.optimizer=paged_adamw_8bit  ({total(optimizer='paged_adamw_8bit'):.1f} GiB)")
    if s.load_in_4bit and not s.double_quant and total(double_quant=True) <= plan.gpu_gb:
        out.append(f"model.double_quant=true  ({total(double_quant=True):.1f} GiB)")
    if not s.load_in_4bit and total(load_in_4bit=True) <= plan.gpu_gb:
        out.append(f"model.load_in_4bit=true  ({total(load_in_4bit=True):.1f} GiB)")
    if not out:
        out.append(_combined_advice(plan, batch_size, all_targets, total))
    return out


def _combined_advice(plan: MemoryPlan, batch_size: int, all_targets: list[str], total: Any) -> str:
    """Greedily combine the changes that save the most until the plan fits (or nothing is left)."""
    s = plan.settings
    changes: dict[str, Any] = {}
    keys: dict[str, str] = {}
    while total(**changes) > plan.gpu_gb:
        cur = dataclasses.replace(s, **changes)
        options: list[tuple[str, str, dict[str, Any]]] = []
        if not cur.gradient_checkpointing:
            options.append(("ckpt", "model.gradient_checkpointing=true", {"gradient_checkpointing": True}))
        if not cur.load_in_4bit:
            options.append(("4bit", "model.load_in_4bit=true", {"load_in_4bit": True}))
        if sorted(cur.lora_targets) != ["q_proj", "v_proj"] and {"q_proj", "v_proj"} <= set(all_targets):
            options.append(("targets", "lora.targets=qv", {"lora_targets": ["q_proj", "v_proj"]}))
        smaller = [mb for mb in range(cur.micro_batch_size // 2, 0, -1) if batch_size % mb == 0]
        if smaller:
            mb = smaller[0]
            options.append(("mb", f"train.micro_batch_size={mb}", {"micro_batch_size": mb}))
        if cur.device == "cuda" and cur.optimizer == "adamw":
            options.append(("opt", "train.optimizer=paged_adamw_8bit", {"optimizer": "paged_adamw_8bit"}))
        if not options:
            return (
                f"nothing in the recipe brings it under {plan.gpu_gb:g} GiB (the leanest settings need "
                f"{total(**changes):.1f} GiB): use a larger card, a shorter data.cutoff_len or a smaller backbone"
            )
        key, text, change = min(options, key=lambda o: total(**{**changes, **o[2]}))
        changes.update(change)
        keys[key] = text
    return f"{' '.join(keys.values())}  ({total(**changes):.1f} GiB together)"
