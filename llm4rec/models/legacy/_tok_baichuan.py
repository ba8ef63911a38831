"""Baichuan's sentencepiece BPE model (``tokenizer.model``) as a fast tokenizer with the same ids.

The original ``BaichuanTokenizer`` cuts its special tokens (``<unk> <s> </s>``) out of the text and hands
every remaining chunk to ``SentencePieceProcessor.encode``. Inside sentencepiece:

* user-defined pieces (Baichuan has hundreds: digits, ``\\n``, ``\\t``, full-width punctuation, HTML tags,
  ``<reserved_N>``) are matched longest-first on the raw text, bypass normalisation and are never merged
  with their neighbours;
* the rest is normalised (Baichuan-7B: ``nmt_nfkc``; Baichuan2: identity), spaces become ``▁`` and, when
  ``add_dummy_prefix`` is set (Baichuan-7B), one ``▁`` is put in front of the chunk;
* byte-pair merging then repeatedly joins the adjacent pair whose concatenation is the piece with the best
  score (ties: leftmost), and characters outside the vocabulary fall back to ``<0xNN>`` byte pieces.

The ``tokenizers`` pipeline built here reproduces that. Special tokens are added tokens cut from the raw text,
so each chunk gets its own dummy prefix as in the original. The normaliser shields the user-defined pieces
that normalisation would change (``\\n``, ``，``, ``０``...) behind private-use placeholders, applies the
precompiled ``nmt_nfkc`` map, restores them, escapes spaces and prepends the dummy prefix. The pre-tokenizer
isolates user-defined pieces (longest first), so merging never crosses them. The BPE model and the decoder are
transformers' own (``SpmConverter.build_tokenizer_from_spm_proto``): byte fallback and every merge of two
normal pieces, ranked by the score of the piece it builds. Multi-character user-defined pieces are found whole
either by ``ignore_merges`` (when merging rebuilds every vocabulary piece whole, so that option changes
nothing else: Baichuan-7B) or as added tokens (when it does not: Baichuan2, which has no normalisation and no
dummy prefix, so cutting them from the raw text is exact).

Known difference: tokenizers' ``Precompiled`` normaliser drops combining marks that follow a character
the ``nmt_nfkc`` map rewrites (e.g. "㍋" + U+032B) and does not apply the map's multi-character entries to
half-width katakana with a separate voiced mark; sentencepiece does. Only Baichuan-7B normalises; ordinary
text (any language in NFC, emoji, whitespace) is unaffected.

Why not transformers' converter whole (what ``TokenizersBackend`` builds from a bare ``tokenizer.model``): its
normaliser applies ``nmt_nfkc`` to user-defined pieces too, and it sets ``ignore_merges`` whenever a model has
user-defined pieces. Measured by ``scripts/compare_tokenizer_converters.py`` against the original tokenization
on 13,460 texts (the tests' corpus, the prompt templates, MovieLens titles and tags) and 96 runs of repeated
characters, it differs on 15 texts and 8 runs for Baichuan-7B (``"\\n"`` becomes ``"▁"``, ``"，"`` becomes
``","``) and, for Baichuan2, on none of those but on all 6 pieces that merging does not rebuild whole, given
as text (``" livelihoods"``: 3 ids from sentencepiece, 1 from transformers). This module: 0 on all of them.
``tests/models/legacy/test_baichuan.py`` pins both, so it fails when transformers' converter catches up.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from llm4rec.errors import UserError
from llm4rec.io import read_json_object
from llm4rec.models.legacy.checkpoint_io import load_sp_proto, save_fast_tokenizer

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
#: first code point of the placeholders that shield user-defined pieces from normalisation
#: (supplementary private use area B: never produced by NFKC and essentially absent from real text)
_SHIELD_BASE = 0x10FF00


def load_proto(path: str | Path) -> Any:
    """Parse a sentencepiece BPE ``tokenizer.model`` (a ModelProto) or raise a UserError naming the file."""
    proto = load_sp_proto(Path(path))
    if proto.trainer_spec.model_type != 2:  # 2 = BPE
        raise UserError(f"{path}: sentencepiece model type {proto.trainer_spec.model_type} is not BPE")
    return proto


def build_baichuan_tokenizer(proto: Any) -> Any:
    """A ``tokenizers.Tokenizer`` giving the sentencepiece model's ids (special tokens cut out first)."""
    from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers
    from transformers.convert_slow_tokenizer import SpmConverter

    pieces = list(proto.pieces)
    norm = proto.normalizer_spec
    if norm.remove_extra_whitespaces:
        raise UserError(
            "tokenizer.model: remove_extra_whitespaces=true is not supported (Baichuan has false)"
        )
    if proto.trainer_spec.treat_whitespace_as_suffix:
        raise UserError("tokenizer.model: treat_whitespace_as_suffix is not supported")
    if any(p.type == UNUSED for p in pieces):
        raise UserError("tokenizer.model: UNUSED pieces are not supported")
    vocab = {p.piece: i for i, p in enumerate(pieces)}
    if len(vocab) != len(pieces):
        raise UserError("tokenizer.model: duplicate pieces")
    user = [p.piece for p in pieces if p.type == USER_DEFINED]

    steps: list[Any] = []
    if norm.precompiled_charsmap:
        charsmap = normalizers.Precompiled(norm.precompiled_charsmap)
        shielded = [u for u in user if charsmap.normalize_str(u) != u]
        shields = [chr(_SHIELD_BASE + i) for i in range(len(shielded))]
        steps += [normalizers.Replace(u, s) for u, s in zip(shielded, shields)]
        # tokenizers' Precompiled misses the map's entries for combining sequences (it turns "A\u0302\u0300"
        # into "Â" where sentencepiece gives "Ầ"); composing first lands on the map's composed entries.
        steps += [normalizers.NFC(), charsmap]
        steps += [normalizers.Replace(s, u) for u, s in zip(shielded, shields)]
    elif norm.name not in ("identity", ""):
        raise UserError(f"tokenizer.model: normalizer {norm.name!r} without a precompiled map")
    if norm.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    if norm.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))

    # transformers' model and decoder: every merge of two normal pieces ranked by the score of the piece it
    # builds, byte fallback, unknown pieces fused
    tok = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
    tok.model.ignore_merges = False
    whole = _rebuilt_whole(tok.model, pieces, user)
    if not whole and (norm.add_dummy_prefix or norm.precompiled_charsmap):
        raise UserError(
            "tokenizer.model: some pieces are not rebuilt whole by merging and the model normalises or adds "
            "a dummy prefix; this combination cannot be converted exactly"
        )
    tok.model.ignore_merges = whole
    tok.normalizer = normalizers.Sequence(steps)
    # User-defined pieces never merge with their neighbours. Single characters are isolated by the
    # pre-tokenizer (and are then their own token); longer ones are either isolated too and found whole
    # by ignore_merges, or, where ignore_merges is unsafe, cut out of the raw text as added tokens
    # (exact only without normalisation and dummy prefix, checked above).
    isolated = user if whole else [u for u in user if len(u) == 1]
    # longest alternative first: a regex alternation takes the first that matches, sentencepiece's
    # prefix matcher the longest
    alternation = "|".join(re.escape(u) for u in sorted(isolated, key=len, reverse=True))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(alternation), behavior="isolated") if isolated else None
    if not whole:
        tok.add_tokens([AddedToken(u, special=False, normalized=False) for u in user if len(u) > 1])
    specials = [p.piece for p in pieces if p.type in (UNKNOWN, CONTROL)]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tok


