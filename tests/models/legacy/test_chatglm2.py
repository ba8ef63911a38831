"""ChatGLM2-6B / ChatGLM3-6B: conversion onto transformers' GLM classes, tokenizers, 4-bit LoRA training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llm4rec.errors import UserError
from llm4rec.models.families import chatglm2 as cg2
from llm4rec.models.families import chatglm3 as cg3
from llm4rec.models.legacy.checkpoint_io import iter_original_tensors
from tests.fixtures.legacy_originals import MIXED_TEXTS, TINY_CORPUS, make_tiny_chatglm2
from tests.models._generate import assert_generate_matches_cache_loop
from tests.models.legacy._qlora import assert_cli_converts_the_same, assert_qlora_training_lowers_the_loss

try:
    from . import _reference_chatglm as ref
except ImportError:  # tests/models/legacy is not a package
    import _reference_chatglm as ref

#: what the converter is told per family (special tokens, stop tokens, rope rule)
GENERATIONS = {"chatglm2": cg2.GLM2, "chatglm3": cg3.GLM3}
CONVERT = {"chatglm2": cg2.convert, "chatglm3": cg3.convert}
SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "models"
TOL = 1e-4


def _shared(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"{path} not present (../shared is only beside the repo on CI and dev machines)")
    return path


def _load_sd(src: Path) -> dict[str, torch.Tensor]:
    return dict(iter_original_tensors(src))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Tiny originals (ChatGLM2 as safetensors, ChatGLM3 as a pickled .bin) and their conversions."""
    root = tmp_path_factory.mktemp("chatglm2")
    out = {}
    for family, fmt, seed in (("chatglm2", "safetensors", 1), ("chatglm3", "bin", 2)):
        src = make_tiny_chatglm2(root / f"{family}-orig", family, seed=seed, fmt=fmt)
        out[family] = (src, CONVERT[family](src, root / f"{family}-hf", family))
    return out


def _sequences(vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (11, 7, 4)]


@pytest.mark.parametrize("family", ["chatglm2", "chatglm3"])
def test_converted_logits_equal_reference_padded_and_cached(tiny, family):
    from transformers import AutoModelForCausalLM

    src, out = tiny[family]
    cfg = json.loads((src / "config.json").read_text())
    sd = _load_sd(src)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(model).__name__ == "GlmForCausalLM"
    seqs = _sequences(cfg["padded_vocab_size"])
    refs = [ref.chatglm2_logits(sd, cfg, s, family) for s in seqs]
    width = max(map(len, seqs))
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):  # left padding, as ChatGLM's tokenizer pads
        ids[i, width - len(s) :] = torch.tensor(s)
        mask[i, width - len(s) :] = 1
    with torch.no_grad():
        single = model(torch.tensor([seqs[0]])).logits[0]
        batch = model(input_ids=ids, attention_mask=mask).logits
    assert (single - refs[0]).abs().max().item() < TOL
    for i, s in enumerate(seqs):
        assert (batch[i, width - len(s) :] - refs[i]).abs().max().item() < TOL
    # KV cache: the prompt in one pass, then one token at a time, equals the full forward pass
    s = seqs[0]
    with torch.no_grad():
        o = model(torch.tensor([s[:6]]), use_cache=True)
        steps = [o.logits[0]]
        past = o.cache
        for tok in s[6:]:
            o = model(torch.tensor([[tok]]), cache=past, use_cache=True)
            past = o.cache
            steps.append(o.logits[0])
    assert (torch.cat(steps) - refs[0]).abs().max().item() < TOL


