"""LLaMA's tokenizer as llm4rec loads it gives the original sentencepiece model's ids (runs of spaces too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm4rec.errors import UserError
from llm4rec.models.loading import load_backbone_tokenizer, load_tokenizer, read_tokenizer, save_tokenizer
from llm4rec.models.registry import TEMPLATES, get_family
from tests.conftest import SHARED, make_tallrec_samples, shared_path
from tests.fixtures.legacy_originals import SP_BPE_OPTIONS, TINY_CORPUS, tiny_corpus, train_tiny_sentencepiece
from tests.models.legacy import _reference_qwen_baichuan as ref

LLAMA = get_family("llama")


def _corpus() -> list[str]:
    """Mixed text, LLaMA's prompts with their answers, runs of spaces and special tokens inside text."""
    sample = make_tallrec_samples(1)[0]
    prompts = [
        TEMPLATES[name].render(sample["instruction"], sample["input"]) + answer
        for name in ("alpaca", "llama2_chat")
        for answer in ("", " Yes.", " No.", "Yes.")
    ]
    odd = ["a  b", "x\n  y", "hello   world", "Toy Story (1995)", "a</s>b", "</s> x", "a </s>  b", " <unk> "]
    return ref.MIXED_CORPUS + prompts + odd + ["<s>starts with bos", "x<unk>y", "  \n  "]


def _mismatches(tok, model_file: Path, texts: list[str]) -> list[str]:
    want = ref.chunked_sentencepiece_ids(model_file, texts, add_bos=False)
    got = tok(texts, add_special_tokens=False)["input_ids"]
    return [t for t, w, g in zip(texts, want, got) if w != g]


@pytest.mark.parametrize("name", ["llama-7b", "llama-2-7b"])
def test_real_llama_tokenizer_gives_sentencepiece_ids(name, tmp_path):
    src = shared_path("models", name)
    tok, fam = load_backbone_tokenizer(src)
    assert fam.name == "llama" and type(tok).__name__ == "LlamaTokenizer"
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    texts = _corpus() + ref.movielens_texts(SHARED) + ref.RUNS
    assert _mismatches(tok, src / "tokenizer.model", texts) == []
    assert tok("x y")["input_ids"][0] == 1  # BOS still added
    # a training output keeps tokenizer.model beside tokenizer.json and reloads with the same ids
    save_tokenizer(tok, tmp_path)
    assert (tmp_path / "tokenizer.model").read_bytes() == (src / "tokenizer.model").read_bytes()
    again = load_tokenizer(tmp_path, fam)
    texts = _corpus() + ref.RUNS
    assert again(texts)["input_ids"] == tok(texts)["input_ids"]


def test_plain_autotokenizer_still_differs_on_runs_of_spaces():
    """Pins why the LLaMA family builds its own backend: when this fails, transformers' LlamaTokenizer has
    learnt sentencepiece's merges and ``load_llama_tokenizer`` may go back to plain ``AutoTokenizer``."""
    from transformers import AutoTokenizer

    src = shared_path("models", "llama-7b")
    ours = read_tokenizer(src, LLAMA)
    want = ref.chunked_sentencepiece_ids(src / "tokenizer.model", ["a  b"], add_bos=False)[0]
    assert ours("a  b", add_special_tokens=False)["input_ids"] == want == [263, 29871, 289]
    plain = AutoTokenizer.from_pretrained(src)
    assert plain("a  b", add_special_tokens=False)["input_ids"] != want


