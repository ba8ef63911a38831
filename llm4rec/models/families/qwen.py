"""Qwen-7B (v1), converted onto transformers' own ``Qwen2ForCausalLM`` (no remote code is run).

Qwen-1 blocks compute ``x += c_proj(attn(rmsnorm(x)))`` and ``x += mlp.c_proj(w1(h) * silu(w2(h)))``
with ``h = rmsnorm(x)``: full multi-head attention (no grouped keys), a bias on the fused ``c_attn`` only,
rotary embeddings over the whole head (``rotary_pct`` 1) in the half-split layout with base
``rotary_emb_base``, and an untied output head. That is Qwen2's function once the tensors are renamed and
split, with ``w2`` as the gate (it goes through SiLU) and ``w1`` as the up projection:

==================================================  ===============================================
original key                                        converted key
==================================================  ===============================================
``transformer.wte.weight``                          ``model.embed_tokens.weight``
``transformer.h.N.ln_1.weight``                     ``model.layers.N.input_layernorm.weight``
``transformer.h.N.attn.c_attn.{weight,bias}``       ``model.layers.N.self_attn.{q,k,v}_proj.*`` (thirds)
``transformer.h.N.attn.c_proj.weight``              ``model.layers.N.self_attn.o_proj.weight``
``transformer.h.N.ln_2.weight``                     ``model.layers.N.post_attention_layernorm.weight``
``transformer.h.N.mlp.w2.weight``                   ``model.layers.N.mlp.gate_proj.weight``
``transformer.h.N.mlp.w1.weight``                   ``model.layers.N.mlp.up_proj.weight``
``transformer.h.N.mlp.c_proj.weight``               ``model.layers.N.mlp.down_proj.weight``
``transformer.ln_f.weight``                         ``model.norm.weight``
``lm_head.weight``                                  ``lm_head.weight``
==================================================  ===============================================

Qwen-1's ``intermediate_size`` counts both MLP branches: each is ``intermediate_size // 2`` wide, which is
Qwen2's ``intermediate_size``. Qwen-1's long-context tricks (``use_dynamic_ntk``, ``use_logn_attn``) only
act in inference on sequences longer than ``seq_length`` (8192 for Qwen-7B): the converted model computes
Qwen-1's function for sequences up to ``seq_length`` tokens (its ``max_position_embeddings``), and in
training, where Qwen-1 switches both off, at any length.

Checkpoints are read and written by :mod:`llm4rec.models.legacy.checkpoint_io`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from llm4rec.errors import UserError
from llm4rec.io import atomic_dir
from llm4rec.models.families.base import llama_layout_family
from llm4rec.models.legacy import _tok_qwen
from llm4rec.models.legacy.checkpoint_io import (
    check_vocab_fits,
    config_value,
    convert_checkpoint,
    dtype_name,
    read_original_config,
    split_rows,
    write_config,
)

# ---------------------------------------------------------------------------------------------------------
# Qwen-1 -> Qwen2
# ---------------------------------------------------------------------------------------------------------

_QWEN_RENAMES = {
    "ln_1.weight": "input_layernorm.weight",
    "ln_2.weight": "post_attention_layernorm.weight",
    "attn.c_proj.weight": "self_attn.o_proj.weight",
    "mlp.w2.weight": "mlp.gate_proj.weight",  # w2 goes through SiLU: Qwen-1's gate
    "mlp.w1.weight": "mlp.up_proj.weight",
    "mlp.c_proj.weight": "mlp.down_proj.weight",
}
#: buffers some original checkpoints carry; they are recomputed, never converted
_QWEN_BUFFERS = re.compile(r".*(\.rotary_emb\.inv_freq|\.attn\.masked_bias|\.attn\.bias|logn_tensor)")


def qwen2_config(cfg: dict[str, Any], src: Path) -> dict[str, Any]:
    """Qwen2 ``config.json`` fields computing the same function as the Qwen-1 config ``cfg``."""
    hidden = config_value(cfg, "hidden_size", src)
    heads = config_value(cfg, "num_attention_heads", src)
    inter = config_value(cfg, "intermediate_size", src)
    kv_channels = cfg.get("kv_channels", hidden // heads)
    if hidden % heads or kv_channels != hidden // heads:
        raise UserError(
            f"{src / 'config.json'}: kv_channels ({kv_channels}) must equal hidden_size / num_attention_heads "
            f"({hidden}/{heads}); Qwen-1's own code assumes it"
        )
    if float(cfg.get("rotary_pct", 1.0)) != 1.0:
        raise UserError(
            f"{src / 'config.json'}: rotary_pct {cfg['rotary_pct']} < 1 is not supported (Qwen-7B has 1.0)"
        )
    if cfg.get("no_bias", True) is not True:
        raise UserError(
            f"{src / 'config.json'}: no_bias=false (biases on c_proj/MLP) has no Qwen2 equivalent"
        )
    if inter % 2:
        raise UserError(f"{src / 'config.json'}: intermediate_size {inter} must be even (two MLP branches)")
    seq_length = int(cfg.get("seq_length", cfg.get("max_position_embeddings", 2048)))
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": config_value(cfg, "vocab_size", src),
        "hidden_size": hidden,
        "intermediate_size": inter // 2,
        "num_hidden_layers": config_value(cfg, "num_hidden_layers", src),
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "head_dim": hidden // heads,
        "hidden_act": "silu",
        "max_position_embeddings": seq_length,
        "rms_norm_eps": float(cfg.get("layer_norm_epsilon", 1e-6)),
        "rope_theta": float(cfg.get("rotary_emb_base", 10000)),
        "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", False)),
        "use_sliding_window": False,
        "attention_dropout": float(cfg.get("attn_dropout_prob", 0.0)),
        "initializer_range": float(cfg.get("initializer_range", 0.02)),
        "bos_token_id": None,
        "eos_token_id": None,  # set from the converted tokenizer
        "pad_token_id": None,
        "use_cache": True,
    }


def _convert_qwen_tensor(key: str, t: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    if _QWEN_BUFFERS.fullmatch(key):
        return []
    if key == "transformer.wte.weight":
        return [("model.embed_tokens.weight", t)]
    if key == "transformer.ln_f.weight":
        return [("model.norm.weight", t)]
    if key == "lm_head.weight":
        return [(key, t)]
    m = re.fullmatch(r"transformer\.h\.(\d+)\.(.+)", key)
    if m is None:
        raise UserError(f"unexpected tensor {key!r} in a Qwen-1 checkpoint")
    layer, rest = f"model.layers.{m.group(1)}.", m.group(2)
    if rest in ("attn.c_attn.weight", "attn.c_attn.bias"):
        kind = rest.rsplit(".", 1)[1]
        q, k, v = split_rows(t, 3, key)
        return [(f"{layer}self_attn.{p}_proj.{kind}", x) for p, x in zip("qkv", (q, k, v))]
    if rest in _QWEN_RENAMES:
        return [(layer + _QWEN_RENAMES[rest], t)]
    raise UserError(f"unexpected tensor {key!r} in a Qwen-1 checkpoint (biases other than c_attn's?)")


def convert(src: Path, out: Path, family: str = "qwen") -> Path:
    """Convert an original Qwen-7B (v1) directory into a Qwen2-layout directory ``out`` (atomically)."""
    src, out = Path(src), Path(out)
    if family != "qwen":
        raise UserError(f"--family: the Qwen-1 converter handles 'qwen', not {family!r}")
    cfg = read_original_config(src)
    if cfg.get("model_type") != "qwen":
        raise UserError(
            f"{src / 'config.json'}: model_type {cfg.get('model_type')!r} is not Qwen-1's 'qwen' "
            "(Qwen1.5/Qwen2 checkpoints load directly as family 'qwen2')"
        )
    tiktoken_file = src / "qwen.tiktoken"
    if not tiktoken_file.is_file():
        raise UserError(f"{src}: no qwen.tiktoken (Qwen-1's vocabulary) to convert the tokenizer from")
    new_cfg = qwen2_config(cfg, src)
    n_layers = new_cfg["num_hidden_layers"]
    expected: Counter[str] = Counter({"model.embed_tokens.weight": 1, "model.norm.weight": 1})
    if not new_cfg["tie_word_embeddings"]:
        expected["lm_head.weight"] = 1
    for name in ("input_layernorm", "post_attention_layernorm"):
        expected[f"model.layers.N.{name}.weight"] = n_layers
    for p in ("q", "k", "v"):
        expected[f"model.layers.N.self_attn.{p}_proj.weight"] = n_layers
        expected[f"model.layers.N.self_attn.{p}_proj.bias"] = n_layers
    for name in ("self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
        expected[f"model.layers.N.{name}.weight"] = n_layers
    with atomic_dir(out) as tmp:
        n_ids = _tok_qwen.save_qwen_tokenizer(tiktoken_file, tmp, new_cfg["max_position_embeddings"])
        check_vocab_fits(src, n_ids, new_cfg["vocab_size"])
        # Qwen-1's special tokens follow the mergeable ranks, <|endoftext|> first
        new_cfg["eos_token_id"] = n_ids - len(_tok_qwen.SPECIAL_TOKENS)
        dtypes = convert_checkpoint(src, tmp, _convert_qwen_tensor, expected)
        new_cfg["dtype"] = dtype_name(dtypes)
        new_cfg["llm4rec_family"] = "qwen"
        new_cfg["llm4rec_converted_from"] = "Qwen-1 (QWenLMHeadModel)"
        write_config("Qwen2Config", new_cfg, tmp)
        (tmp / "generation_config.json").write_text(
            json.dumps({"eos_token_id": new_cfg["eos_token_id"], "pad_token_id": new_cfg["eos_token_id"]})
            + "\n",
            encoding="utf-8",
        )
    return out


def write_tokenizer(src: Path, out: Path, cfg: dict[str, Any]) -> None:
    """The converted tokenizer of the release ``src`` (its ``qwen.tiktoken``) written to ``out``."""
    _tok_qwen.save_qwen_tokenizer(src / "qwen.tiktoken", out, 8192)
    (out / "config.json").write_text(json.dumps({"model_type": "qwen2"}), encoding="utf-8")


FAMILY = llama_layout_family(
    "qwen",
    "Qwen-7B v1 (converted onto Qwen2 classes; no remote code)",
    # Qwen-1 defines no pad token; its own fine-tuning code pads with <|endoftext|>. Labels come from
    # lengths, never from pad ids, so the end-of-text the loss needs stays trained.
    pad_token_candidates=("<|endoftext|>",),
    converter=convert,
    write_tokenizer=write_tokenizer,
    converted_config=lambda cfg: qwen2_config(cfg, Path(".")),
)
