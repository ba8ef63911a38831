"""ChatGLM2-6B and ChatGLM3-6B, converted onto transformers' own GLM classes (no remote code is run).

The second and third ChatGLM generations compute exactly the function of ``GlmForCausalLM``
(``model_type: glm``): pre-norm RMSNorm blocks, multi-query attention with ``multi_query_group_num``
key/value groups and a bias on the fused query/key/value projection, rotary embeddings on the first half
of each head in the interleaved (pairwise) layout, a SwiGLU MLP whose fused ``dense_h_to_4h`` holds the
gate then the up projection, and an untied output layer. The converter therefore only renames and splits
tensors:

===========================================================  ===========================================
original key (``transformer.`` prefix)                       converted key (``model.`` prefix)
===========================================================  ===========================================
``embedding.word_embeddings.weight``                         ``embed_tokens.weight``
``encoder.layers.N.input_layernorm.weight``                  ``layers.N.input_layernorm.weight``
``encoder.layers.N.self_attention.query_key_value.*``        ``layers.N.self_attn.{q,k,v}_proj.*``
``encoder.layers.N.self_attention.dense.weight``             ``layers.N.self_attn.o_proj.weight``
``encoder.layers.N.post_attention_layernorm.weight``         ``layers.N.post_attention_layernorm.weight``
``encoder.layers.N.mlp.dense_h_to_4h.weight``                ``layers.N.mlp.gate_up_proj.weight``
``encoder.layers.N.mlp.dense_4h_to_h.weight``                ``layers.N.mlp.down_proj.weight``
``encoder.final_layernorm.weight``                           ``norm.weight``
``output_layer.weight``                                      ``lm_head.weight`` (no ``model.`` prefix)
===========================================================  ===========================================

ChatGLM3 shares this converter: what differs between the generations is a :class:`GlmGeneration` (special
tokens, stop tokens, how ``rope_ratio`` scales the rotary embedding); ChatGLM3's is in
:mod:`llm4rec.models.families.chatglm3`, with its chat template and registry entry.

The sentencepiece tokenizer becomes a fast BPE tokenizer with the original ids, built by transformers' own
sentencepiece converter (:func:`sp_bpe_tokenizer`); the special tokens
``[MASK] [gMASK] [sMASK] sop eop`` (and for ChatGLM3 the role tokens) follow the sentencepiece vocabulary,
and ``[gMASK] sop`` is put in front of every encoded text as the original tokenizer does.

Checkpoints are read and written by :mod:`llm4rec.models.legacy.checkpoint_io`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llm4rec.errors import UserError
from llm4rec.io import atomic_dir
from llm4rec.models.families.base import BackboneFamily
from llm4rec.models.legacy.checkpoint_io import (
    check_vocab_fits,
    convert_checkpoint,
    load_sp_proto,
    read_original_config,
    require,
    save_fast_tokenizer,
)
from llm4rec.models.templates import PromptTemplate


@dataclass(frozen=True)
class GlmGeneration:
    """What tells ChatGLM2 and ChatGLM3 apart when converting: the architecture is the same."""

    #: the family name (recorded as ``llm4rec_family``)
    name: str
    #: special tokens the original tokenizer appends after the sentencepiece pieces, in id order
    special_tokens: tuple[str, ...]
    #: those of them recognised inside text
    text_special: tuple[str, ...] = ()
    #: tokens that end generation besides the config's EOS
    stop_tokens: tuple[str, ...] = ()
    #: ``rope_ratio`` != 1 scales the rotary base (True) or divides the positions (False, linear)
    rope_ratio_scales_base: bool = False


#: special tokens ChatGLM2's tokenizer appends after the sentencepiece pieces, in id order
SPECIAL_TOKENS = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop")
#: ChatGLM2: no special token inside text; ChatGLM2-32K divides the positions by rope_ratio
GLM2 = GlmGeneration("chatglm2", SPECIAL_TOKENS)

#: linear layers of the converted GLM block (LoRA targets)
GLM_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj")


# --------------------------------------------------------------------------- reading originals


def reject_unsupported_keys(key: str, src: Path) -> None:
    """Refuse P-tuning prefixes and the original int4/int8 quantized layouts with a clear message."""
    if "prefix_encoder" in key:
        raise UserError(f"{src}: holds a P-tuning prefix encoder ({key}); convert the base model instead")
    if key.endswith("weight_scale"):
        raise UserError(
            f"{src}: is a quantized ChatGLM checkpoint ({key}); convert the fp16 release and let llm4rec "
            "quantize it with bitsandbytes"
        )


# --------------------------------------------------------------------------- ChatGLM2/3 model


def glm_config_dict(cfg: dict[str, Any], gen: GlmGeneration, src: Path) -> dict[str, Any]:
    """Keyword arguments of transformers' ``GlmConfig`` for an original ChatGLM2/3 ``config.json``."""
    if cfg.get("quantization_bit"):
        raise UserError(
            f"{src}/config.json: quantization_bit={cfg['quantization_bit']}; convert the fp16 release"
        )
    if cfg.get("pre_seq_len"):
        raise UserError(f"{src}/config.json: pre_seq_len is set (P-tuning); convert the base model")
    for key, want in (
        ("add_bias_linear", False),
        ("rmsnorm", True),
        ("apply_residual_connection_post_layernorm", False),
        ("post_layer_norm", True),
    ):
        if key in cfg and bool(cfg[key]) != want:
            raise UserError(
                f"{src}/config.json: {key}={cfg[key]} is not the ChatGLM2/3-6B architecture "
                f"(transformers' GLM needs {key}={want})"
            )
    heads = int(require(cfg, "num_attention_heads", src))
    hidden = int(require(cfg, "hidden_size", src))
    head_dim = int(cfg.get("kv_channels") or hidden // heads)
    kv_heads = int(require(cfg, "multi_query_group_num", src)) if cfg.get("multi_query_attention") else heads
    rope_ratio = float(cfg.get("rope_ratio", 1) or 1)
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
    if rope_ratio != 1:
        if gen.rope_ratio_scales_base:
            rope["rope_theta"] = 10000.0 * rope_ratio
        else:  # linear interpolation
            rope.update(rope_type="linear", factor=rope_ratio)
    eos = cfg.get("eos_token_id", 2)
    return {
        "vocab_size": int(require(cfg, "padded_vocab_size", src)),
        "hidden_size": hidden,
        "intermediate_size": int(require(cfg, "ffn_hidden_size", src)),
        "num_hidden_layers": int(require(cfg, "num_layers", src)),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": int(cfg.get("seq_length", 8192)),
        "rms_norm_eps": float(cfg.get("layernorm_epsilon", 1e-5)),
        "attention_bias": bool(cfg.get("add_qkv_bias", True)),
        "attention_dropout": float(cfg.get("attention_dropout", 0.0)),
        "tie_word_embeddings": False,
        "pad_token_id": int(cfg.get("pad_token_id", 0)),
        "eos_token_id": eos,
        "bos_token_id": None,
        "rope_parameters": rope,
        "dtype": cfg.get("torch_dtype", "float16"),
        "architectures": ["GlmForCausalLM"],
        "llm4rec_family": gen.name,
    }


def convert_glm_tensor(key: str, t: torch.Tensor, gc: dict[str, Any]) -> list[tuple[str, torch.Tensor]]:
    """Map one original ChatGLM2/3 tensor onto the GLM layout (the fused q/k/v is split)."""
    if key.endswith("inv_freq"):
        return []  # recomputed by the model
    if key == "transformer.output_layer.weight":
        return [("lm_head.weight", t)]
    if key == "transformer.embedding.word_embeddings.weight":
        return [("model.embed_tokens.weight", t)]
    if key == "transformer.encoder.final_layernorm.weight":
        return [("model.norm.weight", t)]
    prefix = "transformer.encoder.layers."
    if not key.startswith(prefix):
        raise KeyError(key)
    n, rest = key[len(prefix) :].split(".", 1)
    layer = f"model.layers.{n}."
    simple = {
        "input_layernorm.weight": "input_layernorm.weight",
        "post_attention_layernorm.weight": "post_attention_layernorm.weight",
        "self_attention.dense.weight": "self_attn.o_proj.weight",
        "mlp.dense_h_to_4h.weight": "mlp.gate_up_proj.weight",
        "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight",
    }
    if rest in simple:
        return [(layer + simple[rest], t)]
    if rest.startswith("self_attention.query_key_value."):
        kind = rest.rsplit(".", 1)[1]  # weight or bias
        heads, kv, hd = gc["num_attention_heads"], gc["num_key_value_heads"], gc["head_dim"]
        if gc.get("_multi_query", True):
            q, k, v = t.split([heads * hd, kv * hd, kv * hd], dim=0)
        else:
            # without multi-query attention the original views the output as [heads, 3 * head_dim]
            per_head = t.reshape(heads, 3, hd, *t.shape[1:])
            q, k, v = (per_head[:, i].reshape(heads * hd, *t.shape[1:]) for i in range(3))
        return [(f"{layer}self_attn.{name}_proj.{kind}", x.clone()) for name, x in zip("qkv", (q, k, v))]
    raise KeyError(key)


# --------------------------------------------------------------------------- tokenizers


def sp_bpe_tokenizer(model_path: Path, extra_tokens: tuple[str, ...], text_special: tuple[str, ...]) -> Any:
    """A ``tokenizers`` BPE equal to a sentencepiece BPE model, with ``extra_tokens`` appended to the vocab.

    Built by transformers' own sentencepiece converter (``SpmConverter.build_tokenizer_from_spm_proto``, what
    ``TokenizersBackend`` uses for a bare ``tokenizer.model``): merges ranked by the merged piece's score,
    byte fallback, dummy prefix and whitespace escaping as the model's normaliser spec says. On ChatGLM2/3's
    real ``tokenizer.model`` it gives sentencepiece's ids on all 13,444 corpus texts and 96 long runs measured
    (``scripts/compare_tokenizer_converters.py``). Only ``text_special`` of the extra tokens are matched
    inside text.
    """
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import SpmConverter

    proto = load_sp_proto(model_path)
    if proto.trainer_spec.model_type != 2:
        raise UserError(f"{model_path}: expected a sentencepiece BPE model (ChatGLM2/3's tokenizer.model)")
    ns = proto.normalizer_spec
    if ns.name not in ("identity", "") or ns.remove_extra_whitespaces:
        raise UserError(f"{model_path}: unexpected normalizer {ns.name!r}; not a ChatGLM2/3 tokenizer.model")
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    for j, tok in enumerate(extra_tokens):
        # ids follow the pieces; a piece spelled like a special token maps to the special id, as the
        # original's convert_token_to_id looks special tokens up first (only pieces are ever merged)
        vocab[tok] = len(proto.pieces) + j
    tk = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
    if text_special:
        tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in text_special])
    return tk


