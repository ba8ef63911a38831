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

The module also holds the checkpoint input/output shared with :mod:`llm4rec.models.legacy.baichuan`:
original shards are read one at a time (``.bin`` files only with ``weights_only=True``) and converted
tensors are written as safetensors shards.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from llm4rec.errors import UserError
from llm4rec.io import atomic_dir
from llm4rec.models.legacy import _tok_qwen
from llm4rec.models.registry import LLAMA_LINEAR, BackboneFamily, register_family

# ---------------------------------------------------------------------------------------------------------
# checkpoint input / output (shared with baichuan.py)
# ---------------------------------------------------------------------------------------------------------


def read_original_config(src: Path) -> dict[str, Any]:
    """The original ``config.json`` as a dict (a UserError names a missing or broken file)."""
    path = src / "config.json"
    if not path.is_file():
        raise UserError(f"{src}: no config.json; --src must be the original checkpoint directory")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected a JSON object")
    return cfg


def config_value(cfg: dict[str, Any], key: str, src: Path, kind: type = int) -> Any:
    """``cfg[key]`` checked for presence and type (bools are not ints here)."""
    if key not in cfg:
        raise UserError(f"{src / 'config.json'}: missing {key!r}")
    value = cfg[key]
    ok = isinstance(value, (int, float)) if kind is float else isinstance(value, kind)
    if not ok or (kind is int and isinstance(value, bool)):
        raise UserError(f"{src / 'config.json'}: {key!r} should be {kind.__name__}, got {value!r}")
    return float(value) if kind is float else value


def original_shards(src: Path) -> list[Path]:
    """The weight files of an original checkpoint, safetensors preferred, in index order."""
    for index_name, single, pattern in (
        ("model.safetensors.index.json", "model.safetensors", "*.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin", "pytorch_model*.bin"),
    ):
        index = src / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{index}: not a weight index (no 'weight_map')") from None
            files = [src / name for name in dict.fromkeys(weight_map.values())]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise UserError(f"{index}: lists {missing[0]}, which is missing from {src}")
            return files
        if (src / single).is_file():
            return [src / single]
        found = sorted(src.glob(pattern))
        if found:
            return found
    raise UserError(f"{src}: no weights (*.safetensors or pytorch_model*.bin) found")


def load_shard(path: Path) -> dict[str, torch.Tensor]:
    """One weight file as a state dict; pickles are opened with ``weights_only=True`` (no code runs)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # pre-zip (torch < 1.6) files cannot be memory-mapped
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # an unsafe pickle, a truncated file...
        raise UserError(
            f"{path}: cannot be read with weights_only=True ({str(exc).splitlines()[0]})"
        ) from None
    if not isinstance(sd, dict):
        raise UserError(f"{path}: expected a state dict")
    return sd


class ShardWriter:
    """Write converted tensors as ``model-XXXXX-of-YYYYY.safetensors`` (or one ``model.safetensors``)."""

    def __init__(self, out: Path, n_shards: int) -> None:
        self.out, self.n, self.i = out, n_shards, 0
        self.weight_map: dict[str, str] = {}
        self.total = 0

    def write(self, tensors: dict[str, torch.Tensor]) -> None:
        """Write one shard (called once per original shard)."""
        from safetensors.torch import save_file

        self.i += 1
        name = "model.safetensors" if self.n == 1 else f"model-{self.i:05d}-of-{self.n:05d}.safetensors"
        clean = {k: v.contiguous() for k, v in tensors.items()}
        save_file(clean, str(self.out / name), metadata={"format": "pt"})
        for k, v in clean.items():
            self.weight_map[k] = name
            self.total += v.numel() * v.element_size()

    def close(self) -> None:
        """Write the index when there is more than one shard."""
        if self.n > 1:
            index = {
                "metadata": {"total_size": self.total},
                "weight_map": dict(sorted(self.weight_map.items())),
            }
            (self.out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def convert_checkpoint(
    src: Path,
    out: Path,
    convert_tensor: Callable[[str, torch.Tensor], list[tuple[str, torch.Tensor]]],
    expected: Counter[str],
) -> dict[str, torch.dtype]:
    """Convert every original shard with ``convert_tensor`` and check the result is complete.

    ``expected`` counts converted key patterns (digits replaced by ``N``) that must each appear that many
    times. Returns the dtypes seen (to record in config.json).
    """
    shards = original_shards(src)
    writer = ShardWriter(out, len(shards))
    seen: Counter[str] = Counter()
    dtypes: Counter[torch.dtype] = Counter()
    for shard in shards:
        converted: dict[str, torch.Tensor] = {}
        for key, tensor in load_shard(shard).items():
            for new_key, new_tensor in convert_tensor(key, tensor):
                if new_key in converted or new_key in writer.weight_map:
                    raise UserError(f"{shard}: tensor {key} converts onto {new_key} a second time")
                converted[new_key] = new_tensor
                seen[re.sub(r"\.\d+\.", ".N.", new_key)] += 1
                dtypes[new_tensor.dtype] += new_tensor.numel()
        writer.write(converted)
    writer.close()
    for pattern, count in expected.items():
        if seen[pattern] != count:
            raise UserError(
                f"{src}: expected {count} tensors {pattern}, found {seen[pattern]}; incomplete checkpoint?"
            )
    return dict.fromkeys(d for d, _ in dtypes.most_common())


def dtype_name(dtypes: dict[torch.dtype, Any]) -> str:
    """The most common floating dtype of a checkpoint as a config string (``bfloat16``...)."""
    for d in dtypes:
        if d.is_floating_point:
            return str(d).removeprefix("torch.")
    return "float32"


def write_config(class_name: str, fields: dict[str, Any], out: Path) -> None:
    """Save ``config.json`` through transformers' config class (validates and writes the current format)."""
    import transformers

    cls = getattr(transformers, class_name)
    cls(**{k: v for k, v in fields.items() if k != "model_type"}).save_pretrained(str(out))


