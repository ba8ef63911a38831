"""LLaMA-1 / Llama-2 / Llama-3 (TALLRec's backbone), and the LLaMA-architecture models such as SmolLM2.

transformers loads these checkpoints as they are: no converter, no tensor map. What llm4rec chooses for them:
TALLRec's Alpaca template by default, Llama-2-chat's ``[INST]`` format and SmolLM2-Instruct's ChatML as
alternatives, LoRA on ``q_proj``/``v_proj`` ("qv", TALLRec's choice) or every linear layer ("all"),
padding with ``<unk>``, and a tokenizer that gives the original sentencepiece model's ids
(:func:`load_llama_tokenizer`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm4rec.errors import UserError
from llm4rec.io import read_json_object
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


def check_same_vocab(tokenizer_json: Path, model_file: Path, vocab: dict[str, int]) -> None:
    """Refuse a ``tokenizer.json`` whose vocabulary gives a piece of ``model_file`` another id (or lacks it)."""
    if not tokenizer_json.is_file():
        return
    their = read_json_object(tokenizer_json).get("model", {}).get("vocab")
    if not isinstance(their, dict):
        raise UserError(f"{tokenizer_json}: model.vocab: expected a BPE vocabulary beside {model_file.name}")
    wrong = next((p for p, i in vocab.items() if their.get(p) != i), None)
    if wrong is not None:
        raise UserError(
            f"{tokenizer_json}: model.vocab: {wrong!r} has id {their.get(wrong)}, {model_file.name} gives it "
            f"{vocab[wrong]}; the two files are not the same tokenizer (remove the one that is not the model's)"
        )


def load_llama_tokenizer(path: Path) -> Any:
    """The tokenizer of a LLaMA-family directory, giving the original sentencepiece model's ids.

    Where ``path`` holds a sentencepiece BPE ``tokenizer.model`` (LLaMA-1, Llama-2 and their fine-tunes), the
    backend is built from it by transformers' own sentencepiece builder
    (``SpmConverter.build_tokenizer_from_spm_proto``: merges ranked by piece score, the dummy prefix put in
    front of a leading space as sentencepiece does) and handed to ``AutoTokenizer``, so the result is the
    usual ``LlamaTokenizer`` with the directory's special tokens, BOS rule and chat template.
    ``AutoTokenizer`` alone (transformers 5.24) re-derives the merges another way and gives other ids on runs
    of spaces: ``"a  b"`` is ``▁a ▁▁ b`` there and ``▁a ▁ ▁b`` in sentencepiece. Special tokens written
    inside a text are cut out first and each chunk between them is encoded by sentencepiece on its own, as
    the slow ``LlamaTokenizer`` that TALLRec used did (``AutoTokenizer`` gives the chunk after a special token
    no dummy prefix). On the real LLaMA-1 and Llama-2 ``tokenizer.model`` (the same file), 17 of 13,468
    texts (11 with runs of spaces, 6 with a special token inside) and 8 of 96 runs of repeated characters
    differ with ``AutoTokenizer``, none with this (``scripts/compare_tokenizer_converters.py llama``).

    When the directory also has a ``tokenizer.json`` (a hub conversion, or a training output, which saves
    both), ``tokenizer.model`` still defines the ids: it is the release's original, and a ``tokenizer.json``
    re-loaded by ``LlamaTokenizer`` keeps its merges but not its pre-tokenizer, so it cannot be trusted to
    reproduce sentencepiece. A ``tokenizer.json`` that gives a piece another id than ``tokenizer.model`` is
    refused (:func:`check_same_vocab`) rather than silently overruled. Directories without
    ``tokenizer.model`` (byte-level BPE such as SmolLM2, GGUF imports, training outputs written before this)
    load with ``AutoTokenizer`` unchanged.
    """
    from transformers import AutoTokenizer

    model_file = path / "tokenizer.model"
    if not model_file.is_file():
        return AutoTokenizer.from_pretrained(str(path))
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import SpmConverter

    from llm4rec.models.legacy.checkpoint_io import load_sp_proto

    try:
        proto = load_sp_proto(model_file)
    except UserError:
        if (
            path / "tokenizer.json"
        ).is_file():  # e.g. Llama-3's tiktoken file copied beside its tokenizer.json
            return AutoTokenizer.from_pretrained(str(path))
        raise
    if proto.trainer_spec.model_type != 2:  # 2 = BPE; a unigram model is left to transformers
        return AutoTokenizer.from_pretrained(str(path))
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    check_same_vocab(path / "tokenizer.json", model_file, vocab)
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
    tok = AutoTokenizer.from_pretrained(str(path), tokenizer_object=backend)
    # special tokens are matched on the raw text, so that every chunk between them gets its own dummy
    # prefix (LLaMA-1's files mark them "normalized", which would match them after the prefix is added)
    backend_tk = tok.backend_tokenizer
    backend_tk.add_special_tokens(
        [
            AddedToken(
                t.content,
                single_word=t.single_word,
                lstrip=t.lstrip,
                rstrip=t.rstrip,
                normalized=False,
                special=True,
            )
            for t in backend_tk.get_added_tokens_decoder().values()
            if t.special and t.normalized
        ]
    )
    return tok


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
    tokenizer_loader=load_llama_tokenizer,
    packing=True,  # transformers' own decoder: packed rows via position_ids
)