def build_chatglm2_tokenizer(model_path: Path, gen: GlmGeneration) -> Any:
    """The fast tokenizer of the GLM generation ``gen`` (ChatGLM2 or ChatGLM3)."""
    from tokenizers import processors

    tk = sp_bpe_tokenizer(model_path, gen.special_tokens, gen.text_special)
    gmask, sop = tk.token_to_id("[gMASK]"), tk.token_to_id("sop")
    eos = tk.token_to_id("</s>")
    tk.post_processor = processors.TemplateProcessing(
        single="[gMASK] sop $A",
        pair="[gMASK] sop $A $B </s>",
        special_tokens=[("[gMASK]", gmask), ("sop", sop), ("</s>", eos)],
    )
    return tk


def write_chatglm2_tokenizer(model_path: Path, out: Path, gen: GlmGeneration, max_length: int) -> None:
    """Write ``tokenizer.json`` + ``tokenizer_config.json`` loadable by ``AutoTokenizer`` without remote code."""
    tk = build_chatglm2_tokenizer(model_path, gen)
    # the original's properties: EOS </s>, padding with <unk> (id 0) on the left
    save_fast_tokenizer(
        tk, out, max_length, eos_token="</s>", unk_token="<unk>", pad_token="<unk>", padding_side="left"
    )


