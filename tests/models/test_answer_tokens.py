"""Answer-token discovery on the real LLaMA / Llama-2 / Qwen2 tokenizers in ../shared, traps included.

Expected ids are looked up in each tokenizer's vocabulary (independently of the discovery code), except
LLaMA's, which TALLRec publishes: "Yes"/"No" after a newline are 8241/3782, "▁Yes" alone is 3869.
"""

from __future__ import annotations

import pytest

from llm4rec.errors import UserError
from llm4rec.models.answer_tokens import answer_token_ids, encode
from llm4rec.models.backbone import answer_words
from llm4rec.models.families.llama import LLAMA2_CHAT
from llm4rec.models.families.qwen2 import CHATML, CHATML_ZH
from llm4rec.models.loading import load_tokenizer
from llm4rec.models.registry import TEMPLATES, get_family
from llm4rec.models.templates import ALPACA, ALPACA_ZH
from tests.conftest import shared_path

INSTRUCTION = 'Given the user\'s preference and unpreference, identify whether the user will like the target movie by answering "Yes." or "No.".'
INPUT = 'User Preference: "Toy Story (1995)"\nUser Unpreference: "Heat (1995)"\nWhether the user will like the target movie "Casino (1995)"?'
INSTRUCTION_ZH = "根据用户喜欢和不喜欢的电影，判断用户是否会喜欢目标电影，请回答“是”或“否”。"
INPUT_ZH = "用户喜欢的电影：“玩具总动员 (1995)”\n用户不喜欢的电影：“盗火线 (1995)”\n用户是否会喜欢目标电影“赌城风云 (1995)”？"

#: (shared directory, family) of every real tokenizer the shipped families use
TOKENIZERS = [("llama-7b", "llama"), ("llama-2-7b", "llama"), ("qwen2-7b", "qwen2")]


@pytest.fixture(scope="module")
def tokenizers():
    return {}


def _tok(cache, name, family):
    if name not in cache:
        cache[name] = load_tokenizer(shared_path("models", name), get_family(family))
    return cache[name]


def _byte_level(text: str) -> str:
    """A word as GPT-2-style byte-level BPE writes it in its vocabulary (Qwen2's vocab.json keys)."""
    # printable Latin-1 bytes stand for themselves; the others are shifted to code points from 256 on
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, shift = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shift)
            shift += 1
    return "".join(table[b] for b in text.encode("utf-8"))


@pytest.mark.parametrize("name", ["llama-7b", "llama-2-7b"])
def test_llama_yes_after_a_newline_is_not_the_standalone_yes(tokenizers, name):
    tok = _tok(tokenizers, name, "llama")
    prompt = ALPACA.render(INSTRUCTION, INPUT)
    assert answer_token_ids(tok, prompt, ["Yes.", "No."]) == [8241, 3782]
    assert tok.convert_ids_to_tokens([8241, 3782]) == ["Yes", "No"]
    # the same word tokenized on its own gets the word-start marker: a different token
    assert encode(tok, "Yes") == [tok.bos_token_id, 3869]
    assert tok.convert_ids_to_tokens(3869) == "▁Yes"


def test_qwen2_answers_are_single_vocabulary_tokens(tokenizers):
    tok = _tok(tokenizers, "qwen2-7b", "qwen2")
    vocab = tok.get_vocab()
    for template, (pos, neg) in ((ALPACA, ("Yes", "No")), (CHATML, ("Yes", "No"))):
        assert answer_token_ids(tok, template.render(INSTRUCTION, INPUT), ["Yes.", "No."]) == [
            vocab[pos],
            vocab[neg],
        ]
    for template in (ALPACA_ZH, CHATML_ZH):
        ids = answer_token_ids(tok, template.render(INSTRUCTION_ZH, INPUT_ZH), ["是", "否"])
        assert ids == [vocab[_byte_level("是")], vocab[_byte_level("否")]]


def _family_templates(family: str) -> list[str]:
    """Templates a family is meant to use: its defaults, plus ChatML for Qwen2."""
    names = set(get_family(family).default_template.values())
    if family == "qwen2":
        names |= {"chatml", "chatml_zh"}
    return sorted(names)


CASES = [(name, fam, t) for name, fam in TOKENIZERS for t in _family_templates(fam)]


