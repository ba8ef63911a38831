"""The memory model: peak training memory of resolved settings, by part, and the plan that reports it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from llm4rec.errors import UserError
from llm4rec.models.planner.arch import ResolvedArch
from llm4rec.models.planner.params import LinearGroup, ParamCount, count_params

GIB = 2**30

#: NF4 block size of bitsandbytes and the block size of its second-level (double) quantization
NF4_BLOCK = 64
DQ_BLOCK = 256
#: CUDA context, kernel images and cuBLAS workspace: memory nvidia-smi shows outside torch's allocator
#: (0.74 GiB on an H200 with torch 2.11+cu130, 2026-11-30)
CUDA_CONTEXT_BYTES = int(0.74 * GIB)
#: torch's caching allocator reserves more than the live tensors. Fitted to the 2026-11-30 H200 table
#: (``REFERENCE_H200`` in tests/models/test_planner.py): a fixed part, a part per byte of one fp32
#: vocabulary-sized tensor (the loss's [tokens, vocab] blocks are too large to share the cache with
#: anything else and leave split segments behind), and a part per byte of activations when micro-batches
#: differ in shape (blocks cached for one length do not fit the next)
CUDA_RESERVE_BYTES = int(0.68 * GIB)
CUDA_RESERVE_PER_VOCAB_BYTE = 2.3
CUDA_RESERVE_PER_SPREAD_BYTE = 0.15
#: answer positions per sample the planner assumes when the loss is on answers only (TALLRec's "Yes."/"No."
#: with an answer suffix and EOS is 2-5 tokens in every shipped tokenizer)
ANSWER_TOKENS = 8
#: on CPU: kernel code paged in on first use and the model's Python objects (11-15 MiB measured by
#: scripts/validate_planner.py on every configuration, independent of the model's size)
CPU_RUNTIME_BYTES = 12 * 2**20
#: fp32 cross-entropy tensors alive together at the peak of the loss backward (log-softmax output, its
#: gradient and the logits' gradient)
LOSS_TENSORS = 3


@dataclass
class Settings:
    """The recipe knobs the memory depends on, resolved (compute dtype named, LoRA targets as module names)."""

    micro_batch_size: int
    cutoff_len: int
    gradient_checkpointing: bool
    lora_r: int
    lora_dropout: float
    lora_targets: list[str]
    optimizer: str
    load_in_4bit: bool = True
    double_quant: bool = True
    compute_dtype: str = "bfloat16"
    attn_implementation: str = "sdpa"
    device: str = "cuda"
    #: positions per sample the output head runs on: 0 = every position (the whole [B, T, vocab] logits, as
    #: transformers' own loss); else the labelled ones only (llm4rec.train.loss gathers them)
    head_tokens_per_sample: int = 0
    #: 0 when every micro-batch has the same shape, up to 1 when their lengths vary widely (the
    #: allocator then caches blocks that later shapes cannot reuse)
    shape_spread: float = 1.0
    #: the micro-batch is one packed row of ``tokens`` tokens (llm4rec.train.packing): the same tokens at
    #: worst, but sdpa / eager attention then spans the whole row through a row x row mask
    packing: bool = False

    @property
    def tokens(self) -> int:
        """Tokens in one micro-batch at the worst case (every sample at the cutoff, packed or padded)."""
        return self.micro_batch_size * self.cutoff_len

    @property
    def head_tokens(self) -> int:
        """Positions of one micro-batch that go through the output head."""
        if self.head_tokens_per_sample <= 0:
            return self.tokens
        return self.micro_batch_size * min(self.cutoff_len, self.head_tokens_per_sample)

    @property
    def compute_bytes(self) -> int:
        """Bytes per element of the compute dtype."""
        return 4 if self.compute_dtype == "float32" else 2


def _targeted(params: ParamCount, targets: list[str]) -> list[LinearGroup]:
    groups = [g for g in params.linears if g.name in targets]
    missing = [t for t in targets if t not in params.linear_names()]
    if missing:
        raise UserError(
            f"lora.targets: {', '.join(map(repr, missing))} not among the linear layers of {params.arch} "
            f"({', '.join(params.linear_names())})"
        )
    return groups


def quantized_bytes(numel: int, double_quant: bool) -> tuple[int, int]:
    """(packed NF4 weight bytes, quantization-constant bytes) of one quantized weight of ``numel`` elements."""
    blocks = math.ceil(numel / NF4_BLOCK)
    packed = (numel + 1) // 2
    if double_quant:
        # uint8 absmax per block, fp32 scale per 256 blocks, the 256-entry fp32 code and an fp32 offset
        consts = blocks + 4 * math.ceil(blocks / DQ_BLOCK) + 4 * 256 + 4
    else:
        consts = 4 * blocks
    return packed, consts + 4 * 16  # + the 16-value NF4 code


def lora_params(params: ParamCount, s: Settings) -> int:
    """Trainable LoRA parameters: r x (in + out) per adapted layer."""
    return sum(
        s.lora_r * (g.in_features + g.out_features) * g.count for g in _targeted(params, s.lora_targets)
    )


def layer_activation_bytes(params: ParamCount, s: Settings) -> int:
    """Bytes one decoder layer saves for backward per token (no checkpointing)."""
    a = 4 if s.load_in_4bit else s.compute_bytes  # the residual stream's dtype (fp32 after k-bit prep)
    H, nh, d, inter = params.hidden_size, params.num_heads, params.head_dim, params.intermediate_size
    norms = 2 * H * 4  # RMSNorm/LayerNorm keep their fp32 input
    # SDPA keeps q, k, v (k/v repeated to every query head) and its output, plus the log-sum-exp
    attn = 4 * nh * d * a + nh * 4
    mlp = (3 if params.gated_mlp else 2) * inter * a  # gate, act(gate), up (or up, act(up))
    # peft casts a LoRA layer's input to its fp32 weights before the dropout; lora_A keeps the dropped-out
    # copy, the dropout its mask (CUDA's fused kernel: 1 byte; the CPU kernel: an fp32 noise tensor)
    lora = 0
    mask = 1 if s.device == "cuda" else 4
    for g in _targeted(params, s.lora_targets):
        lora += s.lora_r * 4  # lora_A's output, kept by lora_B
        lora += g.in_features * (mask + 4) if s.lora_dropout > 0 else g.in_features * 4
    if s.attn_implementation == "eager":
        # the T x T probabilities per head (per token: T entries; a packed row's T is the whole row)
        attn += 2 * nh * (s.tokens if s.packing else s.cutoff_len) * a
    return norms + attn + mlp + lora


@dataclass
class MemoryPlan:
    """A peak-memory estimate: parts in bytes, the verdict, and what to change when it does not fit."""

    arch: str
    arch_source: str
    family: str | None
    device: str
    gpu_gb: float
    params: ParamCount
    published_params: int | None
    settings: Settings
    parts: dict[str, int]
    notes: dict[str, str] = field(default_factory=dict)
    other_checkpointing_bytes: int = 0
    advice: list[str] = field(default_factory=list)
    recipe_path: str = ""
    #: how ``auto`` settings were resolved (None when the recipe has none)
    auto: Any = None

    @property
    def total_bytes(self) -> int:
        """Estimated peak memory in bytes."""
        return sum(self.parts.values())

    @property
    def total_gb(self) -> float:
        """Estimated peak memory in GiB (2^30 bytes, as nvidia-smi counts a card's memory); on CUDA this is
        the expected nvidia-smi peak: live tensors + the allocator's reserve + the CUDA context."""
        return self.total_bytes / GIB

    @property
    def allocated_gb(self) -> float:
        """Estimated peak of live tensors (``torch.cuda.max_memory_allocated``), GiB."""
        outside = self.parts.get("allocator reserve", 0) + self.parts.get("CUDA context", 0)
        return (self.total_bytes - outside) / GIB

    @property
    def reserved_gb(self) -> float:
        """Estimated peak of torch's reserved memory (``torch.cuda.max_memory_reserved``), GiB."""
        return self.allocated_gb + self.parts.get("allocator reserve", 0) / GIB

    @property
    def fits(self) -> bool:
        """Whether the estimate is within ``gpu_gb``."""
        return self.total_gb <= self.gpu_gb

    def table(self) -> str:
        """A human-readable table of the plan with its verdict."""
        s, p = self.settings, self.params
        where = f"a {self.gpu_gb:g} GiB {'GPU' if self.device == 'cuda' else 'CPU RAM budget'}"
        lines = [f"memory plan{' for ' + self.recipe_path if self.recipe_path else ''} on {where}"]
        pub = ""
        if self.published_params:
            ok = "matches" if self.published_params == p.total else "DIFFERS from"
            pub = f", {ok} the published {self.published_params:,}"
        lines.append(f"backbone    {self.arch} ({self.arch_source}; family {self.family or '?'})")
        lines.append(
            f"parameters  {p.total:,} counted {'on the meta device' if p.source in ('meta', 'converted') else 'from the architecture'}{pub}"
        )
        for kind, n in p.by_kind().items():
            if n:
                lines.append(f"              {kind:<24}{n:>15,}")
        n_lora = lora_params(p, s)
        lines.append(
            f"settings    micro-batch {s.micro_batch_size} x cutoff {s.cutoff_len} = {s.tokens:,} tokens"
            f"{' in one packed row' if s.packing else ''}; "
            f"gradient checkpointing {'on' if s.gradient_checkpointing else 'off'}; "
            f"{'4-bit NF4' + (' + double quant' if s.double_quant else '') if s.load_in_4bit else 'no quantization'}; "
            f"compute {s.compute_dtype}"
        )
        lines.append(
            f"            LoRA r={s.lora_r} on {', '.join(s.lora_targets)} ({n_lora:,} trainable); optimizer {s.optimizer}"
        )
        lines.append("")
        width = max(len(k) for k in self.parts) + 2
        lines.append(f"  {'part':<{width}}{'GiB':>8}   how")
        for name, n in self.parts.items():
            lines.append(f"  {name:<{width}}{n / GIB:>8.2f}   {self.notes.get(name, '')}")
        lines.append(f"  {'total (peak)':<{width}}{self.total_gb:>8.2f}   of {self.gpu_gb:g} GiB")
        if self.device == "cuda":
            lines.append(
                f"expected nvidia-smi peak: {self.total_gb:.2f} GiB (torch allocated {self.allocated_gb:.2f}, "
                f"reserved {self.reserved_gb:.2f}, CUDA context {CUDA_CONTEXT_BYTES / GIB:.2f})"
            )
        other = "off" if s.gradient_checkpointing else "on"
        lines.append(
            f"  (with gradient checkpointing {other} the activations would be {self.other_checkpointing_bytes / GIB:.2f} GiB)"
        )
        lines.append("")
        if self.fits:
            lines.append(f"verdict: fits, {self.gpu_gb - self.total_gb:.1f} GiB to spare")
        else:
            lines.append(f"verdict: does NOT fit: needs {self.total_gb:.1f} GiB of {self.gpu_gb:g} GiB")
            if self.advice and self.advice[0].startswith("nothing"):
                lines.append(self.advice[0])
            elif self.advice:
                lines.append("each of these would make it fit (append to the command line):")
                lines += [f"  {a}" for a in self.advice]
        return "\n".join(lines)


def _activation_parts(p: ParamCount, s: Settings) -> tuple[int, int, int]:
    """(saved activations, extra transient at the peak, the saved activations under the other checkpointing)."""
    N, H = s.tokens, p.hidden_size
    a = 4 if s.load_in_4bit else s.compute_bytes
    per_layer = layer_activation_bytes(p, s) * N
    ckpt_saved = p.num_layers * N * H * a
    full_saved = p.num_layers * per_layer
    final = N * H * 4  # the final norm's fp32 input
    if s.packing and s.attn_implementation != "flash_attention_2":
        # the row's block-diagonal mask, built once per forward (bool for sdpa, which torch turns into an
        # additive mask of the compute dtype; additive for eager); flash attention takes the positions only
        final += N * N * (s.compute_bytes + (1 if s.attn_implementation == "sdpa" else 0))
    # the loss: logits in fp32 (the head is fp32 after k-bit prep, else a copy from the compute dtype), on
    # the positions the head runs on (plus their gathered hidden states)
    K = s.head_tokens
    logits = LOSS_TENSORS * K * p.vocab_size * 4 + (0 if a == 4 else K * p.vocab_size * s.compute_bytes)
    if K < N:
        logits += K * H * a
    # backward through one layer: the gradients flowing through its MLP and attention, and the weight
    # bitsandbytes dequantizes for the matmul
    largest = max(g.weights for g in p.linears)
    grads = N * (2 * p.intermediate_size + 2 * H) * a
    dequant = largest * s.compute_bytes if s.load_in_4bit else 0
    if s.gradient_checkpointing:
        saved = ckpt_saved + final
        transient = max(logits, per_layer + grads + dequant)
        other = full_saved + final
    else:
        saved = full_saved + final
        transient = max(logits, grads + dequant)
        other = ckpt_saved + final
    return saved, transient, other


def vocab_tensor_bytes(p: ParamCount, s: Settings) -> int:
    """Bytes of one fp32 tensor of the loss: head positions x vocabulary."""
    return s.head_tokens * p.vocab_size * 4


def estimate(p: ParamCount, s: Settings) -> tuple[dict[str, int], dict[str, str], int]:
    """Peak memory of one training step by part (bytes), a note per part, and the other-checkpointing size."""
    parts: dict[str, int] = {}
    notes: dict[str, str] = {}
    c = s.compute_bytes
    unq = 4 if s.load_in_4bit else c  # k-bit prep casts what bitsandbytes left unquantized to fp32
    if s.load_in_4bit:
        packed = consts = 0
        for g in p.linears:
            w, q = quantized_bytes(g.weights, s.double_quant)
            packed += w * g.count
            consts += q * g.count
        parts["linear weights (NF4)"] = packed
        notes["linear weights (NF4)"] = f"{p.linear_weights:,} weights x 4 bits"
        parts["quantization constants"] = consts
        notes["quantization constants"] = (
            "uint8 absmax per 64 weights + fp32 per 256 blocks"
            if s.double_quant
            else "fp32 absmax per 64 weights"
        )
    else:
        parts["linear weights"] = p.linear_weights * c
        notes["linear weights"] = f"{p.linear_weights:,} x {c} bytes ({s.compute_dtype})"
    dtype = "fp32 (k-bit prep)" if s.load_in_4bit else s.compute_dtype
    parts["embeddings"] = p.embedding * unq
    notes["embeddings"] = f"{p.embedding:,} x {unq} bytes, {dtype}"
    parts["output head"] = p.lm_head * unq
    notes["output head"] = f"{p.lm_head:,} x {unq} bytes" + ("" if p.lm_head else " (tied to the embeddings)")
    parts["norms and biases"] = (p.norms + p.linear_bias + p.other) * unq
    notes["norms and biases"] = f"{p.norms + p.linear_bias + p.other:,} x {unq} bytes"
    n_lora = lora_params(p, s)
    parts["LoRA weights"] = n_lora * 4
    notes["LoRA weights"] = f"{n_lora:,} x 4 bytes (fp32)"
    parts["LoRA gradients"] = n_lora * 4
    notes["LoRA gradients"] = "fp32, kept across gradient accumulation"
    if s.optimizer == "adamw":
        parts["optimizer states"] = n_lora * 8
        notes["optimizer states"] = "AdamW: two fp32 moments"
    else:
        # bitsandbytes 8-bit Adam: two uint8 moments with an fp32 absmax per 256 values
        parts["optimizer states"] = n_lora * 2 + 2 * 4 * math.ceil(n_lora / 256)
        notes["optimizer states"] = "8-bit AdamW: two uint8 moments" + (
            " (paged: may spill to CPU RAM)" if s.optimizer.startswith("paged") else ""
        )
    saved, transient, other = _activation_parts(p, s)
    parts["activations"] = saved
    notes["activations"] = (
        f"{p.num_layers} layer inputs x {s.tokens:,} tokens (checkpointed)"
        if s.gradient_checkpointing
        else f"{layer_activation_bytes(p, s):,} bytes/token/layer x {p.num_layers} layers x {s.tokens:,} tokens"
    )
    parts["loss / backward peak"] = transient
    head = "every position" if s.head_tokens == s.tokens else f"{s.head_tokens:,} labelled positions"
    notes["loss / backward peak"] = (
        f"max of {LOSS_TENSORS} fp32 logits on {head} (vocab {p.vocab_size:,}) and one layer's backward"
    )
    if s.device == "cuda":
        vocab_bytes = vocab_tensor_bytes(p, s)
        parts["allocator reserve"] = int(
            CUDA_RESERVE_BYTES
            + CUDA_RESERVE_PER_VOCAB_BYTE * vocab_bytes
            + CUDA_RESERVE_PER_SPREAD_BYTE * s.shape_spread * (saved + transient)
        )
        notes["allocator reserve"] = (
            f"cached, not live: {CUDA_RESERVE_BYTES / GIB:.1f} GiB + {CUDA_RESERVE_PER_VOCAB_BYTE:g} x "
            f"{vocab_bytes / GIB:.2f} GiB vocabulary-sized + {CUDA_RESERVE_PER_SPREAD_BYTE:.0%} x "
            f"{s.shape_spread:.2f} batch-shape spread of the activations"
        )
        parts["CUDA context"] = CUDA_CONTEXT_BYTES
        notes["CUDA context"] = "kernels and cuBLAS workspace, outside torch's allocator"
    else:
        parts["CPU runtime overhead"] = CPU_RUNTIME_BYTES
        notes["CPU runtime overhead"] = "kernel code paged in, Python objects of the model"
    return parts, notes, other


def settings_from_recipe(
    recipe: Any,
    params: ParamCount,
    family: str | None,
    device: str,
    seq_len: int | None = None,
    shape_spread: float = 1.0,
    capability: tuple[int, int] | None = None,
) -> Settings:
    """Resolve a recipe's memory-relevant knobs (LoRA target names via the family's registry entry; compute
    dtype, attention and packing by the rules the loader and training apply).

    ``seq_len`` is the longest tokenized sample when the data is known (default: the cutoff);
    ``shape_spread`` how much micro-batch lengths vary (default 1: unknown data, assume they do);
    ``capability`` the CUDA card's compute capability (None: a current card).
    """
    from llm4rec.models.backbone import attention_name, compute_dtype_name

    m, lo, t = recipe.model, recipe.lora, recipe.train
    targets = _resolve_targets(lo.targets, family, params)
    dtype = compute_dtype_name(m.compute_dtype, device, capability)
    return Settings(
        micro_batch_size=1 if t.micro_batch_size == "auto" else t.micro_batch_size,
        cutoff_len=min(recipe.data.cutoff_len, seq_len or recipe.data.cutoff_len),
        gradient_checkpointing=m.gradient_checkpointing is not False,
        lora_r=lo.r,
        lora_dropout=lo.dropout,
        lora_targets=targets,
        optimizer=t.optimizer,
        load_in_4bit=m.load_in_4bit,
        double_quant=m.double_quant,
        compute_dtype=dtype,
        attn_implementation=attention_name(m.attn_implementation),
        device=device,
        # llm4rec.train.loss runs the head on labelled positions only: all of them with train_on_inputs
        head_tokens_per_sample=0 if recipe.data.train_on_inputs else ANSWER_TOKENS,
        shape_spread=shape_spread,
        packing=_packs(recipe.data.packing, family, m.attn_implementation),
    )


def _packs(packing: bool | str, family: str | None, attn: str) -> bool:
    """``data.packing`` resolved as training resolves it (:func:`llm4rec.train.packing.packs`)."""
    from llm4rec.models.registry import FAMILIES
    from llm4rec.train.packing import packs

    return packs(packing, FAMILIES.get(family or ""), attn)


def _resolve_targets(targets: str | list[str], family: str | None, params: ParamCount) -> list[str]:
    from llm4rec.models.registry import FAMILIES, get_family

    if family is not None and family in FAMILIES:
        names = get_family(family).targets(targets)
    elif isinstance(targets, str):
        # a packaged legacy architecture whose family module is not installed: the usual two sets
        sets = {"qv": ["q_proj", "v_proj"], "all": params.linear_names()}
        if targets not in sets:
            raise UserError(
                f"lora.targets: {targets!r} is not a target set (choose qv, all or a list of names)"
            )
        names = sets[targets]
    else:
        names = list(targets)
    _targeted(params, names)
    return names


def build_plan(
    arch: ResolvedArch, s: Settings, gpu_gb: float, params: ParamCount | None = None, recipe_path: str = ""
) -> MemoryPlan:
    """Estimate the plan for fully resolved settings (no advice)."""
    params = params or count_params(arch.config, arch.name)
    parts, notes, other = estimate(params, s)
    return MemoryPlan(
        arch=arch.name,
        arch_source=arch.source,
        family=arch.family,
        device=s.device,
        gpu_gb=gpu_gb,
        params=params,
        published_params=arch.published_params,
        settings=s,
        parts=parts,
        notes=notes,
        other_checkpointing_bytes=other,
        recipe_path=recipe_path,
    )
