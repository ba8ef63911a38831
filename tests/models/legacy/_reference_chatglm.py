"""Reference forward passes of the ORIGINAL ChatGLM architectures, written in plain torch from their equations.

They read the original state dict (original key names, fused matrices) and original ``config.json`` fields,
and share no code with llm4rec's converters or its native model, so agreement is evidence that a conversion
computes the same function. One sequence at a time, no padding: batching, padding and caches are what the
converted models are tested for.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------- ChatGLM2 / ChatGLM3


def _rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate_pairs(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs (x[2i], x[2i+1]) by angles[..., i] (the layout ChatGLM2 calls 'original')."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    cos, sin = angles.cos(), angles.sin()
    return torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1).flatten(-2)


def chatglm2_logits(
    sd: dict[str, torch.Tensor], cfg: dict, ids: list[int], family: str = "chatglm2"
) -> torch.Tensor:
    """Logits [len(ids), vocab] of one unpadded sequence under ChatGLM2/3's equations.

    h_0 = E[ids]; per layer: a = RMSNorm(h); q|k|v = a W_qkv^T + b (q: heads x d, k/v: groups x d);
    rotary on the first d/2 dims of q and k, pairs (2i, 2i+1) turned by pos * 10000^(-2i/(d/2));
    head j attends causally with key/value group j // (heads/groups), scale 1/sqrt(d);
    h = h + O(attn); m = RMSNorm(h); [g|u] = m W_1^T; h = h + W_2 (silu(g) * u); logits = RMSNorm(h) W_out^T.
    """
    sd = {k: v.float() for k, v in sd.items()}
    eps = cfg["layernorm_epsilon"]
    mqa = cfg.get("multi_query_attention", True)
    heads = cfg["num_attention_heads"]
    groups = cfg["multi_query_group_num"] if mqa else heads
    d = cfg["kv_channels"]
    n = len(ids)
    rot = d // 2
    ratio = cfg.get("rope_ratio", 1)
    # the 32K models: ChatGLM3 multiplies the base by rope_ratio, ChatGLM2 divides the positions by it
    base = 10000.0 * ratio if family == "chatglm3" else 10000.0
    inv = 1.0 / (base ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot))
    pos = torch.arange(n, dtype=torch.float64) / (1 if family == "chatglm3" else ratio)
    angles = (pos[:, None] * inv[None, :]).float()  # [n, rot/2]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    h = sd["transformer.embedding.word_embeddings.weight"][torch.tensor(ids)].float()
    for i in range(cfg["num_layers"]):
        p = f"transformer.encoder.layers.{i}."
        a = _rms_norm(h, sd[p + "input_layernorm.weight"], eps)
        qkv = (
            a @ sd[p + "self_attention.query_key_value.weight"].T
            + sd[p + "self_attention.query_key_value.bias"]
        )
        if mqa:  # [all query heads | key groups | value groups]
            q = qkv[:, : heads * d].view(n, heads, d)
            k = qkv[:, heads * d : (heads + groups) * d].view(n, groups, d)
            v = qkv[:, (heads + groups) * d :].view(n, groups, d)
        else:  # per head [q | k | v]
            q, k, v = qkv.view(n, heads, 3 * d).split(d, dim=-1)
        q = torch.cat((_rotate_pairs(q[..., :rot], angles[:, None, :]), q[..., rot:]), dim=-1)
        k = torch.cat((_rotate_pairs(k[..., :rot], angles[:, None, :]), k[..., rot:]), dim=-1)
        ctx = []
        for j in range(heads):
            g = j // (heads // groups)
            s = (q[:, j] @ k[:, g].T) / math.sqrt(d)
            s = s.masked_fill(~causal, float("-inf"))
            ctx.append(s.softmax(-1) @ v[:, g])
        h = h + torch.cat(ctx, dim=-1) @ sd[p + "self_attention.dense.weight"].T
        m = _rms_norm(h, sd[p + "post_attention_layernorm.weight"], eps)
        gate, up = (m @ sd[p + "mlp.dense_h_to_4h.weight"].T).chunk(2, dim=-1)
        h = h + (F.silu(gate) * up) @ sd[p + "mlp.dense_4h_to_h.weight"].T
    h = _rms_norm(h, sd["transformer.encoder.final_layernorm.weight"], eps)
    return h @ sd["transformer.output_layer.weight"].T


# ----------------------------------------------------------------------------- ChatGLM-6B (first generation)


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _rotate_halves(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate (x[i], x[i + r/2]) by angles[..., i]: the GPT-NeoX layout ChatGLM-6B uses."""
    half = x.shape[-1] // 2
    x0, x1 = x[..., :half], x[..., half:]
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1)


