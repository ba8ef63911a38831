"""Domain pre-training of a tiny base: text lines are LM-trained, instruction samples on their answer."""

import json

import pytest
import torch
from transformers import AutoTokenizer

from llm4rec.data.tokenize import IGNORE_INDEX
from llm4rec.errors import UserError
from llm4rec.train.pretrain import load_documents, pretrain

from ..conftest import make_tallrec_samples


def test_documents_and_loss_goes_down(tmp_path, tiny_llama):
    text = tmp_path / "c.txt"
    text.write_text("\n".join(r["input"].replace("\n", " ") for r in make_tallrec_samples(30)))
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in make_tallrec_samples(30, seed=5)))
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    docs = load_documents(tok, [text, samples], max_len=256)
    assert len(docs) == 60
    assert all(IGNORE_INDEX not in d.labels for d in docs[:30])  # text: every token
    assert all(d.labels.count(IGNORE_INDEX) > 10 for d in docs[30:])  # samples: answer only

    stats = pretrain(
        tiny_llama, [text, samples], tmp_path / "out", steps=15, batch_size=4, lr=3e-3, progress=False
    )
    from transformers import AutoModelForCausalLM

    from llm4rec.data.tokenize import collate

    batch = collate(docs[:16], tok.unk_token_id)
    with torch.no_grad():
        before = AutoModelForCausalLM.from_pretrained(tiny_llama)(**batch).loss
        after = AutoModelForCausalLM.from_pretrained(tmp_path / "out")(**batch).loss
    assert after < 0.7 * before
    assert stats["documents"] == 60


def test_missing_corpus_is_named(tmp_path, tiny_llama):
    with pytest.raises(UserError, match="nope.txt: no such file"):
        pretrain(tiny_llama, [tmp_path / "nope.txt"], tmp_path / "out", steps=1)


def test_tail_window_keeps_bos_answer_and_alignment(tmp_path, tiny_llama):
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in make_tallrec_samples(8, seed=3)))
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    full = load_documents(tok, [samples], max_len=256)
    tail = load_documents(tok, [samples], max_len=256, tail_tokens=24)
    for f, t in zip(full, tail):
        assert len(f.input_ids) > 24 and len(t.input_ids) == 24
        assert t.input_ids[0] == tok.bos_token_id and t.labels[0] == IGNORE_INDEX
        # the window is the sequence's end, ids and labels still paired token for token
        assert t.input_ids[1:] == f.input_ids[-23:] and t.labels[1:] == f.labels[-23:]
        # every supervised (answer) token survives the cut
        assert [x for x in t.labels if x != IGNORE_INDEX] == [x for x in f.labels if x != IGNORE_INDEX]
    # a window longer than the sample leaves it whole
    assert load_documents(tok, [samples], max_len=256, tail_tokens=10_000) == full


def test_negative_tail_is_rejected_by_name(tmp_path, tiny_llama, capsys):
    from llm4rec.train.pretrain import main

    with pytest.raises(SystemExit) as exc:
        main(
            ["--model", str(tiny_llama), "--corpus", "x.jsonl", "--out", str(tmp_path), "--tail-tokens", "-1"]
        )
    assert exc.value.code == 2
    assert "--tail-tokens" in capsys.readouterr().err
