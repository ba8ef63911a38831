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

The sentencepiece tokenizer becomes a fast BPE tokenizer with the original ids: the special tokens
``[MASK] [gMASK] [sMASK] sop eop`` (and for ChatGLM3 the role tokens) follow the sentencepiece vocabulary,
and ``[gMASK] sop`` is put in front of every encoded text as the original tokenizer does.

Helpers shared with the first-generation converter (:mod:`llm4rec.models.legacy.chatglm`) live here too:
reading original checkpoints shard by shard (``.bin`` only through ``weights_only=True``) and writing the
converted tensors as safetensors shards.
"""

from __future__ import annotations

import io
import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from llm4rec.errors import UserError
from llm4rec.io import atomic_dir
from llm4rec.models.registry import BackboneFamily, register_family
from llm4rec.models.templates import PromptTemplate, register_template

#: special tokens the original tokenizers append after the sentencepiece pieces, in id order
SPECIAL_TOKENS: dict[str, tuple[str, ...]] = {
    "chatglm2": ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"),
    "chatglm3": (
        "[MASK]",
        "[gMASK]",
        "[sMASK]",
        "sop",
        "eop",
        "<|system|>",
        "<|user|>",
        "<|assistant|>",
        "<|observation|>",
    ),
}
#: ChatGLM3's chat role markers: the only special tokens recognised inside text (as its chat template does)
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")

#: linear layers of the converted GLM block (LoRA targets)
GLM_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj")

SHARD_BYTES = 2 * 1024**3


# --------------------------------------------------------------------------- reading originals


def read_config(src: Path) -> dict[str, Any]:
    """The original ``config.json`` as a dict (a missing or broken file is a UserError)."""
    path = Path(src) / "config.json"
    if not path.is_file():
        raise UserError(f"{path}: not found; --src must be the original checkpoint directory")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def require(cfg: dict[str, Any], key: str, src: Path) -> Any:
    """``cfg[key]``, or a UserError naming the missing field of ``src/config.json``."""
    if key not in cfg or cfg[key] is None:
        raise UserError(
            f"{Path(src) / 'config.json'}: field {key!r} is missing; is this the original config?"
        )
    return cfg[key]


def original_shards(src: Path) -> list[Path]:
    """Weight files of an original checkpoint: from an index file, else every safetensors / ``.bin`` file."""
    src = Path(src)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = src / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            files = sorted(set(weight_map.values()))
            missing = [f for f in files if not (src / f).is_file()]
            if missing:
                raise UserError(f"{index}: lists {missing[0]} but it is not in {src} (incomplete download?)")
            return [src / f for f in files]
    files = sorted(src.glob("*.safetensors")) or sorted(src.glob("*.bin"))
    if not files:
        raise UserError(f"{src}: no *.safetensors or *.bin weight files found")
    return files


def load_shard(path: Path) -> dict[str, torch.Tensor]:
    """One weight file; pickled ``.bin`` files are read with ``weights_only=True`` (no code is executed)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialization cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling refusal is the user's file, not our bug
        raise UserError(
            f"{path}: cannot be read safely with weights_only=True ({str(exc).splitlines()[0]}); "
            "re-save it as safetensors"
        ) from None


