"""Sample -> tokens -> batch: labels mask the prompt, EOS is learned, truncation drops old history only."""

import pytest
from transformers import AutoTokenizer

from llm4rec.data.tokenize import (
    IGNORE_INDEX,
    OverlongPrompt,
    TruncationStats,
    collate,
    drop_history,
    encode_train_example,
    fit_prompt,
    history_spans,
    length_grouped_batches,
    render_prompt,
)
from llm4rec.errors import UserError
from llm4rec.models.answer_tokens import answer_token_ids, common_prefix_len
from llm4rec.models.families.qwen2 import CHATML
from llm4rec.models.registry import TEMPLATES, get_family, list_families
from llm4rec.models.templates import ALPACA

from ..conftest import make_tallrec_samples


def test_labels_cover_answer_and_eos_only(tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    sample = make_tallrec_samples(1)[0]
    ex = encode_train_example(tok, ALPACA, sample, cutoff_len=512)
    prompt_ids = tok(render_prompt(ALPACA, sample))["input_ids"]
    assert ex.input_ids[: len(prompt_ids)] == prompt_ids
    assert all(x == IGNORE_INDEX for x in ex.labels[: len(prompt_ids)])
    answer = [x for x in ex.labels if x != IGNORE_INDEX]
    assert answer[-1] == tok.eos_token_id
    assert tok.decode(answer[:-1]).strip() == sample["output"]
    yes_id, no_id = answer_token_ids(tok, render_prompt(ALPACA, sample), ["Yes.", "No."])
    assert answer[0] == (yes_id if sample["label"] else no_id)


def test_train_on_inputs_keeps_prompt_labels(tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    ex = encode_train_example(tok, ALPACA, make_tallrec_samples(1)[0], 512, train_on_inputs=True)
    assert ex.labels == ex.input_ids


def test_truncation_drops_whole_history_items_oldest_first(tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    sample = make_tallrec_samples(1)[0]
    full = encode_train_example(tok, ALPACA, sample, 10_000)
    bare = encode_train_example(tok, ALPACA, drop_history(sample, 6), 10_000)
    cutoff = (len(full.input_ids) + len(bare.input_ids)) // 2
    stats = TruncationStats()
    cut = encode_train_example(tok, ALPACA, sample, cutoff, stats=stats)
    assert len(cut.input_ids) <= cutoff and cut.input_ids[0] == tok.bos_token_id
    # exactly the sample without its d oldest items, for the fewest d that fit
    d = stats.items_dropped
    assert 0 < d < 6 and stats.shortened == 1 and stats.prompts == 1
    assert cut == encode_train_example(tok, ALPACA, drop_history(sample, d), 10_000)
    assert len(encode_train_example(tok, ALPACA, drop_history(sample, d - 1), 10_000).input_ids) > cutoff
    assert cut.input_ids[-8:] == full.input_ids[-8:] and cut.labels[-8:] == full.labels[-8:]
    text = tok.decode(cut.input_ids)
    for kept in ("Below is an instruction that describes a task", sample["instruction"], "### Response:"):
        assert kept in text
    # the history items that survive are the most recent ones
    titles = [sample["input"][s:e] for s, e, _ in history_spans(sample)]
    assert all(t not in text for t in titles[:d]) and all(t in text for t in titles[d:])
    # scoring fits the prompt the same way, one token shorter for the answer
    p = fit_prompt(tok, ALPACA, sample, cutoff)
    assert len(p.ids) <= cutoff - 1 and p.ids == tok(render_prompt(ALPACA, p.sample))["input_ids"]


def test_drop_history_keeps_lists_well_formed():
    sample = make_tallrec_samples(3, seed=4)[2]
    spans = history_spans(sample)
    titles = [sample["input"][s:e] for s, e, _ in spans]
    for d in range(len(spans) + 1):
        cut = drop_history(sample, d)
        assert [cut["input"][s:e] for s, e, _ in history_spans(cut)] == titles[d:]
        assert cut["history"] == sample["history"][d:]
        assert ", ," not in cut["input"] and ", \n" not in cut["input"] and ": , " not in cut["input"]
    assert drop_history(sample, len(spans))["input"].startswith("User Preference: \nUser Unpreference: \n")


def test_overlong_prompt_names_the_sample_and_counts(tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    sample = make_tallrec_samples(1)[0]
    with pytest.raises(
        OverlongPrompt, match=r"data/x.jsonl:7: the prompt needs \d+ tokens with all 6 history"
    ):
        encode_train_example(tok, ALPACA, sample, 40, where="data/x.jsonl:7")
    bare = {k: v for k, v in sample.items() if k != "history_spans"}  # an old file: nothing droppable
    with pytest.raises(OverlongPrompt, match="no droppable history"):
        fit_prompt(tok, ALPACA, bare, 100)
    assert fit_prompt(tok, ALPACA, bare, 10_000).dropped == 0
    with pytest.raises(UserError, match="history_spans entry"):
        drop_history({**sample, "history_spans": [[5, 2, 9]]}, 1, "f:3")


def _tiny_legacy_tokenizer(family, root):
    from llm4rec.models.loading import load_tokenizer
    from tests.fixtures import legacy_originals as orig

    src = root / f"{family}-orig"
    if family == "qwen":
        orig.make_tiny_qwen(src)
    elif family == "chatglm":
        orig.make_tiny_chatglm(src)
    elif family.startswith("baichuan"):
        orig.make_tiny_baichuan(src, family)
    else:
        orig.make_tiny_chatglm2(src, family)
    convert = get_family(family).converter
    return load_tokenizer(convert(src, root / family, family), get_family(family))


@pytest.fixture(scope="module")
def family_tokenizers(tiny_llama, tiny_qwen2, tmp_path_factory):
    """family -> tokenizer: the tiny LLaMA / Qwen2 ones, and tiny legacy releases converted as users' are."""
    from llm4rec.models.loading import load_tokenizer

    root = tmp_path_factory.mktemp("legacy-tok")
    out = {
        "llama": load_tokenizer(tiny_llama, get_family("llama")),
        "qwen2": load_tokenizer(tiny_qwen2, get_family("qwen2")),
    }
    for fam in list_families():
        if fam.name not in out:
            out[fam.name] = _tiny_legacy_tokenizer(fam.name, root)
    return out


def _families_and_templates():
    names = []
    for fam in list_families():
        for t in sorted({*fam.default_template.values(), "alpaca", "alpaca_zh"}):
            names.append((fam.name, t))
    for t in TEMPLATES:  # templates no family picks by default run on the LLaMA tokenizer
        if all(t != n for _, n in names):
            names.append(("llama", t))
    return names


@pytest.mark.parametrize("family,template", _families_and_templates())
def test_every_family_template_keeps_preamble_instruction_and_question(family_tokenizers, family, template):
    tok = family_tokenizers[family]
    tpl = TEMPLATES[template]
    sample = make_tallrec_samples(1, seed=7)[0]
    full = fit_prompt(tok, tpl, sample, 100_000)
    bare = fit_prompt(tok, tpl, drop_history(sample, len(history_spans(sample))), 100_000)
    assert len(bare.ids) < len(full.ids)
    cutoff = (len(full.ids) + len(bare.ids)) // 2 + 1
    got = fit_prompt(tok, tpl, sample, cutoff)
    assert len(got.ids) <= cutoff - 1 and 0 < got.dropped < got.items
    # the ids are the template applied to the sample without its oldest items: the preamble and the
    # special prefix are the untouched prompt's, the question ends it
    assert got.ids == list(tok(render_prompt(tpl, got.sample), add_special_tokens=True)["input_ids"])
    pre = tpl.text.split("{input}")[0].format(instruction=sample["instruction"])
    head = len(tok(pre, add_special_tokens=True)["input_ids"]) - 1  # its last token may merge onward
    assert head > 5 and common_prefix_len(got.ids, full.ids) >= head
    tail = len(
        tok('target movie "' + sample["input"].rsplit('"', 2)[1] + '"?', add_special_tokens=False)[
            "input_ids"
        ]
    )
    assert got.ids[-tail:] == full.ids[-tail:]
    text = render_prompt(tpl, got.sample)
    assert sample["instruction"] in text and sample["input"].rsplit("\n", 1)[1] in text
    # training keeps the answer and its end-of-turn text, within the cutoff
    ex = encode_train_example(tok, tpl, sample, cutoff)
    assert len(ex.input_ids) <= cutoff and ex.labels[-1] == ex.input_ids[-1]


def test_chat_template_answer_suffix_is_trained(tiny_qwen2):
    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    ex = encode_train_example(tok, CHATML, make_tallrec_samples(1)[0], 512)
    answer = tok.decode([x for x in ex.labels if x != IGNORE_INDEX])
    assert answer.endswith("<|im_end|><|endoftext|>")
    # Qwen pads with <|endoftext|> = EOS; the EOS label survives because labels come from lengths
    batch = collate(
        [ex, encode_train_example(tok, ALPACA, make_tallrec_samples(2)[1], 512)], tok.pad_token_id
    )
    assert (batch["labels"] == tok.eos_token_id).sum() == 2


def test_collate_padding_sides():
    from llm4rec.data.tokenize import TrainExample

    exs = [TrainExample([5, 6, 7], [-100, 6, 7]), TrainExample([8], [8])]
    right = collate(exs, pad_id=0)
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert right["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    left = collate(exs, pad_id=0, padding_side="left")
    assert left["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]


def test_length_grouped_batches_cover_every_index_once_and_are_seeded():
    lengths = [((i * 37) % 101) + 1 for i in range(230)]
    a = list(length_grouped_batches(lengths, 8, seed=1))
    b = list(length_grouped_batches(lengths, 8, seed=1))
    c = list(length_grouped_batches(lengths, 8, seed=2))
    assert a == b and a != c
    flat = sorted(i for batch in a for i in batch)
    assert flat == list(range(230))

    # grouping reduces padding compared with a random order
    def pad(batches):
        return sum(max(lengths[i] for i in bt) * len(bt) - sum(lengths[i] for i in bt) for bt in batches)

    assert pad(a) < pad(list(length_grouped_batches(lengths, 8, seed=1, group_by_length=False))) / 3
