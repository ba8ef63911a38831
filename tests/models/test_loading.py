"""Loading a 4-bit base on CPU: one 4-bit layout for validation, evaluation and training, on every CPU."""

from __future__ import annotations

import pytest
import torch

from llm4rec.models.loading import load_base_model
from llm4rec.models.registry import get_family
from tests.conftest import shared_path


def _save_llama(path, intermediate: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=256,
        hidden_size=128,
        intermediate_size=intermediate,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def _lora_grads(path, eval_pass_first: bool) -> tuple[float, dict[str, torch.Tensor]]:
    from peft import LoraConfig, get_peft_model

    model = load_base_model(path, get_family("llama"), device="cpu", compute_dtype="float32")
    torch.manual_seed(1)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    for name, p in model.named_parameters():  # lora_B starts at zero: make every adapter matter
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    x = torch.tensor([[1, 2, 3, 4, 5, 6]])
    if eval_pass_first:  # what a validation does between training steps
        model.eval()
        with torch.no_grad():
            model(x)
    model.train()
    out = model(x, labels=x)
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return out.loss.item(), grads


def test_training_after_a_validation_pass_gets_the_same_gradients(tmp_path):
    """bitsandbytes 0.50 repacks 4-bit weights for CPU inference on AVX512-BF16 CPUs, and its packed kernel
    has no backward: without llm4rec's switch, LoRA got no gradients at all after the first validation."""
    path = _save_llama(tmp_path / "m", 384)
    loss_a, fresh = _lora_grads(path, eval_pass_first=False)
    loss_b, after_eval = _lora_grads(path, eval_pass_first=True)
    assert loss_a == loss_b
    assert len(fresh) == 8 and all(g is not None and g.abs().sum() > 0 for g in fresh.values())
    for name, g in fresh.items():
        assert after_eval[name] is not None, name
        torch.testing.assert_close(after_eval[name], g, rtol=0, atol=0)


def test_widths_that_are_not_multiples_of_64_run_in_4bit(tmp_path):
    model = load_base_model(_save_llama(tmp_path / "m", 344), get_family("llama"), device="cpu")
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, 256) and torch.isfinite(logits).all()


#: the releases whose vocabulary is not in tokenizer.model (a release's family: its name before "-6b"/"-7b")
RELEASE_VOCAB = {"chatglm-6b": "ice_text.model", "qwen-7b": "qwen.tiktoken"}


@pytest.mark.parametrize(
    "release", ["chatglm-6b", "chatglm2-6b", "chatglm3-6b", "qwen-7b", "baichuan-7b", "baichuan2-7b"]
)
def test_backbone_tokenizer_of_an_original_release_is_converted_on_the_fly(release):
    """Prep's --tokenizer takes an original remote-code release directory (no weights, no conversion first)."""
    from llm4rec.models.loading import load_backbone_tokenizer

    family, vocab_file = release.split("-")[0], RELEASE_VOCAB.get(release, "tokenizer.model")
    src = shared_path("models", release)
    if not (src / vocab_file).is_file():
        pytest.skip(f"{src / vocab_file} not present")
    tok, fam = load_backbone_tokenizer(src, family)
    assert fam.name == family
    ids = tok("Hello world", add_special_tokens=False)["input_ids"]
    assert ids and tok.decode(ids).strip() == "Hello world"
