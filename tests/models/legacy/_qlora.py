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


def qlora_model(model_dir: Path, family: str, r: int = 4, checkpointing: bool = False):
    """The converted checkpoint in 4-bit with LoRA (rank ``r``, alpha ``2r``) on the family's "qv" modules."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from llm4rec.models.registry import get_family

    model = load_4bit(model_dir)
    if checkpointing:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        assert model.model.layers[0].gradient_checkpointing
    targets = get_family(family).targets("qv")
    lora = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def assert_alpaca_zh_training_lowers_the_loss(model_dir: Path, family: str, pad_token: str) -> None:
    """Rank-8 LoRA steps on four alpaca_zh prompts answered 是/否, with the tokenizer as llm4rec loads it
    (whose pad token must be ``pad_token``), lower the loss by more than 0.05."""
    from llm4rec.models.loading import load_tokenizer
    from llm4rec.models.registry import TEMPLATES, get_family

    model = qlora_model(model_dir, family, r=8)
    tok = load_tokenizer(model_dir, get_family(family))
    assert tok.pad_token == pad_token
    tmpl = TEMPLATES["alpaca_zh"]
    texts = [
        tmpl.render("用户会喜欢这部电影吗？", f"电影 {i}") + ("是" if i % 2 else "否") + tok.eos_token
        for i in range(4)
    ]
    losses = train_losses(model, tok(texts, return_tensors="pt", padding=True), lr=3e-3)
    assert losses[-1] < losses[0] - 0.05, losses


def assert_cli_converts_the_same(family: str, src: Path, converted: Path, out: Path) -> None:
    """``llm4rec convert`` on ``src`` writes the same weights as the converter called directly did."""
    from llm4rec.cli import main

    assert main(["convert", "--family", family, "--src", str(src), "--out", str(out)]) == 0
    assert (out / "model.safetensors").read_bytes() == (converted / "model.safetensors").read_bytes()


def assert_qlora_training_lowers_the_loss(
    model_dir: Path,
    family: str,
    texts: list[str],
    *,
    checkpointing: bool = False,
    padding_side: str | None = None,
) -> None:
    """Rank-4 LoRA steps (lr 1e-2) on ``texts`` as the converted tokenizer encodes them lower the loss;
    the base layers checked to be 4-bit."""
    from transformers import AutoTokenizer

    model = qlora_model(model_dir, family, checkpointing=checkpointing)
    q_proj = model.get_base_model().model.layers[0].self_attn.q_proj
    assert type(q_proj.base_layer).__name__ == "Linear4bit"
    model.config.use_cache = False
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = padding_side or tok.padding_side
    losses = train_losses(model, tok(texts, padding=True, return_tensors="pt"), lr=1e-2)
    assert losses[-1] < losses[0], losses
