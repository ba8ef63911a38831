"""Find the token ids the model emits first for each answer word, by tokenizing prompt + answer.

Never hard-code ids: TALLRec's 8241 / 3782 are LLaMA's ``Yes`` / ``No`` *after a newline* (no ``▁``
prefix); the same words tokenized alone give ``▁Yes`` (3869), and any other vocabulary has other ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llm4rec.errors import UserError


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` with the tokenizer's usual special tokens (BOS where the family adds one); the
    sample text a rendered prompt marks stays text (:mod:`llm4rec.data.plain_text`)."""
    from llm4rec.data.plain_text import encode_texts

    return encode_texts(tokenizer, [text])[0]


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def answer_token_ids(tokenizer: Any, prompt: str, answers: Sequence[str]) -> list[int]:
    """Return, for each answer, the first token id it adds after ``prompt``.

    The prompt's own tokens must be an exact prefix of ``prompt + answer``'s tokens (otherwise the
    answer merges with the prompt's last token and a single next-token logit cannot score it), the first
    answer tokens must differ between answers, and the tokenizer must not map the answer to the unknown
    token. Each violation is a :class:`UserError` naming the answer.
    """
    base = encode(tokenizer, prompt)
    ids: list[int] = []
    unk = getattr(tokenizer, "unk_token_id", None)
    for answer in answers:
        full = encode(tokenizer, prompt + answer)
        k = common_prefix_len(base, full)
        if k < len(base):
            raise UserError(
                f"answer {answer!r}: its first token merges with the end of the prompt under this tokenizer; "
                "end the template with a newline (a trailing space merges into the answer's first token; put it in the "
                "template's answer_prefix instead)"
            )
        if k >= len(full):
            raise UserError(f"answer {answer!r}: tokenizes to nothing after the prompt")
        if unk is not None and full[k] == unk:
            raise UserError(
                f"answer {answer!r}: the tokenizer cannot represent it (maps to the unknown token)"
            )
        ids.append(int(full[k]))
    if len(set(ids)) != len(ids):
        pairs = ", ".join(f"{a!r}->{i}" for a, i in zip(answers, ids))
        raise UserError(f"answers do not start with distinct tokens under this tokenizer ({pairs})")
    return ids
