"""`llm4rec plan`: exact parameter counts, the memory model against real tensors, the CLI, and a measured
CPU training peak."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from llm4rec.config import load_recipe
from llm4rec.models.planner import (
    GIB,
    Settings,
    arch_names,
    count_params,
    count_params_analytic,
    count_params_meta,
    estimate,
    layer_activation_bytes,
    load_arch,
    main,
    normalize_arch_name,
    plan_recipe,
    quantized_bytes,
)
from tests.conftest import REPO, shared_path

#: published parameter totals (model cards and technical reports), written out here rather than read from
#: the packaged JSON so that a wrong edit to either is caught
PUBLISHED = {
    "llama-7b": 6_738_415_616,
    "llama-2-7b": 6_738_415_616,
    "llama-3-8b": 8_030_261_248,
    "qwen2-7b": 7_615_616_512,
    "qwen1.5-7b": 7_721_324_544,
    "qwen-7b": 7_721_324_544,
    "baichuan-7b": 7_000_559_616,
    "baichuan2-7b": 7_505_973_248,
    "chatglm-6b": 6_173_286_400,
    "chatglm2-6b": 6_243_584_000,
    "chatglm3-6b": 6_243_584_000,
}
LEGACY_TYPES = ("qwen", "baichuan", "chatglm")
RECIPES = REPO / "recipes"


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_packaged_architectures_count_exactly_the_published_totals(name):
    arch = load_arch(name)
    params = count_params(arch["config"], name)
    assert params.total == PUBLISHED[name] == arch["published_params"]
    legacy = arch["config"]["model_type"] in LEGACY_TYPES
    assert params.source == ("converted" if legacy else "meta")
    assert params.linear_weights > 0.8 * params.total  # what 4-bit quantization applies to


def test_every_packaged_architecture_is_checked():
    assert set(arch_names()) == set(PUBLISHED)


def test_analytic_counts_agree_with_meta_instantiation_kind_by_kind():
    # Baichuan-7B is LLaMA-7B's architecture with a 64k vocabulary; Qwen-7B v1 has Qwen1.5-7B's shapes
    baichuan = count_params_analytic(load_arch("baichuan-7b")["config"])
    llama_64k = count_params_meta(dict(load_arch("llama-7b")["config"], vocab_size=64000))
    assert baichuan.by_kind() == llama_64k.by_kind()
    assert sorted(baichuan.linears, key=str) == sorted(llama_64k.linears, key=str)
    qwen1 = count_params_analytic(load_arch("qwen-7b")["config"])
    qwen15 = count_params_meta(load_arch("qwen1.5-7b")["config"])
    assert qwen1.by_kind() == qwen15.by_kind()
    assert sorted(qwen1.linears, key=str) == sorted(qwen15.linears, key=str)


@pytest.mark.parametrize(
    "name", ["llama-7b", "llama-2-7b", "qwen-7b", "chatglm-6b", "chatglm2-6b", "chatglm3-6b"]
)
def test_packaged_hyperparameters_match_the_release_configs(name):
    cfg = json.loads(shared_path("models", name, "config.json").read_text())
    assert count_params(cfg, name).total == PUBLISHED[name]


def test_meta_count_equals_a_real_model_and_handles_tied_heads():
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    for cfg in (
        LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
        Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False),
    ):  # fmt: skip
        real = AutoModelForCausalLM.from_config(cfg)
        counted = count_params_meta(cfg.to_dict())
        assert counted.total == sum(p.numel() for p in real.parameters())
        assert counted.lm_head == (0 if cfg.tie_word_embeddings else 300 * 64)
        assert counted.linear_bias == (0 if cfg.model_type == "llama" else 2 * (64 + 2 * 32))


@pytest.mark.parametrize("double_quant", [False, True])
def test_quantized_bytes_match_bitsandbytes(double_quant):
    import bitsandbytes.functional as F

    w = torch.randn(384, 1000)  # 384,000 weights: 6,000 NF4 blocks, 24 (rounded up) second-level blocks
    packed, state = F.quantize_4bit(w, quant_type="nf4", compress_statistics=double_quant)
    consts = state.absmax.numel() * state.absmax.element_size() + state.code.numel() * 4
    if double_quant:
        consts += state.state2.absmax.numel() * 4 + state.state2.code.numel() * 4 + state.offset.numel() * 4
    assert quantized_bytes(w.numel(), double_quant) == (packed.numel() * packed.element_size(), consts)


def _saved_activation_bytes(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """Bytes autograd keeps for backward after one forward pass, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params and ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return total


