"""Shared by the loss and packing tests: a LoRA adapter that matters, and examples of varied lengths."""

from __future__ import annotations

import torch

from llm4rec.data.tokenize import TrainExample, encode_train_example
from llm4rec.models.backbone import resolve_template

from ..conftest import make_tallrec_samples


def add_lora(model):
    """``model`` with a LoRA adapter on q_proj and v_proj (r=8) whose lora_B is drawn, not zero, so that
    the adapter changes the output."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        model,
        LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
        ),
    )
    for name, p in model.named_parameters():  # lora_B starts at zero: make the adapter matter
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    return model


def varied_examples(
    tok, family, n: int, seed: int, first_len: int, len_step: int, train_on_inputs: bool = False
) -> list[TrainExample]:
    """``n`` TALLRec training examples (cutoff 256) whose prompts and answers differ in length: sample i's
    input is cut to ``first_len + len_step * i`` characters and its output gets ``i % 3`` extra sentences."""
    template = resolve_template(family, "auto", "en")
    rows = make_tallrec_samples(n, seed=seed)
    for i, r in enumerate(rows):
        r["input"] = r["input"][: first_len + len_step * i]
        r.pop("history_spans", None)  # the cut input no longer matches the spans; keep it whole
        r["output"] += " Because of the genre." * (i % 3)
    return [encode_train_example(tok, template, r, 256, train_on_inputs) for r in rows]
