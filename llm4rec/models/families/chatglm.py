"""ChatGLM-6B (first generation): converter, tokenizer and registry entry for the native implementation.

The model is :mod:`llm4rec.models.legacy.modeling_chatglm` (``model_type: llm4rec_chatglm``, registered
with the Auto classes when that module is imported, which loading llm4rec's registry does; plain
``AutoModelForCausalLM.from_pretrained`` on a converted directory needs that import first). Conversion renames the release's tensors and splits its fused per-head
``query_key_value`` ([heads, 3, head_dim] along the output) into ``q_proj``/``k_proj``/``v_proj``:

=====================================================  ==================================================
original key (``transformer.`` prefix)                 converted key (``model.`` prefix)
=====================================================  ==================================================
``word_embeddings.weight``                             ``embed_tokens.weight``
``layers.N.input_layernorm.{weight,bias}``             ``layers.N.input_layernorm.{weight,bias}``
``layers.N.attention.query_key_value.{weight,bias}``   ``layers.N.self_attn.{q,k,v}_proj.{weight,bias}``
``layers.N.attention.dense.{weight,bias}``             ``layers.N.self_attn.o_proj.{weight,bias}``
``layers.N.post_attention_layernorm.{weight,bias}``    ``layers.N.post_attention_layernorm.{weight,bias}``
``layers.N.mlp.dense_h_to_4h.{weight,bias}``           ``layers.N.mlp.up_proj.{weight,bias}``
``layers.N.mlp.dense_4h_to_h.{weight,bias}``           ``layers.N.mlp.down_proj.{weight,bias}``
``final_layernorm.{weight,bias}``                      ``norm.{weight,bias}``
``lm_head.weight`` (no prefix)                         tied to ``embed_tokens`` when equal, else kept
=====================================================  ==================================================

The icetk tokenizer (``ice_text.model``, a sentencepiece unigram model with NFKC normalisation, behind a
pre-processing step that writes newlines as ``<n>``, tabs as ``<|tab|>`` and runs of 2..80 spaces as
``<|blank_N|>``) becomes a fast unigram tokenizer that reproduces those steps in its normalizer. Ids are
offset by ``num_image_tokens`` (0 in the current release, 20000 in the first one). The directory names
:class:`~llm4rec.models.legacy._tok_chatglm.ChatGLM6BTokenizer`, which places piece boundaries exactly as
sentencepiece does (it breaks ties between orderings of the same pieces by float32 rounding).

Unlike the release, the converted tokenizer adds no special tokens by itself: ChatGLM-6B needs
``[gMASK]<sop>`` *between* the prompt and the answer, so the family's templates write them (the tokens are
recognised in text) and ``tokenizer(prompt + answer)`` yields exactly the release's
``prompt_ids + [gMASK, <sop>] + answer_ids``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from llm4rec.errors import UserError
from llm4rec.io import atomic_dir
from llm4rec.models.families.base import BackboneFamily
from llm4rec.models.families.chatglm2 import checkpoint_generation, reject_unsupported_keys
from llm4rec.models.legacy import checkpoint_io as ckio
from llm4rec.models.legacy import modeling_chatglm
from llm4rec.models.legacy._tok_chatglm import UNREACHABLE, USER_SYMBOLS_RE
from llm4rec.models.templates import PromptTemplate

MAX_BLANK = 80
#: the release's control pieces in ice_text.model (sentencepiece never produces them from text)
CONTROL_TOKENS = ("[MASK]", "[gMASK]", "[sMASK]", "<unused_0>", "<sop>", "<eop>", "<ENC>", "<dBLOCK>")
#: matched inside text: the release's bos/eos/mask/pad/unk special tokens, plus [gMASK] for the templates
TEXT_SPECIAL = ("[MASK]", "[gMASK]", "<sop>", "<eop>", "<unk>", "<pad>")
#: the release's residual scale sqrt(2 * 28), whatever num_layers says (GLMBlock's default is never overridden)
RELEASE_ALPHA = (2 * 28) ** 0.5


def preprocess(text: str) -> str:
    """The release's pre-processing before sentencepiece: newlines, tabs and runs of spaces become symbols."""
    text = text.replace("\n", "<n>").replace("\t", "<|tab|>")
    for n in range(MAX_BLANK, 1, -1):
        text = text.replace(" " * n, f"<|blank_{n}|>")
    return text


