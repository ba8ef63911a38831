"""``llm4rec plan``: will a recipe fit the card? Peak training memory by part, before any weight exists.

Parameters are counted exactly: backbones transformers implements are instantiated on the meta device
from their config (no memory, no download) and their modules are counted by kind; the remote-code legacy
releases (Qwen-7B v1, Baichuan, ChatGLM) are counted the same way on the converted config their family
builds (the layout llm4rec converts them to). The package carries the architecture of every shipped 7B backbone
(``llm4rec/models/arch/*.json``), so planning works offline.

The memory model follows what :func:`llm4rec.train.loop.train` actually runs:

* bitsandbytes stores every decoder ``nn.Linear`` as packed NF4 (half a byte per weight) plus one absmax
  per 64 weights (fp32, or with double quantization uint8 plus an fp32 constant per 256 blocks);
* ``peft.prepare_model_for_kbit_training`` casts everything left unquantized (embeddings, output head,
  norms, biases) to fp32, so the residual stream and therefore the activations are fp32 even when the
  matmuls run in bf16;
* LoRA weights, their gradients and AdamW's two moments are fp32 (8-bit AdamW: one byte per moment);
* activations saved for backward are counted tensor by tensor for a pre-norm decoder block with SDPA
  attention (grouped key/value heads are repeated because padded batches carry a mask) and LoRA dropout
  (CUDA saves a 1-byte mask, the CPU kernel a full-width noise tensor); gradient checkpointing keeps one
  hidden state per layer and recomputes one layer at a time;
* the loss upcasts logits to fp32 and cross-entropy holds three ``positions x vocab`` fp32 tensors at once
  in its backward; llm4rec's loop runs the head on the labelled positions only (``llm4rec.train.loss``),
  transformers' own loss on every position, which dominates for 150k vocabularies;
* on CUDA the plan is the expected nvidia-smi peak: the caching allocator's reserve (fitted to an H200,
  2026-11-30) and the CUDA context are added to the live tensors; on CPU a small fixed overhead (kernel
  code, Python objects) measured by the validation script.

Modules: :mod:`.params` (parameter counts), :mod:`.arch` (packaged architectures), :mod:`.memory` (the
memory model and the plan), :mod:`.advice` (changes that make a plan fit), :mod:`.auto` (``auto`` settings),
:mod:`.plan` (:func:`plan_recipe`), :mod:`.cli` (``llm4rec plan``).

Validated on CPU against measured peak RSS of real 4-bit training steps (``scripts/validate_planner.py``).
"""

from llm4rec.models.planner.advice import advise
from llm4rec.models.planner.arch import (
    ARCH_DIR,
    ResolvedArch,
    arch_names,
    family_default_arch,
    load_arch,
    normalize_arch_name,
    resolve_arch,
)
from llm4rec.models.planner.auto import (
    AUTO_HEADROOM,
    AUTO_MAX_MICRO,
    CKPT_COST,
    MICRO_BATCH_OVERHEAD_TOKENS,
    AutoChoice,
    choose_auto,
    has_auto,
    relative_speed,
    resolve_auto,
)
from llm4rec.models.planner.cli import main
from llm4rec.models.planner.memory import (
    ANSWER_TOKENS,
    CPU_RUNTIME_BYTES,
    CUDA_CONTEXT_BYTES,
    CUDA_RESERVE_BYTES,
    CUDA_RESERVE_PER_SPREAD_BYTE,
    CUDA_RESERVE_PER_VOCAB_BYTE,
    DQ_BLOCK,
    GIB,
    LOSS_TENSORS,
    NF4_BLOCK,
    MemoryPlan,
    Settings,
    build_plan,
    estimate,
    layer_activation_bytes,
    lora_params,
    quantized_bytes,
    settings_from_recipe,
    vocab_tensor_bytes,
)
from llm4rec.models.planner.params import (
    LinearGroup,
    ParamCount,
    count_params,
    count_params_analytic,
    count_params_meta,
)
from llm4rec.models.planner.plan import plan_recipe

__all__ = [
    "ANSWER_TOKENS",
    "ARCH_DIR",
    "AUTO_HEADROOM",
    "AUTO_MAX_MICRO",
    "AutoChoice",
    "CKPT_COST",
    "CPU_RUNTIME_BYTES",
    "CUDA_CONTEXT_BYTES",
    "CUDA_RESERVE_BYTES",
    "CUDA_RESERVE_PER_SPREAD_BYTE",
    "CUDA_RESERVE_PER_VOCAB_BYTE",
    "DQ_BLOCK",
    "GIB",
    "LOSS_TENSORS",
    "LinearGroup",
    "MICRO_BATCH_OVERHEAD_TOKENS",
    "MemoryPlan",
    "NF4_BLOCK",
    "ParamCount",
    "ResolvedArch",
    "Settings",
    "advise",
    "arch_names",
    "build_plan",
    "choose_auto",
    "count_params",
    "count_params_analytic",
    "count_params_meta",
    "estimate",
    "family_default_arch",
    "has_auto",
    "layer_activation_bytes",
    "load_arch",
    "lora_params",
    "main",
    "normalize_arch_name",
    "plan_recipe",
    "quantized_bytes",
    "relative_speed",
    "resolve_arch",
    "resolve_auto",
    "settings_from_recipe",
    "vocab_tensor_bytes",
]
