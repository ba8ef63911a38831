"""The 4-bit + LoRA smoke steps the converted legacy families share in their tests."""

from __future__ import annotations

from pathlib import Path

import torch


def load_4bit(model_dir: Path):
    """The converted checkpoint as bitsandbytes NF4 on CPU (float32 compute); its Linear layers are 4-bit."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=q, device_map="cpu")
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())
    return model


def train_losses(model, batch: dict, lr: float, steps: int = 4) -> list[float]:
    """Train ``model`` (LoRA) ``steps`` times on one tokenized ``batch`` (loss off padding); the losses."""
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses
