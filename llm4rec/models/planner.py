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

Validated on CPU against measured peak RSS of real 4-bit training steps (``scripts/validate_planner.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from llm4rec.errors import UserError, exit_on_user_error
from llm4rec.io import read_json_object

ARCH_DIR = Path(__file__).resolve().parent / "arch"
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


# --------------------------------------------------------------------------- parameter counting


@dataclass(frozen=True)
class LinearGroup:
    """``count`` linear layers of one name and shape (one per decoder layer)."""

    name: str
    in_features: int
    out_features: int
    count: int
    bias: bool = False

    @property
    def weights(self) -> int:
        """Weights of one layer of this group."""
        return self.in_features * self.out_features


@dataclass(frozen=True)
class ParamCount:
    """Exact parameter counts of a backbone by kind, and the shapes the activation model needs."""

    arch: str
    source: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    gated_mlp: bool
    #: decoder linear layers (quantized by bitsandbytes in the 4-bit path)
    linears: tuple[LinearGroup, ...]
    embedding: int
    lm_head: int
    norms: int
    #: biases of the decoder linear layers
    linear_bias: int
    other: int = 0

    @property
    def linear_weights(self) -> int:
        """Weights of all decoder linear layers."""
        return sum(g.weights * g.count for g in self.linears)

    @property
    def total(self) -> int:
        """All parameters (tied embeddings counted once)."""
        return (
            self.linear_weights + self.embedding + self.lm_head + self.norms + self.linear_bias + self.other
        )

    def by_kind(self) -> dict[str, int]:
        """Counts per kind, in display order."""
        return {
            "decoder linear weights": self.linear_weights,
            "embeddings": self.embedding,
            "output head": self.lm_head,
            "norms": self.norms,
            "linear biases": self.linear_bias,
            "other": self.other,
        }

    def linear_names(self) -> list[str]:
        """Names of the decoder linear layers, in block order."""
        return [g.name for g in self.linears]


def count_params(config: dict[str, Any], arch: str = "") -> ParamCount:
    """Count a backbone's parameters from its ``config.json`` data.

    Model types transformers implements are instantiated on the meta device; the remote-code releases
    (``qwen``, ``baichuan``, ``chatglm``) are counted the same way in the layout llm4rec converts them to.
    """
    from llm4rec.models.registry import converted_config_of

    if converted_config_of(config) is not None:
        return count_params_analytic(config, arch)
    return count_params_meta(config, arch)


def _meta_model(config: dict[str, Any]) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    # ChatGLM-6B's model type (llm4rec_chatglm) is llm4rec's own: its modelling module registers it on import
    from llm4rec.models.legacy import modeling_chatglm  # noqa: F401

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise UserError(
            f"model_type {model_type!r}: transformers has no class for it and llm4rec cannot count it; "
            f"plan with --arch NAME (known: {', '.join(arch_names())})"
        )
    kwargs = {k: v for k, v in config.items() if k not in ("model_type", "auto_map", "architectures")}
    cfg = AutoConfig.for_model(model_type, **kwargs)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg)


def count_params_meta(config: dict[str, Any], arch: str = "") -> ParamCount:
    """Instantiate the backbone on the meta device and count its modules' parameters by kind."""
    import torch

    model = _meta_model(config)
    cfg = model.config
    head = model.get_output_embeddings()
    seen: set[int] = set()
    groups: dict[tuple[str, int, int, bool], int] = {}
    embedding = lm_head = norms = linear_bias = 0
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in own)
        n_own = sum(p.numel() for p in own)
        if module is head:
            lm_head += n_own  # 0 when tied: the weight was already seen as the input embedding
        elif isinstance(module, torch.nn.Embedding):
            embedding += n_own
        elif isinstance(module, torch.nn.Linear):
            has_bias = module.bias is not None
            key = (name.rsplit(".", 1)[-1], module.in_features, module.out_features, has_bias)
            groups[key] = groups.get(key, 0) + 1
            linear_bias += module.out_features if has_bias else 0
        elif "norm" in type(module).__name__.lower():
            norms += n_own
        elif own:
            raise UserError(f"{arch or cfg.model_type}: unexpected parameters in module {name!r}")
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    n_heads = text.num_attention_heads
    linears = tuple(LinearGroup(n, i, o, c, b) for (n, i, o, b), c in groups.items())
    return ParamCount(
        arch=arch or cfg.model_type,
        source="meta",
        vocab_size=text.vocab_size,
        hidden_size=text.hidden_size,
        intermediate_size=text.intermediate_size,
        num_layers=text.num_hidden_layers,
        num_heads=n_heads,
        num_kv_heads=getattr(text, "num_key_value_heads", None) or n_heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // n_heads,
        gated_mlp=any(g.name in ("gate_proj", "gate_up_proj") for g in linears),
        linears=linears,
        embedding=embedding,
        lm_head=lm_head,
        norms=norms,
        linear_bias=linear_bias,
    )