def build_chatglm_tokenizer(model_path: Path, num_image_tokens: int = 0) -> Any:
    """A ``tokenizers`` unigram tokenizer giving ChatGLM-6B's ids for ``ice_text.model``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    proto = ckio.load_sp_proto(model_path)
    if proto.trainer_spec.model_type != 1:
        raise UserError(f"{model_path}: expected a sentencepiece unigram model (ChatGLM-6B's ice_text.model)")
    ns = proto.normalizer_spec
    # sentencepiece never produces control or byte pieces from text (bytes only as fallback): keep them out
    vocab = [(f"<image_{i}>", UNREACHABLE) for i in range(num_image_tokens)]
    vocab += [(p.piece, p.score if p.type in (1, 4) else UNREACHABLE) for p in proto.pieces]
    tk = Tokenizer(
        models.Unigram(vocab, unk_id=num_image_tokens + proto.trainer_spec.unk_id, byte_fallback=True)
    )
    steps = [normalizers.Replace("\n", "<n>"), normalizers.Replace("\t", "<|tab|>")]
    steps += [normalizers.Replace(" " * n, f"<|blank_{n}|>") for n in range(MAX_BLANK, 1, -1)]
    if ns.precompiled_charsmap:
        steps.append(normalizers.Precompiled(ns.precompiled_charsmap))
    if ns.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex(" {2,}"), " "), normalizers.Replace(Regex("^ +| +$"), "")]
    steps.append(normalizers.Replace(" ", "▁"))
    if ns.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))
    tk.normalizer = normalizers.Sequence(steps)
    # user-defined symbols are atomic in sentencepiece: isolate them before the unigram lattice
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(USER_SYMBOLS_RE), behavior="isolated")
    blanks = [decoders.Replace(f"<|blank_{n}|>", " " * n) for n in range(2, MAX_BLANK + 1)]
    tk.decoder = decoders.Sequence(
        [
            decoders.Replace("<n>", "\n"),
            decoders.Replace("<|tab|>", "\t"),
            *blanks,
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in TEXT_SPECIAL])
    return tk


def write_chatglm_tokenizer(model_path: Path, out: Path, num_image_tokens: int, max_length: int) -> None:
    """Write ``tokenizer.json`` + ``tokenizer_config.json`` (special tokens as the release names them)."""
    ckio.save_fast_tokenizer(
        build_chatglm_tokenizer(model_path, num_image_tokens),
        out,
        max_length,
        # llm4rec's class: sentencepiece's own piece boundaries (see _tok_chatglm)
        tokenizer_class="ChatGLM6BTokenizer",
        bos_token="<sop>",
        eos_token="<eop>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="[MASK]",
        padding_side="left",
    )


def _image_tokens(src: Path, cfg: dict[str, Any], sp_size: int) -> int:
    """``num_image_tokens`` from tokenizer_config.json, else inferred from the model's vocabulary size."""
    tok_cfg_path = src / "tokenizer_config.json"
    if tok_cfg_path.is_file():
        tok_cfg = json.loads(tok_cfg_path.read_text(encoding="utf-8"))
        if tok_cfg.get("do_lower_case") or tok_cfg.get("remove_space"):
            raise UserError(f"{tok_cfg_path}: do_lower_case / remove_space are not supported")
        if "num_image_tokens" in tok_cfg:
            return int(tok_cfg["num_image_tokens"])
    # the tokenizer code's default is 20000 image tokens in front of the text pieces (the first release)
    return 20000 if int(cfg.get("vocab_size", 0)) >= sp_size + 20000 else 0


def convert_chatglm_tensor(key: str, t: torch.Tensor, heads: int) -> list[tuple[str, torch.Tensor]]:
    """Map one release tensor onto the native layout (``lm_head`` and the embedding are handled by the caller)."""
    if key.endswith("inv_freq"):
        return []  # the release ignores it on load too; the model computes the table
    if key == "transformer.word_embeddings.weight":
        return [("model.embed_tokens.weight", t)]
    if key.startswith("transformer.final_layernorm."):
        return [("model.norm." + key.rsplit(".", 1)[1], t)]
    prefix = "transformer.layers."
    if not key.startswith(prefix):
        raise KeyError(key)
    n, rest = key[len(prefix) :].split(".", 1)
    layer = f"model.layers.{n}."
    module, kind = rest.rsplit(".", 1)
    simple = {
        "input_layernorm": "input_layernorm",
        "post_attention_layernorm": "post_attention_layernorm",
        "attention.dense": "self_attn.o_proj",
        "mlp.dense_h_to_4h": "mlp.up_proj",
        "mlp.dense_4h_to_h": "mlp.down_proj",
    }
    if module in simple:
        return [(f"{layer}{simple[module]}.{kind}", t)]
    if module == "attention.query_key_value":
        head_dim = t.shape[0] // (3 * heads)
        per_head = t.reshape(heads, 3, head_dim, *t.shape[1:])
        return [
            (
                f"{layer}self_attn.{name}_proj.{kind}",
                per_head[:, i].reshape(heads * head_dim, *t.shape[1:]).clone(),
            )
            for i, name in enumerate("qkv")
        ]
    raise KeyError(key)