def split_rows(t: torch.Tensor, n: int, key: str) -> list[torch.Tensor]:
    """Split a fused projection (weight rows or bias) into ``n`` equal consecutive blocks."""
    if t.shape[0] % n:
        raise UserError(f"{key}: first dimension {t.shape[0]} does not split into {n} equal parts")
    return [p.clone() for p in torch.chunk(t, n, dim=0)]


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
        if n_ids > new_cfg["vocab_size"]:
            raise UserError(
                f"{src}: the tokenizer has {n_ids} ids but the model only {new_cfg['vocab_size']}"
            )
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


# ---------------------------------------------------------------------------------------------------------
# tiny original checkpoints (tests, smoke runs)
# ---------------------------------------------------------------------------------------------------------

TINY_TEXT = [
    "Below is an instruction that describes a task. ### Instruction:\n### Input:\n### Response:\nYes. No.",
    "以下是一条描述任务的指令。### 指令:\n### 输入:\n### 回答:\n是 否 用户 喜欢 电影",
    'User Preference: "Toy Story (1995)", "Heat (1995)"\nWhether the user will like the target movie?',
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>",
    "0123456789 the user likes movies 😀",
]


def train_tiny_ranks(texts: list[str], n_merges: int) -> dict[bytes, int]:
    """A tiny tiktoken vocabulary: the 256 bytes then ``n_merges`` greedy byte-pair merges over ``texts``."""
    from tokenizers import Regex, pre_tokenizers

    split = pre_tokenizers.Split(Regex(_tok_qwen.QWEN_PATTERN), behavior="isolated")
    words: Counter[tuple[bytes, ...]] = Counter()
    for text in texts:
        for piece, _ in split.pre_tokenize_str(text):
            words[tuple(bytes([b]) for b in piece.encode("utf-8"))] += 1
    ranks = {bytes([b]): b for b in range(256)}
    for _ in range(n_merges):
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for word, n in words.items():
            for a, b in zip(word, word[1:]):
                pairs[(a, b)] += n
        pairs = Counter({p: n for p, n in pairs.items() if p[0] + p[1] not in ranks})
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        ranks[a + b] = len(ranks)
        merged: Counter[tuple[bytes, ...]] = Counter()
        for word, n in words.items():
            out: list[bytes] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return ranks


