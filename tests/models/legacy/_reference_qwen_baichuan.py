"""Reference forward passes of Qwen-1 and Baichuan-7B / Baichuan2-7B, in plain torch, on ORIGINAL weights.

Written from the published model equations (pre-norm decoder, RMSNorm, rotary position embeddings,
SwiGLU MLP) with the original key names and fused tensors, independently of transformers and of the
converters under test. Inputs are right-aligned (left padding) with an attention mask; like the original
code, positions are the plain token index (padding included) and padded keys are masked out. A KV cache is
a list of per-layer (keys, values) for incremental decoding.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

Cache = list[tuple[torch.Tensor, torch.Tensor]]
#: a reference model: (input ids, attention mask or None, cache or None) -> (logits, new cache)
Reference = Callable[[torch.Tensor, torch.Tensor | None, Cache | None], tuple[torch.Tensor, Cache]]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotate(x: torch.Tensor, pos: torch.Tensor, base: float) -> torch.Tensor:
    """Rotary embedding, half-split layout: pairs (i, i + d/2) rotate by pos * base^(-2i/d).

    ``x``: [batch, heads, seq, d]; ``pos``: [seq] absolute positions.
    """
    d = x.shape[-1]
    inv_freq = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    angle = pos.to(torch.float32)[:, None] * inv_freq[None, :]  # [seq, d/2]
    cos, sin = angle.cos(), angle.sin()
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor, q_offset: int
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + causal + padding) v, queries at positions q_offset.. of the key sequence."""
    d = q.shape[-1]
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)  # [b, h, sq, sk]
    sq, sk = q.shape[2], k.shape[2]
    qpos = torch.arange(q_offset, q_offset + sq)[:, None]
    kpos = torch.arange(sk)[None, :]
    allowed = (kpos <= qpos)[None, None] & key_mask[:, None, None, :].bool()
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) @ v


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    b, s, h = x.shape
    return x.view(b, s, n, h // n).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, n, s, d = x.shape
    return x.transpose(1, 2).reshape(b, s, n * d)


def _self_attention(
    qkv: torch.Tensor, n_heads: int, pos: torch.Tensor, base: float, mask, layer_past, past_len: int
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Attention over the fused ``qkv`` (q, k, v its thirds), rotary at ``base``, after the cached keys and
    values; returns (the heads merged, the layer's new (keys, values))."""
    q, k, v = (_heads(t, n_heads) for t in qkv.split(qkv.shape[-1] // 3, dim=-1))
    q, k = rotate(q, pos, base), rotate(k, pos, base)
    if layer_past is not None:
        k, v = torch.cat([layer_past[0], k], 2), torch.cat([layer_past[1], v], 2)
    return _merge(attention(q, k, v, mask, past_len)), (k, v)


#: (embedding, layer prefix with ``{}`` for the index, final norm) in the original checkpoints
QWEN1_KEYS = ("transformer.wte.weight", "transformer.h.{}.", "transformer.ln_f.weight")
BAICHUAN_KEYS = ("model.embed_tokens.weight", "model.layers.{}.", "model.norm.weight")


def _decoder(
    sd: dict[str, torch.Tensor],
    keys: tuple[str, str, str],
    n_layers: int,
    eps: float,
    block: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    past: Cache | None,
) -> tuple[torch.Tensor, Cache]:
    """Run embeddings, ``block`` per layer and the final RMSNorm (``keys`` names their weights in ``sd``);
    returns (hidden, new cache)."""
    embed, layer, norm = keys
    past_len = 0 if past is None else past[0][0].shape[2]
    if attention_mask is None:
        attention_mask = torch.ones(input_ids.shape[0], past_len + input_ids.shape[1], dtype=torch.long)
    pos = torch.arange(past_len, past_len + input_ids.shape[1])
    x = sd[embed][input_ids].float()
    cache: Cache = []
    for i in range(n_layers):
        x, kv = block(x, layer.format(i), pos, attention_mask, None if past is None else past[i], past_len)
        cache.append(kv)
    return rms_norm(x, sd[norm], eps), cache


def qwen1_reference(sd: dict[str, torch.Tensor], cfg: dict[str, Any]) -> Reference:
    """Qwen-1's (QWenLMHeadModel) forward on the original weights ``sd``, for sequences no longer than
    ``seq_length``.

    Block: h = x + c_proj(attn(rms(x))) with q, k, v the thirds of c_attn(.) (bias included);
    out = h + mlp.c_proj(w1(rms(h)) * silu(w2(rms(h)))).
    """
    n_heads, eps, base = cfg["num_attention_heads"], cfg["layer_norm_epsilon"], float(cfg["rotary_emb_base"])
    n_layers = cfg["num_hidden_layers"]

    def block(x, p, pos, mask, layer_past, past_len):
        h = rms_norm(x, sd[p + "ln_1.weight"], eps)
        qkv = h @ sd[p + "attn.c_attn.weight"].T + sd[p + "attn.c_attn.bias"]
        a, kv = _self_attention(qkv, n_heads, pos, base, mask, layer_past, past_len)
        x = x + a @ sd[p + "attn.c_proj.weight"].T
        h = rms_norm(x, sd[p + "ln_2.weight"], eps)
        up = h @ sd[p + "mlp.w1.weight"].T
        gate = h @ sd[p + "mlp.w2.weight"].T
        x = x + (up * F.silu(gate)) @ sd[p + "mlp.c_proj.weight"].T
        return x, kv

    def forward(input_ids, attention_mask=None, past=None):
        x, cache = _decoder(sd, QWEN1_KEYS, n_layers, eps, block, input_ids, attention_mask, past)
        return x @ sd["lm_head.weight"].T, cache

    return forward


def baichuan_reference(sd: dict[str, torch.Tensor], cfg: dict[str, Any], *, norm_head: bool) -> Reference:
    """Baichuan-7B's (``norm_head=False``) or Baichuan2-7B's (``norm_head=True``) forward on the original
    weights ``sd``.

    Block: h = x + o_proj(attn(rms(x))) with q, k, v the thirds of W_pack(.), rotary base 10000;
    out = h + down(silu(gate(rms(h))) * up(rms(h))). Baichuan2's head divides each output row by its
    L2 norm before the product.
    """
    n_heads, eps, n_layers = cfg["num_attention_heads"], cfg["rms_norm_eps"], cfg["num_hidden_layers"]

    def block(x, p, pos, mask, layer_past, past_len):
        h = rms_norm(x, sd[p + "input_layernorm.weight"], eps)
        qkv = h @ sd[p + "self_attn.W_pack.weight"].T
        a, kv = _self_attention(qkv, n_heads, pos, 10000.0, mask, layer_past, past_len)
        x = x + a @ sd[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, sd[p + "post_attention_layernorm.weight"], eps)
        gate = h @ sd[p + "mlp.gate_proj.weight"].T
        up = h @ sd[p + "mlp.up_proj.weight"].T
        x = x + (F.silu(gate) * up) @ sd[p + "mlp.down_proj.weight"].T
        return x, kv

    def forward(input_ids, attention_mask=None, past=None):
        x, cache = _decoder(sd, BAICHUAN_KEYS, n_layers, eps, block, input_ids, attention_mask, past)
        head = sd["lm_head.weight"].float()
        if norm_head:
            head = head / head.norm(dim=1, keepdim=True)
        return x @ head.T, cache

    return forward


# ------------------------------------------------------------------------------------------------ checks


def load_converted(src, out, class_name: str) -> tuple[dict, object, list[list[int]]]:
    """(original config, the converted model in fp32 checked to be ``class_name``, three random id sequences)."""
    from transformers import AutoModelForCausalLM

    cfg = json.loads((Path(src) / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(model).__name__ == class_name
    g = torch.Generator().manual_seed(0)
    return cfg, model, [torch.randint(0, cfg["vocab_size"], (n,), generator=g).tolist() for n in (12, 7, 4)]


def compare_with_reference(
    model: Any, reference: Reference, seqs: list[list[int]], n_cached: int = 3
) -> dict[str, float]:
    """Max |logit difference| between a converted HF ``model`` and ``reference(ids, mask, past)``.

    ``reference`` returns (logits, cache) for a batch. Three checks, each over every real token:

    * ``single``: each sequence alone, no padding;
    * ``padded``: the sequences left-padded into one batch with an attention mask;
    * ``cached``: the padded batch fed all but the last ``n_cached`` tokens, then one token per step
      through the model's KV cache, against the reference's full unpadded forward.
    """
    diffs = {"single": 0.0, "padded": 0.0, "cached": 0.0}
    full = [reference(torch.tensor([s]), None, None)[0][0] for s in seqs]
    with torch.no_grad():
        for s, ref in zip(seqs, full):
            out = model(input_ids=torch.tensor([s])).logits[0]
            diffs["single"] = max(diffs["single"], (out - ref).abs().max().item())
        width = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        mask = torch.zeros(len(seqs), width, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s) :] = torch.tensor(s)
            mask[i, width - len(s) :] = 1
        out = model(input_ids=ids, attention_mask=mask).logits
        for i, (s, ref) in enumerate(zip(seqs, full)):
            diffs["padded"] = max(diffs["padded"], (out[i, width - len(s) :] - ref).abs().max().item())
        head = width - n_cached
        step = model(input_ids=ids[:, :head], attention_mask=mask[:, :head], use_cache=True)
        past, steps = step.cache, [step.logits]
        for t in range(head, width):
            step = model(
                input_ids=ids[:, t : t + 1],
                attention_mask=mask[:, : t + 1],
                cache=past,
                use_cache=True,
            )
            past = step.cache
            steps.append(step.logits)
        out = torch.cat(steps, dim=1)
        for i, (s, ref) in enumerate(zip(seqs, full)):
            diffs["cached"] = max(diffs["cached"], (out[i, width - len(s) :] - ref).abs().max().item())
    return diffs


#: text for tokenizer equivalence: English, Chinese, digits, emoji, runs of spaces and newlines, tabs,
#: punctuation (ASCII and full-width), accents, code, MovieLens-style titles
MIXED_CORPUS = [
    "Hello world! How are you today?",
    "  two leading spaces, three trailing   ",
    "runs of spaces:     five, then          ten",
    "newlines\n\nand\n\n\n\nmore\r\nwindows line\r\n",
    "tabs\tand\t\tdouble tabs\n\tindented",
    "你好，世界！我喜欢看电影，尤其是科幻片。",
    "用户喜欢：《肖申克的救赎》（1994），《霸王别姬》；不喜欢：“泰坦尼克号”。目标电影是否会被喜欢？",
    "混合 mixed 文本 text 123 和 English words。",
    "digits 0 1 2 12 123 1234 12345 3.14159 1,000,000 2024-01-31 ０１２３",
    "emoji 😀 👍🏽 🎬🍿 ❤️ 👨‍👩‍👧 🇨🇳 1️⃣",
    "accents: café naïve résumé Ångström São Paulo Zürich",
    'Toy Story (1995)|Adventure|Animation|Children|Comedy "GoldenEye (1995)", "Heat (1995)"',
    "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)",
    "code:\n```python\ndef f(x):\n    return x ** 2  # square\n```\n",
    "<p>html tags</p><br/> --- and <!-- comments --> and {json: [1, 2]}",
    "It's we're they've I'm you'll he'd DON'T",
    "URL https://example.com/path?q=1&r=%20 email a.b@c.org",
    "Ελληνικά русский 日本語のテキスト 한국어 텍스트 العربية हिन्दी",
    "！？。，、：；（）【】『』￥％",
    "",
    " ",
    "\n",
    "a",
]


#: runs of repeated characters (and the same after a short word), where byte-pair merging is most fragile
RUNS = [ch * n for ch in ("a", "哈", "1", "ab", "=", " ", "\n", "的") for n in (2, 3, 5, 18, 27, 30, 50, 80)]
RUNS += [p + r for p in ("x ", "你好世界 ") for r in RUNS[:16]]


def chunked_sentencepiece_ids(model_file: Path, texts: list[str], add_bos: bool) -> list[list[int]]:
    """Ids as the original slow tokenizers (BaichuanTokenizer, TALLRec's LlamaTokenizer) compute them: special
    tokens cut out of the text, every other chunk encoded by sentencepiece on its own, BOS in front when
    configured."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    specials = ["<unk>", "<s>", "</s>"]
    split = re.compile("(" + "|".join(map(re.escape, specials)) + ")")
    out = []
    for text in texts:
        ids = [sp.bos_id()] if add_bos else []
        for chunk in split.split(text):
            if chunk in specials:
                ids.append(sp.piece_to_id(chunk))
            elif chunk:
                ids.extend(sp.encode(chunk))
        out.append(ids)
    return out


def movielens_texts(shared: Path) -> list[str]:
    """MovieLens titles, genres and tags from ``shared/data/ml-latest-small`` (empty when absent)."""
    import csv

    root = shared / "data" / "ml-latest-small"
    if not root.is_dir():
        return []
    with open(root / "movies.csv", encoding="utf-8", newline="") as f:
        movies = list(csv.DictReader(f))
    with open(root / "tags.csv", encoding="utf-8", newline="") as f:
        tags = [r["tag"] for r in csv.DictReader(f)]
    titles = [m["title"] for m in movies]
    # one long multi-line text too: prompts list many titles separated by newlines and quotes
    block = "\n".join(f'"{t}" ({m["genres"]})' for t, m in zip(titles[:300], movies))
    return titles + tags + [block]
