"""Packed micro-batches: one row, no padding, the same loss and LoRA gradients as the padded batch."""

from __future__ import annotations

import pytest
import torch

from llm4rec.config import recipe_from_dict
from llm4rec.data.tokenize import IGNORE_INDEX, collate, length_grouped_batches
from llm4rec.errors import UserError
from llm4rec.models.loading import load_tokenizer
from llm4rec.models.registry import get_family
from llm4rec.train.loss import effective_batch_tokens, head_inputs, loss_sum
from llm4rec.train.packing import pack, padding_fraction, resolve_packing

from ..conftest import make_tallrec_samples
from ._helpers import add_lora, varied_examples


def _examples(tok, family, train_on_inputs: bool) -> list:
    examples = varied_examples(
        tok, family, 5, seed=4, first_len=50, len_step=40, train_on_inputs=train_on_inputs
    )
    assert len({len(e.input_ids) for e in examples}) == len(examples)
    return examples


def _lora(model_dir, family_name: str, attn: str = "sdpa", load_in_4bit: bool = False):
    from llm4rec.models.loading import load_base_model

    family = get_family(family_name)
    tok = load_tokenizer(model_dir, family)
    torch.manual_seed(0)
    model = load_base_model(
        model_dir,
        family,
        load_in_4bit=load_in_4bit,
        compute_dtype="float32",
        attn_implementation=attn,
        device="cpu",
    )
    model = add_lora(model)
    return model, tok, family


def _loss_and_grads(model, batch, full_head: bool = False):
    if not full_head:
        batch = dict(batch)
        batch["head_index"], batch["head_targets"] = head_inputs(batch["labels"])
    loss = loss_sum(model, batch, full_head=full_head)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def _assert_same(model, tok, examples, rtol: float, atol: float, full_head: bool = False) -> None:
    padded = collate(examples, tok.pad_token_id)
    packed = pack(examples)
    assert padded["attention_mask"].sum() < padded["input_ids"].numel()  # the padded batch has padding
    loss_pad, g_pad = _loss_and_grads(model, padded, full_head)
    loss_pack, g_pack = _loss_and_grads(model, packed, full_head)
    torch.testing.assert_close(loss_pack, loss_pad, rtol=rtol, atol=atol)
    assert g_pad.keys() == g_pack.keys() and len(g_pad) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B)
    assert all(g.abs().max() > 0 for g in g_pad.values())
    for name in g_pad:
        torch.testing.assert_close(g_pack[name], g_pad[name], rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    ("family_name", "attn"), [("llama", "sdpa"), ("llama", "eager"), ("qwen2", "sdpa"), ("qwen2", "eager")]
)
@pytest.mark.parametrize("train_on_inputs", [False, True])
def test_packed_loss_and_lora_gradients_equal_the_padded_batch(request, family_name, attn, train_on_inputs):
    model_dir = request.getfixturevalue(f"tiny_{family_name}")
    model, tok, family = _lora(model_dir, family_name, attn)
    examples = _examples(tok, family, train_on_inputs)
    _assert_same(model, tok, examples, rtol=1e-5, atol=1e-5)


def test_packed_full_head_loss_equals_the_padded_one(tiny_llama):
    """transformers' whole-row head too: the boundary positions (a sample's last token before the next
    sample's first) carry no target."""
    model, tok, family = _lora(tiny_llama, "llama")
    examples = _examples(tok, family, train_on_inputs=True)
    _assert_same(model, tok, examples, rtol=1e-5, atol=1e-5, full_head=True)