def chatglm6b_positions(cfg: dict, ids: list[int]) -> tuple[list[int], list[int], int]:
    """ChatGLM-6B's 2-D positions of one sequence and its context length.

    The context is everything before the first <sop> (bos); its tokens are numbered 0..L-1 and have block
    position 0. From <sop> on, every token takes the position of the mask token ([gMASK], else [MASK]) and
    block positions count 1, 2, ...
    """
    bos, gmask, mask = cfg["bos_token_id"], cfg["gmask_token_id"], cfg["mask_token_id"]
    ctx = ids.index(bos)
    mask_pos = ids.index(gmask) if gmask in ids else ids.index(mask)
    pos = [i if i < ctx else mask_pos for i in range(len(ids))]
    block = [0 if i < ctx else i - ctx + 1 for i in range(len(ids))]
    return pos, block, ctx


def chatglm6b_logits(sd: dict[str, torch.Tensor], cfg: dict, ids: list[int]) -> torch.Tensor:
    """Logits [len(ids), vocab] of one unpadded sequence (holding [gMASK] and <sop>) under ChatGLM-6B's equations.

    Per layer, with alpha = sqrt(2 * 28): x = LN1(h); per head, q|k|v are consecutive thirds of the head's
    3d slice of x W_qkv^T + b; the first d/2 dims of q and k are rotated by the position, the last d/2 by the
    block position (each half in the rotate-half layout, frequencies 10000^(-2i/(d/2)) rounded to fp16 as the
    release stores them); attention is bidirectional among the context tokens and causal after them, scale
    1/sqrt(d); h = alpha * x + O(attn); y = LN2(h); h = alpha * y + W_2 gelu_tanh(W_1 y + b_1) + b_2;
    logits = LN_f(h) W_lm^T.
    """
    sd = {k: v.float() for k, v in sd.items()}  # the release stores fp16; compute in fp32
    eps = cfg["layernorm_epsilon"]
    heads, hidden, layers = cfg["num_attention_heads"], cfg["hidden_size"], cfg["num_layers"]
    d = hidden // heads
    n = len(ids)
    half = d // 2
    inv = (1.0 / (10000 ** (torch.arange(0, half, 2).float() / half))).half()
    pos, block, ctx = chatglm6b_positions(cfg, ids)

    def angle(p: list[int]) -> torch.Tensor:
        return (torch.tensor(p, dtype=torch.float64)[:, None] * inv.double()[None, :]).float()

    a_pos, a_block = angle(pos), angle(block)  # [n, half/2]
    allowed = torch.ones(n, n, dtype=torch.bool).tril()
    allowed[:, :ctx] = True
    # GLM's DeepNorm scale is sqrt(2 N); the release's blocks are built without N and use their default
    # N = 28 (ChatGLM-6B's depth) for any config
    alpha = (2 * 28) ** 0.5
    h = sd["transformer.word_embeddings.weight"][torch.tensor(ids)].float()
    for i in range(layers):
        p = f"transformer.layers.{i}."
        x = _layer_norm(h, sd[p + "input_layernorm.weight"], sd[p + "input_layernorm.bias"], eps)
        qkv = x @ sd[p + "attention.query_key_value.weight"].T + sd[p + "attention.query_key_value.bias"]
        qkv = qkv.view(n, heads, 3 * d)
        q, k, v = qkv[..., :d], qkv[..., d : 2 * d], qkv[..., 2 * d :]

        def rope(t: torch.Tensor) -> torch.Tensor:
            return torch.cat(
                (
                    _rotate_halves(t[..., :half], a_pos[:, None, :]),
                    _rotate_halves(t[..., half:], a_block[:, None, :]),
                ),
                dim=-1,
            )

        q, k = rope(q), rope(k)
        ctx_out = []
        for j in range(heads):
            s = (q[:, j] @ k[:, j].T) / math.sqrt(d)
            s = s.masked_fill(~allowed, float("-inf"))
            ctx_out.append(s.softmax(-1) @ v[:, j])
        att = torch.cat(ctx_out, dim=-1) @ sd[p + "attention.dense.weight"].T + sd[p + "attention.dense.bias"]
        h = alpha * x + att
        y = _layer_norm(
            h, sd[p + "post_attention_layernorm.weight"], sd[p + "post_attention_layernorm.bias"], eps
        )
        u = y @ sd[p + "mlp.dense_h_to_4h.weight"].T + sd[p + "mlp.dense_h_to_4h.bias"]
        u = 0.5 * u * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u**3)))
        h = alpha * y + u @ sd[p + "mlp.dense_4h_to_h.weight"].T + sd[p + "mlp.dense_4h_to_h.bias"]
    h = _layer_norm(h, sd["transformer.final_layernorm.weight"], sd["transformer.final_layernorm.bias"], eps)
    head = sd.get("lm_head.weight", sd["transformer.word_embeddings.weight"])
    return h @ head.T


