"""ChatGLM-6B's icetk tokenizer with sentencepiece's exact segmentation.

The fast unigram tokenizer written by :func:`llm4rec.models.families.chatglm.build_chatglm_tokenizer` has the
release's vocabulary, scores and pre-processing, but ``tokenizers`` runs the unigram Viterbi in float64
while sentencepiece keeps each path score in float32 (the running sum is rounded after every piece). Two
segmentations made of the same pieces in a different order (``'a' * 50`` as ``a16 a5 a`` or ``a a5 a16``)
have equal float64 scores, so ``tokenizers`` picks one by its own tie rule; sentencepiece picks the one whose
float32 rounding comes out higher, which depends on the score accumulated before the run. No choice of
scores in ``tokenizer.json`` can reproduce that, so :class:`ChatGLM6BTokenizer` lets sentencepiece itself
place the piece boundaries: its pre-tokenizer runs a sentencepiece model rebuilt from the tokenizer's own
vocabulary (identity normaliser: the text is already normalised) and cuts the text where sentencepiece
does. The unigram model then maps each cut, one whole piece, to its id.

``tokenizer.json`` keeps the serialisable pre-tokenizer (user-defined symbols isolated), so the directory
still loads without llm4rec, with the small difference above on runs of one character.

Why not transformers' converter (what ``TokenizersBackend`` builds from ``ice_text.model`` saved as a bare
``tokenizer.model``): it has no step for icetk's pre-processing (newlines, tabs and runs of spaces become
``<n>``, ``<|tab|>``, ``<|blank_N|>``), and its unigram lattice is the float64 one. Measured by
``scripts/compare_tokenizer_converters.py`` against the release pipeline on 13,434 texts (the tests' corpus,
MovieLens titles and tags) it differs on 7 texts given raw (all with newlines, tabs or runs of spaces:
``"a\\nb"``) and on none given pre-processed; on 96 runs of repeated characters, pre-processed, on 8
(``"a" * 18``), as the float64 lattice of ``tokenizer.json`` alone does. :class:`ChatGLM6BTokenizer`: 0 on
all of them. ``tests/models/legacy/test_chatglm.py`` pins both.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from transformers import AutoTokenizer, TokenizersBackend

from llm4rec.models.legacy.modeling_chatglm import ChatGLM6BConfig

USER_SYMBOLS_RE = r"<n>|<\|tab\|>|<\|blank_(?:[2-9]|[1-7][0-9]|80)\|>"
#: unigram score that keeps control and byte pieces out of the lattice (sentencepiece never matches them in
#: text). It also lowers the unknown-character penalty (min score - 10), which changes nothing as long as
#: every character of a piece is a piece of its own, as in ice_text.model: an unknown character then has
#: no competing multi-character piece.
UNREACHABLE = -1.0e4


def segmenter_proto(vocab: list[tuple[str, float]], unk_id: int) -> bytes:
    """A sentencepiece unigram ``ModelProto`` over the unigram ``vocab`` of ``tokenizer.json``.

    Pieces scored :data:`UNREACHABLE` (control, byte and image pieces) become control pieces, which
    sentencepiece never matches in text; the icetk symbols stay user-defined, the rest normal. The
    normaliser is the identity: the fast tokenizer's normaliser has already done the release's work.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    proto.trainer_spec.unk_id = unk_id
    spec = proto.normalizer_spec
    spec.name = "identity"
    spec.add_dummy_prefix = spec.remove_extra_whitespaces = spec.escape_whitespaces = False
    user = re.compile(USER_SYMBOLS_RE)
    for i, (piece, score) in enumerate(vocab):
        p = proto.pieces.add(piece=piece, score=score)
        if i == unk_id:
            p.type = pb.ModelProto.SentencePiece.UNKNOWN
        elif score <= UNREACHABLE:
            p.type = pb.ModelProto.SentencePiece.CONTROL
        elif user.fullmatch(piece):
            p.type = pb.ModelProto.SentencePiece.USER_DEFINED
    return proto.SerializeToString()


class SentencePieceCuts:
    """A ``tokenizers`` custom pre-tokenizer cutting normalised text at sentencepiece's piece boundaries."""

    def __init__(self, proto: bytes) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_proto=proto)

    def _cut(self, _: int, normalized: Any) -> list[Any]:
        cuts, start = [], 0
        for piece in self.sp.encode(str(normalized), return_type="proto").pieces:
            if piece.surface:  # the identity normaliser: surfaces are the text itself
                cuts.append(normalized[start : start + len(piece.surface)])
                start += len(piece.surface)
        return cuts

    def pre_tokenize(self, pretok: Any) -> None:
        """Split every part between special tokens into sentencepiece's pieces."""
        pretok.split(self._cut)


class ChatGLM6BTokenizer(TokenizersBackend):
    """The converted ChatGLM-6B tokenizer, with sentencepiece's float32 tie-breaking on repeated text."""

    @classmethod
    def convert_to_native_format(cls, trust_remote_code: bool = False, **kwargs: Any) -> dict[str, Any]:
        """Load ``tokenizer.json`` whole, as for ``TokenizersBackend`` itself.

        The base class rebuilds a subclass that defines ``__init__`` from the bare vocabulary (losing the
        normaliser) unless told the class is trusted code; this one only adds a pre-tokenizer.
        """
        return super().convert_to_native_format(trust_remote_code=True, **kwargs)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plain_pre_tokenizer = self._tokenizer.pre_tokenizer
        self._install_cuts()

    def _install_cuts(self) -> None:
        from tokenizers.pre_tokenizers import PreTokenizer

        model = json.loads(self._tokenizer.to_str())["model"]
        cuts = SentencePieceCuts(segmenter_proto([tuple(v) for v in model["vocab"]], model["unk_id"]))
        self._tokenizer.pre_tokenizer = PreTokenizer.custom(cuts)

    # pickling and deepcopy serialise the backend, which a custom pre-tokenizer forbids: the state carries
    # the plain one and the cuts are rebuilt on load
    def __getstate__(self) -> dict[str, Any]:
        exact, self._tokenizer.pre_tokenizer = self._tokenizer.pre_tokenizer, self._plain_pre_tokenizer
        try:
            state = dict(self.__dict__, _tokenizer=copy.deepcopy(self._tokenizer))
        finally:
            self._tokenizer.pre_tokenizer = exact
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._install_cuts()

    def _save_pretrained(self, *args: Any, **kwargs: Any) -> tuple[str, ...]:
        # a custom pre-tokenizer cannot be serialised: tokenizer.json gets the plain one
        exact, self._tokenizer.pre_tokenizer = self._tokenizer.pre_tokenizer, self._plain_pre_tokenizer
        try:
            return super()._save_pretrained(*args, **kwargs)
        finally:
            self._tokenizer.pre_tokenizer = exact


AutoTokenizer.register(ChatGLM6BConfig, tokenizer_class=ChatGLM6BTokenizer, exist_ok=True)