@pytest.mark.parametrize("targets", ["qv", "all"])
def test_layer_activation_model_matches_what_autograd_saves(tmp_path, targets):
    """Count what a real 4-bit + LoRA LLaMA keeps for backward, tensor by tensor (no checkpointing)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, LlamaConfig

    from llm4rec.models.loading import load_base_model
    from llm4rec.models.registry import get_family

    cfg = LlamaConfig(vocab_size=500, hidden_size=128, intermediate_size=384, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False)  # fmt: skip
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    fam = get_family("llama")
    model = load_base_model(tmp_path, fam, compute_dtype="float32", device="cpu")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    targets_list = fam.targets(targets)
    model = get_peft_model(
        model,
        LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=targets_list, task_type="CAUSAL_LM"),
    )
    model.train()
    B, T = 2, 48
    saved = _saved_activation_bytes(model, torch.randint(0, 500, (B, T)))

    params = count_params_meta(cfg.to_dict())
    s = Settings(micro_batch_size=B, cutoff_len=T, gradient_checkpointing=False, lora_r=8, lora_dropout=0.05,
                 lora_targets=targets_list, optimizer="adamw", compute_dtype="float32", device="cpu")  # fmt: skip
    N, H = B * T, 128
    per_layer = layer_activation_bytes(params, s) * N
    # layer 0's input needs no gradient, so its first norm and the dropout noise on it are not saved; the
    # final norm's input and the log-softmax output (N x vocab fp32) are
    n_first = sum(1 for t in targets_list if t in ("q_proj", "k_proj", "v_proj"))
    layer0 = per_layer - N * H * 4 - n_first * N * H * 4
    expected = layer0 + 2 * per_layer + N * H * 4 + N * 500 * 4
    assert saved == pytest.approx(expected, rel=0.03)


@pytest.fixture(scope="module")
def llama7b():
    return count_params(load_arch("llama-7b")["config"], "llama-7b")


@pytest.fixture(scope="module")
def qwen2_7b():
    return count_params(load_arch("qwen2-7b")["config"], "qwen2-7b")


def _total(params, **changes) -> float:
    base = dict(micro_batch_size=8, cutoff_len=512, gradient_checkpointing=True, lora_r=8, lora_dropout=0.05,
                lora_targets=["q_proj", "v_proj"], optimizer="adamw")  # fmt: skip
    parts, _, _ = estimate(params, Settings(**{**base, **changes}))
    return sum(parts.values()) / GIB


def test_plan_parts_respond_to_each_knob(llama7b, qwen2_7b):
    parts, _, other = estimate(llama7b, Settings(8, 512, True, 8, 0.05, ["q_proj", "v_proj"], "adamw"))
    # 4-bit: half a byte per linear weight; what stays unquantized is fp32 after k-bit preparation
    assert parts["linear weights (NF4)"] == llama7b.linear_weights // 2
    assert parts["embeddings"] == parts["output head"] == 32000 * 4096 * 4
    assert parts["LoRA weights"] == 32 * 2 * 8 * (4096 + 4096) * 4
    assert parts["optimizer states"] == 2 * parts["LoRA weights"]
    # checkpointing keeps one fp32 hidden state per layer and token (+ the final norm's input)
    assert parts["activations"] == (32 + 1) * 8 * 512 * 4096 * 4
    assert other > 10 * parts["activations"]
    assert _total(llama7b, gradient_checkpointing=False) > _total(llama7b) + 20
    assert _total(llama7b, micro_batch_size=4) < _total(llama7b) < _total(llama7b, micro_batch_size=16)
    assert _total(llama7b, cutoff_len=256) < _total(llama7b)
    assert _total(llama7b, lora_targets=list(llama7b.linear_names())) > _total(llama7b)
    assert _total(llama7b, optimizer="paged_adamw_8bit") < _total(llama7b)
    assert _total(llama7b, double_quant=False) - _total(llama7b) == pytest.approx(0.28, abs=0.02)
    bf16, _, _ = estimate(
        llama7b, Settings(8, 512, True, 8, 0.05, ["q_proj", "v_proj"], "adamw", load_in_4bit=False)
    )
    assert bf16["linear weights"] == 2 * llama7b.linear_weights and bf16["embeddings"] == 32000 * 4096 * 2
    assert _total(llama7b, load_in_4bit=False) > _total(llama7b) + 6
    # the loss tensors scale with the vocabulary: Qwen2's 152k against LLaMA's 32k
    q_parts, _, _ = estimate(qwen2_7b, Settings(8, 512, True, 8, 0.05, ["q_proj", "v_proj"], "adamw"))
    assert q_parts["loss / backward peak"] == 3 * 8 * 512 * 152064 * 4
    # on CPU the dropout keeps a full fp32 noise tensor instead of CUDA's 1-byte mask, and there is no
    # CUDA context
    cpu, _, _ = estimate(
        llama7b,
        Settings(
            8, 512, False, 8, 0.05, ["q_proj", "v_proj"], "adamw", compute_dtype="float32", device="cpu"
        ),
    )
    gpu, _, _ = estimate(
        llama7b,
        Settings(
            8, 512, False, 8, 0.05, ["q_proj", "v_proj"], "adamw", compute_dtype="float32", device="cuda"
        ),
    )
    assert cpu["activations"] - gpu["activations"] == 32 * 2 * 4096 * 3 * 8 * 512
    assert "CUDA context" in gpu and "allocator reserve" in gpu and "CPU runtime overhead" in cpu
    assert "CUDA context" not in cpu and "allocator reserve" not in cpu
    # the head on answer positions only: the vocabulary-sized loss tensors (and their reserve) shrink to
    # 8 positions per sample
    full = estimate(qwen2_7b, Settings(8, 512, True, 8, 0.05, ["q_proj", "v_proj"], "adamw"))[0]
    head = estimate(
        qwen2_7b, Settings(8, 512, True, 8, 0.05, ["q_proj", "v_proj"], "adamw", head_tokens_per_sample=8)
    )[0]
    assert head["loss / backward peak"] < full["loss / backward peak"] / 3  # one layer's backward now
    assert full["allocator reserve"] - head["allocator reserve"] > 5 * GIB  # 2.3 x a 2.3 GiB tensor


def _shipped_7b_recipes() -> list[Path]:
    # every TALLRec recipe but the SmolLM2-135M one (a 135M model, not a 7B)
    return sorted(p for p in RECIPES.glob("tallrec_*.yaml") if "smollm2" not in p.name)


def test_every_shipped_7b_recipe_expects_at_most_20_gib_on_a_24_gib_card():
    recipes = _shipped_7b_recipes()
    assert {"tallrec_ml1m_llama2_7b.yaml", "tallrec_ml1m_qwen2_7b.yaml", "tallrec_ml1m_qwen2_7b_zh.yaml"} <= {
        p.name for p in recipes
    }
    for path in recipes:
        recipe = load_recipe(path)
        assert recipe.train.micro_batch_size == "auto" and recipe.model.gradient_checkpointing == "auto", path
        plan = plan_recipe(recipe, gpu_gb=24)
        assert plan.params.total > 6e9, path  # a real 7B architecture, not a fallback
        assert plan.total_gb <= 20.0, f"{path.name}: {plan.total_gb:.2f} GiB"
        assert plan.auto is not None and plan.auto.fits


#: Measured on one NVIDIA H200 on 2026-11-30: torch 2.11+cu130, transformers 5.24.0, peft 0.21.2,
#: bitsandbytes 0.50.2, random-weight checkpoints in the real shapes, llm4rec's training loop as it was then
#: (the output head on every position), every micro-batch 512 tokens.
#: Columns: recipe, overrides, torch max_memory_allocated, max_memory_reserved and nvidia-smi's
#: memory.used peak, GiB.
REFERENCE_H200 = [
    ("tallrec_ml1m.yaml", [], 7.84, 9.96, 10.70),
    ("tallrec_ml1m.yaml", ["train.micro_batch_size=4"], 6.01, 6.82, 7.56),
    ("tallrec_ml1m.yaml", ["data.cutoff_len=256"], 6.01, 6.82, 7.56),
    ("tallrec_ml1m.yaml", ["lora.targets=all"], 8.36, 10.39, 11.13),
    ("tallrec_ml1m.yaml", ["train.micro_batch_size=16"], 11.41, 13.88, 14.62),
    ("tallrec_ml1m.yaml", ["train.micro_batch_size=2", "model.gradient_checkpointing=false"], 10.49, 11.02, 11.76),
    ("tallrec_ml1m_qwen2_7b.yaml", [], 15.84, 20.83, 21.57),
]  # fmt: skip
#: the row without checkpointing is not reproduced: re-measured on an H200 with all-512-token
#: batches (REMEASURED_H200 below) it is 12.67 GiB allocated and 13.85 on nvidia-smi, every layer keeping
#: what layer_activation_bytes lists (as on CPU), where the row has 6.0 GiB of activations (0.72 of the list)
SUPERSEDED = {5}
#: Re-measured with this code (the head on answer positions, the loss normalised by the effective batch's
#: answer tokens) on one NVIDIA H200, 2026-11-30, same software and random LLaMA-7B as above, every
#: micro-batch 512 tokens, two optimizer steps then validation (one step for the last row): recipe
#: overrides, torch allocated / reserved and nvidia-smi's memory.used peak (GiB)
REMEASURED_H200 = [
    (["train.micro_batch_size=8", "train.batch_size=8", "model.gradient_checkpointing=true"], 7.81, 8.90, 9.64),
    (["train.micro_batch_size=2", "train.batch_size=2", "model.gradient_checkpointing=false"], 12.67, 13.11, 13.85),
    (["train.micro_batch_size=4", "train.batch_size=32", "model.gradient_checkpointing=false"], 21.02, 22.80, 23.54),
]  # fmt: skip
#: the settings the measured runs had
MEASURED_AT = ["train.micro_batch_size=8", "train.batch_size=128", "model.gradient_checkpointing=true"]


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(r, marks=pytest.mark.xfail(strict=True, reason="superseded")) if i in SUPERSEDED else r
        for i, r in enumerate(REFERENCE_H200)
    ],
    ids=[" ".join([r[0], *r[1]]) for r in REFERENCE_H200],
)
def test_plan_predicts_the_h200_within_10_percent(row):
    import dataclasses

    from llm4rec.models.planner import build_plan, resolve_arch

    name, overrides, allocated, _reserved, smi = row
    plan = plan_recipe(load_recipe(RECIPES / name, MEASURED_AT + overrides), gpu_gb=24)
    # the code measured ran the head on every position, and every batch had the same shape
    s = dataclasses.replace(plan.settings, head_tokens_per_sample=0, shape_spread=0.0)
    then = build_plan(resolve_arch("", arch=plan.arch), s, 24, plan.params)
    assert then.total_gb == pytest.approx(smi, rel=0.10), then.table()
    assert then.allocated_gb == pytest.approx(allocated, rel=0.10)
    out = then.table()
    assert f"expected nvidia-smi peak: {then.total_gb:.2f} GiB" in out


@pytest.mark.parametrize("row", REMEASURED_H200, ids=lambda r: " ".join(r[0]))
def test_plan_predicts_this_code_on_the_h200_within_10_percent(row):
    overrides, allocated, _reserved, smi = row
    plan = plan_recipe(
        load_recipe(RECIPES / "tallrec_ml1m.yaml", overrides), gpu_gb=24, seq_len=512, shape_spread=0.0
    )
    assert plan.settings.head_tokens < plan.settings.tokens  # the head on answer positions only
    assert plan.total_gb == pytest.approx(smi, rel=0.10), plan.table()
    assert plan.allocated_gb == pytest.approx(allocated, rel=0.10)


def test_auto_picks_the_fastest_setting_that_fits():
    import dataclasses

    from llm4rec.models.planner import AUTO_HEADROOM, choose_auto, estimate, relative_speed

    auto = ["train.micro_batch_size=auto", "model.gradient_checkpointing=auto"]
    recipe = load_recipe(RECIPES / "tallrec_ml1m.yaml", auto)
    for budget, seq_len in ((139.0, 300), (24.0, 300), (24.0, 512), (9.0, 512)):
        choice = choose_auto(recipe, budget, seq_len=seq_len)
        assert choice.fits and choice.plan.total_gb <= AUTO_HEADROOM * budget
        best = relative_speed(choice.plan.settings)
        for mb in (1, 2, 4, 8, 16, 32):  # the divisors of batch_size 128 up to AUTO_MAX_MICRO
            for ckpt in (False, True):
                s = dataclasses.replace(
                    choice.plan.settings, micro_batch_size=mb, gradient_checkpointing=ckpt
                )
                if relative_speed(s) > best:  # anything faster would not have fitted
                    assert sum(estimate(choice.plan.params, s)[0].values()) / GIB > AUTO_HEADROOM * budget
    big = choose_auto(recipe, 139.0, seq_len=300)
    assert not big.gradient_checkpointing and big.micro_batch_size == 32  # a big card: the fastest there is
    on24 = choose_auto(recipe, 24.0, seq_len=300)
    assert on24.gradient_checkpointing and on24.micro_batch_size == 32  # one large micro-batch beats 4 small
    # per micro-batch cost: 8 micro-batches of 16 without checkpointing beat 32 of 4 with it
    fast = dataclasses.replace(big.plan.settings, micro_batch_size=16, gradient_checkpointing=False)
    slow = dataclasses.replace(big.plan.settings, micro_batch_size=4, gradient_checkpointing=True)
    assert relative_speed(fast) > relative_speed(slow)
    # nothing fits: the leanest setting, and the verdict says so
    none = choose_auto(recipe, 4.0)
    assert not none.fits and none.micro_batch_size == 1 and none.gradient_checkpointing
    assert "does NOT fit" in none.line()
    # a fixed micro-batch with automatic checkpointing keeps the micro-batch
    fixed = choose_auto(load_recipe(RECIPES / "tallrec_ml1m.yaml", ["train.micro_batch_size=8"]), 24.0)
    assert fixed.micro_batch_size == 8 and fixed.gradient_checkpointing  # 8 x 512 without it: no room


def test_arch_names_from_checkpoint_directories():
    assert normalize_arch_name("/models/Llama-2-7b-chat-hf/") == "llama-2-7b"
    assert normalize_arch_name("Qwen2.5-7B-Instruct") == "qwen2.5-7b"
    assert normalize_arch_name("Baichuan2-7B-Chat") == "baichuan2-7b"
    assert normalize_arch_name("my-finetune-hf") == "my-finetune-hf"  # unknown names are left alone
    assert load_arch("Qwen2.5-7B-Instruct")["name"] == "qwen2-7b"


def _advice_overrides(out: str) -> list[list[str]]:
    lines = out.split("append to the command line):")[1].splitlines()
    return [
        [t for t in ln.split("  (")[0].split() if re.match(r"^[a-z_]+\.[a-z_]+=", t)]
        for ln in lines
        if ln.strip()
    ]


def test_cli_verdicts_exit_codes_and_advice_that_works(capsys):
    recipe = str(RECIPES / "tallrec_ml1m_qwen2_7b.yaml")
    assert main([recipe, "--gpu-gb", "24"]) == 0
    out = capsys.readouterr().out
    assert "verdict: fits" in out and "7,615,616,512" in out and "matches the published" in out
    assert "auto: micro_batch_size=" in out and "expected nvidia-smi peak: " in out

    fixed = ["train.micro_batch_size=8", "model.gradient_checkpointing=true"]
    for extra in (fixed, [*fixed, "lora.targets=all", "model.gradient_checkpointing=false"]):
        assert main([recipe, "--gpu-gb", "12", *extra]) == 1
        out = capsys.readouterr().out
        assert "does NOT fit" in out
        advice = _advice_overrides(out)
        assert advice and all(advice)
        for overrides in advice:  # every suggestion, applied as printed, must bring the plan under 12 GiB
            assert plan_recipe(load_recipe(recipe, extra + overrides), gpu_gb=12).fits, overrides
        if len(extra) > len(fixed):  # no single change is enough: one combined suggestion
            assert len(advice) == 1 and len(advice[0]) >= 2

    assert main([recipe, "--gpu-gb", "6", *fixed]) == 1
    assert "nothing in the recipe brings it under 6 GiB" in capsys.readouterr().out


def test_cli_user_errors_exit_2(capsys):
    recipe = str(RECIPES / "tallrec_ml1m_llama2_7b.yaml")
    with pytest.raises(SystemExit) as exc:
        main([recipe, "--arch", "lama-7b"])
    assert exc.value.code == 2
    assert "did you mean 'llama-7b'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([recipe, "model.family=qwen2"])  # the path names a Llama-2 checkpoint
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'qwen2'" in err and "'llama'" in err
    with pytest.raises(SystemExit) as exc:
        main([recipe, "lora.targets=[q_proj,w_pack]"])
    assert exc.value.code == 2
    assert "w_pack" in capsys.readouterr().err


def test_plan_reads_a_local_checkpoint_config(tmp_path):
    from transformers import Qwen2Config

    Qwen2Config(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2).save_pretrained(tmp_path / "m")  # fmt: skip
    recipe = load_recipe(
        RECIPES / "tallrec_ml1m_qwen2_7b.yaml", [f"model.path={tmp_path / 'm'}", "model.family=auto"]
    )
    plan = plan_recipe(recipe, device="cpu")
    assert plan.family == "qwen2" and "config.json" in plan.arch_source
    assert plan.params.vocab_size == 1000 and plan.params.num_kv_heads == 2
    # a release directory of a remote-code model is counted from its own config.json
    glm = tmp_path / "chatglm2-6b"
    glm.mkdir()
    shutil.copy(shared_path("models", "chatglm2-6b", "config.json"), glm / "config.json")
    recipe = load_recipe(
        RECIPES / "tallrec_ml1m_qwen2_7b.yaml", [f"model.path={glm}", "model.family=chatglm2"]
    )
    assert plan_recipe(recipe).params.total == PUBLISHED["chatglm2-6b"]


def _validation_script():
    spec = importlib.util.spec_from_file_location(
        "validate_planner", REPO / "scripts" / "validate_planner.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_plan_within_20_percent_of_measured_training_peak(tmp_path):
    """Real 4-bit QLoRA steps through llm4rec's training loop in a fresh process; peak RSS vs the plan."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to reset and read the peak RSS")
    script = _validation_script()
    result = script.measure(script.QUICK[0], tmp_path, steps=2)
    assert 0.8 <= result["ratio"] <= 1.2, result