# ----------------------------------------------------------------------------- llm4rec's own path


def zh_samples(n: int) -> list[dict]:
    """TALLRec-style Chinese samples (answers 是 / 否) for pipeline tests."""
    films = ["玩具总动员", "勇敢的心", "泰坦尼克号", "阿甘正传", "狮子王", "黑客帝国"]
    rows = []
    for i in range(n):
        liked, target = films[i % 6], films[(i * 5 + 1) % 6]
        rows.append(
            {
                "instruction": "根据用户的喜好判断用户是否会喜欢目标电影，请回答“是”或“否”。",
                "input": f"用户喜欢：《{liked}》\n目标电影：《{target}》",
                "output": "是" if i % 2 == 0 else "否",
                "label": 1 if i % 2 == 0 else 0,
            }
        )
    return rows


def llm4rec_pipeline(src, family: str) -> dict:
    """Run an ORIGINAL tiny checkpoint through llm4rec's loading (conversion into $LLM4REC_CACHE),
    tokenization, 4-bit LoRA training and scoring code, as train.py does. Returns what tests assert on."""
    from peft import LoraConfig, get_peft_model

    from llm4rec.config import ModelConfig
    from llm4rec.data.tokenize import IGNORE_INDEX, collate, render_prompt
    from llm4rec.models.backbone import resolve_backbone
    from llm4rec.models.loading import load_base_model

    m = ModelConfig(path=str(src), family=family, lang="zh", compute_dtype="float32")
    bb = resolve_backbone(m, cutoff_len=256, device="cpu")
    fam, path, tok, template = bb.family, bb.weights, bb.tokenizer, bb.template
    again = resolve_backbone(m, cutoff_len=256, device="cpu").weights
    model = load_base_model(bb, device="cpu")
    rows = zh_samples(8)
    examples = [bb.encode_train(r) for r in rows]
    n_label = [sum(x != IGNORE_INDEX for x in e.labels) for e in examples]
    answer_ids = bb.answer_token_ids(rows[0])
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=fam.targets("qv"), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.config.use_cache = False
    batch = collate(examples, tok.pad_token_id, fam.train_padding_side)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    model.train()
    losses = []
    for _ in range(5):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    model.eval()
    scores = direct = None
    try:
        from llm4rec.eval.scoring import score_binary
    except ImportError:
        score_binary = None
    if score_binary is not None:
        with torch.no_grad():
            scores = score_binary(model, bb, rows, batch_size=3).cpu()
            direct = []
            for r in rows:  # one unpadded prompt at a time, straight through the model
                ids = tok(render_prompt(template, r))["input_ids"]
                last = model(input_ids=torch.tensor([ids])).logits[0, -1, answer_ids]
                direct.append(last.softmax(-1)[0].item())
    return {
        "path": path,
        "again": again,
        "tokenizer": tok,
        "answer_ids": answer_ids,
        "n_label": n_label,
        "losses": losses,
        "scores": scores,
        "direct": torch.tensor(direct) if direct is not None else None,
    }


