"""Text from data never becomes a control token: an item title holding a family's special strings stays text
under every family's real tokenizer, while the template's own special tokens stay special."""

from __future__ import annotations

import pytest

from llm4rec.data.plain_text import MARK, encode_texts, unmark
from llm4rec.data.tokenize import render_prompt
from llm4rec.models.loading import load_backbone_tokenizer
from llm4rec.models.registry import SHARED_TEMPLATES
from tests.conftest import make_tallrec_samples, shared_path

RELEASES = {
    "llama": "llama-7b",
    "llama2": "llama-2-7b",
    "qwen": "qwen-7b",
    "qwen2": "qwen2-7b",
    "baichuan": "baichuan-7b",
    "baichuan2": "baichuan2-7b",
    "chatglm": "chatglm-6b",
    "chatglm2": "chatglm2-6b",
    "chatglm3": "chatglm3-6b",
}
FAMILY = {"llama2": "llama"}
#: special strings of every family, written into item titles
HOSTILE = ["</s>", "<s>", "<unk>", "<|user|>", "<|system|>", "<|assistant|>", "<|im_start|>", "<|im_end|>",
           "<|endoftext|>", "[gMASK]", "<sop>", "<eop>", "[MASK]"]  # fmt: skip


@pytest.fixture(scope="module", params=sorted(RELEASES))
def backbone(request):
    name = request.param
    tokenizer, family = load_backbone_tokenizer(shared_path("models", RELEASES[name]), FAMILY.get(name, name))
    return tokenizer, family


def _templates(family):
    return [*SHARED_TEMPLATES, *family.templates]


def _hostile_samples(tokenizer) -> list[dict]:
    specials = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    assert all(s[0] in "<[" for s in specials), specials  # what mark_sample_text relies on
    rows = make_tallrec_samples(len(HOSTILE), seed=4)
    for row, s in zip(rows, sorted(specials | set(HOSTILE))):
        row["input"] = row["input"].replace("Film", f"Film {s}", 1)
        row["instruction"] = f"{s} " + row["instruction"]
    return rows


def _special_ids(tokenizer) -> set[int]:
    return {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}


def test_prompts_without_special_strings_tokenize_as_before(backbone):
    tokenizer, family = backbone
    rows = make_tallrec_samples(6, seed=3)
    for template in _templates(family):
        prompts = [
            render_prompt(template, r) + template.answer_prefix + "Yes." + template.answer_suffix
            for r in rows
        ]
        assert not any(MARK in p for p in prompts)
        want = [list(x) for x in tokenizer(prompts, add_special_tokens=True)["input_ids"]]
        assert encode_texts(tokenizer, prompts) == want
        assert encode_texts(tokenizer, prompts, always_twin=True) == want  # the twin splits as the tokenizer


def test_special_strings_in_titles_stay_text(backbone):
    tokenizer, family = backbone
    specials = _special_ids(tokenizer)
    clean = make_tallrec_samples(1, seed=4)[0]
    for template in _templates(family):
        (template_specials,) = [
            [i for i in ids if i in specials]
            for ids in encode_texts(tokenizer, [render_prompt(template, clean)])
        ]
        converted_matches = 0  # what the tokenizer alone makes of the same prompts
        for row in _hostile_samples(tokenizer):
            text = render_prompt(template, row)
            plain_ids = tokenizer(unmark(text))["input_ids"]
            converted_matches += [i for i in plain_ids if i in specials] != template_specials
            ids = encode_texts(tokenizer, [text])[0]
            # exactly the template's own special tokens, in order: none came from the title
            assert [i for i in ids if i in specials] == template_specials, (
                template.name,
                row["instruction"][:20],
            )
            # and the title's text is all there
            plain = tokenizer.decode(ids, skip_special_tokens=True)
            title = row["instruction"].split(" ", 1)[0]
            assert title in plain, (template.name, title, plain[:80])
        assert converted_matches > 0  # the fault is real for this family: its tokenizer matches some of them
