"""Parameter counts of a backbone by kind, exactly, from its config (instantiated on the meta device)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from llm4rec.errors import UserError
from llm4rec.models.planner.arch import arch_names


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