def make_tiny_original(
    out: Path,
    *,
    hidden: int = 64,
    heads: int = 4,
    layers: int = 2,
    intermediate: int = 256,
    n_merges: int = 60,
    seed: int = 0,
    fmt: str = "safetensors",
    scale: float = 0.15,
) -> dict[str, torch.Tensor]:
    """Write a tiny random Qwen-1 checkpoint in the ORIGINAL layout into ``out``; return its state dict.

    ``config.json`` uses Qwen-1's field names (``kv_channels``, ``layer_norm_epsilon``, ``seq_length``,
    ``rotary_emb_base``, ``intermediate_size`` counting both MLP branches...), the weights Qwen-1's key
    names and fused shapes, and ``qwen.tiktoken`` a small byte-level vocabulary; the special tokens sit
    right after it, as in the real file, so the vocabulary is padded to a multiple of 64.
    ``fmt`` is ``safetensors`` or ``bin`` (a torch pickle, read back with ``weights_only=True``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ranks = train_tiny_ranks(TINY_TEXT, n_merges)
    _tok_qwen.write_ranks(ranks, out / "qwen.tiktoken")
    n_ids = len(ranks) + len(_tok_qwen.SPECIAL_TOKENS)
    vocab = -(-n_ids // 64) * 64
    cfg = {
        "architectures": ["QWenLMHeadModel"],
        "auto_map": {
            "AutoConfig": "configuration_qwen.QWenConfig",
            "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel",
        },
        "attn_dropout_prob": 0.0,
        "bf16": False,
        "emb_dropout_prob": 0.0,
        "fp16": False,
        "fp32": False,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "initializer_range": 0.02,
        "kv_channels": hidden // heads,
        "layer_norm_epsilon": 1e-6,
        "max_position_embeddings": 1024,
        "model_type": "qwen",
        "no_bias": True,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "onnx_safe": None,
        "rotary_emb_base": 10000,
        "rotary_pct": 1.0,
        "scale_attn_weights": True,
        "seq_length": 1024,
        "tie_word_embeddings": False,
        "tokenizer_class": "QWenTokenizer",
        "use_cache": True,
        "use_dynamic_ntk": True,
        "use_flash_attn": "auto",
        "use_logn_attn": True,
        "vocab_size": vocab,
    }
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 1024, "tokenizer_class": "QWenTokenizer"}) + "\n", encoding="utf-8"
    )
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, s: float = scale) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * s

    def norm_w() -> torch.Tensor:
        return 1.0 + 0.2 * torch.randn(hidden, generator=g)

    half = intermediate // 2
    sd: dict[str, torch.Tensor] = {"transformer.wte.weight": rnd(vocab, hidden, s=1.0)}
    for i in range(layers):
        p = f"transformer.h.{i}."
        sd[p + "ln_1.weight"] = norm_w()
        sd[p + "attn.c_attn.weight"] = rnd(3 * hidden, hidden)
        sd[p + "attn.c_attn.bias"] = rnd(3 * hidden, s=0.1)
        sd[p + "attn.c_proj.weight"] = rnd(hidden, hidden)
        sd[p + "ln_2.weight"] = norm_w()
        sd[p + "mlp.w1.weight"] = rnd(half, hidden)
        sd[p + "mlp.w2.weight"] = rnd(half, hidden)
        sd[p + "mlp.c_proj.weight"] = rnd(hidden, half)
    sd["transformer.ln_f.weight"] = norm_w()
    sd["lm_head.weight"] = rnd(vocab, hidden)
    save_original_state_dict(sd, out, fmt)
    return sd


def save_original_state_dict(sd: dict[str, torch.Tensor], out: Path, fmt: str) -> None:
    """Save an original-layout state dict as one ``model.safetensors`` or ``pytorch_model.bin``."""
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(
            {k: v.contiguous() for k, v in sd.items()},
            str(out / "model.safetensors"),
            metadata={"format": "pt"},
        )
    elif fmt == "bin":
        torch.save(sd, str(out / "pytorch_model.bin"))
    else:
        raise ValueError(f"fmt must be 'safetensors' or 'bin', not {fmt!r}")


register_family(
    BackboneFamily(
        name="qwen",
        model_types=("qwen",),
        description="Qwen-7B v1 (converted onto Qwen2 classes; no remote code)",
        lora_targets={"qv": ("q_proj", "v_proj"), "all": LLAMA_LINEAR},
        default_template={"en": "alpaca", "zh": "alpaca_zh"},
        # Qwen-1 defines no pad token; its own fine-tuning code pads with <|endoftext|>. Labels come from
        # lengths, never from pad ids, so the end-of-text the loss needs stays trained.
        pad_token_candidates=("<|endoftext|>",),
        converter="llm4rec.models.legacy.qwen:convert",
    )
)
