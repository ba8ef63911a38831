"""ChatGLM-6B (first generation): native model vs the release's equations, icetk tokenizer, 4-bit LoRA."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from llm4rec.errors import UserError
from llm4rec.models.families import chatglm as cg1
from llm4rec.models.legacy.checkpoint_io import iter_original_tensors
from tests.fixtures.legacy_originals import (
    MIXED_TEXTS,
    TINY_CORPUS,
    make_tiny_chatglm,
    make_tiny_chatglm2,
    save_state_dict,
)
from tests.models._generate import assert_generate_matches_cache_loop
from tests.models.legacy._qlora import assert_cli_converts_the_same, assert_qlora_training_lowers_the_loss

try:
    from . import _reference_chatglm as ref
except ImportError:  # tests/models/legacy is not a package
    import _reference_chatglm as ref

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "models"
TOL = 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Two tiny releases: the current layout (.bin, tied head) and the first one (20 image tokens in front of
    the text ids, safetensors, an lm_head that differs from the embedding)."""
    root = tmp_path_factory.mktemp("chatglm")
    plain = make_tiny_chatglm(root / "plain-orig", seed=3)
    offset = make_tiny_chatglm(root / "offset-orig", seed=4, num_image_tokens=20, fmt="safetensors")
    sd = dict(iter_original_tensors(offset))
    sd["lm_head.weight"] = sd["lm_head.weight"] + 0.05 * torch.randn(sd["lm_head.weight"].shape)
    save_state_dict(sd, offset, "safetensors")
    return {
        "plain": (plain, cg1.convert(plain, root / "plain-hf", "chatglm")),
        "offset": (offset, cg1.convert(offset, root / "offset-hf", "chatglm")),
    }


def _prompts(cfg: dict) -> list[list[int]]:
    """Release-style sequences: prompt, [gMASK] (or [MASK]), <sop>, then answer tokens."""
    g = torch.Generator().manual_seed(1)
    lo, hi = cfg["eos_token_id"] + 1, cfg["vocab_size"]

    def rnd(n: int) -> list[int]:
        return torch.randint(lo, hi, (n,), generator=g).tolist()

    gm, m, sop = cfg["gmask_token_id"], cfg["mask_token_id"], cfg["bos_token_id"]
    return [
        rnd(40) + [gm, sop] + rnd(4),
        rnd(3) + [gm, sop] + rnd(2),
        rnd(2) + [m] + rnd(3) + [sop] + rnd(3),  # [MASK] inside the prompt instead of a trailing [gMASK]
    ]


@pytest.mark.parametrize("variant", ["plain", "offset"])
def test_native_logits_equal_reference_padded_and_cached(tiny, variant):
    from transformers import AutoModelForCausalLM

    src, out = tiny[variant]
    cfg = json.loads((src / "config.json").read_text())
    sd = dict(iter_original_tensors(src))
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(model).__name__ == "ChatGLM6BForCausalLM"
    assert model.config.tie_word_embeddings == (variant == "plain")
    eager = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    seqs = _prompts(cfg)
    refs = [ref.chatglm6b_logits(sd, cfg, s) for s in seqs]
    width = max(map(len, seqs))
    for side, m in (("left", model), ("right", model), ("left", eager)):
        ids = torch.full((len(seqs), width), cfg["pad_token_id"], dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
            ids[i, sl], mask[i, sl] = torch.tensor(s), 1
        with torch.no_grad():
            logits = m(input_ids=ids, attention_mask=mask).logits
        for i, s in enumerate(seqs):
            sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
            assert (logits[i, sl] - refs[i]).abs().max().item() < TOL, (side, i)
    # the release tokenizer's own padded inputs: a [b, 1, q, k] boolean mask (True = masked) and [b, 2, n]
    # positions computed on each unpadded sequence, both left-padded
    ids = torch.full((len(seqs), width), cfg["pad_token_id"], dtype=torch.long)
    masked = torch.ones(len(seqs), 1, width, width, dtype=torch.bool)
    positions = torch.zeros(len(seqs), 2, width, dtype=torch.long)
    for i, s in enumerate(seqs):
        pos, block, ctx = ref.chatglm6b_positions(cfg, s)
        allowed = torch.ones(len(s), len(s), dtype=torch.bool).tril()
        allowed[:, :ctx] = True
        p = width - len(s)
        ids[i, p:], masked[i, 0, p:, p:], positions[i, :, p:] = (
            torch.tensor(s),
            ~allowed,
            torch.tensor([pos, block]),
        )
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=masked, position_ids=positions).logits
    for i, s in enumerate(seqs):
        assert (logits[i, width - len(s) :] - refs[i]).abs().max().item() < TOL
    # KV cache: the prompt through <sop> and one answer token in one pass, then one token at a time
    s = seqs[0]
    cut = s.index(cfg["bos_token_id"]) + 2
    with torch.no_grad():
        o = model(torch.tensor([s[:cut]]), use_cache=True)
        steps, past = [o.logits[0]], o.cache
        for tok in s[cut:]:
            o = model(torch.tensor([[tok]]), cache=past, use_cache=True)
            steps.append(o.logits[0])
            past = o.cache
    assert (torch.cat(steps) - refs[0]).abs().max().item() < TOL
    # an explicit cache object fills and decodes the same through either keyword (past_key_values= is
    # transformers' name; were it ignored, the cache would stay empty and the second call would fail)
    from transformers.cache_utils import DynamicCache

    for keyword in ("cache", "past_key_values"):
        explicit = DynamicCache(config=model.config)
        with torch.no_grad():
            steps = [model(torch.tensor([s[:cut]]), use_cache=True, **{keyword: explicit}).logits[0]]
            assert explicit.get_seq_length() == cut
            for tok in s[cut:]:
                steps.append(model(torch.tensor([[tok]]), use_cache=True, **{keyword: explicit}).logits[0])
        assert explicit.get_seq_length() == len(s)
        assert (torch.cat(steps) - refs[0]).abs().max().item() < TOL
    with pytest.raises(ValueError, match="pass the KV cache once"):
        model(
            torch.tensor([s[:cut]]), cache=DynamicCache(config=model.config), past_key_values=DynamicCache()
        )
    # prefix-LM: a prompt token sees later prompt tokens; no token sees a later answer token
    k = s.index(cfg["gmask_token_id"]) - 1
    later_prompt = s[:k] + [s[k - 1]] + s[k + 1 :]
    later_answer = s[:-1] + [s[-2]]
    with torch.no_grad():
        a, b, c = (model(torch.tensor([x])).logits[0] for x in (s, later_prompt, later_answer))
    assert (a[0] - b[0]).abs().max().item() > 1e-3
    assert torch.allclose(a[:-1], c[:-1], atol=1e-6, rtol=0)


