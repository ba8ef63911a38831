"""Count the texts on which transformers' tokenizer converters and llm4rec's give other ids than the original.

    python scripts/compare_tokenizer_converters.py                 # every family found in ../shared/models
    python scripts/compare_tokenizer_converters.py qwen baichuan   # some of them

The references are the original tokenizers' own algorithms, as the tests state them: sentencepiece on each
chunk between special tokens (LLaMA-1 / Llama-2, as TALLRec's slow LlamaTokenizer), tiktoken with Qwen-1's
pattern and special tokens after NFC, sentencepiece on each chunk between special tokens (Baichuan),
sentencepiece on the whole text (ChatGLM2/3), sentencepiece after icetk's pre-processing (ChatGLM-6B). The
texts are the tests' corpora, the prompt templates and MovieLens titles, tags and a 300-title block (from
``../shared/data/ml-latest-small`` when present), then 96 runs of repeated characters. The counts are quoted
in the docstrings of ``llm4rec/models/legacy/_tok_*.py`` and ``llm4rec/models/families/llama.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.models.legacy._reference_qwen_baichuan import RUNS  # noqa: E402

FAMILIES = ("llama", "qwen", "baichuan", "chatglm2", "chatglm")

Encoder = Callable[[list[str]], list[list[int]]]


def show(texts: list[str], want: list[list[int]], contenders: dict[str, Encoder]) -> None:
    """One line per contender: how many of ``texts`` get other ids than ``want``, and the first of them."""
    for name, encode in contenders.items():
        bad = [t for t, w, g in zip(texts, want, encode(texts)) if w != g]
        example = f"  e.g. {bad[0][:50]!r}" if bad else ""
        print(f"  {name:56s} {len(bad):5d} of {len(texts)} differ{example}", flush=True)


def backend_of(model_file: Path) -> Encoder:
    """What transformers builds from a directory holding only ``model_file`` as ``tokenizer.model``."""
    from transformers import TokenizersBackend

    tmp = Path(tempfile.mkdtemp())
    (tmp / "tokenizer.model").symlink_to(model_file)
    tok = TokenizersBackend.from_pretrained(tmp)
    return lambda texts: tok(texts, add_special_tokens=False)["input_ids"]


def plain(tk) -> Encoder:
    """A ``tokenizers.Tokenizer`` as an encoder (no special tokens added)."""
    return lambda texts: [e.ids for e in tk.encode_batch(texts, add_special_tokens=False)]


def llama(models: Path, movielens: list[str]) -> None:
    from transformers import AutoTokenizer

    from llm4rec.models.loading import read_tokenizer
    from llm4rec.models.registry import get_family
    from tests.models import test_llama_tokenizer
    from tests.models.legacy._reference_qwen_baichuan import chunked_sentencepiece_ids

    for name in ("llama-7b", "llama-2-7b"):
        src = models / name
        if not (src / "tokenizer.model").is_file():
            continue
        auto = AutoTokenizer.from_pretrained(src)
        ours = read_tokenizer(src, get_family("llama"))
        contenders = {
            "transformers AutoTokenizer (LlamaTokenizer)": lambda t, tok=auto: tok(
                t, add_special_tokens=False
            )["input_ids"],
            "llm4rec (transformers' build_tokenizer_from_spm_proto)": lambda t, tok=ours: tok(
                t, add_special_tokens=False
            )["input_ids"],
        }
        print(f"{name}: sentencepiece on each chunk between <unk> <s> </s>")
        for texts in (test_llama_tokenizer._corpus() + movielens, RUNS):
            show(texts, chunked_sentencepiece_ids(src / "tokenizer.model", texts, add_bos=False), contenders)


def qwen(models: Path, movielens: list[str]) -> None:
    from tokenizers import normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from llm4rec.models.legacy import _tok_qwen
    from tests.models.legacy import test_qwen

    src = models / "qwen-7b" / "qwen.tiktoken"
    ranks = _tok_qwen.load_ranks(src)
    theirs = TikTokenConverter(
        vocab_file=str(src),
        pattern=_tok_qwen.QWEN_PATTERN,
        extra_special_tokens=list(_tok_qwen.SPECIAL_TOKENS),
    ).converted()
    theirs_nfc = TikTokenConverter(
        vocab_file=str(src),
        pattern=_tok_qwen.QWEN_PATTERN,
        extra_special_tokens=list(_tok_qwen.SPECIAL_TOKENS),
    ).converted()
    theirs_nfc.normalizer = normalizers.NFC()
    ours = _tok_qwen.build_qwen_tokenizer(ranks)
    contenders = {
        "transformers TikTokenConverter (Qwen's pattern, specials)": plain(theirs),
        "  the same + NFC normaliser": plain(theirs_nfc),
        "llm4rec (Qwen2Converter + merges recovered from ranks)": plain(ours),
    }
    print("qwen-7b: tiktoken, Qwen-1's pattern and specials, after NFC")
    for texts in (test_qwen._corpus() + movielens, RUNS):
        show(texts, test_qwen._tiktoken_ids(ranks, texts), contenders)
    import json

    n_theirs = len(json.loads(theirs.to_str())["model"]["merges"])
    n_ours = len(_tok_qwen.recover_merges(ranks))
    print(f"  merges: transformers {n_theirs}, llm4rec {n_ours}")
    published = models / "qwen2-7b" / "merges.txt"
    if published.is_file():
        lines = published.read_text(encoding="utf-8").splitlines()
        n_published = len([ln for ln in lines if ln and not ln.startswith("#version")])
        print(f"  Qwen2's published merges.txt: {n_published}")


def baichuan(models: Path, movielens: list[str]) -> None:
    from transformers.convert_slow_tokenizer import SpmConverter

    from llm4rec.models.legacy import _tok_baichuan
    from tests.models.legacy import test_baichuan

    for name in ("baichuan-7b", "baichuan2-7b"):
        src = models / name / "tokenizer.model"
        if not src.is_file():
            continue
        proto = _tok_baichuan.load_proto(src)
        contenders = {
            "transformers TokenizersBackend(tokenizer.model)": backend_of(src),
            "llm4rec": plain(_tok_baichuan.build_baichuan_tokenizer(proto)),
        }
        # normal pieces that byte-pair merging does not rebuild whole, given as text (those holding a
        # user-defined piece never reach the model whole: the pre-tokenizer cuts that piece out)
        user = [p.piece for p in proto.pieces if p.type == 4]
        strict = SpmConverter.build_tokenizer_from_spm_proto(
            proto, {p.piece: i for i, p in enumerate(proto.pieces)}
        )
        strict.model.ignore_merges = False
        unmerged = [
            p.piece.replace("▁", " ")
            for p in proto.pieces
            if p.type == 1
            and [t.value for t in strict.model.tokenize(p.piece)] != [p.piece]
            and not any(u in p.piece for u in user)
        ]
        print(f"{name}: sentencepiece on each chunk between <unk> <s> </s>")
        for texts in (test_baichuan._corpus() + movielens, RUNS, unmerged):
            if texts:
                show(texts, test_baichuan._original_ids(src, texts, add_bos=False), contenders)


def chatglm2(models: Path, movielens: list[str]) -> None:
    import sentencepiece as spm

    from llm4rec.models.families import chatglm2
    from llm4rec.models.registry import TEMPLATES
    from tests.models.legacy import test_chatglm2

    instruction = "根据用户的观影历史，判断用户是否会喜欢目标电影。请回答“是”或“否”。"
    inputs = '用户喜欢的电影："Toy Story (1995)", "Heat (1995)"\n目标电影："Casino (1995)"'
    names = ("alpaca_zh", "alpaca", "chatglm2_zh")
    prompts = [
        TEMPLATES[n].render(instruction, inputs) + answer for n in names for answer in ("", "是", "否")
    ]
    for name in ("chatglm2-6b", "chatglm3-6b"):
        src = models / name / "tokenizer.model"
        if not src.is_file():
            continue
        sp = spm.SentencePieceProcessor(model_file=str(src))
        contenders = {
            "transformers TokenizersBackend(tokenizer.model)": backend_of(src),
            "llm4rec (transformers' build_tokenizer_from_spm_proto)": plain(
                chatglm2.sp_bpe_tokenizer(src, (), ())
            ),
        }
        print(f"{name}: sentencepiece on the whole text")
        for texts in (test_chatglm2.CORPUS + prompts + movielens, RUNS):
            show(texts, [sp.encode(t) for t in texts], contenders)


def chatglm(models: Path, movielens: list[str]) -> None:
    import sentencepiece as spm
    from transformers import AutoTokenizer

    from llm4rec.models.families import chatglm
    from tests.models.legacy import test_chatglm

    src = models / "chatglm-6b" / "ice_text.model"
    if not src.is_file():
        return
    sp = spm.SentencePieceProcessor(model_file=str(src))
    out = Path(tempfile.mkdtemp())
    chatglm.write_chatglm_tokenizer(src, out, 0, 2048)
    ours = AutoTokenizer.from_pretrained(out)
    theirs = backend_of(src)
    contenders = {
        "transformers TokenizersBackend(ice_text.model), raw text": theirs,
        "  the same on pre-processed text": lambda texts: theirs([chatglm.preprocess(t) for t in texts]),
        "llm4rec tokenizer.json alone (float64 lattice)": plain(chatglm.build_chatglm_tokenizer(src)),
        "llm4rec ChatGLM6BTokenizer": lambda texts: [ours(t)["input_ids"] for t in texts],
    }
    # the release's special tokens are cut out before sentencepiece; these texts have none
    corpus = [t for t in test_chatglm.CORPUS if "<" not in t] + movielens
    print("chatglm-6b: sentencepiece after icetk's pre-processing")
    for texts in (corpus, RUNS):
        show(texts, [sp.encode(chatglm.preprocess(t)) for t in texts], contenders)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("families", nargs="*", help=f"some of {', '.join(FAMILIES)} (default: all)")
    ap.add_argument(
        "--shared", type=Path, default=ROOT.parent / "shared", help="folder with models/ and data/"
    )
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    from tests.models.legacy._reference_qwen_baichuan import movielens_texts

    movielens = movielens_texts(args.shared)
    for family in args.families or FAMILIES:
        if family not in FAMILIES:
            raise SystemExit(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
        globals()[family](args.shared / "models", movielens)


if __name__ == "__main__":
    main()