# --------------------------------------------------------------------------- family detection


def checkpoint_generation(cfg: dict[str, Any]) -> str:
    """'chatglm' for a first-generation ChatGLM-6B config, 'chatglm2' for a ChatGLM2/3 one.

    All three generations write ``model_type: chatglm``; the fields tell them apart (ChatGLM2 and 3 share
    the architecture and differ only in their tokenizer's special tokens).
    """
    if "padded_vocab_size" in cfg or "multi_query_group_num" in cfg or "ffn_hidden_size" in cfg:
        return "chatglm2"
    if "position_encoding_2d" in cfg or "inner_hidden_size" in cfg or "gmask_token_id" in cfg:
        return "chatglm"
    return "unknown"


# --------------------------------------------------------------------------- convert


def convert(src: Path, out: Path, family: str = "chatglm2") -> Path:
    """Convert an original ChatGLM2-6B directory into a GLM directory at ``out`` (atomically)."""
    return convert_generation(src, out, family, GLM2)


def convert_generation(src: Path, out: Path, family: str, gen: GlmGeneration) -> Path:
    """Convert an original ChatGLM2-6B / ChatGLM3-6B (``gen``) directory into a GLM directory at ``out``."""
    from transformers import GenerationConfig, GlmConfig

    src, out = Path(src), Path(out)
    if family != gen.name:
        raise UserError(
            f"--family: {family!r} is not converted by the {gen.name} converter (use chatglm2 or chatglm3)"
        )
    cfg = read_original_config(src)
    if checkpoint_generation(cfg) == "chatglm":
        raise UserError(
            f"{src}: is a first-generation ChatGLM-6B checkpoint; convert it with --family chatglm"
        )
    tok_model = src / "tokenizer.model"
    if not tok_model.is_file():
        raise UserError(
            f"{tok_model}: not found; ChatGLM2/3 ship their sentencepiece model as tokenizer.model"
        )
    gc_kwargs = glm_config_dict(cfg, gen, src)
    with atomic_dir(out) as tmp:
        write_chatglm2_tokenizer(tok_model, tmp, gen, gc_kwargs["max_position_embeddings"])
        vocab = json.loads((tmp / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
        check_vocab_fits(src, len(vocab), gc_kwargs["vocab_size"])
        mapping = dict(gc_kwargs, _multi_query=bool(cfg.get("multi_query_attention")))

        def convert_tensor(key: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
            reject_unsupported_keys(key, src)
            try:
                return convert_glm_tensor(key, tensor, mapping)
            except KeyError:
                raise UserError(f"{src}: unexpected tensor {key}; not a ChatGLM2/3 checkpoint") from None

        expected = Counter({"model.embed_tokens.weight": 1, "model.norm.weight": 1, "lm_head.weight": 1})
        convert_checkpoint(src, tmp, convert_tensor, expected)
        GlmConfig(**gc_kwargs).save_pretrained(str(tmp))
        eos = gc_kwargs["eos_token_id"]
        if gen.stop_tokens:
            eos = [eos, *(vocab[t] for t in gen.stop_tokens)]
        GenerationConfig(eos_token_id=eos, pad_token_id=gc_kwargs["pad_token_id"]).save_pretrained(str(tmp))
    return out


# --------------------------------------------------------------------------- registry entries


def one_format(name: str, text: str, text_no_input: str) -> tuple[PromptTemplate, PromptTemplate]:
    """The zh and en templates of a chat format the release writes the same way in every language."""
    zh, en = (
        PromptTemplate(name=f"{name}_{lang}", lang=lang, text=text, text_no_input=text_no_input)
        for lang in ("zh", "en")
    )
    return zh, en


#: ChatGLM2's chat format, as its tokenizer's ``build_prompt`` writes one round ("[Round 1]\n\n问：{query}
#: \n\n答："); the release has no other wording, so English prompts use it too. The answer follows "答：".
CHATGLM2_ZH, CHATGLM2_EN = one_format(
    "chatglm2", "[Round 1]\n\n问：{instruction}\n{input}\n\n答：", "[Round 1]\n\n问：{instruction}\n\n答："
)
_TARGETS = {"qv": ("q_proj", "v_proj"), "qkv": ("q_proj", "k_proj", "v_proj"), "all": GLM_LINEAR}

# Pad/EOS rule: the tokenizers pad with <unk> (id 0, left) and end with </s> (id 2), as config.json's
# pad_token_id / eos_token_id say; training appends </s> as the releases' fine-tuning does.
# model_types stays empty: ChatGLM-6B, ChatGLM2-6B and ChatGLM3-6B all say model_type "chatglm", so the
# family cannot be read from config.json (recipes name it; converted directories record llm4rec_family).


def _is_glm2_layout(cfg: dict[str, Any]) -> bool:
    return cfg.get("model_type") == "chatglm" and checkpoint_generation(cfg) == "chatglm2"


def glm_family(
    gen: GlmGeneration,
    description: str,
    templates: tuple[PromptTemplate, ...],
    converter: Callable[[Path, Path, str], Path],
) -> BackboneFamily:
    """The registry entry of a GLM generation: ChatGLM2 and ChatGLM3 differ only in ``gen``, their templates
    and the converter that passes ``gen`` on."""
    name = gen.name

    def write_tokenizer(src: Path, out: Path, cfg: dict[str, Any]) -> None:
        write_chatglm2_tokenizer(src / "tokenizer.model", out, gen, 8192)

    return BackboneFamily(
        name=name,
        model_types=(),
        # ChatGLM3's config.json is indistinguishable from ChatGLM2's: auto-detection says chatglm2, and a
        # recipe naming chatglm3 for such a directory is accepted
        detect=_is_glm2_layout,
        description=description,
        lora_targets=_TARGETS,
        default_template={"en": f"{name}_en", "zh": f"{name}_zh"},
        pad_token_candidates=("<unk>",),
        templates=templates,
        converter=converter,
        write_tokenizer=write_tokenizer,
        converted_config=lambda cfg: dict(glm_config_dict(cfg, gen, Path(".")), model_type="glm"),
    )


FAMILY = glm_family(
    GLM2,
    "ChatGLM2-6B (converted to transformers' GLM classes; Chinese-first)",
    (CHATGLM2_ZH, CHATGLM2_EN),
    convert,
)