def count_params_analytic(config: dict[str, Any], arch: str = "") -> ParamCount:
    """Count a remote-code release (Qwen-7B v1, Baichuan(2), ChatGLM-6B, ChatGLM2/3-6B) from its config.

    Its family builds the converted config (what ``llm4rec convert`` writes), which is instantiated on the
    meta device: the linear layers carry the converted names that LoRA targets refer to.
    """
    from llm4rec.models.registry import converted_config_of

    converted = converted_config_of(config)
    if converted is None:
        raise UserError(
            f"model_type {config.get('model_type')!r}: no llm4rec family converts this config "
            "(qwen, baichuan and chatglm releases are counted in their converted layout)"
        )
    counted = count_params_meta(converted, arch or str(config.get("model_type")))
    return dataclasses.replace(counted, source="converted")


# --------------------------------------------------------------------------- packaged architectures


@cache
def _arch_index() -> dict[str, dict[str, Any]]:
    index: dict[str, dict[str, Any]] = {}
    for path in sorted(ARCH_DIR.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for key in (data["name"], *data.get("aliases", ())):
            index[key] = data
    return index


def arch_names() -> list[str]:
    """Names of the packaged architectures (aliases excluded)."""
    return sorted({d["name"] for d in _arch_index().values()})


def load_arch(name: str) -> dict[str, Any]:
    """The packaged architecture ``name`` (or an alias): ``{name, family, published_params, config, ...}``."""
    key = normalize_arch_name(name)
    index = _arch_index()
    if key not in index:
        import difflib

        close = difflib.get_close_matches(key, list(index), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"--arch: unknown architecture {name!r}{hint}; known: {', '.join(arch_names())}")
    return index[key]


_SUFFIXES = ("-hf", "-chat", "-instruct", "-base", "-it")


def normalize_arch_name(name: str) -> str:
    """Lower-case a checkpoint name and drop suffixes that do not change the architecture, when that
    leads to a packaged name: ``Llama-2-7b-chat-hf`` -> ``llama-2-7b``; ``Qwen2.5-7B-Instruct`` -> ``qwen2.5-7b``.
    """
    key = name.strip().rstrip("/").rsplit("/", 1)[-1].lower().replace("_", "-")
    index = _arch_index()
    cand = key
    while cand not in index:
        for suffix in _SUFFIXES:
            if cand.endswith(suffix):
                cand = cand[: -len(suffix)]
                break
        else:
            return key
    return cand


def family_default_arch(family: str) -> dict[str, Any] | None:
    """The packaged architecture planned for ``family`` when nothing names one."""
    for data in _arch_index().values():
        if data["family"] == family and data.get("family_default"):
            return data
    return None


@dataclass
class ResolvedArch:
    """Which architecture a plan is for, and where it came from."""

    name: str
    family: str | None
    config: dict[str, Any]
    source: str
    published_params: int | None = None


def resolve_arch(model_path: str, family: str = "auto", arch: str | None = None) -> ResolvedArch:
    """Find the architecture to plan: ``arch`` by name, else ``model_path``'s config.json, else the packaged
    architecture named like ``model_path``'s last component, else the family's default 7B.

    A family given in the recipe that disagrees with the architecture is a :class:`UserError`.
    """
    from llm4rec.models.registry import detect_family, get_family

    resolved: ResolvedArch | None = None
    if arch:
        data = load_arch(arch)
        resolved = ResolvedArch(
            data["name"], data["family"], data["config"], "packaged", data.get("published_params")
        )
    elif model_path and (Path(model_path) / "config.json").is_file():
        cfg_path = Path(model_path) / "config.json"
        cfg = read_json_object(cfg_path)
        fam = detect_family(model_path)
        if family != "auto":
            wanted = get_family(family)
            if fam is not None and not wanted.matches(cfg):
                raise UserError(
                    f"model.family: recipe says {family!r} but {cfg_path} is a {fam!r} checkpoint"
                )
            fam = family  # detection may not tell apart same-layout releases (ChatGLM2/3); the recipe does
        resolved = ResolvedArch(Path(model_path).name, fam, cfg, str(cfg_path))
    elif model_path and normalize_arch_name(model_path) in _arch_index():
        data = load_arch(model_path)
        resolved = ResolvedArch(
            data["name"], data["family"], data["config"], "packaged", data.get("published_params")
        )
    elif model_path:
        raise UserError(
            f"model.path: the model directory {model_path} does not exist yet; make it first (for "
            "recipes/demo_cpu.yaml: `make demo`, or the tiny-model and pretrain commands at the top of the "
            "recipe; for a released model: download its weights there), or plan a packaged architecture "
            f"with --arch NAME (known: {', '.join(arch_names())})"
        )
    elif family != "auto":
        data = family_default_arch(family)
        if data is None:
            raise UserError(
                f"model.family: no packaged architecture for family {family!r}; plan with --arch NAME "
                f"(known: {', '.join(arch_names())})"
            )
        where = f"{model_path} is not a local model directory; " if model_path else ""
        resolved = ResolvedArch(
            data["name"],
            data["family"],
            data["config"],
            f"{where}the {family} family's default, choose another with --arch",
            data.get("published_params"),
        )
    if resolved is None:
        raise UserError(
            f"model.path: {model_path!r} is neither a local model directory nor a known architecture name; "
            f"set model.family or plan with --arch NAME (known: {', '.join(arch_names())})"
        )
    if family != "auto" and resolved.family is not None and resolved.family != family:
        raise UserError(
            f"model.family: recipe says {family!r} but the architecture {resolved.name!r} ({resolved.source}) "
            f"is a {resolved.family!r} backbone"
        )
    return resolved


# --------------------------------------------------------------------------- the memory model


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
) -> Settings:
    """Resolve a recipe's memory-relevant knobs (LoRA target names via the family's registry entry).

    ``seq_len`` is the longest tokenized sample when the data is known (default: the cutoff);
    ``shape_spread`` how much micro-batch lengths vary (default 1: unknown data, assume they do).
    """
    m, lo, t = recipe.model, recipe.lora, recipe.train
    targets = _resolve_targets(lo.targets, family, params)
    if m.compute_dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    else:
        dtype = m.compute_dtype
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
        attn_implementation="sdpa" if m.attn_implementation == "auto" else m.attn_implementation,
        device=device,
        # llm4rec.train.loss runs the head on labelled positions only: all of them with train_on_inputs
        head_tokens_per_sample=0 if recipe.data.train_on_inputs else ANSWER_TOKENS,
        shape_spread=shape_spread,
        packing=_packs(recipe.data.packing, family, m.attn_implementation),
    )