def _rebuilt_whole(bpe: Any, pieces: list[Any], user: list[str]) -> bool:
    """Whether byte-pair merging with the model ``bpe`` (``ignore_merges`` off) rebuilds every reachable
    normal piece whole.

    Only then may the BPE model use ``ignore_merges`` (a word that is itself a piece is returned whole),
    which lets multi-character user-defined pieces be found by the model. Pieces containing a
    user-defined piece are unreachable (the pre-tokenizer cuts them) and do not count.
    """
    has_user = re.compile("|".join(re.escape(u) for u in user)) if user else None
    for p in pieces:
        if p.type != NORMAL or (has_user is not None and has_user.search(p.piece)):
            continue
        if [t.value for t in bpe.tokenize(p.piece)] != [p.piece]:
            return False
    return True


def tokenizer_settings(src: Path) -> dict[str, Any]:
    """add_bos/add_eos and special tokens as the original ``BaichuanTokenizer`` would be configured.

    The class defaults (BOS added, no EOS) apply unless the checkpoint's ``tokenizer_config.json`` says
    otherwise (Baichuan2-7B's says ``add_bos_token: false``).
    """
    cfg_path = src / "tokenizer_config.json"
    cfg: dict[str, Any] = {}
    if cfg_path.is_file():
        cfg = read_json_object(cfg_path)

    def content(key: str, default: str | None) -> str | None:
        value = cfg.get(key, default)
        return value.get("content") if isinstance(value, dict) else value

    return {
        "add_bos_token": bool(cfg.get("add_bos_token", True)),
        "add_eos_token": bool(cfg.get("add_eos_token", False)),
        "bos_token": content("bos_token", "<s>"),
        "eos_token": content("eos_token", "</s>"),
        "unk_token": content("unk_token", "<unk>"),
        "pad_token": content("pad_token", None),
        "model_max_length": int(cfg.get("model_max_length") or 4096),
    }


def save_baichuan_tokenizer(src: Path, out_dir: Path, model_max_length: int) -> int:
    """Convert ``src/tokenizer.model`` (+ its tokenizer_config.json) into a fast tokenizer in ``out_dir``.

    Writes ``tokenizer.json`` and ``tokenizer_config.json`` (loaded by transformers' TokenizersBackend);
    returns the number of ids.
    """
    from tokenizers import processors

    model_file = src / "tokenizer.model"
    if not model_file.is_file():
        raise UserError(f"{src}: no tokenizer.model (Baichuan's sentencepiece file) to convert")
    backend = build_baichuan_tokenizer(load_proto(model_file))
    s = tokenizer_settings(src)
    bos, eos = s["bos_token"], s["eos_token"]
    # the original's build_inputs_with_special_tokens: [bos] A [eos], and [bos] A [eos] [bos] B [eos]
    head = [bos] if s["add_bos_token"] else []
    tail = [eos] if s["add_eos_token"] else []
    if head or tail:
        ids = {t: backend.token_to_id(t) for t in head + tail}
        if None in ids.values():
            raise UserError(f"{model_file}: special token {head + tail} is not in the vocabulary")
        backend.post_processor = processors.TemplateProcessing(
            single=" ".join([*head, "$A", *tail]),
            pair=" ".join([*head, "$A", *tail, *[t + ":1" for t in head], "$B:1", *[t + ":1" for t in tail]]),
            special_tokens=list(ids.items()),
        )
    limit = min(s["model_max_length"], model_max_length)
    specials = {"bos_token": bos, "eos_token": eos, "unk_token": s["unk_token"], "pad_token": s["pad_token"]}
    return save_fast_tokenizer(backend, out_dir, limit, **specials)
