"""Sample -> tokens -> batch: labels mask the prompt, EOS is learned, truncation keeps the answer."""

from transformers import AutoTokenizer

from llm4rec.data.tokenize import (
    IGNORE_INDEX,
    collate,
    encode_prompt,
    encode_train_example,
    length_grouped_batches,
    render_prompt,
)
from llm4rec.models.answer_tokens import answer_token_ids
from llm4rec.models.templates import ALPACA, CHATML

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


def test_truncation_keeps_bos_and_answer(tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    sample = make_tallrec_samples(1)[0]
    full = encode_train_example(tok, ALPACA, sample, 10_000)
    cut = encode_train_example(tok, ALPACA, sample, 40)
    assert len(cut.input_ids) == 40 and cut.input_ids[0] == tok.bos_token_id
    assert cut.input_ids[-8:] == full.input_ids[-8:] and cut.labels[-8:] == full.labels[-8:]
    p = encode_prompt(tok, render_prompt(ALPACA, sample), 40)
    assert len(p) == 39 and p[0] == tok.bos_token_id


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
