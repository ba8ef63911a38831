"""Baichuan-7B and Baichuan2-7B, converted onto transformers' own ``LlamaForCausalLM`` (no remote code).

Both 7B models are LLaMA decoders (pre-norm RMSNorm blocks, rotary embeddings with base 10000 in the
half-split layout, SwiGLU MLP, untied head) whose attention projections are fused into one ``W_pack``
matrix holding the query, key and value rows in that order. Converting splits ``W_pack`` into thirds;
every other tensor keeps its name:

==============================================  ===================================================
original key                                    converted key
==============================================  ===================================================
``model.layers.N.self_attn.W_pack.weight``      ``model.layers.N.self_attn.{q,k,v}_proj.weight``
``lm_head.weight`` (Baichuan2)                  ``lm_head.weight`` with every row divided by its L2 norm
all other tensors                               unchanged
==============================================  ===================================================

Baichuan2's output layer is a "NormHead": in inference it multiplies by the row-normalised weight, so the
normalisation is folded into the converted weight (exact for inference and for LoRA training, where the
head is frozen). Baichuan-7B's head is a plain linear layer.

The 13B models (Baichuan-13B, Baichuan2-13B) use ALiBi attention biases instead of rotary embeddings,
which no LLaMA-layout class computes: they are out of scope and rejected with a clear message.

The tokenizer (sentencepiece BPE with hundreds of user-defined pieces) becomes a fast tokenizer with the
same ids: see :mod:`llm4rec.models.legacy._tok_baichuan`.

Both generations share this module's converter; :mod:`llm4rec.models.families.baichuan2` holds what only
Baichuan2 has (its chat template and registry entry).
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
from llm4rec.models.families.base import BackboneFamily, llama_layout_family
from llm4rec.models.legacy import _tok_baichuan
from llm4rec.models.legacy import checkpoint_io as ckio

#: ``architectures`` of each family's original config (Baichuan-7B spells it with a capital C)
ARCHITECTURE = {"baichuan": "BaiChuanForCausalLM", "baichuan2": "BaichuanForCausalLM"}
#: Baichuan2's vocabulary size (used to tell the generations apart when a config lists no architecture)
BAICHUAN2_VOCAB = 125696


def generation(cfg: dict[str, Any]) -> str | None:
    """'baichuan' or 'baichuan2' for an original Baichuan ``config.json`` dict (None if not Baichuan).

    The ``architectures`` spelling decides (Baichuan-7B: ``BaiChuanForCausalLM``; Baichuan2 and the 13B
    models: ``BaichuanForCausalLM``); without it, Baichuan2's vocabulary size does.
    """
    if cfg.get("model_type") != "baichuan":
        return None
    archs = cfg.get("architectures") or []
    for family, arch in ARCHITECTURE.items():
        if arch in archs:
            return family
    return "baichuan2" if cfg.get("vocab_size") == BAICHUAN2_VOCAB else "baichuan"


def check_family(cfg: dict[str, Any], family: str, src: Path) -> None:
    """Reject 13B (ALiBi) checkpoints and a ``--family`` that contradicts the original config."""
    where = src / "config.json"
    found = generation(cfg)
    if found is None:
        raise UserError(f"{where}: model_type {cfg.get('model_type')!r} is not Baichuan's 'baichuan'")
    if (
        "max_position_embeddings" not in cfg
        or cfg.get("hidden_size") == 5120
        or cfg.get("num_hidden_layers") == 40
    ):
        raise UserError(
            f"{where}: this is a 13B Baichuan model (ALiBi attention, no max_position_embeddings); only the 7B "
            "models (rotary embeddings) can be converted to the LLaMA layout"
        )
    if found != family:
        raise UserError(
            f"{where}: architectures {cfg.get('architectures')} / vocab_size {cfg.get('vocab_size')} is a "
            f"{found!r} checkpoint, not {family!r}; run with --family {found} (their output layers differ)"
        )


def llama_config(cfg: dict[str, Any], src: Path) -> dict[str, Any]:
    """LLaMA ``config.json`` fields computing the same function as the Baichuan 7B config ``cfg``."""
    hidden = ckio.config_value(cfg, "hidden_size", src)
    heads = ckio.config_value(cfg, "num_attention_heads", src)
    if hidden % heads:
        raise UserError(
            f"{src / 'config.json'}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
        )
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise UserError(f"{src / 'config.json'}: hidden_act {act!r}; Baichuan 7B models use 'silu'")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": ckio.config_value(cfg, "vocab_size", src),
        "hidden_size": hidden,
        "intermediate_size": ckio.config_value(cfg, "intermediate_size", src),
        "num_hidden_layers": ckio.config_value(cfg, "num_hidden_layers", src),
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "head_dim": hidden // heads,
        "hidden_act": "silu",
        "max_position_embeddings": ckio.config_value(cfg, "max_position_embeddings", src),
        "rms_norm_eps": float(cfg.get("rms_norm_eps", 1e-6)),
        # both 7B modelling files build their rotary embedding with the default base
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", False)),
        "initializer_range": float(cfg.get("initializer_range", 0.02)),
        "bos_token_id": cfg.get("bos_token_id", 1),
        "eos_token_id": cfg.get("eos_token_id", 2),
        "pad_token_id": cfg.get("pad_token_id", 0),
        "use_cache": True,
    }


_ROTARY_BUFFER = re.compile(r".*\.rotary_emb\.inv_freq")
_PASS_THROUGH = re.compile(
    r"model\.embed_tokens\.weight|model\.norm\.weight|lm_head\.weight|model\.layers\.\d+\.("
    r"input_layernorm|post_attention_layernorm|self_attn\.o_proj|mlp\.gate_proj|mlp\.up_proj|mlp\.down_proj"
    r")\.weight"
)


def normalize_rows(w: torch.Tensor) -> torch.Tensor:
    """Each row divided by its L2 norm (NormHead's inference weight), computed in fp32."""
    w32 = w.float()
    return (w32 / w32.norm(dim=1, keepdim=True).clamp_min(1e-12)).to(w.dtype)


def _tensor_converter(family: str):
    def convert_tensor(key: str, t: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        if _ROTARY_BUFFER.fullmatch(key):
            return []
        m = re.fullmatch(r"(model\.layers\.\d+\.self_attn\.)W_pack\.weight", key)
        if m:
            q, k, v = ckio.split_rows(t, 3, key)
            return [(f"{m.group(1)}{p}_proj.weight", x) for p, x in zip("qkv", (q, k, v))]
        if key == "lm_head.weight" and family == "baichuan2":
            return [(key, normalize_rows(t))]
        if _PASS_THROUGH.fullmatch(key):
            return [(key, t)]
        raise UserError(f"unexpected tensor {key!r} in a {family} checkpoint")

    return convert_tensor


def convert(src: Path, out: Path, family: str) -> Path:
    """Convert an original Baichuan-7B / Baichuan2-7B directory into a LLaMA-layout directory ``out``."""
    src, out = Path(src), Path(out)
    if family not in ARCHITECTURE:
        raise UserError(
            f"--family: the Baichuan converter handles 'baichuan' and 'baichuan2', not {family!r}"
        )
    cfg = ckio.read_original_config(src)
    check_family(cfg, family, src)
    new_cfg = llama_config(cfg, src)
    n = new_cfg["num_hidden_layers"]
    expected: Counter[str] = Counter({"model.embed_tokens.weight": 1, "model.norm.weight": 1})
    if not new_cfg["tie_word_embeddings"]:
        expected["lm_head.weight"] = 1
    for name in (
        "input_layernorm",
        "post_attention_layernorm",
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ):
        expected[f"model.layers.N.{name}.weight"] = n
    with atomic_dir(out) as tmp:
        n_ids = _tok_baichuan.save_baichuan_tokenizer(src, tmp, new_cfg["max_position_embeddings"])
        ckio.check_vocab_fits(src, n_ids, new_cfg["vocab_size"])
        dtypes = ckio.convert_checkpoint(src, tmp, _tensor_converter(family), expected)
        new_cfg["dtype"] = ckio.dtype_name(dtypes)
        new_cfg["llm4rec_family"] = family
        new_cfg["llm4rec_converted_from"] = f"{ARCHITECTURE[family]} ({family})"
        ckio.write_config("LlamaConfig", new_cfg, tmp)
        gen = {k: new_cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
        (tmp / "generation_config.json").write_text(json.dumps(gen) + "\n", encoding="utf-8")
    return out


def planned_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """:func:`llama_config` for the planner, which may only have Baichuan2's ``model_max_length``."""
    return llama_config({"max_position_embeddings": cfg.get("model_max_length", 4096), **cfg}, Path("."))


def write_tokenizer(src: Path, out: Path, cfg: dict[str, Any]) -> None:
    """The converted tokenizer of the release ``src`` written to ``out`` (no weights read)."""
    _tok_baichuan.save_baichuan_tokenizer(src, out, 4096)
    (out / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")


def baichuan_family(name: str, description: str, **fields: Any) -> BackboneFamily:
    """The registry entry of a Baichuan 7B generation: both share the converter and everything else here."""
    return llama_layout_family(
        name,
        description,
        model_types=("baichuan",),
        # the original tokenizer_config pads with <unk> (id 0, the config's pad_token_id)
        pad_token_candidates=("<unk>",),
        converter=convert,
        write_tokenizer=write_tokenizer,
        converted_config=planned_config,
        # Baichuan2 shares its architecture name with the 13B (ALiBi) models, which are detected as
        # baichuan2 too: the converter tells them apart and rejects them with a clear message
        detect=lambda cfg: generation(cfg) == name,
        **fields,
    )


FAMILY = baichuan_family(
    "baichuan", "Baichuan-7B (converted onto LLaMA classes; no remote code; 13B/ALiBi not supported)"
)