def _tiny_llama_sentencepiece(out: Path) -> Path:
    """A directory like LLaMA's release: a small sentencepiece BPE trained with LLaMA's settings, its
    ``tokenizer_config.json`` and a LLaMA ``config.json``."""
    out.mkdir()
    lines = tiny_corpus(seed=3) + ["runs  of   spaces    here", "   leading", "trailing   "]
    model = train_tiny_sentencepiece(lines, 600, **SP_BPE_OPTIONS)
    (out / "tokenizer.model").write_bytes(model)
    config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False}
    (out / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    LLAMA.tiny_config(600).save_pretrained(out)
    return out


def test_tiny_llama_style_sentencepiece_model_gives_its_ids(tmp_path):
    from transformers import AutoTokenizer

    src = _tiny_llama_sentencepiece(tmp_path / "orig")
    tok, fam = load_backbone_tokenizer(src)
    assert fam.name == "llama" and type(tok).__name__ == "LlamaTokenizer" and tok.pad_token == "<unk>"
    texts = _corpus() + list(TINY_CORPUS) + ref.RUNS
    assert _mismatches(tok, src / "tokenizer.model", texts) == []
    # plain AutoTokenizer differs here too, so this test covers the fix where ../shared is absent
    assert _mismatches(AutoTokenizer.from_pretrained(src), src / "tokenizer.model", texts)
    save_tokenizer(tok, tmp_path / "run")
    again = load_tokenizer(tmp_path / "run", fam)
    assert _mismatches(again, src / "tokenizer.model", texts) == []


def test_tokenizer_json_disagreeing_with_tokenizer_model_is_refused(tmp_path):
    src = _tiny_llama_sentencepiece(tmp_path / "orig")
    save_tokenizer(read_tokenizer(src, LLAMA), tmp_path / "run")
    path = tmp_path / "run" / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    a, b = (p for p, i in vocab.items() if i in (100, 101))
    vocab[a], vocab[b] = vocab[b], vocab[a]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(UserError) as exc:
        load_tokenizer(tmp_path / "run", LLAMA)
    assert "tokenizer.json: model.vocab" in str(exc.value) and "tokenizer.model" in str(exc.value)


def test_directory_without_tokenizer_model_loads_as_autotokenizer(tiny_llama):
    from transformers import AutoTokenizer

    assert not (tiny_llama / "tokenizer.model").exists()
    texts = _corpus() + ref.RUNS
    ours = read_tokenizer(tiny_llama, LLAMA)
    plain = AutoTokenizer.from_pretrained(tiny_llama)
    assert type(ours) is type(plain)
    assert ours(texts)["input_ids"] == plain(texts)["input_ids"]


def test_a_tokenizer_model_that_is_not_sentencepiece_beside_tokenizer_json_is_left_to_autotokenizer(
    tmp_path, tiny_llama
):
    """Llama-3 ships a tiktoken-format ``tokenizer.model``: with a ``tokenizer.json`` beside it, the directory
    loads as before; without one it is one error naming the file."""
    import shutil

    from transformers import AutoTokenizer

    from llm4rec.errors import UserError

    copy = tmp_path / "m"
    shutil.copytree(tiny_llama, copy)
    (copy / "tokenizer.model").write_text("IQ== 0\nIg== 1\n")  # tiktoken's base64-token-rank lines
    texts = _corpus()[:50]
    assert (
        read_tokenizer(copy, LLAMA)(texts)["input_ids"]
        == AutoTokenizer.from_pretrained(tiny_llama)(texts)["input_ids"]
    )
    (copy / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="tokenizer.model: not a sentencepiece model"):
        read_tokenizer(copy, LLAMA)


def test_prep_training_and_evaluation_share_the_sentencepiece_ids(tmp_path):
    """A tiny model carrying LLaMA's tokenizer: prep's sizing, training and the run directory that evaluate
    and show-prompt load all give sentencepiece's ids."""
    from llm4rec.config import recipe_from_dict
    from llm4rec.io import write_jsonl_atomic
    from llm4rec.models.backbone import resolve_backbone
    from llm4rec.models.tiny import build_tiny_model
    from llm4rec.train.loop import train

    src = shared_path("models", "llama-7b")
    model = build_tiny_model("llama", tmp_path / "tiny", tokenizer_from=src, hidden_size=64, layers=1)
    assert (model / "tokenizer.model").is_file()
    texts = _corpus() + ref.RUNS
    want = ref.chunked_sentencepiece_ids(src / "tokenizer.model", texts, add_bos=False)
    prep_tok, _ = load_backbone_tokenizer(model)
    assert prep_tok(texts, add_special_tokens=False)["input_ids"] == want
    rows = make_tallrec_samples(8)
    for row in rows:
        row["input"] = row["input"].replace(", ", ",  ")  # runs of spaces inside the prompts
    write_jsonl_atomic(tmp_path / "train.jsonl", rows[:4])
    write_jsonl_atomic(tmp_path / "valid.jsonl", rows[4:])
    recipe = {
        "model": {"path": str(model), "family": "llama", "compute_dtype": "float32"},
        "data": {"train": str(tmp_path / "train.jsonl"), "valid": str(tmp_path / "valid.jsonl")},
        "train": {
            "output_dir": str(tmp_path / "run"),
            "max_steps": 1,
            "micro_batch_size": 4,
            "batch_size": 4,
        },
        "logging": {"progress_bar": False},
    }
    train(recipe_from_dict(recipe))
    run_tok = resolve_backbone(tmp_path / "run").tokenizer
    assert (tmp_path / "run" / "tokenizer.model").is_file()
    assert run_tok(texts, add_special_tokens=False)["input_ids"] == want
    assert (run_tok.pad_token, run_tok.padding_side) == (prep_tok.pad_token, prep_tok.padding_side)