def test_packed_4bit_loss_and_gradients_equal_the_padded_batch(tiny_llama):
    model, tok, family = _lora(tiny_llama, "llama", load_in_4bit=True)
    assert type(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear4bit"
    examples = _examples(tok, family, train_on_inputs=False)
    _assert_same(model, tok, examples, rtol=1e-4, atol=1e-5)


def _sample_loss(model, batch: dict, start: int, end: int) -> torch.Tensor:
    """Mean next-token loss of the packed sample at ``[start, end)`` of the row."""
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
    return torch.nn.functional.cross_entropy(
        logits[0, start : end - 1], batch["labels"][0, start + 1 : end], ignore_index=IGNORE_INDEX
    )


@pytest.mark.parametrize("family_name", ["llama", "qwen2"])
def test_packed_attention_is_block_diagonal(request, family_name):
    """Other tokens in sample 1 leave sample 2's loss unchanged; in one causal row they would not."""
    model, tok, family = _lora(request.getfixturevalue(f"tiny_{family_name}"), family_name)
    first, second = _examples(tok, family, train_on_inputs=False)[1:3]
    changed = type(first)(list(reversed(first.input_ids)), first.labels)
    n = len(first.input_ids)
    span = (n, n + len(second.input_ids))
    a, b = pack([first, second]), pack([changed, second])
    torch.testing.assert_close(
        _sample_loss(model, a, *span), _sample_loss(model, b, *span), rtol=0, atol=1e-6
    )
    alone = pack([second])
    torch.testing.assert_close(
        _sample_loss(model, a, *span),
        _sample_loss(model, alone, 0, len(second.input_ids)),
        rtol=1e-5,
        atol=1e-6,
    )
    # the same rows with positions that do not restart: one causal sequence, sample 2 sees sample 1
    running = {k: v for k, v in a.items()}
    running["position_ids"] = torch.arange(a["input_ids"].shape[1]).unsqueeze(0)
    running_b = {**b, "position_ids": running["position_ids"]}
    assert not torch.allclose(
        _sample_loss(model, running, *span), _sample_loss(model, running_b, *span), rtol=0, atol=1e-4
    )


def test_pack_concatenates_without_padding_and_drops_each_first_label(tiny_llama):
    family = get_family("llama")
    tok = load_tokenizer(tiny_llama, family)
    examples = _examples(tok, family, train_on_inputs=True)
    batch = pack(examples)
    lengths = [len(e.input_ids) for e in examples]
    assert (
        batch["input_ids"].shape == batch["position_ids"].shape == batch["labels"].shape == (1, sum(lengths))
    )
    assert batch["input_ids"][0].tolist() == [t for e in examples for t in e.input_ids]
    assert batch["position_ids"][0].tolist() == [p for n in lengths for p in range(n)]
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    assert all(batch["labels"][0, s] == IGNORE_INDEX for s in starts)
    assert all(e.labels[0] != IGNORE_INDEX for e in examples)  # train_on_inputs labels the first token
    # the loss counts exactly the tokens the effective-batch normaliser counts
    assert len(head_inputs(batch["labels"])[1]) == effective_batch_tokens(examples, [range(len(examples))])


def test_varlen_boundaries_are_the_ones_transformers_derives_from_the_positions(tiny_qwen2):
    """What flash_attention_2 gets instead of scanning the position ids in every layer; other attention
    implementations ignore it (same loss under sdpa)."""
    from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

    model, tok, family = _lora(tiny_qwen2, "qwen2")
    examples = _examples(tok, family, train_on_inputs=False)
    batch = pack(examples, varlen=True)
    (cu_q, cu_k), (max_q, max_k) = prepare_fa_kwargs_from_position_ids(batch["position_ids"])
    assert batch["cu_seq_lens_q"].dtype == cu_q.dtype == torch.int32
    assert batch["cu_seq_lens_q"].tolist() == batch["cu_seq_lens_k"].tolist() == cu_q.tolist()
    assert (
        batch["max_length_q"]
        == batch["max_length_k"]
        == int(max_q)
        == max(len(e.input_ids) for e in examples)
    )
    assert isinstance(batch["max_length_q"], int)
    with torch.no_grad():
        torch.testing.assert_close(loss_sum(model, batch), loss_sum(model, pack(examples)), rtol=0, atol=0)


def test_padding_fraction_of_packed_and_padded_batches():
    lengths = [10, 20, 30, 40]
    assert padding_fraction(lengths, [[0, 3], [1, 2]], packing=True) == 0.0
    assert padding_fraction(lengths, [[0, 3], [1, 2]], packing=False) == pytest.approx(1 - 100 / 140)
    batches = list(length_grouped_batches(lengths * 10, 4, seed=0, group_by_length=True))
    assert 0 < padding_fraction(lengths * 10, batches, packing=False) < 1 - 100 / 140


def _recipe(packing, attn: str = "auto") -> object:
    return recipe_from_dict(
        {
            "model": {"path": "m", "attn_implementation": attn},
            "data": {"train": "t.jsonl", "packing": packing},
            "train": {"output_dir": "o"},
        }
    )


def test_packing_resolves_per_family_and_attention_and_refuses_an_unsupported_family():
    assert _recipe("auto").data.packing == "auto"
    flash = "flash_attention_2"
    # auto: where the family's decoder takes packed rows and the attention is varlen (no row x row mask)
    assert resolve_packing(_recipe("auto", flash), get_family("llama")).data.packing is True
    assert resolve_packing(_recipe("auto", flash), get_family("qwen2")).data.packing is True
    assert resolve_packing(_recipe("auto", flash), get_family("chatglm2")).data.packing is False
    for attn in ("auto", "sdpa", "eager"):
        assert resolve_packing(_recipe("auto", attn), get_family("llama")).data.packing is False
        assert resolve_packing(_recipe(True, attn), get_family("llama")).data.packing is True
    assert resolve_packing(_recipe(False, flash), get_family("llama")).data.packing is False
    with pytest.raises(UserError, match=r"^data\.packing: true, but family 'baichuan' does not support"):
        resolve_packing(_recipe(True), get_family("baichuan"))
    with pytest.raises(UserError, match=r"data\.packing: expected true or false or 'auto', got 'yes please'"):
        _recipe("yes please")


def test_training_with_packing_follows_the_padded_run_and_saves_the_resolved_choice(tmp_path, tiny_llama):
    """Two optimizer steps on the 4-bit path, the same batches packed and padded: the same losses."""
    import json

    import yaml

    from llm4rec.train.loop import train

    rows = make_tallrec_samples(16, seed=5)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    losses = {}
    for packing in (True, False):
        out = tmp_path / f"out-{packing}"
        recipe = recipe_from_dict(
            {
                "model": {"path": str(tiny_llama), "family": "llama", "compute_dtype": "float32",
                          "gradient_checkpointing": False},
                "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targets": "qv"},
                "data": {"train": str(data), "cutoff_len": 256, "packing": packing, "group_by_length": False},
                "train": {"output_dir": str(out), "max_steps": 3, "micro_batch_size": 4, "batch_size": 8,
                          "learning_rate": 1e-2, "warmup_steps": 1, "resume": "never", "seed": 3},
                "logging": {"progress_bar": False},
            }
        )  # fmt: skip
        train(recipe)
        saved = yaml.safe_load((out / "recipe.yaml").read_text())
        assert saved["data"]["packing"] is packing
        records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
        losses[packing] = [r["loss"] for r in records if "loss" in r]
    assert len(losses[True]) == 3 and len(set(losses[True])) == 3  # the steps changed the adapter
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_the_memory_plan_counts_the_packed_row():
    """sdpa: the row's [N, N] mask (bool + the compute-dtype copy); eager: a row-long attention row per
    token; flash_attention_2: nothing more than the padded batch."""
    from pathlib import Path

    from llm4rec.config import load_recipe
    from llm4rec.models.planner import GIB, plan_recipe

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "tallrec_ml1m.yaml"
    fixed = ["train.micro_batch_size=8", "model.gradient_checkpointing=true"]

    def plan(packing: str, attn: str):
        over = [*fixed, f"data.packing={packing}", f"model.attn_implementation={attn}"]
        return plan_recipe(load_recipe(recipe, over), gpu_gb=24, seq_len=512, shape_spread=0.0)

    n = 8 * 512
    sdpa = plan("true", "sdpa")
    assert sdpa.settings.packing and "in one packed row" in sdpa.table()
    assert not plan("auto", "sdpa").settings.packing  # auto: only under flash attention
    assert plan("auto", "flash_attention_2").settings.packing
    mask = sdpa.parts["activations"] - plan("false", "sdpa").parts["activations"]
    assert mask == n * n * (2 + 1)  # bf16 additive copy + the bool mask
    flash = plan("true", "flash_attention_2").total_bytes
    assert flash == plan("false", "flash_attention_2").total_bytes
    eager_gain = plan("true", "eager").total_gb - plan("false", "eager").total_gb
    assert eager_gain > 1.0, eager_gain  # 32 heads x 4096 instead of 512 probabilities per token and layer
    assert sdpa.total_bytes - plan("false", "sdpa").total_bytes < 0.1 * GIB