def _packs(packing: bool | str, family: str | None, attn: str) -> bool:
    """``data.packing`` resolved as training resolves it (see llm4rec.train.packing.auto_packing)."""
    from llm4rec.models.registry import FAMILIES, list_families
    from llm4rec.train.packing import auto_packing

    if packing != "auto":
        return bool(packing)
    list_families()
    return auto_packing(family in FAMILIES and FAMILIES[family].packing, attn)


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


def advise(plan: MemoryPlan, batch_size: int, all_targets: list[str]) -> list[str]:
    """Single recipe changes (as ``key=value`` overrides) that bring the plan within the budget."""
    s, p = plan.settings, plan.params

    def total(**changes: Any) -> float:
        parts, _, _ = estimate(p, dataclasses.replace(s, **changes))
        return sum(parts.values()) / GIB

    out: list[str] = []
    for mb in range(s.micro_batch_size - 1, 0, -1):
        if batch_size % mb == 0 and total(micro_batch_size=mb) <= plan.gpu_gb:
            out.append(
                f"train.micro_batch_size={mb}  ({total(micro_batch_size=mb):.1f} GiB; gradient accumulation "
                "keeps the effective batch)"
            )
            break
    if not s.gradient_checkpointing and total(gradient_checkpointing=True) <= plan.gpu_gb:
        out.append(
            f"model.gradient_checkpointing=true  ({total(gradient_checkpointing=True):.1f} GiB; ~30% slower)"
        )
    for cut in (384, 320, 256, 192, 128):
        if cut < s.cutoff_len and total(cutoff_len=cut) <= plan.gpu_gb:
            out.append(
                f"data.cutoff_len={cut}  ({total(cutoff_len=cut):.1f} GiB; longer prompts lose their oldest history)"
            )
            break
    qv = ["q_proj", "v_proj"]
    if sorted(s.lora_targets) != qv and set(qv) <= set(all_targets) and total(lora_targets=qv) <= plan.gpu_gb:
        out.append(f"lora.targets=qv  ({total(lora_targets=['q_proj', 'v_proj']):.1f} GiB; TALLRec's choice)")
    if s.device == "cuda" and s.optimizer == "adamw" and total(optimizer="paged_adamw_8bit") <= plan.gpu_gb:
        out.append(f"train.optimizer=paged_adamw_8bit  ({total(optimizer='paged_adamw_8bit'):.1f} GiB)")
    if s.load_in_4bit and not s.double_quant and total(double_quant=True) <= plan.gpu_gb:
        out.append(f"model.double_quant=true  ({total(double_quant=True):.1f} GiB)")
    if not s.load_in_4bit and total(load_in_4bit=True) <= plan.gpu_gb:
        out.append(f"model.load_in_4bit=true  ({total(load_in_4bit=True):.1f} GiB)")
    if not out:
        out.append(_combined_advice(plan, batch_size, all_targets, total))
    return out


