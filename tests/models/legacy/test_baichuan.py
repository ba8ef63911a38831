"""Baichuan-7B / Baichuan2-7B: conversion onto LLaMA, equality with a reference forward pass, tokenizer ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llm4rec.errors import UserError
from llm4rec.models.families import baichuan
from llm4rec.models.legacy import _tok_baichuan
from llm4rec.models.registry import TEMPLATES, detect_family
from tests.conftest import shared_path
from tests.fixtures.legacy_originals import make_tiny_baichuan, save_state_dict
from tests.models._generate import assert_converted_generate_matches
from tests.models.legacy._qlora import assert_alpaca_zh_training_lowers_the_loss

try:
    from . import _reference_qwen_baichuan as ref
except ImportError:  # tests/models/legacy is not a package
    import _reference_qwen_baichuan as ref

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "models"
MOVIELENS = ref.movielens_texts(SHARED.parent)
TOL = 1e-4
FAMILIES = ["baichuan", "baichuan2"]


_original_ids = ref.chunked_sentencepiece_ids


def _corpus() -> list[str]:
    texts = list(ref.MIXED_CORPUS)
    for name in ("alpaca", "alpaca_zh", "baichuan2_chat"):
        t = TEMPLATES[name]
        texts.append(
            t.render("判断用户是否喜欢目标电影。Answer Yes. or No.", 'User Preference: "Heat (1995)"\n')
            + "是"
        )
        texts.append(t.render("Only an instruction") + "Yes.")
    texts += ["a</s>b", "<s>starts with bos", "x<unk>y", "0 starts with a digit", "\nstarts with a newline"]
    return texts


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, tuple[Path, Path, dict]]:
    """Tiny originals (Baichuan-7B as safetensors, Baichuan2 as a pickled .bin) and their conversions."""
    root = tmp_path_factory.mktemp("baichuan")
    out = {}
    for family, fmt, seed in (("baichuan", "safetensors", 1), ("baichuan2", "bin", 2)):
        src = root / f"{family}-orig"
        sd = make_tiny_baichuan(src, family, seed=seed, fmt=fmt)
        out[family] = (src, baichuan.convert(src, root / f"{family}-hf", family), sd)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_converted_logits_equal_reference_padded_and_cached(tiny, family):
    src, out, sd = tiny[family]
    cfg, model, seqs = ref.load_converted(src, out, "LlamaForCausalLM")
    norm_head = family == "baichuan2"
    diffs = ref.compare_with_reference(model, ref.baichuan_reference(sd, cfg, norm_head=norm_head), seqs)
    assert max(diffs.values()) < TOL, diffs
    # the comparison is sensitive to the head: the other generation's head is far off
    other_head = ref.baichuan_reference(sd, cfg, norm_head=not norm_head)
    wrong = ref.compare_with_reference(model, other_head, seqs[:1])
    assert wrong["single"] > 1e-2


@pytest.mark.parametrize("family", FAMILIES)
def test_converted_directory_is_an_ordinary_llama_checkpoint(tiny, family):
    from transformers import AutoTokenizer

    src, out, _ = tiny[family]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["llm4rec_family"] == family
    assert cfg["rope_parameters"]["rope_theta"] == 10000.0
    assert detect_family(out) == family and detect_family(src) == family
    tok = AutoTokenizer.from_pretrained(out)
    assert type(tok).__name__ == "TokenizersBackend"
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (1, 2, 0)
    assert tok("你好")["input_ids"][:1] != [1]  # the checkpoints' tokenizer_config: add_bos_token false
    role = tok("<reserved_106>用户<reserved_107>")["input_ids"]
    assert tok.convert_tokens_to_ids("<reserved_106>") in role and role[-1] == tok.convert_tokens_to_ids(
        "<reserved_107>"
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_tokenizer_ids_equal_sentencepiece(tiny, family):
    from transformers import AutoTokenizer

    src, out, _ = tiny[family]
    tok = AutoTokenizer.from_pretrained(out)
    texts = _corpus()
    expected = _original_ids(src / "tokenizer.model", texts, add_bos=False)
    got = [tok(t)["input_ids"] for t in texts]
    mismatched = [(t, e, g) for t, e, g in zip(texts, expected, got) if e != g]
    assert not mismatched, mismatched[:3]


@pytest.mark.parametrize("name", ["baichuan-7b", "baichuan2-7b"])
def test_real_tokenizer_ids_equal_sentencepiece(name, tmp_path):
    from transformers import AutoTokenizer

    src = shared_path("models", name)
    _tok_baichuan.save_baichuan_tokenizer(src, tmp_path, 4096)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))  # as convert() writes it
    tok = AutoTokenizer.from_pretrained(tmp_path)
    add_bos = _tok_baichuan.tokenizer_settings(src)["add_bos_token"]
    # baichuan-7b's directory has no tokenizer_config.json: the original class default (BOS added) applies
    assert add_bos == (name == "baichuan-7b")
    texts = _corpus()
    expected = _original_ids(src / "tokenizer.model", texts + MOVIELENS, add_bos)
    got = tok(texts + MOVIELENS)["input_ids"]
    mismatched = [(t, e, g) for t, e, g in zip(texts + MOVIELENS, expected, got) if e != g]
    assert not mismatched, mismatched[:3]
    assert len(tok) == {"baichuan-7b": 64000, "baichuan2-7b": 125696}[name]
    if name == "baichuan2-7b":
        assert tok.convert_tokens_to_ids(["<reserved_106>", "<reserved_107>"]) == [195, 196]
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(src / "tokenizer.model"))
    plain = [t for t in texts if "<" not in t]
    for t in plain:
        # decoding gives the normalised text back, as sentencepiece's own decode does (nmt_nfkc is lossy)
        assert tok.decode(tok(t, add_special_tokens=False)["input_ids"]) == sp.decode(sp.encode(t))


@pytest.mark.parametrize("name, text", [("baichuan-7b", "a\nb"), ("baichuan2-7b", " livelihoods")])
def test_transformers_converter_differs_where_ours_is_exact(name, text, tmp_path):
    """Why ``_tok_baichuan`` keeps its own normaliser and pre-tokenizer: transformers' converter for a bare
    ``tokenizer.model`` (``TokenizersBackend``) normalises Baichuan-7B's user-defined ``"\\n"`` to ``"▁"``
    and, for Baichuan2, returns whole a piece that sentencepiece's merging does not build. If this fails,
    transformers caught up: switch to it."""
    from transformers import TokenizersBackend

    src = shared_path("models", name, "tokenizer.model")
    (tmp_path / "tokenizer.model").symlink_to(src)
    theirs = TokenizersBackend.from_pretrained(tmp_path)
    ours = _tok_baichuan.build_baichuan_tokenizer(_tok_baichuan.load_proto(src))
    want = _original_ids(src, [text], add_bos=False)[0]
    assert theirs(text, add_special_tokens=False)["input_ids"] != want
    assert ours.encode(text, add_special_tokens=False).ids == want


@pytest.mark.parametrize("family", FAMILIES)
def test_qlora_training_step_lowers_the_loss(tiny, family):
    _, out, _ = tiny[family]
    assert_alpaca_zh_training_lowers_the_loss(out, family, "<unk>")


def test_rejects_13b_alibi_and_the_wrong_generation(tmp_path, tiny):
    src, _, _ = tiny["baichuan2"]
    with pytest.raises(UserError, match="--family baichuan2"):
        baichuan.convert(src, tmp_path / "a", "baichuan")
    cfg = json.loads((src / "config.json").read_text())
    alibi = tmp_path / "13b"
    alibi.mkdir()
    del cfg["max_position_embeddings"]
    (alibi / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="ALiBi"):
        baichuan.convert(alibi, tmp_path / "b", "baichuan2")
    with pytest.raises(UserError, match="family"):
        baichuan.convert(src, tmp_path / "c", "qwen")
    partial = tmp_path / "partial"
    sd = make_tiny_baichuan(partial, "baichuan")
    sd["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)  # a buffer: ignored
    sd["model.layers.0.self_attn.extra.weight"] = torch.ones(2)
    save_state_dict(sd, partial, "safetensors")
    with pytest.raises(UserError, match="extra"):
        baichuan.convert(partial, tmp_path / "d", "baichuan")
    assert not any((tmp_path / n).exists() for n in "abcd")


@pytest.mark.parametrize("variant", ["baichuan", "baichuan2"])
def test_generate_equals_explicit_cache_loop(tiny, variant):
    _, out, _ = tiny[variant]
    assert_converted_generate_matches(out)
