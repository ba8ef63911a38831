"""Text from data stays text: a special-token string inside a title or review never becomes a control token.

Converted tokenizers (``tokenizer.json``) match their special tokens (``</s>``, ``<|im_start|>``, ``<|user|>``,
``[gMASK]``, ...) anywhere in the text they are given, where the original sentencepiece/tiktoken pipelines
split such strings into ordinary pieces. An item titled ``</s>`` would then end the prompt early, and one
holding ``<|user|>`` would open a role turn. The template's own special tokens must stay special.

So the sample's text is marked where it is put into the template (:func:`mark_sample_text`, called by
``render_prompt``): a private-use character precedes every ``<`` and ``[`` of the sample (every special
token of the supported families starts with one of them). :func:`encode_texts` tokenizes prompts as the
tokenizer does when a prompt carries no mark (the usual case: nothing changes); a marked prompt is
tokenized by a twin of the tokenizer whose special tokens are never matched in text
(``encode_special_tokens``), the template's own special tokens being stand-in characters registered with
the same matching flags and mapped back to their ids. Every special token then splits the text where the
tokenizer would split it, so a prompt whose sample holds no special string gets the same ids either way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

#: precedes each ``<`` and ``[`` of sample text in a rendered prompt; removed before tokenizing
MARK = "\U000f8000"
#: stand-ins for the template's special tokens start here (Supplementary Private Use Area-B)
_STAND_IN = 0x100000


def mark_sample_text(text: str) -> str:
    """``text`` (an instruction or input from data) with :data:`MARK` before each ``<`` and ``[``."""
    if MARK in text:
        text = text.replace(MARK, "")
    if "<" not in text and "[" not in text:
        return text
    return text.replace("<", MARK + "<").replace("[", MARK + "[")


def unmark(text: str) -> str:
    """A rendered prompt as the model reads it (the marks removed)."""
    return text.replace(MARK, "")


class _Twin:
    """The tokenizer's backend with its special tokens unmatched in text and stand-ins for them."""

    def __init__(self, tokenizer: Any) -> None:
        from tokenizers import AddedToken, Tokenizer

        backend = tokenizer.backend_tokenizer
        plain = getattr(tokenizer, "_plain_pre_tokenizer", None)  # a custom pre-tokenizer cannot serialise
        exact = backend.pre_tokenizer
        if plain is not None:
            backend.pre_tokenizer = plain
        try:
            self.tokenizer = Tokenizer.from_str(backend.to_str())
        finally:
            backend.pre_tokenizer = exact
        self.tokenizer.pre_tokenizer = exact
        specials = {i: t for i, t in tokenizer.added_tokens_decoder.items() if t.special}
        self.stand_in: dict[str, str] = {}
        self.real_id: dict[int, int] = {}
        for k, (token_id, tok) in enumerate(sorted(specials.items())):
            char = chr(_STAND_IN + k)
            self.stand_in[tok.content] = char
            self.tokenizer.add_tokens(
                [
                    AddedToken(
                        char,
                        single_word=tok.single_word,
                        lstrip=tok.lstrip,
                        rstrip=tok.rstrip,
                        normalized=tok.normalized,
                        special=False,
                    )
                ]
            )
            self.real_id[self.tokenizer.token_to_id(char)] = token_id
        self.tokenizer.encode_special_tokens = True
        names = sorted(self.stand_in, key=len, reverse=True)
        self.pattern = (
            re.compile(f"({re.escape(MARK)})?({'|'.join(map(re.escape, names))})") if names else None
        )

    def encode(self, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
        """Ids of marked prompts: marked special strings as text, the others as their special tokens."""
        prepared = []
        for text in texts:
            if self.pattern is not None:
                text = self.pattern.sub(
                    lambda m: m.group(2) if m.group(1) else self.stand_in[m.group(2)], text
                )
            prepared.append(unmark(text))
        out = self.tokenizer.encode_batch(prepared, add_special_tokens=add_special_tokens)
        return [[self.real_id.get(i, i) for i in enc.ids] for enc in out]


def _twin(tokenizer: Any) -> _Twin:
    twin = getattr(tokenizer, "_llm4rec_plain_text_twin", None)
    if twin is None:
        twin = _Twin(tokenizer)
        tokenizer._llm4rec_plain_text_twin = twin
    return twin


def encode_texts(
    tokenizer: Any, texts: Sequence[str], add_special_tokens: bool = True, *, always_twin: bool = False
) -> list[list[int]]:
    """Token ids of rendered prompts (see the module docstring); ``always_twin`` tokenizes unmarked prompts
    through the twin too (to check that both ways agree)."""
    texts = list(texts)
    marked = [i for i, t in enumerate(texts) if always_twin or MARK in t]
    out: list[list[int]] = [[] for _ in texts]
    if len(marked) < len(texts):
        marked_set = set(marked)
        rest = [i for i in range(len(texts)) if i not in marked_set]
        ids = tokenizer([texts[i] for i in rest], add_special_tokens=add_special_tokens)["input_ids"]
        for i, seq in zip(rest, ids):
            out[i] = list(seq)
    if marked:
        if not hasattr(tokenizer, "backend_tokenizer"):  # a Python tokenizer: marks removed, as it is
            ids = tokenizer([unmark(texts[i]) for i in marked], add_special_tokens=add_special_tokens)
            for i, seq in zip(marked, ids["input_ids"]):
                out[i] = list(seq)
        else:
            for i, seq in zip(
                marked, _twin(tokenizer).encode([texts[i] for i in marked], add_special_tokens)
            ):
                out[i] = seq
    return out