def iter_original_tensors(src: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every (key, tensor) of an original checkpoint, one shard in memory at a time."""
    for shard in original_shards(src):
        yield from load_shard(shard).items()


class ShardWriter:
    """Write converted tensors into ``model-0000K.safetensors`` files of at most ``max_bytes`` each."""

    def __init__(self, out: Path, max_bytes: int = SHARD_BYTES) -> None:
        self.out = Path(out)
        self.max_bytes = max_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.weight_map: dict[str, str] = {}
        self.files: list[str] = []
        self.total = 0

    def add(self, key: str, tensor: torch.Tensor) -> None:
        """Queue one tensor; a full shard is flushed to disk."""
        if key in self.weight_map or key in self.pending:
            raise ValueError(f"tensor {key} written twice")
        nbytes = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + nbytes > self.max_bytes:
            self.flush()
        self.pending[key] = tensor.contiguous()
        self.pending_bytes += nbytes
        self.total += nbytes

    def flush(self) -> None:
        """Write the queued tensors as the next shard."""
        from safetensors.torch import save_file

        if not self.pending:
            return
        name = f"model-{len(self.files) + 1:05d}.safetensors"
        save_file(self.pending, str(self.out / name), metadata={"format": "pt"})
        self.files.append(name)
        self.weight_map.update(dict.fromkeys(self.pending, name))
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> None:
        """Flush and write the index (a single shard is renamed ``model.safetensors``)."""
        self.flush()
        if len(self.files) == 1:
            (self.out / self.files[0]).rename(self.out / "model.safetensors")
            return
        index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(self.weight_map.items()))}
        (self.out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


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


def glm_config_dict(cfg: dict[str, Any], family: str, src: Path) -> dict[str, Any]:
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
        if family == "chatglm3":  # ChatGLM3-32K scales the base
            rope["rope_theta"] = 10000.0 * rope_ratio
        else:  # ChatGLM2-32K divides the positions (linear interpolation)
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
        "llm4rec_family": family,
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


def load_sp_proto(path: Path) -> Any:
    """The parsed sentencepiece ``ModelProto`` of ``path`` (a corrupt file is a UserError)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    try:
        proto.ParseFromString(Path(path).read_bytes())
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError
        raise UserError(f"{path}: not a sentencepiece model ({exc})") from None
    return proto


def sp_bpe_tokenizer(model_path: Path, extra_tokens: tuple[str, ...], text_special: tuple[str, ...]) -> Any:
    """A ``tokenizers`` BPE equal to a sentencepiece BPE model, with ``extra_tokens`` appended to the vocab.

    Merges are ranked by the merged piece's id (sentencepiece BPE merges the highest-scoring piece first and
    its scores fall with the id). Only ``text_special`` of the extra tokens are matched inside text.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    proto = load_sp_proto(model_path)
    if proto.trainer_spec.model_type != 2:
        raise UserError(f"{model_path}: expected a sentencepiece BPE model (ChatGLM2/3's tokenizer.model)")
    ns = proto.normalizer_spec
    if ns.name not in ("identity", "") or ns.remove_extra_whitespaces:
        raise UserError(f"{model_path}: unexpected normalizer {ns.name!r}; not a ChatGLM2/3 tokenizer.model")
    pieces = [p.piece for p in proto.pieces]
    vocab = {p: i for i, p in enumerate(pieces)}
    merges: list[tuple[str, str]] = []
    for piece in proto.pieces:
        if piece.type != 1:  # control, unknown and byte pieces are never produced by merging
            continue
        splits = [
            (vocab[piece.piece[:k]], vocab[piece.piece[k:]], piece.piece[:k], piece.piece[k:])
            for k in range(1, len(piece.piece))
            if piece.piece[:k] in vocab and piece.piece[k:] in vocab
        ]
        merges.extend((a, b) for _, _, a, b in sorted(splits))
    for j, tok in enumerate(extra_tokens):
        # ids follow the pieces; a piece spelled like a special token maps to the special id, as the
        # original's convert_token_to_id looks special tokens up first
        vocab[tok] = len(pieces) + j
    unk = pieces[proto.trainer_spec.unk_id]
    tk = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=bool(proto.trainer_spec.byte_fallback),
        )
    )
    prefix = [normalizers.Prepend("▁")] if ns.add_dummy_prefix else []
    tk.normalizer = normalizers.Sequence([normalizers.Replace(" ", "▁"), *prefix])
    tk.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    if text_special:
        tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in text_special])
    return tk


def build_chatglm2_tokenizer(model_path: Path, family: str) -> Any:
    """The fast tokenizer of ChatGLM2 (``family='chatglm2'``) or ChatGLM3 (``'chatglm3'``)."""
    from tokenizers import processors

    specials = SPECIAL_TOKENS[family]
    tk = sp_bpe_tokenizer(model_path, specials, ROLE_TOKENS if family == "chatglm3" else ())
    gmask, sop = tk.token_to_id("[gMASK]"), tk.token_to_id("sop")
    eos = tk.token_to_id("</s>")
    tk.post_processor = processors.TemplateProcessing(
        single="[gMASK] sop $A",
        pair="[gMASK] sop $A $B </s>",
        special_tokens=[("[gMASK]", gmask), ("sop", sop), ("</s>", eos)],
    )
    return tk


def write_chatglm2_tokenizer(model_path: Path, out: Path, family: str, max_length: int) -> None:
    """Write ``tokenizer.json`` + ``tokenizer_config.json`` loadable by ``AutoTokenizer`` without remote code."""
    tk = build_chatglm2_tokenizer(model_path, family)
    tk.save(str(out / "tokenizer.json"))
    tok_cfg = {
        "tokenizer_class": "TokenizersBackend",
        # the original's properties: EOS </s>, padding with <unk> (id 0) on the left
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<unk>",
        "padding_side": "left",
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n")


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


def convert(src: Path, out: Path, family: str) -> Path:
    """Convert an original ChatGLM2-6B / ChatGLM3-6B directory into a GLM directory at ``out`` (atomically)."""
    from transformers import GenerationConfig, GlmConfig

    src, out = Path(src), Path(out)
    if family not in SPECIAL_TOKENS:
        raise UserError(f"--family: {family!r} is not converted by {__name__} (use chatglm2 or chatglm3)")
    cfg = read_config(src)
    if checkpoint_generation(cfg) == "chatglm":
        raise UserError(
            f"{src}: is a first-generation ChatGLM-6B checkpoint; convert it with --family chatglm"
        )
    tok_model = src / "tokenizer.model"
    if not tok_model.is_file():
        raise UserError(
            f"{tok_model}: not found; ChatGLM2/3 ship their sentencepiece model as tokenizer.model"
        )
    gc_kwargs = glm_config_dict(cfg, family, src)
    with atomic_dir(out) as tmp:
        write_chatglm2_tokenizer(tok_model, tmp, family, gc_kwargs["max_position_embeddings"])
        vocab = json.loads((tmp / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
        if len(vocab) > gc_kwargs["vocab_size"]:
            raise UserError(
                f"{src}: tokenizer has {len(vocab)} tokens but padded_vocab_size is {gc_kwargs['vocab_size']}"
            )
        glm = GlmConfig(**gc_kwargs)
        mapping = dict(gc_kwargs, _multi_query=bool(cfg.get("multi_query_attention")))
        writer = ShardWriter(tmp)
        seen: set[str] = set()
        for key, tensor in iter_original_tensors(src):
            reject_unsupported_keys(key, src)
            try:
                converted = convert_glm_tensor(key, tensor, mapping)
            except KeyError:
                raise UserError(f"{src}: unexpected tensor {key}; not a ChatGLM2/3 checkpoint") from None
            for new_key, new_tensor in converted:
                writer.add(new_key, new_tensor)
                seen.add(new_key)
        writer.close()
        expected = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
        missing = sorted(expected - seen)
        if missing:
            raise UserError(
                f"{src}: the checkpoint lacks {missing[0]} after conversion (incomplete download?)"
            )
        glm.save_pretrained(str(tmp))
        eos = gc_kwargs["eos_token_id"]
        if family == "chatglm3":
            # ChatGLM3 ends an assistant turn by starting the next role: <|user|> or <|observation|>
            eos = [eos, vocab["<|user|>"], vocab["<|observation|>"]]
        GenerationConfig(eos_token_id=eos, pad_token_id=gc_kwargs["pad_token_id"]).save_pretrained(str(tmp))
    return out


# --------------------------------------------------------------------------- tiny originals for tests


TINY_CORPUS = (
    "Given the user's preference and unpreference, identify whether the user will like the target movie.",
    'User Preference: "Toy Story (1995)", "Heat (1995)"\nUser Unpreference: "Jumanji (1995)"',
    "以下是一条描述任务的指令，以及提供更多上下文的输入。请写出恰当完成该请求的回答。",
    "### 指令:\n根据用户的喜好判断用户是否会喜欢目标电影。\n\n### 输入:\n用户喜欢：《玩具总动员》\n\n### 回答:\n是",
    "[Round 1]\n\n问：你好\n\n答：你好！有什么可以帮你的吗？  是  否  Yes. No.",
    "The quick brown fox jumps over the lazy dog 0123456789 3.14159 2024-01-01",
    "    indented code:\n\tfor i in range(10):\n\t\tprint(i)  # two  spaces",
    "推荐系统 电影 用户 喜欢 不喜欢 目标 判断 是否 是 否 回答 问题 今天 天气 很好",
    # every ASCII symbol and letter, so that (as in the real vocabularies) each character of the special and
    # byte pieces' names is a piece of its own
    "<b>a|b</b> {x} a_b (y) [z] @#$%^&*+=~`'\";:?!,. ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz",
)


def tiny_corpus(n: int = 300, seed: int = 0) -> list[str]:
    """Mixed English/Chinese lines (with digits, spaces, tabs, newlines) to train tiny tokenizers on."""
    rng = random.Random(seed)
    words = " ".join(TINY_CORPUS).replace("\n", " ").split()
    lines = list(TINY_CORPUS)
    for _ in range(n):
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))))
    return lines


def train_tiny_sentencepiece(lines: list[str], vocab_size: int, **options: Any) -> bytes:
    """Train a small sentencepiece model in memory and return its serialized bytes."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
        **options,
    )
    return buf.getvalue()