@pytest.mark.parametrize(
    ("family", "options"),
    [
        ("chatglm2", {"rope_ratio": 8.0}),  # ChatGLM2-6B-32K: positions divided by rope_ratio
        ("chatglm3", {"rope_ratio": 8.0}),  # ChatGLM3-6B-32K: base multiplied by rope_ratio
        # full multi-head attention, per-head q/k/v
        ("chatglm2", {"multi_query_attention": False, "seed": 9}),
    ],
)
def test_variants_equal_reference(tmp_path, family, options):
    from transformers import AutoModelForCausalLM

    src = make_tiny_chatglm2(tmp_path / "orig", family, **options)
    out = CONVERT[family](src, tmp_path / "hf", family)
    cfg = json.loads((src / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    seq = [t % cfg["padded_vocab_size"] for t in range(5, 400, 13)]
    with torch.no_grad():
        logits = model(torch.tensor([seq])).logits[0]
    want = ref.chatglm2_logits(_load_sd(src), cfg, seq, family)
    assert (logits - want).abs().max().item() < TOL
    if "rope_ratio" in options:  # and the two 32K schemes are really different functions
        other = ref.chatglm2_logits(
            _load_sd(src), cfg, seq, "chatglm3" if family == "chatglm2" else "chatglm2"
        )
        assert (logits - other).abs().max().item() > 1e-3


def test_config_and_tokenizer_of_conversion(tiny):
    import sentencepiece as spm
    from transformers import AutoConfig, AutoTokenizer

    from llm4rec.models.registry import detect_family

    for family, (src, out) in tiny.items():
        assert detect_family(out) == family
        cfg = AutoConfig.from_pretrained(out)
        assert (cfg.model_type, cfg.num_key_value_heads, cfg.head_dim) == ("glm", 2, 16)
        assert cfg.rope_parameters["partial_rotary_factor"] == 0.5
        tok = AutoTokenizer.from_pretrained(out)
        sp = spm.SentencePieceProcessor(model_file=str(src / "tokenizer.model"))
        n = sp.vocab_size()
        assert tok.convert_tokens_to_ids(["[gMASK]", "sop", "eop"]) == [n + 1, n + 3, n + 4]
        assert (tok.eos_token_id, tok.pad_token_id, tok.padding_side) == (2, 0, "left")
        tok.save_pretrained(out / "resaved")  # as train.py saves it beside the adapter
        again = AutoTokenizer.from_pretrained(out / "resaved")
        for text in TINY_CORPUS + ("isop sop eop [gMASK] 你好  \t\n x",):
            assert tok(text)["input_ids"] == [n + 1, n + 3] + sp.encode(text)
            assert again(text)["input_ids"] == tok(text)["input_ids"]
    src3, out3 = tiny["chatglm3"]
    tok3 = AutoTokenizer.from_pretrained(out3)
    assert json.loads((out3 / "generation_config.json").read_text())["eos_token_id"] == [
        2,
        tok3.convert_tokens_to_ids("<|user|>"),
        tok3.convert_tokens_to_ids("<|observation|>"),
    ]


CORPUS = [
    *MIXED_TEXTS,
    "runs   of    spaces and\ttabs\t\tand\n\nnewlines\n\n\n  indented\n    more",
    "   leading spaces and trailing spaces   ",
    "isopropyl sop eop [gMASK] <s> ñ é ü ß ©®™ Ω≈ç√ ｆｕｌｌｗｉｄｔｈ　全角空格",
    "",
]


def _original_ids(sp, text: str, specials: dict[str, int]) -> list[int]:
    """The original tokenizer's ids: [gMASK] sop, then each sentencepiece piece through convert_token_to_id."""
    return [specials["[gMASK]"], specials["sop"]] + [
        specials.get(p, sp.piece_to_id(p)) for p in sp.encode_as_pieces(text)
    ]


@pytest.fixture(scope="module", params=["chatglm2", "chatglm3"])
def real_tokenizer(request, tmp_path_factory):
    """(family, converted fast tokenizer, original sentencepiece model) from the real files in ../shared."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    family = request.param
    src = _shared(f"{family}-6b")
    out = tmp_path_factory.mktemp(family)
    cg2.write_chatglm2_tokenizer(src / "tokenizer.model", out, GENERATIONS[family], 8192)
    sp = spm.SentencePieceProcessor(model_file=str(src / "tokenizer.model"))
    return family, AutoTokenizer.from_pretrained(out), sp, src


def test_tokenizer_matches_original_on_real_files(real_tokenizer):
    from llm4rec.models.registry import TEMPLATES

    family, tok, sp, src = real_tokenizer
    n = sp.vocab_size()
    specials = {t: n + i for i, t in enumerate(GENERATIONS[family].special_tokens)}
    assert n == 64789 and specials["[gMASK]"] == 64790 and specials["sop"] == 64792
    assert len(tok) == n + len(specials) <= json.loads((src / "config.json").read_text())["padded_vocab_size"]
    instruction = "根据用户的观影历史，判断用户是否会喜欢目标电影。请回答“是”或“否”。"
    inputs = '用户喜欢的电影："Toy Story (1995)", "Heat (1995)"\n用户不喜欢的电影："Jumanji (1995)"\n目标电影："Casino (1995)"'
    texts = CORPUS + [
        TEMPLATES[name].render(instruction, inputs) + answer
        for name in ("alpaca_zh", "alpaca", "chatglm2_zh")
        for answer in ("", "是", "否")
    ]
    for text in texts:
        assert tok(text)["input_ids"] == _original_ids(sp, text, specials), text
    # ChatGLM3's role tokens: the chat template equals build_chat_input's concatenation
    if family == "chatglm3":
        for answer in ("是", "否"):
            got = tok(TEMPLATES["chatglm3_zh"].render(instruction, inputs) + answer)["input_ids"]
            want = (
                [specials["[gMASK]"], specials["sop"], specials["<|user|>"]]
                + sp.encode("\n")
                + sp.encode(instruction + "\n" + inputs)
                + [specials["<|assistant|>"]]
                + sp.encode("\n" + answer)
            )
            assert got == want
    assert tok.decode(tok("你好 world")["input_ids"][2:]) == "你好 world"


def test_answer_tokens_are_distinct_in_default_templates(real_tokenizer):
    from llm4rec.models.answer_tokens import answer_token_ids
    from llm4rec.models.backbone import answer_words, resolve_template
    from llm4rec.models.registry import get_family

    family, tok, _, _ = real_tokenizer
    fam = get_family(family)
    for lang in ("zh", "en"):
        template = resolve_template(fam, "auto", lang)
        yes, no = answer_token_ids(tok, template.render("喜欢吗？", "电影A"), answer_words(fam, lang))
        assert yes != no
        assert tok.convert_ids_to_tokens([yes, no]) == (["是", "否"] if lang == "zh" else ["Yes", "No"])


def test_4bit_lora_training_step_lowers_loss(tiny):
    texts = ["<|user|>\n 你好<|assistant|>\n是", "<|user|>\n 电影<|assistant|>\n否"]
    assert_qlora_training_lowers_the_loss(tiny["chatglm3"][1], "chatglm3", texts)


def test_convert_rejects_wrong_inputs(tmp_path, tiny):
    src, hf = tiny["chatglm2"]
    assert_cli_converts_the_same("chatglm2", src, hf, tmp_path / "cli")
    with pytest.raises(UserError, match="chatglm2 or chatglm3"):
        cg2.convert(src, tmp_path / "x", "qwen")
    gen1 = tmp_path / "gen1"
    gen1.mkdir()
    (gen1 / "config.json").write_text(json.dumps({"model_type": "chatglm", "position_encoding_2d": True}))
    with pytest.raises(UserError, match="--family chatglm"):
        cg2.convert(gen1, tmp_path / "y", "chatglm2")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((src / "config.json").read_text())
    with pytest.raises(UserError, match="tokenizer.model"):
        cg2.convert(broken, tmp_path / "z", "chatglm2")
    (broken / "tokenizer.model").write_bytes((src / "tokenizer.model").read_bytes())
    with pytest.raises(UserError, match="no \\*.safetensors"):
        cg2.convert(broken, tmp_path / "z", "chatglm2")
    assert not (tmp_path / "z").exists()


def test_llm4rec_loads_trains_and_scores_an_original_directory(tmp_path, monkeypatch):
    from llm4rec.models.registry import get_family

    monkeypatch.setenv("LLM4REC_CACHE", str(tmp_path / "cache"))
    src = make_tiny_chatglm2(tmp_path / "orig", "chatglm3", seed=7)
    out = ref.llm4rec_pipeline(src, "chatglm3")
    assert (
        get_family("chatglm3").converter
        and json.loads((Path(out["path"]) / "config.json").read_text())["llm4rec_family"] == "chatglm3"
    )
    ref.assert_pipeline_trains_and_scores(out, tmp_path / "cache")


def test_train_py_loop_and_llm4rec_evaluate(tmp_path, monkeypatch):
    pytest.importorskip("llm4rec.eval.evaluate")
    pytest.importorskip("llm4rec.eval.metrics")
    monkeypatch.setenv("LLM4REC_CACHE", str(tmp_path / "cache"))
    src = make_tiny_chatglm2(tmp_path / "orig", "chatglm3", seed=11)
    ref.assert_trains_and_evaluates(
        ref.train_and_evaluate(src, "chatglm3", tmp_path), tmp_path, "chatglm3", "chatglm3_zh"
    )


@pytest.mark.parametrize("variant", ["chatglm2", "chatglm3"])
def test_generate_equals_explicit_cache_loop(tiny, variant):
    from transformers import AutoModelForCausalLM

    _, out = tiny[variant]
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randint(3, model.config.vocab_size - 8, (n,), generator=g).tolist() for n in (9, 5)]
    assert_generate_matches_cache_loop(model, seqs, pad_id=0)