def assert_pipeline_trains_and_scores(out: dict, cache) -> None:
    """What :func:`llm4rec_pipeline` must show for every ChatGLM family: converted once into the cache, the
    answers 是/否 one token each (plus the end token in the labels), a falling loss, batched scores equal to
    direct ones."""
    import pytest

    assert Path(out["path"]).parent == Path(cache) / "converted"
    assert out["again"] == out["path"]  # converted once, then reused
    assert out["tokenizer"].convert_ids_to_tokens(out["answer_ids"]) == ["是", "否"]
    assert out["n_label"] == [2] * 8  # the answer and the end token
    assert out["losses"][-1] < out["losses"][0]
    if out["scores"] is None:
        pytest.skip("llm4rec.eval.scoring is not available")
    assert out["scores"].shape == (8,)
    assert (out["scores"] - out["direct"]).abs().max().item() < 1e-4


def assert_trains_and_evaluates(out: dict, work, family: str, template: str) -> None:
    """What :func:`train_and_evaluate` must show: two steps, an adapter in ``work/run``, a clean evaluation
    of its one checkpoint with the family's ``template`` and the answers 是/否, metrics over the 8 samples."""
    assert out["summary"]["steps"] == 2
    assert (work / "run" / "adapter_model.safetensors").is_file()
    assert out["code"] == 0
    (ck,) = out["report"]["checkpoints"]
    assert (ck["family"], ck["template"], ck["answers"]) == (family, template, ["是", "否"])
    assert ck["metrics"]["n_samples"] == 8 and 0.0 <= ck["metrics"]["auc"] <= 1.0


def train_and_evaluate(src, family: str, work) -> dict:
    """``train.py``'s loop with the family's shipped recipe on an ORIGINAL tiny checkpoint (``model.path`` =
    the original directory), then ``llm4rec evaluate`` on the adapter. Returns the training summary and the
    evaluation report."""
    import json

    import yaml

    from llm4rec.cli import main as cli
    from llm4rec.config import recipe_from_dict
    from llm4rec.io import write_jsonl_atomic
    from llm4rec.train.loop import train
    from tests.conftest import REPO

    rows = zh_samples(12)
    for name, part in (("train", rows[:8]), ("valid", rows[8:]), ("test", rows[4:])):
        write_jsonl_atomic(work / f"{name}.jsonl", part)
    data = yaml.safe_load((REPO / "recipes" / f"tallrec_ml1m_{family}_6b_zh.yaml").read_text())
    # shrunk to two CPU steps of 4 samples on the tiny model; lang, template and 4-bit loading as shipped
    data["model"].update(path=str(src), compute_dtype="float32", gradient_checkpointing=False)
    data["lora"].update(r=4, alpha=8, dropout=0.0)
    data["data"].update(train=str(work / "train.jsonl"), valid=str(work / "valid.jsonl"), cutoff_len=128)
    data["train"].update(output_dir=str(work / "run"), max_steps=2, micro_batch_size=4, batch_size=4, seed=0)
    data["train"].update(learning_rate=1e-3, warmup_steps=0, eval_every=2)
    data["eval"]["batch_size"] = 4
    data["logging"]["progress_bar"] = False
    recipe = recipe_from_dict(data)
    summary = train(recipe)
    code = cli(
        [
            "evaluate",
            "--checkpoint",
            str(work / "run"),
            "--data",
            str(work / "test.jsonl"),
            "--out",
            str(work / "eval"),
        ]
    )
    report = json.loads((work / "eval" / "report.json").read_text())
    return {"summary": summary, "code": code, "report": report}