def make_tiny_original(
    out: Path,
    family: str = "chatglm2",
    *,
    seed: int = 0,
    num_layers: int = 2,
    hidden_size: int = 64,
    num_attention_heads: int = 4,
    multi_query_group_num: int = 2,
    ffn_hidden_size: int = 128,
    vocab_size: int = 600,
    fmt: str = "safetensors",
    multi_query: bool = True,
    rope_ratio: float | None = None,
) -> Path:
    """Write a tiny random ChatGLM2/3 checkpoint in the ORIGINAL layout: config fields, key names, fused shapes.

    ``fmt`` is ``safetensors`` or ``bin`` (a ``torch.save`` file, as the releases ship); ``multi_query=False``
    and ``rope_ratio`` give the layouts of the variants without multi-query attention and of the 32K models.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sp_bytes = train_tiny_sentencepiece(
        tiny_corpus(seed=seed),
        vocab_size,
        model_type="bpe",
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
    )
    (out / "tokenizer.model").write_bytes(sp_bytes)
    import sentencepiece as spm

    n_sp = spm.SentencePieceProcessor(model_proto=sp_bytes).vocab_size()
    padded = int(math.ceil((n_sp + len(SPECIAL_TOKENS[family])) / 64) * 64)
    kv_channels = hidden_size // num_attention_heads
    cfg = {
        "_name_or_path": f"THUDM/{family}-6b",
        "model_type": "chatglm",
        "architectures": ["ChatGLMModel"],
        "auto_map": {"AutoConfig": "configuration_chatglm.ChatGLMConfig"},
        "add_bias_linear": False,
        "add_qkv_bias": True,
        "apply_query_key_layer_scaling": True,
        "apply_residual_connection_post_layernorm": False,
        "attention_dropout": 0.0,
        "attention_softmax_in_fp32": True,
        "bias_dropout_fusion": True,
        "ffn_hidden_size": ffn_hidden_size,
        "fp32_residual_connection": False,
        "hidden_dropout": 0.0,
        "hidden_size": hidden_size,
        "kv_channels": kv_channels,
        "layernorm_epsilon": 1e-05,
        "multi_query_attention": multi_query,
        "multi_query_group_num": multi_query_group_num,
        "num_attention_heads": num_attention_heads,
        "num_layers": num_layers,
        "original_rope": True,
        "padded_vocab_size": padded,
        "post_layer_norm": True,
        "rmsnorm": True,
        "seq_length": 512,
        "use_cache": True,
        "torch_dtype": "float32",
        "transformers_version": "4.30.2",
        "tie_word_embeddings": False,
        "eos_token_id": 2,
        "pad_token_id": 0,
    }
    if rope_ratio is not None:
        cfg["rope_ratio"] = rope_ratio
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 0.08) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    kv_heads = multi_query_group_num if multi_query else num_attention_heads
    qkv = num_attention_heads * kv_channels + 2 * kv_heads * kv_channels
    sd: dict[str, torch.Tensor] = {
        "transformer.embedding.word_embeddings.weight": rnd(padded, hidden_size, scale=0.5)
    }
    for i in range(num_layers):
        p = f"transformer.encoder.layers.{i}."
        sd[p + "input_layernorm.weight"] = 1.0 + rnd(hidden_size, scale=0.1)
        sd[p + "self_attention.query_key_value.weight"] = rnd(qkv, hidden_size, scale=0.15)
        sd[p + "self_attention.query_key_value.bias"] = rnd(qkv, scale=0.1)
        sd[p + "self_attention.dense.weight"] = rnd(hidden_size, num_attention_heads * kv_channels)
        sd[p + "post_attention_layernorm.weight"] = 1.0 + rnd(hidden_size, scale=0.1)
        sd[p + "mlp.dense_h_to_4h.weight"] = rnd(2 * ffn_hidden_size, hidden_size)
        sd[p + "mlp.dense_4h_to_h.weight"] = rnd(hidden_size, ffn_hidden_size)
    sd["transformer.encoder.final_layernorm.weight"] = 1.0 + rnd(hidden_size, scale=0.1)
    sd["transformer.output_layer.weight"] = rnd(padded, hidden_size, scale=0.2)
    # the releases also store the rotary table's inverse frequencies
    sd["transformer.rotary_pos_emb.inv_freq"] = 1.0 / (
        10000 ** (torch.arange(0, kv_channels // 2, 2).float() / (kv_channels // 2))
    )
    save_state_dict(sd, out, fmt)
    return out


def save_state_dict(sd: dict[str, torch.Tensor], out: Path, fmt: str) -> None:
    """Save a tiny original state dict as ``model.safetensors`` or ``pytorch_model.bin``."""
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(out / "model.safetensors"))
    elif fmt == "bin":
        torch.save(sd, out / "pytorch_model.bin")
    else:
        raise ValueError(f"fmt must be 'safetensors' or 'bin', not {fmt!r}")


# --------------------------------------------------------------------------- registry entries

#: ChatGLM2's chat format (one round, as ``build_prompt`` writes it); the answer follows "答：".
CHATGLM2_ZH = PromptTemplate(
    name="chatglm2_zh",
    lang="zh",
    text="[Round 1]\n\n问：{instruction}\n{input}\n\n答：",
    text_no_input="[Round 1]\n\n问：{instruction}\n\n答：",
)
CHATGLM2_EN = PromptTemplate(
    name="chatglm2_en",
    lang="en",
    text="[Round 1]\n\n问：{instruction}\n{input}\n\n答：",
    text_no_input="[Round 1]\n\n问：{instruction}\n\n答：",
)
#: ChatGLM3's chat format (``<|user|>\n content<|assistant|>``, as its chat template writes it); the reply
#: starts after the assistant's metadata line "\n".
CHATGLM3_ZH = PromptTemplate(
    name="chatglm3_zh",
    lang="zh",
    text="<|user|>\n {instruction}\n{input}<|assistant|>\n",
    text_no_input="<|user|>\n {instruction}<|assistant|>\n",
)
CHATGLM3_EN = PromptTemplate(
    name="chatglm3_en",
    lang="en",
    text="<|user|>\n {instruction}\n{input}<|assistant|>\n",
    text_no_input="<|user|>\n {instruction}<|assistant|>\n",
)
for _t in (CHATGLM2_ZH, CHATGLM2_EN, CHATGLM3_ZH, CHATGLM3_EN):
    register_template(_t)

_TARGETS = {"qv": ("q_proj", "v_proj"), "qkv": ("q_proj", "k_proj", "v_proj"), "all": GLM_LINEAR}

# Pad/EOS rule: the tokenizers pad with <unk> (id 0, left) and end with </s> (id 2), as config.json's
# pad_token_id / eos_token_id say. ChatGLM3 chat turns end when the model starts the next role, so its
# generation config also stops on <|user|> / <|observation|>; training appends </s> as its fine-tuning does.
# model_types stays empty: ChatGLM-6B, ChatGLM2-6B and ChatGLM3-6B all say model_type "chatglm", so the
# family cannot be read from config.json (recipes name it; converted directories record llm4rec_family).
register_family(
    BackboneFamily(
        name="chatglm2",
        model_types=(),
        detect=lambda cfg: cfg.get("model_type") == "chatglm" and checkpoint_generation(cfg) == "chatglm2",
        description="ChatGLM2-6B (converted to transformers' GLM classes; Chinese-first)",
        lora_targets=_TARGETS,
        default_template={"en": "chatglm2_en", "zh": "chatglm2_zh"},
        pad_token_candidates=("<unk>",),
        converter="llm4rec.models.legacy.chatglm2:convert",
    )
)
register_family(
    BackboneFamily(
        name="chatglm3",
        model_types=(),
        # ChatGLM3's config.json is indistinguishable from ChatGLM2's: auto-detection says chatglm2, and a
        # recipe naming chatglm3 for such a directory is accepted
        detect=lambda cfg: cfg.get("model_type") == "chatglm" and checkpoint_generation(cfg) == "chatglm2",
        description="ChatGLM3-6B (converted to transformers' GLM classes; Chinese-first)",
        lora_targets=_TARGETS,
        default_template={"en": "chatglm3_en", "zh": "chatglm3_zh"},
        pad_token_candidates=("<unk>",),
        converter="llm4rec.models.legacy.chatglm2:convert",
    )
)