def test_weights_reproduce_the_published_4bit_footprint_of_qwen25_7b(qwen2_7b):
    """Qwen2.5-7B loaded with NF4 + double quant and fp16 compute reports get_memory_footprint() 5.44 GB
    (dev.to/sumanpro, "QLoRA: Fine-Tuning a 7B Model on a 16GB GPU"): packed 4-bit linear weights plus the
    fp16 embeddings, head, norms and biases, before k-bit preparation casts those to fp32."""
    parts, _, _ = estimate(qwen2_7b, Settings(1, 512, True, 8, 0.05, ["q_proj", "v_proj"], "adamw"))
    unquantized = parts["embeddings"] + parts["output head"] + parts["norms and biases"]  # fp32 here
    footprint = parts["linear weights (NF4)"] + unquantized // 2
    assert round(footprint / 1e9, 2) == 5.44


def test_plan_of_a_model_not_made_yet_says_so_instead_of_planning_7b(tmp_path, monkeypatch):
    from llm4rec.errors import UserError

    monkeypatch.chdir(tmp_path)  # demo_out/ does not exist here
    recipe = load_recipe(RECIPES / "demo_cpu.yaml")
    with pytest.raises(UserError, match=r"model directory demo_out/tiny-base does not exist yet.*make demo"):
        plan_recipe(recipe)
    # a packaged architecture can still be planned on purpose
    assert plan_recipe(recipe, arch="llama-7b").family == "llama"