@pytest.mark.parametrize(("name", "family", "template"), CASES)
def test_every_family_template_gives_distinct_answer_tokens(tokenizers, name, family, template):
    tok = _tok(tokenizers, name, family)
    tpl = TEMPLATES[template]
    answers = answer_words(get_family(family), tpl.lang)
    prompt = tpl.render(INSTRUCTION_ZH, INPUT_ZH) if tpl.lang == "zh" else tpl.render(INSTRUCTION, INPUT)
    ids = answer_token_ids(tok, prompt, answers)
    assert len(set(ids)) == 2
    for answer, i in zip(answers, ids):
        # the scored token is the start of the answer itself, not whitespace or prompt text
        piece = tok.decode([i]).strip()
        assert piece and answer.startswith(piece), (answer, piece)
    # the training text keeps the prompt's tokens as an exact prefix (the loss starts at the answer)
    full = encode(tok, prompt + answers[0] + tpl.answer_suffix)
    assert full[: len(encode(tok, prompt))] == encode(tok, prompt)


@pytest.mark.parametrize("name", ["llama-2-7b"])
def test_llama2_chat_template_scores_on_llama2(tokenizers, name):
    # the space after [/INST] is the template's answer prefix: it belongs to the answer's first token
    tok = _tok(tokenizers, name, "llama")
    assert LLAMA2_CHAT.answer_prefix == " " and not LLAMA2_CHAT.text.endswith(" ")
    answers = [LLAMA2_CHAT.answer_prefix + a for a in ("Yes.", "No.")]
    ids = answer_token_ids(tok, LLAMA2_CHAT.render(INSTRUCTION, INPUT), answers)
    assert tok.convert_ids_to_tokens(ids) == ["▁Yes", "▁No"]


def test_a_trailing_space_merges_into_the_answer_and_is_refused(tokenizers):
    for name, family in TOKENIZERS:
        tok = _tok(tokenizers, name, family)
        with pytest.raises(UserError, match="merges with the end of the prompt"):
            answer_token_ids(tok, "Will the user like it? Answer: ", ["Yes.", "No."])
        # without the space the answer starts its own token
        ids = answer_token_ids(tok, "Will the user like it? Answer:\n", ["Yes.", "No."])
        assert tok.convert_ids_to_tokens(ids)[0].lstrip("▁Ġ") == "Yes"


def test_chinese_answers_of_several_pieces(tokenizers):
    llama = _tok(tokenizers, "llama-7b", "llama")
    qwen = _tok(tokenizers, "qwen2-7b", "qwen2")
    prompt = ALPACA_ZH.render(INSTRUCTION_ZH, INPUT_ZH)
    # LLaMA spells 不是 / 不会 as two pieces that both start with 不: one first-token logit cannot tell
    # them apart, and discovery must refuse rather than score both answers with the same token
    assert llama.convert_ids_to_tokens(encode(llama, prompt + "不是")[-2:]) == ["不", "是"]
    with pytest.raises(UserError, match="distinct"):
        answer_token_ids(llama, prompt, ["不是", "不会"])
    # a two-piece answer is scored by its first piece when the first pieces differ
    ids = answer_token_ids(llama, prompt, ["是的", "不是"])
    assert llama.convert_ids_to_tokens(ids) == ["是", "不"]
    # Qwen2's vocabulary has both words whole
    vocab = qwen.get_vocab()
    assert answer_token_ids(qwen, prompt, ["不是", "不会"]) == [
        vocab[_byte_level("不是")],
        vocab[_byte_level("不会")],
    ]


def test_chatml_prompt_is_the_chat_format_up_to_the_assistant_tag(tokenizers):
    """Qwen's ChatML prompt ends with the assistant tag and a newline token, and the answer follows as its own
    token. llm4rec renders the prompt itself (a tokenizer's chat template may append more after the
    generation prompt, as the shared rtp-llm fixture does); it must equal the chat format up to the tag."""
    tok = _tok(tokenizers, "qwen2-7b", "qwen2")
    prompt = CHATML.render(INSTRUCTION, INPUT)
    assert tok.convert_ids_to_tokens(encode(tok, prompt)[-3:]) == ["<|im_start|>", "assistant", "Ċ"]
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"{INSTRUCTION}\n{INPUT}"},
    ]
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True).startswith(prompt)
    # training closes the turn with <|im_end|> and the EOS, as the chat format does
    ids = encode(tok, prompt + "Yes." + CHATML.answer_suffix)
    assert tok.convert_ids_to_tokens(ids[-3:]) == ["Yes", ".", "<|im_end|>"]
