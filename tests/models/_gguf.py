"""Write tiny GGUF files with the `gguf` package, laid out as llama.cpp's converter lays out real models.

Tensor names, the Q/K row permutation of LLaMA attention and the tokenizer fields follow llama.cpp's
``convert_hf_to_gguf.py``, so transformers' own GGUF loader reads these files like downloaded ones.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's row order for LLaMA's q/k projections (interleaved rotary halves)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model: Any, tokenizer: Any, path: Path, *, arch: str = "llama", qtype: str = "F32") -> Path:
    """Write ``model`` (a tiny transformers LLaMA/Qwen2) and its byte-level BPE ``tokenizer`` to ``path``.

    ``qtype`` is the storage type of the 2-D weights (F32, F16 or Q8_0); norms and biases stay F32.
    """
    import gguf

    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type({"F32": 0, "F16": 1, "Q8_0": 7}[qtype])

    vocab = tokenizer.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = set(tokenizer.all_special_tokens)
    import json

    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2" if arch == "qwen2" else "default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_bos_token_id(vocab["<|im_start|>"])
    w.add_pad_token_id(vocab["<|endoftext|>"])
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML_TEMPLATE)

    def put(name: str, t: Any) -> None:
        a = t.detach().float().numpy()
        if a.ndim == 1 or qtype == "F32":  # norms and biases
            w.add_tensor(name, a.astype(np.float32))
        elif qtype == "F16":
            w.add_tensor(name, a.astype(np.float16))
        else:
            q = gguf.quants.quantize(a.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    sd = model.state_dict()
    put("token_embd.weight", sd["model.embed_tokens.weight"])
    put("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        put("output.weight", sd["lm_head.weight"])
    # llama.cpp's name of each layer module (its .weight and, where present, .bias keep their suffix)
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    names |= {f"self_attn.{p}_proj": f"attn_{p}" for p in "qkv"} | {"self_attn.o_proj": "attn_output"}
    names |= {f"mlp.{p}_proj": f"ffn_{p}" for p in ("gate", "up", "down")}
    # LLaMA's q and k rows, interleaved by llama.cpp per head: their head counts
    permuted = {"self_attn.q_proj": cfg.num_attention_heads, "self_attn.k_proj": cfg.num_key_value_heads}
    import torch

    for i in range(cfg.num_hidden_layers):
        for (hf, gg), kind in itertools.product(names.items(), ("weight", "bias")):
            key = f"model.layers.{i}.{hf}.{kind}"
            if key not in sd:
                continue
            t = sd[key]
            if arch == "llama" and kind == "weight" and hf in permuted:
                t = torch.from_numpy(_permute(t.numpy(), permuted[hf]))
            put(f"blk.{i}.{gg}.{kind}", t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_header_only(
    path: Path, arch: str, tensors: dict[str, tuple[np.ndarray, Any]] | None = None
) -> Path:
    """A GGUF with just an architecture and optional raw tensors (for the rejection tests)."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    for name, (data, raw_dtype) in (tensors or {}).items():
        if raw_dtype is None:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