def native_config(cfg: dict[str, Any], src: Path, tied: bool) -> modeling_chatglm.ChatGLM6BConfig:
    """The native config for a release ``config.json``."""
    if not cfg.get("position_encoding_2d", True):
        raise UserError(f"{src}/config.json: position_encoding_2d=false is not ChatGLM-6B; not supported")
    if cfg.get("quantization_bit"):
        raise UserError(
            f"{src}/config.json: quantization_bit={cfg['quantization_bit']}; convert the fp16 release"
        )
    if cfg.get("pre_seq_len"):
        raise UserError(f"{src}/config.json: pre_seq_len is set (P-tuning); convert the base model")
    hidden = int(ckio.require(cfg, "hidden_size", src))
    return modeling_chatglm.ChatGLM6BConfig(
        vocab_size=int(ckio.require(cfg, "vocab_size", src)),
        hidden_size=hidden,
        intermediate_size=int(cfg.get("inner_hidden_size") or 4 * hidden),
        num_hidden_layers=int(ckio.require(cfg, "num_layers", src)),
        num_attention_heads=int(ckio.require(cfg, "num_attention_heads", src)),
        layer_norm_eps=float(cfg.get("layernorm_epsilon", 1e-5)),
        max_position_embeddings=int(cfg.get("max_sequence_length", 2048)),
        bos_token_id=int(ckio.require(cfg, "bos_token_id", src)),
        eos_token_id=int(ckio.require(cfg, "eos_token_id", src)),
        pad_token_id=int(cfg.get("pad_token_id", 3)),
        mask_token_id=int(ckio.require(cfg, "mask_token_id", src)),
        gmask_token_id=int(ckio.require(cfg, "gmask_token_id", src)),
        tie_word_embeddings=tied,
        # the release builds its GLMBlocks without num_layers, so they keep the default 28
        residual_alpha=RELEASE_ALPHA,
        dtype=cfg.get("torch_dtype", "float16"),
        architectures=["ChatGLM6BForCausalLM"],
        llm4rec_family="chatglm",
    )


