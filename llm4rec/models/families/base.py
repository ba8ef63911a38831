"""What a backbone family is: :class:`BackboneFamily`, and the pieces several families share.

Each module of :mod:`llm4rec.models.families` builds one ``FAMILY`` from these; the registry lists them.
This module imports nothing from the families, so every family module can import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm4rec.errors import UserError
from llm4rec.models.templates import ALPACA, ALPACA_ZH, ANSWERS, PromptTemplate

#: Linear layers of a LLaMA-style decoder block (also Qwen2, converted Baichuan and Qwen-1).
LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: LoRA target sets of every family whose layers carry LLaMA's projection names
LLAMA_TARGETS = {"qv": ("q_proj", "v_proj"), "all": LLAMA_LINEAR}
#: TALLRec's Alpaca templates, the default of the families without a chat format of their own
ALPACA_TEMPLATES = {"en": "alpaca", "zh": "alpaca_zh"}


@dataclass(frozen=True)
class BackboneFamily:
    """One model family and every backbone-specific choice llm4rec makes for it."""

    name: str
    #: ``model_type`` values in ``config.json`` that identify this family
    model_types: tuple[str, ...]
    description: str
    #: LoRA target sets selectable in a recipe (``lora.targets``): "qv" is TALLRec's choice
    lora_targets: dict[str, tuple[str, ...]]
    #: template used per prompt language when the recipe says ``template: auto``
    default_template: dict[str, str]
    #: pad token to use when the tokenizer defines none, tried in order (must not be a token the loss needs)
    pad_token_candidates: tuple[str, ...]
    #: builds a tiny random config of this architecture for ``llm4rec tiny-model`` (vocab size -> config)
    tiny_config: Callable[[int], Any] | None = None
    #: answer words per language: (positive, negative); TALLRec's "Yes." / "No." and 是 / 否 by default
    answers: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(ANSWERS))
    #: the family's own prompt templates (chat formats); the shared Alpaca ones serve every family
    templates: tuple[PromptTemplate, ...] = ()
    #: the ``transformers`` auto class that loads the (converted) checkpoint
    auto_class: str = "AutoModelForCausalLM"
    #: padding side for training batches (right keeps labels aligned and is what every family trains with)
    train_padding_side: str = "right"
    #: padding side for scoring (left puts every prompt's last token at position -1)
    score_padding_side: str = "left"
    #: ``convert(src, out, family_name) -> out`` for original (remote-code) checkpoints, or None when
    #: transformers loads the release as it is
    converter: Callable[[Path, Path, str], Path] | None = None
    #: ``write_tokenizer(src, out, config)``: the converted tokenizer of an original release written to
    #: ``out`` without converting any weights (``config`` is the release's ``config.json`` dict)
    write_tokenizer: Callable[[Path, Path, dict[str, Any]], None] | None = None
    #: ``load_tokenizer(path) -> tokenizer`` for families where ``AutoTokenizer.from_pretrained(path)`` gives
    #: other ids than the release's original tokenizer (None: ``AutoTokenizer`` as it is)
    tokenizer_loader: Callable[[Path], Any] | None = None
    #: the kind of tokenizer ``llm4rec tiny-model`` trains: "sentencepiece" (LLaMA-style byte-fallback BPE)
    #: or "byte_level" (GPT-2-style byte-level BPE with ChatML's special tokens)
    tiny_tokenizer: str = "sentencepiece"
    #: the ``general.architecture`` of GGUF files that ``llm4rec import-gguf`` imports as this family
    gguf_architecture: str | None = None
    #: module names bitsandbytes must keep unquantized besides the output head
    skip_quantization: tuple[str, ...] = ()
    #: for families whose ``model_type`` is ambiguous (ChatGLM-6B/2/3 all say "chatglm"): a predicate on
    #: the raw ``config.json`` dict that says whether a checkpoint belongs to this family
    detect: Callable[[dict[str, Any]], bool] | None = None
    #: for remote-code releases: the original ``config.json`` dict -> the config dict (``model_type``
    #: included) of the layout llm4rec converts it to; the planner counts parameters on that
    converted_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    #: the loaded model's decoder takes 1-D ``position_ids`` and a transformers ``Cache``, and its logits are
    #: exactly ``lm_head(hidden)``: scoring may reuse shared prompt prefixes and slice the output head
    prefix_safe: bool = True
    #: the decoder is transformers' own and builds its attention from ``position_ids`` when no
    #: ``attention_mask`` is given (block-diagonal for sdpa/eager, varlen for flash_attention_2), so
    #: training may pack a micro-batch into one row with no padding (``data.packing``)
    packing: bool = False

    def matches(self, cfg: dict[str, Any]) -> bool:
        """Whether a ``config.json`` dict describes a checkpoint of this family (original or converted)."""
        if cfg.get("llm4rec_family"):
            return cfg["llm4rec_family"] == self.name
        if self.detect is not None:
            return bool(self.detect(cfg))
        return cfg.get("model_type") in self.model_types

    def targets(self, name_or_list: str | list[str] | tuple[str, ...]) -> list[str]:
        """Resolve a recipe's ``lora.targets`` (a set name or an explicit module list)."""
        if isinstance(name_or_list, str):
            if name_or_list not in self.lora_targets:
                raise UserError(
                    f"lora.targets: {name_or_list!r} is not a target set of family {self.name!r} "
                    f"(choose {', '.join(self.lora_targets)} or give a list of module names)"
                )
            return list(self.lora_targets[name_or_list])
        return list(name_or_list)


#: the templates every family can use (TALLRec's Alpaca, in English and Chinese)
SHARED_TEMPLATES = (ALPACA, ALPACA_ZH)


def llama_layout_family(name: str, description: str, **fields: Any) -> BackboneFamily:
    """A family whose (converted) decoder carries LLaMA's projection names, prompted with TALLRec's Alpaca
    templates unless it says otherwise: LLaMA, Qwen2, and the converted Qwen-1 and Baichuan."""
    fields.setdefault("model_types", (name,))
    return BackboneFamily(
        name=name,
        description=description,
        lora_targets=LLAMA_TARGETS,
        default_template=ALPACA_TEMPLATES,
        **fields,
    )


def tiny_decoder_config(config_class: str, vocab_size: int, kv_heads: int) -> Any:
    """A two-layer config of the given transformers class, in the widths bitsandbytes' 4-bit kernels take."""
    import transformers

    return getattr(transformers, config_class)(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
    )