def _combined_advice(plan: MemoryPlan, batch_size: int, all_targets: list[str], total: Any) -> str:
    """Greedily combine the changes that save the most until the plan fits (or nothing is left)."""
    s = plan.settings
    changes: dict[str, Any] = {}
    keys: dict[str, str] = {}
    while total(**changes) > plan.gpu_gb:
        cur = dataclasses.replace(s, **changes)
        options: list[tuple[str, str, dict[str, Any]]] = []
        if not cur.gradient_checkpointing:
            options.append(("ckpt", "model.gradient_checkpointing=true", {"gradient_checkpointing": True}))
        if not cur.load_in_4bit:
            options.append(("4bit", "model.load_in_4bit=true", {"load_in_4bit": True}))
        if sorted(cur.lora_targets) != ["q_proj", "v_proj"] and {"q_proj", "v_proj"} <= set(all_targets):
            options.append(("targets", "lora.targets=qv", {"lora_targets": ["q_proj", "v_proj"]}))
        smaller = [mb for mb in range(cur.micro_batch_size // 2, 0, -1) if batch_size % mb == 0]
        if smaller:
            mb = smaller[0]
            options.append(("mb", f"train.micro_batch_size={mb}", {"micro_batch_size": mb}))
        if cur.device == "cuda" and cur.optimizer == "adamw":
            options.append(("opt", "train.optimizer=paged_adamw_8bit", {"optimizer": "paged_adamw_8bit"}))
        if not options:
            return (
                f"nothing in the recipe brings it under {plan.gpu_gb:g} GiB (the leanest settings need "
                f"{total(**changes):.1f} GiB): use a larger card, a shorter data.cutoff_len or a smaller backbone"
            )
        key, text, change = min(options, key=lambda o: total(**{**changes, **o[2]}))
        changes.update(change)
        keys[key] = text
    return f"{' '.join(keys.values())}  ({total(**changes):.1f} GiB together)"


#: Step time model, measured on an H200 with a 4-bit LLaMA-7B (2026-11-30, scripts/bench_train.py): a
#: micro-batch costs a fixed ~0.23 s (the kernel launches of 32 layers of dequantization, casts and LoRA,
#: whatever its size) plus ~7.4e-5 s per token, 1.3x that with checkpointing (every layer's forward runs
#: again in backward). The fixed part is worth ~3,000 tokens, so few large micro-batches beat many small
#: ones, with or without checkpointing.
CKPT_COST = 0.3
MICRO_BATCH_OVERHEAD_TOKENS = 3000
#: auto settings plan to at most this fraction of the memory they are given: room for the plan's +-10%
#: and for whatever else the card runs (24 GiB -> 19.9 GiB)
AUTO_HEADROOM = 0.83
#: the largest micro-batch auto tries (beyond it a step is not measurably faster); on CPU, where compute and
#: not memory is the limit, 8
AUTO_MAX_MICRO = {"cuda": 32, "cpu": 8}


def relative_speed(s: Settings) -> float:
    """Tokens per second relative to an ideal step (no checkpointing, no per-micro-batch cost)."""
    per_token = 1.0 + CKPT_COST * s.gradient_checkpointing
    return s.tokens / (MICRO_BATCH_OVERHEAD_TOKENS + s.tokens * per_token)


@dataclass
class AutoChoice:
    """What ``auto`` resolved to: the settings, their plan, and the memory they were chosen for."""

    micro_batch_size: int
    gradient_checkpointing: bool
    plan: MemoryPlan
    budget_gb: float
    fits: bool

    def line(self) -> str:
        """One line for the log."""
        verdict = "fits" if self.fits else "does NOT fit (nothing smaller is possible)"
        return (
            f"auto: micro_batch_size={self.micro_batch_size} gradient_checkpointing="
            f"{str(self.gradient_checkpointing).lower()} (expected peak {self.plan.total_gb:.2f} GiB; "
            f"{verdict} in {AUTO_HEADROOM:.0%} of {self.budget_gb:.1f} GiB)"
        )


def choose_auto(
    recipe: Any,
    budget_gb: float,
    device: str = "cuda",
    world: int = 1,
    seq_len: int | None = None,
    shape_spread: float = 1.0,
    arch: str | None = None,
) -> AutoChoice:
    """Resolve ``train.micro_batch_size: auto`` / ``model.gradient_checkpointing: auto``.

    Among micro-batches that divide the per-process batch (up to :data:`AUTO_MAX_MICRO`) and, when
    checkpointing is auto, both checkpointing settings, the one with the highest :func:`relative_speed`
    whose plan is within ``AUTO_HEADROOM x budget_gb``: checkpointing only where it buys a micro-batch
    large enough to pay for its recomputation. When nothing fits, the leanest setting.
    """
    t, m = recipe.train, recipe.model
    resolved = resolve_arch(m.path, m.family, arch or getattr(m, "arch", None) or None)
    params = count_params(resolved.config, resolved.name)
    base = settings_from_recipe(recipe, params, resolved.family, device, seq_len, shape_spread)
    per_process = t.batch_size // world if t.batch_size % world == 0 else t.batch_size
    if t.micro_batch_size == "auto":
        micros = [
            mb for mb in range(1, min(per_process, AUTO_MAX_MICRO[device]) + 1) if per_process % mb == 0
        ]
    else:
        micros = [t.micro_batch_size]
    ckpts = [False, True] if m.gradient_checkpointing == "auto" else [bool(m.gradient_checkpointing)]
    limit = AUTO_HEADROOM * budget_gb
    options = []
    for mb in micros:
        for ck in ckpts:
            s = dataclasses.replace(base, micro_batch_size=mb, gradient_checkpointing=ck)
            total = sum(estimate(params, s)[0].values()) / GIB
            options.append((total <= limit, relative_speed(s), -total, s))
    fitting = [o for o in options if o[0]]
    best = max(fitting, key=lambda o: (o[1], o[2])) if fitting else max(options, key=lambda o: o[2])
    plan = build_plan(resolved, best[3], budget_gb, params)
    return AutoChoice(
        best[3].micro_batch_size, best[3].gradient_checkpointing, plan, budget_gb, bool(fitting)
    )


def resolve_auto(recipe: Any, choice: AutoChoice) -> Any:
    """The recipe with its ``auto`` settings replaced by ``choice``."""
    model = dataclasses.replace(recipe.model, gradient_checkpointing=choice.gradient_checkpointing)
    train = dataclasses.replace(recipe.train, micro_batch_size=choice.micro_batch_size)
    return dataclasses.replace(recipe, model=model, train=train)


def has_auto(recipe: Any) -> bool:
    """Whether the recipe leaves the micro-batch or checkpointing to :func:`choose_auto`."""
    return recipe.train.micro_batch_size == "auto" or recipe.model.gradient_checkpointing == "auto"


def plan_recipe(
    recipe: Any,
    gpu_gb: float = 24.0,
    device: str = "cuda",
    arch: str | None = None,
    seq_len: int | None = None,
    shape_spread: float = 1.0,
) -> MemoryPlan:
    """Plan a loaded recipe (:class:`llm4rec.config.Recipe`) on a ``gpu_gb`` GiB ``device`` ("cuda"/"cpu").

    ``auto`` settings are resolved for that card first (:func:`choose_auto`); ``plan.auto`` says how.
    """
    if device not in ("cuda", "cpu"):
        raise UserError(f"--device: {device!r} is not cuda or cpu")
    if gpu_gb <= 0:
        raise UserError(f"--gpu-gb: must be positive, got {gpu_gb}")
    # a recipe key model.arch (when the recipe schema has one) names the packaged architecture too
    arch = arch or getattr(recipe.model, "arch", None) or None
    auto = None
    if has_auto(recipe):
        auto = choose_auto(recipe, gpu_gb, device, seq_len=seq_len, shape_spread=shape_spread, arch=arch)
        recipe = resolve_auto(recipe, auto)
    resolved = resolve_arch(recipe.model.path, recipe.model.family, arch)
    params = count_params(resolved.config, resolved.name)
    s = settings_from_recipe(recipe, params, resolved.family, device, seq_len, shape_spread)
    plan = build_plan(resolved, s, gpu_gb, params)
    plan.auto = auto
    if not plan.fits:
        plan.advice = advise(plan, recipe.train.batch_size, params.linear_names())
    return plan


_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


@exit_on_user_error
def main(argv: list[str]) -> int:
    """``llm4rec plan RECIPE [--gpu-gb 24] [--arch NAME] [--device cuda|cpu] [section.key=value ...]``.

    Exit status 0 when the plan fits, 1 when it does not, 2 on a recipe error.
    """
    from llm4rec.config import load_recipe

    ap = argparse.ArgumentParser(
        prog="llm4rec plan",
        description="Estimate the peak GPU memory of training RECIPE, offline (no weights needed).",
        epilog=f"packaged architectures: {', '.join(arch_names())}. Exit status 1 when it does not fit.",
    )
    ap.add_argument("recipe", help="recipe YAML")
    ap.add_argument("overrides", nargs="*", help="recipe overrides section.key=value")
    ap.add_argument("--gpu-gb", type=float, default=24.0, help="card memory in GiB (default 24)")
    ap.add_argument("--arch", help="packaged architecture to plan instead of model.path's")
    ap.add_argument(
        "--device", default="cuda", choices=("cuda", "cpu"), help="plan for a GPU (default) or CPU RAM"
    )
    args = ap.parse_intermixed_args(argv)
    bad = [o for o in args.overrides if not _OVERRIDE.match(o)]
    if bad:
        raise UserError(f"override {bad[0]!r}: expected section.key=value")
    recipe = load_recipe(args.recipe, args.overrides)
    plan = plan_recipe(recipe, gpu_gb=args.gpu_gb, device=args.device, arch=args.arch)
    plan.recipe_path = args.recipe
    if plan.auto is not None:
        print(plan.auto.line())
    print(plan.table())
    return 0 if plan.fits else 1
