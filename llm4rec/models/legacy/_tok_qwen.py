"""Qwen-1's tiktoken vocabulary (``qwen.tiktoken``) as a byte-level BPE fast tokenizer.

Qwen-7B v1 tokenizes with tiktoken: the text is NFC-normalised, its special tokens (``<|endoftext|>``,
``<|im_start|>``, ``<|im_end|>``, ``<|extra_0|>`` ... ``<|extra_204|>``) are cut out wherever they appear,
the rest is split by Qwen's regular expression, and each piece becomes one token if the piece is in the
vocabulary, else it is byte-pair merged, always merging the adjacent pair whose concatenation has the
lowest rank. Qwen2 kept that vocabulary and pipeline, so the fast tokenizer is built by transformers'
``Qwen2Converter`` (NFC, the same split pattern, byte-level symbols) from the vocabulary and a merge list
recovered from the ranks (each token of rank r is split where byte-pair merging with the ranks below r
leaves it in two). Merging with these merges rebuilds every vocabulary token whole, and on the real file
they are Qwen2's published ``merges.txt`` (151,387 merges) and the vocabulary is its ``vocab.json``, so
transformers may rebuild the tokenizer from them (it does so for ``model_type: qwen2`` directories, as a
``Qwen2Tokenizer``) without changing any id.

Why not transformers' tiktoken converter (``TikTokenConverter``, what ``TokenizersBackend`` uses for a
tiktoken file): given Qwen's pattern and special tokens it lists every split of a token whose two parts are
tokens, 294,166 merges on the real ``qwen.tiktoken`` instead of Qwen2's 151,387, and it has no NFC normaliser.
Measured by ``scripts/compare_tokenizer_converters.py`` against tiktoken (Qwen's pattern and specials, NFC) on
13,463 texts (the tests' corpus, the prompt templates, MovieLens titles and tags) and 96 runs of repeated
characters: 2 texts differ (decomposed accents, e.g. ``"e\\u0301"``), 0 once NFC is added; this module: 0.
``tests/models/legacy/test_qwen.py`` pins both facts, so it fails when transformers' converter catches up.

Special token ids follow the mergeable ranks: 151643 on for Qwen-7B's file, which is where Qwen-1's code
puts them (it fixes that start; a file with another number of ranks is not a Qwen-1 vocabulary).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from llm4rec.errors import UserError
from llm4rec.models.legacy.checkpoint_io import save_fast_tokenizer

#: Qwen-1's pre-tokenization pattern (tokenization_qwen.PAT_STR)
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
#: special tokens in id order; the first takes the id right after the last mergeable rank
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END) + tuple(f"<|extra_{i}|>" for i in range(205))


def load_ranks(path: str | Path) -> dict[bytes, int]:
    """Read a tiktoken BPE file (``base64(token) rank`` per line) into {token bytes: rank}."""
    path = Path(path)
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            tok, rank = line.split()
            ranks[base64.b64decode(tok, validate=True)] = int(rank)
        except ValueError:
            raise UserError(f"{path}:{lineno}: not a tiktoken line (expected 'base64-token rank')") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise UserError(f"{path}: ranks are not 0..{len(ranks) - 1} without gaps; not a Qwen-1 qwen.tiktoken")
    return ranks


def write_ranks(ranks: dict[bytes, int], path: str | Path) -> None:
    """Write {token bytes: rank} in tiktoken's file format (used to build tiny test vocabularies)."""
    lines = [f"{base64.b64encode(t).decode()} {r}" for t, r in sorted(ranks.items(), key=lambda kv: kv[1])]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def recover_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list, in rank order, that rebuilds every multi-byte token from its bytes.

    A token of rank r is split the way byte-pair merging with only the ranks below r leaves it: exactly
    two parts for a consistent vocabulary (anything else is an error).
    """
    merges: list[tuple[bytes, bytes]] = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [token[i : i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best_rank, best_i = rank, -1
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < best_rank:
                    best_rank, best_i = r, i
            if best_i < 0:
                break
            parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        if len(parts) != 2:
            raise UserError(f"qwen.tiktoken: the token of rank {rank} cannot be built by merging lower ranks")
        merges.append((parts[0], parts[1]))
    return merges


def build_qwen_tokenizer(ranks: dict[bytes, int]) -> Any:
    """A ``tokenizers.Tokenizer`` giving Qwen-1's ids for every text (special tokens always recognised).

    transformers' ``Qwen2Converter`` builds the pipeline (NFC, Qwen's split pattern, byte-level symbols)
    from the vocabulary and the merges recovered here.
    """
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import Qwen2Converter, bytes_to_unicode

    if len([t for t in ranks if len(t) == 1]) != 256:
        raise UserError("qwen.tiktoken: the 256 single-byte tokens must all be present")
    b2u = bytes_to_unicode()

    def sym(token: bytes) -> str:
        return "".join(b2u[b] for b in token)

    vocab = {sym(t): r for t, r in ranks.items()}
    merges = [(sym(a), sym(b)) for a, b in recover_merges(ranks)]
    tok = Qwen2Converter(None).converted(vocab, merges)
    first = len(ranks)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != first + i:
            raise AssertionError(f"special token {t} got id {tok.token_to_id(t)}, expected {first + i}")
    return tok


def save_qwen_tokenizer(tiktoken_file: str | Path, out_dir: str | Path, model_max_length: int) -> int:
    """Convert ``qwen.tiktoken`` into ``tokenizer.json`` + ``tokenizer_config.json`` in ``out_dir``.

    No BOS is added (Qwen-1 adds none); EOS is ``<|endoftext|>``; no pad token is declared (Qwen-1 has
    none; the registry picks one at load time). Returns the number of ids.
    """
    backend = build_qwen_tokenizer(load_ranks(tiktoken_file))
    return save_fast_tokenizer(
        backend,
        Path(out_dir),
        model_max_length,
        bos_token=None,
        eos_token=ENDOFTEXT,
        pad_token=None,
        unk_token=None,
        extra_special_tokens=[IM_START, IM_END],
    )