def test_generate_with_cache_equals_without(tiny):
    from transformers import AutoModelForCausalLM

    src, out = tiny["plain"]
    cfg = json.loads((src / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    seqs = [s[: s.index(cfg["bos_token_id"]) + 1] for s in _prompts(cfg)[:2]]
    width = max(map(len, seqs))
    ids = torch.full((2, width), cfg["pad_token_id"], dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :], mask[i, width - len(s) :] = torch.tensor(s), 1
    kwargs = {
        "max_new_tokens": 5,
        "do_sample": False,
        "eos_token_id": None,
        "pad_token_id": cfg["pad_token_id"],
    }
    with torch.no_grad():
        cached = model.generate(input_ids=ids, attention_mask=mask, use_cache=True, **kwargs)
        uncached = model.generate(input_ids=ids, attention_mask=mask, use_cache=False, **kwargs)
    assert cached.shape == (2, width + 5)
    assert torch.equal(cached, uncached)
    # each row continues exactly as the reference's greedy choice for the unpadded prompt
    sd = dict(iter_original_tensors(src))
    for i, s in enumerate(seqs):
        assert cached[i, width].item() == ref.chatglm6b_logits(sd, cfg, s)[-1].argmax().item()


def _release_ids(sp, text: str, offset: int, specials: dict[str, int]) -> list[int]:
    """The release tokenizer on ``text``: split on its special tokens, then pre-process + sentencepiece each part."""
    import re

    ids: list[int] = []
    for part in re.split("(" + "|".join(map(re.escape, specials)) + ")", text):
        if part in specials:
            ids.append(specials[part])
        elif part:
            ids += [offset + i for i in sp.encode(cg1.preprocess(part))]
    return ids


CORPUS = [
    *MIXED_TEXTS,
    "runs   of    spaces and\ttabs\t\tand\n\nnewlines\n\n\n  indented\n    more" + " " * 85 + "end",
    "   leading spaces and trailing spaces   ",
    "ñ é ü ß ©®™ Ω≈ç√ ｆｕｌｌｗｉｄｔｈ　全角空格　 ＡＢＣ１２３ a\u00a0b \r\n <0x41> </s> <s>",
    "",
]


def _check_tokenizer(tok, sp, offset: int, cfg: dict, texts: list[str]) -> None:
    specials = {
        "[MASK]": cfg["mask_token_id"],
        "[gMASK]": cfg["gmask_token_id"],
        "<sop>": cfg["bos_token_id"],
        "<eop>": cfg["eos_token_id"],
    }
    for text in texts:
        assert tok(text)["input_ids"] == _release_ids(sp, text, offset, specials), text


def test_tokenizer_equals_release_pipeline_on_tiny_models(tiny):
    import sentencepiece as spm
    from transformers import AutoTokenizer

    for variant, offset in (("plain", 0), ("offset", 20)):
        src, out = tiny[variant]
        cfg = json.loads((src / "config.json").read_text())
        tok = AutoTokenizer.from_pretrained(out)
        sp = spm.SentencePieceProcessor(model_file=str(src / "ice_text.model"))
        _check_tokenizer(tok, sp, offset, cfg, list(TINY_CORPUS) + CORPUS)
        tok.save_pretrained(out / "resaved")  # as train.py saves it beside the adapter
        _check_tokenizer(AutoTokenizer.from_pretrained(out / "resaved"), sp, offset, cfg, CORPUS)
        assert (tok.eos_token_id, tok.pad_token_id) == (cfg["eos_token_id"], cfg["pad_token_id"])
        ids = tok("用户 喜欢\n\t电影  是")["input_ids"]
        assert tok.decode(ids) == "用户 喜欢\n\t电影  是"


@pytest.fixture(scope="module")
def real_tokenizer(tmp_path_factory):
    """(converted fast tokenizer, original sentencepiece model, release dir) from the files in ../shared."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    src = SHARED / "chatglm-6b"
    if not src.is_dir():
        pytest.skip(f"{src} not present (../shared is only beside the repo on CI and dev machines)")
    out = tmp_path_factory.mktemp("chatglm-tok")
    cg1.write_chatglm_tokenizer(src / "ice_text.model", out, 0, 2048)
    sp = spm.SentencePieceProcessor(model_file=str(src / "ice_text.model"))
    return AutoTokenizer.from_pretrained(out), sp, src


def test_tokenizer_matches_release_on_real_files(real_tokenizer):
    from llm4rec.models.registry import TEMPLATES

    tok, sp, src = real_tokenizer
    cfg = json.loads((src / "config.json").read_text())
    assert tok.convert_tokens_to_ids(["[MASK]", "[gMASK]", "<sop>", "<eop>", "<pad>"]) == [
        130000,
        130001,
        130004,
        130005,
        3,
    ]
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["gmask_token_id"]) == (130004, 130005, 130001)
    instruction = "根据用户的观影历史，判断用户是否会喜欢目标电影。请回答“是”或“否”。"
    inputs = '用户喜欢的电影："Toy Story (1995)", "Heat (1995)"\n用户不喜欢的电影："Jumanji (1995)"'
    prompts = [
        TEMPLATES[name].render(instruction, inputs) + answer
        for name in ("alpaca_zh", "alpaca", "chatglm_zh", "chatglm_en")
        for answer in ("", "是", "否", "Yes.", "No.")
    ]
    _check_tokenizer(tok, sp, 0, cfg, CORPUS + prompts)
    # a rendered chatglm_zh prompt + answer is the release's build_inputs_with_special_tokens(prompt, answer)
    body, answer = instruction + "\n" + inputs, "答：是"
    want = sp.encode(cg1.preprocess(body)) + [130001, 130004] + sp.encode(cg1.preprocess(answer))
    assert tok(TEMPLATES["chatglm_zh"].render(instruction, inputs) + "是")["input_ids"] == want


def test_tokenizer_matches_sentencepiece_on_long_runs(real_tokenizer, tmp_path):
    """sentencepiece keeps path scores in float32: orderings of the same pieces in a long run of one
    character are told apart by rounding, which depends on the text before the run."""
    from transformers import AutoTokenizer

    tok, sp, src = real_tokenizer
    cfg = json.loads((src / "config.json").read_text())
    runs = [ch * n for ch in ("a", "哈", "1", "ab", "=") for n in (18, 26, 27, 30, 31, 34, 40, 41, 50, 80)]
    prefixes = ("", "x ", "你好世界今天天气很好 ", "The quick brown fox\n\n jumps   over ", "[gMASK]<sop>")
    texts = [p + r for p in prefixes for r in runs]
    _check_tokenizer(tok, sp, 0, cfg, texts)
    # tokenizer.json alone (tokenizers' float64 lattice) breaks those ties its own way
    plain = cg1.build_chatglm_tokenizer(src / "ice_text.model")
    assert plain.encode("a" * 18).ids != sp.encode("a" * 18)
    tok.save_pretrained(tmp_path / "resaved")
    again = AutoTokenizer.from_pretrained(tmp_path / "resaved")
    assert type(again).__name__ == "ChatGLM6BTokenizer"
    _check_tokenizer(again, sp, 0, cfg, texts[:10])
    # pickled (as for worker processes) it keeps sentencepiece's boundaries
    _check_tokenizer(pickle.loads(pickle.dumps(tok)), sp, 0, cfg, texts[-10:])


def test_transformers_converter_differs_where_ours_is_exact(real_tokenizer, tmp_path):
    """Why ChatGLM-6B's tokenizer is llm4rec's own: transformers' converter for the bare sentencepiece file
    has no step for icetk's pre-processing, and its float64 unigram lattice orders the pieces of a long run
    differently even on pre-processed text. If this fails, transformers caught up: switch to it."""
    from transformers import TokenizersBackend

    tok, sp, src = real_tokenizer
    (tmp_path / "tokenizer.model").symlink_to(src / "ice_text.model")
    theirs = TokenizersBackend.from_pretrained(tmp_path)
    raw, run = "a\nb", "a" * 18
    want_raw, want_run = sp.encode(cg1.preprocess(raw)), sp.encode(cg1.preprocess(run))
    assert theirs(raw, add_special_tokens=False)["input_ids"] != want_raw
    assert theirs(cg1.preprocess(run), add_special_tokens=False)["input_ids"] != want_run
    assert (tok(raw)["input_ids"], tok(run)["input_ids"]) == (want_raw, want_run)


def test_answer_tokens_are_distinct_in_default_templates(real_tokenizer):
    from llm4rec.models.answer_tokens import answer_token_ids
    from llm4rec.models.backbone import answer_words, resolve_template
    from llm4rec.models.registry import get_family

    tok = real_tokenizer[0]
    fam = get_family("chatglm")
    for lang, want in (("zh", ["是", "否"]), ("en", ["Yes", "No"])):
        template = resolve_template(fam, "auto", lang)
        yes, no = answer_token_ids(tok, template.render("喜欢吗？", "电影A"), answer_words(fam, lang))
        assert tok.convert_ids_to_tokens([yes, no]) == want


def test_4bit_lora_training_step_with_checkpointing(tiny):
    texts = ["用户 喜欢 电影[gMASK]<sop>答：是<eop>", "推荐[gMASK]<sop>答：否<eop>"]
    assert_qlora_training_lowers_the_loss(
        tiny["plain"][1], "chatglm", texts, checkpointing=True, padding_side="right"
    )


def test_convert_rejects_wrong_inputs(tmp_path, tiny):
    src, hf = tiny["plain"]
    assert_cli_converts_the_same("chatglm", src, hf, tmp_path / "cli")
    with pytest.raises(UserError, match="use chatglm"):
        cg1.convert(src, tmp_path / "a", "chatglm2")
    glm2 = make_tiny_chatglm2(tmp_path / "glm2", "chatglm2")
    with pytest.raises(UserError, match="--family chatglm2 or chatglm3"):
        cg1.convert(glm2, tmp_path / "b", "chatglm")
    broken = tmp_path / "broken"
    broken.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="ice_text.model"):
        cg1.convert(broken, tmp_path / "c", "chatglm")
    (broken / "ice_text.model").write_bytes((src / "ice_text.model").read_bytes())
    (broken / "config.json").write_text(json.dumps(dict(cfg, bos_token_id=cfg["bos_token_id"] + 1)))
    with pytest.raises(UserError, match="bos_token_id"):
        cg1.convert(broken, tmp_path / "c", "chatglm")
    assert not (tmp_path / "c").exists()


def test_llm4rec_loads_trains_and_scores_an_original_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM4REC_CACHE", str(tmp_path / "cache"))
    src = make_tiny_chatglm(tmp_path / "orig", seed=8)
    ref.assert_pipeline_trains_and_scores(ref.llm4rec_pipeline(src, "chatglm"), tmp_path / "cache")


def test_train_py_loop_and_llm4rec_evaluate(tmp_path, monkeypatch):
    pytest.importorskip("llm4rec.eval.evaluate")
    pytest.importorskip("llm4rec.eval.metrics")
    monkeypatch.setenv("LLM4REC_CACHE", str(tmp_path / "cache"))
    src = make_tiny_chatglm(tmp_path / "orig", seed=12)
    ref.assert_trains_and_evaluates(
        ref.train_and_evaluate(src, "chatglm", tmp_path), tmp_path, "chatglm", "chatglm_zh"
    )


def test_generate_equals_explicit_cache_loop(tiny):
    from transformers import AutoModelForCausalLM

    src, out = tiny["plain"]
    cfg = json.loads((src / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    seqs = [s[: s.index(cfg["bos_token_id"]) + 1] for s in _prompts(cfg)[:2]]
    assert_generate_matches_cache_loop(model, seqs, pad_id=cfg["pad_token_id"])
