"""LLaMA-1 / Llama-2 / Llama-3 (TALLRec's backbone), and the LLaMA-architecture models such as SmolLM2.

transformers loads these checkpoints as they are: no converter, no tensor map. What llm4rec chooses for them:
TALLRec's Alpaca template by default, Llama-2-chat's ``[INST]`` format and SmolLM2-Instruct's ChatML as
alternatives, LoRA on ``q_proj``/``v_proj`` ("qv", TALLRec's choice) or every linear layer ("all"), and
padding with ``<unk>``.
"""

from __future__ import annotations

from typing import Any

from llm4rec.models.families.base import llama_layout_family, tiny_decoder_config
from llm4rec.models.templates import PromptTemplate, chatml

#: Llama-2-chat's [INST] format (the BOS token is added by the tokenizer, not written here).
LLAMA2_CHAT = PromptTemplate(
    name="llama2_chat",
    lang="en",
    text="[INST] {instruction}\n{input} [/INST]",
    text_no_input="[INST] {instruction} [/INST]",
    answer_prefix=" ",
)

#: SmolLM2-Instruct's own chat format: ChatML with the system line its chat template adds by default.
CHATML_SMOLLM2 = chatml(
    "chatml_smollm2", "en", "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
)


def tiny_config(vocab_size: int) -> Any:
    """A two-layer ``LlamaConfig`` for ``llm4rec tiny-model``."""
    return tiny_decoder_config("LlamaConfig", vocab_size, kv_heads=4)


FAMILY = llama_layout_family(
    "llama",
    "LLaMA-1 / Llama-2 / Llama-3 (TALLRec's backbone)",
    templates=(LLAMA2_CHAT, CHATML_SMOLLM2),
    # LLaMA ships no pad token; TALLRec pads with id 0 (<unk>). EOS must stay distinct: the
    # loss trains the model to stop after "Yes."/"No.".
    pad_token_candidates=("<unk>", "<|finetune_right_pad_id|>", "<|reserved_special_token_0|>"),
    tiny_config=tiny_config,
    gguf_architecture="llama",
    packing=True,  # transformers' own decoder: packed rows via position_ids
)
