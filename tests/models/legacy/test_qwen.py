"""Qwen-7B (v1): conversion onto Qwen2, equality with a reference forward pass, tokenizer ids, 4-bit LoRA."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
import torch

from llm4rec.errors import UserError
from llm4rec.models.families import qwen
from llm4rec.models.legacy import _tok_qwen
from llm4rec.models.registry import TEMPLATES, detect_family, get_family
from tests.conftest import shared_path
from tests.fixtures.legacy_originals import make_tiny_qwen, save_state_dict
from tests.models._generate import assert_converted_generate_matches
from tests.models.legacy._qlora import assert_alpaca_zh_training_lowers_the_loss

try:
    from . import _reference_qwen_baichuan as ref
except ImportError:  # tests/models/legacy is not a package
    import _reference_qwen_baichuan as ref

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "models"
MOVIELENS = ref.movielens_texts(SHARED.parent)
TOL = 1e-4


#: tokenization_qwen.py's PAT_STR and special tokens, restated here so that the reference does not
#: borrow them from the code under test
QWEN1_PAT_STR = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN1_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [f"<|extra_{i}|>" for i in range(205)]


def _tiktoken_ids(ranks: dict[bytes, int], texts: list[str]) -> list[list[int]]:
    """Token ids as Qwen-1's QWenTokenizer computes them: NFC, then tiktoken with every special allowed.

    Its special ids start at 151643 (= the number of ranks of the real file); a tiny vocabulary puts
    them right after its ranks instead.
    """
    import tiktoken

    enc = tiktoken.Encoding(
        "qwen-test",
        pat_str=QWEN1_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens={t: len(ranks) + i for i, t in enumerate(QWEN1_SPECIALS)},
    )
    return [
        enc.encode(unicodedata.normalize("NFC", t), allowed_special="all", disallowed_special=())
        for t in texts
    ]


def _corpus() -> list[str]:
    texts = list(ref.MIXED_CORPUS)
    for name in ("alpaca", "alpaca_zh", "chatml", "chatml_zh"):
        t = TEMPLATES[name]
        texts.append(
            t.render("判断用户是否喜欢目标电影。Answer Yes. or No.", 'User Preference: "Heat (1995)"\n')
            + "是"
        )
        texts.append(t.render("Only an instruction") + "Yes." + t.answer_suffix)
    texts += [
        "<|endoftext|>after eos",
        "x<|im_start|>y<|im_end|>z",
        "<|extra_0|><|extra_204|>",
        "<|notspecial|>",
    ]
    texts += ["e\u0301 composed by NFC", "Å vs A\u030a"]
    return texts


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, tuple[Path, Path, dict]]:
    """Tiny Qwen-1 originals (safetensors and pickled .bin) and their conversions."""
    root = tmp_path_factory.mktemp("qwen")
    out = {}
    for fmt, seed in (("safetensors", 1), ("bin", 2)):
        sd = make_tiny_qwen(root / f"orig-{fmt}", seed=seed, fmt=fmt)
        out[fmt] = (root / f"orig-{fmt}", qwen.convert(root / f"orig-{fmt}", root / f"hf-{fmt}", "qwen"), sd)
    return out


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_converted_logits_equal_reference_padded_and_cached(tiny, fmt):
    src, out, sd = tiny[fmt]
    cfg, model, seqs = ref.load_converted(src, out, "Qwen2ForCausalLM")
    diffs = ref.compare_with_reference(model, ref.qwen1_reference(sd, cfg), seqs)
    assert max(diffs.values()) < TOL, diffs
    # the comparison is sensitive: Qwen-1's gating (w2 through SiLU) swapped with w1 is far off
    swapped = dict(sd)
    for i in range(cfg["num_hidden_layers"]):
        p = f"transformer.h.{i}.mlp."
        swapped[p + "w1.weight"], swapped[p + "w2.weight"] = sd[p + "w2.weight"], sd[p + "w1.weight"]
    bad = ref.compare_with_reference(model, ref.qwen1_reference(swapped, cfg), seqs[:1])
    assert bad["single"] > 1e-2


def test_converted_directory_is_an_ordinary_qwen2_checkpoint(tiny):
    src, out, _ = tiny["safetensors"]
    orig = json.loads((src / "config.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "qwen2" and cfg["llm4rec_family"] == "qwen"
    assert cfg["intermediate_size"] == orig["intermediate_size"] // 2
    assert cfg["max_position_embeddings"] == orig["seq_length"]
    assert cfg["num_key_value_heads"] == orig["num_attention_heads"]
    assert detect_family(out) == "qwen"
    assert get_family("qwen").converter is qwen.convert
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    # transformers loads model_type qwen2 with its Qwen2Tokenizer, which pads with <|endoftext|> (the
    # family's pad rule too); Qwen-1 itself has no BOS
    assert tok.bos_token is None and tok.pad_token in (None, "<|endoftext|>")
    assert tok.eos_token == "<|endoftext|>" and cfg["eos_token_id"] == tok.eos_token_id
    assert tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id + 2


def test_tiny_tokenizer_ids_equal_tiktoken(tiny):
    from transformers import AutoTokenizer

    src, out, _ = tiny["safetensors"]
    tok = AutoTokenizer.from_pretrained(out)
    texts = _corpus()
    expected = _tiktoken_ids(_tok_qwen.load_ranks(src / "qwen.tiktoken"), texts)
    got = [tok(t, add_special_tokens=True)["input_ids"] for t in texts]
    assert got == expected
    assert tok.decode(got[5]) == unicodedata.normalize("NFC", texts[5])


@pytest.fixture(scope="module")
def real_tokenizer(tmp_path_factory):
    """The real qwen.tiktoken converted once, loaded as the converted model directory loads it."""
    src = shared_path("models", "qwen-7b", "qwen.tiktoken")
    out = tmp_path_factory.mktemp("qwen-tok")
    _tok_qwen.save_qwen_tokenizer(src, out, 8192)
    (out / "config.json").write_text(json.dumps({"model_type": "qwen2"}))  # as convert() writes it
    ranks = _tok_qwen.load_ranks(src)
    assert len(ranks) == 151643
    texts = _corpus()
    return out, texts, _tiktoken_ids(ranks, texts + MOVIELENS)


def test_real_tokenizer_ids_equal_tiktoken(real_tokenizer):
    """Loaded as the converted directory loads it: transformers rebuilds model_type qwen2's tokenizer as a
    Qwen2Tokenizer from tokenizer.json's vocabulary, merges and added tokens."""
    from transformers import AutoTokenizer

    out, texts, expected = real_tokenizer
    tok = AutoTokenizer.from_pretrained(out)
    assert type(tok).__name__ == "Qwen2Tokenizer"
    got = tok(texts + MOVIELENS, add_special_tokens=True)["input_ids"]
    mismatched = [(t, e, g) for t, e, g in zip(texts + MOVIELENS, expected, got) if e != g]
    assert not mismatched, mismatched[:3]
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|extra_204|>"]) == [
        151643,
        151644,
        151645,
        151850,
    ]
    assert tok.eos_token_id == 151643 and tok.bos_token is None
    for t, ids in zip(texts, got):
        assert tok.decode(ids) == unicodedata.normalize("NFC", t)