def convert(src: Path, out: Path, family: str = "chatglm") -> Path:
    """Convert a ChatGLM-6B release directory into a native ``llm4rec_chatglm`` directory at ``out``."""
    from transformers import GenerationConfig

    src, out = Path(src), Path(out)
    if family != "chatglm":
        raise UserError(f"--family: {family!r} is not converted by {__name__} (use chatglm)")
    cfg = ckio.read_original_config(src)
    if checkpoint_generation(cfg) == "chatglm2":
        raise UserError(f"{src}: is a ChatGLM2/3 checkpoint; convert it with --family chatglm2 or chatglm3")
    sp_path = src / "ice_text.model"
    if not sp_path.is_file():
        raise UserError(f"{sp_path}: not found; ChatGLM-6B ships its sentencepiece model as ice_text.model")
    sp_size = len(ckio.load_sp_proto(sp_path).pieces)
    offset = _image_tokens(src, cfg, sp_size)
    heads = int(ckio.require(cfg, "num_attention_heads", src))
    with atomic_dir(out) as tmp:
        write_chatglm_tokenizer(sp_path, tmp, offset, int(cfg.get("max_sequence_length", 2048)))
        vocab = json.loads((tmp / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
        for name, key in (
            ("<sop>", "bos_token_id"),
            ("<eop>", "eos_token_id"),
            ("[gMASK]", "gmask_token_id"),
        ):
            tok_id = next(i for i, (piece, _) in enumerate(vocab) if piece == name)
            if cfg.get(key) != tok_id:
                raise UserError(
                    f"{src}/config.json: {key}={cfg.get(key)} but the tokenizer puts {name} at {tok_id} "
                    f"(num_image_tokens={offset}); tokenizer_config.json and config.json disagree"
                )
        writer = ckio.ShardWriter(tmp)
        held: dict[str, torch.Tensor] = {}
        for key, tensor in ckio.iter_original_tensors(src):
            reject_unsupported_keys(key, src)
            if key in ("lm_head.weight", "transformer.word_embeddings.weight"):
                held[key] = tensor  # written last, once tying is decided
                continue
            try:
                converted = convert_chatglm_tensor(key, tensor, heads)
            except KeyError:
                raise UserError(f"{src}: unexpected tensor {key}; not a ChatGLM-6B checkpoint") from None
            for new_key, new_tensor in converted:
                writer.add(new_key, new_tensor)
        if "transformer.word_embeddings.weight" not in held:
            raise UserError(f"{src}: transformer.word_embeddings.weight is missing (incomplete download?)")
        emb = held["transformer.word_embeddings.weight"]
        head = held.get("lm_head.weight")
        # the release ties lm_head to the embedding (config default tie_word_embeddings=True)
        tied = head is None or torch.equal(head, emb)
        writer.add("model.embed_tokens.weight", emb)
        if not tied:
            writer.add("lm_head.weight", head)
        writer.close()
        native = native_config(cfg, src, tied)
        native.save_pretrained(str(tmp))
        GenerationConfig(
            bos_token_id=native.bos_token_id,
            eos_token_id=native.eos_token_id,
            pad_token_id=native.pad_token_id,
        ).save_pretrained(str(tmp))
    return out


# --------------------------------------------------------------------------- registry entries

#: The answer may not open the text after <sop>: the release encodes a fresh segment with sentencepiece's
#: dummy prefix, so "是" and "否" would both start with the token "▁". A short lead-in after <sop> keeps the
#: first answer token the answer itself.
CHATGLM_ZH, CHATGLM_EN = (
    PromptTemplate(
        name=f"chatglm_{lang}",
        lang=lang,
        text="{instruction}\n{input}[gMASK]<sop>" + lead,
        text_no_input="{instruction}[gMASK]<sop>" + lead,
    )
    for lang, lead in (("zh", "答："), ("en", "Answer:"))
)

# Pad/EOS rule: answers end with <eop> (130005, config.json's eos_token_id and the tokenizer's eos); the
# tokenizer's end_token </s> (id 2) is never used. Padding uses <pad> (id 3) on the left, as the release does.
# model_types stays empty: the release says model_type "chatglm" like ChatGLM2/3 (see chatglm2.py).


#: the current release's special-token ids, for configs that omit them (they do not change any shape)
_RELEASE_TOKEN_IDS = {
    "mask_token_id": 130000,
    "gmask_token_id": 130001,
    "bos_token_id": 130004,
    "eos_token_id": 130005,
}


def converted_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The native config dict for an original ChatGLM-6B ``config.json`` dict (what the planner counts)."""
    tied = bool(cfg.get("tie_word_embeddings", True))
    return native_config({**_RELEASE_TOKEN_IDS, **cfg}, Path("."), tied).to_dict()


def _is_first_generation(cfg: dict) -> bool:
    return cfg.get("model_type") == "chatglm" and checkpoint_generation(cfg) == "chatglm"


def write_tokenizer(src: Path, out: Path, cfg: dict[str, Any]) -> None:
    """The converted tokenizer of the release ``src`` (its ``ice_text.model``) written to ``out``."""
    sp = src / "ice_text.model"
    offset = _image_tokens(src, cfg, len(ckio.load_sp_proto(sp).pieces))
    write_chatglm_tokenizer(sp, out, offset, 2048)


FAMILY = BackboneFamily(
    name="chatglm",
    model_types=(),
    detect=_is_first_generation,
    description="ChatGLM-6B, first generation (native llm4rec implementation; Chinese-first)",
    lora_targets={
        "qv": ("q_proj", "v_proj"),
        "qkv": ("q_proj", "k_proj", "v_proj"),
        "all": ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"),
    },
    default_template={"en": "chatglm_en", "zh": "chatglm_zh"},
    templates=(CHATGLM_ZH, CHATGLM_EN),
    pad_token_candidates=("<pad>",),
    converter=convert,
    write_tokenizer=write_tokenizer,
    converted_config=converted_config,
    # 2-D positions (position, block position) and a cache of its own: no prefix reuse in scoring
    prefix_safe=False,
)