def test_real_merges_equal_qwen2_published_merges(real_tokenizer):
    """Qwen2 ships the same byte vocabulary with explicit merges: the recovered merges must be those."""
    merges_txt = shared_path("models", "qwen2-7b", "merges.txt")
    out = real_tokenizer[0]
    recovered = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["model"]["merges"]
    recovered = [" ".join(m) if isinstance(m, list) else m for m in recovered]
    published = [
        ln
        for ln in merges_txt.read_text(encoding="utf-8").splitlines()
        if ln and not ln.startswith("#version")
    ]
    assert len(recovered) == 151387
    assert recovered == published


def test_transformers_tiktoken_converter_is_not_qwen2s_tokenizer(real_tokenizer):
    """Why ``_tok_qwen`` recovers its own merges: transformers' ``TikTokenConverter`` (what
    ``TokenizersBackend`` uses for a tiktoken file), given Qwen's pattern and special tokens, lists every
    split of a token (294,166 merges, not Qwen2's published 151,387) and has no NFC normaliser, so a
    decomposed accent gets other ids than Qwen-1's. If this fails, transformers caught up: switch to it."""
    from transformers import AutoTokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    src = shared_path("models", "qwen-7b", "qwen.tiktoken")
    published = shared_path("models", "qwen2-7b", "merges.txt").read_text(encoding="utf-8").splitlines()
    theirs = TikTokenConverter(
        vocab_file=str(src),
        pattern=_tok_qwen.QWEN_PATTERN,
        extra_special_tokens=list(_tok_qwen.SPECIAL_TOKENS),
    ).converted()
    n_merges = len(json.loads(theirs.to_str())["model"]["merges"])
    assert n_merges != len([ln for ln in published if ln and not ln.startswith("#version")]) == 151387
    out, texts, expected = real_tokenizer
    text = "e\u0301 composed by NFC"
    want = expected[texts.index(text)]
    assert theirs.encode(text, add_special_tokens=False).ids != want
    assert AutoTokenizer.from_pretrained(out)(text)["input_ids"] == want


def test_qlora_training_step_lowers_the_loss(tiny):
    _, out, _ = tiny["safetensors"]
    assert_alpaca_zh_training_lowers_the_loss(out, "qwen", "<|endoftext|>")


def test_rejects_what_it_cannot_convert(tmp_path, tiny):
    src, _, _ = tiny["safetensors"]
    with pytest.raises(UserError, match="family"):
        qwen.convert(src, tmp_path / "x", "qwen2")
    bad = tmp_path / "partial"
    sd = make_tiny_qwen(bad)
    del sd["transformer.h.1.mlp.w2.weight"]
    save_state_dict(sd, bad, "safetensors")
    with pytest.raises(UserError, match="gate_proj"):
        qwen.convert(bad, tmp_path / "y", "qwen")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["rotary_pct"] = 0.5
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="rotary_pct"):
        qwen.convert(bad, tmp_path / "z", "qwen")
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: a stand-in for code hidden in a malicious .bin."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_weights_never_run_code(tmp_path):
    src = tmp_path / "evil"
    sd = make_tiny_qwen(src, fmt="bin")
    marker = tmp_path / "code-ran"
    torch.save({**sd, "transformer.h.0.ln_1.weight": _Payload(marker)}, src / "pytorch_model.bin")
    with pytest.raises(UserError, match="weights_only"):
        qwen.convert(src, tmp_path / "out", "qwen")
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("variant", ["safetensors"])
def test_generate_equals_explicit_cache_loop(tiny, variant):
    _, out, _ = tiny[variant]
    assert_converted_generate_matches(out)
